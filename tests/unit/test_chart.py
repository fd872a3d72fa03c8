"""The Helm chart in charts/llmops: lint, render, least-privilege RBAC, a hardened Deployment.

Rendering only (`helm template`); tests/cluster/test_chart_cluster.py sends the output to a real
apiserver and installs the chart.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmops.dev.tools import binary

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "llmops"
RELEASE, NAMESPACE = "llmops", "llmops-system"
FULL = [
    "--set", "webhook.enabled=true",
    "--set", "metrics.serviceMonitor.enabled=true",
    "--set", "networkPolicy.enabled=true",
    "--set", "watchNamespaces={team-a,team-b}",
]  # fmt: skip
CONFIGS = {"default": [], "full": FULL}

# Namespaced rules, the same in the ClusterRole (all namespaces) and in each per-namespace Role.
CHILD_VERBS = ["get", "list", "watch", "create", "patch", "delete"]
NAMESPACED_RULES = [
    {"apiGroups": ["llmops.io"], "resources": ["retrainpolicies", "modelretirements"],
     "verbs": ["get", "list", "watch", "patch"]},
    {"apiGroups": ["llmops.io"], "resources": ["modeldeployments"],
     "verbs": ["get", "list", "watch", "patch", "delete"]},
    {"apiGroups": ["llmops.io"], "resources": ["trainingjobs"], "verbs": CHILD_VERBS},
    {"apiGroups": ["llmops.io"],
     "resources": ["trainingjobs/status", "modeldeployments/status", "retrainpolicies/status",
                   "modelretirements/status"],
     "verbs": ["get", "patch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "create"]},
    {"apiGroups": [""], "resources": ["services", "configmaps"], "verbs": CHILD_VERBS},
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": CHILD_VERBS},
    {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": CHILD_VERBS},
    {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": CHILD_VERBS},
    {"apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers"], "verbs": CHILD_VERBS},
    {"apiGroups": ["ray.io"], "resources": ["rayjobs"], "verbs": CHILD_VERBS},
    {"apiGroups": ["monitoring.coreos.com"],
     "resources": ["servicemonitors", "podmonitors", "prometheusrules"], "verbs": CHILD_VERBS},
    {"apiGroups": ["keda.sh"], "resources": ["scaledobjects"], "verbs": CHILD_VERBS},
]  # fmt: skip
# Namespaces only where kopf scans them: when it watches listed namespaces (watchNamespaces).
NAMESPACE_RULES = [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]}]
CLUSTER_RULES = [
    {
        "apiGroups": ["apiextensions.k8s.io"],
        "resources": ["customresourcedefinitions"],
        "verbs": ["list", "watch"],
    },
]
WEBHOOK_CONFIGS = ["validatingwebhookconfigurations", "mutatingwebhookconfigurations"]
WEBHOOK_RULES = [
    {"apiGroups": ["admissionregistration.k8s.io"], "resources": WEBHOOK_CONFIGS, "verbs": ["create"]},
    {"apiGroups": ["admissionregistration.k8s.io"], "resources": WEBHOOK_CONFIGS,
     "resourceNames": ["validate.llmops.io"], "verbs": ["get", "patch", "delete"]},
]  # fmt: skip


@pytest.fixture(scope="module")
def helm() -> str:
    return binary("helm")


def run_helm(helm: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run([helm, *args], capture_output=True, text=True, timeout=120)
    if check:
        assert out.returncode == 0, f"helm {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}"
    return out


def template(helm: str, *args: str) -> list[dict[str, Any]]:
    out = run_helm(helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args)
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def find(docs: list[dict], kind: str, name: str | None = None, namespace: str | None = None) -> list[dict]:
    return [
        d
        for d in docs
        if d["kind"] == kind
        and (name is None or d["metadata"]["name"] == name)
        and (namespace is None or d["metadata"].get("namespace") == namespace)
    ]


def one(docs: list[dict], kind: str, name: str | None = None, namespace: str | None = None) -> dict:
    found = find(docs, kind, name, namespace)
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


@pytest.fixture(scope="module", params=list(CONFIGS))
def rendered(request: pytest.FixtureRequest, helm: str) -> tuple[str, list[dict]]:
    return request.param, template(helm, *CONFIGS[request.param])


def operator_container(docs: list[dict]) -> dict:
    (container,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return container


@pytest.mark.parametrize("config", list(CONFIGS))
def test_helm_lint_passes(helm: str, config: str) -> None:
    out = run_helm(helm, "lint", "--strict", str(CHART), *CONFIGS[config])
    assert "1 chart(s) linted, 0 chart(s) failed" in out.stdout


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["kubeVersion"] == ">=1.30.0-0"
    assert chart["appVersion"] == "0.1.0"


def test_every_namespaced_object_names_its_namespace(rendered: tuple[str, list[dict]]) -> None:
    _, docs = rendered
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding"}
    for d in docs:
        if d["kind"] in cluster_scoped:
            assert "namespace" not in d["metadata"], d["metadata"]
        else:
            assert d["metadata"].get("namespace"), f"{d['kind']}/{d['metadata']['name']} has no namespace"
        assert d["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE


def test_no_rbac_wildcards(rendered: tuple[str, list[dict]]) -> None:
    _, docs = rendered
    roles = find(docs, "ClusterRole") + find(docs, "Role")
    assert roles
    for role in roles:
        for rule in role["rules"]:
            for field in ("verbs", "resources", "apiGroups", "resourceNames"):
                assert not any("*" in item for item in rule.get(field, [])), (role["metadata"]["name"], rule)
            assert "nonResourceURLs" not in rule


def test_default_rbac_is_one_clusterrole_for_every_namespace(helm: str) -> None:
    docs = template(helm)
    assert not find(docs, "Role") and not find(docs, "RoleBinding")
    assert one(docs, "ClusterRole", "llmops")["rules"] == NAMESPACED_RULES
    assert one(docs, "ClusterRole", "llmops-cluster")["rules"] == CLUSTER_RULES
    for name in ("llmops", "llmops-cluster"):
        binding = one(docs, "ClusterRoleBinding", name)
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": name,
        }
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "llmops", "namespace": NAMESPACE}]
    assert one(docs, "ServiceAccount", "llmops", NAMESPACE)


def test_watch_namespaces_gives_a_role_per_namespace(helm: str) -> None:
    docs = template(helm, *FULL)
    assert not find(docs, "ClusterRole", "llmops") and not find(docs, "ClusterRoleBinding", "llmops")
    assert {r["metadata"]["namespace"] for r in find(docs, "Role")} == {"team-a", "team-b"}
    for ns in ("team-a", "team-b"):
        assert one(docs, "Role", "llmops", ns)["rules"] == NAMESPACED_RULES
        binding = one(docs, "RoleBinding", "llmops", ns)
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "llmops", "namespace": NAMESPACE}]
    # Cluster-scoped needs stay in a ClusterRole; with the webhook on, they include its configuration.
    cluster_rules = one(docs, "ClusterRole", "llmops-cluster")["rules"]
    assert cluster_rules == NAMESPACE_RULES + CLUSTER_RULES + WEBHOOK_RULES


def test_deployment_is_one_recreated_hardened_replica(rendered: tuple[str, list[dict]]) -> None:
    _, docs = rendered
    deployment = one(docs, "Deployment", "llmops", NAMESPACE)
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "llmops"
    assert pod["automountServiceAccountToken"] is True  # even when an existing account turns it off
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = operator_container(docs)
    assert container["image"] == "ghcr.io/llmops/operator:0.1.0"
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 65532
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    # The only writable place: /tmp, where the webhook keeps its certificates.
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"][0]["name"] == "tmp" and "emptyDir" in pod["volumes"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == 8080 and ports["health"] == 8081
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["resources"] == {
        "requests": {"cpu": "100m", "memory": "256Mi"},
        "limits": {"cpu": "1", "memory": "512Mi"},
    }


def test_default_command_watches_every_namespace_without_a_webhook(helm: str) -> None:
    docs = template(helm)
    assert operator_container(docs)["command"] == [
        "llmops", "operator", "--all-namespaces", "--metrics-port", "8080", "--health-port", "8081",
        "--log-format", "json",
    ]  # fmt: skip
    assert not find(docs, "ServiceMonitor") and not find(docs, "NetworkPolicy")
    assert [s["metadata"]["name"] for s in find(docs, "Service")] == ["llmops-metrics"]
    assert not find(docs, "ValidatingWebhookConfiguration")


def test_full_command_watches_listed_namespaces_and_serves_the_webhook(helm: str) -> None:
    docs = template(helm, *FULL)
    container = operator_container(docs)
    assert container["command"] == [
        "llmops", "operator", "--namespace", "team-a", "--namespace", "team-b",
        "--metrics-port", "8080", "--health-port", "8081",
        "--webhook", "--webhook-port", "9443", "--webhook-service", f"{NAMESPACE}/llmops-webhook",
        "--log-format", "json",
    ]  # fmt: skip
    assert {"name": "webhook", "containerPort": 9443, "protocol": "TCP"} in container["ports"]
    webhook = one(docs, "Service", "llmops-webhook", NAMESPACE)
    assert webhook["spec"]["ports"] == [
        {"name": "https", "port": 443, "targetPort": "webhook", "protocol": "TCP"}
    ]
    # The operator manages validate.llmops.io itself; the chart must not fight it.
    assert not find(docs, "ValidatingWebhookConfiguration")


def test_chart_arguments_parse_with_the_real_cli(rendered: tuple[str, list[dict]]) -> None:
    from llmops.operators.cli import operator

    command = operator_container(rendered[1])["command"]
    assert command[:2] == ["llmops", "operator"]
    ctx = operator.make_context("operator", command[2:])
    assert ctx.params["metrics_port"] == 8080 and ctx.params["health_port"] == 8081


def test_services_select_the_operator_pod(rendered: tuple[str, list[dict]]) -> None:
    _, docs = rendered
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    selector = one(docs, "Deployment")["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    for service in find(docs, "Service"):
        assert service["spec"]["selector"].items() <= pod_labels.items()
    metrics = one(docs, "Service", "llmops-metrics", NAMESPACE)
    assert metrics["spec"]["ports"] == [
        {"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}
    ]


def test_service_monitor_scrapes_the_metrics_service(helm: str) -> None:
    docs = template(helm, *FULL, "--set", "metrics.serviceMonitor.labels.release=prom")
    monitor = one(docs, "ServiceMonitor", "llmops", NAMESPACE)
    assert monitor["metadata"]["labels"]["release"] == "prom"
    metrics = one(docs, "Service", "llmops-metrics")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= metrics["metadata"]["labels"].items()
    assert one(docs, "Service", "llmops-webhook")["metadata"]["labels"]["llmops.io/service"] == "webhook"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"


def test_network_policy_admits_only_the_operator_ports(helm: str) -> None:
    docs = template(helm, *FULL)
    policy = one(docs, "NetworkPolicy", "llmops", NAMESPACE)
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    ports = sorted(p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"])
    assert ports == [8080, 8081, 9443]
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    without_webhook = one(template(helm, "--set", "networkPolicy.enabled=true"), "NetworkPolicy")
    assert sorted(p["port"] for r in without_webhook["spec"]["ingress"] for p in r["ports"]) == [8080, 8081]


def test_pod_placement_and_image_values_reach_the_pod(helm: str, tmp_path: Path) -> None:
    values = {
        "image": {"repository": "registry.example/llmops", "tag": "dev", "pullPolicy": "Always"},
        "imagePullSecrets": ["regcred", {"name": "other"}],
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {}},
        "priorityClassName": "system-cluster-critical",
        "podAnnotations": {"example.com/a": "b"},
        # Extra pod labels are added; the chart's own (the selector's) cannot be replaced.
        "podLabels": {"team": "ops", "app.kubernetes.io/name": "other"},
        "serviceAccount": {"name": "ops", "annotations": {"example.com/role": "x"}},
    }
    (tmp_path / "values.yaml").write_text(yaml.safe_dump(values))
    docs = template(helm, "-f", str(tmp_path / "values.yaml"))
    pod = one(docs, "Deployment")["spec"]["template"]
    assert pod["metadata"]["annotations"] == {"example.com/a": "b"}
    assert pod["metadata"]["labels"]["team"] == "ops"
    assert (
        one(docs, "Deployment")["spec"]["selector"]["matchLabels"].items()
        <= pod["metadata"]["labels"].items()
    )
    spec = pod["spec"]
    assert spec["imagePullSecrets"] == [{"name": "regcred"}, {"name": "other"}]
    assert spec["nodeSelector"] == values["nodeSelector"]
    assert spec["tolerations"] == values["tolerations"]
    assert spec["affinity"] == values["affinity"]
    assert spec["priorityClassName"] == "system-cluster-critical"
    assert spec["serviceAccountName"] == "ops"
    assert one(docs, "ServiceAccount", "ops")["metadata"]["annotations"] == {"example.com/role": "x"}
    container = operator_container(docs)
    assert (container["image"], container["imagePullPolicy"]) == ("registry.example/llmops:dev", "Always")


# The workloads values the operator reads as numbers or durations (rendered with `quote`, no default).
NUMERIC_WORKLOAD_VALUES = (
    "resyncSeconds",
    "resyncRate",
    "aliasPollSeconds",
    "aliasPollRate",
    "retryRate",
    "pollRate",
    "scrapeInterval",
    "retentionSweepSeconds",
    "retrainEvaluationSeconds",
    "suspendDrainSeconds",
)


def test_workload_values_become_the_operators_settings(
    helm: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llmops.operators import retention
    from llmops.operators.modeldeployment.plan import ServingSettings
    from llmops.operators.retrainpolicy.reconcile import Settings as RetrainSettings
    from llmops.operators.runtime import Pace

    def settings(*args: str) -> tuple[dict[str, str], ServingSettings]:
        container = operator_container(template(helm, *args))
        env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
        return env, ServingSettings.from_env(env)

    env, defaults = settings()
    assert env["LLMOPS_TRAINER_IMAGE"] == "ghcr.io/llmops/trainer:0.1.0"  # the chart's appVersion
    assert env["LLMOPS_OPTIMIZER_IMAGE"] == "ghcr.io/llmops/optimizer:0.1.0"
    assert defaults == ServingSettings()  # the chart's defaults are the operator's own
    assert Pace.from_env(env) == Pace()
    monkeypatch.delenv("LLMOPS_RETENTION_SWEEP_SECONDS", raising=False)
    assert float(env["LLMOPS_RETENTION_SWEEP_SECONDS"]) == retention.interval_seconds()
    values = {
        "workloads": {
            "trainerImage": "registry.example/trainer:7",
            "optimizerImage": "registry.example/optimizer:7",
            "servingImage": "registry.example/serving:7",
            "prometheusUrl": "http://prometheus.obs.svc:9090",
            "prometheusNamespaceSelector": {"team": "obs", "kubernetes.io/metadata.name": "obs"},
            "monitorLabels": {"release": "kube-prometheus"},
            "resyncSeconds": 60,
            "aliasPollSeconds": 10,
            "aliasPollRate": 4,
            "resyncRate": 0.5,
            "retryRate": 2,
            "pollRate": 12.5,
            "retentionSweepSeconds": 600,
            "retrainEvaluationSeconds": 120,
            "suspendDrainSeconds": 0,
            "scrapeInterval": "1m30s",
        }
    }
    (tmp_path / "values.yaml").write_text(yaml.safe_dump(values))
    env, chosen = settings("-f", str(tmp_path / "values.yaml"))
    assert env["LLMOPS_TRAINER_IMAGE"] == "registry.example/trainer:7"
    assert env["LLMOPS_OPTIMIZER_IMAGE"] == "registry.example/optimizer:7"
    assert env["LLMOPS_RETENTION_SWEEP_SECONDS"] == "600"
    assert env["LLMOPS_RETRAIN_EVALUATION_SECONDS"] == "120"
    assert chosen == ServingSettings(
        serving_image="registry.example/serving:7",
        prometheus_url="http://prometheus.obs.svc:9090",
        prometheus_namespace_labels={"kubernetes.io/metadata.name": "obs", "team": "obs"},
        monitor_labels={"release": "kube-prometheus"},
        resync_seconds=60,
        alias_poll_seconds=10,
        alias_poll_rate=4,
        resync_rate=0.5,
        suspend_drain_seconds=0,
        scrape_interval="1m30s",
    )
    assert Pace.from_env(env) == Pace(retry_rate=2, poll_rate=12.5)
    # A release installed before a value existed, upgraded with --reuse-values, has none: rendered
    # blank, it is the operator's default (an upgrade must not leave the operator unable to start).
    absent = [a for key in NUMERIC_WORKLOAD_VALUES for a in ("--set", f"workloads.{key}=null")]
    env, older = settings(*absent)
    assert {env.get(e) for e in ("LLMOPS_RETRY_RATE", "LLMOPS_POLL_RATE", "LLMOPS_RESYNC_SECONDS")} <= {
        "",
        None,
    }
    assert older == ServingSettings() and Pace.from_env(env) == Pace()
    monkeypatch.setenv("LLMOPS_RETENTION_SWEEP_SECONDS", env.get("LLMOPS_RETENTION_SWEEP_SECONDS") or "")
    monkeypatch.setenv(
        "LLMOPS_RETRAIN_EVALUATION_SECONDS", env.get("LLMOPS_RETRAIN_EVALUATION_SECONDS") or ""
    )
    assert retention.interval_seconds() == 3600 and RetrainSettings.from_env().evaluate_every == 60


def test_audit_values_become_the_operators_audit_configuration(helm: str) -> None:
    from llmops.audit import AuditConfig

    def config(*args: str) -> tuple[list[dict], AuditConfig | None]:
        env = operator_container(template(helm, *args))["env"]
        plain = {e["name"]: e["value"] for e in env if "value" in e}
        return env, AuditConfig.from_env(plain)

    env, off = config()
    assert off is None  # no location: auditing to storage is off
    assert {e["name"]: e.get("value") for e in env}["LLMOPS_OPERATOR_IDENTITY"].startswith(
        "system:serviceaccount:"
    )
    env, on = config(
        "--set", "audit.location=s3://audit/llmops", "--set", "audit.s3Endpoint=http://minio:9000",
        "--set", "audit.credentialsSecret=audit-creds", "--set", "audit.objectLock.mode=COMPLIANCE",
    )  # fmt: skip
    assert on is not None and on.uri == "s3://audit/llmops" and on.endpoint == "http://minio:9000"
    assert on.lock is not None and (on.lock.mode, on.lock.days) == ("COMPLIANCE", 365)
    secrets = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in env
        if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]
    }
    assert secrets["LLMOPS_AUDIT_AWS_ACCESS_KEY_ID"] == {"name": "audit-creds", "key": "AWS_ACCESS_KEY_ID"}
    assert secrets["LLMOPS_AUDIT_AWS_SECRET_ACCESS_KEY"]["key"] == "AWS_SECRET_ACCESS_KEY"
    refused = run_helm(helm, "template", str(CHART), "--set", "audit.objectLock.mode=forever", check=False)
    assert refused.returncode != 0 and "mode" in refused.stderr


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--set", "bogus=1"], "bogus"),
        (["--set", "webhook.bogus=1"], "bogus"),
        (["--set", "metrics.serviceMonitor.bogus=1"], "bogus"),
        (["--set", "resources.bogus.cpu=1"], "bogus"),
        (["--set", "webhook.enabled=maybe"], "enabled"),
        (["--set", "watchNamespaces={Not_A_Namespace}"], "watchNamespaces"),
        (["--set", "logFormat=xml"], "logFormat"),
        (["--set", "workloads.prometheusUrl=prometheus:9090"], "prometheusUrl"),
        (["--set", "workloads.bogus=1"], "bogus"),
        (["--set", "workloads.retryRate=0"], "/workloads/retryRate': exclusiveMinimum"),
        (["--set", "workloads.pollRate=-1"], "/workloads/pollRate': exclusiveMinimum"),
        (["--set", "workloads.scrapeInterval=1.5m"], "scrapeInterval"),
        (["--set", "workloads.scrapeInterval=0s"], "scrapeInterval"),
        (["--set", "workloads.suspendDrainSeconds=-1"], "suspendDrainSeconds"),
    ],
)
def test_schema_rejects_unknown_or_malformed_values(helm: str, args: list[str], complaint: str) -> None:
    out = run_helm(helm, "template", RELEASE, str(CHART), *args, check=False)
    assert out.returncode != 0, out.stdout
    assert "schema" in out.stderr and complaint in out.stderr, out.stderr


def test_kube_version_floor(helm: str) -> None:
    old = run_helm(helm, "template", RELEASE, str(CHART), "--kube-version", "1.29.0", check=False)
    assert old.returncode != 0 and "kubeVersion" in old.stderr
    run_helm(helm, "template", RELEASE, str(CHART), "--kube-version", "1.30.0")


def test_webhook_configuration_ownership_is_documented() -> None:
    # NOTES.txt renders only at install time; tests/cluster/test_chart_cluster.py reads the rendered text.
    assert "validate.llmops.io" in (CHART / "values.yaml").read_text()
    notes = (CHART / "templates" / "NOTES.txt").read_text()
    assert "ValidatingWebhookConfiguration" in notes and "llmops.webhookConfigurationName" in notes
    assert (
        '{{- define "llmops.webhookConfigurationName" -}}validate.llmops.io{{- end -}}'
        in (CHART / "templates" / "_helpers.tpl").read_text()
    )
