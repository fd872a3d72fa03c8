"""Stage 3, train: Ray Train's TorchTrainer over N workers (gloo on CPU, nccl on GPU).

Each worker streams its shard of the packed blocks (prepare/train) from the work folder to a local
file and reads it a batch at a time (llmops/training/blocks.py: memory does not grow with the data), in a
fixed order per epoch (a permutation seeded by seed + epoch), so a resumed run sees
exactly the batches it had not seen yet. Every `checkpointEverySteps` (default: once per epoch) the
workers compute the validation loss together, decide early stopping together, and rank 0 hands a
checkpoint (trainable weights, optimiser, scheduler, RNG, step, history) to `ray.train.report`;
Ray Train persists it under <workDir>/train/run/ and restores the latest one when the job runs
again with the same storage path and name (its job-driver fault tolerance), or when a worker fails
(FailureConfig). The loss is the shifted next-token cross-entropy, with label smoothing when set;
validation loss and perplexity are computed without smoothing.

Progress reaches the TrainingJob through report.json: a UserCallback on Ray Train's controller
rewrites it after each `ray.train.report` with step, epoch, loss, tokens/s and ETA. The controller
runs it after its checkpoint manager has persisted the step, so a step shown there is resumable.
Reports go out every LLMOPS_PROGRESS_INTERVAL_S (10 s) and at checkpoints, never per step: the
controller takes one report per worker per poll (2 s) and a worker blocks until it is taken.
Rank 0 writes the final model to <workDir>/model/ and a summary to <workDir>/train/result.json.

Over 400 lines on purpose: `train_loop` runs inside every Ray Train worker and must stay one
function (Ray ships it by value); the driver side beside it sets the same config it reads.
"""

from __future__ import annotations

import json
import math
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from llmops.storage import download_dir
from llmops.training.blocks import InMemory, Shard, fetch_shard, split_rows
from llmops.training.context import Context, Reporter, StoreSpec, log, upload_dir
from llmops.training.errors import UserError
from llmops.training.model import ModelSource

try:  # the callback base class lives in Ray; this module stays importable without it
    from ray.train.v2.api.callback import UserCallback
except ImportError:  # pragma: no cover
    UserCallback = object  # type: ignore[assignment,misc]


def cpu_count(quantity: int | str | None) -> int:
    """Whole CPUs of a Kubernetes quantity (4, "4", "3500m" -> 3); at least 1."""
    if quantity is None:
        return 1
    text = str(quantity)
    value = float(text[:-1]) / 1000 if text.endswith("m") else float(text)
    return max(1, int(value))


