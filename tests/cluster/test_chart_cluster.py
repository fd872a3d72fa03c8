"""The Helm chart against a real apiserver: its output is valid, and an install comes up.

kwok plays the kubelet here: it marks the operator's pod Running and Ready without pulling or
running the image, so these tests prove the manifests, the scheduling and the RBAC, not the
operator process (the operator's own cluster tests run it).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from llmops.dev.cluster import LocalCluster
from llmops.dev.tools import binary
from tests.helpers import eventually, operator_process, when_webhooks_answer

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "llmops"


def helm(*args: str, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run([binary("helm"), *args], env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert out.returncode == 0, f"helm {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}"
    return out


def values(config: str, namespace: str) -> list[str]:
    if config == "default":
        return []
    return [
        "--set", "webhook.enabled=true",
        "--set", "metrics.serviceMonitor.enabled=true",
        "--set", "networkPolicy.enabled=true",
        "--set", f"watchNamespaces={{{namespace}}}",
    ]  # fmt: skip


def apply_crds(cluster: LocalCluster) -> list[str]:
    files = sorted(CHART.glob("crds/*.yaml"))
    assert files, "charts/llmops/crds/ is empty: run `llmops crds`"
    args = ["apply", "--server-side", "--force-conflicts", "--field-manager=llmops-chart-test"]
    for f in files:
        args += ["-f", str(f)]
    cluster.kubectl(*args)
    names = [yaml.safe_load(f.read_text())["metadata"]["name"] for f in files]
    cluster.wait_established(*(f"crd/{n}" for n in names))
    return names


@pytest.mark.parametrize("config", ["default", "full"])
def test_rendered_chart_passes_a_server_side_dry_run(
    cluster: LocalCluster, namespace: str, kube_env: dict, config: str
) -> None:
    apply_crds(cluster)
    # A release name per test: cluster-scoped objects (ClusterRoles) must not meet another test's.
    release = f"dry-{namespace}"
    rendered = helm(
        "template", release, str(CHART), "--namespace", namespace, *values(config, namespace), env=kube_env
    )
    docs = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "ServiceAccount", "Service", "ClusterRole", "ClusterRoleBinding"} <= kinds
    if config == "full":
        assert {"Role", "RoleBinding", "ServiceMonitor", "NetworkPolicy"} <= kinds
    # Strict field validation: an unknown or misplaced field is an error, not a warning.
    out = cluster.kubectl(
        "apply", "--server-side", "--dry-run=server", "--validate=strict",
        "--field-manager=llmops-chart-test", "-f", "-", input=rendered.stdout, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    applied = [line for line in out.stdout.splitlines() if line.strip()]
    assert len(applied) == len(docs), out.stdout
    assert all(line.endswith("(server dry run)") for line in applied), out.stdout
    # Nothing was created.
    get = cluster.kubectl("get", "deployment", "-n", namespace, "-o", "name")
    assert get.stdout.strip() == ""


def reconcile_as_service_account(cluster: LocalCluster, namespace: str, sa: str, tmp_path: Path) -> None:
    """The chart's RBAC is enough: the real operator, with the ServiceAccount's token and nothing
    else, serves its webhook and reconciles an object."""
    token = cluster.kubectl("create", "token", sa, "-n", namespace, "--duration=1h").stdout.strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    kubeconfig = tmp_path / "service-account.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa", "clusters": admin["clusters"],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": admin["clusters"][0]["name"], "user": "sa"}}],
    }))  # fmt: skip
    example = (ROOT / "examples" / "modeldeployment-single.yaml").read_text()
    with operator_process(cluster, namespace, "--webhook", kubeconfig=kubeconfig):
        config = "validatingwebhookconfiguration/validate.llmops.io"
        when_webhooks_answer(cluster, namespace, example, lambda r: r.returncode)
        refused = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=example, check=False)
        assert refused.returncode, refused.stdout
        assert "support-bot-api-keys" in refused.stderr  # the webhook read Secrets as the ServiceAccount
        assert "spec.registry.s3.credentialsSecretRef.name" in refused.stderr  # every missing one is named
        for secret in ("support-bot-api-keys", "registry-credentials"):
            cluster.kubectl("create", "secret", "generic", secret, "-n", namespace, "--from-literal=k=v")
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=example)

        def reconciled() -> dict | None:
            obj = json.loads(
                cluster.kubectl("get", "md", "support-bot", "-n", namespace, "-o", "json").stdout
            )
            return (
                obj
                if obj.get("status", {}).get("observedGeneration") == obj["metadata"]["generation"]
                else None
            )

        assert {c["type"] for c in eventually(reconciled)["status"]["conditions"]} >= {"Ready", "Stalled"}
    # It could delete its own webhook configuration on the way out.
    assert cluster.kubectl("get", config, check=False).returncode != 0


def can_i(cluster: LocalCluster, sa: str, *args: str) -> bool:
    out = cluster.kubectl("auth", "can-i", "--as", sa, *args, check=False)
    assert out.stdout.strip() in {"yes", "no"}, (out.stdout, out.stderr)
    return out.stdout.strip() == "yes"


@pytest.mark.parametrize("config", ["default", "full"])
def test_helm_install_brings_the_operator_deployment_up(
    cluster: LocalCluster, namespace: str, kube_env: dict, config: str, tmp_path: Path
) -> None:
    release = namespace  # unique; the objects are named <release>-llmops
    name = f"{release}-llmops"
    try:
        # Helm creates the CRDs from crds/ when they are absent, and leaves existing ones alone.
        install = helm(
            "install", release, str(CHART), "--namespace", namespace, *values(config, namespace),
            "--wait", "--timeout", "180s", env=kube_env, check=False,
        )  # fmt: skip
        if install.returncode != 0:
            # Say why the pod did not come up (unschedulable, tainted nodes), not just "deadline exceeded".
            pods = cluster.kubectl("get", "pods,events", "-n", namespace, "-o", "wide", check=False).stdout
            nodes = cluster.kubectl(
                "get", "nodes", "-o", "custom-columns=NAME:.metadata.name,TAINTS:.spec.taints", check=False
            ).stdout
            pytest.fail(f"helm install failed: {install.stderr}\n{pods}\n{nodes}")
        releases = json.loads(helm("list", "-n", namespace, "-o", "json", env=kube_env).stdout)
        assert [(r["name"], r["status"]) for r in releases] == [(release, "deployed")]

        deployment = json.loads(
            cluster.kubectl("get", "deployment", name, "-n", namespace, "-o", "json").stdout
        )
        conditions = {c["type"]: c["status"] for c in deployment["status"]["conditions"]}
        assert conditions["Available"] == "True"
        assert deployment["status"]["readyReplicas"] == 1
        assert deployment["spec"]["strategy"]["type"] == "Recreate"
        for crd in ("trainingjobs.llmops.io", "modeldeployments.llmops.io"):
            cluster.wait_established(f"crd/{crd}", timeout=30)

        # The metrics Service selects the (fake-)ready pod.
        def endpoints() -> list:
            out = cluster.kubectl(
                "get", "endpointslices", "-n", namespace, "-l", f"kubernetes.io/service-name={name}-metrics",
                "-o", "json",
            )  # fmt: skip
            slices = json.loads(out.stdout)["items"]
            return [e for s in slices for e in s.get("endpoints") or [] if e["conditions"].get("ready")]

        assert len(eventually(endpoints)) == 1

        # The RBAC the apiserver actually grants the operator's ServiceAccount.
        sa = f"system:serviceaccount:{namespace}:{name}"
        assert can_i(cluster, sa, "patch", "trainingjobs.llmops.io", "-n", namespace)
        assert can_i(
            cluster, sa, "patch", "modeldeployments.llmops.io", "--subresource=status", "-n", namespace
        )
        assert can_i(cluster, sa, "create", "rayjobs.ray.io", "-n", namespace)
        assert can_i(cluster, sa, "delete", "scaledobjects.keda.sh", "-n", namespace)
        assert can_i(cluster, sa, "get", "secrets", "-n", namespace)
        assert not can_i(cluster, sa, "list", "secrets", "-n", namespace)
        # Secrets: get (the webhook's checks), create (a ModelDeployment's feedback key); nothing else.
        assert can_i(cluster, sa, "create", "secrets", "-n", namespace)
        assert not can_i(cluster, sa, "patch", "secrets", "-n", namespace)
        # RetrainPolicies create their runs and delete those beyond the history limits.
        assert can_i(cluster, sa, "create", "trainingjobs.llmops.io", "-n", namespace)
        assert can_i(cluster, sa, "delete", "trainingjobs.llmops.io", "-n", namespace)
        assert can_i(
            cluster, sa, "patch", "retrainpolicies.llmops.io", "--subresource=status", "-n", namespace
        )
        assert not can_i(cluster, sa, "delete", "retrainpolicies.llmops.io", "-n", namespace)
        assert not can_i(cluster, sa, "create", "pods", "-n", namespace)
        assert can_i(cluster, sa, "watch", "customresourcedefinitions.apiextensions.k8s.io")
        assert not can_i(cluster, sa, "create", "customresourcedefinitions.apiextensions.k8s.io")
        # Elsewhere: everywhere with the defaults, nowhere outside watchNamespaces otherwise.
        assert can_i(cluster, sa, "patch", "deployments.apps", "-n", "kube-system") == (config == "default")
        webhook_config = "validatingwebhookconfigurations.admissionregistration.k8s.io"
        if config == "full":
            for each in (webhook_config, "mutatingwebhookconfigurations.admissionregistration.k8s.io"):
                assert can_i(cluster, sa, "create", each)
                assert can_i(cluster, sa, "patch", f"{each}/validate.llmops.io")
                assert not can_i(cluster, sa, "patch", f"{each}/someone-elses")
                assert can_i(cluster, sa, "delete", f"{each}/validate.llmops.io")
                assert not can_i(cluster, sa, "delete", f"{each}/someone-elses")
            notes = helm("get", "notes", release, "-n", namespace, env=kube_env).stdout
            assert "validate.llmops.io" in notes
            assert (
                f"{name}-webhook" in cluster.kubectl("get", "service", "-n", namespace, "-o", "name").stdout
            )
            reconcile_as_service_account(cluster, namespace, name, tmp_path)
        else:
            assert not can_i(cluster, sa, "create", webhook_config)
    finally:
        # ClusterRoles and their bindings outlive the namespace: uninstall removes them.
        helm("uninstall", release, "-n", namespace, "--wait", "--timeout", "60s", env=kube_env, check=False)
    left = cluster.kubectl("get", "clusterroles", "-o", "name").stdout
    assert name not in left
