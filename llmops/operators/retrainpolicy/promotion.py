"""Champion/challenger promotion through registry aliases: pure. The comparison table, and the step
machine that moves one run's version from "trained" to "serving".

The ModelDeployment serves `spec.model.alias: <championAlias>` and canaries
`spec.rollout.canary.model.alias: <challengerAlias>`; an alias naming the same version as the
champion means "no canary". The policy only moves aliases (llmops.registry.move_alias, idempotent by
move id), so the ModelDeployment's spec, kept in Git, never changes:

    run Succeeded, version V         -> compare V with the champion, measured in the same run
        lost                         -> Lost (the table says by how much)
        won, approval Manual         -> AwaitingApproval, until retrain.llmops.io/approve=V
        won                          -> move challenger to V                 -> Canary
    Canary, the deployment's canary of V Promoted -> move champion to V     -> Promoted
    Canary, its canary RolledBack or Halted      -> move challenger back to the champion -> RolledBack
    Canary, the challenger moved elsewhere (by a person)                 -> RolledBack
    no champion yet (the first version)          -> move champion to V      -> Promoted
                                                    (nothing serves that a canary could be compared with)

Each step is recomputed from the facts (the aliases, the deployment's status) on every reconcile, so
a step interrupted by a crash is finished by the next reconcile with the same move id.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pydantic

from llmops.api.modeldeployment import CanaryStatus
from llmops.api.retrainpolicy import Comparison, MetricThreshold, Promotion, RunRecord
from llmops.api.trainingjob import TrainingJobStatus

# Verdicts that hold the deployment's canary: one run at a time.
IN_FLIGHT = ("AwaitingApproval", "Canary")
FINAL = ("Failed", "Lost", "Promoted", "RolledBack")


def compare(
    thresholds: list[MetricThreshold], candidate: Mapping[str, float], champion: Mapping[str, float] | None
) -> list[Comparison]:
    """One row per threshold, MLflow's MetricThreshold rules (mlflow/models/evaluation/validation.py):
    every bound that is set must hold. A metric the candidate lacks fails; a champion value that is
    missing (no champion, or it lacks the metric) leaves the change bounds unchecked, and the row says so.
    """
    rows = []
    for t in thresholds:
        value = candidate.get(t.metric)
        base = (champion or {}).get(t.metric)
        sign = 1 if t.greater_is_better else -1
        change = sign * (value - base) if value is not None and base is not None else None
        failures: list[str] = []
        if value is None:
            failures.append("the candidate did not report it")
        else:
            if t.threshold is not None and sign * (value - t.threshold) < 0:
                better = ">=" if t.greater_is_better else "<="
                failures.append(f"{value:.4g} is not {better} threshold {t.threshold:g}")
            if change is not None and t.min_absolute_change is not None and change < t.min_absolute_change:
                failures.append(
                    f"{_change(change, f'{abs(change):.4g}')}, less than {t.min_absolute_change:g}"
                )
            if change is not None and t.min_relative_change is not None:
                relative = change / abs(base) if base else float("inf") if change > 0 else 0.0
                if relative < t.min_relative_change:
                    failures.append(
                        f"{_change(relative, f'{abs(relative):.2%}')}, less than {t.min_relative_change:.2%}"
                    )
        unchecked = base is None and (t.min_absolute_change is not None or t.min_relative_change is not None)
        message = "; ".join(failures) or ("no champion value: change not checked" if unchecked else None)
        rows.append(
            Comparison(
                metric=t.metric,
                candidate=value,
                champion=base,
                change=change,
                passed=not failures,
                message=message[:256] if message else None,
            )
        )
    return rows


def _change(change: float, amount: str) -> str:
    """How the candidate moved against the champion, in words: improves by, is worse by, or the same."""
    if amount.strip("0.%") == "":
        return "no better than the champion"
    return f"improves on the champion by {amount}" if change > 0 else f"worse than the champion by {amount}"


def lost_by(rows: list[Comparison]) -> str:
    """The failed rows, for a message: `perplexity: 12.1 vs champion 11.8 (...)`."""
    return "; ".join(
        f"{r.metric}: {r.candidate if r.candidate is None else f'{r.candidate:.4g}'} vs champion"
        f" {r.champion if r.champion is None else f'{r.champion:.4g}'} ({r.message})"
        for r in rows
        if not r.passed
    )


@dataclass(frozen=True)
class Move:
    """An alias to move (llmops.registry.move_alias), and the id that makes it happen once."""

    alias: str
    version: str
    step: str  # challenger, champion, challenger-back
    reason: str


@dataclass(frozen=True)
class Step:
    verdict: str
    message: str
    move: Move | None = None


def step(
    run: RunRecord,
    promotion: Promotion,
    *,
    champion: str | None,
    challenger: str | None,
    canary: CanaryStatus | None,
    approved: str | None,
    busy: str | None,
) -> Step:
    """The next step of a succeeded run whose version is `run.version` and whose comparison is in
    `run.comparison` (verdict Won or later). `champion`/`challenger`: the versions the aliases name
    now; `canary`: the deployment's status.canary; `approved`: the approve annotation's value; `busy`:
    another run that holds the deployment's canary, if any."""
    version = run.version
    assert version is not None
    if champion == version:
        return Step("Promoted", f"{promotion.champion_alias} names version {version}")
    if run.verdict == "Canary":
        return _canary(run, promotion, champion, challenger, canary)
    if not promotion.enabled:
        return Step("Won", f"version {version} beat the champion; spec.promotion.enabled is false")
    if busy is not None:
        return Step("Won", f"version {version} waits: the canary of run {busy} is in progress")
    if champion is None:
        return Step(
            "Promoted",
            f"version {version} is the first: {promotion.champion_alias} moves to it",
            Move(
                promotion.champion_alias, version, "champion", f"first version, from run {run.training_job}"
            ),
        )
    if promotion.approval == "Manual" and approved != version:
        return Step(
            "AwaitingApproval",
            f"version {version} beat champion {champion}; approve with"
            f" kubectl annotate retrainpolicy ... retrain.llmops.io/approve={version}",
        )
    return Step(
        "Canary",
        f"version {version} beat champion {champion}: {promotion.challenger_alias} moves to it",
        Move(
            promotion.challenger_alias,
            version,
            "challenger",
            f"run {run.training_job} beat champion {champion}",
        ),
    )


