"""The RetrainPolicy's full loop on the real components (issue 14): traffic whose prompts drift -> the
drift trigger fires -> a TrainingJob runs on the local Ray head -> the new version beats the champion
-> the canary runs on the control plane and is promoted -> the aliases moved and the history says so.
And the opposite: a worse candidate is not promoted, and status says by how much it lost.

The chain is real: the control plane with kwok nodes; the TrainingJob, ModelDeployment and
RetrainPolicy operators in one runtime; MinIO as the registry and data store; a Ray head running the
training workload through the Ray Jobs API (data preparation, training, evaluation with the champion
scored in the same run, registration); the operator's vLLM, gateway and drift monitor commands run
here (`llmops.dev.serve`); Prometheus scraping what the operator's own monitors select; the drift
monitor's MiniLM embeddings and permutation test; the official `openai` client; the aliases set by a
person with `llmops models alias set` and moved by the policy.

What cannot run here, and what stands in for it:
- The kubelet: kwok makes the pods Running and Ready; their containers run here as `llmops dev serve`
  runs them (`run_version`, `run_gateway`, `run_drift`). The kubelet's refresh of a mounted ConfigMap
  is played by `sync_gateway`: the gateway's upstream groups are read back from its ConfigMap (the
  canary's weight at each step) and written to the file the gateway reloads, as the kubelet would.
- Cluster DNS: each version's group names its headless Service; here it names the loopback address
  that version's vLLM listens on.
- The drift monitor tests every 5 s instead of the deployed 300 s (`run_drift(interval=...)`): the
  score it exports is the same test on the same samples; only the cadence is shortened.
- The registry endpoint is the dev MinIO's; the first version (the champion the loop starts from) is
  a tiny random Llama registered with `llmops.registry.register`, as test_scale_to_zero.py does: the
  loop under test starts from a served champion, not from how that one was made.

Kept short so it runs in minutes (settings a cluster would set longer, none of them a stand-in): the
operator polls aliases every 2 s and evaluates triggers every 3 s, Prometheus scrapes every second,
the canary's analysis interval is the API's minimum (10 s), the drift trigger's forSeconds too (60 s);
the runs train the tiny model 30 steps (the loser: one step at a learning rate of 1e-12, so it cannot
beat the champion it starts from by the 5% the policy asks).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from openai import OpenAI

from llmops import registry as reg
from llmops.api import API_VERSION
from llmops.api.common import ObjectStorageLocation
from llmops.dev import services
from llmops.dev.cluster import LocalCluster, free_port
from llmops.dev.serve import (
    drift_deployment,
    run_drift,
    run_gateway,
    run_version,
    scrape,
    serving_deployments,
    wait_drift,
    wait_version,
)
from llmops.gateway_config import GatewayConfig, UpstreamGroup
from llmops.serving.local import make_tiny_llama
from llmops.storage import Credentials, open_store
from tests.helpers import eventually, operator_in_thread, s3_client, stop_spawned
from tests.serving.test_serving_drift import CODE, generate

ROOT = Path(__file__).parents[2]
QUICKSTART = ROOT / "llmops/training/data/quickstart"
MODEL = "support-tiny"
MD, RP, MR = "assistant", "fresh", "retire-trained"
pytestmark = [pytest.mark.timeout(2400), pytest.mark.usefixtures("llmops_crds")]


def _get(cluster: LocalCluster, namespace: str, kind: str, name: str) -> dict:
    got = cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(got.stdout) if got.returncode == 0 else {}


TRAFFIC_SECRET = "traffic-credentials"  # the gateway's: payload samples, ratings, drift prompts


def _s3(minio: dict, prefix: str, secret: str = "minio-credentials") -> dict:
    return {
        "s3": {
            "endpoint": minio["endpoint"],
            "bucket": "llmops",
            "prefix": prefix,
            "credentialsSecretRef": {"name": secret},
        }
    }


def code_corpus(count: int, seed: int) -> list[dict]:
    """Programming questions with a one-line answer each: the domain the traffic drifts to."""
    answers = {
        "reverse": "Iterate from the end or use the reverse helper of the standard library.",
        "crashes": "Read the stack trace, then check the input before you use it.",
        "difference": "They differ in ordering, lookup cost and mutability.",
        "Write": "Start with a small function, then add a unit test for it.",
        "slow": "Profile it first; most time goes to allocation in the loop.",
        "test": "Write a unit test with a fake input and check the result.",
        "Explain": "The compiler found a value whose type or lifetime does not fit.",
        "thread-safe": "Not by default: guard it with a lock or use a concurrent type.",
    }
    rows = []
    for q in generate(CODE, count, seed):
        answer = next(a for k, a in answers.items() if k in q)
        rows.append({"text": f"Question: {q}\nAnswer: {answer}"})
    return rows


def policy(minio: dict, ray: str) -> dict:
    """The RetrainPolicy: retrain from the champion on the drifted domain when the drift score stays
    above 0.9 for a minute; promote a version whose perplexity is at least 5% below the champion's."""
    template = {
        "model": {"base": {"name": MODEL, "alias": "champion"}},
        "data": {
            "sources": [
                {"uri": "s3://llmops/datasets/code/train.jsonl", "format": "jsonl", "textField": "text"}
            ],
            "preparation": {"minLength": 16, "tokenization": {"blockSize": 64}, "validationSplit": 0.1},
            "s3": {"endpoint": minio["endpoint"], "credentialsSecretRef": {"name": "minio-credentials"}},
        },
        "method": {
            "type": "full",
            "hyperparameters": {"maxSteps": 30, "batchSize": 8, "learningRate": 3.0e-3, "seed": 7},
        },
        "resources": {"workers": 1, "perWorker": {"cpu": 1}},
        "evaluation": {
            "perplexity": {},
            "gates": [{"metric": "perplexity", "operator": "<", "threshold": 1000000}],
        },
        "output": {"registry": _s3(minio, "registry/"), "modelName": MODEL},
        "runtime": {"type": "rayJobsAPI", "address": ray},
    }
    return {
        "apiVersion": API_VERSION,
        "kind": "RetrainPolicy",
        "metadata": {"name": RP},
        "spec": {
            "modelDeployment": MD,
            "triggers": {"drift": {"threshold": 0.9, "forSeconds": 60}},
            "cooldownSeconds": 86400,  # the drift keeps firing after the run; one drift run is enough
            "concurrencyPolicy": "Forbid",
            "promotion": {
                "metrics": [{"metric": "perplexity", "greaterIsBetter": False, "minRelativeChange": 0.05}]
            },
            "trainingJobTemplate": {"spec": template},
        },
    }


