"""What a cluster's Prometheus would scrape, for workloads that run here as local processes (pure).

`llmops dev serve` runs a ModelDeployment's pods as local processes. Which of them Prometheus
scrapes, on which path, and with which labels comes from the monitors the operator created, read
back from the cluster, the way prometheus-operator turns a PodMonitor or ServiceMonitor into
scrape targets: the monitor selects pods (or Services, then their pods) by label, an endpoint
names a port, and relabelings turn pod labels into series labels. So a metric the product does
not scrape in a cluster is not scraped here either, and every series carries the labels
(`namespace`, `model_deployment`, `version`, ...) that the product's alerts, KEDA triggers and
dashboards select on.

Target labels follow prometheus-operator: `namespace`, `pod`, `container`, `endpoint`, `job`
(`<namespace>/<monitor>` for a PodMonitor, the Service's name for a ServiceMonitor) and `service`
for a ServiceMonitor. Relabelings support the actions `replace` (the default), `keep` and `drop`
with Prometheus's defaults (separator `;`, regex `(.*)` anchored at both ends, replacement `$1`).
Reference: prometheus-operator API, `PodMonitor`/`ServiceMonitor` and `RelabelConfig`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class LocalPod:
    """One pod of a Deployment that runs here as a process: its labels and its ports' addresses."""

    namespace: str
    name: str
    container: str
    labels: dict[str, str]
    ports: dict[str, str] = field(default_factory=dict)  # container port name -> "host:port"


def local_pod(namespace: str, deployment: dict, container: str, address: str) -> LocalPod:
    """A Deployment's pod as run here by one process at `address`: the template's labels, and each
    named port of `container` at that address."""
    template = deployment["spec"]["template"]
    spec = next(c for c in template["spec"]["containers"] if c["name"] == container)
    ports = {p["name"]: address for p in spec.get("ports", []) if p.get("name")}
    name = f"{deployment['metadata']['name']}-local"
    return LocalPod(namespace, name, container, dict(template["metadata"].get("labels") or {}), ports)


class UnsupportedMonitor(ValueError):
    """A monitor uses something this local translation cannot reproduce; the message names it."""


def _matches(selector: dict, labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        ok = {
            "In": labels.get(key) in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }.get(op)
        if ok is None:
            raise UnsupportedMonitor(f"selector operator {op!r}")
        if not ok:
            return False
    return True


def _meta(pod: LocalPod) -> dict[str, str]:
    """Kubernetes service-discovery labels of a pod (`__meta_kubernetes_pod_label_<name>`)."""
    sanitize = lambda name: re.sub(r"[^a-zA-Z0-9_]", "_", name)  # noqa: E731 - Prometheus's rule
    return {f"__meta_kubernetes_pod_label_{sanitize(k)}": v for k, v in pod.labels.items()}


def relabel(labels: dict[str, str], rules: list[dict]) -> dict[str, str] | None:
    """Apply relabelings in order; None when a `keep`/`drop` rule discards the target."""
    out = dict(labels)
    for rule in rules:
        action = (rule.get("action") or "replace").lower()
        value = (rule.get("separator") or ";").join(out.get(s, "") for s in rule.get("sourceLabels") or [])
        regex = re.compile(rf"^(?:{rule.get('regex') or '(.*)'})$")
        match = regex.match(value)
        if action == "keep" and not match:
            return None
        if action == "drop" and match:
            return None
        if action == "replace":
            if match and rule.get("targetLabel"):
                replacement = re.sub(r"\$\{?(\d+)\}?", r"\\\1", rule.get("replacement", "$1"))
                result = match.expand(replacement)
                if result:
                    out[rule["targetLabel"]] = result
                else:
                    out.pop(rule["targetLabel"], None)
        elif action not in ("keep", "drop"):
            raise UnsupportedMonitor(f"relabeling action {action!r}")
    return out


def _group(pod: LocalPod, port: str, endpoint: dict, labels: dict[str, str]) -> dict | None:
    base = {
        **_meta(pod),
        **labels,
        "namespace": pod.namespace,
        "pod": pod.name,
        "container": pod.container,
        "endpoint": port,
        "__metrics_path__": endpoint.get("path") or "/metrics",
    }
    final = relabel(base, endpoint.get("relabelings") or [])
    if final is None:
        return None
    kept = {k: v for k, v in final.items() if not k.startswith("__meta_")}
    return {"targets": [pod.ports[port]], "labels": kept}


def scrape_groups(monitors: list[dict], services: list[dict], pods: list[LocalPod]) -> list[dict]:
    """File-based service-discovery groups (`[{"targets": [...], "labels": {...}}]`) for the pods.

    `monitors` are PodMonitor and ServiceMonitor objects, `services` the Services a ServiceMonitor
    may select, both as read from the API server.
    """
    groups: list[dict] = []
    for monitor in monitors:
        ns, name = monitor["metadata"]["namespace"], monitor["metadata"]["name"]
        spec = monitor.get("spec") or {}
        if monitor["kind"] == "PodMonitor":
            for pod in pods:
                if pod.namespace != ns or not _matches(spec.get("selector") or {}, pod.labels):
                    continue
                for endpoint in spec.get("podMetricsEndpoints") or []:
                    port = endpoint.get("port")
                    if port in pod.ports and (g := _group(pod, port, endpoint, {"job": f"{ns}/{name}"})):
                        groups.append(g)
        elif monitor["kind"] == "ServiceMonitor":
            for svc in services:
                meta, pod_selector = svc["metadata"], svc["spec"].get("selector")
                if meta["namespace"] != ns or not pod_selector:
                    continue
                if not _matches(spec.get("selector") or {}, meta.get("labels") or {}):
                    continue
                for endpoint in spec.get("endpoints") or []:
                    ports = [
                        p for p in svc["spec"].get("ports") or [] if p.get("name") == endpoint.get("port")
                    ]
                    for svc_port in ports:
                        target = svc_port.get("targetPort", svc_port["port"])
                        for pod in pods:
                            if pod.namespace != ns or not _matches({"matchLabels": pod_selector}, pod.labels):
                                continue
                            if isinstance(target, str) and target in pod.ports:
                                labels = {"job": meta["name"], "service": meta["name"]}
                                if g := _group(pod, target, {**endpoint}, labels):
                                    g["labels"]["endpoint"] = endpoint["port"]
                                    groups.append(g)
    return groups
