"""The ModelDeployment operator on the real control plane: children, readiness, canary, rollback, GC.

kwok stands in for the kubelet, so pods become Running and Ready without containers; the registry
is a local directory with tiny registered versions (never served here); canary analysis reads real
samples from a real Prometheus (Debian's package) scraping an exporter this test controls, shaped
like the gateway's metrics.
"""

from __future__ import annotations

import contextlib
import json
import random
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from llmops.dev.cluster import LocalCluster, free_port
from llmops.dev.tools import binary
from llmops.operators.modeldeployment import make_kind
from llmops.operators.modeldeployment.canary import PrometheusSource
from llmops.operators.modeldeployment.plan import ServingSettings
from llmops.operators.runtime import REQUEST_ANNOTATION
from llmops.registry import Content, GateVerdict, Lineage, register, set_alias
from llmops.storage import LocalStore
from tests.helpers import eventually, http_get, operator_in_thread

pytestmark = pytest.mark.usefixtures("llmops_crds")

GOLDEN = Path(__file__).parents[1] / "unit" / "golden" / "modeldeployment"
PROMETHEUS = binary("prometheus")


def get(cluster: LocalCluster, kind: str, name: str, namespace: str) -> dict | None:
    result = cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def names(cluster: LocalCluster, kind: str, namespace: str) -> set[str]:
    out = cluster.kubectl(
        "get", kind, "-n", namespace, "-l", "app.kubernetes.io/managed-by=llmops", "-o", "name"
    )
    return {line.split("/", 1)[1] for line in out.stdout.split()}


def events(cluster: LocalCluster, namespace: str, name: str) -> list[dict]:
    out = cluster.kubectl(
        "get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}", "-o", "json"
    )
    return json.loads(out.stdout)["items"]


def condition(obj: dict | None, type: str) -> dict:
    return next((c for c in ((obj or {}).get("status") or {}).get("conditions", []) if c["type"] == type), {})


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    """A local registry with support-bot versions 1-3 (tiny files: nothing is served here)."""
    root = tmp_path / "registry"
    store = LocalStore(root)
    for i in range(1, 4):
        model = tmp_path / f"model-{i}"
        model.mkdir()
        (model / "config.json").write_text(json.dumps({"version": i}))
        gates = [GateVerdict(metric="accuracy", operator=">=", threshold=0.5, value=0.9, passed=True)]
        register(store, "support-bot", model, metrics={"accuracy": 0.9}, gates=gates, lineage=Lineage())
    return root


