"""Every example under examples/, applied as written into an environment set up as docs/install.md
and docs/quickstart.md say, reaches the furthest state it can without a GPU (issue 12, point 7).

The environment: the real control plane with kwok GPU nodes of each product the examples name
(`nvidia.com/gpu.product`, as NVIDIA's GPU feature discovery labels them, tainted as the GPU operator
does), the Secrets and the ServiceAccount the examples name, made by running the shell block of
docs/install.md that creates them, as written (so the docs are proved), and a registry in MinIO
holding the model versions and aliases they reference (tiny files: nothing is served here). The real
operator runs both kinds.

- ModelDeployments: Ready for their generation, their vLLM pods Ready on a GPU node (of the product
  `gpuType` names) with the GPU request and limit, the GPU toleration and the product node selector
  (kwok stands in for the kubelet, so no container runs; the scale-to-zero example's wake-up is
  tests/e2e/test_scale_to_zero.py). The canary example is Ready at its first step, 10% to version 4,
  analysing. Each vLLM Deployment has the replicas its autoscaler would hold it at from its creation
  (no KEDA here to correct them): the canary's stable at its minReplicas 2, the canary at 1, the
  scale-to-zero example at 0 (no pod: its pod template is checked instead).
- TrainingJobs with `runtime.type: kuberay` (the default; pretrain, lora, qlora, distill): their RayJob
  is created with the workers, GPU limits, node selectors and Kueue queue of the spec and no GPU on the
  head, and the status is what the operator reports before KubeRay starts a job (Pending, Created).

What is changed, and why: every `endpoint: http://minio.llmops-system:9000` resolves only inside a
cluster, where the operator would run; here the operator is a local process, so it is set to the dev
MinIO's endpoint (as the quickstart's `${S3_ENDPOINT}` does). trainingjob-lora.yaml's registry is AWS
S3 with the pod's own identity: the operator's environment plays it (AWS_* variables, and
AWS_ENDPOINT_URL_S3 to MinIO). Nothing else is edited. One example cannot go further here as written
(`BLOCKED`): the test asserts the status that says why.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from llmops.api.common import ObjectStorageLocation
from llmops.dev import services
from llmops.dev.cluster import LocalCluster
from llmops.dev.tools import binary
from llmops.operators import modelretirement, retrainpolicy, trainingjob
from llmops.operators.modeldeployment import make_kind
from llmops.operators.modeldeployment.plan import ServingSettings
from llmops.operators.modelretirement import reconcile as retirement
from llmops.operators.retrainpolicy.reconcile import Reconciler, Settings
from llmops.registry import Content, GateVerdict, Lineage, RegistryError, read_version, register, set_alias
from llmops.storage import Credentials, open_store
from tests.helpers import eventually, gpu_node, operator_in_thread, s3_client

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("llmops_crds")]

EXAMPLES = Path(__file__).parents[2] / "examples"
IN_CLUSTER_MINIO = "http://minio.llmops-system:9000"
NO_PROMETHEUS = "http://127.0.0.1:9"  # the discard port: nothing answers
# Examples that cannot run here as written, and what blocks them.
BLOCKED = {
    "trainingjob-full.yaml": "runtime rayJobsAPI at http://shared-raycluster-head-svc.ray:8265, a shared Ray "
    "cluster that resolves only in a cluster; the job is submitted to it, so nothing short of that Ray "
    "cluster (with GPUs and the s3://checkpoints base model) shows how far it gets",
}
INSTALL = Path(__file__).resolve().parents[2] / "docs/install.md"
SECRETS_SECTION = "## The Secrets and ServiceAccounts the examples use"


def _docs_secrets_script() -> str:
    """The shell block of docs/install.md that creates the Secrets and the ServiceAccount the examples
    name (tests/unit/test_docs.py checks that it creates every one, with the keys the code reads)."""
    section = INSTALL.read_text().split(SECRETS_SECTION, 1)[1]
    match = re.search(r"^```sh\n(.*?)^```", section, re.M | re.S)
    assert match, f"no sh block under {SECRETS_SECTION!r} in {INSTALL}"
    return match.group(1)


def _docs() -> dict[str, dict]:
    return {p.name: yaml.safe_load(p.read_text()) for p in sorted(EXAMPLES.glob("*.yaml"))}


def _localize(node: object, endpoint: str) -> object:
    """The example with the in-cluster MinIO endpoint set to the dev MinIO's (module docstring)."""
    if isinstance(node, dict):
        return {k: endpoint if v == IN_CLUSTER_MINIO else _localize(v, endpoint) for k, v in node.items()}
    if isinstance(node, list):
        return [_localize(v, endpoint) for v in node]
    return node


