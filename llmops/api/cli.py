"""`llmops crds`: write the CustomResourceDefinitions generated from `llmops.api`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from llmops import crdgen


@click.command("crds")
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("crds"),
    show_default=True,
    help="Directory to write the CRD files into.",
)
@click.option(
    "--also",
    type=click.Path(file_okay=False, path_type=Path),
    multiple=True,
    default=[Path("charts/llmops/crds")],
    show_default=True,
    help="Another directory that gets the same files (repeatable; pass '' for none).",
)
@click.option("--check", is_flag=True, help="Write nothing; exit 1 if any file is missing or stale.")
def crds(output_dir: Path, also: tuple[Path, ...], check: bool) -> None:
    """Generate the CRDs from the pydantic models (run from the repository root)."""
    directories = [output_dir, *(d for d in also if str(d) not in ("", "."))]
    if check:
        stale = [path for directory in directories for path in crdgen.stale(directory)]
        for path in stale:
            click.echo(f"stale: {path}", err=True)
        sys.exit(1 if stale else 0)
    for directory in directories:
        for path in crdgen.write(directory):
            click.echo(f"wrote {path}")
