"""The TrainingJob reconcile on the Ray Jobs API path, against a fake Jobs API (the real one:
tests/cluster/test_trainingjob_e2e.py; the KubeRay path: tests/cluster/test_trainingjob.py).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import kopf
import pytest

from llmops.api import TRAINING_JOB
from llmops.api.common import ModelReference, ObjectStorageLocation
from llmops.api.trainingjob import TrainingJobSpec
from llmops.operators import runtime, trainingjob
from llmops.operators.kube import NotFound
from llmops.operators.runtime import Context
from llmops.operators.trainingjob import builders, rayjobs_api
from llmops.operators.trainingjob import reconcile as tj
from llmops.workload import REPORT, RunReport

from .support import JOB, NOW, SECRET_VALUE, VERSION, example

# -- the Ray Jobs API path, against a fake Jobs API -----------------------------------------------


class FakeJobsApi:
    """The Jobs API as JobSubmissionClient shows it: ids are unique, stopped jobs stay stopped."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.submissions: list[str] = []
        self.stops: list[str] = []

    def get(self, submission_id: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.jobs.get(submission_id))

    def find(self, key: str, value: str) -> list[dict[str, Any]]:
        return [copy.deepcopy(j) for j in self.jobs.values() if (j["metadata"] or {}).get(key) == value]

    def submit(self, submission_id: str, entrypoint: str, metadata: dict[str, str]) -> None:
        self.submissions.append(submission_id)
        if submission_id in self.jobs:
            return  # "already exists": success
        self.jobs[submission_id] = {
            "submission_id": submission_id,
            "status": "PENDING",
            "entrypoint": entrypoint,
            "metadata": metadata,
            "start_time": int(dt.datetime.now(dt.UTC).timestamp() * 1000),
            "end_time": None,
            "message": "",
        }

    def stop(self, submission_id: str) -> None:
        self.stops.append(submission_id)
        self.jobs[submission_id]["status"] = "STOPPED"


@pytest.fixture
def jobs_api(monkeypatch: pytest.MonkeyPatch) -> FakeJobsApi:
    fake = FakeJobsApi()
    monkeypatch.setattr(rayjobs_api, "connect", lambda address: fake)
    return fake


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    monkeypatch.setattr(
        Context, "event", lambda self, reason, message, warning=False, **_: seen.append((reason, message))
    )
    return seen


def jobs_api_body(
    tmp_path: Path, generation: int = 1, status: dict | None = None, **spec_changes: Any
) -> dict:
    spec = example("full")["spec"]
    spec["output"] = {"registry": {"local": {"path": str(tmp_path)}}, "modelName": "support-bot"}
    spec["data"].pop("s3")
    spec.update(spec_changes)
    return {
        "apiVersion": "llmops.io/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": "support-bot-full", "namespace": "ml", "uid": JOB.uid, "generation": generation},
        "spec": spec,
        "status": status or {},
    }


# The registry is a local folder: no Secret is read (test_credentials_not_found fakes one that is).
NO_CLUSTER = SimpleNamespace(kube=None)


def context(body: dict, applier: Any = NO_CLUSTER, **kw: Any) -> Context:
    """The Context the runtime hands the kind: the object and its parsed status."""
    status = runtime.parse_status(TRAINING_JOB, body)
    return Context(body=body, applier=applier, logger=logging.getLogger("test"), status=status, **kw)


def run_once(body: dict) -> Any:
    """One reconcile as the runtime runs it: the kind's outcome, then the Events its policy asks for."""
    spec = TrainingJobSpec.model_validate(body["spec"])
    ctx = context(body)
    outcome = tj.reconcile(spec, ctx)
    runtime.announce(trainingjob.KIND, ctx, outcome)
    return outcome


def status_after(body: dict, outcome: Any) -> dict:
    return {**body["status"], "phase": outcome.phase, "submissionId": outcome.status.get("submission_id")}