def _get(cluster: LocalCluster, namespace: str, kind: str, name: str) -> dict:
    return json.loads(cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json").stdout)


def _registry(minio: dict, tmp_path: Path, docs: dict[str, dict]) -> None:
    """The versions and aliases the ModelDeployment examples reference (and the TrainingJobs' bases and
    teachers), in the bucket and prefix they name: versions 1 up to the highest one referenced, each
    alias on the last."""

    s3 = s3_client(minio)
    credentials = Credentials(minio["accessKeyId"], minio["secretAccessKey"])
    gates = [GateVerdict(metric="accuracy", operator=">=", threshold=0.5, value=0.9, passed=True)]
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    adapter = tmp_path / "adapter"
    (adapter / "adapter").mkdir(parents=True)
    (adapter / "adapter" / "adapter_config.json").write_text("{}")
    wanted: dict[tuple[str, str, str], dict[str, set[str]]] = {}  # (bucket, prefix, name) -> refs
    for doc in docs.values():
        if doc["kind"] in ("RetrainPolicy", "ModelRetirement"):  # they name versions the others make
            continue
        if doc["kind"] == "TrainingJob":  # a base, a teacher in the registry the job writes to
            teacher = (doc["spec"]["method"].get("distillation") or {}).get("teacher")
            for ref in (r for r in (doc["spec"]["model"].get("base"), teacher) if r):
                location = doc["spec"]["output"]["registry"]["s3"]
                key = (location["bucket"], location.get("prefix", ""))
                entry = wanted.setdefault(
                    (*key, ref["name"]), {"kind": set(), "versions": set(), "aliases": set()}
                )
                entry["kind"].add("model")
                entry["versions" if "version" in ref else "aliases"].add(ref.get("version") or ref["alias"])
            continue
        location = doc["spec"]["registry"]["s3"]
        key = (location["bucket"], location.get("prefix", ""))
        refs = [("model", doc["spec"]["model"])]
        refs += [("model", c["model"]) for c in [doc["spec"].get("rollout", {}).get("canary")] if c]
        refs += [("adapter", a["model"]) for a in doc["spec"].get("engine", {}).get("loraAdapters", [])]
        for kind, ref in refs:
            entry = wanted.setdefault(
                (*key, ref["name"]), {"kind": {kind}, "versions": set(), "aliases": set()}
            )
            entry["kind"].add(kind)
            entry["versions" if "version" in ref else "aliases"].add(ref.get("version") or ref["alias"])
    for (bucket, prefix, name), entry in wanted.items():
        if bucket not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
            s3.create_bucket(Bucket=bucket)
        location = ObjectStorageLocation.model_validate(
            {
                "s3": {
                    "endpoint": minio["endpoint"],
                    "bucket": bucket,
                    **({"prefix": prefix} if prefix else {}),
                }
            }
        )
        store = open_store(location, credentials)
        top = max([int(v) for v in entry["versions"]] or [1])
        is_adapter = entry["kind"] == {"adapter"}
        content = Content(merged=True, adapter="adapter", base="support-bot:3") if is_adapter else None
        version = "0"
        while int(version) < top:
            try:  # an earlier test of the session may have registered some already
                version = read_version(store, name, str(int(version) + 1)).version
            except RegistryError:
                version = register(
                    store, name, adapter if is_adapter else model,
                    metrics={"accuracy": 0.9}, gates=gates, lineage=Lineage(), content=content,
                ).version  # fmt: skip
        for alias in entry["aliases"]:
            set_alias(store, name, alias, version)


def test_every_example_reaches_the_furthest_state_without_a_gpu(
    cluster: LocalCluster, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    docs = _docs()
    assert set(BLOCKED) < set(docs)
    minio = services.start_minio(cluster)
    # GPU nodes of every product an example names (the cluster has one more, kwok-gpu-0, of H100s).
    products = set()
    for doc in docs.values():
        spec = doc["spec"]["trainingJobTemplate"]["spec"] if doc["kind"] == "RetrainPolicy" else doc["spec"]
        resources = spec.get("resources") or {}
        products.add((resources.get("perWorker") or resources).get("gpuType"))
    with contextlib.ExitStack() as stack:
        nodes = {p: stack.enter_context(gpu_node(cluster, p)) for p in sorted(products - {None})}
        _examples(cluster, namespace, tmp_path, monkeypatch, docs, minio, nodes)


def _examples(
    cluster: LocalCluster,
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    docs: dict[str, dict],
    minio: dict,
    nodes: dict[str, str],
) -> None:
    """Set up the Secrets and the registry, apply every example, and check how far each one gets."""
    # The Secrets and the ServiceAccount: docs/install.md's own commands, run as written with the
    # variables it names (the dev MinIO's root keys as the S3 keys, a made-up Hugging Face token).
    env = {
        **os.environ,
        "KUBECONFIG": str(cluster.kubeconfig),
        "PATH": f"{Path(binary('kubectl')).parent}:{os.environ['PATH']}",
        "NS": namespace,
        "S3_ACCESS_KEY_ID": minio["accessKeyId"],
        "S3_SECRET_ACCESS_KEY": minio["secretAccessKey"],
        "HF_TOKEN": "hf_not_a_real_token",
    }
    script = _docs_secrets_script()
    ran = subprocess.run(["bash", "-euo", "pipefail", "-c", script], env=env, capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    made = [line for line in ran.stdout.splitlines() if line.strip()]
    print(f"docs/install.md's {len(made)} commands: {made}")
    _buckets(minio)
    _registry(minio, tmp_path, docs)
    # trainingjob-lora.yaml's registry is AWS S3 with the pod's own identity (no endpoint, no Secret):
    # the operator's environment plays that identity (AWS_* variables, boto3's default chain), and
    # AWS_ENDPOINT_URL_S3, which boto3 reads, sends its S3 calls to MinIO.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", minio["accessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", minio["secretAccessKey"])
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", minio["endpoint"])

    settings = ServingSettings(resync_seconds=600)
    # No Prometheus here: the drift, quality and feedback triggers say so in their status.
    policies = retrainpolicy.make_kind(Reconciler(Settings(evaluate_every=5, prometheus_url=NO_PROMETHEUS)))
    retirements = modelretirement.make_kind(
        retirement.Reconciler(retirement.Settings(prometheus_url=NO_PROMETHEUS))
    )
    applied = {}
    with operator_in_thread(namespace, [make_kind(settings, None), trainingjob.KIND, policies, retirements]):
        for file, doc in docs.items():
            body = _localize(doc, minio["endpoint"])
            cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(body))
            applied[file] = body
        for file, body in applied.items():
            if body["kind"] == "ModelDeployment":
                _assert_served_on_gpus(cluster, namespace, body, nodes)
            elif body["kind"] == "RetrainPolicy":
                _assert_watching(cluster, namespace, body)
            elif body["kind"] == "ModelRetirement":
                _assert_retirement(cluster, namespace, body, minio)
            elif file not in BLOCKED:
                _assert_rayjob_waits_for_kuberay(cluster, namespace, body)
        # trainingjob-full.yaml as written: its shared Ray cluster is not here, and its status says so.
        full = applied["trainingjob-full.yaml"]
        address = full["spec"]["runtime"]["address"]

        def unreachable() -> dict | None:
            status = _get(cluster, namespace, "tj", full["metadata"]["name"]).get("status") or {}
            reasons = {c["type"]: (c["status"], c["reason"]) for c in status.get("conditions", [])}
            return status if reasons.get("Reconciling") == ("True", "RayUnavailable") else None

        status = eventually(unreachable, 60)
        assert status["phase"] == "Pending" and address in status["message"], status


def _buckets(minio: dict) -> None:
    s3 = s3_client(minio)  # fmt: skip
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket="model-archive", ObjectLockEnabledForBucket=True)
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket="payloads")


