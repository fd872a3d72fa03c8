"""Peak memory of the distillation loss's KL term: taken in checkpointed chunks (llmops/training/train.py
`distillation_loss`) against the whole-batch formula it replaced, in the same run.

Each variant runs in a fresh child process: student and teacher logits of `--batch` x `--seq` x `--vocab`
in `--dtype` (bfloat16, as a model trained in mixed precision returns them; the student's with a
gradient), the loss and its backward pass; the child reports its peak
RSS (getrusage ru_maxrss) and the memory already held by the logits before the loss, so the figure that
is compared is what the loss itself adds. The whole-batch formula is the loss as it was before its
chunks: log_softmax of both models over every counted position at once, KL (batchmean), plus the
cross-entropy over the whole batch (`_token_loss`), at alpha 0.5.

The point: at a 150k vocabulary (Qwen2.5, Llama 3) and 16k tokens a batch, one float32 softmax of the
whole batch is 10 GB; the chunked KL keeps one chunk's alive (KL_CHUNK_ELEMENTS elements).

    python bench/distillation_memory.py [--batch 2] [--seq 512] [--vocab 131072] [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALPHA = 0.5  # both terms of the loss count


def child(variant: str, batch: int, seq: int, vocab: int, temperature: float, dtype: str) -> dict:
    import torch
    import torch.nn.functional as F

    from llmops.training.train import _token_loss, distillation_loss

    torch.manual_seed(0)
    student = torch.randn(batch, seq, vocab, dtype=getattr(torch, dtype)).requires_grad_()
    teacher = torch.randn(batch, seq, vocab, dtype=getattr(torch, dtype))
    labels = torch.randint(0, vocab, (batch, seq))
    held = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if variant == "chunked":
        loss, kl, _ = distillation_loss(student, teacher, labels, temperature, ALPHA)
    else:  # the whole batch at once, as distillation_loss did before its chunks
        counted = labels[:, 1:] != -100
        s = F.log_softmax(student[:, :-1][counted].float() / temperature, dim=-1)
        t = F.log_softmax(teacher[:, :-1][counted].float() / temperature, dim=-1)
        kl = F.kl_div(s, t, log_target=True, reduction="batchmean")
        loss = ALPHA * temperature**2 * kl + (1 - ALPHA) * _token_loss(student, labels, 0.0)
    loss.backward()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"variant": variant, "kl": float(kl), "held_mib": held, "peak_mib": peak}


def main() -> None:
    import arguments  # bench/arguments.py, beside this script

    parser = arguments.parser(__doc__)
    parser.add_argument("--batch", type=int, default=2, help="sequences per batch")
    parser.add_argument("--seq", type=int, default=512, help="tokens per sequence")
    parser.add_argument("--vocab", type=int, default=131072, help="vocabulary size (logits per token)")
    parser.add_argument(
        "--dtype", default="bfloat16", choices=["bfloat16", "float32"], help="dtype of the logits"
    )
    parser.add_argument("--temperature", type=float, default=2.0, help="distillation temperature")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.batch, args.seq, args.vocab, args.temperature, args.dtype)))
        return
    shape = [
        "--batch",
        str(args.batch),
        "--seq",
        str(args.seq),
        "--vocab",
        str(args.vocab),
        "--dtype",
        args.dtype,
    ]
    results = {}
    for variant in ("whole-batch", "chunked"):
        out = subprocess.run(
            [sys.executable, __file__, "--child", variant, *shape, "--temperature", str(args.temperature)],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        )
        results[variant] = json.loads(out.stdout.strip().splitlines()[-1])
    logits_mib = args.batch * args.seq * args.vocab * (2 if args.dtype == "bfloat16" else 4) / 2**20
    print(f"logits: {args.batch} x {args.seq} x {args.vocab} {args.dtype} = {logits_mib:.0f} MiB per model")
    for variant, r in results.items():
        added = r["peak_mib"] - r["held_mib"]
        print(
            f"{variant:12s} KL {r['kl']:.6f} nats/token; peak RSS {r['peak_mib']:.0f} MiB, of which the loss"
            f" and its backward pass added {added:.0f} MiB"
        )
    whole, chunked = results["whole-batch"], results["chunked"]
    ratio = (chunked["peak_mib"] - chunked["held_mib"]) / (whole["peak_mib"] - whole["held_mib"])
    print(f"memory the loss adds, chunked / whole-batch: {ratio:.2f}x (same KL: {chunked['kl']:.6f})")


if __name__ == "__main__":
    main()