def deployment(minio: dict) -> dict:
    """The ModelDeployment: the champion alias served, the challenger alias as its canary, drift
    monitored against the quickstart corpus, every prompt sampled."""
    return {
        "apiVersion": API_VERSION,
        "kind": "ModelDeployment",
        "metadata": {"name": MD},
        "spec": {
            "model": {"name": MODEL, "alias": "champion"},
            "registry": _s3(minio, "registry/"),
            "engine": {"servedModelName": MODEL, "maxModelLen": 256, "dtype": "float32"},
            "resources": {"cpu": 2, "memory": "4Gi"},
            "rollout": {
                "canary": {
                    "model": {"name": MODEL, "alias": "challenger"},
                    "weight": 50,
                    "steps": [100],
                    "analysis": {"intervalSeconds": 10, "maxErrorRate": 0.05},
                }
            },
            "monitoring": {
                "serviceMonitor": True,
                "drift": {"referenceData": _s3(minio, "datasets/quickstart/"), "sampleRate": 1},
            },
            "gateway": {
                "payloadSampling": {"rate": 1, "destination": _s3(minio, "traffic/", TRAFFIC_SECRET)}
            },
        },
    }


class Serving:
    """The ModelDeployment's pods, run here: one vLLM per version, the gateway, the drift monitor."""

    def __init__(self, cluster: LocalCluster, namespace: str) -> None:
        self.cluster, self.namespace = cluster, namespace
        self.upstream: dict[str, str] = {}  # vLLM Deployment -> local address
        self.pods: dict[str, object] = {}
        self.gateway: dict | None = None
        self.address = ""
        self.config: GatewayConfig | None = None
        self.names: list[str] = []  # the processes started here, stopped by `stop`

    def local(self, group: UpstreamGroup) -> UpstreamGroup:
        host = group.service.host.split(".")[0] if group.service else ""
        address = self.upstream.get(host)
        replicas = [f"http://{address}"] if address else []
        return group.model_copy(update={"service": None, "replicas": replicas})

    def versions(self) -> None:
        """Run every vLLM Deployment not yet running here, and wait for each to answer."""
        vllm, self.gateway = serving_deployments(self.cluster, MD, self.namespace)
        new = [name for name in vllm if name not in self.upstream]
        for name in new:
            port = free_port()
            self.pods[name] = run_version(self.cluster, self.namespace, vllm[name], port)
            self.upstream[name] = f"127.0.0.1:{port}"
            self.names.append(name)
        for name in new:
            wait_version(self.cluster, name, self.upstream[name])

    def start(self) -> None:
        self.versions()
        assert self.gateway is not None
        self.address, pod, self.config, _ = run_gateway(
            self.cluster, self.namespace, self.gateway, self.local
        )
        self.pods["gateway"] = pod
        self.names.append(self.gateway["metadata"]["name"])
        drift = drift_deployment(self.cluster, MD, self.namespace)
        assert drift is not None, "spec.monitoring.drift makes a drift monitor"
        port = free_port()
        self.pods["drift"] = run_drift(self.cluster, self.namespace, drift, port, interval=5)
        self.names.append(drift["metadata"]["name"])
        wait_drift(self.cluster, drift["metadata"]["name"], f"127.0.0.1:{port}")
        self.scrape()

    def scrape(self) -> None:
        scrape(self.cluster, MD, self.namespace, list(self.pods.values()))

    def sync_gateway(self) -> dict[str, int]:
        """The kubelet's ConfigMap refresh: the gateway's upstream groups as the operator wrote them now,
        localized, into the file the gateway reloads; returns the weights by version."""
        assert self.gateway is not None
        pod = self.gateway["spec"]["template"]["spec"]
        configmap = next(v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v)
        data = _get(self.cluster, self.namespace, "configmap", configmap)["data"]["config.json"]
        deployed = GatewayConfig.model_validate_json(data)
        self.versions()
        path = self.cluster.state_dir / "serve" / MD / "gateway.json"
        local = GatewayConfig.model_validate_json(path.read_text())
        local = local.model_copy(update={"upstreams": [self.local(g) for g in deployed.upstreams]})
        text = local.model_dump_json(by_alias=True, exclude_none=True)
        if text != path.read_text():
            tmp = path.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(path)
            self.scrape()
        return {g.version: g.weight for g in deployed.upstreams}

    def stop(self) -> None:
        stop_spawned(self.cluster, *self.names)