def _assert_retirement(cluster: LocalCluster, namespace: str, body: dict, minio: dict) -> None:
    """A ModelRetirement as written: the dry run lists its plan (the deployments serving the version
    would move), the one that asks for approval waits for it, the other goes all the way to Retired
    (nothing serves its version), its archive locked in the Object-Lock bucket."""
    name, spec = body["metadata"]["name"], body["spec"]
    phase = (
        "DryRun" if spec.get("dryRun") else "AwaitingApproval" if spec.get("requireApproval") else "Retired"
    )

    def reached() -> dict | None:
        status = _get(cluster, namespace, "mr", name).get("status") or {}
        if phase == "DryRun":  # refreshed every 30 s: once the deployments serve 3, it says so
            moves = [a["action"] for a in status.get("plan", []) if a["step"] == "Drain"]
            return status if any("ModelDeployment support-bot:" in m for m in moves) else None
        return status if status.get("phase") == phase else None

    try:
        status = eventually(reached, 120)
    except AssertionError as e:
        raise AssertionError(
            f"{name}: {json.dumps(_get(cluster, namespace, 'mr', name).get('status'))}"
        ) from e
    if phase == "DryRun":
        assert status["phase"] == "DryRun" and not status.get("steps"), status
    elif phase == "Retired":
        assert [s["state"] for s in status["steps"]] == ["Succeeded"] * 5, status["steps"]
        assert status["archiveLocation"].startswith("s3://model-archive/") and status["retainUntil"]
        assert "retired: " in status["summary"]


