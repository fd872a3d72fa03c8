"""The whole child set of each case (llmops/operators/modeldeployment/builders.py): golden files,
determinism, ownership and labels, what a replaced version keeps.

Regenerate the golden files after an intended change (and review the diff):

    LLMOPS_UPDATE_GOLDEN=1 pytest tests/unit/operators/modeldeployment/test_builders.py
"""

from __future__ import annotations

import pytest

from llmops.gateway_config import GatewayConfig
from tests.unit.operators.modeldeployment.cases import (
    CASES,
    EXAMPLES,
    GOLDEN,
    UID,
    UPDATE,
    objects,
    rendered,
)


@pytest.mark.parametrize("name", CASES)
def test_golden(name: str) -> None:
    path = GOLDEN / f"{name}.yaml"
    text = rendered(name)
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"no golden file {path.name}: run with LLMOPS_UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{path.name} differs; regenerate with LLMOPS_UPDATE_GOLDEN=1 and review"


def test_every_example_has_a_golden_case() -> None:
    examples = {p.stem.removeprefix("modeldeployment-") for p in EXAMPLES.glob("modeldeployment-*.yaml")}
    assert examples <= {c.split("+")[0] for c in CASES}
    assert {p.stem for p in GOLDEN.glob("*.yaml")} == set(CASES), "stale golden files"


def test_builders_are_deterministic() -> None:
    assert all(rendered(c) == rendered(c) for c in CASES)


def test_children_are_owned_and_labelled() -> None:
    for name in CASES:
        for m in objects(name).values():
            meta = m["metadata"]
            assert meta["namespace"] == "demo"
            assert meta["ownerReferences"][0]["uid"] == UID and meta["ownerReferences"][0]["controller"]
            labels = meta["labels"]
            assert labels["app.kubernetes.io/managed-by"] == "llmops"
            assert labels["llmops.io/modeldeployment"] == labels["app.kubernetes.io/instance"]
            assert {"app.kubernetes.io/name", "app.kubernetes.io/component"} <= labels.keys()
            assert len(meta["name"]) <= 63


def test_replacing_keeps_the_previous_version_serving() -> None:
    objs = objects("single+replacing")
    # The replaced version's Deployment is left as it is (not rendered, not re-applied); it keeps serving.
    assert ("Deployment", "support-bot-4-vllm") in objs and ("Deployment", "support-bot-3-vllm") not in objs
    config = GatewayConfig.model_validate_json(
        objs[("ConfigMap", "support-bot-gateway")]["data"]["config.json"]
    )
    assert [(u.version, u.weight) for u in config.upstreams] == [("4", 0), ("3", 100)]
