"""Stage 4, evaluate: perplexity, task metrics, bias and security suites, then the gates.

The scoring runs as one Ray task (with a GPU when the workers have them) that loads the trained
model from <workDir>/model/; the driver reads the evaluation datasets first, so a bad dataset fails
with a message before any model is loaded. Results: <workDir>/evaluate/report.json (metrics, a few
predictions per dataset, leaked canaries, probe outcomes) and the gate verdicts.

The baseline (spec.evaluation.baseline, a registered version pinned when the run started) is scored
by a second task of the same function with the same configuration: the same rows, the same
validation blocks, the same canaries and probes, the same generation settings; only the model
differs. Its metrics go to the report's `baseline` ({name, version, metrics}); gates judge the
trained model only. Perplexity needs token ids that mean the same to both models: when the
baseline's vocabulary (token -> id, and its BOS/EOS ids) equals the prepared tokenizer's, it reads
the very blocks the trained model reads; otherwise the validation documents are tokenized and packed
again with the baseline's tokenizer (a per-token loss over other tokens: comparable only roughly,
and the details say so).

Metric keys: perplexity and validation_loss (held-out split), <dataset>/<metric>, bias/gap,
bias/ll_gap, bias/parity, bias/<axis>/gap, security/leakage, security/<probe>.
Generation is greedy; a prediction ends at its first line break (answers are one line).
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

from llmops import jsonl
from llmops.storage import download_dir
from llmops.training import chat, gates, metrics, suites
from llmops.training.blocks import InMemory, Shard, fetch_shard
from llmops.training.context import Context, StoreSpec, log
from llmops.training.errors import UserError
from llmops.training.model import ModelSource


def read_eval_rows(ctx: Context, index: int) -> list[dict[str, Any]]:
    assert ctx.spec.evaluation is not None
    ds = ctx.spec.evaluation.datasets[index]
    where = f"spec.evaluation.datasets[{index}] ({ds.name}) {ds.uri}"
    store_spec, key = ctx.data_store(ds.uri)
    try:
        data = store_spec.open().get_bytes(key)
    except Exception as e:
        raise UserError(
            f"{where}: cannot read it ({type(e).__name__}: {e}); check the URI and credentials"
        ) from e
    if ds.format == "parquet":
        import io

        import pyarrow.parquet as pq

        rows = pq.read_table(io.BytesIO(data)).to_pylist()
    else:
        if data[:2] == b"\x1f\x8b":
            import gzip

            data = gzip.decompress(data)
        try:
            rows = [row for _, row in jsonl.read(data, where)]
        except jsonl.JsonLinesError as e:
            raise UserError(f"{e}; fix the line") from e
        if bad := next((n for n, row in enumerate(rows, 1) if not isinstance(row, dict)), None):
            raise UserError(f"{where}: row {bad} is not a JSON object")
    out = []
    for number, row in enumerate(rows, 1):
        if ds.format == "chat":
            out.append(_chat_row(row, ds.messages_field or "messages", f"{where}: row {number}"))
            if ds.max_samples and len(out) >= ds.max_samples:
                break
            continue
        for field in (ds.prompt_field, ds.reference_field):
            if not isinstance(row.get(field), str):
                raise UserError(
                    f"{where}: row {number} has no text field {field!r} (fields: {', '.join(sorted(row))}); "
                    "set promptField/referenceField"
                )
        item = {"prompt": row[ds.prompt_field], "reference": row[ds.reference_field]}
        if isinstance(row.get("choices"), list):
            item["choices"] = [str(c) for c in row["choices"]]
        out.append(item)
        if ds.max_samples and len(out) >= ds.max_samples:
            break
    if not out:
        raise UserError(f"{where}: no rows; add examples or remove the dataset")
    return out


def _chat_row(row: dict[str, Any], field: str, where: str) -> dict[str, Any]:
    """A chat evaluation row: the messages before the last assistant turn, and that turn's content."""
    if field not in row:
        raise UserError(
            f"{where} has no field {field!r} (fields: {', '.join(sorted(row))}); set messagesField"
        )
    messages, reference = chat.prompt_and_reference(chat.check_messages(row[field], where), where)
    return {"messages": messages, "reference": reference, "prompt": chat.plain(messages)}


