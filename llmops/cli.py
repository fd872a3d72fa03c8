"""The `llmops` command: developer cluster, CRD generation, the operator process, the model registry,
the audit trail and reports."""

from __future__ import annotations

import importlib

import click

from llmops import logsafe
from llmops.command_group import Group

# Sub-commands live beside the code they drive, as "module:attribute", with the summary `llmops --help`
# lists; each module is imported only when its command runs, so `llmops operator` loads none of the
# others (the developer cluster's, the registry's, the reports'; with the webhook's certificates made
# lazily, the operator's imports went from 86 to 77 MiB of resident memory, issue 17) and `--help`
# none at all. A summary is the first paragraph of the command's help (tests/unit/test_cli.py).
COMMANDS = {
    "crds": (
        "llmops.crdgen:crds",
        "Generate the CRDs from the pydantic models (run from the repository root).",
    ),
    "dev": ("llmops.dev.cli:dev", "A local Kubernetes control plane for development and tests."),
    "watch": ("llmops.watch:watch", "Follow a TrainingJob until it succeeds or fails (exit 1 on failure)."),
    "models": (
        "llmops.registry_cli:models_group",
        "The model registry: models, versions, aliases and their history.",
    ),
    "operator": (
        "llmops.operators.cli:operator",
        "Reconcile TrainingJobs, ModelDeployments, RetrainPolicies and ModelRetirements until SIGTERM.",
    ),
    "audit": ("llmops.audit_cli:audit_group", "Read and verify the audit trail of lifecycle actions."),
    "report": ("llmops.audit_cli:report_group", "Reports over the registry and the audit trail."),
    "erasure": (
        "llmops.erasure:erasure_group",
        "Erase one data subject's records (GDPR Art. 17, CCPA); receipts and decisions.",
    ),
}


class LazyGroup(Group):
    """A click group whose sub-commands (COMMANDS) are imported when one is looked up, and listed
    from the table without importing them."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return super().get_command(ctx, name)
        module, attribute = COMMANDS[name][0].split(":")
        return getattr(importlib.import_module(module), attribute)

    def summary_of(self, ctx: click.Context, name: str) -> str | None:
        return COMMANDS[name][1] if name in COMMANDS else super().summary_of(ctx, name)


def version() -> str:
    """This llmops's version: the installed distribution's, else (run from a source checkout, as the
    tests and `hack/venv.sh` do) the one pyproject.toml declares."""
    from importlib import metadata

    try:
        return metadata.version("llmops")
    except metadata.PackageNotFoundError:
        import tomllib
        from pathlib import Path

        pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
        if not pyproject.is_file():
            return "unknown (not installed, no pyproject.toml)"
        return tomllib.loads(pyproject.read_text())["project"]["version"]


def _print_version(ctx: click.Context, _: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(f"llmops {version()}")
        ctx.exit()


@click.group(cls=LazyGroup)
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the version and exit.",
)
def main() -> None:
    """llmops: the whole life of a large language model on Kubernetes."""
    logsafe.install()  # every sub-command: no credential in a log line (llmops/logsafe.py)


if __name__ == "__main__":
    main()
