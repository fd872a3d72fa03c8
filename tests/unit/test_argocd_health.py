"""The Argo CD health checks in deploy/argocd, run as Lua (lupa) the way Argo CD runs them.

Argo CD evaluates health.lua with gopher-lua, a Lua 5.1, after opening only the base, package and
table libraries and a safe subset of os (argo-cd util/lua: `SkipOpenLibs`): no `string`, `math`,
`io` or `debug`. The object is the global `obj`, JSON numbers arrive as doubles, and the chunk
returns a table with `status` and `message`. The tests run the scripts in a Lua 5.1 with the same
globals, so a script that leans on a library Argo CD lacks fails here too.
"""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path
from typing import Any

import pytest
import yaml

# Lua 5.1, the language of gopher-lua.
lua51 = pytest.importorskip("lupa.lua51")

ROOT = Path(__file__).resolve().parents[2]
ARGOCD = ROOT / "deploy" / "argocd"
CHECKS = ARGOCD / "llmops.io"
KINDS = ["TrainingJob", "ModelDeployment", "RetrainPolicy", "ModelRetirement"]
# Globals Argo CD's VM does not have; os keeps only what its safe os library offers.
MISSING_LIBRARIES = ["string", "math", "io", "debug", "coroutine"]
SAFE_OS = ["time", "date", "clock", "difftime"]


def to_lua(lua: Any, value: Any) -> Any:
    """A Python value as Argo CD hands it to Lua: tables for objects and lists, floats for numbers."""
    if isinstance(value, dict):
        return lua.table_from({k: to_lua(lua, v) for k, v in value.items()})
    if isinstance(value, list):
        return lua.table_from([to_lua(lua, v) for v in value])
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return float(value)
    raise TypeError(f"unexpected {type(value).__name__} in a Kubernetes object")


def argocd_like_runtime() -> Any:
    lua = lua51.LuaRuntime(unpack_returned_tuples=False)
    g = lua.globals()
    for name in MISSING_LIBRARIES:
        g[name] = None
    g.os = lua.table_from({name: g.os[name] for name in SAFE_OS})
    return lua


def health(kind: str, obj: dict) -> dict[str, str]:
    lua = argocd_like_runtime()
    lua.globals().obj = to_lua(lua, obj)
    result = lua.execute((CHECKS / kind / "health.lua").read_text())
    assert result is not None, f"{kind}/health.lua returned nothing"
    out = dict(result.items())
    assert set(out) <= {"status", "message"}, out
    assert out["status"] in {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}
    assert all(isinstance(v, str) for v in out.values()), out
    return out


def test_the_sandbox_lacks_what_argocd_lacks() -> None:
    lua = argocd_like_runtime()
    with pytest.raises(lua51.LuaError, match="string"):
        lua.execute('return string.format("%d", 1)')
    assert lua.execute("return tostring(3.0) .. '/' .. table.concat({'a', 'b'})") == "3/ab"


def cases() -> list[tuple[str, str, dict]]:
    found = []
    for kind in KINDS:
        spec = yaml.safe_load((CHECKS / kind / "health_test.yaml").read_text())
        for case in spec["tests"]:
            found.append((kind, case["inputPath"], case["healthStatus"]))
    return found


@pytest.mark.parametrize(("kind", "input_path", "expected"), cases(), ids=lambda v: str(v))
def test_health_test_yaml_cases(kind: str, input_path: str, expected: dict) -> None:
    obj = yaml.safe_load((CHECKS / kind / input_path).read_text())
    assert obj["kind"] == kind and obj["apiVersion"] == "llmops.io/v1alpha1"
    assert health(kind, obj) == expected


@pytest.mark.parametrize("kind", KINDS)
def test_every_testdata_object_is_covered_and_every_status_is_exercised(kind: str) -> None:
    spec = yaml.safe_load((CHECKS / kind / "health_test.yaml").read_text())
    listed = {case["inputPath"] for case in spec["tests"]}
    on_disk = {f"testdata/{p.name}" for p in (CHECKS / kind / "testdata").glob("*.yaml")}
    assert listed == on_disk
    statuses = {case["healthStatus"]["status"] for case in spec["tests"]}
    wanted = {"Healthy", "Progressing", "Degraded"} | (
        {"Suspended"} if kind in ("TrainingJob", "RetrainPolicy", "ModelRetirement") else set()
    )
    assert statuses == wanted


# Table cases, one per branch, on objects built here.


def cond(ctype: str, status: str, message: str = "", reason: str = "Reason", gen: int | None = None) -> dict:
    c = {"type": ctype, "status": status, "reason": reason, "message": message}
    if gen is not None:
        c["observedGeneration"] = gen
    return c


def obj(kind: str, generation: int = 1, status: dict | None = None, **spec: Any) -> dict:
    o: dict[str, Any] = {
        "apiVersion": "llmops.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": "x", "namespace": "ns", "generation": generation},
        "spec": spec,
    }
    if status is not None:
        o["status"] = status
    return o


