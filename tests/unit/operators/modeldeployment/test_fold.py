"""The status fold (llmops/operators/modeldeployment/fold.py): one test per row of its docstring's table,
first row first, plus the status fields and the requeue every row shares."""

from __future__ import annotations

import dataclasses

import pytest

from llmops.api.modeldeployment import CanaryStatus, ModelDeploymentSpec, Reason, ResolvedAlias
from llmops.operators.modeldeployment import canary
from llmops.operators.modeldeployment.fold import DRAIN_POLL_SECONDS, LINGERING_RETRY_SECONDS, Facts, fold
from llmops.operators.modeldeployment.plan import Plan, ServedVersion
from tests.unit.operators.modeldeployment.cases import SETTINGS, example

STABLE = ServedVersion("support-bot", "3", "stable", 100, "md-3-vllm")
CANARY = ServedVersion("support-bot", "4", "canary", 25, "md-4-vllm", replicas=1)
PREVIOUS = ServedVersion("support-bot", "2", "previous", 0, "md-2-vllm")
INVENTORY = ["apps/v1/Deployment/md-3-vllm", "apps/v1/Deployment/md-gateway"]


def deployment(replicas: int | None = 1, available: int | None = None, ready: int | None = None) -> dict:
    """A Deployment as the API returns it; rolled out unless fewer replicas are available than wanted."""
    want = 1 if replicas is None else replicas
    available = want if available is None else available
    return {
        "metadata": {"generation": 2},
        "spec": {} if replicas is None else {"replicas": replicas},
        "status": {
            "observedGeneration": 2,
            "updatedReplicas": want,
            "availableReplicas": available,
            "readyReplicas": available if ready is None else ready,
        },
    }


def spec(name: str = "canary") -> ModelDeploymentSpec:
    return example(name)[1]


def step(verdict: str, *, weight: int = 25, requeue_after: float | None = None, **status) -> canary.Step:
    state = CanaryStatus(
        weight=weight, verdict=verdict, model="support-bot", version="4", baseline_version="3", **status
    )  # type: ignore[arg-type]
    return canary.Step(state, weight, serve_canary=verdict != "RolledBack", promoted=verdict == "Promoted",
                       requeue_after=requeue_after)  # fmt: skip


def facts(
    *versions: ServedVersion,
    live: dict | None = None,
    md_spec: ModelDeploymentSpec | None = None,
    canary_step: canary.Step | None = None,
    lingering: tuple[str, ...] = (),
    aliases: tuple[ResolvedAlias, ...] = (),
) -> Facts:
    plan = Plan(versions or (STABLE,))
    if live is None:
        live = {"md-gateway": deployment(2), **{v.deployment: deployment() for v in plan.versions}}
    return Facts(
        md_spec or spec(),
        "md",
        "demo",
        SETTINGS,
        plan,
        live,
        canary_step,
        INVENTORY,
        lingering,
        resync_after=300,
        aliases=aliases,
    )


def test_serving_when_everything_is_rolled_out() -> None:
    out = fold(facts())
    assert (out.state, out.phase, out.reason) == ("ready", "Ready", Reason.SERVING)
    assert out.message == "serving support-bot:3 at http://md-gateway.demo.svc/v1 with 1 ready replica(s)"
    assert out.requeue_after == 300
    fields = out.status
    assert fields["endpoint"] == "http://md-gateway.demo.svc/v1" and fields["inventory"] == INVENTORY
    assert (fields["replicas"], fields["ready_replicas"], fields["canary"], fields["aliases"]) == (
        1,
        1,
        None,
        [],
    )
    (version,) = fields["versions"]
    assert (version.name, version.version, version.role, version.weight, version.deployment) == (
        "support-bot",
        "3",
        "stable",
        100,
        "md-3-vllm",
    )


def test_sums_over_every_served_version() -> None:
    live = {"md-gateway": deployment(2), "md-3-vllm": deployment(3, ready=2), "md-4-vllm": deployment(1)}
    out = fold(facts(STABLE, CANARY, live=live, canary_step=step("Analysing")))
    assert (out.status["replicas"], out.status["ready_replicas"]) == (4, 3)
    assert [v.ready_replicas for v in out.status["versions"]] == [2, 1]


