"""model.resolve_baseline: spec.evaluation.baseline resolved in a local registry, or refused naming it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from llmops import registry
from llmops.api.common import ObjectStorageLocation
from llmops.api.trainingjob import TrainingJobSpec
from llmops.storage import open_store
from llmops.training.context import StoreSpec
from llmops.training.errors import UserError
from llmops.training.model import resolve_baseline


def context(root, baseline: dict | None) -> SimpleNamespace:
    location = {"local": {"path": str(root)}}
    spec = {
        "model": {"baseModel": "/checkpoints/tiny"},
        "data": {"sources": [{"uri": "/data/x.jsonl"}]},
        "method": {"type": "full"},
        "output": {"registry": location, "modelName": "candidate"},
        "runtime": {"type": "rayJobsAPI", "address": "http://ray:8265"},
        "evaluation": {"baseline": baseline} if baseline else {},
    }
    registry_spec = StoreSpec(ObjectStorageLocation.model_validate(location))
    return SimpleNamespace(spec=TrainingJobSpec.model_validate(spec), registry=registry_spec)


def test_baseline_resolves_to_its_model_folder_or_is_refused(tmp_path):
    store = open_store(ObjectStorageLocation.model_validate({"local": {"path": str(tmp_path)}}))
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    registry.register(store, "champion", model, metrics={}, gates=[], lineage=registry.Lineage())
    registry.set_alias(store, "champion", "production", "1")
    adapter = tmp_path / "a"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    content = registry.Content(kind="adapter", adapter="", base="tiny-base:1")
    registry.register(
        store, "bare", adapter, metrics={}, gates=[], lineage=registry.Lineage(), content=content
    )
    registry.register(store, "weightless", adapter, metrics={}, gates=[], lineage=registry.Lineage())

    assert resolve_baseline(context(tmp_path, None)) is None
    source = resolve_baseline(context(tmp_path, {"name": "champion", "alias": "production"}))
    assert source is not None and source.description == "champion:1"
    assert source.prefix == "models/champion/versions/1/model"
    cases = [
        (
            {"name": "champion", "version": "9"},
            "spec.evaluation.baseline: model 'champion' has no version '9'",
        ),
        (
            {"name": "bare", "version": "1"},
            r"spec.evaluation.baseline bare:1 is a bare LoRA adapter \(for tiny-base:1\)",
        ),
        ({"name": "weightless", "version": "1"}, "spec.evaluation.baseline weightless:1 has no config.json"),
    ]
    for baseline, message in cases:
        with pytest.raises(UserError, match=message):
            resolve_baseline(context(tmp_path, baseline))
