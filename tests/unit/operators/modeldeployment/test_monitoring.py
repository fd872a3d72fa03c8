"""Monitors, dashboard and alerts (llmops/operators/modeldeployment/monitoring.py); the alerts also under
promtool's own unit tests (deploy/monitoring/modeldeployment-rules.test.yaml).
"""

from __future__ import annotations

import json
import subprocess

import yaml

from llmops.api.modeldeployment import (
    ModelDeploymentSpec,
)
from llmops.dev.tools import binary
from llmops.operators.modeldeployment import canary, monitoring, usage
from llmops.operators.modeldeployment.builders import build
from tests.unit.operators.modeldeployment.cases import (
    CASES,
    ROOT,
    SETTINGS,
    UPDATE,
    case,
    objects,
    owner,
)

PROMTOOL = binary("promtool")  # built from the Go module proxy (hack/tools/prometheus)


MONITORING = ROOT / "deploy" / "monitoring"


RULES_FILE = MONITORING / "modeldeployment-rules.yaml"


RULES_TEST = MONITORING / "modeldeployment-rules.test.yaml"


ALERTED = ModelDeploymentSpec.model_validate(
    {
        "model": {"name": "support-bot", "version": "3"},
        "registry": {"local": {"path": "/registry"}},
        "monitoring": {
            "alerts": {"p95LatencyMs": 2000, "maxErrorRate": 0.05, "maxQueueDepth": 10, "maxDriftScore": 0.3}
        },
    }
)


def test_monitoring_children() -> None:
    objs = objects("canary")
    pm = objs[("PodMonitor", "support-bot-canary-vllm")]["spec"]["podMetricsEndpoints"][0]
    assert {r["targetLabel"] for r in pm["relabelings"]} == {"model_deployment", "version"}
    dashboard = objs[("ConfigMap", "support-bot-canary-dashboard")]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    board = json.loads(next(iter(dashboard["data"].values())))
    assert len(board["panels"]) >= 8 and all(p["targets"] for p in board["panels"] if p["type"] != "row")
    rules = objs[("PrometheusRule", "support-bot-canary-slo")]["spec"]["groups"][0]["rules"]
    assert [r["alert"] for r in rules] == [
        "LLMOpsLatencyP95High",
        "LLMOpsErrorRateHigh",
        "LLMOpsQueueSaturated",
        "LLMOpsDriftDetected",
    ]
    # monitoring.serviceMonitor off: the autoscaler still gets the vLLM series it reads, nothing more.
    lora = objects("lora-adapters")
    assert [k for k in lora if k[0] in ("PodMonitor", "ServiceMonitor", "PrometheusRule")] == [
        ("PodMonitor", "support-bot-adapters-vllm")
    ]
    # Scale to zero also reads the gateway's pending requests: its ServiceMonitor too.
    idle = objects("scale-to-zero")
    assert sorted(k for k in idle if k[0] in ("PodMonitor", "ServiceMonitor", "ConfigMap")) == [
        ("ConfigMap", "report-writer-gateway"),
        ("PodMonitor", "report-writer-vllm"),
        ("ServiceMonitor", "report-writer-gateway"),
    ]


def test_every_feature_that_reads_metrics_gets_them_scraped() -> None:
    """Whatever monitoring.serviceMonitor says, each metric a scaler, the canary analysis or an alert
    reads comes from a monitor the builders make (vllm:* from the vLLM PodMonitor, llmops_gateway_*
    from the gateway's ServiceMonitor, llmops_drift_* from the drift monitor's)."""
    sources = {
        "vllm:": "PodMonitor/vllm",
        "llmops_gateway_": "ServiceMonitor/gateway",
        "llmops_drift_": "PodMonitor/drift",
    }
    for name in CASES:
        parent, spec, plan = case(name)
        spec = spec.model_copy(
            update={"monitoring": spec.monitoring.model_copy(update={"service_monitor": False})}
        )
        docs = build(spec, parent, plan, SETTINGS)
        md = parent["metadata"]["name"]
        made = {f"{d['kind']}/{d['metadata']['name'].removeprefix(md + '-')}" for d in docs}
        read = [
            t["metadata"]["query"] for d in docs if d["kind"] == "ScaledObject" for t in d["spec"]["triggers"]
        ]
        read += [
            r["expr"]
            for d in docs
            if d["kind"] == "PrometheusRule"
            for g in d["spec"]["groups"]
            for r in g["rules"]
        ]
        if spec.rollout and spec.rollout.canary:
            read += list(canary.PrometheusSource("http://x").queries("demo", md, "4", 60).values())
        for query in read:
            for prefix, monitor in sources.items():
                if prefix in query:
                    assert monitor in made, f"{name}: {query} reads {prefix}* but no {monitor} is made"


def rules_text() -> str:
    rule = monitoring.prometheus_rule(ALERTED, owner("support-bot", "prod"), SETTINGS)
    assert rule is not None
    header = (
        "# Generated from a ModelDeployment's PrometheusRule by"
        " tests/unit/operators/modeldeployment/test_monitoring.py\n"
    )
    return header + yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False, width=120)