@pytest.mark.parametrize(
    ("verdict", "reason"), [("RolledBack", Reason.ROLLED_BACK), ("Halted", Reason.ANALYSIS_FAILED)]
)
def test_a_failed_canary_degrades_even_while_children_roll_out(verdict: str, reason: str) -> None:
    waiting = {"md-gateway": deployment(2, available=0), "md-3-vllm": deployment()}
    failed = step(verdict, message="error rate 0.12 > 0.02")
    out = fold(facts(STABLE, live=waiting, canary_step=failed))
    assert (out.state, out.phase, out.reason) == ("stalled", "Degraded", reason)
    assert out.message == (
        f"canary support-bot:4 {verdict.lower()}: error rate 0.12 > 0.02. support-bot:3 serves 100% of the"
        " traffic"
    )
    assert out.status["canary"] is failed.status


def test_a_failed_canary_without_a_message_says_it_failed_its_analysis() -> None:
    out = fold(facts(canary_step=step("RolledBack")))
    assert "rolledback: the canary failed its analysis." in out.message


def test_progressing_while_a_child_is_not_rolled_out() -> None:
    live = {"md-gateway": deployment(2, available=1), "md-3-vllm": deployment(None, available=0)}
    out = fold(facts(live=live))
    assert (out.state, out.phase, out.reason) == ("reconciling", "Progressing", Reason.PROGRESSING)
    assert out.message == "waiting for md-gateway (1/2 available), md-3-vllm (0/1 available)"
    missing = fold(facts(live={"md-gateway": deployment(2)}))  # not created yet
    assert missing.message == "waiting for md-3-vllm (0/1 available)"


def test_a_replaced_version_serves_until_its_successor_is_ready() -> None:
    live = {"md-gateway": deployment(2), "md-3-vllm": deployment(1, available=0), "md-2-vllm": deployment()}
    out = fold(facts(STABLE, PREVIOUS, live=live))
    assert out.reason == Reason.PROGRESSING
    assert out.message.endswith("; support-bot:2 serves until support-bot:3 is ready")


def test_a_lingering_predecessor_keeps_it_progressing_and_is_looked_at_again_soon() -> None:
    entry = "autoscaling/v2/HorizontalPodAutoscaler/md-3-vllm"
    out = fold(facts(lingering=(entry,)))
    assert (out.state, out.reason) == ("reconciling", Reason.PROGRESSING)
    assert out.message == f"waiting for {entry} to be deleted before its successor is applied"
    assert out.requeue_after == LINGERING_RETRY_SECONDS and out.poll  # a finalizer elsewhere: a poll


def test_scaled_to_zero() -> None:
    idle = {"md-gateway": deployment(2), "md-3-vllm": deployment(0)}
    out = fold(facts(live=idle, md_spec=spec("scale-to-zero")))
    assert (out.state, out.phase, out.reason) == ("ready", "ScaledToZero", Reason.SCALED_TO_ZERO)
    assert (
        out.message
        == "support-bot:3 is scaled to zero; the first request at http://md-gateway.demo.svc/v1 wakes it"
    )
    # Zero replicas without spec.autoscaling.scaleToZero is not "scaled to zero".
    assert fold(facts(live=idle, md_spec=spec("single"))).reason == Reason.SERVING


def test_canary_analysing() -> None:
    out = fold(facts(STABLE, CANARY, canary_step=step("Analysing", step=1)))
    assert (out.state, out.phase, out.reason) == ("ready", "Ready", Reason.CANARY_ANALYSING)
    n = len(canary.weights(spec().rollout.canary))  # type: ignore[union-attr]
    assert out.message == (
        f"serving support-bot:3 at http://md-gateway.demo.svc/v1; canary support-bot:4 at 25% (step 2 of {n})"
    )


def test_canary_analyses_without_a_verdict_are_reported() -> None:
    quiet = step(
        "Analysing",
        inconclusive_analyses=canary.INCONCLUSIVE_AFTER,
        window_seconds=60,
        message="no requests reached the canary in the window",
    )
    out = fold(facts(STABLE, CANARY, canary_step=quiet))
    assert (out.state, out.phase, out.reason) == ("ready", "Ready", Reason.ANALYSIS_INCONCLUSIVE)
    assert f"its last {canary.INCONCLUSIVE_AFTER} analyses (60 s windows) reached no verdict" in out.message
    assert SETTINGS.prometheus_url in out.message
    fewer = step("Analysing", inconclusive_analyses=canary.INCONCLUSIVE_AFTER - 1)
    assert fold(facts(STABLE, CANARY, canary_step=fewer)).reason == Reason.CANARY_ANALYSING


