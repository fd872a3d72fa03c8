"""The ModelDeployment reconcile: the only I/O of this kind. Read facts, call the pure decisions,
apply, return the fold's `Outcome`.

`Reconciler.__call__` is run by the shared runtime (llmops/operators/runtime.py) on create, update, resume,
when a child Deployment's readiness changes, and when it asked to be run again (a canary window
ending, the periodic resync that repairs drift, or the alias poll: a ModelDeployment that names a
model by alias is run at least every `ServingSettings.alias_poll_seconds`, paced beyond
`alias_poll_rate` polls a second in all). Every run is level-based:
it recomputes the desired children from the spec, the registry (read afresh, aliases included) and
the last status.

    resolve (registry)  ->  vLLM Deployments + Services  ->  canary step / which versions serve
        ->  gateway, autoscalers, budgets, policies, monitoring  ->  delete what is no longer wanted
        ->  status (fold.py): versions and weights, replicas, endpoint, canary, conditions

With spec.suspend the same sequence runs with the gateway told at once (`suspension`: it refuses new
requests), the canary held (`canary.frozen`), and every vLLM Deployment at 0 replicas (a replaced
version let go) once the gateway has drained (`drain_wait`: Prometheus, or a time limit); the first reconcile
after it is lifted (the status's `Suspended` condition still True) writes autoscaled versions' floor
of replicas once (`Plan.resuming`) and posts `Resumed`. Every outcome carries the `Suspended`
condition, the early ones below included.

Crash safety: the children no longer wanted are deleted by the inventory (`status.inventory`), and
a child enters it *before* it is first applied (`record_ahead`, the write-ahead rule of
operators/apply.py `write_ahead`): a reconcile that grows the set of children writes the union of the
recorded and the new entries to status first (one status write; the entries of the shared children
are predicted in the same write from the version plan), then applies. Killed between the apply and
the reconcile's own status write, the operator still finds the child in the next reconcile and
deletes it if a spec change made it unwanted meanwhile. The alternative, a sweep by owner label, costs
a list of every child kind on every reconcile (ten kinds: ten lists per object per resync, the load
bench/reconcile_scale.py measures), where the write-ahead costs one status write only when the set of
children grows (creation, a new version or canary, a feature turned on) and nothing in steady state.
Entries recorded ahead but never applied (killed before the apply) cost one delete that finds nothing.

A problem someone must fix (a missing version, Secret or CRD, a child the apiserver refuses) ends the
reconcile early as Stalled, with a Warning Event once per new reason; a registry that does not answer
is retried. The pure parts live beside it: versions.py, plan.py, names.py, builders.py (and the child
modules it lists), canary.py, fold.py, observe.py. This module is about 400 lines because it holds the
whole sequence above plus the apply and prune of the children; every decision in it is a call.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import random
import time
from dataclasses import dataclass, field

from llmops import conditions
from llmops.api import API_VERSION, MODEL_DEPLOYMENT
from llmops.api.common import ModelReference, ObjectStorageLocation
from llmops.api.modeldeployment import ModelDeploymentSpec, ModelDeploymentStatus, Reason, ResolvedAlias
from llmops.operators import backlog, registry_access, retention, secrets
from llmops.operators.apply import Applied, manifest_digest, parse_ref, ref, write_ahead
from llmops.operators.kube import ApiError, KindNotServed
from llmops.operators.modeldeployment import autoscaling, builders, canary, gateway, monitoring
from llmops.operators.modeldeployment.drift import drift_destination, drift_on
from llmops.operators.modeldeployment.fold import SUSPENDED, Facts, fold, suspended_condition
from llmops.operators.modeldeployment.names import vllm_name
from llmops.operators.modeldeployment.observe import DeploymentView, desired_replicas, ready_replicas
from llmops.operators.modeldeployment.plan import (
    Plan,
    Role,
    ServedVersion,
    ServingSettings,
    drain_left,
    drain_wait,
    retiring_version,
    stable_replicas,
)
from llmops.operators.modeldeployment.versions import (
    GatesNotPassed,
    WrongContent,
    adapter,
    gated,
    quantization,
    served_model,
)
from llmops.operators.outcome import Outcome
from llmops.operators.pacing import ResyncPacer
from llmops.operators.runtime import Context
from llmops.operators.secrets import SecretProblem
from llmops.operators.views import ChildViews
from llmops.registry import ModelVersion, RegistryError, resolve
from llmops.storage import Credentials, ObjectStore

# Resyncs come after their period times 1 ± RESYNC_SPREAD (objects created together would otherwise
# all come due together); an unchanged child is applied again once (1 - RESYNC_SPREAD) of the period
# has passed since its last apply, so that every periodic resync applies it.
RESYNC_SPREAD = 0.1
STALLED_RETRY_SECONDS = 60  # a missing version or Secret may appear: look again this often
UNAVAILABLE_RETRY_SECONDS = 20


# Kinds of which one workload may have only one: KEDA's admission webhook refuses a ScaledObject for a
# Deployment that an HPA already scales (https://keda.sh/docs/latest/concepts/admission-webhooks/), and
# two HPAs on one Deployment fight. A child of one of these kinds replaces another of the same name
# only once that one is gone.
EXCLUSIVE = {"HorizontalPodAutoscaler": "autoscaler", "ScaledObject": "autoscaler"}


def exclusive_slot(entry: str) -> tuple[str, str] | None:
    """(slot, name) of an inventory entry that must be alone in its slot (see EXCLUSIVE), else None."""
    _, kind, name = parse_ref(entry)
    slot = EXCLUSIVE.get(kind)
    return (slot, name) if slot else None


@dataclass
class Reconciler:
    """The ModelDeployment reconcile. `settings` default to the operator's environment;
    `metrics` (canary analysis samples) default to Prometheus at settings.prometheus_url."""

    settings: ServingSettings | None = None
    metrics: canary.MetricsSource | None = None
    # Unchanged children are applied again only at a resync (RESYNC_SPREAD), which repairs drift
    # without re-sending every object on every status change.
    _applied: Applied = field(default_factory=Applied)
    # The resync period of each object: settings.resync_seconds, longer with many objects.
    _pacer: ResyncPacer = field(default_factory=ResyncPacer)
    _alias_pacer: ResyncPacer = field(default_factory=ResyncPacer)  # the objects that follow aliases
    # The child Deployments as the watch and our own applies last showed them (operators.views.ChildViews):
    # an unchanged Deployment is read from here, not from the API (make_kind wires the watch to it).
    deployments: ChildViews[DeploymentView] = field(default_factory=lambda: ChildViews(DeploymentView.of))

    def current_settings(self) -> ServingSettings:
        if self.settings is None:
            self.settings = ServingSettings.from_env()
        return self.settings

    def resync_seconds(self, ctx: Context) -> float:
        """This object's resync period (operators.pacing): settings.resync_seconds, or objects ÷
        settings.resync_rate when that is longer, the objects not begun yet counted too."""
        settings = self.current_settings()
        uid, waiting = ctx.body["metadata"]["uid"], backlog.not_begun(MODEL_DEPLOYMENT.plural)
        return self._pacer.period(uid, settings.resync_seconds, settings.resync_rate, waiting)

    def alias_poll_seconds(self, ctx: Context) -> float:
        """How often this object, which follows an alias, reads the registry again (operators.pacing):
        settings.alias_poll_seconds, or the objects that follow aliases ÷ settings.alias_poll_rate when
        that is longer; the objects not begun yet count too (whether they follow an alias is not known
        before they are read: at a mass create, polls come less often until every object is begun)."""
        settings = self.current_settings()
        uid, waiting = ctx.body["metadata"]["uid"], backlog.not_begun(MODEL_DEPLOYMENT.plural)
        return self._alias_pacer.period(uid, settings.alias_poll_seconds, settings.alias_poll_rate, waiting)

    def metrics_source(self) -> canary.MetricsSource:
        if self.metrics is None:
            self.metrics = canary.PrometheusSource(self.current_settings().prometheus_url)
        return self.metrics

    # -- registry --------------------------------------------------------------------------

    def credentials(self, ctx: Context, location: ObjectStorageLocation) -> Credentials | None:
        return secrets.credentials(ctx.applier.kube, ctx.namespace, location, "spec.registry")

    @staticmethod
    def resolve(
        store: ObjectStore, ref: ModelReference, field_path: str, allow_ungated: bool
    ) -> ModelVersion:
        try:
            version = resolve(store, ref)
        except RegistryError as e:
            raise RegistryError(f"{field_path}: {e}") from None
        return gated(version, field_path, allow_ungated)

    # -- apply -----------------------------------------------------------------------------

    def apply(self, ctx: Context, manifests: list[dict]) -> dict[str, dict]:
        """Apply what changed (or is due for a resync); return the live Deployments by name.

        An unchanged Deployment is read from `deployments` (the watch's view, or our last apply's
        answer), from the API only when neither has it; every one applied or read is recorded there."""
        uid = ctx.body["metadata"]["uid"]
        resync = self.resync_seconds(ctx) * (1 - RESYNC_SPREAD)
        live: dict[str, dict] = {}
        for manifest in manifests:
            entry = ref(manifest)
            digest = manifest_digest(manifest)
            cached = self._applied.get(uid, entry)
            is_deployment = manifest["kind"] == "Deployment"
            name = manifest["metadata"]["name"]
            if cached and cached[0] == digest and time.monotonic() - cached[1] < resync:
                if not is_deployment:
                    continue
                current = self.deployment(ctx, name)
                if current is not None:
                    live[name] = current
                    continue
            result = ctx.applier.apply(manifest)
            self._applied.put(uid, entry, digest, time.monotonic())
            if is_deployment:
                self.deployments.note(result)
                live[name] = result
        return live

    def deployment(self, ctx: Context, name: str) -> dict | None:
        """The child Deployment `name` as `deployments` last saw it (a slim one, DeploymentView.body),
        else as the API has it (recorded), or None when there is none."""
        view = self.deployments.get(ctx.namespace, name)
        if view is not None:
            return view.body()
        current = ctx.applier.get("apps/v1", "Deployment", name, ctx.namespace)
        if current is not None:
            self.deployments.note(current)
        return current

    def existing(
        self, ctx: Context, spec: ModelDeploymentSpec, versions: list[ServedVersion]
    ) -> frozenset[str]:
        """Plan.existing: the Deployments of `versions` that exist, looked for (`deployment`: the views,
        else a GET) only where that changes the manifest. An autoscaled version's Deployment that is not
        there yet is created at its autoscaler's start count; one that is there keeps the count its
        autoscaler gave it (vllm.py). Looked for even when the inventory does not list it: a status lost
        (rewritten whole, restored without it) must not shrink a serving Deployment to the start count.
        Not looked for when the start count is the apiserver's default (autoscaling.writes_start_count
        False): the manifest leaves `replicas` out either way."""
        return frozenset(
            v.deployment
            for v in versions
            if autoscaling.writes_start_count(spec, v) and self.deployment(ctx, v.deployment) is not None
        )

    @staticmethod
    def record_ahead(ctx: Context, recorded: set[str], manifests: list[dict]) -> None:
        """Write-ahead: record in status.inventory every child of `manifests` that `recorded` (the
        inventory as written so far) does not list, before any of them is applied; `recorded` grows
        with them. No write when all are listed."""
        grown = write_ahead(recorded, manifests)
        if grown is None:
            return
        ctx.applier.patch_status(
            API_VERSION, MODEL_DEPLOYMENT.kind, ctx.name, ctx.namespace, {"inventory": grown}
        )
        recorded.update(grown)

    def ensure_feedback_key(self, ctx: Context) -> None:
        """Create the Secret of the key that signs completion ids if it is absent
        (gateway.feedback_key_secret): created once and never applied again, so every gateway replica,
        old and new, keeps verifying the ids issued so far; "already exists" is success. Looked at
        again only after a resync period."""
        manifest = gateway.feedback_key_secret(ctx.body)
        uid, entry = ctx.body["metadata"]["uid"], ref(manifest)
        cached = self._applied.get(uid, entry)
        if cached and time.monotonic() - cached[1] < self.resync_seconds(ctx) * (1 - RESYNC_SPREAD):
            return
        if ctx.applier.get("v1", "Secret", manifest["metadata"]["name"], ctx.namespace) is None:
            ctx.applier.create(manifest)  # AlreadyExists (another reconcile made it) is success
        self._applied.put(uid, entry, b"created", time.monotonic())

    def forget(self, child: dict) -> None:
        """A child was deleted: the next reconcile applies it again even if it is unchanged."""
        api_version, kind, name = child.get("apiVersion"), child.get("kind"), child["metadata"]["name"]
        for owner in child["metadata"].get("ownerReferences") or []:
            self._applied.pop(owner.get("uid", ""), f"{api_version}/{kind}/{name}")

    def prune(self, ctx: Context, previous: list[str], wanted: set[str]) -> None:
        """Delete the children recorded (by the last reconcile, or ahead by this one) that this one
        does not want."""
        uid = ctx.body["metadata"]["uid"]
        for entry in previous:
            if entry in wanted:
                continue
            api_version, kind, name = parse_ref(entry)
            with contextlib.suppress(KindNotServed):  # its CRD is gone, and so is the object
                ctx.applier.delete(api_version, kind, name, ctx.namespace)
            self._applied.pop(uid, entry)
            if kind == "Deployment":
                self.deployments.discard(ctx.namespace, name)

    def clear_the_way(
        self, ctx: Context, previous: list[str], manifests: list[dict], wanted: set[str]
    ) -> tuple[list[dict], list[str]]:
        """Delete, before anything is applied, the children that a wanted one replaces in an exclusive
        slot (EXCLUSIVE: an HPA that a ScaledObject replaces, or the other way round), so that
        every admission rule of the systems we drive holds. Returns the manifests to apply now and the
        predecessors not gone yet (a finalizer at work): their successors wait for a later reconcile."""
        slots = {s: e for e in wanted if (s := exclusive_slot(e))}
        blocking = [e for e in previous if e not in wanted and (s := exclusive_slot(e)) and s in slots]
        if not blocking:
            return manifests, []
        uid = ctx.body["metadata"]["uid"]
        held: list[str] = []
        lingering: list[str] = []
        for entry in blocking:
            api_version, kind, name = parse_ref(entry)
            try:
                ctx.applier.delete(api_version, kind, name, ctx.namespace)
                still = ctx.applier.get(api_version, kind, name, ctx.namespace)
            except KindNotServed:  # its CRD is gone, and so is the object
                still = None
            self._applied.pop(uid, entry)
            if still is not None:
                held.append(slots[exclusive_slot(entry)])  # type: ignore[index]
                lingering.append(entry)
        return [m for m in manifests if ref(m) not in held], lingering

    # -- suspend -----------------------------------------------------------------------------

    def drain_wait(
        self,
        ctx: Context,
        status: ModelDeploymentStatus,
        settings: ServingSettings,
        now: dt.datetime,
        servers: list[str],
    ) -> tuple[str | None, float | None]:
        """plan.drain_wait from the facts: the model servers' Deployments (read), when the suspend
        began (the `Suspended` condition), and the gateway's two gauges from Prometheus, read only
        while the servers are not at 0 yet. With it, while they wait, the seconds left of the time
        limit (`settings.suspend_drain_seconds` from when the suspend began): a clock."""
        at_zero = all(
            (d := self.deployment(ctx, name)) is None or desired_replicas(d) == 0 for name in servers
        )
        began = conditions.get_condition(status.conditions, SUSPENDED)
        since = began.last_transition_time if began is not None and began.status == "True" else None
        suspended = inflight = None
        if not at_zero and settings.suspend_drain_seconds > 0:
            suspended, inflight = self.gateway_drain(ctx.namespace, ctx.name)
        why = drain_wait(
            since=since,
            now=now,
            limit=settings.suspend_drain_seconds,
            at_zero=at_zero,
            gateway_suspended=suspended,
            inflight=inflight,
        )
        if why is None:
            return None, None
        return why, drain_left(since=since, now=now, limit=settings.suspend_drain_seconds)

    def gateway_drain(self, namespace: str, md: str) -> tuple[float | None, float | None]:
        """(min of llmops_gateway_suspended, sum of llmops_gateway_inflight_requests) over the
        deployment's gateway pods, from Prometheus; (None, None) when it cannot say."""
        query = getattr(self.metrics_source(), "query", None)
        if query is None:  # a source of canary samples only
            return None, None
        sel = monitoring.selector(namespace, md)
        try:
            return query(f"min(llmops_gateway_suspended{sel})"), query(
                f"sum(llmops_gateway_inflight_requests{sel})"
            )
        except Exception:  # unreachable, refused: only the time limit lets the servers go
            return None, None

    # -- the reconcile ---------------------------------------------------------------------

    def __call__(self, spec: ModelDeploymentSpec, ctx: Context) -> Outcome:
        """One reconcile. A ModelDeployment that names any model by alias is run again within its
        alias poll period whatever the outcome (bounded polling of the registry, never a cached
        resolution), so that an alias move is served within that delay plus the rollout: the period is
        settings.alias_poll_seconds, stretched when more objects follow aliases than
        alias_poll_seconds times alias_poll_rate (`alias_poll_seconds`)."""
        settings = self.current_settings()
        outcome = self._guarded(spec, ctx, settings)
        outcome = retention.reconciled(
            ctx, "ModelDeployment", retention_targets(spec), ctx.status.retention, outcome
        )
        if not any(c[0] == SUSPENDED for c in outcome.conditions):  # the early outcomes say it too
            outcome = dataclasses.replace(
                outcome, conditions=(*outcome.conditions, suspended_condition(spec))
            )
        if aliased(spec):
            outcome = outcome.sooner(self.alias_poll_seconds(ctx) * random.uniform(0.9, 1.0))  # spread
        return outcome

    def _guarded(self, spec: ModelDeploymentSpec, ctx: Context, settings: ServingSettings) -> Outcome:
        status = ctx.status  # the runtime's parse of the current status (ModelDeploymentStatus)
        try:
            return self._reconcile(spec, ctx, settings, status)
        except SecretProblem as e:
            return _stalled(Reason.CREDENTIALS_NOT_FOUND, str(e))
        except GatesNotPassed as e:
            return _stalled(Reason.GATES_NOT_PASSED, f"{e}. Deploy a version that passed its gates.")
        except WrongContent as e:
            return _stalled(Reason.WRONG_CONTENT, f"{e}; retrying.")
        except RegistryError as e:
            return _stalled(
                Reason.VERSION_NOT_FOUND,
                f"{e}. Fix the reference or register the version; retrying.",
            )
        except KindNotServed as e:
            return _stalled(
                Reason.MISSING_CRD,
                f"{e}: install it (KEDA for autoscaling.engine keda; prometheus-operator for"
                " monitoring, alerts, and the metrics that autoscaling and canary analysis read)"
                " or change the spec so that it is not needed",
            )  # fmt: skip
        except ApiError as e:
            code = getattr(e, "status", None)
            if code is not None and 400 <= code < 500 and code not in (409, 429):
                return _stalled(Reason.APPLY_FAILED, f"the apiserver refused a child: {_api_message(e)}")
            raise  # the runtime retries what heals
        except Exception as e:
            if registry_access.refused(e):  # credentials refused, access denied, no bucket, TLS
                return _stalled(
                    Reason.STORAGE_REFUSED,
                    f"cannot read the registry {spec.registry.uri}: {registry_access.describe(e)}",
                )
            if registry_access.transient(e):
                return Outcome(
                    "reconciling",
                    status.phase or "Pending",
                    Reason.REGISTRY_UNAVAILABLE,
                    f"the registry {spec.registry.uri} did not answer ({registry_access.describe(e)});"
                    " retrying",
                    requeue_after=UNAVAILABLE_RETRY_SECONDS,
                    retry=True,
                )
            raise

    def _reconcile(
        self,
        spec: ModelDeploymentSpec,
        ctx: Context,
        settings: ServingSettings,
        status: ModelDeploymentStatus,
    ) -> Outcome:
        md, namespace = ctx.name, ctx.namespace
        now = dt.datetime.now(dt.UTC)

        store = ctx.open_store(spec.registry, self.credentials(ctx, spec.registry), "spec.registry")
        resolved: list[ResolvedAlias] = []  # read from the registry now, never cached

        def lookup(model: ModelReference, field_path: str) -> ModelVersion:
            version = self.resolve(store, model, field_path, spec.allow_ungated)
            if model.version is None:
                alias = model.alias or "latest"
                resolved.append(
                    ResolvedAlias(
                        field_path=field_path, name=model.name, alias=alias, version=version.version
                    )
                )
            return version

        stable = served_model(lookup(spec.model, "spec.model"), "spec.model")
        spec_canary = spec.rollout.canary if spec.rollout else None
        candidate = (
            served_model(lookup(spec_canary.model, "spec.rollout.canary.model"), "spec.rollout.canary.model")
            if spec_canary
            else None
        )
        if candidate is not None and (candidate.name, candidate.version) == (stable.name, stable.version):
            candidate = None  # an alias that now names the stable version: nothing to compare
        adapters = tuple(
            adapter(a.name, v)
            for a in spec.engine.lora_adapters
            for v in [lookup(a.model, f"spec.engine.loraAdapters[{a.name}].model")]
        )

        def served(found: ModelVersion, role: Role, field_path: str) -> ServedVersion:
            name, version = found.name, found.version
            quantized = quantization(found, spec.engine.quantization, field_path, spec.engine.dtype)
            deployment = vllm_name(md, name, version, spec.model.name)
            return ServedVersion(name, version, role, 0, deployment, quantization=quantized)

        need = stable_replicas(spec)
        stable_v = served(stable, "stable", "spec.model")
        canary_v = served(candidate, "canary", "spec.rollout.canary.model") if candidate else None
        previous_state = status.canary if canary_v else None
        same = canary.same_canary(previous_state, canary_v, stable_v)
        verdict = previous_state.verdict if same and previous_state else None
        # Suspended: the gateway refuses new requests at once; the model servers go to 0 once it has
        # drained (`wait` says what they wait for until then). A replaced version is then let go (its
        # successor is at 0 too; it would be deleted at its successor's readiness anyway).
        wait, drain_left = None, None
        if spec.suspend:
            servers = [stable_v.deployment, *([canary_v.deployment] if canary_v else [])]
            wait, drain_left = self.drain_wait(ctx, status, settings, now, servers)
        stopped = spec.suspend and wait is None
        retiring = None if stopped else retiring_version(status, stable_v, canary_v)
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
            retiring = None if stopped else dataclasses.replace(stable_v, role="previous")
        elif canary_v and verdict != "RolledBack":
            first.append(canary_v)
        resuming = not spec.suspend and conditions.is_true(status.conditions, SUSPENDED)
        existing = self.existing(ctx, spec, first)
        version_manifests = builders.version_children(
            spec,
            ctx.body,
            Plan(tuple(first), adapters, resuming=resuming, draining=wait is not None, existing=existing),
            settings,
        )
        recorded = set(status.inventory)  # the inventory as written so far (record_ahead)
        if write_ahead(recorded, version_manifests) is not None:
            # A new version: its shared children (an autoscaler) are likely new too. Predicted from this
            # plan of versions and recorded in the same write; step 3 records what the prediction missed.
            weighed = tuple(dataclasses.replace(v, weight=100 if v is first[0] else 0) for v in first)
            predicted = builders.shared_children(
                spec, ctx.body, Plan(weighed, adapters, draining=wait is not None), settings
            )
            self.record_ahead(ctx, recorded, [*version_manifests, *predicted])
        live = self.apply(ctx, version_manifests)
        if retiring:  # left as it is: only read
            current = self.deployment(ctx, retiring.deployment)
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

            if spec.suspend:  # held as it is: no analysis while nothing serves
                step = canary.frozen(
                    spec_canary,
                    previous_state,
                    model=canary_v.model,
                    version=canary_v.version,
                    baseline=stable_v.version,
                )
            else:
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
                ctx.event(
                    step.event.reason,
                    step.event.message,
                    warning=step.event.warning,
                    model=canary_v.model,
                    version=canary_v.version,
                    details={"baseline": stable_v.version},
                )
        versions = canary.traffic(
            stable_v,
            canary_v,
            step,
            retiring,
            ready=lambda name: ready_replicas(live.get(name)),
            need=need,
            carry=carry,
        )
        plan = Plan(tuple(versions), adapters, draining=wait is not None)
        if resuming:
            ctx.event(
                "Resumed",
                f"spec.suspend is false: {md} serves again, its replicas and autoscalers as the spec says",
            )

        # 3. Everything else, then delete what is no longer wanted.
        wanted = {ref(m) for m in version_manifests if _serves(m, versions)}
        if retiring and any(v.role == "previous" for v in versions):
            wanted |= {f"apps/v1/Deployment/{retiring.deployment}", f"v1/Service/{retiring.deployment}"}
        shared = builders.shared_children(spec, ctx.body, plan, settings)
        if gateway.feedback_on(spec):  # before the gateway that mounts it
            self.ensure_feedback_key(ctx)
        inventory = sorted(wanted | {ref(m) for m in shared})
        shared, lingering = self.clear_the_way(ctx, status.inventory, shared, set(inventory))
        self.record_ahead(ctx, recorded, shared)
        live.update(self.apply(ctx, shared))
        inventory = sorted({*inventory, *lingering})  # tracked until they are gone
        self.prune(ctx, sorted(recorded), set(inventory))

        facts = Facts(
            spec,
            md,
            namespace,
            settings,
            plan,
            live,
            step,
            inventory,
            lingering,
            resync_after=self.resync_seconds(ctx) * random.uniform(1 - RESYNC_SPREAD, 1 + RESYNC_SPREAD),
            aliases=tuple(resolved),
            draining=wait,
            drain_left=drain_left,
        )
        return fold(facts)


