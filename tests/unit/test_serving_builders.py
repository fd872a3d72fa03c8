"""ModelDeployment builders, the vLLM command, the fetcher and the canary machine: all pure, no cluster.

Golden files: tests/unit/golden/modeldeployment/<case>.yaml hold every child of each case. After an
intended change, regenerate them and review the diff:

    LLMOPS_UPDATE_GOLDEN=1 pytest tests/unit/test_serving_builders.py
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from llmops import engine, fetch
from llmops.api.common import LocalLocation, ObjectStorageLocation, SecretRef
from llmops.api.modeldeployment import (
    Canary,
    CanaryStatus,
    Engine,
    Gateway,
    ModelDeploymentSpec,
    PayloadSampling,
    PiiRedaction,
    RateLimit,
)
from llmops.dev.tools import binary
from llmops.gateway_config import API_KEYS_MOUNT, GatewayConfig
from llmops.registry import GateVerdict, Lineage, RegistryError, register
from llmops.storage import LocalStore
from operators.modeldeployment import canary, monitoring
from operators.modeldeployment.autoscaling import scaler_queries
from operators.modeldeployment.builders import build
from operators.modeldeployment.canary import Analysis, Sample, advance, analyse
from operators.modeldeployment.gateway import gateway_config
from operators.modeldeployment.names import child_name, vllm_name
from operators.modeldeployment.plan import Adapter, Plan, ServedVersion, ServingSettings

ROOT = Path(__file__).parents[2]
EXAMPLES = ROOT / "examples"
GOLDEN = Path(__file__).parent / "golden" / "modeldeployment"
MONITORING = ROOT / "deploy" / "monitoring"
UPDATE = os.environ.get("LLMOPS_UPDATE_GOLDEN") == "1"
SETTINGS = ServingSettings(serving_image="ghcr.io/llmops/serving:test")
UID = "00000000-0000-4000-8000-000000000000"
PROMTOOL = binary("promtool")  # built from the Go module proxy (hack/tools/prometheus)


def owner(name: str, namespace: str = "demo") -> dict:
    return {
        "apiVersion": "llmops.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace, "uid": UID},
    }


def example(name: str) -> tuple[str, ModelDeploymentSpec]:
    doc = yaml.safe_load((EXAMPLES / f"modeldeployment-{name}.yaml").read_text())
    return doc["metadata"]["name"], ModelDeploymentSpec.model_validate(doc["spec"])


def served(
    md: str, spec: ModelDeploymentSpec, model: str, version: str, role: str, weight: int
) -> ServedVersion:
    return ServedVersion(model, version, role, weight, vllm_name(md, model, version, spec.model.name))  # type: ignore[arg-type]


def case(name: str) -> tuple[dict, ModelDeploymentSpec, Plan]:
    """The golden cases: every example, plus variants for the branches the examples do not reach."""
    base = name.split("+")[0]
    md, spec = example(base)
    if name == "single+hpa":
        spec = spec.model_copy(
            update={"autoscaling": spec.autoscaling.model_copy(update={"max_replicas": 4, "engine": "hpa"})}
        )
    if name == "single+local-registry":
        spec = spec.model_copy(
            update={"registry": ObjectStorageLocation.model_validate({"local": {"path": "/srv/registry"}})}
        )
    adapters: tuple[Adapter, ...] = ()
    if base == "lora-adapters":
        adapters = (
            Adapter("billing", "support-bot-billing", "2"),
            Adapter("shipping", "support-bot-shipping", "5"),
        )
    stable_version = spec.model.version or "7"
    versions = [served(md, spec, spec.model.name, stable_version, "stable", 100)]
    if base == "canary":
        versions = [
            served(md, spec, spec.model.name, stable_version, "stable", 75),
            served(md, spec, "support-bot", "4", "canary", 25),
        ]
    if name == "single+replacing":
        versions = [
            served(md, spec, spec.model.name, "4", "stable", 0),
            served(md, spec, spec.model.name, "3", "previous", 100),
        ]
    return owner(md), spec, Plan(tuple(versions), adapters)


CASES = [
    "single",
    "canary",
    "scale-to-zero",
    "lora-adapters",
    "single+hpa",
    "single+local-registry",
    "single+replacing",
]


class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data: object) -> bool:
        return True


def rendered(name: str) -> str:
    parent, spec, plan = case(name)
    docs = build(spec, parent, plan, SETTINGS)
    return yaml.dump_all(docs, Dumper=_NoAliases, sort_keys=True, width=120)


@pytest.mark.parametrize("name", CASES)
def test_golden(name: str) -> None:
    path = GOLDEN / f"{name}.yaml"
    text = rendered(name)
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"no golden file {path.name}: run with LLMOPS_UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{path.name} differs; regenerate with LLMOPS_UPDATE_GOLDEN=1 and review"


def test_every_example_has_a_golden_case() -> None:
    examples = {p.stem.removeprefix("modeldeployment-") for p in EXAMPLES.glob("modeldeployment-*.yaml")}
    assert examples <= {c.split("+")[0] for c in CASES}
    assert {p.stem for p in GOLDEN.glob("*.yaml")} == set(CASES), "stale golden files"


def test_builders_are_deterministic() -> None:
    assert all(rendered(c) == rendered(c) for c in CASES)


def _objects(name: str) -> dict[tuple[str, str], dict]:
    parent, spec, plan = case(name)
    return {(m["kind"], m["metadata"]["name"]): m for m in build(spec, parent, plan, SETTINGS)}


def test_children_are_owned_and_labelled() -> None:
    for name in CASES:
        for m in _objects(name).values():
            meta = m["metadata"]
            assert meta["namespace"] == "demo"
            assert meta["ownerReferences"][0]["uid"] == UID and meta["ownerReferences"][0]["controller"]
            labels = meta["labels"]
            assert labels["app.kubernetes.io/managed-by"] == "llmops"
            assert labels["llmops.io/modeldeployment"] == labels["app.kubernetes.io/instance"]
            assert {"app.kubernetes.io/name", "app.kubernetes.io/component"} <= labels.keys()
            assert len(meta["name"]) <= 63


def test_vllm_deployment() -> None:
    objs = _objects("single")
    d = objs[("Deployment", "support-bot-3-vllm")]
    pod = d["spec"]["template"]["spec"]
    vllm, fetcher = pod["containers"][0], pod["initContainers"][0]
    assert vllm["command"][:3] == ["python", "-m", "vllm.entrypoints.openai.api_server"]
    assert (
        vllm["resources"]["limits"]["nvidia.com/gpu"] == 1 == vllm["resources"]["requests"]["nvidia.com/gpu"]
    )
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert {p: vllm[p]["httpGet"]["path"] for p in ("startupProbe", "readinessProbe", "livenessProbe")} == {
        "startupProbe": "/health",
        "readinessProbe": "/health",
        "livenessProbe": "/health",
    }
    assert {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}} in pod["volumes"]
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] == 65532  # images'
    assert vllm["lifecycle"]["preStop"]["sleep"]["seconds"] > 5  # past the gateways' next DNS refresh
    for c in (vllm, fetcher):
        assert c["securityContext"]["readOnlyRootFilesystem"] and c["securityContext"]["capabilities"][
            "drop"
        ] == ["ALL"]
    assert pod["topologySpreadConstraints"][0]["topologyKey"] == "kubernetes.io/hostname"
    assert d["spec"]["replicas"] == 1  # min == max: no autoscaler, a fixed count
    # The fetcher downloads exactly the resolved version; credentials only by reference.
    assert (
        fetcher["command"][:3] == ["python", "-m", "llmops.fetch"]
        and fetcher["command"][-1] == "model=support-bot:3"
    )
    env = {e["name"]: e for e in fetcher["env"]}
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {
        "name": "registry-credentials",
        "key": "rootUser",
    }
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["key"] == "rootPassword"
    assert all("value" not in e or e["name"] == "HOME" for e in fetcher["env"])


def test_autoscaled_deployments_leave_replicas_to_the_autoscaler() -> None:
    for name in ("canary", "scale-to-zero", "single+hpa"):
        for (kind, _), m in _objects(name).items():
            if (
                kind == "Deployment"
                and m["metadata"]["labels"]["app.kubernetes.io/component"] == "model-server"
            ):
                assert "replicas" not in m["spec"], name


def test_keda_scale_to_zero() -> None:
    so = _objects("scale-to-zero")[("ScaledObject", "report-writer-7-vllm")]["spec"]
    # minReplicas 1 with scaleToZero: idle at 0, at least 1 while there is traffic.
    assert (so["idleReplicaCount"], so["minReplicaCount"], so["maxReplicaCount"]) == (0, 1, 3)
    triggers = {t["name"]: t for t in so["triggers"]}
    assert set(triggers) == {"queue", "pending"}
    assert triggers["queue"]["metadata"]["threshold"] == "8"
    assert "llmops_gateway_pending_requests" in triggers["pending"]["metadata"]["query"]
    assert triggers["pending"]["metadata"]["activationThreshold"] == "0"
    assert so["cooldownPeriod"] == 900
    behavior = so["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 900


def test_canary_scaled_objects_and_weights() -> None:
    objs = _objects("canary")
    stable = objs[("ScaledObject", "support-bot-canary-3-vllm")]["spec"]
    cand = objs[("ScaledObject", "support-bot-canary-4-vllm")]["spec"]
    assert (stable["minReplicaCount"], cand["minReplicaCount"]) == (2, 1)
    kv = {t["name"]: t for t in stable["triggers"]}["kvCache"]["metadata"]
    assert "vllm:kv_cache_usage_perc" in kv["query"] and "vllm:gpu_cache_usage_perc" in kv["query"]
    assert kv["threshold"] == "0.8"
    config = GatewayConfig.model_validate_json(
        objs[("ConfigMap", "support-bot-canary-gateway")]["data"]["config.json"]
    )
    assert [(u.version, u.role, u.weight) for u in config.upstreams] == [
        ("3", "stable", 75),
        ("4", "canary", 25),
    ]
    assert (
        config.upstreams[1].service
        and config.upstreams[1].service.host == "support-bot-canary-4-vllm.demo.svc"
    )
    assert config.api_keys_path and config.pii_redaction and config.payload_sampling
    assert config.drift_sampling and config.drift_sampling.destination.s3
    assert config.drift_sampling.destination.s3.prefix == "support-bot/drift-prompts"


def test_hpa_on_external_metrics() -> None:
    hpa = _objects("single+hpa")[("HorizontalPodAutoscaler", "support-bot-3-vllm")]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (1, 4)
    metric = hpa["metrics"][0]["external"]
    assert metric["metric"]["selector"]["matchLabels"] == {"model_deployment": "support-bot", "version": "3"}
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300


def test_gateway() -> None:
    objs = _objects("single")
    svc = objs[("Service", "support-bot-gateway")]["spec"]
    assert svc["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    pod = objs[("Deployment", "support-bot-gateway")]["spec"]["template"]["spec"]
    gw = pod["containers"][0]
    assert gw["command"][:3] == ["python", "-m", "serving.gateway"]
    assert gw["ports"][0]["containerPort"] == 8000
    assert {"name": "api-keys", "secret": {"secretName": "support-bot-api-keys"}} in pod["volumes"]
    config = GatewayConfig.model_validate_json(
        objs[("ConfigMap", "support-bot-gateway")]["data"]["config.json"]
    )
    # 600 requests a minute for the whole gateway: each of its 2 replicas enforces half.
    assert config.rate_limit and config.rate_limit.requests_per_minute == 300
    assert gw["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}
    assert config.served_model_name == "support-bot"
    assert _objects("scale-to-zero")[("ConfigMap", "report-writer-gateway")]["data"]["config.json"].count(
        '"scaleToZeroHoldSeconds": 600'
    )


def test_gateway_restarts_only_for_settings_it_reads_at_start() -> None:
    parent, spec, plan = case("canary")

    def digest(p: Plan, s: ModelDeploymentSpec) -> str:
        gateway = next(
            m for m in build(s, parent, p, SETTINGS)
            if m["kind"] == "Deployment" and m["metadata"]["name"].endswith("-gateway")
        )  # fmt: skip
        return gateway["spec"]["template"]["metadata"]["annotations"]["llmops.io/config-digest"]

    moved = Plan(tuple(ServedVersion(v.model, v.version, v.role, 50, v.deployment) for v in plan.versions))
    assert digest(plan, spec) == digest(moved, spec)  # weights reload live
    stricter = spec.model_copy(update={"gateway": spec.gateway.model_copy(update={"max_queue": 10})})
    assert digest(plan, spec) != digest(plan, stricter)


def test_network_policies_and_budgets() -> None:
    objs = _objects("single")
    deny = objs[("NetworkPolicy", "support-bot-default-deny")]["spec"]
    assert deny == {
        "podSelector": {"matchLabels": {"llmops.io/modeldeployment": "support-bot"}},
        "policyTypes": ["Ingress"],
        "ingress": [],
    }
    vllm = objs[("NetworkPolicy", "support-bot-vllm")]["spec"]["ingress"][0]
    sources = vllm["from"]
    assert sources[0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "gateway"
    assert sources[1] == {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    assert vllm["ports"] == [{"protocol": "TCP", "port": 8000}]
    assert objs[("PodDisruptionBudget", "support-bot-vllm")]["spec"]["maxUnavailable"] == 1


def test_drift_monitor_runs_with_each_locations_own_credentials() -> None:
    objs = _objects("canary")  # the example with spec.monitoring.drift
    pod = objs[("Deployment", "support-bot-canary-drift")]["spec"]["template"]["spec"]
    (drift,) = pod["containers"]
    argv = drift["command"]
    assert argv[:3] == ["python", "-m", "serving.drift"]
    reference = ObjectStorageLocation.model_validate_json(argv[argv.index("--reference") + 1])
    samples = ObjectStorageLocation.model_validate_json(argv[argv.index("--samples") + 1])
    assert reference.s3 and reference.s3.prefix == "support/reference/"
    config = GatewayConfig.model_validate_json(
        objs[("ConfigMap", "support-bot-canary-gateway")]["data"]["config.json"]
    )
    assert config.drift_sampling and samples == config.drift_sampling.destination  # where the gateway writes
    secrets = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in drift["env"] if "valueFrom" in e}
    assert secrets["REFERENCE_AWS_ACCESS_KEY_ID"] == "dataset-credentials"
    assert secrets["SAMPLES_AWS_ACCESS_KEY_ID"] == "payload-credentials"  # beside the payload samples
    assert all("value" not in e or "KEY" not in e["name"] for e in drift["env"])  # no secret values
    policy = objs[("NetworkPolicy", "support-bot-canary-drift")]["spec"]
    assert policy["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 9100}]
    monitor = objs[("PodMonitor", "support-bot-canary-drift")]["spec"]
    assert monitor["selector"]["matchLabels"].items() <= pod_labels(objs, "support-bot-canary-drift").items()
    assert monitor["podMetricsEndpoints"][0]["port"] == drift["ports"][0]["name"]
    assert not any(name.endswith("-drift") for _, name in _objects("single"))  # drift off: no monitor


def pod_labels(objs: dict, deployment: str) -> dict[str, str]:
    return objs[("Deployment", deployment)]["spec"]["template"]["metadata"]["labels"]


def test_monitoring_children() -> None:
    objs = _objects("canary")
    pm = objs[("PodMonitor", "support-bot-canary-vllm")]["spec"]["podMetricsEndpoints"][0]
    assert {r["targetLabel"] for r in pm["relabelings"]} == {"model_deployment", "version"}
    dashboard = objs[("ConfigMap", "support-bot-canary-dashboard")]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    board = json.loads(next(iter(dashboard["data"].values())))
    assert len(board["panels"]) >= 8 and all(p["targets"] for p in board["panels"])
    rules = objs[("PrometheusRule", "support-bot-canary-slo")]["spec"]["groups"][0]["rules"]
    assert [r["alert"] for r in rules] == [
        "LLMOpsLatencyP95High",
        "LLMOpsErrorRateHigh",
        "LLMOpsQueueSaturated",
        "LLMOpsDriftDetected",
    ]
    # monitoring.serviceMonitor off: the autoscaler still gets the vLLM series it reads, nothing more.
    lora = _objects("lora-adapters")
    assert [k for k in lora if k[0] in ("PodMonitor", "ServiceMonitor", "PrometheusRule")] == [
        ("PodMonitor", "support-bot-adapters-vllm")
    ]
    # Scale to zero also reads the gateway's pending requests: its ServiceMonitor too.
    idle = _objects("scale-to-zero")
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


def test_replacing_keeps_the_previous_version_serving() -> None:
    objs = _objects("single+replacing")
    # The replaced version's Deployment is left as it is (not rendered, not re-applied); it keeps serving.
    assert ("Deployment", "support-bot-4-vllm") in objs and ("Deployment", "support-bot-3-vllm") not in objs
    config = GatewayConfig.model_validate_json(
        objs[("ConfigMap", "support-bot-gateway")]["data"]["config.json"]
    )
    assert [(u.version, u.weight) for u in config.upstreams] == [("4", 0), ("3", 100)]


def test_local_registry_is_mounted_read_only() -> None:
    pod = _objects("single+local-registry")[("Deployment", "support-bot-3-vllm")]["spec"]["template"]["spec"]
    assert {"name": "registry", "hostPath": {"path": "/srv/registry", "type": "Directory"}} in pod["volumes"]
    mount = next(m for m in pod["initContainers"][0]["volumeMounts"] if m["name"] == "registry")
    assert mount == {"name": "registry", "mountPath": "/srv/registry", "readOnly": True}
    assert not [e for e in pod["initContainers"][0]["env"] if e["name"].startswith("AWS_")]


# -- names -------------------------------------------------------------------------------------


@given(st.lists(st.from_regex(r"[a-zA-Z0-9][a-zA-Z0-9.-]{0,80}", fullmatch=True), min_size=1, max_size=4))
@settings(max_examples=200, deadline=None)
def test_child_names_are_dns_labels_and_distinct(parts: list[str]) -> None:
    import re

    name = child_name(*parts)
    assert len(name) <= 63 and re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name), name
    assert child_name(*parts) == name
    if name != "-".join(parts):
        assert child_name(*parts, "x") != name


def test_vllm_names() -> None:
    assert vllm_name("support-bot", "support-bot", "3", "support-bot") == "support-bot-3-vllm"
    assert vllm_name("bot", "other", "3", "support-bot") == "bot-other-3-vllm"
    long = vllm_name("a" * 60, "m", "12", "m")
    assert len(long) == 63 and long != vllm_name("a" * 60, "m", "13", "m")


# -- the vLLM command --------------------------------------------------------------------------


def test_vllm_argv_every_flag() -> None:
    spec = Engine.model_validate(
        {
            "servedModelName": "ignored-here",
            "maxModelLen": 8192,
            "dtype": "bfloat16",
            "tensorParallelSize": 2,
            "quantization": "awq",
            "gpuMemoryUtilization": 0.85,
            "loraAdapters": [
                {"name": "billing", "model": {"name": "b", "version": "1"}},
                {"name": "shipping", "model": {"name": "s", "alias": "prod"}},
            ],
            "extraArgs": ["--max-lora-rank=64", "--enforce-eager"],
        }
    )
    argv = engine.vllm_argv(spec, model_path="/models/model", served_model_name="bot", port=9000)
    assert argv == [
        "python", "-m", "vllm.entrypoints.openai.api_server",
        "--model", "/models/model",
        "--served-model-name", "bot",
        "--host", "0.0.0.0",
        "--port", "9000",
        "--dtype", "bfloat16",
        "--tensor-parallel-size", "2",
        "--gpu-memory-utilization", "0.85",
        "--max-model-len", "8192",
        "--quantization", "awq",
        "--enable-lora", "--max-loras", "2",
        "--lora-modules", "billing=/models/adapters/billing", "shipping=/models/adapters/shipping",
        "--max-lora-rank=64", "--enforce-eager",
    ]  # fmt: skip


def test_vllm_argv_defaults_and_local_paths() -> None:
    argv = engine.vllm_argv(
        Engine(), model_path="/tmp/m/model", served_model_name="tiny", python=sys.executable
    )
    assert argv[0] == sys.executable
    assert "--max-model-len" not in argv and "--quantization" not in argv and "--enable-lora" not in argv
    assert (
        argv[argv.index("--dtype") + 1] == "auto"
        and argv[argv.index("--gpu-memory-utilization") + 1] == "0.9"
    )
    lora = Engine.model_validate({"loraAdapters": [{"name": "a", "model": {"name": "x", "version": "1"}}]})
    argv = engine.vllm_argv(
        lora, model_path="/tmp/m/model", served_model_name="t", adapter_paths={"a": "/elsewhere"}
    )
    assert argv[argv.index("--lora-modules") + 1] == "a=/elsewhere"


def _vllm_parser():
    """vLLM's own server argument parser, wherever this vLLM keeps it (skip when vLLM is absent)."""
    import importlib

    pytest.importorskip("vllm")
    for module, flexible in (
        ("vllm.entrypoints.launchers.cli_args", "vllm.utils.argparse_utils"),
        ("vllm.entrypoints.openai.cli_args", "vllm.utils"),
    ):
        try:
            make = importlib.import_module(module).make_arg_parser
            parser_class = importlib.import_module(flexible).FlexibleArgumentParser
        except (ImportError, AttributeError):
            continue
        return make(parser_class())
    pytest.skip("this vLLM keeps its argument parser elsewhere")