def _query(prometheus: str, promql: str) -> float | None:
    url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=10) as r:
        result = json.load(r)["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def _audit_env(minio: dict, namespace: str) -> dict[str, str]:
    return {
        "LLMOPS_AUDIT": f"s3://llmops/audit/{namespace}",
        "LLMOPS_AUDIT_S3_ENDPOINT": minio["endpoint"],
        "LLMOPS_AUDIT_S3_REGION": "us-east-1",
        "LLMOPS_AUDIT_AWS_ACCESS_KEY_ID": minio["accessKeyId"],
        "LLMOPS_AUDIT_AWS_SECRET_ACCESS_KEY": minio["secretAccessKey"],
    }


def _llmops(*args: str) -> str:
    """The `llmops` command as a person runs it (the environment of the test: the audit location)."""
    run = subprocess.run([sys.executable, "-m", "llmops.cli", *args], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


def _models(minio: dict, *args: str) -> str:
    """`llmops models ...` as a person runs it, against the dev MinIO."""
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": minio["accessKeyId"],
        "AWS_SECRET_ACCESS_KEY": minio["secretAccessKey"],
        "AWS_ENDPOINT_URL_S3": minio["endpoint"],
        "AWS_REGION": "us-east-1",
        "LLMOPS_REGISTRY": "s3://llmops/registry",
    }
    run = subprocess.run(
        [sys.executable, "-m", "llmops.cli", "models", *args], env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    return run.stdout


def retire(
    cluster: LocalCluster, namespace: str, minio: dict, serving: Serving, version: str, replacement: str
) -> list[str]:
    """Retire `version` (served, trained by the loop) with `replacement` taking its traffic; returns
    the lines of the run's summary (the post-mortem's head among them)."""

    s3 = s3_client(minio)  # fmt: skip
    bucket = "archive-" + namespace
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    body = {
        "apiVersion": API_VERSION,
        "kind": "ModelRetirement",
        "metadata": {"name": MR},
        "spec": {
            "model": {"name": MODEL, "version": version},
            "registry": _s3(minio, "registry/"),
            "reason": f"superseded: version {replacement} takes its traffic back",
            "drain": {"mode": "Replace", "replacement": {"name": MODEL, "version": replacement}},
            "archive": {
                "location": {"s3": {**_s3(minio, "")["s3"], "bucket": bucket, "prefix": None}},
                "retention": {"mode": "Governance", "days": 1},
            },
        },
    }
    body["spec"]["archive"]["location"]["s3"].pop("prefix")
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(body))

    def retired() -> dict | None:
        serving.sync_gateway()  # the kubelet's ConfigMap refresh, while the deployment moves to v1
        mr = _get(cluster, namespace, "mr", MR)
        stalled = [c for c in (mr.get("status") or {}).get("conditions", []) if c["type"] == "Stalled"]
        assert not stalled or stalled[0]["status"] != "True", stalled
        return mr if (mr.get("status") or {}).get("phase") == "Retired" else None

    mr = eventually(retired, 300, 2)
    status = mr["status"]
    assert [s["state"] for s in status["steps"]] == ["Succeeded"] * 5, status["steps"]
    md = _get(cluster, namespace, "md", MD)["status"]
    assert [(v["version"], v["role"]) for v in md["versions"]] == [(replacement, "stable")], md["versions"]
    prefix = reg.version_prefix(MODEL, version)
    manifest = s3.head_object(Bucket=bucket, Key=f"{prefix}/manifest.json")
    assert manifest["ObjectLockMode"] == "GOVERNANCE"
    creds = Credentials(minio["accessKeyId"], minio["secretAccessKey"])
    store = open_store(ObjectStorageLocation.model_validate(_s3(minio, "registry/")), creds)
    with pytest.raises(reg.VersionRetired):
        reg.read_version(store, MODEL, version)
    report = json.loads(
        s3.get_object(Bucket=bucket, Key=f"{prefix}/postmortem/postmortem.json")["Body"].read()
    )
    assert report["metrics"]["requests"] > 0 and report["metrics"]["p95Ms"], report["metrics"]
    charts = {
        o["Key"].rsplit("/", 1)[1]
        for o in s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/postmortem/")["Contents"]
    }
    assert {"postmortem.md", "traffic.png", "latency.png"} <= charts, charts
    markdown = s3.get_object(Bucket=bucket, Key=f"{prefix}/postmortem/postmortem.md")["Body"].read().decode()
    # The audit trail: the chain verifies; the retirement's steps are in it, and the version's records
    # up to the archive were archived beside it.
    verified = _llmops("audit", "verify")
    assert "chain intact" in verified, verified
    shown = json.loads(_llmops("audit", "show", "--model", MODEL, "--version", version, "-o", "json"))
    actions = [r["data"]["action"] for r in shown]
    for action in (
        "modelretirement.drained",
        "modelretirement.archived",
        "modelretirement.deleted",
        "modelretirement.reported",
        "trainingjob.version_registered",
        "modeldeployment.rolled_out",
    ):
        assert action in actions, actions  # fmt: skip
    archived = s3.get_object(Bucket=bucket, Key=f"{prefix}/audit/records.jsonl")["Body"].read().splitlines()
    assert archived and all(json.loads(line)["data"]["version"] == version for line in archived)
    lines = [f"audit trail (llmops audit verify): {verified.strip()}"]
    lines.append(
        f"  {len(shown)} records of {MODEL}:{version} (llmops audit show), {len(archived)} archived with it:"
    )
    lines += [f"    {r['time'][:19]} {r['data']['action']}" for r in shown]
    lines.append(f"retirement of {version} (kubectl get mr {MR} -o wide):")
    lines += [f"  {s['name']}: {s['state']}, {s.get('message', '')}" for s in status["steps"]]
    lines.append(f"  summary: {status['summary']}")
    lines.append("  post-mortem (head):")
    lines += ["    " + line for line in markdown.splitlines()[:40]]
    return lines


@pytest.fixture
def serving(cluster: LocalCluster, namespace: str) -> Iterator[Serving]:
    local = Serving(cluster, namespace)
    try:
        yield local
    finally:
        local.stop()
        if services.service(cluster, "prometheus"):
            services.set_scrape_targets(cluster, [])


def _events(cluster: LocalCluster, namespace: str, kind: str, name: str) -> list[dict]:
    """The Events about object `kind`/`name`, oldest first."""
    out = cluster.kubectl(
        "get", "events", "-n", namespace, "--field-selector",
        f"involvedObject.kind={kind},involvedObject.name={name}", "-o", "json",
    )  # fmt: skip
    items = json.loads(out.stdout)["items"]
    return sorted(items, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")


class Summary(list[str]):
    """The loop's output: printed as it happens (so a failure shows how far it got), and whole at the end."""

    def append(self, line: str) -> None:
        print(line, flush=True)
        super().append(line)

    def __iadd__(self, lines):  # type: ignore[override]
        for line in lines:
            self.append(line)
        return self


def _record(rp: dict, job: str) -> dict:
    return next((r for r in (rp.get("status") or {}).get("runs", []) if r["trainingJob"] == job), {})


def _table(rows: list[dict]) -> list[str]:
    out = [f"    {'metric':<12} {'candidate':>10} {'champion':>10} {'change':>10}  passed  why"]
    for r in rows:
        out.append(
            f"    {r['metric']:<12} {r.get('candidate', 0):>10.3f} {r.get('champion', 0):>10.3f}"
            f" {r.get('change', 0):>10.3f}  {r['passed']!s:<6}  {r.get('message') or ''}"
        )
    return out


def test_drifted_traffic_retrains_beats_the_champion_and_promotes_through_the_canary(
    cluster: LocalCluster,
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    serving: Serving,
) -> None:
    from llmops.operators import modelretirement, retrainpolicy, trainingjob
    from llmops.operators.modeldeployment import make_kind
    from llmops.operators.modeldeployment.canary import PrometheusSource
    from llmops.operators.modeldeployment.plan import ServingSettings
    from llmops.operators.modelretirement import reconcile as retirement
    from llmops.operators.retrainpolicy.reconcile import Reconciler, Settings

    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    summary = Summary()

    # -- the environment: MinIO (before Ray: the head brings its own storage access), Ray, Prometheus.
    minio = services.start_minio(cluster)
    ray = services.start_ray(cluster)["address"]
    prometheus = services.start_prometheus(cluster, scrape_interval="1s")["url"]
    # One Secret per purpose: the internet-facing gateway writes the traffic with its own, never the
    # registry's (here both hold the dev MinIO's keys).
    for secret in ("minio-credentials", TRAFFIC_SECRET):
        cluster.kubectl(
            "create", "secret", "generic", secret, "-n", namespace,
            f"--from-literal=AWS_ACCESS_KEY_ID={minio['accessKeyId']}",
            f"--from-literal=AWS_SECRET_ACCESS_KEY={minio['secretAccessKey']}",
        )  # fmt: skip
    creds = Credentials(minio["accessKeyId"], minio["secretAccessKey"])
    datasets = open_store(ObjectStorageLocation.model_validate(_s3(minio, "datasets/")), creds)
    for path in [QUICKSTART / "train.jsonl"]:  # the reference data: the domain the model served
        datasets.upload_file(f"quickstart/{path.name}", path)
    drifted = code_corpus(240, seed=11)  # the domain the prompts drift to, for the next run to learn
    datasets.put_bytes("code/train.jsonl", "".join(json.dumps(r) + "\n" for r in drifted).encode())

    # -- the champion: version 1, a tiny Llama, served as champion and (no canary) as challenger.
    store = open_store(ObjectStorageLocation.model_validate(_s3(minio, "registry/")), creds)
    model = make_tiny_llama(tmp_path / "model", QUICKSTART / "train.jsonl", max_positions=256)
    gates = [reg.GateVerdict(metric="perplexity", operator="<", threshold=1e6, value=1000.0, passed=True)]
    v1 = reg.register(store, MODEL, model, metrics={}, gates=gates, lineage=reg.Lineage()).version
    for alias in ("champion", "challenger"):
        _models(minio, "alias", "set", MODEL, alias, v1, "--reason", "the first release", "--by", "user:ops")

    serving_settings = ServingSettings(
        prometheus_url=prometheus, resync_seconds=600, scrape_interval="1s", alias_poll_seconds=2
    )
    kinds = [
        trainingjob.KIND,
        make_kind(serving_settings, PrometheusSource(prometheus)),
        retrainpolicy.make_kind(Reconciler(Settings(evaluate_every=3, prometheus_url=prometheus))),
        modelretirement.make_kind(retirement.Reconciler(retirement.Settings(prometheus_url=prometheus))),
    ]
    # The operator's audit trail, in MinIO: every Event it posts is a record of the hash chain.
    for key, value in _audit_env(minio, namespace).items():
        monkeypatch.setenv(key, value)
    with operator_in_thread(namespace, kinds):
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(deployment(minio)))
        cluster.kubectl("wait", f"md/{MD}", "-n", namespace, "--for=condition=Ready", "--timeout=180s")
        serving.start()
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(policy(minio, ray)))
        eventually(
            lambda: _get(cluster, namespace, "rp", RP).get("status", {}).get("phase") == "Watching", 60
        )

        # -- drifted traffic: programming questions to a support model, through the gateway.
        assert serving.config is not None
        client = OpenAI(base_url=f"http://{serving.address}/v1", api_key="none", max_retries=2, timeout=300)

        def ask(prompt: str) -> None:
            reply = client.chat.completions.create(
                model=serving.config.served_model_name,
                messages=[{"role": "user", "content": prompt}],
                max_tokens=4,
            )
            assert reply.choices[0].message.content is not None

        for prompt in generate(CODE, 40, seed=23):
            ask(prompt)
        score = eventually(
            lambda: (
                (s := _query(prometheus, f'max(llmops_drift_score{{model_deployment="{MD}"}})'))
                and s > 0.9
                and s
            ),
            timeout=180,
            interval=2,
        )
        summary.append(f"drift score in Prometheus: {score:.3f} (threshold 0.9, forSeconds 60)")

        # -- the drift trigger fires and starts a run.
        rp = eventually(
            lambda: (rp := _get(cluster, namespace, "rp", RP)) and rp["status"].get("runs") and rp, 240, 2
        )
        first = rp["status"]["runs"][0]
        assert first["trigger"] == "drift", first
        assert float(first["triggerValue"]) > 0.9
        job = first["trainingJob"]
        drift_status = next(t for t in rp["status"]["triggers"] if t["type"] == "drift")
        summary.append(f"trigger fired: drift, value {first['triggerValue']} -> TrainingJob {job}")
        summary.append(f"  lastTrigger: {rp['status'].get('lastTrigger')}")
        assert drift_status.get("lastFiredTime")

        # -- the TrainingJob runs on the Ray head and scores the champion in the same run.
        tj = eventually(
            lambda: (
                (t := _get(cluster, namespace, "tj", job)).get("status", {}).get("phase")
                in ("Succeeded", "Failed")
                and t
            ),
            900,
            5,
        )
        assert tj["status"]["phase"] == "Succeeded", tj["status"].get("message")
        assert tj["spec"]["evaluation"]["baseline"] == {"name": MODEL, "version": v1}
        assert tj["status"]["baseline"]["version"] == v1
        v2 = tj["status"]["modelVersion"]["version"]
        assert v2 != v1

        # -- it won; the challenger moves and the canary starts.
        won = eventually(
            lambda: (
                _record(_get(cluster, namespace, "rp", RP), job).get("verdict") in ("Canary", "Promoted")
                and _record(_get(cluster, namespace, "rp", RP), job)
            ),
            120,
            2,
        )
        rows = won["comparison"]
        assert rows and all(r["passed"] for r in rows), rows
        (row,) = rows
        assert row["metric"] == "perplexity" and row["candidate"] < 0.95 * row["champion"]
        summary.append(f"run {job}: version {v2} vs champion {v1}, measured in the same run")
        summary += _table(rows)
        assert reg.read_alias(store, MODEL, "challenger").version == v2

        # The deployment follows the alias: its canary is v2; the new version runs here too.
        eventually(
            lambda: (
                (m := _get(cluster, namespace, "md", MD)).get("status", {}).get("canary", {}).get("version")
                == v2
                and m
            ),
            120,
            2,
        )
        stop = threading.Event()
        errors: list[Exception] = []

        def traffic() -> None:
            prompts = generate(CODE, 200, seed=29)
            i = 0
            while not stop.is_set():
                try:
                    ask(prompts[i % len(prompts)])
                except Exception as e:  # reported by the test
                    errors.append(e)
                i += 1

        steps: list[str] = []
        sender = threading.Thread(target=traffic, daemon=True)
        try:
            serving.sync_gateway()  # starts v2's vLLM and gives the gateway its group
            sender.start()

            def promoted() -> bool:
                """The canary's steps as the deployment's status shows them, until the policy's run is
                Promoted (then champion names v2 and the deployment has no canary any more)."""
                weights = serving.sync_gateway()
                canary = _get(cluster, namespace, "md", MD)["status"].get("canary")
                if canary is not None:
                    seen = f"step {canary['step']}, weight {canary['weight']}%, {canary['verdict']}"
                    if not steps or steps[-1] != seen:
                        steps.append(seen)
                        summary.append(f"  {seen}: {canary.get('message') or ''}; gateway weights {weights}")
                    assert canary["verdict"] not in ("RolledBack", "Halted"), canary
                return _record(_get(cluster, namespace, "rp", RP), job).get("verdict") == "Promoted"

            summary.append(f"canary of version {v2} (ModelDeployment status.canary):")
            try:
                eventually(promoted, 300, 2)
            except AssertionError as e:
                status = _get(cluster, namespace, "md", MD).get("status")
                raise AssertionError(f"the canary did not finish: {json.dumps(status)}") from e
        finally:
            stop.set()
            sender.join(60)
        assert not errors, errors[:3]
        # Both steps were analysed on traffic both versions got; the operator's Events say so.
        assert {s.split(",")[0] for s in steps} >= {"step 0", "step 1"}, steps
        canary_events = [
            e for e in _events(cluster, namespace, "ModelDeployment", MD)
            if e["reason"] in ("CanaryProgressed", "Promoted")
        ]  # fmt: skip
        summary += [f"  event {e['reason']}: {e['message']}" for e in canary_events]
        assert [e["reason"] for e in canary_events][-1] == "Promoted", canary_events

        # -- promoted: champion moves to v2, the run says so.
        rp = eventually(
            lambda: (
                (rp := _get(cluster, namespace, "rp", RP))
                and _record(rp, job).get("verdict") == "Promoted"
                and rp
            ),
            120,
            2,
        )
        assert reg.read_alias(store, MODEL, "champion").version == v2
        assert rp["status"]["lastPromotedVersion"] == v2
        summary.append(f"run {job}: {_record(rp, job)['message']}")

        # -- the opposite: a run that cannot win (one step at a learning rate of ~0), asked for by hand.
        cluster.kubectl(
            "patch", "rp", RP, "-n", namespace, "--type=merge", "-p",
            json.dumps({"spec": {"trainingJobTemplate": {"spec": {"method": {"hyperparameters": {
                "maxSteps": 1, "learningRate": 1.0e-12}}}}}}),
        )  # fmt: skip
        cluster.kubectl("annotate", "rp", RP, "-n", namespace, "retrain.llmops.io/requested=worse-1")
        rp = eventually(
            lambda: (
                (rp := _get(cluster, namespace, "rp", RP)) and len(rp["status"].get("runs", [])) == 2 and rp
            ),
            60,
            2,
        )
        second = rp["status"]["runs"][0]
        assert second["trigger"] == "manual" and second["triggerValue"] == "worse-1", second
        loser = second["trainingJob"]
        summary.append(f"trigger fired: manual, value worse-1 -> TrainingJob {loser}")
        tj = eventually(
            lambda: (
                (t := _get(cluster, namespace, "tj", loser)).get("status", {}).get("phase")
                in ("Succeeded", "Failed")
                and t
            ),
            900,
            5,
        )
        assert tj["status"]["phase"] == "Succeeded", tj["status"].get("message")
        assert tj["status"]["baseline"]["version"] == v2
        v3 = tj["status"]["modelVersion"]["version"]
        lost = eventually(
            lambda: (
                _record(_get(cluster, namespace, "rp", RP), loser).get("verdict") == "Lost"
                and _record(_get(cluster, namespace, "rp", RP), loser)
            ),
            120,
            2,
        )
        (row,) = lost["comparison"]
        assert not row["passed"] and row["change"] < 0.05 * row["champion"]
        assert f"version {v3} lost to champion {v2}" in lost["message"], lost["message"]
        assert "less than 5.00%" in lost["message"], lost["message"]
        summary.append(f"run {loser}: version {v3} vs champion {v2}")
        summary += _table(lost["comparison"])
        summary.append(f"  {lost['message']}")
        assert reg.read_alias(store, MODEL, "champion").version == v2
        assert reg.read_alias(store, MODEL, "challenger").version == v2

        # The policy's own Events tell the same story (kubectl describe rp).
        said = eventually(
            lambda: (
                (ev := _events(cluster, namespace, "RetrainPolicy", RP))
                and any(e["reason"] == "NotPromoted" for e in ev)
                and ev
            ),
            60,
            2,
        )
        summary.append(f"events of retrainpolicy/{RP}:")
        summary += [f"  {e['reason']}: {e['message']}" for e in said]
        reasons = [e["reason"] for e in said]
        for reason in ("Triggered", "Compared", "AliasMoved", "Promoted", "NotPromoted"):
            assert reason in reasons, reasons
        assert reasons.count("AliasMoved") == 2 and reasons.count("Triggered") == 2, reasons

        # -- the end of v2's life: retired with v1 as its replacement (the policy goes first: it would
        # promote again). Drained through both aliases by the real ModelDeployment reconcile, archived
        # into an Object-Lock bucket and read back by sha256, deleted behind a tombstone, its traffic
        # records disposed of, and its post-mortem written from what Prometheus saw it serve.
        cluster.kubectl("delete", "rp", RP, "-n", namespace)
        retired = retire(cluster, namespace, minio, serving, v2, v1)
        summary += retired

    # -- the alias history, as a person reads it.
    history = reg.alias_history(store, MODEL)
    by = f"retrainpolicy/{namespace}/{RP}"
    moves = [(m.alias, m.previous, m.version, m.by) for m in history]
    # The person's two moves (one second, either order), then the policy's: challenger, then champion;
    # then the retirement's: challenger first (else the deployment would canary what it retires).
    assert sorted(moves[:2]) == [("challenger", None, v1, "user:ops"), ("champion", None, v1, "user:ops")]
    gone = f"modelretirement/{namespace}/{MR}"
    assert moves[2:4] == [("challenger", v1, v2, by), ("champion", v1, v2, by)], moves
    assert moves[4:] == [("challenger", v2, v1, gone), ("champion", v2, v1, gone)], moves
    assert all(m.reason for m in history)
    summary.append("alias history (llmops models alias history):")
    summary += ["  " + line for line in _models(minio, "alias", "history", MODEL).rstrip().splitlines()]
    print("\n== the retrain loop\n" + "\n".join(summary))
