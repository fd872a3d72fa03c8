"""Pure builders: a ModelDeployment's spec and plan in, the child manifests out.

Nothing here talks to the cluster or the registry: the reconcile resolves versions and decides
weights (the `Plan`), these functions render it. Golden files in tests/unit/golden/modeldeployment/
hold their output for every example.

Children of ModelDeployment `<md>` (names are deterministic; see `names`), and the module that
builds each:

    Deployment + headless Service  <md>-<version>-vllm     vllm.py: one per served version (stable,
                                                          canary, and a replaced version until its
                                                          successor is ready)
    ScaledObject (KEDA) or HPA     <md>-<version>-vllm     autoscaling.py: one per served version
                                                          that autoscales
    ConfigMap                      <md>-gateway            gateway.py: the gateway's config.json
                                                          (llmops.gateway_config)
    Deployment + Service           <md>-gateway            gateway.py: the gateway; Service port
                                                          80 -> 8000
    PodDisruptionBudget            <md>-vllm, <md>-gateway policies.py
    NetworkPolicy                  <md>-default-deny, <md>-vllm, <md>-gateway (<md>-drift)  policies.py
    Deployment                     <md>-drift              drift.py: with spec.monitoring.drift
    PodMonitor / ServiceMonitor    <md>-vllm / <md>-gateway   monitoring.py: with
                                                          spec.monitoring.serviceMonitor
    ConfigMap                      <md>-dashboard          monitoring.py: Grafana dashboard, same
                                                          condition
    PrometheusRule                 <md>-slo                monitoring.py: with spec.monitoring.alerts

Pod pieces every kind shares (security contexts, probes, credentials by reference, the owned-object
skeleton) are in llmops/operators/manifests.py.
"""

from __future__ import annotations

from llmops.api.modeldeployment import ModelDeploymentSpec
from llmops.operators.manifests import Manifest
from llmops.operators.modeldeployment import autoscaling, drift, gateway, monitoring, policies, vllm
from llmops.operators.modeldeployment.plan import Plan, ServingSettings


def version_children(
    spec: ModelDeploymentSpec, owner: Manifest, plan: Plan, settings: ServingSettings
) -> list[Manifest]:
    """The per-version Deployments and Services (their status decides the weights).

    A version being replaced ("previous") is left as it is, untouched by spec changes, until its
    successor is ready; only its upstream stays in the gateway's config meanwhile.
    """
    out = []
    for served in plan.versions:
        if served.role != "previous":
            out.append(
                vllm.vllm_deployment(
                    spec,
                    owner,
                    served,
                    plan.adapters,
                    settings,
                    resuming=plan.resuming,
                    draining=plan.draining,
                    exists=served.deployment in plan.existing,
                )
            )
            out.append(vllm.vllm_service(owner, served))
    return out


def shared_children(
    spec: ModelDeploymentSpec, owner: Manifest, plan: Plan, settings: ServingSettings
) -> list[Manifest]:
    """Everything else: autoscalers, the gateway, budgets, policies, monitoring."""
    out = []
    for served in plan.versions:
        if autoscaling.autoscaled(spec, served.role):
            if spec.autoscaling.engine == "keda":
                out.append(autoscaling.scaled_object(spec, owner, served, settings, draining=plan.draining))
            else:
                out.append(autoscaling.hpa(spec, owner, served))
    config = gateway.gateway_config(spec, owner, plan, settings)  # once: the ConfigMap and the digest
    out += [
        gateway.gateway_configmap(owner, config),
        gateway.gateway_deployment(spec, owner, config, settings),
        gateway.gateway_service(owner, spec),
        *policies.disruption_budgets(owner),
        *drift.drift_monitor(spec, owner, settings),
        *policies.network_policies(owner, settings, drift=drift.drift_on(spec)),
        *monitoring.children(spec, owner, settings),
    ]
    return out


def build(
    spec: ModelDeploymentSpec, owner: Manifest, plan: Plan, settings: ServingSettings
) -> list[Manifest]:
    """Every child of the ModelDeployment for this plan."""
    return [*version_children(spec, owner, plan, settings), *shared_children(spec, owner, plan, settings)]