def test_vllm_argv_parses_with_vllms_own_flags() -> None:
    """The flags we emit are flags vLLM's parser knows, when vLLM is installed here."""
    parser = _vllm_parser()
    _, spec = example("lora-adapters")
    argv = engine.vllm_argv(spec.engine, model_path="/models/model", served_model_name="bot")
    args = parser.parse_args(argv[3:])
    assert args.model == "/models/model" and args.served_model_name == ["bot"]
    assert args.max_model_len == 8192 and args.enable_lora and args.max_loras == 4  # extraArgs win
    assert [m.name for m in args.lora_modules] == ["billing", "shipping"]
    _, spec = example("canary")
    args = parser.parse_args(engine.vllm_argv(spec.engine, model_path="/m", served_model_name="bot")[3:])
    assert args.tensor_parallel_size == 1 and args.gpu_memory_utilization == 0.9 and args.port == 8000


# -- the fetcher -------------------------------------------------------------------------------


def _registry(tmp_path: Path, *, passed: bool = True) -> tuple[ObjectStorageLocation, str]:
    model = tmp_path / "model-src"
    (model / "tokenizer").mkdir(parents=True)
    (model / "config.json").write_text('{"n": 1}')
    (model / "tokenizer" / "vocab.json").write_text('{"a": 0}')
    location = ObjectStorageLocation.model_validate({"local": {"path": str(tmp_path / "registry")}})
    gates = [GateVerdict(metric="accuracy", operator=">=", threshold=0.5, value=0.9, passed=True)]
    version = register(
        LocalStore(tmp_path / "registry"), "tiny", model, metrics={}, gates=gates, lineage=Lineage()
    )
    if not passed:  # a manifest written by something other than register(), with a failed gate
        store = LocalStore(tmp_path / "registry")
        key = f"models/tiny/versions/{version.version}/manifest.json"
        manifest = json.loads(store.get_bytes(key))
        manifest["gates"][0]["passed"] = False
        store.put_bytes(key, json.dumps(manifest).encode())
    return location, version.version