class GatewayMetrics:
    """Serves gateway-shaped series (requests by version and code, latency histogram) that the test
    steers: each version gets steady traffic with the error ratio and latency set here."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("llmops_gateway_requests", "", ["version", "code"], registry=self.registry)
        self.latency = Histogram(
            "llmops_gateway_request_duration_seconds", "", ["version"], registry=self.registry,
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )  # fmt: skip
        self.behaviour: dict[str, tuple[float, float]] = {}  # version -> (error ratio, latency s)
        self.port = free_port()
        self.server, self.thread = start_http_server(self.port, addr="127.0.0.1", registry=self.registry)
        self._stop = threading.Event()
        self._traffic = threading.Thread(target=self._run, daemon=True)
        self._traffic.start()

    def set(self, version: str, error_ratio: float = 0.0, latency: float = 0.2) -> None:
        self.behaviour[version] = (error_ratio, latency)

    def _run(self) -> None:
        rng = random.Random(0)
        while not self._stop.wait(0.05):
            for version, (errors, latency) in list(self.behaviour.items()):
                failed = rng.random() < errors
                self.requests.labels(version, "500" if failed else "200").inc()
                self.latency.labels(version).observe(latency * rng.uniform(0.8, 1.2))

    def close(self) -> None:
        self._stop.set()
        self.server.shutdown()


@pytest.fixture
def prometheus(
    tmp_path: Path, namespace: str, request: pytest.FixtureRequest
) -> Iterator[tuple[str, GatewayMetrics]]:
    """A real Prometheus scraping the test's gateway-shaped exporter every second (or at the interval a
    test passes as the fixture's param), with the target labels the operator's ServiceMonitor would
    give it."""
    scrape = getattr(request, "param", "1s")
    exporter = GatewayMetrics()
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": scrape, "evaluation_interval": "1s"},
                "scrape_configs": [
                    {
                        "job_name": "gateway",
                        "static_configs": [
                            {
                                "targets": [f"127.0.0.1:{exporter.port}"],
                                "labels": {"namespace": namespace, "model_deployment": "bot"},
                            }
                        ],
                    }
                ],
            }
        )
    )
    log = open(tmp_path / "prometheus.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        eventually(lambda: http_get(f"{url}/-/ready")[0] == 200, timeout=60)
        yield url, exporter
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)  # its TSDB is thrown away: no need to wait for a clean shutdown
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        exporter.close()


def running_operator(namespace: str, settings: ServingSettings, metrics=None):
    """The real operator (the shared runtime, our ModelDeployment kind) in a thread of this process."""
    return operator_in_thread(namespace, [make_kind(settings, metrics)])


@pytest.fixture
def kubeconfig_env(cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))


def deployment(name: str, registry: Path, **spec: object) -> dict:
    body = {
        "apiVersion": "llmops.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {"name": "support-bot", "version": "1"},
            "registry": {"local": {"path": str(registry)}},
            "resources": {"cpu": 1, "memory": "2Gi"},
            **spec,
        },
    }
    return body


def apply(cluster: LocalCluster, namespace: str, body: dict) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(body))


# -- every generated object is valid on the real apiserver -------------------------------------


@pytest.mark.parametrize("path", sorted(GOLDEN.glob("*.yaml")), ids=lambda p: p.stem)
def test_generated_children_pass_server_side_dry_run(
    cluster: LocalCluster, namespace: str, path: Path
) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    for doc in docs:
        doc["metadata"]["namespace"] = namespace
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget", "NetworkPolicy"} <= kinds
    text = "\n---\n".join(yaml.safe_dump(d) for d in docs)
    result = cluster.kubectl(
        "apply",
        "--server-side",
        "--field-manager=llmops",
        "--dry-run=server",
        "-f",
        "-",
        input=text,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("(server dry run)") == len(docs), result.stdout


# -- the operator ------------------------------------------------------------------------------


@pytest.mark.usefixtures("kubeconfig_env")
def test_single_version_becomes_ready_heals_scales_to_zero_and_is_collected(
    cluster: LocalCluster, namespace: str, registry: Path
) -> None:
    body = deployment(
        "bot",
        registry,
        resources={"cpu": 2, "memory": "8Gi", "gpus": 1},
        autoscaling={"minReplicas": 1, "maxReplicas": 3, "scaleToZero": True},
        monitoring={"serviceMonitor": True, "alerts": {"p95LatencyMs": 2000, "maxErrorRate": 0.05}},
        gateway={"replicas": 1},
    )
    # A short resync: every few seconds the operator applies all children again, as after drift.
    with running_operator(namespace, ServingSettings(resync_seconds=3)):
        apply(cluster, namespace, body)
        waited = cluster.kubectl("wait", "md/bot", "-n", namespace, "--for=condition=Ready", "--timeout=90s")
        assert "condition met" in waited.stdout
        md = get(cluster, "md", "bot", namespace)
        assert md is not None
        status = md["status"]
        assert status["phase"] == "Ready" and status["endpoint"] == f"http://bot-gateway.{namespace}.svc/v1"
        assert status["versions"] == [
            {
                "name": "support-bot",
                "version": "1",
                "role": "stable",
                "weight": 100,
                "replicas": 1,
                "readyReplicas": 1,
                "deployment": "bot-1-vllm",
            }
        ]
        assert status["readyReplicas"] == 1 and status["observedGeneration"] == md["metadata"]["generation"]
        assert names(cluster, "deployments", namespace) == {"bot-1-vllm", "bot-gateway"}
        assert names(cluster, "scaledobjects", namespace) == {"bot-1-vllm"}
        assert names(cluster, "podmonitors", namespace) == {"bot-vllm"}
        assert names(cluster, "prometheusrules", namespace) == {"bot-slo"}
        assert len(status["inventory"]) == 15
        pod = json.loads(
            cluster.kubectl(
                "get", "pods", "-n", namespace, "-l", "app.kubernetes.io/component=model-server", "-o", "json"
            ).stdout
        )["items"][0]
        assert pod["spec"]["nodeName"] == "kwok-gpu-0"  # the GPU request and toleration at work

        # A child deleted behind the operator's back comes back (the child watch).
        cluster.kubectl("delete", "deployment", "bot-1-vllm", "-n", namespace)
        eventually(
            lambda: (d := get(cluster, "deployment", "bot-1-vllm", namespace)) and d["metadata"]["uid"]
        )

        # KEDA scaling the version to zero (done by hand here) shows in the status; still Ready.
        eventually(lambda: get(cluster, "md", "bot", namespace)["status"]["readyReplicas"] == 1)
        cluster.kubectl("scale", "deployment", "bot-1-vllm", "-n", namespace, "--replicas=0")
        md = eventually(
            lambda: (o := get(cluster, "md", "bot", namespace))["status"]["phase"] == "ScaledToZero" and o
        )
        assert condition(md, "Ready")["status"] == "True" and "wakes it" in condition(md, "Ready")["message"]
        # The operator leaves replicas to the autoscaler: its resyncs do not undo the scale-down.
        time.sleep(8)
        assert get(cluster, "deployment", "bot-1-vllm", namespace)["spec"]["replicas"] == 0  # type: ignore[index]

        # Deleting the ModelDeployment removes every child (owner references, garbage collector).
        cluster.kubectl("delete", "md", "bot", "-n", namespace, "--wait=true", "--timeout=60s")
        eventually(lambda: not names(cluster, "deployments", namespace), timeout=60)
        eventually(
            lambda: not names(cluster, "configmaps", namespace) and not names(cluster, "services", namespace)
        )


def gateway_weights(cluster: LocalCluster, namespace: str, md: str = "bot") -> dict[str, int]:
    cm = get(cluster, "configmap", f"{md}-gateway", namespace) or {"data": {"config.json": "{}"}}
    return {u["version"]: u["weight"] for u in json.loads(cm["data"]["config.json"]).get("upstreams", [])}


@pytest.mark.usefixtures("kubeconfig_env")
def test_a_new_version_takes_over_only_once_it_is_ready(
    cluster: LocalCluster, namespace: str, registry: Path
) -> None:
    body = deployment("bot", registry, gateway={"replicas": 1})
    with running_operator(namespace, ServingSettings(resync_seconds=600)):
        apply(cluster, namespace, body)
        cluster.kubectl("wait", "md/bot", "-n", namespace, "--for=condition=Ready", "--timeout=90s")
        old_pod = cluster.kubectl(
            "get", "pods", "-n", namespace, "-l", "llmops.io/model-version=1", "-o", "name"
        ).stdout.split()
        # Version 2, on nodes that do not exist yet: it cannot start, so version 1 keeps all traffic
        # (and is not touched by the spec change: its pod is the same).
        body["spec"]["model"]["version"] = "2"
        body["spec"]["resources"]["nodeSelector"] = {"pool": "not-yet"}
        apply(cluster, namespace, body)
        md = eventually(
            lambda: (
                (o := get(cluster, "md", "bot", namespace))["status"]["observedGeneration"] == 2
                and len(o["status"]["versions"]) == 2
                and o
            )
        )
        assert [(v["version"], v["role"], v["weight"]) for v in md["status"]["versions"]] == [
            ("2", "stable", 0),
            ("1", "previous", 100),
        ]
        assert (
            md["status"]["phase"] == "Progressing"
            and "1 serves until support-bot:2" in md["status"]["message"]
        )
        eventually(lambda: gateway_weights(cluster, namespace) == {"2": 0, "1": 100})
        assert (
            cluster.kubectl(
                "get", "pods", "-n", namespace, "-l", "llmops.io/model-version=1", "-o", "name"
            ).stdout.split()
            == old_pod
        )
        # Now it can start: once ready it takes over, and version 1 goes away.
        cluster.kubectl("label", "node", "kwok-cpu-1", "pool=not-yet")
        try:
            cluster.kubectl("wait", "md/bot", "-n", namespace, "--for=condition=Ready", "--timeout=90s")
            md = get(cluster, "md", "bot", namespace)
            assert [(v["version"], v["role"], v["weight"]) for v in md["status"]["versions"]] == [
                ("2", "stable", 100)
            ]  # type: ignore[index]
            eventually(lambda: names(cluster, "deployments", namespace) == {"bot-2-vllm", "bot-gateway"})
            assert gateway_weights(cluster, namespace) == {"2": 100}
        finally:
            cluster.kubectl("label", "node", "kwok-cpu-1", "pool-")


@pytest.mark.usefixtures("kubeconfig_env")
def test_unresolvable_versions_stall_with_a_clear_message(
    cluster: LocalCluster, namespace: str, registry: Path
) -> None:
    with running_operator(namespace, ServingSettings(resync_seconds=600)):
        apply(
            cluster, namespace, deployment("missing", registry, model={"name": "support-bot", "version": "9"})
        )
        cluster.kubectl("wait", "md/missing", "-n", namespace, "--for=condition=Stalled", "--timeout=60s")
        md = get(cluster, "md", "missing", namespace)
        stalled = condition(md, "Stalled")
        assert stalled["reason"] == "VersionNotFound" and "spec.model" in stalled["message"]
        assert "has no version '9'" in stalled["message"] and condition(md, "Ready")["status"] == "False"
        assert not names(cluster, "deployments", namespace)
        warning = eventually(lambda: events(cluster, namespace, "missing"))
        assert warning[0]["reason"] == "VersionNotFound" and warning[0]["type"] == "Warning"

        # A version whose gates failed is refused too (a manifest not written by register()).
        key = registry / "models/support-bot/versions/3/manifest.json"
        manifest = json.loads(key.read_text())
        manifest["gates"][0]["passed"] = False
        key.write_text(json.dumps(manifest))
        apply(
            cluster, namespace, deployment("gated", registry, model={"name": "support-bot", "version": "3"})
        )
        cluster.kubectl("wait", "md/gated", "-n", namespace, "--for=condition=Stalled", "--timeout=60s")
        stalled = condition(get(cluster, "md", "gated", namespace), "Stalled")
        assert stalled["reason"] == "GatesNotPassed" and "accuracy" in stalled["message"]

        # An alias that appears later: asking for a reconcile (the annotation users can set too) heals it.
        apply(
            cluster,
            namespace,
            deployment("aliased", registry, model={"name": "support-bot", "alias": "prod"}),
        )
        cluster.kubectl("wait", "md/aliased", "-n", namespace, "--for=condition=Stalled", "--timeout=60s")
        (registry / "models/support-bot/aliases").mkdir(parents=True, exist_ok=True)
        (registry / "models/support-bot/aliases/prod.json").write_text('{"version": "2"}')
        cluster.kubectl(
            "annotate", "md", "aliased", "-n", namespace, f"{REQUEST_ANNOTATION}=1", "--overwrite"
        )
        cluster.kubectl("wait", "md/aliased", "-n", namespace, "--for=condition=Ready", "--timeout=90s")
        assert get(cluster, "md", "aliased", namespace)["status"]["versions"][0]["version"] == "2"  # type: ignore[index]


@pytest.mark.usefixtures("kubeconfig_env")
def test_lora_adapters_are_served_from_what_the_manifest_says(
    cluster: LocalCluster, namespace: str, registry: Path, tmp_path: Path
) -> None:
    """A full model listed under engine.loraAdapters stalls, naming the field; a version registered
    as a lora TrainingJob registers it (merged model, adapter in adapter/) is served, with vLLM's
    --lora-modules on the adapter's folder and the fetcher taking only that folder. (vLLM loading
    it: tests/workloads/test_training_workload.py::test_lora_version_served_as_adapter.)"""
    lora = tmp_path / "lora"
    (lora / "adapter").mkdir(parents=True)
    (lora / "config.json").write_text("{}")
    (lora / "adapter" / "adapter_config.json").write_text("{}")
    content = Content.from_saved(
        {"format": "safetensors", "merged": True, "adapter": "adapter/"}, "support-bot:1"
    )
    gates = [GateVerdict(metric="accuracy", operator=">=", threshold=0.5, value=0.9, passed=True)]
    register(
        LocalStore(registry), "billing", lora, metrics={}, gates=gates, lineage=Lineage(), content=content
    )
    with running_operator(namespace, ServingSettings(resync_seconds=600)):
        adapters = [{"name": "billing", "model": {"name": "support-bot", "version": "2"}}]
        body = deployment("adapters", registry, engine={"loraAdapters": adapters})
        apply(cluster, namespace, body)
        cluster.kubectl("wait", "md/adapters", "-n", namespace, "--for=condition=Stalled", "--timeout=60s")
        stalled = condition(get(cluster, "md", "adapters", namespace), "Stalled")
        assert stalled["reason"] == "WrongContent", stalled
        assert "spec.engine.loraAdapters[billing].model: support-bot:2" in stalled["message"]
        assert "a full model is served as spec.model" in stalled["message"]
        assert not names(cluster, "deployments", namespace)

        body["spec"]["engine"]["loraAdapters"][0]["model"] = {"name": "billing", "version": "1"}
        apply(cluster, namespace, body)
        cluster.kubectl("wait", "md/adapters", "-n", namespace, "--for=condition=Ready", "--timeout=90s")
        pod = get(cluster, "deployment", "adapters-1-vllm", namespace)["spec"]["template"]["spec"]  # type: ignore[index]
        argv = pod["containers"][0]["command"]
        assert argv[argv.index("--lora-modules") + 1] == "billing=/models/adapters/billing/adapter"
        assert "adapters/billing=billing:1/adapter" in pod["initContainers"][0]["command"]


@pytest.mark.usefixtures("kubeconfig_env")
def test_ungated_versions_are_served_only_by_opt_in(
    cluster: LocalCluster, namespace: str, registry: Path, tmp_path: Path
) -> None:
    """A version registered without gates (a TrainingJob that declared none) is refused until the
    ModelDeployment sets spec.allowUngated; the same spec with the opt-in becomes Ready."""
    model = tmp_path / "ungated"
    model.mkdir()
    (model / "config.json").write_text("{}")
    version = register(LocalStore(registry), "support-bot", model, metrics={}, gates=[], lineage=Lineage())
    assert version.ungated
    with running_operator(namespace, ServingSettings(resync_seconds=600)):
        body = deployment("ungated", registry, model={"name": "support-bot", "version": version.version})
        apply(cluster, namespace, body)
        cluster.kubectl("wait", "md/ungated", "-n", namespace, "--for=condition=Stalled", "--timeout=60s")
        stalled = condition(get(cluster, "md", "ungated", namespace), "Stalled")
        assert stalled["reason"] == "GatesNotPassed"
        assert "without any gate" in stalled["message"] and "spec.allowUngated" in stalled["message"]
        assert not names(cluster, "deployments", namespace)

        body["spec"]["allowUngated"] = True
        apply(cluster, namespace, body)
        cluster.kubectl("wait", "md/ungated", "-n", namespace, "--for=condition=Ready", "--timeout=90s")


@pytest.mark.usefixtures("kubeconfig_env")
def test_canary_steps_promotes_then_rolls_back_a_bad_version(
    cluster: LocalCluster, namespace: str, registry: Path, prometheus: tuple[str, GatewayMetrics]
) -> None:
    url, traffic = prometheus
    traffic.set("1", error_ratio=0.0, latency=0.3)
    traffic.set("2", error_ratio=0.0, latency=0.3)
    analysis = {"intervalSeconds": 10, "maxErrorRate": 0.05, "maxLatencyRatio": 2.0}
    canary = {
        "model": {"name": "support-bot", "version": "2"},
        "weight": 20,
        "steps": [60],
        "analysis": analysis,
    }
    body = deployment("bot", registry, rollout={"canary": canary}, gateway={"replicas": 1})
    settings = ServingSettings(prometheus_url=url, resync_seconds=600, scrape_interval="1s")
    with running_operator(namespace, settings, PrometheusSource(url)):
        apply(cluster, namespace, body)

        def weights() -> dict[str, int]:
            return gateway_weights(cluster, namespace)

        # Both versions are up; the canary takes its first weight once ready, then the next step.
        eventually(lambda: weights() == {"1": 80, "2": 20}, timeout=90)
        md = get(cluster, "md", "bot", namespace)
        assert md is not None and md["status"]["canary"]["verdict"] == "Analysing"
        assert condition(md, "Ready")["reason"] == "CanaryAnalysing"
        eventually(lambda: weights() == {"1": 40, "2": 60}, timeout=60)
        progressed = [e for e in events(cluster, namespace, "bot") if e["reason"] == "CanaryProgressed"]
        assert progressed and "weight 20% -> 60%" in progressed[0]["message"]

        # The last step passes: promoted. Version 2 serves alone; version 1's children are deleted.
        md = eventually(
            lambda: (
                (o := get(cluster, "md", "bot", namespace))["status"].get("canary", {}).get("verdict")
                == "Promoted"
                and o
            ),
            timeout=60,
        )
        assert [(v["version"], v["role"], v["weight"]) for v in md["status"]["versions"]] == [
            ("2", "stable", 100)
        ]
        assert condition(md, "Ready")["reason"] == "Promoted"
        assert any(e["reason"] == "Promoted" for e in events(cluster, namespace, "bot"))
        eventually(lambda: names(cluster, "deployments", namespace) == {"bot-2-vllm", "bot-gateway"})
        assert weights() == {"2": 100}

        # The user records the promotion and starts the next canary, version 3, which fails.
        traffic.set("3", error_ratio=0.5, latency=0.3)
        body["spec"]["model"] = {"name": "support-bot", "version": "2"}
        body["spec"]["rollout"]["canary"]["model"] = {"name": "support-bot", "version": "3"}
        apply(cluster, namespace, body)
        cluster.kubectl("wait", "md/bot", "-n", namespace, "--for=condition=Stalled", "--timeout=120s")
        md = get(cluster, "md", "bot", namespace)
        assert md["status"]["canary"]["verdict"] == "RolledBack" and md["status"]["canary"]["weight"] == 0  # type: ignore[index]
        assert md["status"]["canary"]["errorRate"] > 0.05 and md["status"]["phase"] == "Degraded"  # type: ignore[index]
        stalled = condition(md, "Stalled")
        assert stalled["reason"] == "RolledBack" and "error rate" in stalled["message"]
        rolled = [e for e in events(cluster, namespace, "bot") if e["reason"] == "RolledBack"]
        assert rolled and rolled[0]["type"] == "Warning" and "error rate" in rolled[0]["message"]
        assert "Version 2 serves all traffic" in rolled[0]["message"]
        eventually(lambda: names(cluster, "deployments", namespace) == {"bot-2-vllm", "bot-gateway"})
        assert weights() == {"2": 100}


# -- what the apiserver saw, in its order --------------------------------------------------------


class Recorder:
    """Watches kinds in a namespace from threads of this test and keeps every event with its
    resourceVersion, so a test can replay them in the apiserver's order (etcd's revision, one
    counter for every kind) and check an invariant at each step."""

    KINDS = {
        "Deployment": "apps/v1",
        "ConfigMap": "v1",
        "HorizontalPodAutoscaler": "autoscaling/v2",
        "ScaledObject": "keda.sh/v1alpha1",
    }

    def __init__(self, kubeconfig: Path, namespace: str, *kinds: str) -> None:
        from kubernetes import config, dynamic

        self.events: list[tuple[int, str, str, dict]] = []  # (resourceVersion, type, kind, object)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = []
        for kind in kinds:
            client = dynamic.DynamicClient(config.new_client_from_config(config_file=str(kubeconfig)))
            resource = client.resources.get(api_version=self.KINDS[kind], kind=kind)
            thread = threading.Thread(target=self._watch, args=(resource, namespace, kind), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _watch(self, resource, namespace: str, kind: str) -> None:
        since = None  # a watch that ends (its timeout) goes on from its last event, without a relist
        while not self._stop.is_set():
            try:
                for event in resource.watch(namespace=namespace, timeout=2, resource_version=since):
                    obj = event["raw_object"]
                    since = obj["metadata"]["resourceVersion"]
                    with self._lock:
                        self.events.append((int(since), event["type"], kind, obj))
                    if self._stop.is_set():
                        return
            except Exception:
                time.sleep(0.1)

    def stop(self) -> list[tuple[int, str, str, dict]]:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)
        with self._lock:
            return sorted(self.events, key=lambda e: e[0])


def capacity_violations(events: list[tuple[int, str, str, dict]], need: int) -> tuple[list, int]:
    """Replay Deployments' readyReplicas and the gateway's weights; return the moments (after the
    stable version first served with `need` ready replicas) when the ready replicas of the versions
    with a weight above 0 were fewer than `need`, and how many moments were checked."""
    ready: dict[str, int] = {}
    weights: dict[str, int] = {}  # Deployment name -> weight (from the upstream's Service host)
    armed, checked, bad = False, 0, []
    for rv, type_, kind, obj in events:
        name = obj["metadata"]["name"]
        if kind == "Deployment" and name.endswith("-vllm"):
            ready[name] = (
                0 if type_ == "DELETED" else int((obj.get("status") or {}).get("readyReplicas") or 0)
            )
        elif kind == "ConfigMap" and name == "bot-gateway" and type_ != "DELETED":
            config = json.loads(obj["data"]["config.json"])
            weights = {u["service"]["host"].split(".", 1)[0]: u["weight"] for u in config["upstreams"]}
        else:
            continue
        serving = sum(ready.get(d, 0) for d, w in weights.items() if w > 0)
        armed = armed or serving >= need
        if armed:
            checked += 1
            if serving < need:
                bad.append((rv, dict(weights), dict(ready)))
    return bad, checked


@pytest.mark.usefixtures("kubeconfig_env")
def test_canary_promotion_and_rollback_never_drop_below_the_stable_replicas(
    cluster: LocalCluster, namespace: str, registry: Path, prometheus: tuple[str, GatewayMetrics]
) -> None:
    """minReplicas 3, no autoscaler: a canary through 20%, 50% and 100%, its promotion, then a canary
    that is rolled back. At every moment the apiserver recorded, the replicas ready in the versions
    that take traffic are at least 3; the new stable version is ready before the old one goes."""
    url, traffic = prometheus
    for version in ("1", "2"):
        traffic.set(version, error_ratio=0.0, latency=0.3)
    canary = {
        "model": {"name": "support-bot", "version": "2"},
        "weight": 20,
        "steps": [50, 100],
        "analysis": {"intervalSeconds": 10, "maxErrorRate": 0.05},
    }
    body = deployment(
        "bot",
        registry,
        autoscaling={"minReplicas": 3, "maxReplicas": 3},
        rollout={"canary": canary},
        gateway={"replicas": 1},
    )
    settings = ServingSettings(prometheus_url=url, resync_seconds=600, scrape_interval="1s")
    recorder = Recorder(cluster.kubeconfig, namespace, "Deployment", "ConfigMap")
    try:
        with running_operator(namespace, settings, PrometheusSource(url)):
            apply(cluster, namespace, body)
            eventually(
                lambda: (
                    (get(cluster, "md", "bot", namespace) or {})
                    .get("status", {})
                    .get("canary", {})
                    .get("verdict")
                    == "Promoted"
                ),
                timeout=240,
            )
            eventually(lambda: names(cluster, "deployments", namespace) == {"bot-2-vllm", "bot-gateway"})
            promoted = get(cluster, "deployment", "bot-2-vllm", namespace)
            assert promoted["spec"]["replicas"] == 3  # type: ignore[index]
            assert gateway_weights(cluster, namespace) == {"2": 100}

            # The next canary fails and is rolled back: the stable version keeps its three replicas.
            traffic.set("3", error_ratio=0.5, latency=0.3)
            body["spec"]["model"] = {"name": "support-bot", "version": "2"}
            body["spec"]["rollout"]["canary"]["model"] = {"name": "support-bot", "version": "3"}
            apply(cluster, namespace, body)
            cluster.kubectl("wait", "md/bot", "-n", namespace, "--for=condition=Stalled", "--timeout=180s")
            eventually(lambda: names(cluster, "deployments", namespace) == {"bot-2-vllm", "bot-gateway"})
            assert gateway_weights(cluster, namespace) == {"2": 100}
    finally:
        events = recorder.stop()
    bad, checked = capacity_violations(events, need=3)
    assert checked > 10 and not bad, f"fewer than 3 ready replicas took traffic at {bad[:5]}"
    # The canary took all the traffic at the 100% step only with three ready replicas of its own.
    assert any(
        kind == "ConfigMap"
        and o["metadata"]["name"] == "bot-gateway"
        and {u["weight"] for u in json.loads(o["data"]["config.json"])["upstreams"]} == {0, 100}
        for _, _, kind, o in events
    )


@pytest.mark.usefixtures("kubeconfig_env")
@pytest.mark.parametrize("prometheus", ["10s"], indirect=True)
def test_a_canary_window_shorter_than_the_scrape_interval_still_reaches_a_verdict(
    cluster: LocalCluster, namespace: str, registry: Path, prometheus: tuple[str, GatewayMetrics]
) -> None:
    """intervalSeconds 10 (the API's least) with monitors that scrape every 10 s: a 10 s window holds
    one sample, never a rate. The operator analyses over four scrape intervals instead, and the canary
    is promoted; a canary that gets no traffic says so in its Ready condition."""
    url, traffic = prometheus
    traffic.set("1", error_ratio=0.0, latency=0.3)
    traffic.set("2", error_ratio=0.0, latency=0.3)
    canary = {
        "model": {"name": "support-bot", "version": "2"},
        "weight": 50,
        "analysis": {"intervalSeconds": 10, "maxErrorRate": 0.05},
    }
    body = deployment("bot", registry, rollout={"canary": canary}, gateway={"replicas": 1})
    settings = ServingSettings(prometheus_url=url, resync_seconds=600, scrape_interval="10s")
    with running_operator(namespace, settings, PrometheusSource(url)):
        apply(cluster, namespace, body)
        md = eventually(
            lambda: (
                (o := get(cluster, "md", "bot", namespace) or {})
                .get("status", {})
                .get("canary", {})
                .get("verdict")
                == "Promoted"
                and o
            ),
            timeout=240,
        )
        assert md["status"]["canary"]["windowSeconds"] == 40

        # Version 3 gets no traffic at all: every window is inconclusive, and Ready says why.
        body["spec"]["model"] = {"name": "support-bot", "version": "2"}
        body["spec"]["rollout"]["canary"]["model"] = {"name": "support-bot", "version": "3"}
        apply(cluster, namespace, body)
        ready = eventually(
            lambda: (
                (c := condition(get(cluster, "md", "bot", namespace), "Ready"))["reason"]
                == "AnalysisInconclusive"
                and c
            ),
            timeout=300,
        )
        assert ready["status"] == "True" and "no requests reached the canary" in ready["message"]


@pytest.mark.usefixtures("kubeconfig_env")
def test_handing_replicas_to_an_autoscaler_keeps_the_running_replicas(
    cluster: LocalCluster, namespace: str, registry: Path
) -> None:
    """min = max = 3 (fixed replicas, ours) -> max 5 (an HPA's): the Deployment's replicas never
    drop below 3 on the way, and the HPA is then their only writer. And back."""
    body = deployment(
        "bot",
        registry,
        autoscaling={"engine": "hpa", "minReplicas": 3, "maxReplicas": 3},
        gateway={"replicas": 1},
    )
    with running_operator(namespace, ServingSettings(resync_seconds=600)):
        apply(cluster, namespace, body)
        cluster.kubectl("wait", "md/bot", "-n", namespace, "--for=condition=Ready", "--timeout=90s")
        assert get(cluster, "deployment", "bot-1-vllm", namespace)["spec"]["replicas"] == 3  # type: ignore[index]
        recorder = Recorder(cluster.kubeconfig, namespace, "Deployment", "HorizontalPodAutoscaler")
        try:
            body["spec"]["autoscaling"]["maxReplicas"] = 5
            apply(cluster, namespace, body)
            eventually(lambda: "bot-1-vllm" in names(cluster, "horizontalpodautoscalers", namespace))
            cluster.kubectl("wait", "md/bot", "-n", namespace, "--for=condition=Ready", "--timeout=90s")
            live = json.loads(
                cluster.kubectl(
                    "get", "deployment", "bot-1-vllm", "-n", namespace, "-o", "json", "--show-managed-fields"
                ).stdout
            )
            managers = {
                m["manager"]
                for m in live["metadata"]["managedFields"]
                if "f:replicas" in m.get("fieldsV1", {}).get("f:spec", {})
            }  # type: ignore[index]
            assert "llmops" not in managers, managers  # the operator no longer applies replicas
            # Back to fixed replicas: the operator owns them again and the HPA goes.
            body["spec"]["autoscaling"]["maxReplicas"] = 3
            apply(cluster, namespace, body)
            eventually(lambda: not names(cluster, "horizontalpodautoscalers", namespace))
        finally:
            events = recorder.stop()
    replicas = [
        (rv, o["spec"].get("replicas"))
        for rv, type_, kind, o in events
        if kind == "Deployment" and o["metadata"]["name"] == "bot-1-vllm" and type_ != "DELETED"
    ]
    assert replicas and all(r is not None and r >= 3 for _, r in replicas), replicas


@pytest.mark.usefixtures("kubeconfig_env")
def test_switching_the_autoscaler_engine_removes_the_old_one_first(
    cluster: LocalCluster, namespace: str, registry: Path
) -> None:
    """hpa -> keda -> hpa on a Ready ModelDeployment. KEDA's admission webhook (not running here)
    refuses a ScaledObject for a Deployment an HPA scales: the apiserver's order of events shows the
    HPA gone before the ScaledObject is created, and the other way round; the object ends Ready."""
    body = deployment(
        "bot",
        registry,
        autoscaling={"engine": "hpa", "minReplicas": 1, "maxReplicas": 3},
        gateway={"replicas": 1},
    )
    with running_operator(namespace, ServingSettings(resync_seconds=600)):
        apply(cluster, namespace, body)
        cluster.kubectl("wait", "md/bot", "-n", namespace, "--for=condition=Ready", "--timeout=90s")
        assert names(cluster, "horizontalpodautoscalers", namespace) == {"bot-1-vllm"}
        recorder = Recorder(cluster.kubeconfig, namespace, "HorizontalPodAutoscaler", "ScaledObject")
        try:
            time.sleep(1)  # the watches are open
            for engine, kind in (("keda", "scaledobjects"), ("hpa", "horizontalpodautoscalers")):
                body["spec"]["autoscaling"]["engine"] = engine
                apply(cluster, namespace, body)
                eventually(lambda kind=kind: names(cluster, kind, namespace) == {"bot-1-vllm"})
                cluster.kubectl("wait", "md/bot", "-n", namespace, "--for=condition=Ready", "--timeout=90s")
        finally:
            events = recorder.stop()
    order = [(kind, type_) for _, type_, kind, _ in events if type_ in ("ADDED", "DELETED")]
    hpa_gone = order.index(("HorizontalPodAutoscaler", "DELETED"))
    so_made = order.index(("ScaledObject", "ADDED"))
    assert hpa_gone < so_made, order
    so_gone = order.index(("ScaledObject", "DELETED"))
    hpa_made = next(
        i for i, e in enumerate(order) if e == ("HorizontalPodAutoscaler", "ADDED") and i > so_made
    )
    assert so_gone < hpa_made, order


CHILD_KINDS = [
    ("deployment", "bot-1-vllm"),
    ("deployment", "bot-gateway"),
    ("service", "bot-1-vllm"),
    ("service", "bot-gateway"),
    ("configmap", "bot-gateway"),
    ("configmap", "bot-dashboard"),
    ("scaledobject", "bot-1-vllm"),
    ("networkpolicy", "bot-default-deny"),
    ("poddisruptionbudget", "bot-vllm"),
    ("podmonitor", "bot-vllm"),
    ("servicemonitor", "bot-gateway"),
    ("prometheusrule", "bot-slo"),
]


@pytest.mark.usefixtures("kubeconfig_env")
def test_every_child_deleted_by_hand_comes_back(
    cluster: LocalCluster, namespace: str, registry: Path
) -> None:
    """Each kind of child of a Ready ModelDeployment, deleted behind the operator's back, is applied
    again by the next reconcile, which its deletion asks for (the resync is 10 minutes away here)."""
    body = deployment(
        "bot",
        registry,
        autoscaling={"minReplicas": 1, "maxReplicas": 3},
        monitoring={"serviceMonitor": True, "alerts": {"p95LatencyMs": 2000}},
        gateway={"replicas": 1},
    )
    with running_operator(namespace, ServingSettings(resync_seconds=600)):
        apply(cluster, namespace, body)
        cluster.kubectl("wait", "md/bot", "-n", namespace, "--for=condition=Ready", "--timeout=90s")
        for kind, name in CHILD_KINDS:
            before = get(cluster, kind, name, namespace)
            assert before is not None, (kind, name)
            cluster.kubectl("delete", kind, name, "-n", namespace)
            eventually(
                lambda kind=kind, name=name, uid=before["metadata"]["uid"]: (
                    (o := get(cluster, kind, name, namespace)) is not None and o["metadata"]["uid"] != uid
                ),
                timeout=30,
            )
        cluster.kubectl("wait", "md/bot", "-n", namespace, "--for=condition=Ready", "--timeout=90s")


@pytest.mark.usefixtures("kubeconfig_env")
def test_the_scale_to_zero_example_as_written_gets_the_monitors_its_scaler_reads(
    cluster: LocalCluster, namespace: str, tmp_path: Path
) -> None:
    """examples/modeldeployment-scale-to-zero.yaml leaves monitoring.serviceMonitor off. Its KEDA
    triggers read vLLM's queue and the gateway's pending requests: the monitors that scrape those
    exist and select the pods and Service that export them. (Only the registry is pointed at a local
    one holding the version; everything else is as shipped.)"""
    example = yaml.safe_load(
        (Path(__file__).parents[2] / "examples/modeldeployment-scale-to-zero.yaml").read_text()
    )
    assert not example["spec"].get("monitoring", {}).get("serviceMonitor")
    root = tmp_path / "registry"
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    store = LocalStore(root)
    name = example["spec"]["model"]["name"]
    gates = [GateVerdict(metric="accuracy", operator=">=", threshold=0.5, value=0.9, passed=True)]
    version = register(store, name, model, metrics={"accuracy": 0.9}, gates=gates, lineage=Lineage())
    set_alias(store, name, example["spec"]["model"]["alias"], version.version)
    example["spec"]["registry"] = {"local": {"path": str(root)}}
    md = example["metadata"]["name"]
    with running_operator(namespace, ServingSettings(resync_seconds=600)):
        apply(cluster, namespace, example)
        # Its pods ask for an NVIDIA-L4, which no fake node has: they stay Pending, which is enough here.
        scaled = eventually(lambda: get(cluster, "scaledobject", f"{md}-{version.version}-vllm", namespace))
        eventually(lambda: len(names(cluster, "networkpolicies", namespace)) == 3)  # applied after monitors
        queries = " ".join(t["metadata"]["query"] for t in scaled["spec"]["triggers"])
        assert "vllm:num_requests_waiting" in queries and "llmops_gateway_pending_requests" in queries

        def selected(kind: str, selector: dict) -> list[dict]:
            labels = ",".join(f"{k}={v}" for k, v in selector["matchLabels"].items())
            out = cluster.kubectl("get", kind, "-n", namespace, "-l", labels, "-o", "json")
            return json.loads(out.stdout)["items"]

        pod_monitor = get(cluster, "podmonitor", f"{md}-vllm", namespace)
        assert pod_monitor is not None, "vLLM's queue (the scaler's trigger) is not scraped"
        pods = selected("pods", pod_monitor["spec"]["selector"])
        assert pods and all(
            p["metadata"]["labels"]["app.kubernetes.io/component"] == "model-server" for p in pods
        )
        service_monitor = get(cluster, "servicemonitor", f"{md}-gateway", namespace)
        assert service_monitor is not None, "the gateway's pending requests (what wakes it) are not scraped"
        assert [s["metadata"]["name"] for s in selected("services", service_monitor["spec"]["selector"])] == [
            f"{md}-gateway"
        ]


@pytest.mark.usefixtures("kubeconfig_env")
def test_a_replaced_autoscaler_held_by_a_finalizer_is_waited_for(
    cluster: LocalCluster, namespace: str, registry: Path
) -> None:
    """keda -> hpa while the ScaledObject carries a finalizer (KEDA's own, which removes its HPA
    first; put there by hand, as KEDA does not run here): no HPA is created while the ScaledObject is
    still there, the object says what it waits for, and once it is gone the HPA follows."""
    body = deployment(
        "bot", registry, autoscaling={"minReplicas": 1, "maxReplicas": 3}, gateway={"replicas": 1}
    )
    with running_operator(namespace, ServingSettings(resync_seconds=600)):
        apply(cluster, namespace, body)
        cluster.kubectl("wait", "md/bot", "-n", namespace, "--for=condition=Ready", "--timeout=90s")
        patch = json.dumps({"metadata": {"finalizers": ["finalizer.keda.sh"]}})
        cluster.kubectl("patch", "scaledobject", "bot-1-vllm", "-n", namespace, "--type=merge", "-p", patch)
        body["spec"]["autoscaling"]["engine"] = "hpa"
        apply(cluster, namespace, body)
        md = eventually(
            lambda: (o := get(cluster, "md", "bot", namespace))["status"]["observedGeneration"] == 2 and o
        )
        assert "ScaledObject/bot-1-vllm to be deleted" in condition(md, "Reconciling")["message"]
        assert get(cluster, "scaledobject", "bot-1-vllm", namespace)["metadata"]["deletionTimestamp"]  # type: ignore[index]
        assert not names(cluster, "horizontalpodautoscalers", namespace)
        cluster.kubectl(
            "patch",
            "scaledobject",
            "bot-1-vllm",
            "-n",
            namespace,
            "--type=merge",
            "-p",
            '{"metadata": {"finalizers": null}}',
        )
        eventually(
            lambda: names(cluster, "horizontalpodautoscalers", namespace) == {"bot-1-vllm"}, timeout=30
        )
        cluster.kubectl("wait", "md/bot", "-n", namespace, "--for=condition=Ready", "--timeout=90s")
