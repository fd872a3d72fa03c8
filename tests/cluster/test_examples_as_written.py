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

- trainingjob-full.yaml (`runtime.rayJobsAPI`, a shared Ray cluster), in its own test with its own Ray
  head: applied byte for byte as written, its in-cluster names resolved by a stand-in for cluster DNS
  (tests/cluster_dns.py, a forward proxy the operator and the Ray workers reach through the standard
  proxy environment); the workload ingests and prepares its data for real, then waits for the 8 GPUs
  its Ray Train workers ask for, and the TrainingJob's status says so; deleting it stops the Ray job.

What is changed, and why: every `endpoint: http://minio.llmops-system:9000` resolves only inside a
cluster, where the operator would run; here the operator is a local process, so it is set to the dev
MinIO's endpoint (as the quickstart's `${S3_ENDPOINT}` does), except in trainingjob-full.yaml, which
the cluster-DNS stand-in serves as written. Nothing else is edited.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from llmops.api.common import ObjectStorageLocation
from llmops.dev import services
from llmops.dev.cluster import LocalCluster
from llmops.dev.services import RayHead
from llmops.dev.tools import binary
from llmops.operators import modelretirement, retrainpolicy, trainingjob
from llmops.operators.modeldeployment import make_kind
from llmops.operators.modeldeployment.plan import ServingSettings
from llmops.operators.modelretirement import reconcile as retirement
from llmops.operators.retrainpolicy.reconcile import Reconciler, Settings
from llmops.registry import Content, GateVerdict, Lineage, RegistryError, read_version, register, set_alias
from llmops.storage import Credentials, open_store
from tests.cluster_dns import cluster_dns_proxy, proxy_environment
from tests.helpers import eventually, gpu_node, http_get, operator_in_thread, s3_client

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("llmops_crds")]

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
IN_CLUSTER_MINIO = "http://minio.llmops-system:9000"
NO_PROMETHEUS = "http://127.0.0.1:9"  # the discard port: nothing answers
# The example on a shared Ray cluster: its own test (test_trainingjob_full_as_written_waits_for_its_gpus).
ON_SHARED_RAY = "trainingjob-full.yaml"
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
    minio = services.start_minio(cluster)
    # GPU nodes of every product an example names (the cluster has one more, kwok-gpu-0, of H100s).
    products = set()
    for doc in docs.values():
        spec = doc["spec"]["trainingJobTemplate"]["spec"] if doc["kind"] == "RetrainPolicy" else doc["spec"]
        resources = spec.get("resources") or {}
        products.add((resources.get("perWorker") or resources).get("gpuType"))
    with contextlib.ExitStack() as stack:
        nodes = {p: stack.enter_context(gpu_node(cluster, p)) for p in sorted(products - {None})}
        _examples(cluster, namespace, tmp_path, docs, minio, nodes)


def _examples(
    cluster: LocalCluster,
    namespace: str,
    tmp_path: Path,
    docs: dict[str, dict],
    minio: dict,
    nodes: dict[str, str],
) -> None:
    """Set up the Secrets and the registry, apply every example, and check how far each one gets."""
    _docs_secrets(cluster, namespace, minio)
    _buckets(minio)
    _registry(minio, tmp_path, docs)

    settings = ServingSettings(resync_seconds=600)
    # No Prometheus here: the drift, quality and feedback triggers say so in their status.
    policies = retrainpolicy.make_kind(Reconciler(Settings(evaluate_every=5, prometheus_url=NO_PROMETHEUS)))
    retirements = modelretirement.make_kind(
        retirement.Reconciler(retirement.Settings(prometheus_url=NO_PROMETHEUS))
    )
    applied = {}
    with operator_in_thread(namespace, [make_kind(settings, None), trainingjob.KIND, policies, retirements]):
        for file, doc in docs.items():
            if file == ON_SHARED_RAY:
                continue
            body = _localize(doc, minio["endpoint"])
            cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(body))
            applied[file] = body
        for body in applied.values():
            if body["kind"] == "ModelDeployment":
                _assert_served_on_gpus(cluster, namespace, body, nodes)
            elif body["kind"] == "RetrainPolicy":
                _assert_watching(cluster, namespace, body)
            elif body["kind"] == "ModelRetirement":
                _assert_retirement(cluster, namespace, body, minio)
            else:
                _assert_rayjob_waits_for_kuberay(cluster, namespace, body)


def _docs_secrets(cluster: LocalCluster, namespace: str, minio: dict) -> None:
    """The Secrets and the ServiceAccount: docs/install.md's own commands, run as written with the
    variables it names (the dev MinIO's root keys as the S3 keys, a made-up Hugging Face token)."""
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


# trainingjob-full.yaml, as written, on a shared Ray cluster ----------------------------------------

