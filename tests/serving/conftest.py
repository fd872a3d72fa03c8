"""Fixtures for the data plane: a tiny model, ONE real vLLM server per session (CPU), gateway processes.

vLLM starts in 50-120 s here, so the session shares one server. It runs the argv the operator deploys
(`llmops.engine.vllm_argv`, via `llmops.serving.local.cpu_argv`), with one LoRA adapter, `tiny-lora`, beside
the base model (as `examples/modeldeployment-lora-adapters.yaml` deploys). Set `LLMOPS_TEST_VLLM_URL`
to reuse a server you already run (for quick iterations); it must serve the model name `tiny` and the
adapter `tiny-lora`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from llmops.dev.cluster import free_port
from tests.helpers import eventually, http_get

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).parents[2]
MODEL_NAME = "tiny"
ADAPTER_NAME = "tiny-lora"
EMBEDDING_MODEL_NAME = "tiny-embed"


def _need(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed in this environment")


@dataclass
class VllmServer:
    url: str
    port: int


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    from llmops.serving.local import make_lora_adapter, make_tiny_llama, start_vllm, stop, wait_healthy

    for module in ("vllm", "openai", "aiohttp"):
        _need(module)
    if url := os.environ.get("LLMOPS_TEST_VLLM_URL"):
        yield VllmServer(url.rstrip("/"), int(url.rstrip("/").rsplit(":", 1)[1]))
        return
    model = make_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), DATA / "corpus.txt")
    adapter = make_lora_adapter(model, tmp_path_factory.mktemp("adapters") / ADAPTER_NAME, seed=1)
    port = free_port()
    log = tmp_path_factory.mktemp("vllm") / "vllm.log"
    proc = start_vllm(
        model,
        port=port,
        served_model_name=MODEL_NAME,
        log=log,
        tie_to_parent=True,
        adapters={ADAPTER_NAME: adapter},
    )
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc, timeout=400, log=log)
        yield VllmServer(f"http://127.0.0.1:{port}", port)
    finally:
        stop(proc)


@pytest.fixture
def vllm_embedding_server(tmp_path: Path) -> Iterator[VllmServer]:
    """A second vLLM on the CPU that serves the tiny model as an embedding model (`--runner pooling
    --convert embed`, mean pooling) under the name `tiny-embed`; started for the one test that needs it
    and stopped after it (it costs as much memory as the first)."""
    from llmops.serving.local import make_tiny_llama, start_vllm, stop, wait_healthy

    for module in ("vllm", "openai", "aiohttp"):
        _need(module)
    model = make_tiny_llama(tmp_path / "tiny-llama", DATA / "corpus.txt")
    port = free_port()
    log = tmp_path / "vllm-embed.log"
    proc = start_vllm(
        model,
        port=port,
        served_model_name=EMBEDDING_MODEL_NAME,
        log=log,
        tie_to_parent=True,
        extra_args=["--runner", "pooling", "--convert", "embed"],
    )
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc, timeout=400, log=log)
        yield VllmServer(f"http://127.0.0.1:{port}", port)
    finally:
        stop(proc)


@dataclass
class GatewayProcess:
    url: str
    port: int
    proc: subprocess.Popen
    log: Path
    config_path: Path

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample on /metrics, keyed by (name, sorted labels)."""
        from prometheus_client.parser import text_string_to_metric_families

        status, text = http_get(f"{self.url}/metrics")
        assert status == 200, text
        out = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    def value(self, name: str, **labels: str) -> float:
        return self.metrics().get((name, tuple(sorted(labels.items()))), 0.0)

    def client(self, api_key: str = "none"):
        import openai

        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=api_key, max_retries=0, timeout=60)


def start_gateway(config: dict[str, Any], workdir: Path, name: str = "gateway") -> GatewayProcess:
    from llmops.gateway_config import GatewayConfig

    GatewayConfig.model_validate(config)  # fail here, not in the child, on a broken test config
    config_path = workdir / f"{name}.json"
    config_path.write_text(json.dumps(config))
    port = free_port()
    log = workdir / f"{name}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llmops.serving.gateway",
                "--config",
                str(config_path),
                "--port",
                str(port),
                "--host",
                "127.0.0.1",
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    gw = GatewayProcess(f"http://127.0.0.1:{port}", port, proc, log, config_path)

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"the gateway exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        return http_get(f"{gw.url}/healthz")[0] == 200

    eventually(up, timeout=60, interval=0.1)
    return gw


def stop_gateway(gw: GatewayProcess, timeout: float = 30) -> int:
    if gw.proc.poll() is None:
        gw.proc.send_signal(signal.SIGTERM)
        try:
            gw.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            gw.proc.kill()
            gw.proc.wait()
    return gw.proc.returncode


@pytest.fixture
def gateway_factory(tmp_path: Path) -> Iterator[Any]:
    """`gateway_factory(config_dict)` starts `python -m llmops.serving.gateway`, stopped after the test."""
    for module in ("openai", "aiohttp"):
        _need(module)
    started: list[GatewayProcess] = []

    def factory(config: dict[str, Any], name: str = "gateway") -> GatewayProcess:
        gw = start_gateway(config, tmp_path, name)
        started.append(gw)
        return gw

    yield factory
    for gw in started:
        stop_gateway(gw)


@pytest.fixture
def process_factory(tmp_path: Path) -> Iterator[Any]:
    """Start helper processes (the fake upstream) that are killed after the test."""
    procs: list[subprocess.Popen] = []

    def factory(*argv: str, name: str = "proc") -> subprocess.Popen:
        out = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115 - the child owns it
        proc = subprocess.Popen([sys.executable, *argv], stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        procs.append(proc)
        return proc

    yield factory
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


@pytest.fixture
def fake_upstream(process_factory: Any) -> Any:
    """`fake_upstream(mode, *args)` runs tests/serving/fake_upstream.py and returns its URL."""

    def start(mode: str, *extra: str) -> str:
        port = free_port()
        script = str(Path(__file__).parent / "fake_upstream.py")
        process_factory(script, "--port", str(port), "--mode", mode, *extra, name=f"fake-{mode}-{port}")
        url = f"http://127.0.0.1:{port}"
        eventually(lambda: http_get(f"{url}/health")[0] == 200, timeout=30, interval=0.1)
        return url

    return start
