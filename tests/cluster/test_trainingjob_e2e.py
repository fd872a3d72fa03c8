"""A TrainingJob for real: `kubectl apply` -> the operator (its own process, as users run it) submits
through the Ray Jobs API to a local Ray head (2 CPUs) -> the training workload pre-trains a tiny
model, evaluates it and registers a version in a local-directory registry -> Succeeded, with the
model version in status. The operator is killed mid-run and started again: the run is not submitted
twice (deterministic submission id, looked up before submitting).

Needs the training workload (`llmops.training.run`) and `ray[default]`; skipped, saying so, without them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

try:
    import ray  # noqa: F401

    import llmops.training.run  # noqa: F401
except ImportError as missing:  # pragma: no cover - depends on the environment
    pytest.skip(
        f"the end-to-end TrainingJob test needs the training workload and ray[default] ({missing})",
        allow_module_level=True,
    )

from llmops.dev.cluster import LocalCluster
from llmops.dev.services import RayHead
from tests.helpers import eventually, http_get, operator_process

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("llmops_crds"), pytest.mark.timeout(1500)]

CORPUS = Path(__file__).parents[2] / "llmops" / "training" / "data" / "quickstart" / "train.jsonl"  # bundled


@pytest.fixture(scope="module")
def ray_head() -> Iterator[str]:
    """A local Ray head with 2 CPUs and the dashboard (the Jobs API); returns its address.

    Started with `ray start --block` in its own process group and stopped by signalling that group
    only, never with `ray stop` (which would stop every Ray on the machine).
    """
    temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's unix sockets live here
    head = RayHead.on_loopback(temp, num_cpus=2)
    log = open(temp / "ray-start.log", "w")  # noqa: SIM115 - closed below
    env = {**os.environ, **head.env}
    proc = subprocess.Popen(head.argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = head.dashboard
    try:
        eventually(lambda: proc.poll() is None and http_get(f"{address}/api/version")[0] == 200, timeout=180)
        yield address
    finally:
        with_group = os.getpgid(proc.pid) if proc.poll() is None else None
        if with_group:
            os.killpg(with_group, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(with_group, signal.SIGKILL)
                proc.wait()
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def get(cluster: LocalCluster, name: str, namespace: str) -> dict:
    return json.loads(cluster.kubectl("get", "tj", name, "-n", namespace, "-o", "json").stdout)


def test_ray_jobs_api_run_end_to_end(
    cluster: LocalCluster, namespace: str, ray_head: str, tmp_path: Path
) -> None:
    from ray.job_submission import JobSubmissionClient

    started = time.monotonic()
    registry = tmp_path / "registry"
    registry.mkdir()
    job = {
        "apiVersion": "llmops.io/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": "tiny-e2e"},
        "spec": {
            "model": {
                "architecture": {
                    "hiddenSize": 64,
                    "layers": 1,
                    "heads": 1,  # head_dim 64, which vLLM on the CPU serves
                    "intermediateSize": 128,
                    "vocabSize": 256,
                    "maxPositionEmbeddings": 64,
                }
            },
            "data": {
                "sources": [{"uri": str(CORPUS), "format": "jsonl"}],
                "preparation": {"tokenization": {"blockSize": 32}, "validationSplit": 0.2},
            },
            "method": {
                "type": "pretrain",
                "hyperparameters": {"maxSteps": 30, "batchSize": 4, "learningRate": 0.001},
            },
            "resources": {"workers": 1, "perWorker": {"cpu": 1}},
            "evaluation": {"perplexity": {"threshold": 1.0e9}},
            "output": {"registry": {"local": {"path": str(registry)}}, "modelName": "tiny-e2e"},
            "runtime": {"type": "rayJobsAPI", "address": ray_head},
        },
    }
    with operator_process(cluster, namespace) as first:
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(job))
        running = eventually(
            lambda: (
                (o := get(cluster, "tiny-e2e", namespace)).get("status", {}).get("phase") == "Running" and o
            ),
            timeout=300,
        )
        first["proc"].send_signal(signal.SIGKILL)  # an operator crash mid-run
        first["proc"].wait(30)
    submission = running["status"]["submissionId"]
    with operator_process(cluster, namespace):
        done = eventually(
            lambda: (
                (o := get(cluster, "tiny-e2e", namespace))["status"].get("phase") in ("Succeeded", "Failed")
                and o
            ),
            timeout=1200,
            interval=2,
        )
    status = done["status"]
    assert status["phase"] == "Succeeded", status.get("message")
    assert status["submissionId"] == submission
    version = status["modelVersion"]
    assert (
        version["name"] == "tiny-e2e"
        and (registry / "models" / "tiny-e2e" / "versions" / version["version"]).is_dir()
    )
    assert status["evaluation"].get("perplexity") is not None and all(g["passed"] for g in status["gates"])
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"
    jobs = [
        j
        for j in JobSubmissionClient(ray_head).list_jobs()
        if (j.metadata or {}).get("llmops.io/uid") == done["metadata"]["uid"]
    ]
    assert [j.submission_id for j in jobs] == [submission], "the run was submitted more than once"
    print(f"end-to-end TrainingJob: {time.monotonic() - started:.0f}s wall time")