class Scorer:
    """The trained model behind the two callables the suites need: generate and loglik.

    A prompt is a text (encoded as BOS + its tokens) or token ids already encoded (`chat_ids`).
    """

    def __init__(self, model_dir: Path, device: str, description: str = "the trained model") -> None:
        import torch
        from transformers import AutoModelForCausalLM

        from llmops.training.model import load_tokenizer

        self.torch = torch
        self.device = torch.device(device)
        dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(self.device).eval()
        self.tok = load_tokenizer(model_dir)
        self.bos = [self.tok.bos_token_id] if self.tok.bos_token_id is not None else []
        self.description = description

    def encode(self, text: str | list[int]) -> list[int]:
        if isinstance(text, list):
            return text
        return self.bos + self.tok.encode(text, add_special_tokens=False)

    def chat_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """A conversation rendered with this model's chat template and its generation prompt, as ids
        (the template writes BOS itself where the model wants one). UserError without a template."""
        chat.require_template(self.tok, self.description)
        text = self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self.tok.encode(text, add_special_tokens=False)

    def generate(
        self, prompts: list[str] | list[list[int]], max_new_tokens: int, batch: int = 16
    ) -> list[str]:
        torch = self.torch
        out: list[str] = []
        pad = self.tok.pad_token_id
        limit = getattr(self.model.config, "max_position_embeddings", 4096)
        max_new_tokens = min(max_new_tokens, limit - 1)
        keep = limit - max_new_tokens  # the prompt's tail that fits beside the answer
        for start in range(0, len(prompts), batch):
            encoded = [self.encode(p)[-keep:] for p in prompts[start : start + batch]]
            width = max(len(e) for e in encoded)
            ids = torch.tensor([[pad] * (width - len(e)) + e for e in encoded], device=self.device)
            mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded], device=self.device)
            with torch.no_grad():
                generated = self.model.generate(
                    input_ids=ids,
                    attention_mask=mask,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=pad,
                    eos_token_id=self.tok.eos_token_id,
                )
            for row in generated[:, width:]:
                out.append(self.tok.decode(row, skip_special_tokens=True))
        return out

    def loglik(self, prompt: str | list[int], continuation: str) -> float:
        """Mean log-probability per token of `continuation` after `prompt`."""
        torch = self.torch
        context = self.encode(prompt)
        target = self.tok.encode(continuation, add_special_tokens=False)
        if not target:
            return 0.0
        ids = torch.tensor([context + target], device=self.device)
        with torch.no_grad():
            logits = self.model(input_ids=ids).logits[0, :-1].float()
        logp = torch.log_softmax(logits, dim=-1)
        positions = torch.arange(len(context) - 1, len(context) + len(target) - 1, device=self.device)
        return float(logp[positions, ids[0, len(context) :]].mean())

    def perplexity(self, blocks: Shard | InMemory, batch: int = 8) -> tuple[float, float]:
        return held_out_loss(self.model, blocks, self.device, batch)


def held_out_loss(model, blocks: Shard | InMemory, device, batch: int = 8) -> tuple[float, float]:
    """(mean next-token loss in nats, perplexity = exp(loss)) of `model` over packed blocks.

    blocks: rows of int64 token ids `[block]` with their real token counts (the rest is padding,
    left out), read `batch` rows at a time (llmops/training/blocks.py). Token-weighted over every row,
    without label smoothing; no gradients. NaN loss (and perplexity) when there are no tokens.
    """
    import torch

    from llmops.training.train import _batch, _token_loss

    nll = count = 0.0
    with torch.no_grad():
        for start in range(0, len(blocks), batch):
            index = list(range(start, min(start + batch, len(blocks))))
            x, mask, labels = _batch(blocks, index, device)
            logits = model(input_ids=x, attention_mask=mask).logits
            n = int((labels[:, 1:] != -100).sum())
            nll += float(_token_loss(logits, labels, 0.0)) * n
            count += n
    loss = nll / count if count else float("nan")
    return loss, math.exp(min(loss, 700))


def first_line(text: str) -> str:
    return text.strip().split("\n", 1)[0].strip()


