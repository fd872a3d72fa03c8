"""The Ray Train path's own cost: tokens/s of training.train's TorchTrainer loop vs a plain torch loop.

Same tiny Llama (random init, head_dim 64), same packed blocks, same optimiser, batch, thread count
and number of steps, in the same run on the same machine. The Ray path is the workload's real
`train_loop` under TorchTrainer with one worker (gloo; progress reports, a checkpoint at the end and
the final model upload included); the baseline is a bare loop in a fresh process with the same
OMP_NUM_THREADS, as Ray starts its workers. The samples alternate; the best of each counts (this
machine is shared: the worst samples measure the neighbours).

Printed: tokens/s of each, measured inside the loop (from the first step to the last, the number
the workload reports), and the Ray path's rate over the whole `fit()` call including worker
start-up; the ratio Ray / plain of the in-loop rates (goal >= 0.9) and of the end-to-end rate.

    python bench/training_overhead.py [--steps 150] [--batch 8] [--block 128] [--threads 2] [--repeats 3]

With `--memory [--scale 20 ...]`: each worker's peak RSS (2 workers) on the bundled data and on
data `scale` x its size, and the ratio (goal: < 1.2 at 20x; the shard streams to a local file).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def prepare(work: Path, block: int, scale: int = 1) -> tuple[Path, int]:
    """Tokenize and pack the quickstart corpus into <work>/prepare as the prepare stage lays it out.

    `scale`: the packed blocks written `scale` times over (a dataset `scale` x the bundled one), in
    parts of the bundled size, as the prepare stage writes one file per Ray Data block.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from llmops.training import text
    from llmops.training.model import load_tokenizer
    from llmops.training.tiny import corpus, make_tiny_llama

    texts = corpus([ROOT / "llmops/training/data/quickstart/train.jsonl", ROOT / "tests/data/corpus.txt"])
    base = make_tiny_llama(texts, work / "base")
    tok = load_tokenizer(base)
    docs = [[tok.bos_token_id, *tok.encode(t, add_special_tokens=False), tok.eos_token_id] for t in texts]
    blocks, lengths = text.pack_blocks(docs, block, tok.pad_token_id)
    (work / "prepare/train").mkdir(parents=True)
    table = pa.table(
        {"input_ids": pa.array(blocks, pa.list_(pa.int32())), "length": pa.array(lengths, pa.int32())}
    )
    for part in range(scale):
        pq.write_table(table, work / f"prepare/train/part-{part:05d}.parquet")
    tok.save_pretrained(work / "prepare/tokenizer")
    return base, len(blocks) * scale


def config(work: Path, base: Path, steps: int, batch: int, threads: int, blocks: int) -> dict:
    from llmops.api.common import ObjectStorageLocation
    from llmops.api.trainingjob import Hyperparameters
    from llmops.training.context import StoreSpec
    from llmops.training.model import ModelSource
    from llmops.training.train import plan_steps

    hp = Hyperparameters(max_steps=steps, learning_rate=1e-3, batch_size=batch, lr_scheduler="constant")
    local = StoreSpec(ObjectStorageLocation.model_validate({"local": {"path": str(work)}}))
    per_epoch, total = plan_steps(blocks, batch, 1, 1, steps)
    return {
        "uid": "bench",
        "method": "full",
        "hyperparameters": hp.model_dump(),
        "lora": None,
        "architecture": None,
        "base": ModelSource(
            str(base), StoreSpec(ObjectStorageLocation.model_validate({"local": {"path": str(base)}}))
        ),
        "work": local,
        "threads": threads,
        "checkpoint_every": total,
        "steps_per_epoch": per_epoch,
        "total_steps": total,
        "progress_interval_s": 10.0,
    }


