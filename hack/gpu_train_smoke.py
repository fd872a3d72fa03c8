"""GPU smoke of the training path: train, save (merge), evaluate and register, on one GPU in an nccl group.

The model is what each Ray Train worker builds (`llmops.training.model.build`), with the method, LoRA
settings and hyperparameters of the example for `--method` (`examples/trainingjob-<method>.yaml`:
lora, qlora with its 4-bit NF4 base, full), on a tiny Llama that `llmops.training.tiny` makes from the
bundled corpus; batches and loss are the worker's own (`_batch`, `_token_loss`) and mixed precision
is bf16, as the worker picks it on a GPU that supports it (qlora always computes in bf16). What Ray
Train adds around that (the nccl process group, `prepare_model`'s DistributedDataParallel) is set up
here with torch.distributed directly, so the check needs torch, transformers and peft, not Ray.

After the steps, the rest of the path runs as the workload runs it, without Ray:
- save: `llmops.training.model.save_final` (lora: the adapter under adapter/ and merged into the base;
  qlora: the adapter saved, the base reloaded in bf16 and the adapter merged into it; full: the
  weights as they are);
- evaluate: `llmops.training.evaluate.Scorer` loads the saved folder as the evaluate stage does (bf16 on a
  GPU, fp32 on the CPU) and measures the held-out loss and perplexity on the last blocks of the
  corpus, which training never sees; the base and the adapted model in memory are measured the same
  way;
- register: `llmops.registry.register` into a local registry, with one gate (perplexity below the
  base's, checked by `llmops.training.gates`), then `resolve` and `download`, which verifies every file's
  sha256 against the manifest, and the downloaded model is measured once more.

It passes when the loss falls, only the adapters train (all weights for full), trainable weights
stay fp32 under bf16 autocast, an nccl all-reduce answers, the merged model's held-out loss is
within `tolerance` of the adapted model's (1e-3 nats on the CPU, fp32 throughout; 0.05 on a GPU,
where the saved model is scored in bf16 and, for qlora, the merge uses the bf16 base rather than
the NF4 one that was trained on), the gate passes (so the merge kept what training learned), and
the registered copy scores exactly as the saved one. A JSON report goes to stdout and
`--out`/train_smoke.json. Exit 0 passed, 1 failed, 2 refused before any work (the workload's
UserError message, e.g. qlora without a GPU or without bitsandbytes).

    python hack/gpu_train_smoke.py [--method lora|qlora|full] [--steps 30] [--out DIR] [--device cpu]

On the nvidia-h200 device machine (torch, transformers, peft, safetensors, pyyaml, numpy are there;
pydantic, the PII libraries that `llmops.training.evaluate` imports and bitsandbytes are not), the qlora and
lora runs in one call. First, here, from the repo root (about 50 MB of wheels, under the 64 MiB carry):

    echo /.whl/ >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 \
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
      bitsandbytes==0.50.2 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 \
      typing-inspection==0.4.5 phonenumbers==9.0.43 email-validator==2.4.0 dnspython==2.9.2

then one device run with carry [".whl"] and timeout_s 600:

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit; s=0; \
      for m in qlora lora; do python3 hack/gpu_train_smoke.py --method $m --out $OUT/$m || s=1; done; exit $s

(the versions are this project's venv's; bitsandbytes 0.50.2 is the one the training steps passed
with on an H200). Each run writes $OUT/<method>/train_smoke.json; model/, fetched/ and registry/
beside it are the saved, downloaded and registered copies.

`--device cpu` runs lora and full on the CPU with gloo and bf16 autocast, and refuses qlora with the
workload's message; the unit tests run all three, so the script keeps working.
"""

from __future__ import annotations