def test_fetch_downloads_and_verifies(tmp_path: Path) -> None:
    location, version = _registry(tmp_path)
    argv = engine.fetch_argv(
        location, [engine.FetchItem("model", "tiny", version)], root=str(tmp_path / "models")
    )
    assert argv[:3] == ["python", "-m", "llmops.fetch"]
    assert fetch.main(argv[3:]) == 0
    target = tmp_path / "models" / "model"
    assert (target / "tokenizer" / "vocab.json").read_text() == '{"a": 0}'
    assert fetch.main(argv[3:]) == 0  # a restarted init container keeps what is complete
    (target / "config.json").write_text("tampered")
    assert fetch.main(argv[3:]) == 0 and (target / "config.json").read_text() == '{"n": 1}'


def test_fetch_refuses_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    location, version = _registry(tmp_path, passed=False)
    args = ["--registry", location.model_dump_json(by_alias=True), "--into", str(tmp_path / "m")]
    assert fetch.main([*args, f"model=tiny:{version}"]) == 1
    assert "did not pass its gates" in capsys.readouterr().err
    assert fetch.main([*args, "model=tiny:99"]) == 1
    assert "has no version '99'" in capsys.readouterr().err
    assert fetch.main([*args, "../x=tiny:1"]) == 1
    with pytest.raises(ValueError):
        engine.FetchItem.parse("model=tiny")


