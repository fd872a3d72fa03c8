"""Monitoring children of a ModelDeployment (pure): scrape configs, SLO alerts, a Grafana dashboard.

Series are selected by `namespace` and `model_deployment`; the monitors below put the pod label
`llmops.io/modeldeployment` into `model_deployment` (and the vLLM pods' `llmops.io/model-version`
into `version`; the gateway labels its own series with `version`). Metric names are the gateway's
(llmops/serving/metrics.py) and vLLM's own.
"""

from __future__ import annotations

import json

from llmops.api.modeldeployment import Alerts, ModelDeploymentSpec
from llmops.operators.manifests import adopt
from llmops.operators.modeldeployment import usage
from llmops.operators.modeldeployment.autoscaling import targets
from llmops.operators.modeldeployment.names import child_name, gateway_name
from llmops.operators.modeldeployment.plan import ServingSettings

REQUESTS = "llmops_gateway_requests_total"
LATENCY = "llmops_gateway_request_duration_seconds"
TTFT = "llmops_gateway_time_to_first_token_seconds"
PENDING = "llmops_gateway_pending_requests"
DRIFT = "llmops_drift_score"
FEEDBACK = "llmops_gateway_feedback_total"  # by version, name, sentiment (llmops/serving/feedback.py)
QUEUE = "vllm:num_requests_waiting"
ERROR_CODES = "5.."  # backpressure (429) and client errors are not the service failing
RATE_WINDOW = "5m"


def selector(namespace: str, name: str, *matchers: str) -> str:
    return "{" + ",".join([f'namespace="{namespace}"', f'model_deployment="{name}"', *matchers]) + "}"


def _relabel(pod_label: str, target: str) -> dict:
    source = "__meta_kubernetes_pod_label_" + "".join(c if c.isalnum() else "_" for c in pod_label)
    return {"sourceLabels": [source], "targetLabel": target, "action": "replace"}


def _meta(owner: dict, name: str, component: str, labels: dict[str, str] | None = None) -> dict:
    return {
        "name": name,
        "labels": {
            "app.kubernetes.io/name": "llmops-monitoring",
            "app.kubernetes.io/part-of": "llmops",
            "app.kubernetes.io/component": component,
            **(labels or {}),
        },
    }


def _pod_monitor(
    owner: dict, settings: ServingSettings, name: str, component: str, port: str, labels: dict
) -> dict:
    """A PodMonitor for one component's pods; `labels` maps pod labels to the series' labels."""
    md = owner["metadata"]["name"]
    return adopt(
        {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "PodMonitor",
            "metadata": _meta(owner, name, "monitoring", dict(settings.monitor_labels)),
            "spec": {
                "selector": {
                    "matchLabels": {"llmops.io/modeldeployment": md, "app.kubernetes.io/component": component}
                },
                "podMetricsEndpoints": [
                    {
                        "port": port,
                        "path": "/metrics",
                        "interval": settings.scrape_interval,
                        "relabelings": [_relabel(label, target) for label, target in labels.items()],
                    }
                ],
            },
        },
        owner,
    )


def pod_monitor(owner: dict, settings: ServingSettings) -> dict:
    """vLLM's own metrics, per version."""
    name = child_name(owner["metadata"]["name"], "vllm")
    labels = {"llmops.io/modeldeployment": "model_deployment", "llmops.io/model-version": "version"}
    return _pod_monitor(owner, settings, name, "model-server", "http", labels)


def drift_pod_monitor(owner: dict, settings: ServingSettings) -> dict:
    """The drift monitor's `llmops_drift_*`, labelled like the rest with model_deployment."""
    name = child_name(owner["metadata"]["name"], "drift")
    labels = {"llmops.io/modeldeployment": "model_deployment"}
    return _pod_monitor(owner, settings, name, "drift-monitor", "metrics", labels)


def service_monitor(owner: dict, settings: ServingSettings, tls_secret: str | None = None) -> dict:
    """The gateway's ServiceMonitor; with `tls_secret` (spec.gateway.tls), scraped over HTTPS, the
    certificate checked against the Secret's `ca.crt` for the Service's name."""
    md = owner["metadata"]["name"]
    endpoint: dict = {
        "port": "http",
        "path": "/metrics",
        "interval": settings.scrape_interval,
        "relabelings": [_relabel("llmops.io/modeldeployment", "model_deployment")],
    }
    if tls_secret is not None:
        endpoint["port"] = "https"
        endpoint["scheme"] = "https"
        endpoint["tlsConfig"] = {
            "ca": {"secret": {"name": tls_secret, "key": "ca.crt"}},
            "serverName": f"{gateway_name(md)}.{owner['metadata']['namespace']}.svc",
        }
    return adopt(
        {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "ServiceMonitor",
            "metadata": _meta(owner, gateway_name(md), "monitoring", dict(settings.monitor_labels)),
            "spec": {
                "selector": {
                    "matchLabels": {"llmops.io/modeldeployment": md, "app.kubernetes.io/component": "gateway"}
                },
                "endpoints": [endpoint],
            },
        },
        owner,
    )


