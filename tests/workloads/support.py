"""Building TrainingRuns and running the workload as the Ray job's entrypoint runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmops.storage import ObjectStore
from llmops.workload import REPORT, JobIdentity, RunReport, TrainingRun, work_dir_for

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"
QUICKSTART = REPO / "llmops" / "training" / "data" / "quickstart"
ARCH = {
    "hiddenSize": 128,
    "layers": 2,
    "heads": 2,
    "intermediateSize": 256,
    "vocabSize": 512,
    "maxPositionEmbeddings": 256,
}


def make_run(spec: dict[str, Any], name: str = "job") -> TrainingRun:
    """A TrainingRun whose work folder sits under the registry, as the operator places it."""
    job = JobIdentity(namespace="tests", name=name, uid=str(uuid.uuid4()))
    from llmops.api.trainingjob import TrainingJobSpec

    # These runs go to a local Ray head as the rayJobsAPI runtime submits them (its address comes from
    # RAY_ADDRESS at start); that runtime may use local paths on a filesystem the cluster shares.
    spec = {"runtime": {"type": "rayJobsAPI", "address": "http://127.0.0.1:8265"}, **spec}
    parsed = TrainingJobSpec.model_validate(spec)
    return TrainingRun(
        job=job, spec=parsed, work_dir=work_dir_for(parsed.output.registry, job), code_version="test"
    )


@dataclass
class Outcome:
    rc: int
    report: RunReport
    log: str


def start(
    run: TrainingRun, ray_address: str, log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen:
    environment = {
        **os.environ,
        "RAY_ADDRESS": ray_address,
        "RAY_AUTH_MODE": "disabled",  # as the test head runs
        "PYTHONPATH": str(REPO),
        "HF_HUB_OFFLINE": "1",
        "LLMOPS_SCRATCH": str(log.parent / "scratch"),
        **(env or {}),
    }
    out = open(log, "a")  # noqa: SIM115 - handed to the child
    return subprocess.Popen(
        [sys.executable, "-m", "llmops.training.run", "--config", run.encode()],
        env=environment,
        stdout=out,
        stderr=subprocess.STDOUT,
        cwd=REPO,
    )


def read_report(store: ObjectStore) -> RunReport | None:
    return RunReport.model_validate_json(store.get_bytes(REPORT)) if store.exists(REPORT) else None


def run_workload(
    run: TrainingRun,
    ray_address: str,
    log: Path,
    work: ObjectStore,
    env: dict[str, str] | None = None,
    timeout: float = 900,
) -> Outcome:
    proc = start(run, ray_address, log, env)
    try:
        rc = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(
            f"the workload ran past {timeout}s; log tail:\n{log.read_text()[-4000:]}"
        ) from None
    report = read_report(work)
    assert report is not None, f"no {REPORT} written; log tail:\n{log.read_text()[-4000:]}"
    return Outcome(rc, report, log.read_text())


def json_of(store: ObjectStore, key: str) -> Any:
    return json.loads(store.get_bytes(key))