RAY_IN_CLUSTER = "shared-raycluster-head-svc.ray:8265"


def _stage_stand_ins(minio: dict, doc: dict, tmp_path: Path) -> dict[str, int]:
    """What trainingjob-full.yaml reads, under the names it reads them by. STAND-INS, made here: a tiny
    random-weight Llama with a real tokenizer (llmops.serving.local.make_tiny_llama; 2048 positions, the
    example's blockSize) for its Qwen2.5-0.5B-Instruct base, a few hundred made-up support tickets
    (jsonl, `conversation`, some with an e-mail, a phone number or a name, a few repeated), FAQ entries
    (parquet, `text`) and question/answer pairs for its evaluation set. Returns what was written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from llmops.serving.local import make_tiny_llama

    products = ["router", "billing portal", "mobile app", "VPN client", "printer driver", "dashboard"]
    problems = ["will not start", "shows error 42", "logs me out", "is slow since Monday", "lost my data"]
    tickets = []
    for i in range(360):
        product, problem = products[i % len(products)], problems[(i // len(products)) % len(problems)]
        contact = ["", f" Reach me at user{i}@example.com.", f" Call +1 415 555 {1000 + i:04d}."][i % 3]
        tickets.append(
            f"Customer: ticket {i}: my {product} {problem} after update {i % 17}.{contact}"
            + (" My name is Alice Moreau." if i % 11 == 0 else "")
            + f"\nAgent: Thanks for ticket {i}. Please reinstall the {product} (build {i * 7 % 101}) and "
            f"restart; if the {product} still {problem}, reply and we escalate to tier {1 + i % 3}."
        )
    repeats = 12
    tickets += tickets[:repeats]  # exact repeats: dedup drops them
    faq = [
        f"FAQ {i}: how do I reset the {p}? Open settings, choose reset, and confirm with your PIN {i}."
        for i, p in enumerate(products * 8)
    ]
    qa = [
        {"question": f"What fixes a {p} that {q}?", "answer": "reinstall"} for p in products for q in problems
    ]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(tickets + faq))
    base = make_tiny_llama(tmp_path / "base", corpus, max_positions=2048)
    s3 = s3_client(minio)
    for bucket in ("checkpoints", "datasets", "models"):
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            s3.create_bucket(Bucket=bucket)
    bucket, _, prefix = doc["spec"]["model"]["baseModel"].removeprefix("s3://").partition("/")
    files = sorted(p for p in base.rglob("*") if p.is_file())
    for path in files:
        s3.upload_file(str(path), bucket, f"{prefix}{path.relative_to(base)}")
    table = tmp_path / "faq.parquet"
    pq.write_table(pa.table({"text": faq}), table)
    bodies = {
        "jsonl": "".join(json.dumps({"conversation": t}) + "\n" for t in tickets).encode(),
        "parquet": table.read_bytes(),
    }
    sources = doc["spec"]["data"]["sources"]
    for source in sources:
        bucket, _, key = source["uri"].removeprefix("s3://").partition("/")
        s3.put_object(Bucket=bucket, Key=key, Body=bodies[source["format"]])
    (evaluation,) = doc["spec"]["evaluation"]["datasets"]
    bucket, _, key = evaluation["uri"].removeprefix("s3://").partition("/")
    s3.put_object(Bucket=bucket, Key=key, Body="".join(json.dumps(r) + "\n" for r in qa).encode())
    return {
        "base files": len(files),
        "tickets": len(tickets),
        "repeats": repeats,
        "faq": len(faq),
        "qa": len(qa),
    }


@contextlib.contextmanager
def _ray_head(environment: dict[str, str]) -> Iterator[str]:
    """A real local Ray head (2 CPUs, no GPU) standing in for the example's shared Ray cluster; yields
    its dashboard's URL (the Jobs API). Its processes (the job's driver and Ray Train's) inherit
    `environment`; it is stopped by signalling its own process group only (never `ray stop`)."""
    temp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # short: Ray's unix sockets live here
    head = RayHead.on_loopback(temp, num_cpus=2)
    log = open(temp / "ray-start.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        head.argv,
        env={**os.environ, **environment, **head.env},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        eventually(
            lambda: proc.poll() is None and http_get(f"{head.dashboard}/api/version")[0] == 200, 300, 1
        )
        yield head.dashboard
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.timeout(900)
def test_trainingjob_full_as_written_waits_for_its_gpus(
    cluster: LocalCluster, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """trainingjob-full.yaml applied byte for byte: the operator submits it to its Ray address, the
    workload reads the (stand-in) base model and data from its S3 endpoint, ingests and prepares them
    for real, and then waits for the 8 GPUs (2 workers x 4) its Ray Train step asks for, which this
    Ray cluster does not have: the TrainingJob is Running and its status names them. Deleting it stops
    the Ray job (the finalizer). The cluster names resolve through tests/cluster_dns.py."""
    pytest.importorskip("ray", reason="needs the training extra (ray, torch, transformers)")
    from ray.job_submission import JobSubmissionClient

    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    file = EXAMPLES / ON_SHARED_RAY
    doc = yaml.safe_load(file.read_text())
    assert doc["spec"]["runtime"]["address"] == f"http://{RAY_IN_CLUSTER}"
    assert doc["spec"]["data"]["s3"]["endpoint"] == IN_CLUSTER_MINIO
    minio = services.start_minio(cluster)
    _docs_secrets(cluster, namespace, minio)
    staged = _stage_stand_ins(minio, doc, tmp_path)
    print(f"stand-ins staged: {staged}")
    storage = {  # a shared Ray cluster brings its own storage access (docs/concepts.md)
        "AWS_ACCESS_KEY_ID": minio["accessKeyId"],
        "AWS_SECRET_ACCESS_KEY": minio["secretAccessKey"],
    }
    workers = {  # as tests/workloads/conftest.py: the workers import this checkout, offline
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    local_minio = minio["endpoint"].removeprefix("http://")
    with contextlib.ExitStack() as stack:
        # The proxy's table is filled once the Ray head's port is known; the head inherits the proxy.
        proxy = stack.enter_context(
            cluster_dns_proxy({IN_CLUSTER_MINIO.removeprefix("http://"): local_minio})
        )
        names = proxy_environment(proxy)
        dashboard = stack.enter_context(_ray_head(names | storage | workers))
        proxy.names[RAY_IN_CLUSTER] = dashboard.removeprefix("http://")
        for key, value in names.items():  # the operator's Jobs API and S3 clients take the same way
            monkeypatch.setenv(key, value)
        name = doc["metadata"]["name"]
        with operator_in_thread(namespace, [trainingjob.KIND]):
            cluster.kubectl("apply", "-n", namespace, "-f", str(file))  # as written

            def waiting() -> dict | None:
                status = _get(cluster, namespace, "tj", name).get("status") or {}
                assert status.get("phase") != "Failed", status  # no wait for what cannot come
                return status if "waiting for" in (status.get("message") or "") else None

            try:
                status = eventually(waiting, 420, 2)
            except AssertionError as e:
                status = _get(cluster, namespace, "tj", name).get("status")
                raise AssertionError(f"{name}: {json.dumps(status)}") from e
            print(f"{name}: {status['phase']}: {status['message']}")
            assert status["phase"] == "Running", status
            resources = doc["spec"]["resources"]
            count, each = resources["workers"], resources["perWorker"]["gpus"]  # 2 x 4 in the example
            wanted = f"waiting for {count * each} GPUs ({count} workers x {each}) for Ray Train"
            assert f"Training: {wanted}; the Ray cluster has 0 (it may be scaling up;" in status["message"]
            assert status["message"].startswith(
                f"Ray job {status['submissionId']} at http://{RAY_IN_CLUSTER}"
            )
            # Data preparation ran for real on the stand-ins: its summary is in the work folder.
            bucket, _, prefix = status["workDir"].removeprefix("s3://").partition("/")
            s3 = s3_client(minio)
            stages = {}
            for stage in ("ingest", "prepare"):
                body = s3.get_object(Bucket=bucket, Key=f"{prefix.rstrip('/')}/stages/{stage}.json")["Body"]
                stages[stage] = json.loads(body.read())
            print(f"prepare: {json.dumps(stages['prepare'], sort_keys=True)[:600]}")
            assert stages["prepare"]["blocks"]["train"] >= 2 and stages["prepare"]["blockSize"] == 2048
            assert stages["prepare"]["counts"]["dropped"]["exact_duplicate"] == staged["repeats"]
            ray_jobs = JobSubmissionClient(dashboard)
            assert ray_jobs.get_job_status(status["submissionId"]).value == "RUNNING"
            # Deleting the TrainingJob stops its Ray job (the finalizer), then the object goes.
            cluster.kubectl("delete", "tj", name, "-n", namespace, "--wait=true", "--timeout=120s")
            stopped = eventually(
                lambda: (s := ray_jobs.get_job_status(status["submissionId"]).value) == "STOPPED" and s,
                120,
            )
        hosts = sorted({host for _, host, _ in proxy.forwarded})
        print(f"Ray job {status['submissionId']}: {stopped}; the cluster-DNS stand-in forwarded "
              f"{len(proxy.forwarded)} requests for {hosts}")  # fmt: skip
        assert hosts == sorted([RAY_IN_CLUSTER, IN_CLUSTER_MINIO.removeprefix("http://")])
