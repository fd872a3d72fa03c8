"""The fetcher of registered versions (llmops/fetch.py, llmops/engine.py:fetch_argv)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llmops import engine, fetch
from llmops.api.common import ObjectStorageLocation
from llmops.registry import GateVerdict, Lineage, RegistryError, register
from llmops.storage import LocalStore
from tests.unit.operators.modeldeployment.cases import (
    ROOT,
)


def _registry(tmp_path: Path, *, passed: bool = True) -> tuple[ObjectStorageLocation, str]:
    model = tmp_path / "model-src"
    (model / "tokenizer").mkdir(parents=True)
    (model / "config.json").write_text('{"n": 1}')
    (model / "tokenizer" / "vocab.json").write_text('{"a": 0}')
    location = ObjectStorageLocation.model_validate({"local": {"path": str(tmp_path / "registry")}})
    gates = [GateVerdict(metric="accuracy", operator=">=", threshold=0.5, value=0.9, passed=True)]
    version = register(
        LocalStore(tmp_path / "registry"), "tiny", model, metrics={}, gates=gates, lineage=Lineage()
    )
    if not passed:  # a manifest written by something other than register(), with a failed gate
        store = LocalStore(tmp_path / "registry")
        key = f"models/tiny/versions/{version.version}/manifest.json"
        manifest = json.loads(store.get_bytes(key))
        manifest["gates"][0]["passed"] = False
        store.put_bytes(key, json.dumps(manifest).encode())
    return location, version.version


def test_fetch_downloads_and_verifies(tmp_path: Path) -> None:
    location, version = _registry(tmp_path)
    argv = engine.fetch_argv(
        location, [engine.FetchItem("model", "tiny", version)], root=str(tmp_path / "models")
    )
    assert argv[:3] == ["python", "-m", "llmops.fetch"]
    assert fetch.main(argv[3:]) == 0
    target = tmp_path / "models" / "model"
    assert (target / "tokenizer" / "vocab.json").read_text() == '{"a": 0}'
    assert fetch.main(argv[3:]) == 0  # a restarted init container keeps what is complete
    (target / "config.json").write_text("tampered")
    assert fetch.main(argv[3:]) == 0 and (target / "config.json").read_text() == '{"n": 1}'


def test_fetch_refuses_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    location, version = _registry(tmp_path, passed=False)
    args = ["--registry", location.model_dump_json(by_alias=True), "--into", str(tmp_path / "m")]
    assert fetch.main([*args, f"model=tiny:{version}"]) == 1
    assert "did not pass its gates" in capsys.readouterr().err
    assert fetch.main([*args, "model=tiny:99"]) == 1
    assert "has no version '99'" in capsys.readouterr().err
    assert fetch.main([*args, "../x=tiny:1"]) == 1
    with pytest.raises(ValueError):
        engine.FetchItem.parse("model=tiny")


def test_fetch_detects_corruption_in_the_registry(tmp_path: Path) -> None:
    _location, version = _registry(tmp_path)
    (tmp_path / "registry" / "models" / "tiny" / "versions" / version / "model" / "config.json").write_text(
        "x"
    )
    with pytest.raises(RegistryError, match="checksum"):
        fetch.fetch(
            LocalStore(tmp_path / "registry"), engine.FetchItem("model", "tiny", version), tmp_path / "m"
        )


def test_fetch_runs_as_a_module(tmp_path: Path) -> None:
    location, version = _registry(tmp_path)
    argv = engine.fetch_argv(
        location,
        [engine.FetchItem("model", "tiny", version)],
        root=str(tmp_path / "out"),
        python=sys.executable,
    )
    result = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, check=False)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "model" / "config.json").exists()
