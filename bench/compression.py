"""What each quantization recipe buys and costs, for the tiny model, in one run: size on disk, peak
memory while serving, tokens/s from vLLM on the CPU, and the quality delta against the parent.

The parent is the project's tiny Llama (llmops.training.tiny: hidden 128, 2 layers, vocabulary 512)
trained here for `--steps` steps on the quickstart corpus, so that its next-token distribution is a
real one for quantization to disturb. Each recipe is what a `method.type: quantize` TrainingJob runs:
the recipe text from llmops.training.compress.recipe(spec.method.quantization), applied by the same
child process (`python -m llmops.training.compress JOB`) in the optimize environment
(`hack/venv.sh optimize`), calibrating GPTQ and SmoothQuant on the first `--calibration` packed
training blocks, as the compress stage does.

Then the parent and every compressed version are served, one at a time, by vLLM's OpenAI server on
this CPU with the argv a ModelDeployment runs (llmops.serving.local.cpu_argv, at --dtype bfloat16 for
all: int4 weights have no float32 kernel; the quantization format comes from the checkpoint's
config.json, as vLLM reads it):

- size: bytes of the weight files (*.safetensors);
- peak memory: the largest summed RSS of vLLM's process group (API server + engine core), sampled
  every 0.2 s from start to stop, so it includes loading, warm-up and the load below; the CPU KV
  cache is fixed at 1 GiB (VLLM_CPU_KVCACHE_SPACE) for every model;
- tokens/s: `--requests` completions of `--max-tokens` tokens each (ignore_eos), `--concurrency` at a
  time, after one warm-up request: completion tokens / wall time;
- quality: perplexity on held-out text (quickstart eval.jsonl prompts and references) from vLLM's own
  prompt log-probabilities (`prompt_logprobs`), i.e. the served model's quality, not a reloaded
  copy's; the delta is perplexity / parent's perplexity (the ratio a `compare: ratio` gate reads).

Every figure has its ratio against the parent, measured in the same run on the same machine.

    python bench/compression.py [--steps 300] [--recipes W8A8:RTN,W4A16:GPTQ,...] [--requests 32]
"""

from __future__ import annotations

import concurrent.futures
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
QUICKSTART = ROOT / "llmops/training/data/quickstart"
RECIPES = "W8A8:RTN,W8A8:SmoothQuantGPTQ,W4A16:RTN,W4A16:GPTQ,FP8_DYNAMIC:RTN"


def texts(name: str) -> list[str]:
    from llmops import jsonl

    rows = [row for _, row in jsonl.read_path(QUICKSTART / name)]
    return [row.get("text") or f"{row.get('prompt', '')} {row.get('reference', '')}".strip() for row in rows]


def blocks(tokenizer, docs: list[str], size: int) -> list[list[int]]:
    """Documents as BOS + tokens + EOS, concatenated and cut into blocks of `size` tokens."""
    stream: list[int] = []
    for doc in docs:
        stream += [
            tokenizer.bos_token_id,
            *tokenizer.encode(doc, add_special_tokens=False),
            tokenizer.eos_token_id,
        ]
    return [stream[i : i + size] for i in range(0, len(stream) - size + 1, size)]


