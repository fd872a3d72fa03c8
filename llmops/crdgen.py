"""CustomResourceDefinitions from the pydantic models in `llmops.api`.

Pydantic emits JSON Schema 2020-12; the apiserver wants a *structural* OpenAPI v3 schema: every node
typed, no `$ref`, `anyOf` only as validation, `nullable` instead of a null type, and OpenAPI 3.0's
boolean `exclusiveMinimum`. `structural()` performs that rewrite; `crd()` wraps it into a CRD.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import click
import yaml

from llmops.api import CATEGORY, GROUP, RESOURCES, VERSION, PrinterColumn, Resource

Schema = dict[str, Any]

_DROPPED = {"title", "examples", "$defs", "$ref", "anyOf"}
_BOUNDS = {"exclusiveMinimum": "minimum", "exclusiveMaximum": "maximum"}


class UnsupportedSchema(ValueError):
    """A pydantic type that has no structural equivalent (say, a union of two objects)."""


def structural(schema: Schema) -> Schema:
    """Rewrite a pydantic JSON schema into a structural OpenAPI v3 schema."""
    return _rewrite(schema, schema.get("$defs", {}))


def _rewrite(node: Schema, defs: dict[str, Schema]) -> Schema:
    out: Schema = {}
    if "$ref" in node:
        out.update(_rewrite(defs[node["$ref"].rsplit("/", 1)[-1]], defs))
    if "anyOf" in node:
        out.update(_union(node["anyOf"], defs))
    # Keys beside a $ref (a field's description, its own CEL rules) refine the referenced model.
    for key, value in node.items():
        if key in _DROPPED or (key == "default" and value is None):
            continue
        if key == "properties":
            out[key] = {name: _rewrite(prop, defs) for name, prop in value.items()}
        elif key == "items":
            out[key] = _rewrite(value, defs)
        elif key == "additionalProperties":
            if value is True:
                out["x-kubernetes-preserve-unknown-fields"] = True
            elif isinstance(value, dict):
                out[key] = _rewrite(value, defs)
            # False is pruning, which the apiserver does anyway; it rejects the keyword beside properties.
        elif key == "const":
            out["enum"] = [value]
        elif key in _BOUNDS and not isinstance(value, bool):
            out[_BOUNDS[key]] = value
            out[key] = True
        elif key == "uniqueItems":
            if value:
                out["x-kubernetes-list-type"] = "set"
        elif key == "x-kubernetes-validations":
            out[key] = [*out.get(key, []), *value]
        else:
            out[key] = copy.deepcopy(value)
    return out


def _union(branches: list[Schema], defs: dict[str, Schema]) -> Schema:
    """`X | None` becomes nullable X; `int | str` becomes int-or-string; nothing else is allowed."""
    non_null = [_rewrite(b, defs) for b in branches if b.get("type") != "null"]
    out: Schema = {"nullable": True} if len(non_null) < len(branches) else {}
    types = sorted(b.get("type", "") for b in non_null)
    if len(non_null) == 1:
        out.update(non_null[0])
    elif types == ["integer", "string"]:
        # Constraints move up beside the marker; each applies only to values of its own type.
        for branch in non_null:
            out.update({k: v for k, v in branch.items() if k != "type"})
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        out["x-kubernetes-int-or-string"] = True
    else:
        raise UnsupportedSchema(f"no structural equivalent for the union of {types}")
    return out


def _immutable(kind: str, field: str) -> Schema:
    # A transition rule: it runs on updates only, comparing with the stored object.
    return {
        "rule": f"self.{field} == oldSelf.{field}",
        "message": f"{field} is immutable: create a new {kind} instead",
        "fieldPath": f".{field}",
    }


def crd(resource: Resource) -> Schema:
    """The CustomResourceDefinition of one resource."""
    spec = structural(resource.spec.model_json_schema())
    for field in resource.immutable_fields:
        spec["x-kubernetes-validations"] = [
            *spec.get("x-kubernetes-validations", []),
            _immutable(resource.kind, field),
        ]
        spec["properties"][field]["description"] += " Immutable after creation."
    status = structural(resource.status.model_json_schema())
    schema = {
        "type": "object",
        "description": spec["description"],
        "required": ["spec"],
        # The apiserver allows names up to 253 characters; every child carries this one as a label
        # value, and those stop at 63.
        "x-kubernetes-validations": [
            {
                "rule": f"self.metadata.name.size() <= {resource.max_name_length}",
                "message": f"metadata.name must be at most {resource.max_name_length} characters:"
                f" {resource.name_length_reason}",
            }
        ],
        "properties": {
            "apiVersion": {"type": "string", "description": "Versioned schema of this object."},
            "kind": {"type": "string", "description": "REST resource this object represents."},
            # The apiserver owns metadata's schema: anything beyond `type` is rejected here.
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": resource.crd_name,
            "labels": {"app.kubernetes.io/name": "llmops", "app.kubernetes.io/part-of": "llmops"},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": resource.kind,
                "listKind": f"{resource.kind}List",
                "plural": resource.plural,
                "singular": resource.singular,
                "shortNames": list(resource.short_names),
                "categories": [CATEGORY],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [_column(c) for c in resource.printer_columns],
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


def _column(column: PrinterColumn) -> Schema:
    out = {
        "name": column.name,
        "type": column.type,
        "jsonPath": column.json_path,
        "description": column.description,
    }
    if column.priority:
        out["priority"] = column.priority
    return out


class _Dumper(yaml.SafeDumper):
    """Plain YAML: shared sub-trees are written out in full, never as &anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


