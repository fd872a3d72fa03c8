"""What the TrainingJob operator's unit tests share: the examples, a job identity, a clock, a report."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import yaml

from llmops.api.trainingjob import ModelVersionRef, Progress, TrainingJobSpec
from llmops.operators.trainingjob import builders, names
from llmops.workload import JobIdentity, RunReport

ROOT = Path(__file__).parents[4]
EXAMPLES = ROOT / "examples"
GOLDEN = ROOT / "tests" / "unit" / "golden" / "trainingjob"
JOB = JobIdentity(
    namespace="ml", name="tiny-llama-pretrain", uid="0f5c2c4e-8a1b-4c3d-9e2f-112233445566", generation=3
)
NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
SECRET_VALUE = "s3cr3t-value-never-shown"
PROGRESS = Progress(
    stage="Training", step=40, total_steps=200, epoch=0.4, loss=2.5, tokens_per_second=950, eta_seconds=300
)
VERSION = ModelVersionRef(
    name="tiny-llama", version="4", uri="s3://models/models/tiny-llama/versions/4/manifest.json"
)


def example(name: str) -> dict:
    return yaml.safe_load((EXAMPLES / f"trainingjob-{name}.yaml").read_text())


def spec_of(name: str, **changes: Any) -> TrainingJobSpec:
    spec = example(name)["spec"]
    spec.update(changes)
    return TrainingJobSpec.model_validate(spec)


def build(spec: TrainingJobSpec, job: JobIdentity = JOB, *, creating: bool = True) -> dict:
    if spec.model.base is not None:
        spec = builders.pin_base(spec, "7")
    run = builders.training_run(spec, job, "0.1.0")
    image = spec.runtime.image or builders.default_image("0.1.0", spec.method.type)
    name = names.rayjob_name(job.name, job.uid)
    return builders.rayjob(run, builders.lifecycle(spec, creating=creating), name=name, image=image)


def kuberay(spec: TrainingJobSpec) -> TrainingJobSpec:
    runtime = spec.runtime.model_copy(update={"type": "kuberay", "address": None})
    return spec.model_copy(update={"runtime": runtime})


def report(phase: str = "Running", **fields: Any) -> RunReport:
    return RunReport(phase=phase, **fields)
