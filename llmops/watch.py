"""`llmops watch trainingjob NAME`: follow a TrainingJob's progress until it ends, then show its
evaluation results, gate verdicts and the model version it registered."""

from __future__ import annotations

import time

import click

from llmops import kubeconfig
from llmops.api import GROUP, TRAINING_JOB, VERSION
from llmops.api.trainingjob import TrainingJobStatus

TERMINAL = {"Succeeded", "Failed"}


def progress_line(status: TrainingJobStatus) -> str:
    """One line a person reads at a glance: phase, stage, step, loss, throughput, ETA."""
    p = status.progress
    parts = [f"{status.phase or 'Pending':<9}"]
    if p:
        if p.stage:
            parts.append(f"stage {p.stage:<13}")
        if p.step is not None:
            total = f"/{p.total_steps}" if p.total_steps else ""
            percent = f" ({p.percent}%)" if p.percent is not None else ""
            parts.append(f"step {p.step}{total}{percent}")
        if p.epoch is not None:
            parts.append(f"epoch {p.epoch:.2f}")
        if p.loss is not None:
            parts.append(f"loss {p.loss:.4f}")
        if p.tokens_per_second:
            parts.append(f"{p.tokens_per_second:,.0f} tok/s")
        if p.eta_seconds is not None:
            parts.append(f"ETA {p.eta_seconds}s")
    elif status.message:
        parts.append(status.message)
    return "  ".join(parts)


def summary(status: TrainingJobStatus) -> str:
    lines = []
    if status.evaluation:
        lines.append("evaluation:")
        lines += [f"  {k:<32} {v:.4f}" for k, v in sorted(status.evaluation.items())]
    if status.gates:
        lines.append("gates:")
        for g in status.gates:
            value = "missing" if g.value is None else f"{g.value:.4f}"
            verdict = "PASS" if g.passed else "FAIL"
            if g.compare in (None, "value"):
                lines.append(f"  {verdict}  {g.metric} {g.operator} {g.threshold}  (measured {value})")
            else:  # relative to the baseline: what was compared, and both values
                compared = "missing" if g.compared is None else f"{g.compared:.4f}"
                base = "missing" if g.baseline_value is None else f"{g.baseline_value:.4f}"
                rule = f"{g.metric} {g.compare} {g.operator} {g.threshold}"
                lines.append(
                    f"  {verdict}  {rule}  ({g.compare} {compared}; measured {value}, baseline {base})"
                )
    if status.model_version:
        v = status.model_version
        lines.append(f"model version: {v.name}:{v.version}  ({v.uri})")
    if status.message:
        lines.append(f"message: {status.message}")
    return "\n".join(lines)


@click.command()
@click.argument("kind", type=click.Choice(["trainingjob", "tj"]))
@click.argument("name")
@click.option("-n", "--namespace", default="default", show_default=True, help="The TrainingJob's namespace.")
@click.option("--timeout", default=1800, show_default=True, help="Seconds to wait for the job to end.")
def watch(kind: str, name: str, namespace: str, timeout: int) -> None:
    """Follow a TrainingJob until it succeeds or fails (exit 1 on failure)."""
    from kubernetes import client

    cluster = kubeconfig.connect()
    api = client.CustomObjectsApi(cluster.api)
    deadline, last = time.monotonic() + timeout, ""
    while True:
        with cluster.talking(f"trainingjob {namespace}/{name}"):
            obj = api.get_namespaced_custom_object(GROUP, VERSION, namespace, TRAINING_JOB.plural, name)
        status = TrainingJobStatus.model_validate(obj.get("status") or {})
        line = progress_line(status)
        if line != last:
            click.echo(line)
            last = line
        if status.phase in TERMINAL and status.observed_generation == obj["metadata"]["generation"]:
            click.echo(summary(status))
            raise SystemExit(0 if status.phase == "Succeeded" else 1)
        if time.monotonic() > deadline:
            raise click.ClickException(f"trainingjob {name} did not finish within {timeout}s")
        time.sleep(2)