def plain_loop(cfg: dict, base: Path, work: Path) -> float:
    """The baseline: the same model, batches and optimiser in a bare loop. Returns tokens/s."""
    import numpy as np
    import torch

    from llmops.training.blocks import fetch_shard
    from llmops.training.model import build, load_tokenizer
    from llmops.training.train import _batch, _token_loss

    torch.set_num_threads(cfg["threads"])
    hp = cfg["hyperparameters"]
    device = torch.device("cpu")
    model = build(cfg, base, load_tokenizer(base), device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=hp["learning_rate"], weight_decay=hp["weight_decay"])
    fs, root = cfg["work"].arrow()
    ids = fetch_shard(fs, f"{root}/prepare/train", work / "plain", split="train", rank=0, world=1)
    bs = hp["batch_size"]
    model.train()
    tokens = 0.0
    start = time.monotonic()
    step = 0
    while step < cfg["total_steps"]:
        order = np.random.default_rng(hp["seed"] + step // cfg["steps_per_epoch"]).permutation(len(ids))
        for i in range(cfg["steps_per_epoch"]):
            if step >= cfg["total_steps"]:
                break
            x, mask, labels = _batch(ids, order[i * bs : (i + 1) * bs], device)
            loss = _token_loss(model(input_ids=x, attention_mask=mask).logits, labels, 0.0)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, hp["max_grad_norm"])
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            tokens += float(mask.sum())
            step += 1
    return tokens / (time.monotonic() - start)