def test_jobs_api_submits_once_even_across_restarts(
    tmp_path: Path, jobs_api: FakeJobsApi, events: list
) -> None:
    body = jobs_api_body(tmp_path)
    first = run_once(body)
    assert first.phase == "Pending" and jobs_api.submissions == ["llmops-ml-support-bot-full-0f5c2c4e-g1"]
    assert first.requeue_after == tj.RUNNING_RESYNC_SECONDS and first.poll  # paced by the runtime
    # The operator restarted before it wrote status: it finds its submission by uid.
    second = run_once(body)
    assert jobs_api.submissions == ["llmops-ml-support-bot-full-0f5c2c4e-g1"]
    assert second.status["submission_id"] == "llmops-ml-support-bot-full-0f5c2c4e-g1"
    # ... even when the generation moved on in between.
    run_once(jobs_api_body(tmp_path, generation=2))
    assert len(jobs_api.submissions) == 1
    # With status recorded, it looks the job up by id.
    body["status"] = status_after(body, second)
    jobs_api.jobs[jobs_api.submissions[0]]["status"] = "RUNNING"
    third = run_once(body)
    assert third.phase == "Running" and len(jobs_api.submissions) == 1
    assert third.poll and third.requeue_after == tj.RUNNING_RESYNC_SECONDS
    assert ("Started", third.message) in events


def test_jobs_api_polls_a_running_job_paced_but_never_past_its_deadline(
    tmp_path: Path, jobs_api: FakeJobsApi, events: list
) -> None:
    """A running job is read every RUNNING_RESYNC_SECONDS as a poll (paced by the runtime when many
    poll), and its spec.runtime.activeDeadlineSeconds is a clock beside it: the operator stops the run
    then (the Ray Jobs API has no deadline of its own), so pacing must not make it late."""
    runtime = {**example("full")["spec"]["runtime"], "activeDeadlineSeconds": 3600}
    body = jobs_api_body(tmp_path, runtime=runtime)
    body["status"] = status_after(body, run_once(body))
    job = jobs_api.jobs[jobs_api.submissions[0]]
    job["status"] = "RUNNING"
    running = run_once(body)
    assert (running.phase, running.poll, running.requeue_after) == (
        "Running",
        True,
        tj.RUNNING_RESYNC_SECONDS,
    )
    assert running.clock is not None and 3590 < running.clock <= 3600
    # Started 3,595 s ago: about 5 s left, sooner than the poll (the reconcile reads the clock itself).
    job["start_time"] = int((dt.datetime.now(dt.UTC).timestamp() - 3595) * 1000)
    near = run_once(body)
    assert (near.phase, near.poll, near.retry, near.clock) == ("Running", False, False, None)
    assert near.requeue_after is not None and 1.0 <= near.requeue_after <= 5.0
    job["start_time"] -= 10 * 1000  # past it: stopped, Failed, no clock left
    over = run_once(body)
    assert over.reason == "DeadlineExceeded" and jobs_api.stops == [jobs_api.submissions[0]]
    assert over.clock is None and not over.poll


def test_jobs_api_folds_the_report(tmp_path: Path, jobs_api: FakeJobsApi, events: list) -> None:
    body = jobs_api_body(tmp_path)
    body["status"] = status_after(body, run_once(body))
    sid = jobs_api.submissions[0]
    run = builders.run_from_entrypoint(jobs_api.jobs[sid]["entrypoint"])
    work = Path(run.work_dir.local.path)
    work.mkdir(parents=True)
    rep = RunReport(
        phase="Succeeded", model_version=VERSION.model_copy(update={"name": "support-bot", "version": "1"})
    )
    (work / REPORT).write_text(rep.model_dump_json(by_alias=True))
    jobs_api.jobs[sid].update(status="SUCCEEDED", end_time=int(NOW.timestamp() * 1000))
    done = run_once(body)
    assert (done.phase, done.state) == ("Succeeded", "ready") and "support-bot:1" in done.message
    assert done.status["work_dir"] == str(work)
    # The registration is an Event (and audit record) of its own, after the phase's.
    assert [e[0] for e in events[-2:]] == ["Succeeded", "VersionRegistered"]
    assert "support-bot:1" in events[-1][1]


def test_jobs_api_suspend_stops_and_resume_resubmits(
    tmp_path: Path, jobs_api: FakeJobsApi, events: list
) -> None:
    body = jobs_api_body(tmp_path)
    body["status"] = status_after(body, run_once(body))
    first = jobs_api.submissions[0]
    jobs_api.jobs[first]["status"] = "RUNNING"
    suspended_body = jobs_api_body(tmp_path, generation=2, status=body["status"], suspend=True)
    suspended = run_once(suspended_body)
    assert suspended.phase == "Suspended" and jobs_api.stops == [first]
    resumed_body = jobs_api_body(tmp_path, generation=3, status=status_after(suspended_body, suspended))
    resumed = run_once(resumed_body)
    assert jobs_api.submissions == [first, "llmops-ml-support-bot-full-0f5c2c4e-g3"]
    assert resumed.status["submission_id"].endswith("-g3") and resumed.phase == "Pending"
    # The resumed job runs the same (fixed) run.
    assert jobs_api.jobs[first]["entrypoint"] == jobs_api.jobs[resumed.status["submission_id"]]["entrypoint"]