def test_fetch_detects_corruption_in_the_registry(tmp_path: Path) -> None:
    _location, version = _registry(tmp_path)
    (tmp_path / "registry" / "models" / "tiny" / "versions" / version / "model" / "config.json").write_text(
        "x"
    )
    with pytest.raises(RegistryError, match="checksum"):
        fetch.fetch(
            LocalStore(tmp_path / "registry"), engine.FetchItem("model", "tiny", version), tmp_path / "m"
        )


def test_fetch_runs_as_a_module(tmp_path: Path) -> None:
    location, version = _registry(tmp_path)
    argv = engine.fetch_argv(
        location,
        [engine.FetchItem("model", "tiny", version)],
        root=str(tmp_path / "out"),
        python=sys.executable,
    )
    result = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, check=False)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "model" / "config.json").exists()


# -- canary analysis and the step machine ------------------------------------------------------

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
CANARY = Canary.model_validate(
    {
        "model": {"name": "bot", "version": "4"},
        "weight": 10,
        "steps": [25, 50, 100],
        "analysis": {
            "intervalSeconds": 60,
            "maxErrorRate": 0.02,
            "maxLatencyRatio": 1.2,
            "maxP95LatencyMs": 3000,
        },
    }
)
GOOD = Sample(requests=1000, errors=3, p95_latency_ms=800)
STABLE = Sample(requests=9000, errors=10, p95_latency_ms=750)