def _assert_watching(cluster: LocalCluster, namespace: str, body: dict) -> None:
    """A RetrainPolicy as written: Ready and Watching its ModelDeployment's champion, each trigger
    evaluated (a schedule with its next time; the Prometheus ones saying Prometheus does not answer)."""
    name = body["metadata"]["name"]

    def watching() -> dict | None:
        status = _get(cluster, namespace, "rp", name).get("status") or {}
        return status if status.get("phase") == "Watching" and status.get("triggers") else None

    status = eventually(watching, 60)
    ready = {c["type"]: c for c in status["conditions"]}["Ready"]
    assert ready["status"] == "True" and ready["reason"] == "Watching", ready
    assert status["championVersion"] and not status.get("runs"), status
    triggers = {t["type"]: t for t in status["triggers"]}
    spec = body["spec"]["triggers"]
    wanted = {k for k in spec if k != "quality"} | {f"quality/{q['name']}" for q in spec.get("quality", [])}
    assert set(triggers) == wanted, triggers
    for type, trigger in triggers.items():
        assert not trigger["firing"], trigger
        if type == "schedule":
            assert trigger["nextTime"], trigger
        else:
            assert trigger["message"].startswith("Prometheus:"), trigger


def _assert_served_on_gpus(cluster: LocalCluster, namespace: str, body: dict, nodes: dict[str, str]) -> None:
    name = body["metadata"]["name"]
    ready = cluster.kubectl(
        "wait", f"md/{name}", "-n", namespace, "--for=condition=Ready", "--timeout=120s", check=False
    )
    assert ready.returncode == 0, (name, _get(cluster, namespace, "md", name).get("status"))
    md = _get(cluster, namespace, "md", name)
    status = md["status"]
    (condition,) = [c for c in status["conditions"] if c["type"] == "Ready"]
    assert condition["observedGeneration"] == md["metadata"]["generation"] == status["observedGeneration"]
    canary = body["spec"].get("rollout", {}).get("canary")
    if canary and "alias" in canary["model"]:  # both aliases on one version: no canary until one moves
        assert condition["reason"] == "Serving" and not status.get("canary"), (condition, status)
        assert {a["alias"]: a["version"] for a in status["aliases"]} == {
            body["spec"]["model"]["alias"]: status["versions"][0]["version"],
            canary["model"]["alias"]: status["versions"][0]["version"],
        }
    elif canary:
        assert condition["reason"] == "CanaryAnalysing", condition
        assert status["canary"]["version"] == canary["model"]["version"]
        assert (status["canary"]["weight"], status["canary"]["verdict"]) == (canary["weight"], "Analysing")
    resources = body["spec"]["resources"]
    autoscaling = body["spec"].get("autoscaling", {})
    for version in status["versions"]:  # the count each is created at (autoscaling.start_replicas)
        if version["role"] == "canary":
            want = 1  # its first step's one replica (the stable's count only to take all the traffic)
        elif autoscaling.get("scaleToZero"):
            want = 0  # KEDA's idle count: no GPU pod until the first request
        else:
            want = max(autoscaling.get("minReplicas", 1), 1)
        replicas = _get(cluster, namespace, "deployment", version["deployment"])["spec"]["replicas"]
        print(f"{name}: {version['role']} {version['deployment']} replicas {replicas}")
        assert replicas == want, (name, version, replicas, want)
    if status["readyReplicas"] == 0:  # at zero: what its pods will be is the pod template
        for version in status["versions"]:
            template = _get(cluster, namespace, "deployment", version["deployment"])["spec"]["template"]
            (server,) = [c for c in template["spec"]["containers"] if c["name"] == "vllm"]
            assert server["resources"]["limits"]["nvidia.com/gpu"] == str(resources["gpus"])
            assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in template[
                "spec"
            ]["tolerations"]
        return
    pods = json.loads(
        cluster.kubectl(
            "get", "pods", "-n", namespace, "-o", "json",
            "-l", f"llmops.io/modeldeployment={name},app.kubernetes.io/component=model-server",
        ).stdout
    )["items"]  # fmt: skip
    assert pods and len(pods) == status["readyReplicas"], (name, len(pods), status["readyReplicas"])
    for pod in pods:
        node = json.loads(cluster.kubectl("get", "node", pod["spec"]["nodeName"], "-o", "json").stdout)
        node = node["metadata"]["labels"]
        assert node["nvidia.com/gpu.present"] == "true", (name, pod["spec"]["nodeName"])
        if resources.get("gpuType"):
            assert pod["spec"]["nodeName"] == nodes[resources["gpuType"]]
        (server,) = [c for c in pod["spec"]["containers"] if c["name"] == "vllm"]
        assert server["resources"]["limits"]["nvidia.com/gpu"] == str(resources["gpus"])
        assert server["resources"]["requests"]["nvidia.com/gpu"] == str(resources["gpus"])
        if resources.get("gpuType"):
            assert pod["spec"]["nodeSelector"]["nvidia.com/gpu.product"] == resources["gpuType"]
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["spec"][
            "tolerations"
        ]
        ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
        assert ready["Ready"] == "True", (name, pod["status"])


