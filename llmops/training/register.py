"""Stage 5, register: write the trained model as a new immutable version in the registry.

Only when every gate passed (the registry refuses otherwise, too). The version's manifest carries the
full lineage: data sources with row counts and sha256, the preparation counts (PII found per entity,
duplicates removed), the prepared data's digest, hyper-parameters, code version, image, parent job
and its uid, metrics and gate verdicts; and `content`, what the version's folder holds (from
training.model.save_final: a full model, merged or not, and for LoRA the adapter's sub-folder and the
base it was trained on), which the ModelDeployment operator reads to serve it.

Idempotent across retries: a version whose lineage names this job's uid is this job's version, so a
run that died after registering and before marking the stage done does not register twice.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import yaml

from llmops import registry
from llmops.api.trainingjob import ModelVersionRef
from llmops.storage import download_dir
from llmops.training.context import Context, log


def _existing(store, name: str, uid: str) -> registry.ModelVersion | None:
    for version in reversed(registry.versions(store, name)):
        try:
            manifest = registry.read_version(store, name, version)
        except registry.BrokenRecord as e:
            log.warning("%s", e)  # a broken record is not this job's version
            continue
        if (manifest.lineage.model_extra or {}).get("job_uid") == uid:
            return manifest
    return None


def _baseline(evaluated: dict) -> registry.BaselineRecord | None:
    """spec.evaluation.baseline and its finite metrics from the evaluate stage, if it had one."""
    found = evaluated.get("baseline")
    if not found:
        return None
    metrics = {k: float(v) for k, v in found["metrics"].items() if math.isfinite(v)}
    return registry.BaselineRecord(name=found["name"], version=found["version"], metrics=metrics)


def lineage(
    ctx: Context,
    base_description: str | None,
    ingested: dict,
    prepared: dict,
    trained: dict,
    evaluated: dict | None = None,
    model_dir: Path | None = None,
) -> registry.Lineage:
    spec = ctx.spec
    return registry.Lineage(
        parent=parent(ctx),
        recipe=recipe(ctx, model_dir),
        parent_job=ctx.job_ref,
        base_model=base_description or "scratch",
        method=spec.method.type,
        data=[
            {
                k: s[k]
                for k in (
                    "uri",
                    "format",
                    "textField",
                    "messagesField",
                    "rows",
                    "bytes",
                    "sha256",
                    "skipped",
                    "feedback",
                    "since",
                )
                if k in s
            }
            | {"files": [{k: f[k] for k in ("key", "sha256", "rows", "bytes")} for f in s["files"]]}
            for s in ingested["sources"]
        ],
        data_digest=prepared["digest"],
        preparation={
            k: prepared[k]
            for k in (
                "counts",
                "pii",
                "dedup",
                "normalize",
                "augmentation",
                "tokenizer",
                "blockSize",
                "blocks",
                "tokens",
            )
        },
        hyperparameters=spec.method.model_dump(mode="json", by_alias=True, exclude_none=True)
        | {"resources": spec.resources.model_dump(mode="json", by_alias=True, exclude_none=True)},
        code_version=ctx.run.code_version,
        image=os.environ.get("LLMOPS_IMAGE"),
        baseline=_baseline(evaluated or {}),
        job_uid=ctx.run.job.uid,
        job_generation=ctx.run.job.generation,
        training={
            k: trained.get(k)
            for k in (
                "steps",
                "resumed_from",
                "stopped_early",
                "tokens",
                "final_loss",
                "best_val_loss",
                "workers",
                "device",
                "precision",
                "model",
            )
        },
    )


def parent(ctx: Context) -> str | None:
    """name:version of spec.parent_reference() (quantize: model.base; distill: the teacher), resolved
    in the registry as the run used it (the operator pinned it to a version when the run started)."""
    ref = ctx.spec.parent_reference()
    if ref is None:
        return None
    return f"{ref.name}:{registry.resolve(ctx.registry.open(), ref).version}"


def recipe(ctx: Context, model_dir: Path | None) -> str | None:
    """llm-compressor's recipe as it saved it beside the weights (model/recipe.yaml), or the
    distillation settings as YAML; None for other methods."""
    from llmops.training.compress import RECIPE_FILE

    saved = model_dir / RECIPE_FILE if model_dir is not None else None
    if ctx.spec.method.type == "quantize" and saved is not None and saved.exists():
        return saved.read_text()
    distillation = getattr(ctx.spec.method, "distillation", None)
    if distillation is not None:
        return yaml.safe_dump(distillation.model_dump(mode="json", by_alias=True, exclude_none=True))
    return None


def quantization(ctx: Context, model_dir: Path) -> registry.Quantization | None:
    """From the saved config.json's quantization_config, with the scheme and algorithm of
    spec.method.quantization; None for an unquantized model."""
    config = model_dir / "config.json"
    if not config.exists():
        return None
    q = ctx.spec.method.quantization
    return registry.Quantization.from_config(
        json.loads(config.read_text()), q.scheme if q else None, q.algorithm if q else None
    )


def run(
    ctx: Context, base_description: str | None, ingested: dict, prepared: dict, trained: dict, evaluated: dict
) -> dict[str, Any]:
    if summary := ctx.done("register"):
        log.info("register: done before, skipping")
        return summary
    name = ctx.spec.output.model_name
    store = ctx.registry.open()
    manifest = _existing(store, name, ctx.run.job.uid)
    if manifest is None:
        ctx.reporter.write(progress={"stage": "Registering"}, message="registering the model version")
        local = ctx.scratch / "register" / "model"
        download_dir(ctx.store, "model", local)
        measured = {k: v for k, v in evaluated["metrics"].items() if math.isfinite(v)}
        manifest = registry.register(
            store,
            name,
            local,
            metrics=measured,
            gates=[registry.GateVerdict.model_validate(g) for g in evaluated["gates"]],
            lineage=lineage(ctx, base_description, ingested, prepared, trained, evaluated, local),
            content=registry.Content.from_saved(
                trained.get("model") or {}, base_description, quantization(ctx, local)
            ),
        )
        log.info("register: %s version %s", name, manifest.version)
    ref = ModelVersionRef(
        name=name,
        version=manifest.version,
        uri=f"{store.uri}/{registry.version_prefix(name, manifest.version)}/{registry.MANIFEST}",
    )
    return ctx.mark_done("register", {"modelVersion": ref.model_dump(by_alias=True)})