def train_parent(out: Path, steps: int, block: int) -> list[list[int]]:
    """The tiny Llama, trained `steps` AdamW steps (batch 8) on the quickstart corpus; returns the blocks."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    from llmops.training.tiny import make_tiny_llama

    make_tiny_llama(texts("train.jsonl"), out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = LlamaForCausalLM.from_pretrained(out)
    data = torch.tensor(blocks(tokenizer, texts("train.jsonl"), block))
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        batch = data[torch.randint(len(data), (8,), generator=generator)]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        optimiser.step()
        optimiser.zero_grad()
    print(f"parent: {steps} steps on {len(data)} blocks of {block}, final training loss {loss.item():.3f}")
    model.save_pretrained(out, safe_serialization=True)
    return data.tolist()


def optimize_python() -> str:
    venv = subprocess.run(
        [str(ROOT / "hack/venv.sh"), "optimize"], capture_output=True, text=True, check=True
    )
    return str(Path(venv.stdout.strip()) / "bin/python")


def quantize(
    python: str, parent: Path, out: Path, scheme: str, algorithm: str, calibration: Path, samples: int
) -> float:
    """Run the compress stage's child process on `parent`; returns llm-compressor's seconds."""
    from llmops.api.trainingjob import Quantization
    from llmops.training.compress import needs_calibration, recipe

    settings = Quantization(scheme=scheme, algorithm=algorithm)
    work = out.parent / f"{out.name}-job"
    work.mkdir(parents=True)
    job = {
        "model": str(parent),
        "out": str(out),
        "recipe": recipe(settings),
        "scheme": scheme,
        "algorithm": algorithm,
        "threads": os.cpu_count() or 1,
    }
    if needs_calibration(settings):
        job |= {"calibration": str(calibration), "samples": samples}
    (work / "job.json").write_text(json.dumps(job))
    subprocess.run([python, "-m", "llmops.training.compress", str(work / "job.json")], check=True, cwd=ROOT)
    return json.loads((work / "result.json").read_text())["seconds"]


def group_rss(pgid: int) -> int:
    """Summed resident bytes of the processes in process group `pgid` (from /proc)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.getpgid(int(entry)) != pgid:
                continue
            with open(f"/proc/{entry}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ProcessLookupError, ValueError):
            continue
    return total


def serve(
    model: Path, log: Path, requests: int, concurrency: int, max_tokens: int, held_out: list[str]
) -> dict:
    """Serve `model` with vLLM on the CPU; returns peak RSS, tokens/s and perplexity on `held_out`."""
    from openai import OpenAI

    from llmops.dev.cluster import free_port
    from llmops.serving.local import start_vllm, stop, wait_healthy

    port = free_port()
    # bfloat16 for every model: int4 weights (W4A16) have no float32 kernel, and the parent must be
    # measured the same way.
    proc = start_vllm(
        model,
        port=port,
        served_model_name="m",
        log=log,
        tie_to_parent=True,
        extra_args=["--dtype", "bfloat16"],
    )
    peak, done = 0, threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, group_rss(proc.pid))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc, timeout=600, log=log)
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", timeout=600)
        # Quality: the served model's log-probability of every held-out token after the first.
        nll, count = 0.0, 0
        for text in held_out:
            reply = client.completions.create(
                model="m", prompt=text, max_tokens=1, extra_body={"prompt_logprobs": 0}
            )
            # One entry per prompt position, None for the first; with prompt_logprobs 0 each holds
            # only the prompt's own token: {token_id: {"logprob", "rank", "decoded_token"}}.
            for position in (reply.choices[0].model_extra or {}).get("prompt_logprobs") or []:
                if position:
                    nll -= next(iter(position.values()))["logprob"]
                    count += 1

        def one(i: int) -> int:
            reply = client.completions.create(
                model="m",
                prompt=held_out[i % len(held_out)][:200],
                max_tokens=max_tokens,
                temperature=0,
                extra_body={"ignore_eos": True},
            )
            return reply.usage.completion_tokens

        one(0)  # warm-up
        start = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
            tokens = sum(pool.map(one, range(requests)))
        seconds = time.perf_counter() - start
    finally:
        done.set()
        sampler.join()
        stop(proc)
    return {"peak_rss": peak, "tokens_per_s": tokens / seconds, "perplexity": math.exp(nll / max(count, 1))}


def size(model: Path) -> int:
    return sum(p.stat().st_size for p in model.glob("*.safetensors"))


def main() -> None:
    import arguments  # bench/arguments.py, beside this script

    parser = arguments.parser(__doc__)
    parser.add_argument("--steps", type=int, default=300, help="training steps of the parent")
    parser.add_argument("--block", type=int, default=64, help="tokens per training/calibration block")
    parser.add_argument("--calibration", type=int, default=64, help="calibration blocks (GPTQ, SmoothQuant)")
    parser.add_argument("--recipes", default=RECIPES, help="SCHEME:ALGORITHM,... (spec.method.quantization)")
    parser.add_argument("--requests", type=int, default=32, help="completions per served model")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight at once")
    parser.add_argument("--max-tokens", type=int, default=64, help="max_tokens of each completion")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()

    import numpy as np

    work = Path(tempfile.mkdtemp(prefix="bench-compression-"))
    try:
        parent = work / "parent"
        data = train_parent(parent, args.steps, args.block)
        calibration = work / "calibration.npz"
        rows = np.array(data[: args.calibration], dtype=np.int64)
        np.savez(calibration, ids=rows, lengths=np.full(len(rows), rows.shape[1], dtype=np.int64))
        python = optimize_python()
        held_out = texts("eval.jsonl")
        models = {"parent": (parent, 0.0)}
        for item in args.recipes.split(","):
            scheme, algorithm = item.split(":")
            out = work / f"{scheme}-{algorithm}"
            seconds = quantize(python, parent, out, scheme, algorithm, calibration, len(rows))
            models[f"{scheme} {algorithm}"] = (out, seconds)
        results = {}
        for name, (folder, seconds) in models.items():
            measured = serve(folder, work / f"{folder.name}.log", args.requests, args.concurrency,
                             args.max_tokens, held_out)  # fmt: skip
            results[name] = measured | {"size": size(folder), "seconds": seconds}
            print(f"  measured {name}: {results[name]}", flush=True)
        base = results["parent"]
        print()
        print(
            "| recipe | compress s | size on disk | x parent | peak RSS serving | x parent"
            " | tokens/s (vLLM CPU) | x parent | perplexity | x parent |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        for name, r in results.items():
            print(
                f"| {name} | {r['seconds']:.1f} | {r['size'] / 2**20:.2f} MiB"
                f" | {r['size'] / base['size']:.2f}"
                f" | {r['peak_rss'] / 2**20:.0f} MiB | {r['peak_rss'] / base['peak_rss']:.2f}"
                f" | {r['tokens_per_s']:.0f} | {r['tokens_per_s'] / base['tokens_per_s']:.2f}"
                f" | {r['perplexity']:.3f} | {r['perplexity'] / base['perplexity']:.4f} |"
            )
    finally:
        if args.keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