def plain_process(cfg: dict, base: Path, work: Path) -> float:
    """The baseline in a fresh process with OMP_NUM_THREADS set, as Ray starts its workers."""
    path = work / "plain.pkl"
    path.write_bytes(pickle.dumps((cfg, str(base), str(work))))
    env = {**os.environ, "OMP_NUM_THREADS": str(cfg["threads"]), "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, __file__, "--plain", str(path)], env=env, capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def ray_path(cfg: dict, work: Path, workers: int = 1) -> tuple[float, float, float]:
    """The workload's TorchTrainer path. Returns (in-loop tokens/s, end-to-end tokens/s, fit seconds)."""
    result, seconds = fit(cfg, work, workers)
    return result["tokens_per_second"], result["tokens"] / seconds, seconds


def fit(cfg: dict, work: Path, workers: int) -> tuple[dict, float]:
    """One TorchTrainer run of the workload's `train_loop`: (its train/result.json, fit seconds)."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from llmops.training.train import train_loop

    trainer = TorchTrainer(
        train_loop,
        train_loop_config=cfg,
        torch_config=TorchConfig(backend="gloo"),
        scaling_config=ScalingConfig(num_workers=workers, resources_per_worker={"CPU": cfg["threads"]}),
        run_config=RunConfig(name="bench", storage_path=str(work / "train")),
    )
    start = time.monotonic()
    trainer.fit()
    seconds = time.monotonic() - start
    return json.loads((work / "train/result.json").read_text()), seconds


def memory(args: argparse.Namespace) -> None:
    """Each worker's peak RSS on the bundled data and on data `--scale` x its size (same steps).

    Goal (issue 12): peak RSS grows by less than 20% while the data grows 20x: a worker streams its
    shard to a local file (llmops/training/blocks.py) instead of holding the split in memory.
    """
    import ray

    scales = [1, *args.scale]
    workers, threads = 2, 1
    peaks: dict[int, list[int]] = {}
    sizes: dict[int, int] = {}
    ray.init(num_cpus=workers * threads, include_dashboard=False, logging_level="ERROR",
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})  # fmt: skip
    try:
        for scale in scales:
            with tempfile.TemporaryDirectory(prefix="llmops-bench-") as tmp:
                work = Path(tmp)
                base, blocks = prepare(work, args.block, scale)
                sizes[scale] = sum(f.stat().st_size for f in (work / "prepare/train").iterdir())
                cfg = config(work, base, args.memory_steps, args.batch, threads, blocks // workers)
                result, _ = fit(cfg, work, workers)
                peaks[scale] = result["peak_rss_bytes"]
    finally:
        ray.shutdown()
    print(f"{workers} Ray Train workers, {args.memory_steps} steps of {args.batch} x {args.block} tokens")
    for scale in scales:
        mib = [round(p / 2**20) for p in peaks[scale]]
        print(f"data {scale:>5}x ({sizes[scale] / 2**20:8.2f} MiB of Parquet): peak RSS per worker {mib} MiB")
    for scale in args.scale:
        growth = max(b / a for a, b in zip(peaks[1], peaks[scale], strict=True))
        print(f"ratio peak RSS {scale}x / 1x (worst worker): {growth:6.3f}  (goal < 1.2 at 20x)")


def main() -> None:
    import arguments  # bench/arguments.py, beside this script

    parser = arguments.parser(__doc__)
    parser.add_argument("--steps", type=int, default=150, help="training steps per run")
    parser.add_argument("--batch", type=int, default=8, help="sequences per step")
    parser.add_argument("--block", type=int, default=128, help="tokens per sequence")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1), help="torch threads")
    parser.add_argument(
        "--repeats", type=int, default=3, help="alternating samples of each path; best counts"
    )
    parser.add_argument(
        "--memory",
        action="store_true",
        help="measure each worker's peak RSS on the bundled data and on --scale x that data instead",
    )
    parser.add_argument("--scale", type=int, action="append", help="with --memory: data sizes (default 20)")
    parser.add_argument("--memory-steps", type=int, default=20, help="with --memory: steps per run")
    parser.add_argument("--plain", help=argparse.SUPPRESS)  # internal: run the baseline in this process
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.plain:
        cfg, base, work = pickle.loads(Path(args.plain).read_bytes())
        plain_loop({**cfg, "total_steps": 5}, Path(base), Path(work))  # untimed: one-time start-up costs
        print(plain_loop(cfg, Path(base), Path(work)))
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private local cluster on loopback
    if args.memory:
        args.scale = args.scale or [20]
        memory(args)
        return
    import ray

    plain: list[float] = []
    in_loop: list[float] = []
    whole: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory(prefix="llmops-bench-") as tmp:
        work = Path(tmp)
        base, blocks = prepare(work, args.block)
        cfg = config(work, base, args.steps, args.batch, args.threads, blocks)
        plain.append(plain_process(cfg, base, work))  # before Ray starts: nothing else on the CPUs
        env = {"PYTHONPATH": str(ROOT)}
        ray.init(
            num_cpus=args.threads,
            include_dashboard=False,
            logging_level="ERROR",
            runtime_env={"env_vars": env},
        )
        try:
            time.sleep(5)  # let Ray's own processes settle before timing anything
            for i in range(args.repeats):
                if i:
                    plain.append(plain_process(cfg, base, work))
                shutil.rmtree(work / "train", ignore_errors=True)
                rate, end_to_end, seconds = ray_path(cfg, work)
                in_loop.append(rate)
                whole.append((end_to_end, seconds))
        finally:
            ray.shutdown()
    best_plain, best_ray = max(plain), max(in_loop)
    end_to_end, seconds = max(whole)
    print(
        f"model: tiny Llama (hidden 128, 2 layers, head_dim 64); "
        f"{args.steps} steps of {args.batch} x {args.block} tokens"
    )
    print(
        f"threads per loop: {args.threads}; samples (tokens/s): plain {[round(p) for p in plain]}, ", end=""
    )
    print(f"Ray {[round(r) for r in in_loop]}")
    print(f"plain torch loop:               {best_plain:10.0f} tokens/s")
    print(f"Ray Train path (in loop):       {best_ray:10.0f} tokens/s")
    print(
        f"Ray Train path (whole fit):     {end_to_end:10.0f} tokens/s  ({seconds:.1f} s with worker start-up)"
    )
    print(f"ratio Ray / plain (in loop):    {best_ray / best_plain:10.3f}  (goal >= 0.9)")
    print(f"ratio Ray / plain (end to end): {end_to_end / best_plain:10.3f}")
    assert math.isfinite(best_ray)


if __name__ == "__main__":
    main()