def _validation_blocks(cfg: dict[str, Any], scorer: Scorer, tmp: Path) -> tuple[Shard | InMemory, str]:
    """The validation blocks `scorer` is measured on, and how they were made ("prepared" or
    "re-tokenized"); see the module docstring."""
    from llmops.training.model import load_tokenizer

    work: StoreSpec = cfg["work"]
    fs, root = work.arrow()
    download_dir(work.open(), "prepare/tokenizer", tmp / "prepared-tokenizer")
    prepared = load_tokenizer(tmp / "prepared-tokenizer")
    same = (
        prepared.get_vocab() == scorer.tok.get_vocab()
        and prepared.bos_token_id == scorer.tok.bos_token_id
        and prepared.eos_token_id == scorer.tok.eos_token_id
    )
    if same:
        blocks = fetch_shard(fs, f"{root}/prepare/validation", tmp, split="validation", rank=0, world=1)
        return blocks, "prepared"
    import numpy as np
    import pyarrow.dataset as pads

    from llmops.training.text import pack_blocks

    try:
        docs = pads.dataset(f"{root}/prepare/documents/validation", filesystem=fs, format="parquet")
        table = docs.to_table(columns=["text", "chat"])
        rows = list(zip(table.column("text").to_pylist(), table.column("chat").to_pylist(), strict=True))
    except (FileNotFoundError, OSError):
        rows = []
    eos = scorer.tok.eos_token_id
    encoded = []
    for text, is_chat in rows:
        if not is_chat:
            encoded.append([*scorer.encode(text), eos])
            continue
        chat.require_template(scorer.tok, scorer.description)
        ids, targets = chat.render(scorer.tok, chat.loads(text))
        flagged = chat.flag(ids, targets)
        encoded.append(flagged if ids and ids[-1] == eos else [*flagged, -(eos + 1)])
    ids, lengths = pack_blocks(encoded, cfg["block_size"], scorer.tok.pad_token_id)
    width = cfg["block_size"]
    return InMemory(
        np.asarray(ids, dtype=np.int64).reshape(-1, width), np.asarray(lengths, dtype=np.int64)
    ), "re-tokenized"


def score(cfg: dict[str, Any]) -> dict[str, Any]:
    """Everything that needs the model; runs as a Ray task.

    cfg["model"]: the ModelSource to score; cfg["what"]: the field that named it (for errors).
    Raises UserError when that model does not load.
    """
    import torch

    source: ModelSource = cfg["model"]
    device = "cuda" if cfg["gpu"] and torch.cuda.is_available() else "cpu"
    torch.set_num_threads(cfg["threads"])
    with tempfile.TemporaryDirectory(prefix="llmops-eval-") as tmp:
        try:
            folder = source.fetch(Path(tmp) / "model")
            scorer = Scorer(folder, device, source.description)
        except UserError as e:
            raise UserError(f"{cfg['what']} ({source.description}): {e}") from e
        except Exception as e:
            if not cfg["baseline"]:
                raise  # the model this run trained: a bug, not bad input
            raise UserError(
                f"{cfg['what']} ({source.description}) does not load as a causal language model"
                f" ({type(e).__name__}: {str(e)[:300]}); name a version that holds a full checkpoint"
            ) from e
    out: dict[str, float] = {}
    details: dict[str, Any] = {}

    if cfg["perplexity"]:
        with tempfile.TemporaryDirectory(prefix="llmops-eval-") as tmp:
            blocks, made = _validation_blocks(cfg, scorer, Path(tmp))
            loss, ppl = scorer.perplexity(blocks) if len(blocks) else (None, None)
        if loss is not None:
            out["validation_loss"], out["perplexity"] = loss, ppl
            if made != "prepared":
                details["perplexity"] = (
                    f"{source.description} has another vocabulary: the validation documents were "
                    "tokenized again with its own tokenizer, so its perplexity counts other tokens"
                )
        else:
            details["perplexity"] = "no validation split (validationSplit is 0): perplexity not measured"

    for ds in cfg["datasets"]:
        rows = ds["rows"]
        # A chat prompt is rendered by each model's own template; the answer follows it directly.
        is_chat = ds.get("format") == "chat"
        try:
            prompts = [scorer.chat_ids(r["messages"]) if is_chat else r["prompt"] for r in rows]
        except UserError as e:
            raise UserError(f"spec.evaluation.datasets ({ds['name']}) is format chat: {e}") from e
        sep = "" if is_chat else " "
        predictions = [first_line(p) for p in scorer.generate(prompts, ds["max_new_tokens"])]
        references = [r["reference"] for r in rows]
        for metric in ds["metrics"]:
            key = f"{ds['name']}/{metric}"
            if metric == "perplexity":
                lls = [scorer.loglik(p, sep + r["reference"]) for p, r in zip(prompts, rows, strict=True)]
                out[key] = math.exp(min(-sum(lls) / len(lls), 700))
            elif metric == "accuracy" and all("choices" in r for r in rows):
                correct = 0
                for p, r in zip(prompts, rows, strict=True):
                    scores = [scorer.loglik(p, sep + c) for c in r["choices"]]
                    correct += r["choices"][scores.index(max(scores))].strip() == r["reference"].strip()
                out[key] = correct / len(rows)
            else:
                out[key] = metrics.score(metric, predictions, references)
        details[ds["name"]] = [
            {"prompt": r["prompt"], "reference": r["reference"], "prediction": p}
            for r, p in list(zip(rows, predictions, strict=True))[:5]
        ]

    if cfg["bias"]:
        out.update(suites.score_bias(suites.counterfactual_pairs(), scorer.loglik))

    if cfg["security"]:
        sec = cfg["security"]

        def generate_one(prompt: str) -> str:
            return scorer.generate([prompt], sec["max_new_tokens"])[0]

        canaries = [suites.Canary(**c) for c in sec["canaries"]]
        if canaries:
            out["security/leakage"], leaked = suites.leakage(canaries, generate_one)
            details["canaries"] = {"planted": len(canaries), "leaked": leaked}
        out.update(suites.score_probes(sec["probes"], generate_one))
    return {"metrics": out, "details": details, "device": device}