def test_rules_file_is_current() -> None:
    if UPDATE:
        RULES_FILE.write_text(rules_text())
    assert RULES_FILE.read_text() == rules_text(), "regenerate with LLMOPS_UPDATE_GOLDEN=1"


def test_every_alert_has_a_promtool_test() -> None:
    alerts = {r["alert"] for g in yaml.safe_load(RULES_FILE.read_text())["groups"] for r in g["rules"]}
    tests = yaml.safe_load(RULES_TEST.read_text())["tests"]
    tested = {a["alertname"] for t in tests for a in t.get("alert_rule_test", [])}
    assert alerts == tested
    for alert in alerts:  # each is shown firing and shown quiet
        cases = [a for t in tests for a in t.get("alert_rule_test", []) if a["alertname"] == alert]
        assert any(c.get("exp_alerts") for c in cases) and any(not c.get("exp_alerts") for c in cases), alert


def test_alerts_with_promtool() -> None:
    result = subprocess.run(
        [PROMTOOL, "test", "rules", RULES_TEST.name], cwd=MONITORING, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_feedback_on_the_dashboard() -> None:
    """The dashboard shows feedback per version and sentiment (tests/serving/test_serving_feedback.py
    runs the RetrainPolicy's feedback queries on the same series in a real Prometheus)."""
    board = json.loads(
        next(iter(objects("canary")[("ConfigMap", "support-bot-canary-dashboard")]["data"].values()))
    )
    panel = next(p for p in board["panels"] if p["title"].startswith("User feedback"))
    assert panel["targets"][0]["expr"] == (
        'sum by (version, sentiment) (increase(llmops_gateway_feedback_total{namespace="demo",'
        'model_deployment="support-bot-canary"}[1h]))'
    )


def _usage_row(spec: ModelDeploymentSpec) -> dict[str, list[str]]:
    board = monitoring.dashboard("demo", "bot", spec)
    titles = [p["title"] for p in board["panels"]]
    row = titles.index("Usage and right-sizing")
    assert board["panels"][row]["type"] == "row" and row == len(titles) - 7
    ids = [p["id"] for p in board["panels"]]
    assert len(set(ids)) == len(ids)
    return {p["title"]: [t["expr"] for t in p["targets"]] for p in board["panels"][row + 1 :]}


def test_the_usage_row_reads_the_reports_queries(tmp_path) -> None:
    """The dashboard's usage row is built from usage.queries, the PromQL `llmops report usage` reads:
    GPU figures with the spec's GPUs per replica (per replica without GPUs), the autoscaler's targets
    from the spec; promtool parses every expression."""
    q = usage.queries(monitoring.selector("demo", "bot"))
    replicas = f"sum({q.replicas})"
    gpu = ModelDeploymentSpec.model_validate(
        {
            "model": {"name": "bot", "version": "1"},
            "registry": {"local": {"path": "/r"}},
            "resources": {"gpus": 2},
            "autoscaling": {
                "minReplicas": 1,
                "maxReplicas": 4,
                "targetQueueDepth": 3,
                "targetKvCacheUsage": 0.7,
            },
        }
    )
    row = _usage_row(gpu)
    print(f"\nusage row (GPU): {list(row)}")
    assert row["GPU-hours in the time range"] == [f"sum_over_time(({replicas})[$__range:1m]) / 60 * 2"]
    assert row["Replicas and GPUs"] == [replicas, f"{replicas} * 2"]
    tokens = f"(sum(rate({q.prompt_tokens}[5m])) + sum(rate({q.generation_tokens}[5m])))"
    assert row["Tokens per GPU-second"] == [f"{tokens} / ({replicas} * 2)"]
    assert row["KV-cache use (mean, peak)"] == [f"avg({q.kv_cache})", f"max({q.kv_cache})"]
    assert row["Autoscaler signal per replica and its target"] == [
        f"{q.waiting} / {replicas}",
        "vector(3)",
        f"sum({q.kv_cache}) / {replicas}",
        "vector(0.7)",
    ]
    cpu = _usage_row(ALERTED)  # no GPUs, no targets: KEDA's default queue target of 4
    assert cpu["Replica-hours in the time range"] == [f"sum_over_time(({replicas})[$__range:1m]) / 60"]
    assert cpu["Replicas and GPUs"] == [replicas]
    assert cpu["Tokens per replica-second"] == [f"{tokens} / ({replicas})"]
    assert cpu["Autoscaler signal per replica and its target"] == [f"{q.waiting} / {replicas}", "vector(4)"]

    exprs = [e.replace("$__range", "1h") for panel in (row, cpu) for es in panel.values() for e in es]
    rules = {
        "groups": [
            {"name": "usage", "rules": [{"record": f"usage:{i}", "expr": e} for i, e in enumerate(exprs)]}
        ]
    }
    path = tmp_path / "usage-rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
