"""Helpers of the ModelDeployment operator's tests on the real control plane (see conftest.py for
the fixtures): reading objects back, a gateway-shaped exporter, an operator in a thread."""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from llmops.dev.cluster import LocalCluster, free_port
from llmops.dev.tools import binary
from llmops.operators.modeldeployment import make_kind
from llmops.operators.modeldeployment.plan import ServingSettings
from tests.helpers import operator_in_thread

GOLDEN = Path(__file__).parents[2] / "unit" / "golden" / "modeldeployment"


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
        # What the gateway's POST /v1/feedback counts (llmops/serving/metrics.py), for RetrainPolicy tests.
        self.feedback = Counter(
            "llmops_gateway_feedback", "", ["version", "name", "sentiment"], registry=self.registry
        )
        # What a suspended gateway's drain is read from (llmops/serving/metrics.py), for suspend tests.
        self.suspended = Gauge("llmops_gateway_suspended", "", registry=self.registry)
        self.inflight = Gauge("llmops_gateway_inflight_requests", "", ["version"], registry=self.registry)
        # What the usage report counts replicas by (llmops/operators/modeldeployment/usage.py).
        self.ready = Gauge("llmops_gateway_ready_replicas", "", ["version"], registry=self.registry)
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


def running_operator(namespace: str, settings: ServingSettings, metrics=None):
    """The real operator (the shared runtime, our ModelDeployment kind) in a thread of this process."""
    return operator_in_thread(namespace, [make_kind(settings, metrics)])


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


def gateway_weights(cluster: LocalCluster, namespace: str, md: str = "bot") -> dict[str, int]:
    cm = get(cluster, "configmap", f"{md}-gateway", namespace) or {"data": {"config.json": "{}"}}
    return {u["version"]: u["weight"] for u in json.loads(cm["data"]["config.json"]).get("upstreams", [])}


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