READY = cond("Ready", "True", "all good")
NOT_READY = cond("Ready", "False", "replicas 0/1")
RECONCILING = cond("Reconciling", "True", "applying children")
STALLED = cond("Stalled", "True", "bad spec: fix it")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("generation", "status", "expected"),
    [
        (1, None, ("Progressing", "Waiting for the operator to observe generation 1")),
        (7, {}, ("Progressing", "Waiting for the operator to observe generation 7")),
        (7, {"conditions": [READY]}, ("Progressing", "Waiting for the operator to observe generation 7")),
        (
            4,
            {"observedGeneration": 3, "conditions": [READY]},
            ("Progressing", "Waiting for the operator to observe generation 4"),
        ),
        # Stalled wins over Ready and Reconciling.
        (
            2,
            {"observedGeneration": 2, "conditions": [READY, RECONCILING, STALLED]},
            ("Degraded", "bad spec: fix it"),
        ),
        # An empty message falls back to the reason.
        (
            2,
            {"observedGeneration": 2, "conditions": [cond("Stalled", "True", "", reason="InvalidSpec")]},
            ("Degraded", "InvalidSpec"),
        ),
        (
            2,
            {"observedGeneration": 2, "conditions": [READY, cond("Stalled", "False")]},
            ("Healthy", "all good"),
        ),
        (
            2,
            {"observedGeneration": 2, "conditions": [NOT_READY, RECONCILING]},
            ("Progressing", "applying children"),
        ),
        (2, {"observedGeneration": 2, "conditions": [NOT_READY]}, ("Progressing", "replicas 0/1")),
        (2, {"observedGeneration": 2, "conditions": []}, ("Progressing", "Reconciling")),
        (2, {"observedGeneration": 2}, ("Progressing", "Reconciling")),
        # A condition computed from an older spec does not count, even with a current top-level field.
        (
            3,
            {"observedGeneration": 3, "conditions": [cond("Ready", "True", "old", gen=2)]},
            ("Progressing", "Reconciling"),
        ),
        (
            3,
            {"observedGeneration": 3, "conditions": [cond("Ready", "True", "new", gen=3)]},
            ("Healthy", "new"),
        ),
        (
            3,
            {"observedGeneration": 3, "conditions": [READY, cond("Stalled", "True", "old failure", gen=2)]},
            ("Healthy", "all good"),
        ),
    ],
)
def test_branches_shared_by_both_kinds(
    kind: str, generation: int, status: dict | None, expected: tuple[str, str]
) -> None:
    got = health(kind, obj(kind, generation, copy.deepcopy(status)))
    assert (got["status"], got["message"]) == expected


@pytest.mark.parametrize(
    ("spec", "status", "expected"),
    [
        (
            {"suspend": True},
            {"observedGeneration": 1, "conditions": [NOT_READY]},
            ("Suspended", "replicas 0/1"),
        ),
        ({"suspend": True}, {"observedGeneration": 1}, ("Suspended", "TrainingJob is suspended")),
        # Suspension is reported once the operator has seen it, not before.
        ({"suspend": True}, None, ("Progressing", "Waiting for the operator to observe generation 1")),
        # Suspended is what the user asked for: it wins over a stall.
        (
            {"suspend": True},
            {"observedGeneration": 1, "conditions": [STALLED]},
            ("Suspended", "TrainingJob is suspended"),
        ),
        ({"suspend": False}, {"observedGeneration": 1, "conditions": [READY]}, ("Healthy", "all good")),
        (
            {},
            {"observedGeneration": 1, "phase": "Failed", "conditions": [NOT_READY]},
            ("Degraded", "replicas 0/1"),
        ),
        ({}, {"observedGeneration": 1, "phase": "Failed"}, ("Degraded", "TrainingJob failed")),
        ({}, {"observedGeneration": 1, "phase": "Succeeded"}, ("Healthy", "TrainingJob succeeded")),
        (
            {},
            {"observedGeneration": 1, "phase": "Succeeded", "conditions": [NOT_READY]},
            ("Healthy", "replicas 0/1"),
        ),
        (
            {},
            {"observedGeneration": 1, "phase": "Running", "conditions": [RECONCILING]},
            ("Progressing", "applying children"),
        ),
        (
            {},
            {"observedGeneration": 1, "phase": "Failed", "conditions": [STALLED]},
            ("Degraded", "bad spec: fix it"),
        ),
    ],
)
def test_trainingjob_suspend_and_phase(spec: dict, status: dict | None, expected: tuple[str, str]) -> None:
    got = health("TrainingJob", obj("TrainingJob", 1, copy.deepcopy(status), **spec))
    assert (got["status"], got["message"]) == expected


def test_modeldeployment_ignores_trainingjob_only_fields() -> None:
    # A ModelDeployment has no suspend and no terminal phase: neither may change its health.
    o = obj(
        "ModelDeployment",
        1,
        {"observedGeneration": 1, "phase": "Succeeded", "conditions": [NOT_READY]},
        suspend=True,
    )
    got = health("ModelDeployment", o)
    assert (got["status"], got["message"]) == ("Progressing", "replicas 0/1")


def test_large_generation_prints_as_an_integer() -> None:
    got = health("ModelDeployment", obj("ModelDeployment", 123456789, None))
    assert got["message"] == "Waiting for the operator to observe generation 123456789"


def load_render():
    spec = importlib.util.spec_from_file_location("argocd_render", ARGOCD / "render.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_argocd_cm_patch_embeds_the_current_scripts() -> None:
    render = load_render()
    patch_file = ARGOCD / "argocd-cm-patch.yaml"
    assert patch_file.read_text() == render.render(), "stale: run python deploy/argocd/render.py"
    patch = yaml.safe_load(patch_file.read_text())
    assert (patch["apiVersion"], patch["kind"], patch["metadata"]["name"]) == ("v1", "ConfigMap", "argocd-cm")
    assert patch["data"] == {
        f"resource.customizations.health.llmops.io_{kind}": (CHECKS / kind / "health.lua").read_text()
        for kind in KINDS
    }