def alert_rules(alerts: Alerts, namespace: str, name: str) -> list[dict]:
    """One Prometheus alerting rule per threshold set in `spec.monitoring.alerts`."""
    sel = selector(namespace, name)
    errors = selector(namespace, name, f'code=~"{ERROR_CODES}"')
    labels = {"namespace": namespace, "model_deployment": name}
    where = f"ModelDeployment {namespace}/{name}"
    rules = []
    if alerts.p95_latency_ms is not None:
        seconds = alerts.p95_latency_ms / 1000
        rules.append(
            {
                "alert": "LLMOpsLatencyP95High",
                "expr": f"histogram_quantile(0.95, sum by (le) (rate({LATENCY}_bucket{sel}[{RATE_WINDOW}])))"
                f" > {seconds:g}",
                "for": "5m",
                "labels": {**labels, "severity": "warning"},
                "annotations": {
                    "summary": f"{where}: p95 latency above {alerts.p95_latency_ms} ms",
                    "description": "p95 request latency at the gateway is {{ $value | humanizeDuration }}"
                    f" (SLO {alerts.p95_latency_ms} ms) for 5 minutes. Check replica saturation"
                    " (vllm:num_requests_waiting) and autoscaling limits.",
                },
            }
        )
    if alerts.max_error_rate is not None:
        rules.append(
            {
                "alert": "LLMOpsErrorRateHigh",
                "expr": f"sum(rate({REQUESTS}{errors}[{RATE_WINDOW}]))"
                f" / sum(rate({REQUESTS}{sel}[{RATE_WINDOW}])) > {alerts.max_error_rate:g}",
                "for": "5m",
                "labels": {**labels, "severity": "critical"},
                "annotations": {
                    "summary": f"{where}: error rate above {alerts.max_error_rate:.2%}",
                    "description": "{{ $value | humanizePercentage }} of requests failed (5xx) over 5 minutes"
                    f" (SLO {alerts.max_error_rate:.2%}). See the gateway's llmops_gateway_errors_total"
                    " by reason.",
                },
            }
        )
    if alerts.max_queue_depth is not None:
        rules.append(
            {
                "alert": "LLMOpsQueueSaturated",
                "expr": f"sum({QUEUE}{sel}) > {alerts.max_queue_depth}",
                "for": "5m",
                "labels": {**labels, "severity": "warning"},
                "annotations": {
                    "summary": f"{where}: more than {alerts.max_queue_depth} requests waiting in vLLM",
                    "description": "{{ $value }} requests wait in vLLM's queues for 5 minutes: the replicas"
                    " are saturated. Raise autoscaling.maxReplicas or lower the target queue depth.",
                },
            }
        )
    if alerts.max_drift_score is not None:
        rules.append(
            {
                "alert": "LLMOpsDriftDetected",
                "expr": f"max({DRIFT}{sel}) > {alerts.max_drift_score:g}",
                "for": "15m",
                "labels": {**labels, "severity": "warning"},
                "annotations": {
                    "summary": f"{where}: prompt drift score above {alerts.max_drift_score:g}",
                    "description": "Live prompts differ from the reference data (drift score {{ $value }})"
                    " for 15 minutes. Review recent traffic, and retrain on newer data (a TrainingJob)"
                    " if the change is lasting.",
                },
            }
        )
    return rules


def rule_groups(alerts: Alerts, namespace: str, name: str) -> list[dict]:
    return [
        {"name": f"llmops.modeldeployment.{namespace}.{name}", "rules": alert_rules(alerts, namespace, name)}
    ]


def prometheus_rule(spec: ModelDeploymentSpec, owner: dict, settings: ServingSettings) -> dict | None:
    alerts = spec.monitoring.alerts
    meta = owner["metadata"]
    if alerts is None or not alert_rules(alerts, meta["namespace"], meta["name"]):
        return None
    return adopt(
        {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "PrometheusRule",
            "metadata": _meta(
                owner, child_name(meta["name"], "slo"), "alerts", dict(settings.monitor_labels)
            ),
            "spec": {"groups": rule_groups(alerts, meta["namespace"], meta["name"])},
        },
        owner,
    )