import argparse
import gc
import json
import socket
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llmops import jsonl, registry  # noqa: E402
from llmops.api.common import ModelReference, ObjectStorageLocation  # noqa: E402
from llmops.api.trainingjob import Gate, LoRA, TrainingJobSpec  # noqa: E402
from llmops.storage import open_store  # noqa: E402
from llmops.training import gates  # noqa: E402
from llmops.training.blocks import InMemory  # noqa: E402
from llmops.training.errors import UserError  # noqa: E402
from llmops.training.evaluate import Scorer, held_out_loss  # noqa: E402
from llmops.training.model import build, check_qlora_possible, load_tokenizer, save_final  # noqa: E402
from llmops.training.tiny import make_tiny_llama  # noqa: E402
from llmops.training.train import _batch, _token_loss  # noqa: E402

CORPUS = ROOT / "llmops" / "training" / "data" / "quickstart" / "train.jsonl"
BLOCK = 128
HELD_OUT = 8  # blocks at the corpus's end, never trained on: the evaluation's held-out split


def blocks(tokenizer, texts: list[str]):
    """The corpus packed into BLOCK-token rows, as the prepare stage packs it (ids, lengths)."""
    import numpy as np

    flat = [i for t in texts for i in tokenizer(t)["input_ids"] + [tokenizer.eos_token_id]]
    rows = len(flat) // BLOCK
    ids = np.array(flat[: rows * BLOCK], dtype=np.int64).reshape(rows, BLOCK)
    return ids, np.full(rows, BLOCK, dtype=np.int64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--method", choices=["lora", "qlora", "full"], default="lora")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    args = parser.parse_args()

    import numpy as np
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    gpu = args.device == "cuda"
    doc = yaml.safe_load((ROOT / "examples" / f"trainingjob-{args.method}.yaml").read_text())
    spec = TrainingJobSpec.model_validate(doc["spec"])
    assert spec.method.type == args.method, spec.method.type
    try:  # the workload's preflight: qlora needs a GPU and bitsandbytes
        gpus_here = torch.cuda.device_count() if gpu else 0
        check_qlora_possible(spec.method.type, spec.resources.per_worker.gpus, gpus_here)
    except UserError as e:
        print(f"GPU TRAIN SMOKE REFUSED: {e}", file=sys.stderr)
        sys.exit(2)
    assert torch.cuda.is_available() or not gpu, "no CUDA GPU (--device cpu runs the same steps on the CPU)"
    hp = spec.method.hyperparameters.model_dump()
    lora = (spec.method.lora or LoRA()).model_dump() if args.method != "full" else None
    cfg = {"method": spec.method.type, "hyperparameters": hp, "lora": lora}
    texts = [row["text"] for _, row in jsonl.read_path(CORPUS)]
    work = args.out or Path(tempfile.mkdtemp(prefix="train-smoke-"))
    work.mkdir(parents=True, exist_ok=True)
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

    all_ids, all_lengths = blocks(tokenizer, texts)
    train = InMemory(all_ids[:-HELD_OUT], all_lengths[:-HELD_OUT])
    held = InMemory(all_ids[-HELD_OUT:], all_lengths[-HELD_OUT:])
    rng = np.random.default_rng(hp["seed"])
    batch = min(hp["batch_size"], len(train))
    losses, tokens = [], 0
    sync = torch.cuda.synchronize if gpu else (lambda: None)
    sync()
    started = time.perf_counter()
    for _ in range(args.steps):
        x, mask, labels = _batch(train, rng.choice(len(train), batch, replace=False), device)
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
    all_params = sum(p.numel() for p in core.parameters())
    trainable_params = sum(p.numel() for p in trainable)
    weights_dtype = str(next(iter(trainable)).dtype)

    # The adapted model in memory, measured as the worker's validation does (autocast on a GPU only).
    core.eval()
    with torch.autocast(device.type, dtype=amp, enabled=gpu):
        adapted_loss, _ = held_out_loss(core, held, device)
    dist.destroy_process_group()

    # Save as rank 0 does at the end of training; free the training model before scoring.
    model_dir = work / "model"
    saved = save_final(core, cfg, base, tokenizer, model_dir)
    del model, core, trainable, optimizer
    gc.collect()
    if gpu:
        torch.cuda.empty_cache()
    files = sorted(p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*") if p.is_file())
    saved_config = json.loads((model_dir / "config.json").read_text())

    # Evaluate as the evaluate stage does: the saved folder loaded fresh, the held-out blocks.
    merged_loss, merged_ppl = Scorer(model_dir, args.device).perplexity(held)
    base_loss, base_ppl = Scorer(base, args.device).perplexity(held)
    measured = {"validation_loss": merged_loss, "perplexity": merged_ppl}
    verdicts = gates.check([Gate(metric="perplexity", operator="<", threshold=base_ppl)], measured)

    # Register into a local registry; resolve and download it back (checksums verified), score again.
    store = open_store(ObjectStorageLocation.model_validate({"local": {"path": str(work / "registry")}}))
    name = f"smoke-{args.method}"
    registered: dict = {"name": name}
    reloaded_loss = None
    try:
        manifest = registry.register(
            store,
            name,
            model_dir,
            metrics=measured,
            gates=[registry.GateVerdict.model_validate(v.model_dump(by_alias=True)) for v in verdicts],
            lineage=registry.Lineage(
                base_model="tiny Llama (training.tiny)",
                method=args.method,
                hyperparameters=spec.method.model_dump(mode="json", by_alias=True, exclude_none=True),
            ),
        )
        resolved = registry.resolve(store, ModelReference(name=name, alias="latest"))
        fetched = registry.download(store, resolved, work / "fetched")
        reloaded_loss, _ = Scorer(fetched, args.device).perplexity(held)
        registered |= {"version": manifest.version, "artifacts": len(resolved.artifacts), "error": None}
    except registry.RegistryError as e:
        registered["error"] = str(e)

    tolerance = 0.05 if gpu else 1e-3
    report = {
        "device": torch.cuda.get_device_name(0) if gpu else "cpu",
        "torch": torch.__version__,
        "nccl": ".".join(map(str, torch.cuda.nccl.version())) if gpu else None,
        "backend": backend,
        "autocast": str(amp),
        "method": cfg["method"],
        "lora": cfg["lora"],
        "trainable_params": trainable_params,
        "all_params": all_params,
        "weights_dtype": weights_dtype,
        "steps": args.steps,
        "loss_first5": round(first, 4),
        "loss_last5": round(last, 4),
        "tokens_per_second": round(tokens / seconds),
        "all_reduce": probe.tolist(),
        "saved": saved
        | {"dtype": saved_config.get("dtype") or saved_config.get("torch_dtype"), "files": files},
        "held_out_blocks": HELD_OUT,
        "held_out_loss": {
            "base": round(base_loss, 5),
            "adapted": round(adapted_loss, 5),
            "merged": round(merged_loss, 5),
            "registered": None if reloaded_loss is None else round(reloaded_loss, 5),
        },
        "perplexity": {"base": round(base_ppl, 3), "merged": round(merged_ppl, 3)},
        "tolerance": tolerance,
        "gates": [v.model_dump(by_alias=True) for v in verdicts],
        "registered": registered,
    }
    adapters = args.method in ("lora", "qlora")
    checks = {
        "loss_falls": last < first,
        "trains_the_right_weights": trainable_params < all_params / 2
        if adapters
        else trainable_params == all_params,
        "fp32_weights": weights_dtype == "torch.float32",
        "all_reduce": report["all_reduce"] == [1.0] * 4,
        "saved_merged": saved["merged"] == adapters
        and "model.safetensors" in files
        and (not adapters or "adapter/adapter_model.safetensors" in files),
        "merged_matches_adapted": abs(merged_loss - adapted_loss) <= tolerance,
        "gate_passed": all(v.passed for v in verdicts),
        "registered_matches_saved": reloaded_loss is not None and abs(reloaded_loss - merged_loss) < 1e-6,
    }
    report["checks"] = checks
    report["ok"] = all(checks.values())
    print(json.dumps(report, indent=1))
    (work / "train_smoke.json").write_text(json.dumps(report, indent=1))
    print("GPU TRAIN SMOKE", "PASSED" if report["ok"] else "FAILED")
    sys.exit(0 if report["ok"] else 1)


if __name__ == "__main__":
    main()