def test_jobs_api_retries_a_crash_but_not_the_workloads_verdict(
    tmp_path: Path, jobs_api: FakeJobsApi, events: list
) -> None:
    body = jobs_api_body(tmp_path)
    body["spec"]["runtime"]["backoffLimit"] = 1
    body["status"] = status_after(body, run_once(body))
    jobs_api.jobs[jobs_api.submissions[0]].update(status="FAILED", message="worker died")
    retried = run_once(body)
    assert retried.phase == "Pending" and jobs_api.submissions[-1].endswith("-g1-retry1")
    body["status"] = status_after(body, retried)
    jobs_api.jobs[jobs_api.submissions[-1]].update(status="FAILED", message="worker died again")
    failed = run_once(body)
    assert (failed.phase, failed.reason) == (
        "Failed",
        "RayJobFailed",
    ) and "worker died again" in failed.message
    assert len(jobs_api.submissions) == 2


def test_jobs_api_unreachable_is_reconciling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, events: list
) -> None:
    def refuse(address: str) -> Any:
        raise rayjobs_api.RayUnavailable(f"cannot reach the Ray Jobs API at {address} (ConnectionError)")

    monkeypatch.setattr(rayjobs_api, "connect", refuse)
    outcome = run_once(jobs_api_body(tmp_path))
    assert (outcome.state, outcome.reason) == ("reconciling", "RayUnavailable") and outcome.requeue_after


def test_jobs_api_delete_stops_the_job(tmp_path: Path, jobs_api: FakeJobsApi) -> None:
    body = jobs_api_body(tmp_path)
    body["status"] = status_after(body, run_once(body))
    spec = TrainingJobSpec.model_validate(body["spec"])
    tj.finalize(spec, context(body, applier=None))
    assert jobs_api.stops == jobs_api.submissions
    assert not list(Path(tmp_path).glob("models/*"))  # the registry is never touched


def test_jobs_api_delete_gives_up_after_retries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, events: list
) -> None:
    def refuse(address: str) -> Any:
        raise rayjobs_api.RayUnavailable("cannot reach the Ray Jobs API")

    monkeypatch.setattr(rayjobs_api, "connect", refuse)
    body = jobs_api_body(tmp_path, status={"submissionId": "llmops-x"})
    spec = TrainingJobSpec.model_validate(body["spec"])
    with pytest.raises(kopf.TemporaryError):
        tj.finalize(spec, context(body, applier=None))
    tj.finalize(spec, context(body, applier=None, retry=tj.CLEANUP_RETRIES))
    assert events and events[-1][0] == "CleanupFailed"


def test_secret_values_never_reach_status_or_messages(
    tmp_path: Path, jobs_api: FakeJobsApi, events: list
) -> None:
    body = jobs_api_body(tmp_path)
    outcome = run_once(body)
    text = json.dumps([outcome.message, str(outcome.status), events], default=str)
    assert SECRET_VALUE not in text


def test_credentials_not_found(tmp_path: Path, jobs_api: FakeJobsApi, events: list, monkeypatch: Any) -> None:
    """A missing registry Secret: Stalled with the reason ModelDeployment gives too, phase Pending (nothing
    ran), a Warning Event once, retried every minute; nothing is submitted."""

    class NoSecrets:
        def get(self, api_version: str, kind: str, name: str, namespace: str) -> dict:
            raise NotFound(404, "NotFound", f'secrets "{name}" not found')

    monkeypatch.setattr(NO_CLUSTER, "kube", NoSecrets())
    body = jobs_api_body(tmp_path, model={"base": {"name": "support-bot", "alias": "production"}})
    body["spec"]["output"]["registry"] = {
        "s3": {"bucket": "models", "credentialsSecretRef": {"name": "registry-credentials"}}
    }
    outcome = run_once(body)
    assert (outcome.state, outcome.phase, outcome.reason) == ("stalled", "Pending", "CredentialsNotFound")
    assert outcome.message.startswith(
        "spec.output.registry.s3.credentialsSecretRef: Secret 'registry-credentials'"
    )
    assert outcome.requeue_after == 60 and not jobs_api.submissions
    assert events == [("CredentialsNotFound", outcome.message)]
    body["status"] = runtime.status_patch(TRAINING_JOB, body, outcome)
    run_once(body)
    assert len(events) == 1  # once per new reason, not on every retry


