"""The drain's decisions per ModelDeployment (plan.py's table) and the step order."""

from __future__ import annotations

import datetime as dt
import math

from llmops.api.modeldeployment import ModelDeploymentSpec, ModelDeploymentStatus
from llmops.api.modelretirement import ModelRetirementSpec, Reason, StepStatus
from llmops.operators.modelretirement import plan

REGISTRY = {"s3": {"bucket": "models"}}


def retirement(drain: dict | None = None, version: str | None = "2") -> ModelRetirementSpec:
    return ModelRetirementSpec.model_validate(
        {
            "model": {"name": "bot", **({"version": version} if version else {})},
            "registry": REGISTRY,
            "reason": "superseded",
            "archive": {"location": {"s3": {"bucket": "archive"}}},
            **({"drain": drain} if drain else {}),
        }
    )


def served(
    name: str, model: dict, versions: list[tuple[str, str, int]], suspend: bool = False
) -> plan.Served:
    parsed = ModelDeploymentSpec.model_validate({"model": model, "registry": REGISTRY, "suspend": suspend})
    status = ModelDeploymentStatus.model_validate(
        {
            "versions": [
                {"name": "bot", "version": v, "role": r, "weight": w, "replicas": 1} for v, r, w in versions
            ]
        }
    )
    return plan.Served(name, parsed, status)


REPLACE = {"mode": "Replace", "replacement": {"name": "bot", "version": "3"}}


def test_nothing_serves_it_nothing_to_do() -> None:
    other = served("a", {"name": "bot", "version": "3"}, [("3", "stable", 100)])
    assert plan.drain(retirement(), {"2"}, [other]).done


def test_served_without_a_drain_plan_is_refused_naming_every_deployment() -> None:
    a = served("a", {"name": "bot", "version": "2"}, [("2", "stable", 100)])
    b = served("b", {"name": "bot", "alias": "champion"}, [("2", "stable", 100)])
    decided = plan.drain(retirement(), {"2"}, [b, a])
    assert decided.problem is not None
    reason, message = decided.problem
    assert reason == Reason.STILL_SERVED
    assert "ModelDeployment a (2 as stable); b (2 as stable)" in message and "spec.drain" in message


def test_a_canary_must_end_first() -> None:
    a = served("a", {"name": "bot", "version": "1"}, [("1", "stable", 90), ("2", "canary", 10)])
    decided = plan.drain(retirement(REPLACE), {"2"}, [a])
    assert decided.problem is not None and decided.problem[0] == Reason.CANARY


def test_replace_moves_an_alias_of_the_same_model() -> None:
    a = served("a", {"name": "bot", "alias": "champion"}, [("2", "stable", 100)])
    decided = plan.drain(retirement(REPLACE), {"2"}, [a])
    assert [(x.deployment, x.kind, x.alias) for x in decided.actions] == [("a", "move-alias", "champion")]


def test_replace_with_the_alias_that_names_the_version_is_refused() -> None:
    a = served("a", {"name": "bot", "alias": "champion"}, [("2", "stable", 100)])
    same = {"mode": "Replace", "replacement": {"name": "bot", "alias": "champion"}}
    decided = plan.drain(retirement(same), {"2"}, [a])
    assert decided.problem is not None and "alias champion" in decided.problem[1]


def test_replace_patches_a_spec_that_names_the_version() -> None:
    a = served("a", {"name": "bot", "version": "2"}, [("2", "stable", 100)])
    decided = plan.drain(retirement(REPLACE), {"2"}, [a])
    assert [(x.deployment, x.kind) for x in decided.actions] == [("a", "patch-model")]


def test_replace_with_another_model_patches_even_an_alias() -> None:
    a = served("a", {"name": "bot", "alias": "champion"}, [("2", "stable", 100)])
    other = {"mode": "Replace", "replacement": {"name": "bot-small", "alias": "champion"}}
    decided = plan.drain(retirement(other), {"2"}, [a])
    assert [x.kind for x in decided.actions] == ["patch-model"]


