"""ModelDeployment operator: resolve versions, plan, apply the children, fold their status back.

The handler is `Reconciler.__call__`, run by the shared runtime (operators/runtime.py) on create,
update, resume, when a child Deployment's readiness changes, and when it asked to be run again
(a canary window ending, or the periodic resync that repairs drift). Every run is level-based:
it recomputes the desired children from the spec, the registry and the last status.

    resolve (registry)  ->  vLLM Deployments + Services  ->  canary step / which versions serve
        ->  gateway, autoscalers, budgets, policies, monitoring  ->  delete what is no longer wanted
        ->  status: versions and weights, replicas, endpoint, canary, conditions

The pure parts live beside it: names.py, builders.py, monitoring.py, canary.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import random
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import pydantic
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic.exceptions import DynamicApiError, ResourceNotFoundError

from llmops.api import MODEL_DEPLOYMENT
from llmops.api.common import ModelReference, ObjectStorageLocation
from llmops.api.modeldeployment import ModelDeploymentSpec, ModelDeploymentStatus, ServingVersion
from llmops.registry import ModelVersion, RegistryError, resolve
from llmops.storage import Credentials, ObjectStore
from operators import registry_access, secrets
from operators.modeldeployment import builders, canary
from operators.modeldeployment.builders import Adapter, Plan, ServedVersion, ServingSettings
from operators.modeldeployment.names import endpoint, vllm_name
from operators.outcome import Outcome
from operators.runtime import Child, Context, Kind, existence
from operators.secrets import SecretProblem

STALLED_RETRY_SECONDS = 60  # a missing version or Secret may appear: look again this often
UNAVAILABLE_RETRY_SECONDS = 20
LINGERING_RETRY_SECONDS = 5  # a replaced child whose finalizer is at work: look again this often


class GatesNotPassed(RegistryError):
    pass


class WrongContent(ValueError):
    """A version that cannot be served where the spec puts it (the manifest's `content` says why)."""


def served_model(version: ModelVersion, field_path: str) -> ModelVersion:
    """`version` if it holds a full model (what spec.model and a canary's model serve).

    Raises WrongContent, naming `field_path`, for an adapter-only version.
    """
    content = version.described
    if content.kind != "model":
        base = f" ({content.base})" if content.base else ""
        raise WrongContent(
            f"{field_path}: {version.name}:{version.version} is a LoRA adapter, not a full model;"
            f" serve its base{base} as spec.model and list the adapter under spec.engine.loraAdapters"
        )
    return version


def adapter(name: str, version: ModelVersion) -> Adapter:
    """The LoRA adapter `spec.engine.loraAdapters[name]` serves, from its version's manifest.

    The adapter's folder is the manifest's `content.adapter` (for a lora TrainingJob's version: its
    "adapter" sub-folder beside the merged model). Raises WrongContent, naming the field, for a
    version without an adapter (a full model is served as spec.model; a manifest written before
    `content` existed is read as a full model).
    """
    content = version.described
    if content.adapter is None:
        why = (
            "its manifest predates the content record and is read as a full model without an adapter"
            if version.content is None
            else f"its manifest says: a {'merged ' if content.merged else ''}full model, no adapter"
        )
        raise WrongContent(
            f"spec.engine.loraAdapters[{name}].model: {version.name}:{version.version} holds no LoRA"
            f" adapter ({why}); a full model is served as spec.model, not under loraAdapters"
        )
    return Adapter(name, version.name, version.version, content.adapter)


# -- reading child Deployments -----------------------------------------------------------------


def desired_replicas(deployment: dict) -> int:
    replicas = (deployment.get("spec") or {}).get("replicas")
    return 1 if replicas is None else int(replicas)


def rolled_out(deployment: dict | None) -> bool:
    """The Deployment runs its current template with all the replicas it wants available."""
    if not deployment:
        return False
    status = deployment.get("status") or {}
    want = desired_replicas(deployment)
    return (
        status.get("observedGeneration", 0) >= deployment.get("metadata", {}).get("generation", 1)
        and (status.get("updatedReplicas") or 0) >= want
        and (status.get("availableReplicas") or 0) >= want
    )


def _available(deployment: dict | None) -> int:
    return int(((deployment or {}).get("status") or {}).get("availableReplicas") or 0)


def ready_replicas(deployment: dict | None) -> int:
    return int(((deployment or {}).get("status") or {}).get("readyReplicas") or 0)


def deployment_fingerprint(deployment: dict) -> tuple:
    """What of a child Deployment the parent's status depends on (no poke for other changes)."""
    status = deployment.get("status") or {}
    return (
        desired_replicas(deployment),
        status.get("readyReplicas") or 0,
        status.get("availableReplicas") or 0,
        rolled_out(deployment) if status else False,
    )


# -- caches (process-local, lost on restart, which is harmless) --------------------------------


class _Lru(OrderedDict):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size
        self.lock = threading.Lock()

    def get_(self, key: Any) -> Any:
        with self.lock:
            if key in self:
                self.move_to_end(key)
                return self[key]
            return None

    def put(self, key: Any, value: Any) -> None:
        with self.lock:
            self[key] = value
            self.move_to_end(key)
            while len(self) > self.size:
                self.popitem(last=False)


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class Reconciler:
    """The ModelDeployment reconcile. `settings` default to the operator's environment;
    `metrics` (canary analysis samples) default to Prometheus at settings.prometheus_url."""

    settings: ServingSettings | None = None
    metrics: canary.MetricsSource | None = None
    # (parent uid, child ref) -> (digest of what we applied, when): unchanged children are applied
    # again only after settings.resync_seconds, which repairs drift without re-sending every object
    # on every status change.
    _applied: _Lru = field(default_factory=lambda: _Lru(200_000))

    def current_settings(self) -> ServingSettings:
        if self.settings is None:
            self.settings = ServingSettings.from_env()
        return self.settings

    def metrics_source(self) -> canary.MetricsSource:
        if self.metrics is None:
            self.metrics = canary.PrometheusSource(self.current_settings().prometheus_url)
        return self.metrics

    # -- registry --------------------------------------------------------------------------

    def credentials(self, ctx: Context, location: ObjectStorageLocation) -> Credentials | None:
        return secrets.credentials(ctx.applier.api_client, ctx.namespace, location, "spec.registry")

    @staticmethod
    def resolve(
        store: ObjectStore, ref: ModelReference, field_path: str, allow_ungated: bool
    ) -> ModelVersion:
        try:
            version = resolve(store, ref)
        except RegistryError as e:
            raise RegistryError(f"{field_path}: {e}") from None
        if not version.gates_passed:
            failed = ", ".join(g.metric for g in version.gates if not g.passed)
            raise GatesNotPassed(
                f"{field_path}: {version.name}:{version.version} did not pass its gates ({failed});"
                " only versions whose gates passed are served"
            )
        if version.ungated and not allow_ungated:
            raise GatesNotPassed(
                f"{field_path}: {version.name}:{version.version} was registered without any gate (its"
                " TrainingJob declared none); set spec.allowUngated: true to serve ungated versions"
            )
        return version

    # -- apply -----------------------------------------------------------------------------

    def apply(self, ctx: Context, manifests: list[dict]) -> dict[str, dict]:
        """Apply what changed (or is due for a resync); return the live Deployments by name."""
        uid = ctx.body["metadata"]["uid"]
        resync = self.current_settings().resync_seconds
        live: dict[str, dict] = {}
        for manifest in manifests:
            key = (uid, builders.ref(manifest))
            digest = _digest(manifest)
            cached = self._applied.get_(key)
            is_deployment = manifest["kind"] == "Deployment"
            if cached and cached[0] == digest and time.monotonic() - cached[1] < resync:
                if not is_deployment:
                    continue
                current = ctx.applier.get(
                    "apps/v1", "Deployment", manifest["metadata"]["name"], ctx.namespace
                )
                if current is not None:
                    live[manifest["metadata"]["name"]] = current
                    continue
            result = ctx.applier.apply(manifest)
            self._applied.put(key, (digest, time.monotonic()))
            if is_deployment:
                live[manifest["metadata"]["name"]] = result
        return live

    def forget(self, child: dict) -> None:
        """A child was deleted: the next reconcile applies it again even if it is unchanged."""
        api_version, kind, name = child.get("apiVersion"), child.get("kind"), child["metadata"]["name"]
        for owner in child["metadata"].get("ownerReferences") or []:
            self._applied.pop((owner.get("uid"), f"{api_version}/{kind}/{name}"), None)

    def prune(self, ctx: Context, previous: list[str], wanted: set[str]) -> None:
        """Delete the children the last reconcile applied that this one does not want."""
        uid = ctx.body["metadata"]["uid"]
        for entry in previous:
            if entry in wanted:
                continue
            api_version, kind, name = builders.parse_ref(entry)
            with contextlib.suppress(ResourceNotFoundError):  # its CRD is gone, and so is the object
                ctx.applier.delete(api_version, kind, name, ctx.namespace)
            self._applied.pop((uid, entry), None)

    def clear_the_way(
        self, ctx: Context, previous: list[str], manifests: list[dict], wanted: set[str]
    ) -> tuple[list[dict], list[str]]:
        """Delete, before anything is applied, the children that a wanted one replaces in an exclusive
        slot (builders.EXCLUSIVE: an HPA that a ScaledObject replaces, or the other way round), so that
        every admission rule of the systems we drive holds. Returns the manifests to apply now and the
        predecessors not gone yet (a finalizer at work): their successors wait for a later reconcile."""
        slots = {s: e for e in wanted if (s := builders.exclusive_slot(e))}
        blocking = [
            e for e in previous if e not in wanted and (s := builders.exclusive_slot(e)) and s in slots
        ]
        if not blocking:
            return manifests, []
        uid = ctx.body["metadata"]["uid"]
        held: list[str] = []
        lingering: list[str] = []
        for entry in blocking:
            api_version, kind, name = builders.parse_ref(entry)
            try:
                ctx.applier.delete(api_version, kind, name, ctx.namespace)
                still = ctx.applier.get(api_version, kind, name, ctx.namespace)
            except ResourceNotFoundError:  # its CRD is gone, and so is the object
                still = None
            self._applied.pop((uid, entry), None)
            if still is not None:
                held.append(slots[builders.exclusive_slot(entry)])  # type: ignore[index]
                lingering.append(entry)
        return [m for m in manifests if builders.ref(m) not in held], lingering

    # -- the reconcile ---------------------------------------------------------------------

    def __call__(self, spec: ModelDeploymentSpec, ctx: Context) -> Outcome:
        settings = self.current_settings()
        status = _previous_status(ctx.body)
        try:
            return self._reconcile(spec, ctx, settings, status)
        except SecretProblem as e:
            return self._stalled(ctx, status, "CredentialsNotFound", str(e))
        except GatesNotPassed as e:
            return self._stalled(
                ctx, status, "GatesNotPassed", f"{e}. Deploy a version that passed its gates."
            )
        except WrongContent as e:
            return self._stalled(ctx, status, "WrongContent", f"{e}; retrying.")
        except RegistryError as e:
            return self._stalled(
                ctx, status, "VersionNotFound", f"{e}. Fix the reference or register the version; retrying."
            )
        except ResourceNotFoundError as e:
            return self._stalled(
                ctx, status, "MissingCRD",
                f"{e}: install it (KEDA for autoscaling.engine keda; prometheus-operator for"
                " monitoring, alerts, and the metrics that autoscaling and canary analysis read)"
                " or change the spec so that it is not needed",
            )  # fmt: skip
        except (ApiException, DynamicApiError) as e:
            code = getattr(e, "status", None)
            if code is not None and 400 <= code < 500 and code not in (409, 429):
                return self._stalled(
                    ctx, status, "ApplyFailed", f"the apiserver refused a child: {_api_message(e)}"
                )
            raise  # the runtime retries what heals
        except Exception as e:
            if _storage_error(e):
                return Outcome(
                    "reconciling",
                    status.phase or "Pending",
                    "RegistryUnavailable",
                    f"the registry did not answer ({type(e).__name__}); retrying",
                    requeue_after=UNAVAILABLE_RETRY_SECONDS,
                )
            raise

    def _stalled(self, ctx: Context, status: ModelDeploymentStatus, reason: str, message: str) -> Outcome:
        before = next((c for c in status.conditions if c.type == "Stalled" and c.status == "True"), None)
        if before is None or before.reason != reason:
            ctx.event(reason, message, warning=True)  # once per new reason, not on every retry
        return Outcome("stalled", "Failed", reason, message, requeue_after=STALLED_RETRY_SECONDS)

    def _reconcile(
        self,
        spec: ModelDeploymentSpec,
        ctx: Context,
        settings: ServingSettings,
        status: ModelDeploymentStatus,
    ) -> Outcome:
        md, namespace = ctx.name, ctx.namespace
        now = dt.datetime.now(dt.UTC)

        store = ctx.stores.open(spec.registry, self.credentials(ctx, spec.registry))
        stable = served_model(self.resolve(store, spec.model, "spec.model", spec.allow_ungated), "spec.model")
        spec_canary = spec.rollout.canary if spec.rollout else None
        candidate = (
            served_model(
                self.resolve(store, spec_canary.model, "spec.rollout.canary.model", spec.allow_ungated),
                "spec.rollout.canary.model",
            )
            if spec_canary
            else None
        )
        if candidate is not None and (candidate.name, candidate.version) == (stable.name, stable.version):
            candidate = None  # an alias that now names the stable version: nothing to compare
        adapters = tuple(
            adapter(a.name, v)
            for a in spec.engine.lora_adapters
            for v in [
                self.resolve(store, a.model, f"spec.engine.loraAdapters[{a.name}].model", spec.allow_ungated)
            ]
        )

        def served(model: str, version: str, role: builders.Role, weight: int = 0) -> ServedVersion:
            return ServedVersion(model, version, role, weight, vllm_name(md, model, version, spec.model.name))

        need = builders.stable_replicas(spec)
        stable_v = served(stable.name, stable.version, "stable")
        canary_v = served(candidate.name, candidate.version, "canary") if candidate else None
        previous_state = status.canary if canary_v else None
        same = _same_canary(previous_state, canary_v, stable_v)
        verdict = previous_state.verdict if same and previous_state else None
        retiring = _retiring(status, stable_v, canary_v)
        carry = 0
        if canary_v and spec_canary:
            # Sized for its weight now or at the next step: all the traffic needs the stable's count.
            plan_weights = canary.weights(spec_canary)
            at = previous_state.step if same and previous_state else 0
            upcoming = max(plan_weights[at : at + 2])
            canary_v = dataclasses.replace(canary_v, replicas=canary.canary_replicas(upcoming, need))
            carry = plan_weights[-1]

        # 1. The model servers: their readiness decides the canary's step and the weights. A promoted
        # canary is sized as the stable version and replaces it the way a new version does: the old
        # stable keeps serving, untouched, until the new one has its replicas ready. A rolled-back
        # canary is gone; the stable version was never touched.
        first = [stable_v]
        if verdict == "Promoted" and canary_v:
            first = [dataclasses.replace(canary_v, role="stable", replicas=None)]
            retiring = dataclasses.replace(stable_v, role="previous")
        elif canary_v and verdict != "RolledBack":
            first.append(canary_v)
        version_manifests = builders.version_children(spec, ctx.body, Plan(tuple(first), adapters), settings)
        live = self.apply(ctx, version_manifests)
        if retiring:  # left as it is: only read
            current = ctx.applier.get("apps/v1", "Deployment", retiring.deployment, namespace)
            if current is not None and ready_replicas(current) > 0:
                live[retiring.deployment] = current
            else:
                retiring = None

        # 2. The canary's step, and who takes how much traffic.
        step = None
        if canary_v and spec_canary:
            stable_name = stable_v.version

            def analysis(window: int) -> canary.Analysis:
                source = self.metrics_source()
                try:
                    samples = (
                        source.sample(namespace, md, canary_v.version, window),
                        source.sample(namespace, md, stable_name, window),
                    )
                except Exception as e:  # no verdict without data: hold the step and ask again
                    where = getattr(source, "url", type(source).__name__)
                    return canary.Analysis("inconclusive", f"metrics from {where} unavailable: {e}"[:256])
                return canary.analyse(spec_canary.analysis, *samples)

            step = canary.advance(
                spec_canary,
                previous_state,
                model=canary_v.model,
                version=canary_v.version,
                baseline=stable_v.version,
                ready=ready_replicas(live.get(canary_v.deployment))
                >= canary.canary_replicas(plan_weights[at], need),
                now=now,
                analysis=analysis,
                min_window=canary.analysis_window(settings.scrape_seconds),
            )
            if step.event:
                ctx.event(step.event.reason, step.event.message, warning=step.event.warning)
        versions = canary.traffic(
            stable_v,
            canary_v,
            step,
            retiring,
            ready=lambda name: ready_replicas(live.get(name)),
            need=need,
            carry=carry,
        )
        plan = Plan(tuple(versions), adapters)

        # 3. Everything else, then delete what is no longer wanted.
        wanted = {builders.ref(m) for m in version_manifests if _serves(m, versions)}
        if retiring and any(v.role == "previous" for v in versions):
            wanted |= {f"apps/v1/Deployment/{retiring.deployment}", f"v1/Service/{retiring.deployment}"}
        shared = builders.shared_children(spec, ctx.body, plan, settings)
        inventory = sorted(wanted | {builders.ref(m) for m in shared})
        shared, lingering = self.clear_the_way(ctx, status.inventory, shared, set(inventory))
        live.update(self.apply(ctx, shared))
        inventory = sorted({*inventory, *lingering})  # tracked until they are gone
        self.prune(ctx, status.inventory, set(inventory))

        return self._outcome(spec, ctx, settings, plan, live, step, inventory, lingering)

    def _outcome(
        self,
        spec: ModelDeploymentSpec,
        ctx: Context,
        settings: ServingSettings,
        plan: Plan,
        live: dict[str, dict],
        step: canary.Step | None,
        inventory: list[str],
        lingering: list[str] = (),  # type: ignore[assignment]
    ) -> Outcome:
        md, namespace = ctx.name, ctx.namespace
        serving = [
            ServingVersion(
                name=v.model,
                version=v.version,
                role=v.role,
                weight=v.weight,
                replicas=desired_replicas(live.get(v.deployment) or {}),
                ready_replicas=ready_replicas(live.get(v.deployment)),
                deployment=v.deployment,
            )
            for v in plan.versions
        ]
        fields: dict[str, Any] = {
            "endpoint": endpoint(md, namespace),
            "versions": serving,
            "replicas": sum(v.replicas for v in serving),
            "ready_replicas": sum(v.ready_replicas for v in serving),
            "canary": step.status if step else None,
            "inventory": inventory,
        }
        # Spread the resyncs (objects created together would otherwise all come due together).
        requeue = settings.resync_seconds * random.uniform(0.9, 1.1)
        if step and step.requeue_after is not None:
            requeue = min(requeue, step.requeue_after)

        children = [builders.gateway_name(md), *(v.deployment for v in plan.versions)]
        waiting = [
            f"{name} ({_available(live.get(name))}/{desired_replicas(live.get(name) or {})} available)"
            for name in children
            if not rolled_out(live.get(name))
        ]
        stable = plan.role("stable")
        assert stable is not None
        verdict = step.status.verdict if step else None
        who = f"{stable.model}:{stable.version}"
        if verdict in ("RolledBack", "Halted") and step:
            message = step.status.message or "the canary failed its analysis"
            text = (
                f"canary {step.status.model}:{step.status.version} {verdict.lower()}: {message}."
                f" {who} serves {stable.weight}% of the traffic"
            )
            reason = "RolledBack" if verdict == "RolledBack" else "AnalysisFailed"
            return Outcome("stalled", "Degraded", reason, text, fields, requeue_after=requeue)
        waiting += [f"{entry} to be deleted before its successor is applied" for entry in lingering]
        if lingering:
            requeue = min(requeue, LINGERING_RETRY_SECONDS)
        if waiting:
            text = f"waiting for {', '.join(waiting)}"
            if plan.role("previous"):
                previous = plan.role("previous")
                text += f"; {previous.model}:{previous.version} serves until {who} is ready"  # type: ignore[union-attr]
            return Outcome("reconciling", "Progressing", "Progressing", text, fields, requeue_after=requeue)
        url = fields["endpoint"]
        if desired_replicas(live.get(stable.deployment) or {}) == 0 and spec.autoscaling.scale_to_zero:
            text = f"{who} is scaled to zero; the first request at {url} wakes it"
            return Outcome("ready", "ScaledToZero", "ScaledToZero", text, fields, requeue_after=requeue)
        if verdict == "Analysing" and step:
            s = step.status
            stage = f"step {s.step + 1} of {len(canary.weights(spec.rollout.canary))}"  # type: ignore[union-attr]
            text = f"serving {who} at {url}; canary {s.model}:{s.version} at {step.weight}% ({stage})"
            if s.inconclusive_analyses >= canary.INCONCLUSIVE_AFTER:
                text += (
                    f"; its last {s.inconclusive_analyses} analyses ({s.window_seconds} s windows) reached no"
                    f" verdict: {s.message}. The step holds until one does: check that the canary gets"
                    f" traffic and that {settings.prometheus_url} scrapes the gateway"
                )
                return Outcome("ready", "Ready", "AnalysisInconclusive", text, fields, requeue_after=requeue)
            return Outcome("ready", "Ready", "CanaryAnalysing", text, fields, requeue_after=requeue)
        reason = "Promoted" if verdict == "Promoted" else "Serving"
        text = f"serving {who} at {url} with {fields['ready_replicas']} ready replica(s)"
        return Outcome("ready", "Ready", reason, text, fields, requeue_after=requeue)


def _same_canary(state: Any, canary_v: ServedVersion | None, stable_v: ServedVersion) -> bool:
    """Whether `status.canary` is about this canary against this stable version."""
    if state is None or canary_v is None:
        return False
    return (state.model, state.version, state.baseline_version) == (
        canary_v.model,
        canary_v.version,
        stable_v.version,
    )


def _retiring(
    status: ModelDeploymentStatus, stable: ServedVersion, canary_v: ServedVersion | None
) -> ServedVersion | None:
    """The version that served before the stable one changed, kept until its successor is ready.

    Only one that had ready replicas, and never the new stable or canary itself."""
    by_role = {v.role: v for v in status.versions}
    old = by_role.get("previous") or by_role.get("stable")
    if old is None or not old.deployment or old.ready_replicas == 0:
        return None
    if old.deployment in {stable.deployment, canary_v.deployment if canary_v else None}:
        return None
    return ServedVersion(old.name, old.version, "previous", 0, old.deployment)


def _serves(manifest: dict, versions: list[ServedVersion]) -> bool:
    return manifest["metadata"]["name"] in {v.deployment for v in versions}


def _previous_status(body: dict) -> ModelDeploymentStatus:
    try:
        return ModelDeploymentStatus.model_validate(body.get("status") or {})
    except pydantic.ValidationError:
        return ModelDeploymentStatus()


def _api_message(error: Exception) -> str:
    body = getattr(error, "body", None) or getattr(error, "summary", lambda: "")()
    try:
        return json.loads(body).get("message", str(body))[:1000]
    except (TypeError, ValueError):
        return str(body or error)[:1000]


def _storage_error(error: Exception) -> bool:
    """Errors from object storage that will heal: connection problems, throttling, 5xx."""
    return registry_access.transient(error)


# Every kind of child builders.py and monitoring.py make: a deleted one is put back at once, not at the
# next resync. Deployments also report their readiness; the others only their deletion.
CHILDREN = (
    Child("apps", "v1", "deployments", fingerprint=deployment_fingerprint),
    *(
        Child(group, version, plural, fingerprint=existence)
        for group, version, plural in (
            ("", "v1", "services"),
            ("", "v1", "configmaps"),
            ("autoscaling", "v2", "horizontalpodautoscalers"),
            ("keda.sh", "v1alpha1", "scaledobjects"),
            ("policy", "v1", "poddisruptionbudgets"),
            ("networking.k8s.io", "v1", "networkpolicies"),
            ("monitoring.coreos.com", "v1", "podmonitors"),
            ("monitoring.coreos.com", "v1", "servicemonitors"),
            ("monitoring.coreos.com", "v1", "prometheusrules"),
        )
    ),
)


def make_kind(settings: ServingSettings | None = None, metrics: canary.MetricsSource | None = None) -> Kind:
    reconciler = Reconciler(settings, metrics)
    return Kind(MODEL_DEPLOYMENT, reconciler, children=CHILDREN, child_deleted=reconciler.forget)


KIND = make_kind()
