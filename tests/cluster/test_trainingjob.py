"""The TrainingJob operator against the real control plane (kube-apiserver, controller-manager with
its garbage collector, the real KubeRay CRDs).

No Ray pods run here: there is no KubeRay operator and kwok only pretends to run pods. The tests play
KubeRay's part by patching the RayJob's status subresource, and the workload's part by writing
report.json into the job's work folder in the registry: a real MinIO bucket (the runtime kuberay
takes only object storage, its pods mount no volume), read by the in-process operator with the
credentials of the Secret the spec names. The real run on a Ray head is
tests/cluster/test_trainingjob_e2e.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmops.api.common import ObjectStorageLocation
from llmops.api.trainingjob import GateResult, ModelVersionRef, Progress
from llmops.dev import services
from llmops.dev.cluster import LocalCluster
from llmops.operators import trainingjob
from llmops.operators.manifests import adopt
from llmops.operators.trainingjob import builders, names
from llmops.storage import Credentials, ObjectStore, open_store
from llmops.workload import REPORT, RunReport
from tests.helpers import eventually, operator_in_thread

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("llmops_crds")]

EXAMPLES = Path(__file__).parents[2] / "examples"
SECRET_VALUE = "s3cr3t-value-never-shown"


def get(cluster: LocalCluster, kind: str, name: str, namespace: str) -> dict:
    return json.loads(cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json").stdout)


def events_of(cluster: LocalCluster, name: str, namespace: str) -> list[dict]:
    out = cluster.kubectl(
        "get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}", "-o", "json"
    )
    return json.loads(out.stdout)["items"]


def conditions(obj: dict) -> dict[str, dict]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions", [])}


@pytest.fixture(scope="module")
def minio(cluster: LocalCluster) -> dict:
    """MinIO beside the test cluster (the dev services' own command), with the bucket `llmops`."""
    return services.start_minio(cluster)


@pytest.fixture
def registry(cluster: LocalCluster, namespace: str, minio: dict) -> dict:
    """The test's own registry: a prefix of the bucket, with its credentials in a namespace Secret."""
    cluster.kubectl(
        "create", "secret", "generic", "registry-credentials", "-n", namespace,
        f"--from-literal=AWS_ACCESS_KEY_ID={minio['accessKeyId']}",
        f"--from-literal=AWS_SECRET_ACCESS_KEY={minio['secretAccessKey']}",
    )  # fmt: skip
    return {
        "s3": {
            "endpoint": minio["endpoint"],
            "bucket": "llmops",
            "prefix": f"{namespace}/",
            "credentialsSecretRef": {"name": "registry-credentials"},
        }
    }


def store_of(location: dict | ObjectStorageLocation, minio: dict) -> ObjectStore:
    if isinstance(location, dict):
        location = ObjectStorageLocation.model_validate(location)
    return open_store(location, Credentials(minio["accessKeyId"], minio["secretAccessKey"]))


def training_job(name: str, registry: dict, **spec: Any) -> dict:
    """A small pre-training job on the test's registry (see the `registry` fixture)."""
    body = {
        "model": {
            "architecture": {
                "hiddenSize": 128,
                "layers": 2,
                "heads": 2,
                "intermediateSize": 256,
                "vocabSize": 512,
                "maxPositionEmbeddings": 128,
            }
        },
        "data": {"sources": [{"uri": "s3://llmops/data/corpus.txt", "format": "text"}]},
        "method": {"type": "pretrain", "hyperparameters": {"maxSteps": 20}},
        "resources": {"workers": 2, "perWorker": {"cpu": 2, "memory": "4Gi"}},
        "evaluation": {"perplexity": {"threshold": 1000}},
        "output": {"registry": registry, "modelName": "tiny"},
    }
    body.update(spec)
    return {
        "apiVersion": "llmops.io/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": name},
        "spec": body,
    }


def apply(cluster: LocalCluster, namespace: str, obj: dict) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(obj))


def rayjob_of(cluster: LocalCluster, namespace: str, tj: dict) -> dict:
    name = names.rayjob_name(tj["metadata"]["name"], tj["metadata"]["uid"])
    return eventually(
        lambda: (
            cluster.kubectl("get", "rayjob", name, "-n", namespace, check=False).returncode == 0
            and get(cluster, "rayjob", name, namespace)
        )
    )