def test_analysis() -> None:
    rules = CANARY.analysis
    assert analyse(rules, GOOD, STABLE).verdict == "pass"
    assert analyse(rules, None, STABLE).verdict == "inconclusive"
    assert analyse(rules, Sample(0, 0, None), STABLE).verdict == "inconclusive"
    bad = analyse(rules, Sample(1000, 50, 800), STABLE)
    assert bad.verdict == "fail" and "error rate 0.05 > 0.02" in bad.message and bad.error_rate == 0.05
    slow = analyse(rules, Sample(1000, 0, 1200), STABLE)
    assert slow.verdict == "fail" and "ratio" in slow.message and slow.latency_ratio == pytest.approx(1.6)
    assert "3500 ms > 3000 ms" in analyse(rules, Sample(1000, 0, 3500), Sample(1, 0, 3400)).message
    assert analyse(rules, Sample(10, 0, 900), None).verdict == "pass"  # no baseline: ratio not judged


def run_machine(results: list[Analysis], ready: bool = True) -> list[canary.Step]:
    """Drive the machine through one reconcile per clock tick, as the operator would."""
    state: CanaryStatus | None = None
    steps = []
    pending = list(results)
    now = T0
    for _ in range(4 * len(results) + 4):
        step = advance(
            CANARY, state, model="bot", version="4", baseline="3", ready=ready, now=now,
            analysis=lambda window: pending.pop(0),
        )  # fmt: skip
        steps.append(step)
        state = step.status
        if step.status.verdict != "Analysing" or not pending:
            break
        now = now + dt.timedelta(seconds=step.requeue_after or 60)
    return steps