def _panel(index: int, title: str, targets: list[tuple[str, str]], unit: str) -> dict:
    return {
        "id": index + 1,
        "type": "timeseries",
        "title": title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 12, "x": 12 * (index % 2), "y": 8 * (index // 2)},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [
            {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(targets)
        ],
    }


def usage_row(spec: ModelDeploymentSpec, namespace: str, name: str, first_id: int, y: int) -> list[dict]:
    """The "Usage and right-sizing" row: the usage report's queries (usage.queries) over time, so the
    panels show what `llmops report usage` sums. GPUs per replica and the autoscaler's targets come
    from the spec; without GPUs the GPU figures are per replica instead."""
    q = usage.queries(selector(namespace, name))
    gpus = spec.resources.gpus
    replicas = f"sum({q.replicas})"
    w = RATE_WINDOW
    tokens = f"(sum(rate({q.prompt_tokens}[{w}])) + sum(rate({q.generation_tokens}[{w}])))"
    per = "GPU" if gpus else "replica"
    queue, kv = targets(spec)
    signals = []
    if queue is not None:
        signals += [
            (f"{q.waiting} / {replicas}", "waiting per replica"),
            (f"vector({queue:g})", "queue target"),
        ]
    if kv is not None:
        signals += [
            (f"sum({q.kv_cache}) / {replicas}", "KV-cache use per replica"),
            (f"vector({kv:g})", "KV target"),
        ]
    scale = f" * {gpus}" if gpus else ""
    capacity = [(replicas, "replicas")] + ([(f"{replicas}{scale}", "GPUs")] if gpus else [])
    hours = f"sum_over_time(({replicas})[$__range:1m]) / 60{scale}"
    panels = [
        (
            f"{'GPU' if gpus else 'Replica'}-hours in the time range",
            "stat",
            [(hours, f"{per}-hours")],
            "short",
        ),
        ("Replicas and GPUs", "timeseries", capacity, "short"),
        (
            f"Tokens per {per}-second",
            "timeseries",
            [(f"{tokens} / ({replicas}{scale})", f"tokens per {per}-second")],
            "short",
        ),
        (
            "KV-cache use (mean, peak)",
            "timeseries",
            [(f"avg({q.kv_cache})", "mean"), (f"max({q.kv_cache})", "peak")],
            "percentunit",
        ),
        ("Autoscaler signal per replica and its target", "timeseries", signals, "short"),
        (
            "Running requests per replica",
            "timeseries",
            [(f"{q.running} / {replicas}", "running per replica")],
            "short",
        ),
    ]
    row = {
        "id": first_id,
        "type": "row",
        "title": "Usage and right-sizing",
        "collapsed": False,
        "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
        "panels": [],
    }
    out = [row]
    for i, (title, kind, queries, unit) in enumerate(panels):
        panel = _panel(i, title, queries, unit)
        panel["id"] = first_id + 1 + i
        panel["type"] = kind
        panel["gridPos"]["y"] += y + 1
        out.append(panel)
    return out


def dashboard(namespace: str, name: str, spec: ModelDeploymentSpec) -> dict:
    """A Grafana dashboard of one ModelDeployment: traffic, latency, errors, vLLM load, drift, feedback;
    then the usage row (`usage_row`)."""
    sel = selector(namespace, name)
    errors = selector(namespace, name, f'code=~"{ERROR_CODES}"')
    w = RATE_WINDOW
    panels = [
        ("Requests per second", [(f"sum by (version) (rate({REQUESTS}{sel}[{w}]))", "{{version}}")], "reqps"),
        (
            "Error ratio (5xx)",
            [
                (
                    f"sum by (version) (rate({REQUESTS}{errors}[{w}]))"
                    f" / sum by (version) (rate({REQUESTS}{sel}[{w}]))",
                    "{{version}}",
                )
            ],
            "percentunit",
        ),
        (
            "Latency p50 / p95",
            [
                (
                    f"histogram_quantile({q}, sum by (le, version) (rate({LATENCY}_bucket{sel}[{w}])))",
                    f"p{p} {{{{version}}}}",
                )
                for q, p in (("0.5", "50"), ("0.95", "95"))
            ],
            "s",
        ),
        (
            "Time to first token p95",
            [
                (
                    f"histogram_quantile(0.95, sum by (le, version) (rate({TTFT}_bucket{sel}[{w}])))",
                    "{{version}}",
                )
            ],
            "s",
        ),
        (
            "vLLM requests waiting / running",
            [
                (f"sum by (version) ({QUEUE}{sel})", "waiting {{version}}"),
                (f"sum by (version) (vllm:num_requests_running{sel})", "running {{version}}"),
                (f"sum({PENDING}{sel})", "held by the gateway"),
            ],
            "short",
        ),
        (
            "KV-cache use",
            [
                (
                    f"avg by (version) (vllm:kv_cache_usage_perc{sel} or vllm:gpu_cache_usage_perc{sel})",
                    "{{version}}",
                )
            ],
            "percentunit",
        ),
        (
            "Tokens per second",
            [
                (f"sum(rate(llmops_gateway_prompt_tokens_total{sel}[{w}]))", "prompt"),
                (f"sum(rate(llmops_gateway_completion_tokens_total{sel}[{w}]))", "completion"),
            ],
            "short",
        ),
        (
            "Ready replicas and traffic weight",
            [
                (f"max by (version) (llmops_gateway_ready_replicas{sel})", "ready {{version}}"),
                (f"max by (version) (llmops_gateway_weight{sel})", "weight {{version}}"),
            ],
            "short",
        ),
        ("Drift score", [(f"max({DRIFT}{sel})", "drift")], "short"),
        (
            "User feedback per hour, by version and sentiment",
            [(f"sum by (version, sentiment) (increase({FEEDBACK}{sel}[1h]))", "{{sentiment}} {{version}}")],
            "short",
        ),
    ]
    return {
        "title": f"llmops / {namespace} / {name}",
        "uid": f"llmops-{namespace}-{name}"[:40],
        "tags": ["llmops", "modeldeployment"],
        "schemaVersion": 39,
        "timezone": "browser",
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"}
            ]
        },
        "panels": [
            *(_panel(i, title, queries, unit) for i, (title, queries, unit) in enumerate(panels)),
            *usage_row(spec, namespace, name, first_id=len(panels) + 1, y=8 * ((len(panels) + 1) // 2)),
        ],
    }


def dashboard_configmap(spec: ModelDeploymentSpec, owner: dict) -> dict:
    meta = owner["metadata"]
    return adopt(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            # grafana_dashboard: "1" is what Grafana's dashboard sidecar (kube-prometheus-stack) looks for.
            "metadata": _meta(
                owner, child_name(meta["name"], "dashboard"), "dashboard", {"grafana_dashboard": "1"}
            ),
            "data": {
                f"llmops-{meta['name']}.json": json.dumps(
                    dashboard(meta["namespace"], meta["name"], spec), indent=1
                )
            },
        },
        owner,
    )


