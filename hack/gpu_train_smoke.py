"""GPU smoke of the training path: a bf16 LoRA fine-tune on one GPU in an nccl process group.

The model is what each Ray Train worker builds (`training.model.build`), with the method, LoRA
settings and hyperparameters of `examples/trainingjob-lora.yaml`, on a tiny Llama that
`training.tiny` makes from the bundled corpus; batches and loss are the worker's own (`_batch`,
`_token_loss`) and mixed precision is bf16, as the worker picks it on a GPU that supports it. What
Ray Train adds around that (the nccl process group, `prepare_model`'s DistributedDataParallel) is set
up here with torch.distributed directly, so the check needs torch, transformers and peft, not Ray.

It passes when the loss falls, only the adapters train, the weights stay fp32 under bf16 autocast,
and an nccl all-reduce answers. A JSON report goes to stdout (and `--out`).

    python hack/gpu_train_smoke.py [--steps 30] [--out DIR] [--device cpu]

It is meant for a CUDA GPU, which CI has not; `--device cpu` runs the same steps with gloo and bf16
autocast on the CPU, so a unit test keeps the script working.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llmops import jsonl  # noqa: E402
from llmops.api.trainingjob import LoRA, TrainingJobSpec  # noqa: E402
from training.model import build, load_tokenizer  # noqa: E402
from training.tiny import make_tiny_llama  # noqa: E402
from training.train import _batch, _token_loss  # noqa: E402

CORPUS = ROOT / "training" / "data" / "quickstart" / "train.jsonl"
BLOCK = 128


def blocks(tokenizer, texts: list[str]):
    """The corpus packed into BLOCK-token rows, as the prepare stage packs it (ids, lengths)."""
    import numpy as np

    flat = [i for t in texts for i in tokenizer(t)["input_ids"] + [tokenizer.eos_token_id]]
    rows = len(flat) // BLOCK
    ids = np.array(flat[: rows * BLOCK], dtype=np.int64).reshape(rows, BLOCK)
    return ids, np.full(rows, BLOCK, dtype=np.int64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    args = parser.parse_args()

    import numpy as np
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    gpu = args.device == "cuda"
    assert torch.cuda.is_available() or not gpu, "no CUDA GPU (--device cpu runs the same steps on the CPU)"
    doc = yaml.safe_load((ROOT / "examples" / "trainingjob-lora.yaml").read_text())
    spec = TrainingJobSpec.model_validate(doc["spec"])
    hp = spec.method.hyperparameters.model_dump()
    lora = (spec.method.lora or LoRA()).model_dump()
    cfg = {"method": spec.method.type, "hyperparameters": hp, "lora": lora}
    texts = [row["text"] for _, row in jsonl.read_path(CORPUS)]
    base = make_tiny_llama(texts, Path(tempfile.mkdtemp(prefix="tiny-")) / "base")
    tokenizer = load_tokenizer(base)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    if gpu:
        torch.cuda.set_device(0)
    backend = "nccl" if gpu else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    device = torch.device("cuda", 0) if gpu else torch.device("cpu")
    model = build(cfg, base, tokenizer, device)
    core = model
    model = DistributedDataParallel(model, device_ids=[0] if gpu else None)
    amp = torch.float16 if gpu and not torch.cuda.is_bf16_supported() else torch.bfloat16
    trainable = [p for p in core.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=hp["learning_rate"], weight_decay=hp["weight_decay"])

    ids, lengths = blocks(tokenizer, texts)
    rng = np.random.default_rng(hp["seed"])
    batch = min(hp["batch_size"], len(ids))
    losses, tokens = [], 0
    sync = torch.cuda.synchronize if gpu else (lambda: None)
    sync()
    started = time.perf_counter()
    for _ in range(args.steps):
        x, mask, labels = _batch(ids, lengths, rng.choice(len(ids), batch, replace=False), device)
        with torch.autocast(device.type, dtype=amp):
            logits = model(input_ids=x, attention_mask=mask).logits
        loss = _token_loss(logits, labels, hp["label_smoothing"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, hp["max_grad_norm"])
        optimizer.step()
        losses.append(loss.item())
        tokens += int(mask.sum())
    sync()
    seconds = time.perf_counter() - started
    probe = torch.ones(4, device=device)
    dist.all_reduce(probe)
    first, last = float(np.mean(losses[:5])), float(np.mean(losses[-5:]))
    report = {
        "device": torch.cuda.get_device_name(0) if gpu else "cpu",
        "torch": torch.__version__,
        "nccl": ".".join(map(str, torch.cuda.nccl.version())) if gpu else None,
        "backend": dist.get_backend(),
        "autocast": str(amp),
        "method": cfg["method"],
        "lora": cfg["lora"],
        "trainable_params": sum(p.numel() for p in trainable),
        "all_params": sum(p.numel() for p in core.parameters()),
        "weights_dtype": str(next(iter(trainable)).dtype),
        "steps": args.steps,
        "loss_first5": round(first, 4),
        "loss_last5": round(last, 4),
        "tokens_per_second": round(tokens / seconds),
        "all_reduce": probe.tolist(),
    }
    report["ok"] = (
        last < first
        and report["trainable_params"] < report["all_params"] / 2
        and report["weights_dtype"] == "torch.float32"
        and report["all_reduce"] == [1.0] * 4
    )
    dist.destroy_process_group()
    print(json.dumps(report, indent=1))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "train_smoke.json").write_text(json.dumps(report, indent=1))
    print("GPU TRAIN SMOKE", "PASSED" if report["ok"] else "FAILED")
    sys.exit(0 if report["ok"] else 1)


if __name__ == "__main__":
    main()