def test_canary_steps_up_and_is_promoted() -> None:
    passed = Analysis("pass", "fine", 0.001, 800, 1.05)
    steps = run_machine([passed] * 4)
    assert [s.weight for s in steps] == [10, 25, 50, 100, 100]
    assert [s.event.reason for s in steps if s.event] == ["CanaryProgressed"] * 3 + ["Promoted"]
    last = steps[-1]
    assert last.promoted and last.status.verdict == "Promoted" and last.status.weight == 100
    assert "promoted" in last.event.message and "version 3 is removed" in last.event.message  # type: ignore[union-attr]
    again = advance(
        CANARY, last.status, model="bot", version="4", baseline="3", ready=True, now=T0, analysis=None
    )  # type: ignore[arg-type]
    assert again.promoted and again.event is None  # stays promoted, analyses nothing


def test_canary_rolls_back_and_says_why() -> None:
    failing = Analysis("fail", "error rate 0.12 > 0.02", 0.12, 900, 1.1)
    steps = run_machine([Analysis("pass", "ok", 0, 1, 1), failing])
    last = steps[-1]
    assert last.status.verdict == "RolledBack" and last.weight == 0 and not last.serve_canary
    assert last.event and last.event.warning and last.event.reason == "RolledBack"
    assert "error rate 0.12 > 0.02" in last.event.message and "at 25%" in last.event.message
    assert last.status.error_rate == 0.12


def test_canary_without_auto_rollback_halts() -> None:
    rules = CANARY.model_copy(update={"auto_rollback": False})
    state = advance(rules, None, model="bot", version="4", baseline="3", ready=True, now=T0, analysis=None)  # type: ignore[arg-type]
    later = T0 + dt.timedelta(seconds=61)
    step = advance(
        rules, state.status, model="bot", version="4", baseline="3", ready=True, now=later,
        analysis=lambda w: Analysis("fail", "p95 latency 4000 ms > 3000 ms"),
    )  # fmt: skip
    assert step.status.verdict == "Halted" and step.weight == 10 and step.serve_canary
    assert step.event and step.event.reason == "AnalysisFailed"


def test_canary_clock_waits_for_readiness_and_traffic() -> None:
    first = advance(CANARY, None, model="bot", version="4", baseline="3", ready=False, now=T0, analysis=None)  # type: ignore[arg-type]
    assert first.weight == 0 and first.status.step_start_time is None and first.serve_canary
    started = advance(
        CANARY, first.status, model="bot", version="4", baseline="3", ready=True, now=T0, analysis=None
    )  # type: ignore[arg-type]
    assert started.weight == 10 and started.status.step_start_time == T0 and started.requeue_after == 60
    early = T0 + dt.timedelta(seconds=20)
    waiting = advance(
        CANARY, started.status, model="bot", version="4", baseline="3", ready=True, now=early, analysis=None
    )  # type: ignore[arg-type]
    assert waiting.requeue_after == 40 and waiting.status == started.status
    late = T0 + dt.timedelta(seconds=60)
    quiet = advance(
        CANARY, started.status, model="bot", version="4", baseline="3", ready=True, now=late,
        analysis=lambda w: Analysis("inconclusive", "no requests reached the canary in the window"),
    )  # fmt: skip
    assert quiet.status.step == 0 and quiet.status.step_start_time == late and quiet.event is None
    # A new canary version (or a new baseline) starts over.
    other = advance(
        CANARY, quiet.status, model="bot", version="5", baseline="3", ready=True, now=late, analysis=None
    )  # type: ignore[arg-type]
    assert other.status.version == "5" and other.status.step == 0 and other.status.last_analysis_time is None