def scraped(spec: ModelDeploymentSpec) -> dict[str, list[str]]:
    """Which monitors the spec needs, each with the features that read its series.

    "vllm" (PodMonitor of the model servers, vllm:*): autoscaling (KEDA's and the HPA's queries), the
    queue alert. "gateway" (ServiceMonitor, llmops_gateway_*): scale to zero (the pending requests that
    wake a version), canary analysis, the latency and error alerts. "drift" (PodMonitor,
    llmops_drift_*): the drift alert. `monitoring.serviceMonitor` asks for all of them (and the
    dashboard) for people to look at; the features get theirs whatever it says, so none of them waits
    forever on series nobody scrapes.
    """
    a, alerts = spec.autoscaling, spec.monitoring.alerts
    drift = spec.monitoring.drift is not None and spec.monitoring.drift.enabled
    everything = spec.monitoring.service_monitor
    needs: dict[str, list[str]] = {"vllm": [], "gateway": [], "drift": []}
    if everything:
        for key in needs:
            needs[key].append("monitoring.serviceMonitor")
    if a.scale_to_zero or a.min_replicas < a.max_replicas:
        needs["vllm"].append("autoscaling")
    if a.scale_to_zero:
        needs["gateway"].append("autoscaling.scaleToZero")
    if spec.rollout and spec.rollout.canary:
        needs["gateway"].append("rollout.canary.analysis")
    if alerts is not None:
        if alerts.max_queue_depth is not None:
            needs["vllm"].append("monitoring.alerts.maxQueueDepth")
        if alerts.p95_latency_ms is not None or alerts.max_error_rate is not None:
            needs["gateway"].append("monitoring.alerts")
        if alerts.max_drift_score is not None:
            needs["drift"].append("monitoring.alerts.maxDriftScore")
    if not drift:
        needs["drift"] = []
    return {key: features for key, features in needs.items() if features}


def children(spec: ModelDeploymentSpec, owner: dict, settings: ServingSettings) -> list[dict]:
    needs = scraped(spec)
    out = []
    if "vllm" in needs:
        out.append(pod_monitor(owner, settings))
    if "gateway" in needs:
        tls = spec.gateway.tls
        out.append(service_monitor(owner, settings, tls.secret_name if tls is not None else None))
    if spec.monitoring.service_monitor:
        out.append(dashboard_configmap(spec, owner))
    if "drift" in needs:
        out.append(drift_pod_monitor(owner, settings))
    rule = prometheus_rule(spec, owner, settings)
    if rule is not None:
        out.append(rule)
    return out