_HEADER = "# Generated by `llmops crds` from llmops/api. Do not edit: change the models and regenerate.\n"


def render(resource: Resource) -> str:
    """The CRD as YAML; byte-for-byte stable for the same models."""
    return _HEADER + yaml.dump(crd(resource), Dumper=_Dumper, sort_keys=True, width=120)


def filename(resource: Resource) -> str:
    return f"{GROUP}_{resource.plural}.yaml"


def rendered() -> dict[str, str]:
    """File name to content, for every resource in the registry."""
    return {filename(r): render(r) for r in RESOURCES}


def write(directory: Path) -> tuple[list[Path], list[Path]]:
    """Write every CRD into `directory` and remove our files for kinds that no longer exist (so that
    `kubectl apply -f` of the directory installs exactly the current set).

    Returns (paths written, paths removed)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in rendered().items():
        path = directory / name
        path.write_text(text)
        paths.append(path)
    removed = extra(directory)
    for path in removed:
        path.unlink()
    return paths, removed


def extra(directory: Path) -> list[Path]:
    """Our CRD files in `directory` (named `<group>_<plural>.yaml`) for kinds we no longer generate."""
    names = rendered()
    return sorted(p for p in directory.glob(f"{GROUP}_*.yaml") if p.name not in names)


def stale(directory: Path) -> list[Path]:
    """Files in `directory` that differ from freshly generated output (or are missing)."""
    return [
        directory / name
        for name, text in rendered().items()
        if not (directory / name).is_file() or (directory / name).read_text() != text
    ]


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
    # Most often: run outside the repository root. Checked first, and before anything is written, so
    # that neither the check's advice nor a write makes CRD folders in a stray working directory.
    absent = [d for d in directories if not (d.is_dir() if check else d.parent.is_dir())]
    if absent:
        raise click.ClickException(
            f"no directory {', '.join(str(d if check else d.parent) for d in absent)}: run from the "
            "repository root, or pass --output-dir and --also"
        )
    if check:
        faults = []
        for directory in directories:
            faults += [f"{'stale' if path.is_file() else 'missing'}: {path}" for path in stale(directory)]
            faults += [f"no longer generated: {path}" for path in extra(directory)]
        if faults:
            raise click.ClickException(
                "the CRD files do not match the API ("
                + f"{len(faults)} {'fault' if len(faults) == 1 else 'faults'}; "
                + "`llmops crds` rewrites them; `git diff` then shows what changed):\n  "
                + "\n  ".join(faults)
            )
        click.echo(f"{len(rendered())} CRDs up to date in {', '.join(map(str, directories))}")
        return
    for directory in directories:
        written, removed = write(directory)
        for path in written:
            click.echo(f"wrote {path}")
        for path in removed:
            click.echo(f"removed {path} (its kind is no longer generated)")