def run(ctx: Context, trained: dict[str, Any], baseline: ModelSource | None = None) -> dict[str, Any]:
    """Score the trained model (and `baseline`, spec.evaluation.baseline resolved) and check the gates.

    Returns (and keeps as the stage's summary) {"metrics", "gates", "baseline": {"name", "version",
    "metrics"} or None}.
    """
    if summary := ctx.done("evaluate"):
        log.info("evaluate: done before, skipping")
        return summary
    import ray

    ev = ctx.spec.evaluation
    datasets = []
    if ev:
        for index, ds in enumerate(ev.datasets):
            datasets.append(
                {
                    "name": ds.name,
                    "format": ds.format,
                    "metrics": list(ds.metrics),
                    "max_new_tokens": ds.max_new_tokens,
                    "rows": read_eval_rows(ctx, index),
                }
            )
    security = None
    if ev and ev.security and ev.security.enabled:
        security = {
            "canaries": ctx.get_json("prepare/canaries.json"),
            "probes": list(ev.security.probes),
            "max_new_tokens": 24,
        }
    from llmops.training.train import cpu_count

    gpus = ctx.spec.resources.per_worker.gpus
    cfg = {
        "work": ctx.work,
        "model": ModelSource("the trained model", ctx.work, "model"),
        "what": "the trained model",
        "baseline": False,
        "block_size": ctx.spec.data.preparation.tokenization.block_size,
        "gpu": gpus > 0,
        "threads": cpu_count(ctx.spec.resources.per_worker.cpu),
        "perplexity": ev is None or ev.perplexity.enabled,
        "datasets": datasets,
        "bias": bool(ev and ev.bias and ev.bias.enabled),
        "security": security,
    }
    ctx.reporter.write(progress={"stage": "Evaluating"}, message="evaluating")
    task = ray.remote(num_cpus=cfg["threads"], num_gpus=1 if gpus else 0, max_retries=1)(score)
    result = ray.get(task.remote(cfg))
    measured: dict[str, float] = result["metrics"]
    compared = None
    if baseline is not None:
        assert ev is not None and ctx.spec.baseline_reference() is not None
        ctx.reporter.write(message=f"evaluating the baseline {baseline.description}")
        other = ray.get(
            task.remote(cfg | {"model": baseline, "what": "spec.evaluation.baseline", "baseline": True})
        )
        name, _, version = baseline.description.rpartition(":")
        compared = {"name": name, "version": version, "metrics": other["metrics"]}
        log.info("evaluate: baseline %s %s", baseline.description, _rounded(other["metrics"]))
    declared = gates.declared_gates(ev, canaries=ctx.spec.planted_canaries())
    verdicts = gates.check(declared, measured, compared["metrics"] if compared else None)
    report = {
        "metrics": measured,
        "gates": [v.model_dump(by_alias=True) for v in verdicts],
        "details": result["details"],
        "device": result["device"],
        "train": {
            k: trained.get(k)
            for k in ("steps", "final_loss", "best_val_loss", "tokens_per_second", "stopped_early")
        },
    }
    if compared is not None:
        report["baseline"] = compared | {"details": other["details"]}
    ctx.put_json("evaluate/report.json", report)
    log.info("evaluate: %s", _rounded(measured))
    return ctx.mark_done("evaluate", {"metrics": measured, "gates": report["gates"], "baseline": compared})


def _rounded(values: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in values.items()}