@given(st.lists(st.sampled_from(["pass", "fail", "inconclusive"]), min_size=1, max_size=12), st.booleans())
@settings(max_examples=200, deadline=None)
def test_canary_weights_only_grow_until_a_verdict(verdicts: list[str], auto_rollback: bool) -> None:
    rules = CANARY.model_copy(update={"auto_rollback": auto_rollback})
    pending, used = list(verdicts), []

    def analysis(window: int) -> Analysis:
        used.append(pending.pop(0))
        return Analysis(used[-1], used[-1])  # type: ignore[arg-type]

    state, now, weights = None, T0, []
    while pending and (state is None or state.verdict == "Analysing"):
        step = advance(
            rules, state, model="bot", version="4", baseline="3", ready=True, now=now, analysis=analysis
        )
        state, now = step.status, now + dt.timedelta(seconds=step.requeue_after or 60)
        weights.append(step.weight)
    assert state is not None and all(w in (0, 10, 25, 50, 100) for w in weights)
    analysing = weights if state.verdict == "Analysing" else weights[:-1]
    assert analysing == sorted(analysing)
    assert state.step == min(used.count("pass"), 3)
    if state.verdict == "Promoted":
        assert weights[-1] == 100 and used.count("pass") == 4 and "fail" not in used
    elif state.verdict == "RolledBack":
        assert auto_rollback and used[-1] == "fail" and weights[-1] == 0
    elif state.verdict == "Halted":
        assert not auto_rollback and used[-1] == "fail" and weights[-1] == weights[-2]
    else:
        assert "fail" not in used and used.count("pass") < 4


def test_prometheus_source_queries_parse() -> None:
    """Every PromQL expression we emit (analysis, KEDA triggers) parses, checked by promtool."""
    queries = list(canary.PrometheusSource("http://x").queries("demo", "bot", "4", 300).values())
    parent, _spec, plan = case("canary")
    queries += list(scaler_queries(parent, plan.versions[0]).values())
    rules = {
        "groups": [{"name": "q", "rules": [{"record": f"q{i}", "expr": q} for i, q in enumerate(queries)]}]
    }
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"llmops-queries-{os.getpid()}.yaml"
    path.write_text(yaml.safe_dump(rules))
    try:
        result = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True)
    finally:
        path.unlink()
    assert result.returncode == 0, result.stdout + result.stderr


# -- alerts: promtool unit tests ---------------------------------------------------------------

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


def rules_text() -> str:
    rule = monitoring.prometheus_rule(ALERTED, owner("support-bot", "prod"), SETTINGS)
    assert rule is not None
    header = "# Generated from a ModelDeployment's PrometheusRule by tests/unit/test_serving_builders.py\n"
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


def test_settings_from_env() -> None:
    s = ServingSettings.from_env(
        {
            "LLMOPS_SERVING_IMAGE": "registry.local/serving:1",
            "LLMOPS_PROMETHEUS_URL": "http://prom:9090",
            "LLMOPS_PROMETHEUS_NAMESPACE_SELECTOR": "team=obs,kubernetes.io/metadata.name=prom",
            "LLMOPS_RESYNC_SECONDS": "60",
        }
    )
    assert s.serving_image == "registry.local/serving:1" and s.prometheus_url == "http://prom:9090"
    assert dict(s.prometheus_namespace_labels) == {"team": "obs", "kubernetes.io/metadata.name": "prom"}
    assert s.resync_seconds == 60
    assert ServingSettings.from_env({}) == ServingSettings()


def test_traffic_split() -> None:
    stable = ServedVersion("bot", "3", "stable", 0, "md-3-vllm")
    cand = ServedVersion("bot", "4", "canary", 0, "md-4-vllm")
    old = ServedVersion("bot", "2", "previous", 0, "md-2-vllm")

    def split(step, retiring=None, ready=("md-3-vllm", "md-4-vllm")):
        return [
            (v.version, v.role, v.weight)
            for v in canary.traffic(
                stable, cand if step else None, step, retiring, ready=lambda n: n in ready
            )
        ]

    def at(weight: int, **kw) -> canary.Step:
        status = CanaryStatus(weight=weight, verdict="Analysing")
        return canary.Step(
            status, weight, serve_canary=kw.get("serve", True), promoted=kw.get("promoted", False)
        )

    assert split(None) == [("3", "stable", 100)]
    assert split(at(25)) == [("3", "stable", 75), ("4", "canary", 25)]
    assert split(at(100, promoted=True)) == [("4", "stable", 100)]
    assert split(at(0, serve=False)) == [("3", "stable", 100)]
    # A replaced version keeps the stable share until the new stable version has a ready replica.
    assert split(None, old, ready=()) == [("3", "stable", 0), ("2", "previous", 100)]
    assert split(at(10), old, ready=("md-4-vllm",)) == [
        ("3", "stable", 0),
        ("2", "previous", 90),
        ("4", "canary", 10),
    ]
    assert split(None, old) == [("3", "stable", 100)]


