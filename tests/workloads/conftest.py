"""Real components for the workload tests: a local Ray head, MinIO as S3, a tiny Llama made here.

- Ray: `ray start --head --block` with 2 CPUs in its own process group (stopped by group id, never
  `ray stop`, which would stop every Ray on the machine). The dashboard runs too: Ray Train's
  placement-group cleaner and the Jobs API need it. Workers import this checkout via PYTHONPATH.
- MinIO: the binary hack/tools/build.sh builds, on a free port with fresh root credentials.
- The base model: random weights, a BPE tokenizer trained on the bundled corpora, head_dim 64.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip(
    "ray", reason="the workload tests need the training extra (ray, torch, transformers, peft)"
)
pytest.importorskip("torch")
pytest.importorskip("peft")

from llmops.dev.services import MinioServer, RayHead
from tests.helpers import eventually, s3_client
from tests.workloads.support import DATA, QUICKSTART, REPO

MINIO = Path(os.environ.get("LLMOPS_CACHE", Path.home() / ".cache" / "llmops")) / "bin" / "minio"


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _stop_group(proc: subprocess.Popen, grace: float = 10, marker: str | None = None) -> None:
    """SIGTERM the process group we started, then SIGKILL what is left of it.

    `marker`: a path only our processes have on their command line (Ray's temp dir); processes that
    left the group (Ray daemonises some) are found by it and killed by pid.
    """
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(grace)
    time.sleep(1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    if marker:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    os.kill(int(entry.name), signal.SIGKILL)
            except (OSError, ProcessLookupError):
                continue


DASHBOARDS: dict[str, str] = {}  # the ray_head's GCS address -> its dashboard's URL (the Jobs API)


@pytest.fixture(scope="session")
def ray_dashboard(ray_head: str) -> str:
    """The URL (http://127.0.0.1:port) of the ray_head's dashboard, which serves the Ray Jobs API."""
    return DASHBOARDS[ray_head]


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The address (host:port) of a real local Ray head with 2 CPUs."""
    temp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # short: Ray's socket paths have a length limit
    head = RayHead.on_loopback(temp, num_cpus=2)
    address, dashboard = head.gcs, head.dashboard
    log = tmp_path_factory.mktemp("ray") / "ray-head.log"
    env = {
        **os.environ,
        **head.env,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    with open(log, "w") as out:
        proc = subprocess.Popen(
            head.argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        # "Ray runtime started" comes once the GCS and the raylet run; the dashboard follows (on a
        # busy 2-core machine that can take a minute). Training needs only the former; Ray Train's
        # placement-group cleaner and the Jobs API use the dashboard.
        eventually(lambda: proc.poll() is None and "Ray runtime started" in log.read_text(), 300, 1)
        eventually(lambda: _http_ok(f"{dashboard}/api/version"), 300, 1)
    except AssertionError:
        logs = sorted(temp.glob("session_*/logs/dashboard.*"))
        detail = "".join(p.read_text(errors="replace")[-2000:] for p in logs)
        _stop_group(proc, 5, marker=str(temp))
        raise AssertionError(
            f"the Ray head did not start; log:\n{log.read_text()[-3000:]}\n{detail}"
        ) from None
    DASHBOARDS[address] = dashboard
    yield address
    _stop_group(proc, marker=str(temp))
    shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="session")
def minio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A MinIO server: endpoint and root credentials."""
    if not MINIO.exists():
        pytest.fail(f"{MINIO} is missing: build it with hack/tools/build.sh minio")
    data = tmp_path_factory.mktemp("minio")
    log = data.parent / "minio.log"
    server = MinioServer.on_loopback(MINIO, data, user="llmops-test")
    with open(log, "w") as out:
        proc = subprocess.Popen(
            server.argv,
            env={**os.environ, **server.env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        eventually(lambda: proc.poll() is None and server.ready(), timeout=60)
    except AssertionError:
        _stop_group(proc, 5)
        raise AssertionError(f"MinIO did not start; log:\n{log.read_text()[-3000:]}") from None
    endpoint, user, password = server.endpoint, server.user, server.password
    yield {"endpoint": endpoint, "access_key": user, "secret_key": password}
    _stop_group(proc, 10)


@pytest.fixture(scope="session")
def s3(minio: dict[str, str]):

    return s3_client(minio)


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama in Hugging Face layout (hidden 128, 2 heads: head_dim 64)."""
    from llmops.training.tiny import corpus, make_tiny_llama

    return make_tiny_llama(
        corpus([QUICKSTART / "train.jsonl", DATA / "corpus.txt"]), tmp_path_factory.mktemp("tiny-base")
    )
