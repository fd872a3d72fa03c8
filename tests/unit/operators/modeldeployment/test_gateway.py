"""The gateway and the spec -> gateway config mapping (llmops/operators/modeldeployment/gateway.py)."""

from __future__ import annotations

from llmops.api.common import LocalLocation, ObjectStorageLocation, SecretRef
from llmops.api.modeldeployment import (
    Gateway,
    ModelDeploymentSpec,
    PayloadSampling,
    PiiRedaction,
    RateLimit,
)
from llmops.gateway_config import API_KEYS_MOUNT, GatewayConfig
from llmops.operators.modeldeployment.builders import build
from llmops.operators.modeldeployment.gateway import gateway_config
from llmops.operators.modeldeployment.plan import Plan, ServedVersion, ServingSettings
from tests.unit.operators.modeldeployment.cases import (
    SETTINGS,
    case,
    example,
    objects,
    owner,
    served,
)


def test_gateway() -> None:
    objs = objects("single")
    svc = objs[("Service", "support-bot-gateway")]["spec"]
    assert svc["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    pod = objs[("Deployment", "support-bot-gateway")]["spec"]["template"]["spec"]
    gw = pod["containers"][0]
    assert gw["command"][:3] == ["python", "-m", "llmops.serving.gateway"]
    assert gw["ports"][0]["containerPort"] == 8000
    api_keys = {"secretName": "support-bot-api-keys", "defaultMode": 0o440}  # owner and fsGroup only
    assert {"name": "api-keys", "secret": api_keys} in pod["volumes"]
    config = GatewayConfig.model_validate_json(
        objs[("ConfigMap", "support-bot-gateway")]["data"]["config.json"]
    )
    # 600 requests a minute for the whole gateway: each of its 2 replicas enforces half.
    assert config.rate_limit and config.rate_limit.requests_per_minute == 300
    assert gw["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}
    assert config.served_model_name == "support-bot"
    assert objects("scale-to-zero")[("ConfigMap", "report-writer-gateway")]["data"]["config.json"].count(
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


def test_the_gateway_never_gets_the_registrys_credentials() -> None:
    """One Secret per purpose (issue 12, point 6): with drift on, the gateway writes the prompts with
    the payload samples' Secret, or with that of monitoring.drift.prompts when sampling is off; a spec
    that would leave it only the registry, or hand the registry's Secret to the prompts, is refused."""
    import pytest
    from pydantic import ValidationError

    md, spec = example("canary")  # drift on, payload sampling on
    registry = {"s3": {"bucket": "models", "credentialsSecretRef": {"name": "registry-credentials"}}}
    drift = spec.monitoring.drift.model_dump(by_alias=True, exclude_none=True)  # type: ignore[union-attr]

    def gateway_secrets(spec: ModelDeploymentSpec) -> set[str]:
        objs = build(spec, owner(md), Plan(versions=[served(md, spec, "m", "1", "stable", 100)]), SETTINGS)
        pod = next(
            o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-gateway")
        )
        env = pod["spec"]["template"]["spec"]["containers"][0].get("env", [])
        return {
            e["valueFrom"]["secretKeyRef"]["name"] for e in env if "secretKeyRef" in e.get("valueFrom", {})
        }

    with_sampling = spec.model_copy(update={"registry": ObjectStorageLocation.model_validate(registry)})
    assert gateway_secrets(with_sampling) == {"payload-credentials"}
    base = with_sampling.to_dict()
    base["gateway"].pop("payloadSampling")
    with pytest.raises(ValidationError, match=r"monitoring\.drift\.prompts is required"):
        ModelDeploymentSpec.model_validate(base)
    prompts = {"s3": {"bucket": "drift", "credentialsSecretRef": {"name": "drift-prompts"}}}
    base["monitoring"]["drift"] = {**drift, "prompts": prompts}
    assert gateway_secrets(ModelDeploymentSpec.model_validate(base)) == {"drift-prompts"}
    base["monitoring"]["drift"]["prompts"] = {
        "s3": {**prompts["s3"], "credentialsSecretRef": {"name": "registry-credentials"}}
    }
    with pytest.raises(ValidationError, match="must not use the registry's Secret"):
        ModelDeploymentSpec.model_validate(base)


def test_feedback_is_on_with_payload_sampling_and_signs_with_the_deployments_key() -> None:
    """Feedback (docs/operations.md, User feedback): on with payload sampling, beside its samples, unless
    gateway.feedback.enabled is false; refused without payload sampling; the key's Secret is mounted."""
    import re

    import pytest
    from pydantic import ValidationError

    from llmops.api.modeldeployment import Feedback
    from llmops.gateway_config import FEEDBACK_KEY_MOUNT
    from llmops.operators.modeldeployment.gateway import feedback_key_secret, feedback_on

    md, spec = example("canary")  # payload sampling on
    plan = Plan((served(md, spec, spec.model.name, "7", "stable", 100),))
    cfg = gateway_config(spec, owner(md), plan, SETTINGS)
    assert feedback_on(spec) and cfg.feedback is not None
    assert cfg.feedback.destination == spec.gateway.payload_sampling.destination  # type: ignore[union-attr]
    assert cfg.feedback.key_path == f"{FEEDBACK_KEY_MOUNT}/key" and cfg.feedback.id_ttl_seconds == 604800
    assert cfg.feedback.model_deployment == md
    objs = build(spec, owner(md), plan, SETTINGS)
    pod = next(o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-gateway"))
    volumes = pod["spec"]["template"]["spec"]["volumes"]
    assert {
        "name": "feedback-key",
        "secret": {"secretName": f"{md}-feedback-key", "defaultMode": 0o440},
    } in volumes
    assert not any(o["kind"] == "Secret" for o in objs)  # created once by the reconcile, never applied

    ttl = spec.model_copy(
        update={"gateway": spec.gateway.model_copy(update={"feedback": Feedback(id_ttl_seconds=60)})}
    )
    assert gateway_config(ttl, owner(md), plan, SETTINGS).feedback.id_ttl_seconds == 60  # type: ignore[union-attr]
    off = spec.model_copy(
        update={"gateway": spec.gateway.model_copy(update={"feedback": Feedback(enabled=False)})}
    )
    assert not feedback_on(off) and gateway_config(off, owner(md), plan, SETTINGS).feedback is None
    assert not feedback_on(example("single")[1])  # no payload sampling: no feedback

    base = spec.to_dict()
    base["gateway"].pop("payloadSampling")
    base["monitoring"]["drift"]["prompts"] = {"s3": {"bucket": "drift"}}
    ModelDeploymentSpec.model_validate(base)  # feedback omitted: off
    base["gateway"]["feedback"] = {}
    with pytest.raises(ValidationError, match=r"gateway\.feedback needs gateway\.payloadSampling"):
        ModelDeploymentSpec.model_validate(base)
    base["gateway"]["feedback"] = {"enabled": False}
    ModelDeploymentSpec.model_validate(base)

    secret = feedback_key_secret(owner(md))
    assert secret["metadata"]["name"] == f"{md}-feedback-key"
    assert secret["metadata"]["ownerReferences"][0]["kind"] == "ModelDeployment"
    assert re.fullmatch("[0-9a-f]{64}", secret["stringData"]["key"])
    assert feedback_key_secret(owner(md))["stringData"] != secret["stringData"]  # random each time


def test_a_suspend_reaches_the_gateway_live_without_restarting_it() -> None:
    """spec.suspend adds `suspension` to the gateway's config, which the gateway reloads live: the
    gateway's pods are not rolled (their in-flight requests finish where they are)."""
    parent, spec, plan = case("canary")
    suspended = spec.model_copy(update={"suspend": True})
    config = gateway_config(suspended, parent, plan, SETTINGS)
    assert config.suspension is not None
    assert (config.suspension.model_deployment, config.suspension.namespace) == ("support-bot-canary", "demo")
    assert gateway_config(spec, parent, plan, SETTINGS).suspension is None
    assert [u.weight for u in config.upstreams] == [75, 25]  # kept: the config stays valid

    def digest(s: ModelDeploymentSpec) -> str:
        gateway = next(
            m for m in build(s, parent, plan, SETTINGS)
            if m["kind"] == "Deployment" and m["metadata"]["name"].endswith("-gateway")
        )  # fmt: skip
        return gateway["spec"]["template"]["metadata"]["annotations"]["llmops.io/config-digest"]

    assert digest(spec) == digest(suspended)


def test_gateway_tls_mounts_the_certificate_secret_and_serves_https() -> None:
    from llmops.api.modeldeployment import GatewayTls
    from llmops.operators.modeldeployment.fold import endpoint

    parent, spec, plan = case("single")
    spec = spec.model_copy(
        update={"gateway": spec.gateway.model_copy(update={"tls": GatewayTls(secret_name="support-bot-tls")})}
    )
    objs = {(m["kind"], m["metadata"]["name"]): m for m in build(spec, parent, plan, SETTINGS)}
    pod = objs[("Deployment", "support-bot-gateway")]["spec"]["template"]["spec"]
    gw = pod["containers"][0]
    assert {"name": "tls", "secret": {"secretName": "support-bot-tls", "defaultMode": 0o440}} in pod[
        "volumes"
    ]
    assert {"name": "tls", "mountPath": "/etc/llmops/tls", "readOnly": True} in gw["volumeMounts"]
    assert gw["command"][-2:] == ["--tls-dir", "/etc/llmops/tls"]
    assert gw["ports"] == [{"name": "https", "containerPort": 8000, "protocol": "TCP"}]
    for probe in ("readinessProbe", "livenessProbe"):
        assert gw[probe]["httpGet"]["scheme"] == "HTTPS" and gw[probe]["httpGet"]["port"] == "https"
    svc = objs[("Service", "support-bot-gateway")]["spec"]
    assert svc["ports"] == [{"name": "https", "port": 443, "targetPort": "https", "protocol": "TCP"}]
    assert endpoint("support-bot", "ns", True) == "https://support-bot-gateway.ns.svc/v1"
    monitors = [m for m in objs.values() if m["kind"] == "ServiceMonitor"]
    assert monitors
    for monitor in monitors:
        (scrape,) = monitor["spec"]["endpoints"]
        assert scrape["scheme"] == "https" and scrape["port"] == "https"
        assert scrape["tlsConfig"]["ca"]["secret"] == {"name": "support-bot-tls", "key": "ca.crt"}
    # Without tls nothing changes: plain HTTP on port 80 (the golden files hold the rest).
    plain = objects("single")
    assert (
        "--tls-dir"
        not in plain[("Deployment", "support-bot-gateway")]["spec"]["template"]["spec"]["containers"][0][
            "command"
        ]
    )
    assert ModelDeploymentSpec.model_validate(
        {**spec.model_dump(by_alias=True, exclude_none=True), "gateway": {"tls": {"secretName": "x"}}}
    ).gateway.tls == GatewayTls(secret_name="x")