def _canary(
    run: RunRecord,
    promotion: Promotion,
    champion: str | None,
    challenger: str | None,
    canary: CanaryStatus | None,
) -> Step:
    version = run.version
    assert version is not None
    if challenger != version:
        return Step(
            "RolledBack",
            f"{promotion.challenger_alias} was moved to {challenger} while version {version} was in"
            " its canary",
        )
    ours = canary is not None and canary.version == version
    if ours and canary.verdict == "Promoted":
        return Step(
            "Promoted",
            f"the canary of version {version} passed every step: {promotion.champion_alias} moves to it",
            Move(promotion.champion_alias, version, "champion", f"canary of run {run.training_job} passed"),
        )
    if ours and canary.verdict in ("RolledBack", "Halted") and champion is not None:
        return Step(
            "RolledBack",
            f"the canary of version {version} was {canary.verdict.lower()}: {canary.message or ''}".rstrip(
                ": "
            ),
            Move(
                promotion.challenger_alias,
                champion,
                "challenger-back",
                f"canary of run {run.training_job} {canary.verdict.lower()}",
            ),
        )
    where = f"step {canary.step}, weight {canary.weight}%" if ours else "waiting for the deployment"
    return Step("Canary", f"version {version} in its canary ({where})")


def judged(thresholds: list[MetricThreshold], record: RunRecord, child: dict | None) -> RunRecord:
    """The run's comparison table, from its TrainingJob's status (candidate and champion measured in the
    same run: status.evaluation and status.baseline)."""
    try:
        status = TrainingJobStatus.model_validate((child or {}).get("status") or {})
    except pydantic.ValidationError:
        status = TrainingJobStatus()
    if record.version is None:
        return record.model_copy(update={"verdict": "Failed", "message": "the run registered no version"})
    baseline = status.baseline
    rows = compare(thresholds, status.evaluation, baseline.metrics if baseline else None)
    champion = baseline.version if baseline else None
    if all(r.passed for r in rows):
        message = (
            f"version {record.version} beat champion {champion or '(none)'}"
            if rows
            else (f"version {record.version} passed its gates (no promotion metrics)")
        )
        return record.model_copy(
            update={
                "comparison": rows,
                "champion_version": champion,
                "verdict": "Won",
                "message": message[:256],
            }
        )
    return record.model_copy(
        update={
            "comparison": rows,
            "champion_version": champion,
            "verdict": "Lost",
            "message": f"version {record.version} lost to champion {champion}: {lost_by(rows)}"[:256],
        }
    )
