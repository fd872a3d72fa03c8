"""Generated CRDs: checked-in files are current, schemas are structural, the required CEL rules exist."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml
from click.testing import CliRunner
from pydantic import BaseModel, Field

from llmops import crdgen
from llmops.api import RESOURCES, ApiModel
from llmops.crdgen import crds as crds_command

ROOT = Path(__file__).parents[2]
CHECKED_IN = [ROOT / "crds", ROOT / "charts" / "llmops" / "crds"]
# Keys that JSON Schema has and a structural schema must not.
FORBIDDEN = {
    "$ref",
    "$defs",
    "definitions",
    "const",
    "title",
    "examples",
    "oneOf",
    "allOf",
    "not",
    "uniqueItems",
}


def _nodes(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, prop in schema.get("properties", {}).items():
        yield from _nodes(prop, f"{path}.{name}")
    if "items" in schema:
        yield from _nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _nodes(schema["additionalProperties"], f"{path}{{}}")


def _schemas() -> Iterator[tuple[str, dict[str, Any]]]:
    for resource in RESOURCES:
        yield from _nodes(
            crdgen.crd(resource)["spec"]["versions"][0]["schema"]["openAPIV3Schema"], resource.kind
        )


def _rules(resource_index: int) -> set[str]:
    root = crdgen.crd(RESOURCES[resource_index])["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return {rule["rule"] for _, node in _nodes(root) for rule in node.get("x-kubernetes-validations", [])}


@pytest.mark.parametrize("directory", CHECKED_IN, ids=lambda d: str(d.relative_to(ROOT)))
def test_checked_in_crds_are_current(directory: Path) -> None:
    assert crdgen.stale(directory) + crdgen.extra(directory) == [], (
        "run `llmops crds` from the repository root and commit the result"
    )


def test_output_is_deterministic() -> None:
    assert crdgen.rendered() == crdgen.rendered()


def test_schema_is_structural() -> None:
    for path, node in _schemas():
        assert not FORBIDDEN & node.keys(), f"{path}: {FORBIDDEN & node.keys()}"
        int_or_string = node.get("x-kubernetes-int-or-string") is True
        if "anyOf" in node:
            assert int_or_string and node["anyOf"] == [{"type": "integer"}, {"type": "string"}], path
        assert "type" in node or int_or_string or node.get("x-kubernetes-preserve-unknown-fields"), path
        assert node.get("type") != "null", path
        assert not ("properties" in node and "additionalProperties" in node), path
        assert "default" not in node or node["default"] is not None, path
        for key in ("exclusiveMinimum", "exclusiveMaximum"):
            assert node.get(key, True) is True, f"{path}: {key} must be a boolean"


def test_every_property_has_a_description() -> None:
    for path, node in _schemas():
        if path.endswith(".metadata") and path.count(".") == 1:
            assert node == {"type": "object"}  # the apiserver rejects anything more
            continue
        assert node.get("description") or path.endswith(("[]", "{}")), f"{path} has no description"


def test_everything_is_bounded_for_cel_cost() -> None:
    for path, node in _schemas():
        if path.endswith((".apiVersion", ".kind")) and path.count(".") == 1:
            continue  # set by the apiserver, out of reach of our rules
        kind = node.get("type")
        if kind == "string" or node.get("x-kubernetes-int-or-string"):
            assert "maxLength" in node or "enum" in node or node.get("format") == "date-time", path
        elif kind == "array":
            assert "maxItems" in node, path
        elif kind == "object" and "additionalProperties" in node:
            assert "maxProperties" in node, path


def test_list_map_keys_are_required_and_not_nullable() -> None:
    for path, node in _schemas():
        if node.get("x-kubernetes-list-type") == "map":
            item = node["items"]
            for key in node["x-kubernetes-list-map-keys"]:
                assert key in item.get("required", []), f"{path}: {key}"
                assert not item["properties"][key].get("nullable"), f"{path}: {key}"
        if node.get("x-kubernetes-list-type") == "set":
            assert node["items"]["type"] in ("string", "integer", "number"), path


def test_conditions_are_a_map_keyed_by_type() -> None:
    for resource in RESOURCES:
        root = crdgen.crd(resource)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        conditions = root["properties"]["status"]["properties"]["conditions"]
        assert conditions["x-kubernetes-list-type"] == "map"
        assert conditions["x-kubernetes-list-map-keys"] == ["type"]
        assert set(conditions["items"]["required"]) >= {
            "type",
            "status",
            "lastTransitionTime",
            "reason",
            "message",
        }


def test_crd_shape() -> None:
    for resource in RESOURCES:
        crd = crdgen.crd(resource)
        assert crd["metadata"]["name"] == f"{resource.plural}.llmops.io"
        spec = crd["spec"]
        assert spec["scope"] == "Namespaced" and spec["names"]["categories"] == ["llmops"]
        assert spec["names"]["shortNames"]
        (version,) = spec["versions"]
        assert version["subresources"] == {"status": {}}
        assert version["schema"]["openAPIV3Schema"]["required"] == ["spec"]
        columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
        assert columns["Ready"] == '.status.conditions[?(@.type=="Ready")].status'
        assert {"Phase", "Model", "Age"} <= columns.keys()
        # What a kind makes or serves: the version produced, served, or last promoted.
        assert {"Version", "Promoted"} & columns.keys()


def test_required_cel_rules() -> None:
    job, deployment = _rules(0), _rules(1)
    assert (
        "self.method.type in ['pretrain', 'distill', 'quantize'] || has(self.model.base)"
        " || has(self.model.baseModel)" in job
    )
    assert "self.method.type != 'quantize' || has(self.model.base)" in job
    assert "(self.type == 'quantize') == has(self.quantization)" in job
    assert "(self.type == 'rayJobsAPI') == has(self.address)" in job
    assert {"self.model == oldSelf.model", "self.data == oldSelf.data"} <= job
    assert "has(self.version) != has(self.alias)" in job & deployment
    assert "self.minReplicas <= self.maxReplicas" in deployment
    assert any("self.rollout.canary.model.name != self.model.name" in rule for rule in deployment)


def test_field_rules_add_to_model_rules() -> None:
    class Inner(ApiModel):
        """Inner."""

        cel_rules = ()
        x: int = Field(0, gt=0, description="x")

    class Outer(BaseModel):
        inner: Inner = Field(
            description="field", json_schema_extra={"x-kubernetes-validations": [{"rule": "self.x > 1"}]}
        )
        either: int | str | None = Field(None, description="int or string")
        fixed: Literal["only"] = Field("only", description="const")

    props = crdgen.structural(Outer.model_json_schema())["properties"]
    assert props["inner"]["description"] == "field"
    assert props["inner"]["x-kubernetes-validations"] == [{"rule": "self.x > 1"}]
    assert props["inner"]["properties"]["x"] == {
        "default": 0,
        "description": "x",
        "minimum": 0,
        "exclusiveMinimum": True,
        "type": "integer",
    }
    assert props["either"]["x-kubernetes-int-or-string"] and props["either"]["nullable"]
    assert props["fixed"]["enum"] == ["only"]


def test_unions_of_objects_are_refused() -> None:
    class A(BaseModel):
        a: int

    class B(BaseModel):
        b: int

    class Both(BaseModel):
        value: A | B

    with pytest.raises(crdgen.UnsupportedSchema):
        crdgen.structural(Both.model_json_schema())


def test_cli_writes_and_checks(tmp_path: Path) -> None:
    runner = CliRunner()
    out, also = tmp_path / "crds", tmp_path / "chart"
    result = runner.invoke(crds_command, ["--output-dir", str(out), "--also", str(also)])
    assert result.exit_code == 0, result.output
    assert (
        sorted(p.name for p in out.iterdir())
        == sorted(p.name for p in also.iterdir())
        == sorted(crdgen.rendered())
    )
    assert (
        yaml.safe_load((out / "llmops.io_trainingjobs.yaml").read_text())["kind"]
        == "CustomResourceDefinition"
    )
    result = runner.invoke(crds_command, ["--output-dir", str(out), "--also", "", "--check"])
    assert result.exit_code == 0 and result.output == f"{len(crdgen.rendered())} CRDs up to date in {out}\n"
    (out / "llmops.io_trainingjobs.yaml").write_text("stale")
    assert runner.invoke(crds_command, ["--output-dir", str(out), "--also", "", "--check"]).exit_code == 1
    (out / "llmops.io_modeldeployments.yaml").unlink()
    (out / "llmops.io_oldkinds.yaml").write_text("a kind since removed")
    (out / "notes.yaml").write_text("not ours")
    result = runner.invoke(crds_command, ["--output-dir", str(out), "--also", "", "--check"])
    assert result.exit_code == 1
    assert result.output.splitlines() == [  # each fault by its kind, and what to run
        "Error: the CRD files do not match the API (3 faults; `llmops crds` rewrites them; `git diff` then"
        " shows what changed):",
        f"  stale: {out / 'llmops.io_trainingjobs.yaml'}",
        f"  missing: {out / 'llmops.io_modeldeployments.yaml'}",
        f"  no longer generated: {out / 'llmops.io_oldkinds.yaml'}",
    ]
    # A directory that is not there (most often: run outside the repository root) is said first and
    # alone, and a write refuses a folder whose parent is not there instead of making a stray tree.
    result = runner.invoke(
        crds_command, ["--output-dir", str(out), "--also", str(tmp_path / "none"), "--check"]
    )
    assert result.exit_code == 1 and result.output.splitlines() == [
        f"Error: no directory {tmp_path / 'none'}: run from the repository root, or pass --output-dir"
        " and --also"
    ]
    result = runner.invoke(crds_command, ["--output-dir", str(out), "--also", str(tmp_path / "no" / "crds")])
    assert result.exit_code == 1 and f"no directory {tmp_path / 'no'}:" in result.output
    assert not (tmp_path / "no").exists() and (out / "llmops.io_oldkinds.yaml").exists()  # nothing written
    # Writing removes our file of the removed kind and leaves other files alone; then the check passes.
    result = runner.invoke(crds_command, ["--output-dir", str(out), "--also", ""])
    assert f"removed {out / 'llmops.io_oldkinds.yaml'} (its kind is no longer generated)" in result.output
    assert (out / "notes.yaml").is_file() and not (out / "llmops.io_oldkinds.yaml").exists()
    result = runner.invoke(crds_command, ["--output-dir", str(out), "--also", "", "--check"])
    assert result.exit_code == 0 and result.output == f"{len(crdgen.rendered())} CRDs up to date in {out}\n"