def play_kuberay(cluster: LocalCluster, namespace: str, rayjob: dict, status: dict) -> None:
    """What KubeRay would write: the RayJob's status subresource."""
    cluster.kubectl(
        "patch", "rayjob", rayjob["metadata"]["name"], "-n", namespace,
        "--subresource=status", "--type=merge", "-p", json.dumps({"status": status}),
    )  # fmt: skip


def write_report(rayjob: dict, report: RunReport, minio: dict) -> None:
    """What the workload would write into its work folder (in the registry's bucket)."""
    run = builders.run_from_entrypoint(rayjob["spec"]["entrypoint"])
    assert run is not None and run.work_dir.s3 is not None
    store_of(run.work_dir, minio).put_bytes(REPORT, report.model_dump_json(by_alias=True).encode())


def until(cluster: LocalCluster, name: str, namespace: str, check, timeout: float = 60) -> dict:
    return eventually(lambda: (o := get(cluster, "tj", name, namespace)) and check(o) and o, timeout=timeout)


def phase_is(phase: str):
    return lambda o: (o.get("status") or {}).get("phase") == phase


@pytest.fixture
def operator(cluster: LocalCluster, namespace: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The real TrainingJob operator, in a thread of this process (it shares the registry folder)."""
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    with operator_in_thread(namespace, [trainingjob.KIND]):
        yield


# -- the RayJob against the real KubeRay CRD ------------------------------------------------------


@pytest.mark.parametrize("example", ["pretrain", "full", "lora", "qlora"])
def test_rayjob_passes_the_kuberay_crd(cluster: LocalCluster, namespace: str, example: str) -> None:
    doc = yaml.safe_load((EXAMPLES / f"trainingjob-{example}.yaml").read_text())
    spec = builders.TrainingJobSpec.model_validate(doc["spec"])
    spec = spec.model_copy(
        update={"runtime": spec.runtime.model_copy(update={"type": "kuberay", "address": None})}
    )
    if spec.model.base is not None:
        spec = builders.pin_base(spec, "3")
    owner = {
        "apiVersion": "llmops.io/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {
            "name": doc["metadata"]["name"],
            "namespace": namespace,
            "uid": "6a0d9a3e-2f4b-4b8e-9d51-0c1e2f3a4b5c",
        },
    }
    job = builders.identity(owner)
    run = builders.training_run(spec, job, "0.1.0")
    manifest = adopt(
        builders.rayjob(
            run,
            builders.lifecycle(spec, creating=True),
            name=names.rayjob_name(job.name, job.uid),
            image="ghcr.io/llmops/trainer:0.1.0",
        ),
        owner,
    )
    result = cluster.kubectl(
        "apply", "--server-side", "--dry-run=server", "--field-manager=llmops", "-o", "json", "-f", "-",
        input=json.dumps(manifest),
    )  # fmt: skip
    stored = json.loads(result.stdout)
    # Nothing was pruned: the CRD knows every field we set.
    assert (
        stored["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]
        == manifest["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]
    )
    assert stored["spec"]["submitterPodTemplate"] == manifest["spec"]["submitterPodTemplate"]
    assert stored["spec"]["entrypoint"] == manifest["spec"]["entrypoint"]


# -- status transitions, progress, results --------------------------------------------------------


def test_status_follows_the_rayjob_and_the_report(
    cluster: LocalCluster, namespace: str, operator: None, registry: dict, minio: dict
) -> None:
    apply(cluster, namespace, training_job("tiny", registry))
    tj = until(cluster, "tiny", namespace, phase_is("Pending"))
    assert conditions(tj)["Reconciling"]["status"] == "True"
    assert "llmops.io/finalizer" not in tj["metadata"].get("finalizers", [])  # kuberay: GC cleans up
    rayjob = rayjob_of(cluster, namespace, tj)
    owner = rayjob["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("TrainingJob", tj["metadata"]["uid"], True)
    assert rayjob["metadata"]["labels"]["llmops.io/trainingjob"] == "tiny"
    assert rayjob["spec"]["suspend"] is False and rayjob["spec"]["shutdownAfterJobFinishes"] is True
    assert tj["status"]["rayJobName"] == rayjob["metadata"]["name"]

    play_kuberay(
        cluster,
        namespace,
        rayjob,
        {"jobDeploymentStatus": "Initializing", "startTime": "2026-11-27T10:00:00Z"},
    )
    until(cluster, "tiny", namespace, lambda o: conditions(o)["Ready"]["reason"] == "Starting")

    progress = Progress(
        stage="Training", step=5, total_steps=20, epoch=0.25, loss=5.5, tokens_per_second=1200, eta_seconds=60
    )
    write_report(rayjob, RunReport(phase="Running", progress=progress), minio)
    play_kuberay(
        cluster,
        namespace,
        rayjob,
        {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING", "jobId": "tiny-abc"},
    )
    running = until(cluster, "tiny", namespace, phase_is("Running"))
    assert running["status"]["progress"]["percent"] == 25 and running["status"]["progress"]["loss"] == 5.5
    assert running["status"]["submissionId"] == "tiny-abc"
    assert running["status"]["startTime"] == "2026-11-27T10:00:00Z"

    # Progress moves without any Kubernetes event: the resync reads the report while Running.
    write_report(
        rayjob,
        RunReport(phase="Running", progress=progress.model_copy(update={"step": 15, "loss": 3.25})),
        minio,
    )
    until(cluster, "tiny", namespace, lambda o: o["status"]["progress"]["step"] == 15, timeout=40)

    uri = f"s3://llmops/{namespace}/models/tiny/versions/1/manifest.json"
    version = ModelVersionRef(name="tiny", version="1", uri=uri)
    gates = [GateResult(metric="perplexity", operator="<=", threshold=1000, value=210.5, passed=True)]
    write_report(
        rayjob,
        RunReport(
            phase="Succeeded",
            progress=progress.model_copy(update={"stage": "Done", "step": 20, "percent": 100}),
            metrics={"perplexity": 210.5},
            gates=gates,
            model_version=version,
            lineage={"base": "scratch", "dataDigest": "sha256:abc"},
        ),
        minio,
    )
    play_kuberay(
        cluster,
        namespace,
        rayjob,
        {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED", "endTime": "2026-11-27T10:30:00Z"},
    )
    waited = cluster.kubectl("wait", "tj/tiny", "-n", namespace, "--for=condition=Ready", "--timeout=60s")
    assert "condition met" in waited.stdout
    done = get(cluster, "tj", "tiny", namespace)
    assert done["status"]["phase"] == "Succeeded"
    assert done["status"]["modelVersion"] == version.to_dict()
    assert done["status"]["evaluation"] == {"perplexity": 210.5}
    assert (
        done["status"]["gates"][0]["passed"] is True
        and done["status"]["lineage"]["dataDigest"] == "sha256:abc"
    )
    assert done["status"]["completionTime"] == "2026-11-27T10:30:00Z"
    assert conditions(done)["Stalled"]["status"] == "False"
    reasons = eventually(
        lambda: (r := [e["reason"] for e in events_of(cluster, "tiny", namespace)]) and "Succeeded" in r and r
    )
    assert "Started" in reasons
    printed = cluster.kubectl("get", "tj", "tiny", "-n", namespace).stdout
    assert "Succeeded" in printed and " 1 " in printed  # the Version column


def test_gate_failure_is_stalled_with_an_event(
    cluster: LocalCluster, namespace: str, operator: None, registry: dict, minio: dict
) -> None:
    apply(cluster, namespace, training_job("gated", registry))
    rayjob = rayjob_of(cluster, namespace, until(cluster, "gated", namespace, phase_is("Pending")))
    gates = [GateResult(metric="perplexity", operator="<=", threshold=10, value=210.5, passed=False)]
    write_report(
        rayjob,
        RunReport(phase="Failed", gates=gates, failed_gates=["perplexity"], message="gate perplexity failed"),
        minio,
    )
    play_kuberay(cluster, namespace, rayjob, {"jobDeploymentStatus": "Complete", "jobStatus": "FAILED"})
    cluster.kubectl("wait", "tj/gated", "-n", namespace, "--for=condition=Stalled", "--timeout=60s")
    failed = get(cluster, "tj", "gated", namespace)
    assert failed["status"]["phase"] == "Failed" and conditions(failed)["Ready"]["status"] == "False"
    assert conditions(failed)["Stalled"]["reason"] == "GatesFailed"
    assert "perplexity = 210.5, needs <= 10" in failed["status"]["message"]
    assert "modelVersion" not in failed["status"]
    event = eventually(
        lambda: [e for e in events_of(cluster, "gated", namespace) if e["reason"] == "GateFailed"]
    )[0]
    assert event["type"] == "Warning"
    # A finished run stays finished: touching the object does not start it again.
    cluster.kubectl("annotate", "tj", "gated", "-n", namespace, "touch=1")
    again = until(cluster, "gated", namespace, lambda o: o["metadata"]["annotations"].get("touch") == "1")
    assert again["status"]["phase"] == "Failed"


def test_runtime_failure_without_a_report(
    cluster: LocalCluster, namespace: str, operator: None, registry: dict, minio: dict
) -> None:
    apply(cluster, namespace, training_job("deadline", registry, runtime={"activeDeadlineSeconds": 60}))
    rayjob = rayjob_of(cluster, namespace, until(cluster, "deadline", namespace, phase_is("Pending")))
    assert rayjob["spec"]["activeDeadlineSeconds"] == 60
    message = "The RayJob has passed the activeDeadlineSeconds."
    status = {"jobDeploymentStatus": "Failed", "reason": "DeadlineExceeded", "message": message}
    play_kuberay(cluster, namespace, rayjob, status)
    failed = until(cluster, "deadline", namespace, phase_is("Failed"))
    assert conditions(failed)["Stalled"]["reason"] == "DeadlineExceeded"
    assert "activeDeadlineSeconds" in failed["status"]["message"]


# -- suspend and Kueue ---------------------------------------------------------------------------


def test_suspend_and_resume(
    cluster: LocalCluster, namespace: str, operator: None, registry: dict, minio: dict
) -> None:
    apply(cluster, namespace, training_job("paused", registry, suspend=True))
    tj = until(cluster, "paused", namespace, phase_is("Suspended"))
    rayjob = rayjob_of(cluster, namespace, tj)
    assert rayjob["spec"]["suspend"] is True
    entrypoint = rayjob["spec"]["entrypoint"]
    apply(cluster, namespace, training_job("paused", registry, suspend=False))
    eventually(
        lambda: get(cluster, "rayjob", rayjob["metadata"]["name"], namespace)["spec"]["suspend"] is False
    )
    # Suspending does not change what runs.
    assert get(cluster, "rayjob", rayjob["metadata"]["name"], namespace)["spec"]["entrypoint"] == entrypoint
    until(cluster, "paused", namespace, phase_is("Pending"))


def test_queued_job_waits_for_kueue(
    cluster: LocalCluster, namespace: str, operator: None, registry: dict, minio: dict
) -> None:
    apply(cluster, namespace, training_job("queued", registry, runtime={"queueName": "research"}))
    tj = until(cluster, "queued", namespace, lambda o: "status" in o)
    rayjob = rayjob_of(cluster, namespace, tj)
    assert rayjob["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "research"
    assert rayjob["spec"]["suspend"] is True
    # Later reconciles leave `suspend` to Kueue, and it stays true until Kueue admits the job.
    cluster.kubectl("annotate", "tj", "queued", "-n", namespace, "touch=1")
    play_kuberay(cluster, namespace, rayjob, {"jobDeploymentStatus": "Suspended"})
    queued = until(
        cluster, "queued", namespace, lambda o: conditions(o).get("Ready", {}).get("reason") == "Queued"
    )
    assert "research" in queued["status"]["message"]
    shown = cluster.kubectl(
        "get", "rayjob", rayjob["metadata"]["name"], "-n", namespace, "-o", "json", "--show-managed-fields"
    )
    stored = json.loads(shown.stdout)
    assert stored["spec"]["suspend"] is True
    owners = {
        m["manager"]
        for m in stored["metadata"]["managedFields"]
        if "f:suspend" in json.dumps(m.get("fieldsV1", {}))
    }
    assert owners == {builders.QUEUE_FIELD_MANAGER}


# -- deletion ------------------------------------------------------------------------------------


def test_deleting_the_trainingjob_deletes_its_rayjob_not_the_registry(
    cluster: LocalCluster, namespace: str, operator: None, registry: dict, minio: dict
) -> None:
    store = store_of(registry, minio)
    store.put_bytes("models/tiny/versions/1/manifest.json", b"{}")
    apply(cluster, namespace, training_job("gone", registry))
    rayjob = rayjob_of(cluster, namespace, until(cluster, "gone", namespace, phase_is("Pending")))
    cluster.kubectl("delete", "tj", "gone", "-n", namespace, "--timeout=60s")
    # The garbage collector of the real kube-controller-manager follows the owner reference.
    eventually(
        lambda: (
            cluster.kubectl(
                "get", "rayjob", rayjob["metadata"]["name"], "-n", namespace, check=False
            ).returncode
            != 0
        )
    )
    assert store.get_bytes("models/tiny/versions/1/manifest.json") == b"{}"


# -- bad input -----------------------------------------------------------------------------------


def test_qlora_without_gpus_is_stalled(
    cluster: LocalCluster, namespace: str, operator: None, registry: dict, minio: dict
) -> None:
    obj = training_job(
        "qlora-cpu", registry,
        model={"baseModel": "s3://llmops/checkpoints/tiny"},
        method={"type": "qlora", "lora": {"r": 8}},
    )  # fmt: skip
    apply(cluster, namespace, obj)
    cluster.kubectl("wait", "tj/qlora-cpu", "-n", namespace, "--for=condition=Stalled", "--timeout=60s")
    tj = get(cluster, "tj", "qlora-cpu", namespace)
    stalled = conditions(tj)["Stalled"]
    assert stalled["reason"] == "GpuRequired" and tj["status"]["phase"] == "Failed"
    assert "spec.method.type" in stalled["message"] and "spec.resources.perWorker.gpus" in stalled["message"]
    assert not json.loads(cluster.kubectl("get", "rayjobs", "-n", namespace, "-o", "json").stdout)["items"]
    assert eventually(
        lambda: [e for e in events_of(cluster, "qlora-cpu", namespace) if e["type"] == "Warning"]
    )


def test_unknown_base_model_is_stalled(
    cluster: LocalCluster, namespace: str, operator: None, registry: dict, minio: dict
) -> None:
    obj = training_job(
        "lora-nobase",
        registry,
        model={"base": {"name": "missing", "alias": "production"}},
        method={"type": "lora"},
    )
    apply(cluster, namespace, obj)
    cluster.kubectl("wait", "tj/lora-nobase", "-n", namespace, "--for=condition=Stalled", "--timeout=60s")
    stalled = conditions(get(cluster, "tj", "lora-nobase", namespace))["Stalled"]
    assert stalled["reason"] == "BaseModelNotFound"
    assert "spec.model.base" in stalled["message"] and "missing" in stalled["message"]
    assert not json.loads(cluster.kubectl("get", "rayjobs", "-n", namespace, "-o", "json").stdout)["items"]


def test_secret_values_stay_out_of_status_and_events(
    cluster: LocalCluster, namespace: str, operator: None
) -> None:
    cluster.kubectl(
        "create", "secret", "generic", "registry-credentials", "-n", namespace,
        "--from-literal=AWS_ACCESS_KEY_ID=AKIDLLMOPS", f"--from-literal=AWS_SECRET_ACCESS_KEY={SECRET_VALUE}",
    )  # fmt: skip
    registry = {
        "s3": {
            "endpoint": "http://127.0.0.1:9",
            "bucket": "models",
            "credentialsSecretRef": {"name": "registry-credentials"},
        }
    }
    obj = training_job("s3-job", registry)
    apply(cluster, namespace, obj)
    rayjob = rayjob_of(cluster, namespace, until(cluster, "s3-job", namespace, phase_is("Pending")))
    # The operator now reads the Secret and tries the (unreachable) registry for the report.
    play_kuberay(cluster, namespace, rayjob, {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"})
    running = until(
        cluster,
        "s3-job",
        namespace,
        lambda o: "progress unavailable" in (o["status"].get("message") or ""),
        timeout=90,
    )
    everything = json.dumps(
        [
            running,
            get(cluster, "rayjob", rayjob["metadata"]["name"], namespace),
            events_of(cluster, "s3-job", namespace),
        ]
    )
    assert SECRET_VALUE not in everything and "AKIDLLMOPS" not in everything
    env = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]
    assert {
        "name": "AWS_SECRET_ACCESS_KEY",
        "valueFrom": {"secretKeyRef": {"name": "registry-credentials", "key": "AWS_SECRET_ACCESS_KEY"}},
    } in env


def test_only_ray_jobs_api_jobs_get_the_finalizer(
    cluster: LocalCluster, namespace: str, operator: None, registry: dict, minio: dict
) -> None:
    obj = training_job("remote", registry, runtime={"type": "rayJobsAPI", "address": "http://127.0.0.1:9"})
    apply(cluster, namespace, obj)
    try:
        tj = until(
            cluster,
            "remote",
            namespace,
            lambda o: (
                "llmops.io/finalizer" in o["metadata"].get("finalizers", [])
                and o.get("status", {}).get("conditions")
            ),
        )
        ready = conditions(tj)["Ready"]
        # Ray is unreachable (or not installed): that heals, so it is Reconciling, not Stalled.
        assert ready["reason"] == "RayUnavailable" and conditions(tj)["Reconciling"]["status"] == "True"
        # Switched to kuberay, it needs no finalizer any more, and the operator takes it off.
        runtime = [{"op": "replace", "path": "/spec/runtime", "value": {"type": "kuberay"}}]
        cluster.kubectl("patch", "tj", "remote", "-n", namespace, "--type=json", "-p", json.dumps(runtime))
        until(
            cluster,
            "remote",
            namespace,
            lambda o: "llmops.io/finalizer" not in o["metadata"].get("finalizers", []),
        )
    finally:
        cluster.kubectl("delete", "tj", "remote", "-n", namespace, "--wait=false", check=False)


def test_examples_wait_for_their_runtime(cluster: LocalCluster, namespace: str, operator: None) -> None:
    """The examples as users apply them: nothing runs here, so each waits (Reconciling), none is Stalled."""
    for secret in ("dataset-credentials", "hf-token"):
        cluster.kubectl("create", "secret", "generic", secret, "-n", namespace, "--from-literal=key=value")
    # The keys the examples name (the dev MinIO's root user), or the operator rightly stalls them.
    literals = ["--from-literal=rootUser=minio-user", "--from-literal=rootPassword=minio-password"]
    cluster.kubectl("create", "secret", "generic", "registry-credentials", "-n", namespace, *literals)
    names = []
    for path in sorted(EXAMPLES.glob("trainingjob-*.yaml")):
        cluster.kubectl("apply", "-n", namespace, "-f", str(path))
        names.append(yaml.safe_load(path.read_text())["metadata"]["name"])
    for name in names:
        obj = until(
            cluster, name, namespace, lambda o: (o.get("status") or {}).get("observedGeneration"), timeout=120
        )
        state = {t: c["status"] for t, c in conditions(obj).items()}
        assert state == {"Ready": "Unknown", "Reconciling": "True", "Stalled": "False"}, (name, obj["status"])


def test_resyncs_reuse_one_s3_client_per_location(
    cluster: LocalCluster, namespace: str, operator: None, registry: dict, minio: dict, monkeypatch
) -> None:
    """A running job's report is read on every resync; the operator builds its S3 client once."""
    import llmops.storage

    built: list[str] = []
    original = llmops.storage.S3Store

    class Counting(original):  # type: ignore[misc, valid-type]
        def __init__(self, bucket: str, prefix: str, **kw: Any) -> None:
            built.append(f"{bucket}/{prefix}")
            super().__init__(bucket, prefix, **kw)

    monkeypatch.setattr(llmops.storage, "S3Store", Counting)
    apply(cluster, namespace, training_job("reuse", registry))
    rayjob = rayjob_of(cluster, namespace, until(cluster, "reuse", namespace, phase_is("Pending")))
    run = builders.run_from_entrypoint(rayjob["spec"]["entrypoint"])
    assert run is not None and run.work_dir.s3 is not None
    s3 = run.work_dir.s3
    keys = Credentials(minio["accessKeyId"], minio["secretAccessKey"])
    # The workload's writes, through a client the count leaves out.
    work = original(s3.bucket, s3.prefix or "", endpoint=s3.endpoint, region=None, credentials=keys)
    play_kuberay(cluster, namespace, rayjob, {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"})
    for step in (2, 4, 6):  # three resyncs that each read the report
        progress = Progress(stage="Training", step=step, total_steps=20)
        work.put_bytes(
            REPORT, RunReport(phase="Running", progress=progress).model_dump_json(by_alias=True).encode()
        )
        until(
            cluster, "reuse", namespace,
            lambda o, s=step: (o.get("status") or {}).get("progress", {}).get("step") == s, timeout=60,
        )  # fmt: skip
    mine = [b for b in built if namespace in b]
    assert len(mine) == 1, built