def test_promoted() -> None:
    out = fold(facts(canary_step=step("Promoted", weight=100)))
    assert (out.state, out.phase, out.reason) == ("ready", "Ready", Reason.PROMOTED)
    assert out.message.startswith("serving support-bot:3 at ")


def test_the_canary_clock_can_bring_the_next_reconcile_forward() -> None:
    assert fold(facts(STABLE, CANARY, canary_step=step("Analysing", requeue_after=40))).requeue_after == 40
    assert fold(facts(STABLE, CANARY, canary_step=step("Analysing", requeue_after=900))).requeue_after == 300


def test_the_aliases_it_resolved_are_in_the_status() -> None:
    champion = ResolvedAlias(field_path="spec.model", name="support-bot", alias="champion", version="3")
    out = fold(facts(aliases=(champion,)))
    assert out.status["aliases"] == [champion]
    assert champion.to_dict() == {"fieldPath": "spec.model", "name": "support-bot", "alias": "champion",
                                  "version": "3"}  # fmt: skip


def stopped(generation: int = 2, observed: int = 2, pods: int = 0) -> dict:
    """A model server's Deployment at 0 replicas, `pods` of them still there."""
    return {
        "metadata": {"generation": generation},
        "spec": {"replicas": 0},
        "status": {"observedGeneration": observed, "replicas": pods, "readyReplicas": pods},
    }


def test_suspended_while_pods_stop_then_ready() -> None:
    """The first row: spec.suspend wins over everything else (a rolled-back canary too); Reconciling
    while a served version still has pods or its controller has not seen the 0, then Ready; the
    `Suspended` condition is True either way."""
    suspended = spec().model_copy(update={"suspend": True})
    gateway = {"md-gateway": deployment(2)}
    live = {**gateway, "md-3-vllm": stopped(pods=1), "md-4-vllm": stopped(generation=3)}
    out = fold(facts(STABLE, CANARY, live=live, md_spec=suspended, canary_step=step("RolledBack")))
    assert (out.state, out.phase, out.reason) == ("reconciling", "Suspended", Reason.SUSPENDED)
    assert "md-3-vllm (1 pods), md-4-vllm (0 pods)" in out.message
    assert "503 model_suspended" in out.message
    assert out.conditions == (
        (
            "Suspended",
            True,
            Reason.SUSPENDED,
            "spec.suspend is true: every version at 0 replicas; the gateway answers 503 model_suspended",
        ),
    )
    assert out.status["canary"].verdict == "RolledBack"  # the machine's state stays in the status
    live = {**gateway, "md-3-vllm": stopped(), "md-4-vllm": stopped()}
    out = fold(facts(STABLE, CANARY, live=live, md_spec=suspended, canary_step=step("Analysing")))
    assert (out.state, out.phase, out.reason) == ("ready", "Suspended", Reason.SUSPENDED)
    assert out.message.startswith("suspended (spec.suspend): every version is at 0 replicas")
    assert out.status["replicas"] == 0 and out.status["canary"].weight == 25


def test_suspended_while_the_gateway_drains() -> None:
    """The row before: the model servers still run (the gateway is draining); asked again soon."""
    suspended = spec().model_copy(update={"suspend": True})
    f = facts(md_spec=suspended)
    out = fold(dataclasses.replace(f, draining="1 request(s) in flight at the gateway"))
    assert (out.state, out.phase, out.reason) == ("reconciling", "Suspended", Reason.SUSPENDED)
    assert out.message.endswith(
        "503 model_suspended; the model servers wait: 1 request(s) in flight at the gateway"
    )
    assert out.requeue_after == DRAIN_POLL_SECONDS and out.poll  # Prometheus read again: a poll
    assert out.conditions[0][:2] == ("Suspended", True)
    # The time limit's end is a clock beside the poll: pacing the poll never passes it.
    limited = fold(dataclasses.replace(f, draining="1 request(s) in flight at the gateway", drain_left=120.0))
    assert (limited.requeue_after, limited.poll, limited.clock) == (DRAIN_POLL_SECONDS, True, 120.0)
    ending = fold(dataclasses.replace(f, draining="1 request(s) in flight at the gateway", drain_left=2.0))
    assert (ending.requeue_after, ending.poll, ending.clock) == (2.0, False, None)


def test_the_suspended_condition_is_false_when_not_suspended() -> None:
    out = fold(facts())
    assert out.conditions == (("Suspended", False, Reason.NOT_SUSPENDED, "spec.suspend is false"),)