def test_a_previous_version_being_replaced_is_waited_for() -> None:
    a = served("a", {"name": "bot", "version": "3"}, [("3", "stable", 100), ("2", "previous", 0)])
    decided = plan.drain(retirement(REPLACE), {"2"}, [a])
    assert [x.kind for x in decided.actions] == ["wait"] and not decided.done


def test_a_version_without_weight_or_replicas_is_not_served() -> None:
    a = served("a", {"name": "bot", "version": "3"}, [("3", "stable", 100)])
    a.status.versions.append(
        a.status.versions[0].model_copy(
            update={"version": "2", "role": "previous", "weight": 0, "replicas": 0}
        )
    )
    assert plan.drain(retirement(REPLACE), {"2"}, [a]).done


def test_suspend_then_wait() -> None:
    a = served("a", {"name": "bot", "version": "2"}, [("2", "stable", 100)])
    decided = plan.drain(retirement({"mode": "Suspend"}), {"2"}, [a])
    assert [x.kind for x in decided.actions] == ["suspend"]
    b = served("a", {"name": "bot", "version": "2"}, [("2", "stable", 100)], suspend=True)
    assert [x.kind for x in plan.drain(retirement({"mode": "Suspend"}), {"2"}, [b]).actions] == ["wait"]


def test_steps_run_in_order_and_skipped_counts_as_done() -> None:
    assert plan.next_step([]) == "Drain"
    steps = [StepStatus(name="Drain", state="Skipped"), StepStatus(name="Archive", state="Running")]
    assert plan.next_step(steps) == "Archive"
    done = [
        StepStatus(name=n, state="Succeeded") for n in ("Report", "Dispose", "Delete", "Archive", "Drain")
    ]
    assert plan.next_step(done) is None
    merged = plan.merged(steps, StepStatus(name="Archive", state="Succeeded"))
    assert [(s.name, s.state) for s in merged] == [("Drain", "Skipped"), ("Archive", "Succeeded")]


def test_grace_period() -> None:
    spec = retirement({**REPLACE, "gracePeriodSeconds": 60})
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert plan.grace_left(spec, start, start + dt.timedelta(seconds=59)) == 1.0
    assert plan.grace_left(spec, start, start + dt.timedelta(seconds=60)) == 0.0
    assert plan.grace_left(spec, start, start + dt.timedelta(seconds=90)) == 0.0
    assert plan.grace_left(retirement(), start, start + dt.timedelta(days=1)) == math.inf


def test_replace_moves_the_canary_alias_first_when_it_names_the_version() -> None:
    """A deployment on champion and challenger (a RetrainPolicy's) that both name the version: moving
    only champion would start a canary of the retired version."""
    spec = {"model": {"name": "bot", "alias": "champion"}, "registry": REGISTRY,
            "rollout": {"canary": {"model": {"name": "bot", "alias": "challenger"}}}}  # fmt: skip
    a = plan.Served(
        "a",
        ModelDeploymentSpec.model_validate(spec),
        ModelDeploymentStatus.model_validate(
            {"versions": [{"name": "bot", "version": "2", "role": "stable", "weight": 100, "replicas": 1}]}
        ),
    )
    decided = plan.drain(retirement(REPLACE), {"2"}, [a], {"champion": "2", "challenger": "2"})
    assert [(x.kind, x.alias) for x in decided.actions] == [
        ("move-alias", "challenger"),
        ("move-alias", "champion"),
    ]
    # Once champion moved, the deployment shows 2 as its canary for a moment: the alias moves again.
    a.status.versions[0] = a.status.versions[0].model_copy(update={"role": "canary", "weight": 10})
    moving = plan.drain(retirement(REPLACE), {"2"}, [a], {"champion": "3", "challenger": "2"})
    assert [(x.kind, x.alias) for x in moving.actions] == [("move-alias", "challenger")]
    assert plan.drain(retirement(REPLACE), {"2"}, [a], {"champion": "3", "challenger": "3"}).problem is None
