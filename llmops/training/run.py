"""The workload's entrypoint: python -m llmops.training.run --config <TrainingRun.encode()>

Runs ingest -> prepare -> train -> evaluate -> register (method quantize: compress, the parent
quantized by llm-compressor, in train's place; llmops/training/compress.py), skipping stages already
done, and keeps
report.json in the work folder current. Progress travels through that report object (see
llmops/workload.py for why: same path for KubeRay and the Jobs API, no Kubernetes credentials in
the Ray pods, survives the cluster). Exit status: 0 Succeeded; 2 Failed on bad input or a failed
gate (retrying will not help: the report says what to change); 1 any other failure (a retry may).
The config may also come from the LLMOPS_TRAINING_RUN environment variable.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import shutil
import sys
import traceback

from llmops import logsafe
from llmops.api.trainingjob import BaselineResult, GateResult, Lineage, ModelVersionRef
from llmops.training import compress, evaluate, ingest, model, prepare, register, train
from llmops.training.context import Context, Reporter, StoreSpec, log
from llmops.training.errors import GateFailure, UserError
from llmops.training.gates import describe_failures
from llmops.workload import TrainingRun


def _finite(values: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if isinstance(v, int | float) and math.isfinite(v)}


def preflight(ctx: Context) -> None:
    """Checks that need only the spec and the cluster's shape: fail before any data moves."""
    import ray

    gpus = float(ray.cluster_resources().get("GPU", 0))
    model.check_qlora_possible(ctx.spec.method.type, ctx.spec.resources.per_worker.gpus, gpus)


def stages(ctx: Context) -> None:
    import ray

    ray.init(address=os.environ.get("RAY_ADDRESS") or None, logging_level=logging.WARNING, log_to_driver=True)
    preflight(ctx)
    ctx.reporter.write(progress={"stage": "PreparingData"}, message="resolving the base model")
    base = model.resolve_base(ctx)
    block_size = ctx.spec.data.preparation.tokenization.block_size
    if base is not None:
        model.check_base(
            base, ctx.spec.method.type, ctx.spec.method.lora, block_size, ctx.scratch / "base-config"
        )
    elif ctx.spec.model.architecture is not None:
        model.check_architecture(ctx.spec.model.architecture, block_size)
    teacher = model.resolve_teacher(ctx)  # distill: the teacher loads and shares the student's tokenizer
    if teacher is not None:
        model.check_teacher(ctx, teacher, base, ctx.scratch / "teacher")
    baseline_source = model.resolve_baseline(ctx)  # a bad baseline fails before any training
    ctx.reporter.write(message="ingesting data")
    ingested = ingest.run(ctx)
    ctx.reporter.write(message="preparing data")
    prepared = prepare.run(ctx, base, ingested, teacher)
    if ctx.spec.method.type == "quantize":  # the parent quantized takes the trained model's place
        trained = compress.run(ctx, base, prepared)
        done = trained["compress"]
        train_metrics = _finite(
            {
                "compress/seconds": done["seconds"],
                "compress/bytes": done["bytes_after"],
                "compress/size_ratio": done["bytes_after"] / done["bytes_before"]
                if done["bytes_before"]
                else math.nan,
            }
        )
    else:
        trained = train.run(ctx, base, prepared, teacher)
        train_metrics = _finite(
            {
                "train/loss": trained.get("final_loss") or math.nan,
                "train/best_val_loss": trained.get("best_val_loss") or math.nan,
                "train/tokens_per_second": trained.get("tokens_per_second") or math.nan,
                "train/steps": trained.get("steps", 0),
            }
        )
        if teacher is not None:  # the distillation loss's two terms, unweighted (llmops/training/train.py)
            terms = {"train/kl": trained.get("final_kl"), "train/ce": trained.get("final_ce")}
            train_metrics |= _finite(terms)
    ctx.reporter.write(
        metrics=train_metrics,
        progress={
            "step": trained["steps"],
            "total_steps": trained["total_steps"],
            "loss": trained.get("final_loss"),
            "tokens_per_second": round(trained.get("tokens_per_second") or 0.0, 1),
            "eta_seconds": 0,
        },
    )
    evaluated = evaluate.run(ctx, trained, baseline_source)
    verdicts = [GateResult.model_validate(g) for g in evaluated["gates"]]
    baseline = None
    if evaluated.get("baseline"):
        found = evaluated["baseline"]
        baseline = BaselineResult(
            name=found["name"], version=found["version"], metrics=_finite(found["metrics"])
        )
    lineage = Lineage(
        base=base.description if base else "scratch",
        data_digest=prepared["digest"],
        image=os.environ.get("LLMOPS_IMAGE"),
    )
    ctx.reporter.write(
        metrics=train_metrics | _finite(evaluated["metrics"]),
        gates=verdicts,
        lineage=lineage,
        baseline=baseline,
    )
    failed = [v.metric for v in verdicts if not v.passed]
    if failed:
        raise GateFailure(
            failed,
            f"gates failed: {describe_failures(verdicts)}; the model was not registered and stays in "
            f"{ctx.store.uri}/model/ (improve the model or the data, or revise the gate thresholds)",
        )
    registered = register.run(ctx, base.description if base else None, ingested, prepared, trained, evaluated)
    version = ModelVersionRef.model_validate(registered["modelVersion"])
    ctx.reporter.write(
        phase="Succeeded",
        model_version=version,
        progress={"stage": "Done", "percent": 100, "eta_seconds": 0},
        message=f"registered {version.name} version {version.version}" + ("" if verdicts else " (ungated)"),
    )


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logsafe.install()
    parser = argparse.ArgumentParser(prog="python -m llmops.training.run", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--config", default=os.environ.get("LLMOPS_TRAINING_RUN"), help="TrainingRun.encode()"
    )
    args = parser.parse_args(argv)
    if not args.config:
        parser.error("--config (or LLMOPS_TRAINING_RUN) is required")
    run = TrainingRun.decode(args.config)
    try:
        ctx = Context(run)
    except UserError as e:  # e.g. credentials named in the spec are missing: say so where we can
        log.error("%s", e)
        with contextlib.suppress(Exception):
            Reporter(StoreSpec(run.work_dir, None)).write(phase="Failed", message=str(e))
        return 2
    ctx.reporter.write(phase="Running", message="starting", progress={"stage": "Queued"}, failed_gates=[])
    try:
        stages(ctx)
        return 0
    except GateFailure as e:
        log.error("%s", e)
        ctx.reporter.write(phase="Failed", message=str(e), failed_gates=e.failed)
        return 2
    except Exception as e:
        inner = train.unwrap(e)
        if isinstance(inner, UserError):
            log.error("%s", inner)
            ctx.reporter.write(phase="Failed", message=str(inner))
            return 2
        traceback.print_exc()
        stage = ctx.reporter.report.progress.stage or "Queued"
        ctx.reporter.write(
            phase="Failed",
            message=f"internal error during {stage}: {type(e).__name__}: {str(e)[:500]}; the Ray job log "
            "has the traceback, and a retry resumes from the last completed stage",
        )
        return 1
    finally:
        shutil.rmtree(ctx.scratch, ignore_errors=True)  # everything worth keeping is in the work folder


if __name__ == "__main__":
    sys.exit(main())