def plan_steps(
    blocks_per_worker: int, batch_size: int, accumulation: int, epochs: int, max_steps: int | None
) -> tuple[int, int]:
    """(optimiser steps per epoch, total steps): full accumulation cycles only, at least one step."""
    micro = max(1, math.ceil(blocks_per_worker / batch_size))
    per_epoch = max(1, micro // accumulation)
    return per_epoch, max_steps or epochs * per_epoch


def resource_wait(
    workers: int,
    per_worker: dict[str, float],
    cluster: dict[str, float],
    purpose: str = "Ray Train",
    noun: str = "worker",
) -> str | None:
    """What a run waits for when its Ray workers (or tasks) ask for more GPUs or CPUs than the Ray
    cluster has now, or None when it has enough.

    `workers` x `per_worker[resource]` (spec.resources; "GPU" and "CPU", Ray's resource names) against
    `cluster[resource]`, the cluster's total (`ray.cluster_resources()`, 0 when absent). Ray then
    blocks (Ray Train in `fit`, a task in `ray.get`) until an autoscaler adds them (or forever) while
    the Ray job reports RUNNING; this is the status's words for that wait, GPUs first, e.g.
    "waiting for 8 GPUs (2 workers x 4) for Ray Train; the Ray cluster has 0 (it may be scaling up;
    ...)".
    """
    for name in ("GPU", "CPU"):
        each = float(per_worker.get(name, 0) or 0)
        wanted, have = workers * each, float(cluster.get(name, 0) or 0)
        if wanted <= 0 or have >= wanted:
            continue
        plural = "s" if workers != 1 else ""
        return (
            f"waiting for {wanted:g} {name}{'' if wanted == 1 else 's'} ({workers} {noun}{plural} x"
            f" {each:g}) for {purpose}; the Ray cluster has {have:g} (it may be scaling up; without an"
            " autoscaler it waits until spec.runtime.activeDeadlineSeconds, or for good when that is unset)"
        )
    return None


class ProgressCallback(UserCallback):
    """Runs on Ray Train's controller: after every report, rewrite report.json's progress."""

    def __init__(self, reporter: Reporter, total_steps: int) -> None:
        self.reporter = reporter
        self.total_steps = total_steps
        self.started: tuple[float, int] | None = None

    def after_report(self, run_context, metrics, checkpoint) -> None:
        m = metrics[0] if metrics else {}
        if "loss" not in m:  # the closing report carries no progress
            return
        step = int(m["step"])
        now = time.monotonic()
        if self.started is None:
            self.started = (now, step)
        t0, s0 = self.started
        eta = None
        if step > s0 and now > t0:
            eta = int((self.total_steps - step) * (now - t0) / (step - s0))
        self.reporter.write(
            progress={
                "stage": "Training",
                "step": step,
                "total_steps": self.total_steps,
                "percent": min(100, int(100 * step / max(1, self.total_steps))),
                "epoch": round(float(m.get("epoch", 0.0)), 3),
                "loss": round(float(m["loss"]), 5),
                "tokens_per_second": round(float(m.get("tokens_per_second", 0.0)), 1),
                "eta_seconds": eta,
            },
            message=f"training: step {step}/{self.total_steps}"
            + (f", KL to the teacher {m['kl']:.4f}" if "kl" in m else "")
            + (f", validation loss {m['val_loss']:.4f}" if "val_loss" in m else ""),
        )


def _batch(blocks: Shard | InMemory, index, device):
    """(input_ids, attention_mask, labels) on `device` for rows `index` of `blocks`.

    Labels are -100 (no loss) on padding and on the tokens flagged input only (a negative id,
    llmops/training/chat.py: the prompt side of a conversation); plain text has no flagged token.
    """
    import numpy as np
    import torch

    from llmops.training.chat import unflag

    ids, lengths = blocks.rows(np.asarray(index, dtype=np.int64))
    x, targets = unflag(torch.from_numpy(ids).to(device))
    n = torch.from_numpy(lengths).to(device)
    mask = torch.arange(x.shape[1], device=device)[None, :] < n[:, None]
    labels = x.masked_fill(~(mask & targets), -100)
    return x, mask.long(), labels


def _token_loss(logits, labels, smoothing: float):
    """Mean next-token cross-entropy over the labels that are not -100; 0 (with a gradient of 0) when
    there are none, as in a block of chat prompts only."""
    import torch.nn.functional as F

    if not bool((labels[:, 1:] != -100).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
        labels[:, 1:].reshape(-1),
        ignore_index=-100,
        label_smoothing=smoothing,
    )


def distillation_loss(
    student_logits,
    teacher_logits,
    labels,
    temperature: float,
    alpha: float,
    smoothing: float = 0.0,
    chunk_rows: int | None = None,
):
    """Knowledge distillation loss of Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural
    Network" (2015, arXiv:1503.02531), per token of a causal LM:

        loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE

    student_logits, teacher_logits: [batch, seq, vocab] (position t predicts token t + 1, as in
    `_token_loss`); labels: [batch, seq] token ids, -100 where nothing is learnt (padding, the prompt side
    of a conversation). The KL, in nats, is averaged over exactly the positions the cross-entropy counts
    (labels[:, 1:] != -100), so chat data distils the assistant turns only. T^2 keeps the soft term's
    gradients at the scale of the hard term's whatever the temperature (the gradient of the softened KL
    shrinks as 1/T^2; section 2 of the paper). CE is `_token_loss` (with `smoothing`). When the two
    vocabularies differ in size (an embedding matrix padded past the tokenizer), the KL is taken over
    the first min(V_student, V_teacher) ids, the ids both models have; the preflight checked that every
    id the shared tokenizer produces is among them. The teacher's logits carry no gradient.

    Memory: both terms are taken `chunk_rows` positions at a time (default: LOSS_CHUNK_ELEMENTS //
    vocabulary, so a 150k vocabulary takes about 220 positions per chunk), each chunk checkpointed, so
    that the float32 softmaxes of a whole batch (batch x seq x vocab, 10 GB each at 16k tokens and a
    150k vocabulary) are never alive at once: one chunk's are, and the backward pass recomputes them
    chunk by chunk (`bench/distillation_memory.py`).

    Returns (loss, kl, ce) as 0-d tensors: kl the mean KL per counted token before the alpha * T^2 weight;
    all three 0 (with a gradient of 0) when no position counts. ValueError for temperature <= 0 or alpha
    outside [0, 1].
    """
    import torch
    from torch.utils.checkpoint import checkpoint

    if temperature <= 0 or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"temperature must be > 0 and alpha in [0, 1], got {temperature} and {alpha}")
    counted = labels[:, 1:] != -100
    if not bool(counted.any()):
        zero = student_logits.sum() * 0.0
        return zero, zero, zero
    vocab = min(student_logits.shape[-1], teacher_logits.shape[-1])
    kl_sum = ce_sum = student_logits.new_zeros((), dtype=torch.float32)
    rows = chunk_rows if chunk_rows is not None else max(1, LOSS_CHUNK_ELEMENTS // student_logits.shape[-1])
    positions = student_logits.shape[1] - 1  # the last position predicts nothing that is counted
    for b in range(student_logits.shape[0]):
        for start in range(0, positions, rows):
            end = min(start + rows, positions)
            mask = counted[b, start:end]
            if not bool(mask.any()):
                continue
            args = (
                student_logits[b, start:end],
                teacher_logits[b, start:end].detach(),
                labels[b, start + 1 : end + 1],
                mask,
                vocab,
                temperature,
                smoothing,
            )
            # Checkpointed: recomputed in the backward pass, so only one chunk's softmaxes are alive.
            kl, ce = (
                checkpoint(_chunk_sums, *args, use_reentrant=False)
                if args[0].requires_grad
                else _chunk_sums(*args)
            )
            kl_sum, ce_sum = kl_sum + kl, ce_sum + ce
    count = counted.sum()
    kl, ce = kl_sum / count, ce_sum / count
    return alpha * temperature**2 * kl + (1.0 - alpha) * ce, kl, ce


# Logit elements (rows x vocabulary) of one chunk of the distillation loss: 2^25 float32 = 128 MiB per
# temporary, a few of them alive at once (both models' softened log-probabilities, the student's
# log-probabilities for the cross-entropy, their gradients).
LOSS_CHUNK_ELEMENTS = 1 << 25


def _chunk_sums(student, teacher, labels, mask, vocab: int, temperature: float, smoothing: float):
    """Sums over the rows of one chunk where `mask` is true: KL(softmax(teacher / T) || softmax(student /
    T)) over the first `vocab` ids, and the cross-entropy against `labels` (the next tokens, -100 where
    not counted) with label smoothing `smoothing`, as `_token_loss` takes it; both in nats.
    student, teacher: [rows, vocabulary] logits; labels, mask: [rows]."""
    import torch.nn.functional as F

    rows = student[mask].float()
    s = F.log_softmax(rows[:, :vocab] / temperature, dim=-1)
    t = F.log_softmax(teacher[mask][:, :vocab].float() / temperature, dim=-1)
    kl = F.kl_div(s, t, log_target=True, reduction="sum")
    ce = F.cross_entropy(rows, labels[mask], reduction="sum", label_smoothing=smoothing)
    return kl, ce


def train_loop(cfg: dict[str, Any]) -> None:
    """One Ray Train worker."""
    import numpy as np
    import ray.train
    import ray.train.torch
    import torch
    import torch.distributed as dist
    from transformers import get_scheduler

    from llmops.training.model import build, load_teacher, load_tokenizer, save_final

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(cfg["threads"])
    device = ray.train.torch.get_device()
    hp = cfg["hyperparameters"]
    work: StoreSpec = cfg["work"]
    local = Path(tempfile.gettempdir()) / "llmops" / cfg["uid"]
    store = work.open()
    tok_dir = local / f"tokenizer-{rank}"
    download_dir(store, "prepare/tokenizer", tok_dir)
    tokenizer = load_tokenizer(tok_dir)
    base_dir = cfg["base"].fetch(local / "base") if cfg["base"] is not None else None

    amp = None
    if device.type == "cuda" and hp["mixed_precision"] != "no":
        amp = (
            torch.bfloat16
            if hp["mixed_precision"] == "bf16" and torch.cuda.is_bf16_supported()
            else torch.float16
        )
    if cfg["method"] == "qlora":
        amp = torch.bfloat16
    scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None

    model = build(cfg, base_dir, tokenizer, device)
    core = model
    distill = cfg.get("distillation")
    # Knowledge distillation: the teacher sits beside the student on this worker, frozen in eval mode;
    # its logits are computed batch by batch under the same autocast, never cached.
    teacher = load_teacher(cfg["teacher"].fetch(local / "teacher"), device) if distill else None
    if world > 1:
        model = ray.train.torch.prepare_model(model, move_to_device=False)
    trainable = [(n, p) for n, p in core.named_parameters() if p.requires_grad]
    decay = [p for n, p in trainable if p.ndim >= 2]
    no_decay = [p for n, p in trainable if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": hp["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=hp["learning_rate"],
    )

    # This worker's shard of each split, streamed to a local file: memory does not grow with the data.
    fs, root = work.arrow()
    per_worker = split_rows(fs, f"{root}/prepare/train") // world
    train_blocks = fetch_shard(
        fs, f"{root}/prepare/train", local, split="train", rank=rank, world=world, limit=per_worker * world
    )
    val_blocks = fetch_shard(
        fs, f"{root}/prepare/validation", local, split="validation", rank=rank, world=world
    )
    mine = np.arange(per_worker)
    bs, accum = hp["batch_size"], hp["gradient_accumulation"]
    steps_per_epoch, total = cfg["steps_per_epoch"], cfg["total_steps"]
    schedule = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}[
        hp["lr_scheduler"]
    ]
    scheduler = get_scheduler(
        schedule, optimizer, num_warmup_steps=hp["warmup_steps"], num_training_steps=total
    )

    state = {
        "step": 0,
        "best_val": None,
        "bad_evals": 0,
        "history": [],
        "tokens": 0,
        "stopped_early": False,
        "train_seconds": 0.0,
    }
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            saved = torch.load(Path(d) / "trainable.pt", map_location=device, weights_only=True)
            core.load_state_dict(saved, strict=False)
            optimizer.load_state_dict(
                torch.load(Path(d) / "optimizer.pt", map_location=device, weights_only=True)
            )
            scheduler.load_state_dict(torch.load(Path(d) / "scheduler.pt", weights_only=True))
            state = json.loads((Path(d) / "state.json").read_text())
            torch.set_rng_state(torch.load(Path(d) / "rng.pt", weights_only=True))
    resumed_from = state["step"]
    if rank == 0:
        print(
            f"llmops-train: starting at step {resumed_from} of {total} ({world} workers, {device})",
            flush=True,
        )

    def all_sum(values: list[float]) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64, device=device)
        if world > 1 and dist.is_initialized():
            dist.all_reduce(t)
        return t.tolist()

    def all_max(value: float) -> float:
        if world == 1 or not dist.is_initialized():
            return value
        t = torch.tensor([value], dtype=torch.float32, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return float(t)

    def validation_loss() -> float | None:
        if not val_blocks.total:
            return None
        model.eval()
        nll = count = 0.0
        with torch.no_grad():
            for start in range(0, len(val_blocks), bs):
                index = np.arange(start, min(start + bs, len(val_blocks)))
                x, mask, labels = _batch(val_blocks, index, device)
                with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                    logits = core(input_ids=x, attention_mask=mask).logits
                n = int((labels[:, 1:] != -100).sum())
                nll += float(_token_loss(logits, labels, 0.0)) * n
                count += n
        model.train()
        nll, count = all_sum([nll, count])
        return nll / count if count else None

    def report(metrics: dict[str, Any], with_checkpoint: bool) -> None:
        if not with_checkpoint:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as d:
            if rank == 0:
                torch.save({n: p.detach().cpu() for n, p in trainable}, Path(d) / "trainable.pt")
                torch.save(optimizer.state_dict(), Path(d) / "optimizer.pt")
                torch.save(scheduler.state_dict(), Path(d) / "scheduler.pt")
                torch.save(torch.get_rng_state(), Path(d) / "rng.pt")
                (Path(d) / "state.json").write_text(json.dumps(state))
            ray.train.report(
                metrics,
                checkpoint=ray.train.Checkpoint.from_directory(d) if rank == 0 else None,
                checkpoint_dir_name=f"step-{state['step']:08d}",
            )

    every = cfg["checkpoint_every"] or steps_per_epoch
    interval = cfg["progress_interval_s"]
    model.train()
    window_loss = window_tokens = window_kl = window_ce = 0.0
    window_count = 0
    window_start = last_report = time.monotonic()
    while state["step"] < total and not state["stopped_early"]:
        epoch, offset = divmod(state["step"], steps_per_epoch)
        order = mine[np.random.default_rng(hp["seed"] + epoch).permutation(len(mine))]
        micro = 0
        index = offset * accum * bs
        loss_acc = kl_acc = ce_acc = 0.0
        while state["step"] < total and micro < steps_per_epoch * accum - offset * accum:
            chunk = order[index : index + bs]
            if len(chunk) == 0:
                chunk = order[:bs]  # fewer blocks than batch x accumulation: reuse the shard's start
            index += bs
            micro += 1
            x, mask, labels = _batch(train_blocks, chunk, device)
            sync = micro % accum == 0
            context = (
                model.no_sync() if (world > 1 and not sync and hasattr(model, "no_sync")) else _nullcontext()
            )
            with context, torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                logits = model(input_ids=x, attention_mask=mask).logits
                if teacher is None:
                    loss = _token_loss(logits, labels, hp["label_smoothing"]) / accum
                else:
                    with torch.no_grad():
                        teacher_logits = teacher(input_ids=x, attention_mask=mask).logits
                    loss, kl, ce = distillation_loss(
                        logits,
                        teacher_logits,
                        labels,
                        distill["temperature"],
                        distill["alpha"],
                        hp["label_smoothing"],
                    )
                    del teacher_logits
                    loss = loss / accum
                    kl_acc += kl.item() / accum
                    ce_acc += ce.item() / accum
            if scaler:
                scaler.scale(loss).backward()
            else:
                loss.backward()
            loss_acc += loss.item()
            window_tokens += float(mask.sum())
            if not sync:
                continue
            if scaler:
                scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_([p for _, p in trainable], hp["max_grad_norm"])
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state["step"] += 1
            window_loss += loss_acc
            window_kl += kl_acc
            window_ce += ce_acc
            window_count += 1
            loss_acc = kl_acc = ce_acc = 0.0
            step = state["step"]
            at_checkpoint = step % every == 0 or step == total
            # Progress every `interval` seconds (rank 0's clock decides for all: every worker must
            # call ray.train.report the same number of times), and at every checkpoint.
            due = time.monotonic() - last_report >= interval if rank == 0 else False
            if not at_checkpoint and not all_max(float(due)):
                continue
            now = time.monotonic()
            loss_sum, tokens, elapsed, kl_sum, ce_sum = all_sum(
                [window_loss, window_tokens, now - window_start, window_kl, window_ce]
            )
            elapsed = elapsed / world
            state["tokens"] += int(tokens)
            state["train_seconds"] += elapsed
            window_start = now  # the report itself counts toward the next window: honest tokens/s
            metrics = {
                "step": step,
                "epoch": step / steps_per_epoch,
                "loss": loss_sum / (window_count * world),
                "tokens_per_second": tokens / elapsed if elapsed > 0 else 0.0,
                "learning_rate": scheduler.get_last_lr()[0],
            }
            if teacher is not None:  # the two terms of the distillation loss, before their weights
                metrics["kl"] = kl_sum / (window_count * world)
                metrics["ce"] = ce_sum / (window_count * world)
            if at_checkpoint:
                val = validation_loss()
                if val is not None:
                    metrics["val_loss"] = val
                    es = hp.get("early_stopping")
                    if state["best_val"] is None or val < state["best_val"] - (
                        es["min_delta"] if es else 0.0
                    ):
                        state["best_val"], state["bad_evals"] = val, 0
                    else:
                        state["bad_evals"] += 1
                        if es and state["bad_evals"] >= es["patience"]:
                            state["stopped_early"] = True
            state["history"].append(
                {k: round(v, 6) if isinstance(v, float) else v for k, v in metrics.items()}
            )
            report(metrics, with_checkpoint=at_checkpoint)
            window_loss = window_tokens = window_kl = window_ce = 0.0
            window_count = 0
            last_report = time.monotonic()
            if state["stopped_early"]:
                break

    # Every worker's peak resident memory (ru_maxrss is in KiB on Linux), for the result.
    peak = [0.0] * world
    peak[rank] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0
    peak = all_sum(peak)
    if rank == 0:
        with tempfile.TemporaryDirectory() as d:
            info = save_final(core, cfg, base_dir, tokenizer, Path(d) / "model")
            upload_dir(store, "model", Path(d) / "model")
        result = {
            "steps": state["step"],
            "total_steps": total,
            "resumed_from": resumed_from,
            "stopped_early": state["stopped_early"],
            "history": state["history"],
            "tokens": state["tokens"],
            "tokens_per_second": state["tokens"] / state["train_seconds"] if state["train_seconds"] else 0.0,
            "best_val_loss": state["best_val"],
            "final_loss": state["history"][-1]["loss"] if state["history"] else None,
            "final_kl": state["history"][-1].get("kl") if state["history"] else None,
            "final_ce": state["history"][-1].get("ce") if state["history"] else None,
            "workers": world,
            "peak_rss_bytes": [int(p) for p in peak],
            "device": device.type,
            "precision": str(amp).removeprefix("torch.") if amp else "float32",
            "model": info,
        }
        store.put_bytes("train/result.json", json.dumps(result, indent=2).encode())
    ray.train.report({"step": state["step"], "final": 1})
    shutil.rmtree(local, ignore_errors=True)  # every rank is past the barrier: the node cache is unused


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def worker_config(
    ctx: Context, base: ModelSource | None, prepared: dict[str, Any], teacher: ModelSource | None = None
) -> dict[str, Any]:
    """What every Ray Train worker reads; `teacher` is spec.method.distillation.teacher resolved (distill)."""
    spec = ctx.spec
    hp = spec.method.hyperparameters
    workers = spec.resources.workers
    blocks = prepared["blocks"]["train"]
    if blocks < workers:
        raise UserError(
            f"only {blocks} training blocks of {prepared['blockSize']} tokens for {workers} workers; "
            "add data, lower spec.data.preparation.tokenization.blockSize, or use fewer workers"
        )
    steps_per_epoch, total = plan_steps(
        blocks // workers, hp.batch_size, hp.gradient_accumulation, hp.epochs, hp.max_steps
    )
    lora = spec.method.lora.model_dump() if spec.method.lora else None
    if spec.method.type in ("lora", "qlora") and lora is None:
        from llmops.api.trainingjob import LoRA

        lora = LoRA().model_dump()
    distillation = spec.method.distillation
    return {
        "uid": ctx.run.job.uid,
        "method": spec.method.type,
        "distillation": (
            {"temperature": distillation.temperature, "alpha": distillation.alpha}
            if distillation is not None and teacher is not None
            else None
        ),
        "teacher": teacher,
        "hyperparameters": hp.model_dump(),
        "lora": lora,
        "architecture": spec.model.architecture.model_dump() if spec.model.architecture else None,
        "base": base,
        "work": ctx.work,
        "threads": cpu_count(spec.resources.per_worker.cpu),
        "checkpoint_every": spec.method.checkpoint_every_steps,
        # Ray Train's controller takes one report per worker every 2 s (RAY_TRAIN_HEALTH_CHECK_INTERVAL_S);
        # reporting more often than that would stall the workers.
        "progress_interval_s": float(os.environ.get("LLMOPS_PROGRESS_INTERVAL_S", "10")),
        "steps_per_epoch": steps_per_epoch,
        "total_steps": total,
    }


def unwrap(error: BaseException) -> BaseException:
    """The first UserError inside Ray Train's wrappers, or the error itself."""
    seen: list[BaseException] = [error]
    while seen:
        e = seen.pop(0)
        cause = getattr(e, "cause", None)
        if isinstance(cause, UserError):  # a Ray task's error: its str() carries the remote traceback
            return cause
        if isinstance(e, UserError):
            return e
        inner = [getattr(e, "cause", None), e.__cause__, getattr(e, "controller_failure", None)]
        inner += list(getattr(e, "worker_failures", {}).values())
        seen += [i for i in inner if isinstance(i, BaseException)]
    return error


def run(
    ctx: Context, base: ModelSource | None, prepared: dict[str, Any], teacher: ModelSource | None = None
) -> dict[str, Any]:
    if summary := ctx.done("train"):
        log.info("train: done before, skipping")
        return summary
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    cfg = worker_config(ctx, base, prepared, teacher)
    gpus = ctx.spec.resources.per_worker.gpus
    resources: dict[str, float] = {"CPU": cfg["threads"]}
    if gpus:
        resources["GPU"] = gpus
    fs, root = ctx.work.arrow()
    ctx.clear("model")
    import ray

    waiting = resource_wait(ctx.spec.resources.workers, resources, ray.cluster_resources())
    if waiting:
        log.warning("train: %s", waiting)
    ctx.reporter.write(
        progress={"stage": "Training", "total_steps": cfg["total_steps"]},
        message=waiting or "starting the Ray Train workers",
    )
    trainer = TorchTrainer(
        train_loop,
        train_loop_config=cfg,
        torch_config=TorchConfig(backend="nccl" if gpus else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=ctx.spec.resources.workers, use_gpu=gpus > 0, resources_per_worker=resources
        ),
        run_config=RunConfig(
            name="run",
            storage_path=f"{root}/train",
            storage_filesystem=fs,
            failure_config=FailureConfig(max_failures=int(os.environ.get("LLMOPS_TRAIN_MAX_FAILURES", "2"))),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            callbacks=[ProgressCallback(ctx.reporter, cfg["total_steps"])],
        ),
    )
    try:
        trainer.fit()
    except Exception as e:
        inner = unwrap(e)
        if isinstance(inner, UserError):
            raise inner from e
        raise
    ctx.reporter.reload()
    result = ctx.get_json("train/result.json")
    log.info(
        "train: %d steps (resumed from %d), final loss %s",
        result["steps"],
        result["resumed_from"],
        result["final_loss"],
    )
    return ctx.mark_done("train", result)