def test_traffic_never_drops_below_the_stable_replicas() -> None:
    """minReplicas 3: a canary takes all the traffic only with 3 ready replicas; a promoted canary
    takes over from the old stable version only once it has 3, keeping its canary weight meanwhile."""
    stable = ServedVersion("bot", "3", "stable", 0, "md-3-vllm")
    cand = ServedVersion("bot", "4", "canary", 0, "md-4-vllm")
    old = ServedVersion("bot", "3", "previous", 0, "md-3-vllm")

    def split(step, retiring=None, ready=None, carry=0):
        counts = {"md-3-vllm": 3, **(ready or {})}
        return [
            (v.version, v.role, v.weight)
            for v in canary.traffic(
                stable, cand, step, retiring, ready=lambda n: counts.get(n, 0), need=3, carry=carry
            )
        ]

    def at(weight: int, promoted: bool = False) -> canary.Step:
        status = CanaryStatus(weight=weight, verdict="Promoted" if promoted else "Analysing")
        return canary.Step(status, weight, serve_canary=True, promoted=promoted)

    assert canary.canary_replicas(50, 3) == 1 and canary.canary_replicas(100, 3) == 3
    assert split(at(50), ready={"md-4-vllm": 1}) == [("3", "stable", 50), ("4", "canary", 50)]
    assert split(at(100), ready={"md-4-vllm": 1}) == [("3", "stable", 100), ("4", "canary", 0)]
    assert split(at(100), ready={"md-4-vllm": 3}) == [("3", "stable", 0), ("4", "canary", 100)]
    promoted = at(100, promoted=True)
    assert split(promoted, old, {"md-4-vllm": 1}, carry=50) == [("4", "stable", 50), ("3", "previous", 50)]
    assert split(promoted, old, {"md-4-vllm": 0}, carry=50) == [("4", "stable", 0), ("3", "previous", 100)]
    assert split(promoted, old, {"md-4-vllm": 3}, carry=50) == [("4", "stable", 100)]


def test_analysis_window_is_at_least_four_scrapes_and_inconclusive_ones_are_counted() -> None:
    assert ServingSettings(scrape_interval="15s").scrape_seconds == 15
    assert ServingSettings(scrape_interval="1m").scrape_seconds == 60
    assert canary.analysis_window(15) == 60 and canary.analysis_window(0.5) == 2
    short = CANARY.model_copy(
        update={"analysis": CANARY.analysis.model_copy(update={"interval_seconds": 10})}
    )
    windows: list[int] = []

    def nothing(window: int) -> Analysis:
        windows.append(window)
        return Analysis("inconclusive", "no requests reached the canary in the window")

    state = None
    now = T0
    for _ in range(8):
        step = advance(
            short, state, model="bot", version="4", baseline="3", ready=True, now=now, analysis=nothing,
            min_window=60,
        )  # fmt: skip
        assert step.requeue_after is None or step.requeue_after >= 60 or step.status.step_start_time
        state = step.status
        now += dt.timedelta(seconds=60)
    assert windows and set(windows) == {60} and state.window_seconds == 60
    assert state.inconclusive_analyses == len(windows) >= 3 and state.step == 0


def test_config_from_model_deployment_gateway() -> None:
    """spec.gateway onto the gateway's config (moved from tests/serving with gateway_config_for)."""
    local = ObjectStorageLocation(local=LocalLocation(path="/samples"))
    md, base = example("single")
    gateway = Gateway(
        api_keys_secret_ref=SecretRef(name="keys"),
        rate_limit=RateLimit(tokens_per_minute=1000),
        pii_redaction=PiiRedaction(scope="stored", entities=["email"], regions=["GB"]),
        payload_sampling=PayloadSampling(rate=0.5, destination=local),
        max_queue=7,
        queue_timeout_seconds=9,
    )
    plan = Plan((served(md, base, base.model.name, "7", "stable", 100),))
    to_zero = base.autoscaling.model_copy(update={"scale_to_zero": True})
    spec = base.model_copy(update={"gateway": gateway, "autoscaling": to_zero})
    hold = ServingSettings(scale_to_zero_hold_seconds=42)
    cfg = gateway_config(spec, owner(md), plan, hold)
    assert cfg.api_keys_path == API_KEYS_MOUNT
    assert (cfg.max_queue, cfg.queue_timeout_seconds, cfg.scale_to_zero_hold_seconds) == (7, 9, 42)
    assert cfg.pii_redaction == PiiRedaction(scope="stored", entities=["email"], regions=["GB"])
    assert cfg.payload_sampling is not None and cfg.payload_sampling.rate == 0.5
    assert cfg.rate_limit == RateLimit(tokens_per_minute=500)  # each of the 2 gateway replicas: half
    one_replica = spec.model_copy(update={"gateway": gateway.model_copy(update={"replicas": 1})})
    one = gateway_config(one_replica, owner(md), plan, hold)
    assert one.rate_limit == RateLimit(tokens_per_minute=1000)
    no_zero = base.autoscaling.model_copy(update={"scale_to_zero": False})
    plain = gateway_config(
        base.model_copy(update={"gateway": Gateway(), "autoscaling": no_zero}), owner(md), plan, hold
    )
    assert plain.api_keys_path is None and plain.scale_to_zero_hold_seconds == 0