def test_jobs_api_pins_the_baseline_alias_when_the_run_starts(
    tmp_path: Path, jobs_api: FakeJobsApi, events: list
) -> None:
    """spec.evaluation.baseline by alias: resolved once, the run carries the version; one that does
    not resolve stalls the job (BaselineNotFound, Pending) before anything is submitted."""
    from llmops import registry
    from llmops.storage import open_store

    store = open_store(ObjectStorageLocation.model_validate({"local": {"path": str(tmp_path)}}))
    model = tmp_path / "weights"
    model.mkdir()
    (model / "config.json").write_text("{}")
    for _ in range(2):
        registry.register(store, "support-bot", model, metrics={}, gates=[], lineage=registry.Lineage())
    registry.set_alias(store, "support-bot", "champion", "1")

    missing = jobs_api_body(tmp_path)
    missing["spec"]["evaluation"]["baseline"] = {"name": "support-bot", "alias": "nobody"}
    stalled = run_once(missing)
    assert (stalled.state, stalled.phase, stalled.reason) == ("stalled", "Pending", "BaselineNotFound")
    assert stalled.message.startswith("spec.evaluation.baseline (support-bot, alias nobody) does not resolve")
    assert not jobs_api.submissions

    body = jobs_api_body(tmp_path)
    body["spec"]["evaluation"]["baseline"] = {"name": "support-bot", "alias": "champion"}
    first = run_once(body)
    assert first.phase == "Pending" and len(jobs_api.submissions) == 1
    run = builders.run_from_entrypoint(jobs_api.jobs[jobs_api.submissions[0]]["entrypoint"])
    assert run is not None and run.spec.evaluation is not None
    assert run.spec.evaluation.baseline == ModelReference(name="support-bot", version="1")


def test_quantize_refuses_a_parent_that_is_quantized_or_an_adapter_before_anything_runs(
    tmp_path: Path, jobs_api: FakeJobsApi, events: list
) -> None:
    """method quantize on a version llm-compressor cannot quantize (already quantized, or an adapter
    only): Stalled, Pending, BaseNotQuantizable, naming spec.model.base and what it holds; nothing is
    submitted. An unquantized full model starts the run. The registry is a real local one."""
    from llmops import registry
    from llmops.storage import open_store

    store = open_store(ObjectStorageLocation.model_validate({"local": {"path": str(tmp_path)}}))
    model = tmp_path / "weights"
    (model / "adapter").mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (model / "adapter" / "adapter_config.json").write_text("{}")
    quantized = registry.Content(
        quantization=registry.Quantization(
            method="compressed-tensors", format="pack-quantized", scheme="W4A16"
        )
    )
    adapter = registry.Content(kind="adapter", adapter="adapter", base="support-bot:1")
    for content in (None, quantized, adapter):
        registry.register(
            store, "support-bot", model, metrics={}, gates=[], lineage=registry.Lineage(), content=content
        )

    def quantize_body(version: str) -> dict:
        body = jobs_api_body(tmp_path)
        spec = example("quantize")["spec"]
        spec["model"] = {"base": {"name": "support-bot", "version": version}}
        spec["output"] = body["spec"]["output"] | {"modelName": "support-bot-w4a16"}
        spec["runtime"] = body["spec"]["runtime"]
        spec["resources"]["perWorker"].pop("gpus")
        body["spec"] = spec
        return body

    for version, held in (
        ("2", "already quantized (compressed-tensors pack-quantized W4A16)"),
        ("3", "adapter"),
    ):
        stalled = run_once(quantize_body(version))
        assert (stalled.state, stalled.phase, stalled.reason) == ("stalled", "Pending", "BaseNotQuantizable")
        assert stalled.message.startswith(f"spec.model.base (support-bot:{version}) cannot be quantized")
        assert held in stalled.message
        assert not jobs_api.submissions
    started = run_once(quantize_body("1"))
    assert started.phase == "Pending" and len(jobs_api.submissions) == 1