def retention_targets(spec: ModelDeploymentSpec) -> list[retention.Target]:
    """The stores of the data this deployment's gateway writes, with the spec's retentionDays."""
    sampling, drift = spec.gateway.payload_sampling, spec.monitoring.drift
    feedback = spec.gateway.feedback
    return retention.deployment_targets(
        sampling.destination if sampling else None,
        sampling.retention_days if sampling else None,
        gateway.feedback_on(spec),
        feedback.retention_days if feedback else None,
        drift_destination(spec) if drift_on(spec) else None,
        drift.retention_days if drift else None,
    )


def aliased(spec: ModelDeploymentSpec) -> bool:
    """Whether any model reference of the spec names an alias (no version: `latest` included)."""
    canary_ref = spec.rollout.canary.model if spec.rollout and spec.rollout.canary else None
    refs = [spec.model, canary_ref, *(a.model for a in spec.engine.lora_adapters)]
    return any(r is not None and r.version is None for r in refs)


def _stalled(reason: str, message: str) -> Outcome:
    """Stuck until something changes; looked at again every STALLED_RETRY_SECONDS, a retry (the runtime
    paces them, and posts the Warning Event, once per new reason)."""
    return Outcome("stalled", "Failed", reason, message, requeue_after=STALLED_RETRY_SECONDS, retry=True)


def _serves(manifest: dict, versions: list[ServedVersion]) -> bool:
    return manifest["metadata"]["name"] in {v.deployment for v in versions}


def _api_message(error: ApiError) -> str:
    return (error.message or str(error))[:1000]