def _assert_rayjob_waits_for_kuberay(cluster: LocalCluster, namespace: str, body: dict) -> None:
    name = body["metadata"]["name"]
    tj = eventually(
        lambda: (o := _get(cluster, namespace, "tj", name)).get("status", {}).get("phase") and o, 60
    )
    rayjob_name = tj["status"].get("rayJobName") or tj["status"].get("rayJob")
    rayjobs = json.loads(cluster.kubectl("get", "rayjobs", "-n", namespace, "-o", "json").stdout)["items"]
    mine = [
        r
        for r in rayjobs
        if any(o["uid"] == tj["metadata"]["uid"] for o in r["metadata"].get("ownerReferences", []))
    ]
    assert len(mine) == 1, (name, tj["status"], rayjob_name)
    rayjob = mine[0]
    per_worker = body["spec"]["resources"]["perWorker"]
    (group,) = rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert group["replicas"] == body["spec"]["resources"].get("workers", 1)  # the API default
    pod = group["template"]["spec"]
    (worker,) = pod["containers"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == str(per_worker["gpus"])
    if per_worker.get("gpuType"):
        assert pod["nodeSelector"]["nvidia.com/gpu.product"] == per_worker["gpuType"]
    queue = body["spec"].get("runtime", {}).get("queueName")
    if queue:
        assert rayjob["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == queue
    head = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in head.get("resources", {}).get("limits", {})  # the head needs none
    # What the operator reports before KubeRay starts the job: created, pending, nothing wrong.
    status = tj["status"]
    assert status["phase"] == "Pending" and status["rayJobName"] == rayjob["metadata"]["name"]
    assert status["observedGeneration"] == tj["metadata"]["generation"]
    conditions = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert conditions == {
        "Ready": ("Unknown", "Created"),
        "Reconciling": ("True", "Created"),
        "Stalled": ("False", "Created"),
    }
    assert status["message"] == f"RayJob {rayjob['metadata']['name']} created; waiting for it to start"
