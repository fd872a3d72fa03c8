"""Stage 2, prepare (Ray Data): clean, filter, scrub, deduplicate, split, augment, tokenize and pack.

    ingest/*.parquet
      -> map_batches(clean): NFKC normalisation, length and quality filters, PII scrubbing (counts
         per entity), content hash, validation bucket, MinHash signature     [parallel, per document]
         (a conversation, `chat` true: normalised and scrubbed message by message, measured on its
         contents, hashed, split and compared as "role: content" lines; llmops/training/chat.py)
      -> exact and near-duplicate index over (id, hash, signature)           [driver: small keys only]
      -> split by a stable per-document hash; canaries planted into train (security suite)
      -> augmentation copies of the training documents                       [parallel]
      -> tokenizer: the base model's, architecture.tokenizer, the distillation teacher's (an
         architecture student without a tokenizer), or BPE trained on the training split
      -> map_batches(pack): tokenize, add BOS/EOS, pack into blockSize blocks [parallel]
         (a conversation: rendered with the model's chat template, its tokens that are not the
         assistant's flagged as input only, -(id + 1), so the flags stay aligned through packing)
      -> prepare/{train,validation}/*.parquet (input_ids, length) and prepare/documents/... (text, chat)

Canaries (the security suite) are planted as plain documents in chat runs too: every token of a
plain document is a target, as a secret in an assistant turn would be, and the suite probes them
with the plain prefix.

The driver-side index holds 32 bytes of hash plus 128 integers per document: fine for millions
of documents; beyond that, swap in a distributed groupby and banded join.
"""

from __future__ import annotations

import hashlib
from typing import Any

from llmops.training import chat, dedup, pii, suites, text
from llmops.training.context import Context, log
from llmops.training.errors import UserError
from llmops.training.model import TOKENIZER_FILES, ModelSource, load_tokenizer, train_tokenizer

DROP_REASONS = ("empty", "too_short", "too_long", "low_quality", "pii")
_TOKENIZERS: dict[str, Any] = {}


def _clean(
    doc: str,
    *,
    normalize: bool,
    min_length: int | None,
    max_length: int | None,
    entities: list[str],
    regions: list[str],
    pii_action: str,
    detector: Any,
) -> tuple[str, str, dict[str, int]]:
    """(cleaned text, drop reason or "", PII found per entity) of one plain document."""
    doc = text.normalize(doc) if normalize else doc
    reason = text.quality_problem(doc, min_length, max_length) or ""
    counts: dict[str, int] = {}
    if not reason and entities:
        doc, counts = pii.scrub(doc, entities, detector, regions)
        if counts and pii_action == "drop":
            reason = "pii"
    return doc, reason, counts


def _clean_chat(raw: str, **options: Any) -> tuple[str, str, str, dict[str, int]]:
    """(cleaned conversation as chat.dumps writes it, its key text, drop reason, PII found) of one
    conversation: each message's content cleaned and scrubbed; the filters measure the contents."""
    messages = chat.loads(raw)
    counts: dict[str, int] = {}
    if options["normalize"]:
        messages = [m | {"content": text.normalize(m["content"])} for m in messages]
    reason = text.quality_problem(chat.contents(messages), options["min_length"], options["max_length"]) or ""
    if not reason and options["entities"]:
        scrubbed = []
        for m in messages:
            content, found = pii.scrub(
                m["content"], options["entities"], options["detector"], options["regions"]
            )
            for entity, n in found.items():
                counts[entity] = counts.get(entity, 0) + n
            scrubbed.append(m | {"content": content})
        messages = scrubbed
        if counts and options["pii_action"] == "drop":
            reason = "pii"
    return chat.dumps(messages), chat.plain(messages), reason, counts


def clean_batch(
    batch,
    *,
    normalize: bool,
    min_length: int | None,
    max_length: int | None,
    entities: list[str],
    regions: list[str],
    pii_action: str,
    name_detector: str | None,
    near: bool,
):
    import pyarrow as pa

    detector = pii.load_name_detector(name_detector)[1] if "name" in entities else None
    perms = dedup.permutations() if near else None
    options = {
        "normalize": normalize,
        "min_length": min_length,
        "max_length": max_length,
        "entities": entities,
        "regions": regions,
        "pii_action": pii_action,
        "detector": detector,
    }
    out: dict[str, list] = {"id": [], "text": [], "chat": [], "drop": [], "hash": [], "bucket": []}
    for entity in entities:
        out[f"pii_{entity}"] = []
    if near:
        out["sig"] = []
    ids = batch.column("id").to_pylist()
    raws = batch.column("text").to_pylist()
    chats = batch.column("chat").to_pylist() if "chat" in batch.column_names else [False] * len(ids)
    for doc_id, raw, is_chat in zip(ids, raws, chats, strict=True):
        if is_chat:
            doc, key, reason, counts = _clean_chat(raw, **options)
        else:
            doc, reason, counts = _clean(raw, **options)
            key = doc
        out["id"].append(doc_id)
        out["text"].append(doc)
        out["chat"].append(bool(is_chat))
        out["drop"].append(reason)
        out["hash"].append(text.content_hash(key))
        out["bucket"].append(text.split_bucket(key))
        for entity in entities:
            out[f"pii_{entity}"].append(counts.get(entity, 0))
        if near:
            out["sig"].append(dedup.signature(key, perms) if not reason else [0] * dedup.NUM_PERM)
    return pa.table(out)


def augment_batch(batch, *, steps: list[dict[str, Any]], seed: int):
    """The documents and their augmented copies (a conversation: each message's content augmented)."""
    import pyarrow as pa

    docs = batch.column("text").to_pylist()
    chats = batch.column("chat").to_pylist()
    out, out_chat = list(docs), list(chats)

    def augmented(doc: str, is_chat: bool, kind: str, probability: float, copy: int) -> str:
        if not is_chat:
            return text.augment(doc, kind, probability, copy, seed)
        return chat.dumps(
            [
                m | {"content": text.augment(m["content"], kind, probability, copy, seed)}
                for m in chat.loads(doc)
            ]
        )

    for step in steps:
        for copy in range(step["copies"]):
            out.extend(
                augmented(d, c, step["type"], step["probability"], copy)
                for d, c in zip(docs, chats, strict=True)
            )
            out_chat.extend(chats)
    return pa.table({"text": out, "chat": out_chat})


def chat_tokenizer(tokenizer_json: str, chat_template: str, special: dict[str, str]) -> Any:
    """A transformers fast tokenizer from the prepared tokenizer's JSON and template (for `pack_batch`)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(tokenizer_json), chat_template=chat_template, **special
    )


def pack_batch(
    batch,
    *,
    tokenizer_json: str,
    bos: int | None,
    eos: int,
    pad: int,
    block_size: int,
    chat_template: str | None = None,
    special: dict[str, str] | None = None,
):
    """Tokenize and pack one batch: a plain document is BOS + ids + EOS, every token a target; a
    conversation is its chat rendering (chat.render), the tokens outside assistant turns flagged,
    with EOS appended (input only) when the rendering does not end with it."""
    import pyarrow as pa
    from tokenizers import Tokenizer

    key = hashlib.sha256(tokenizer_json.encode()).hexdigest()
    tok = _TOKENIZERS.get(key)
    if tok is None:
        tok = _TOKENIZERS[key] = Tokenizer.from_str(tokenizer_json)
    texts = batch.column("text").to_pylist()
    chats = batch.column("chat").to_pylist() if "chat" in batch.column_names else [False] * len(texts)
    plain_at = [i for i, c in enumerate(chats) if not c]
    encoded = tok.encode_batch([texts[i] for i in plain_at], add_special_tokens=False)
    docs: list[list[int]] = [[] for _ in texts]
    for i, e in zip(plain_at, encoded, strict=True):
        docs[i] = ([bos] if bos is not None else []) + e.ids + [eos]
    if len(plain_at) < len(texts):
        assert chat_template is not None and special is not None
        template_key = f"{key}/{hashlib.sha256(chat_template.encode()).hexdigest()}"
        rich = _TOKENIZERS.get(template_key)
        if rich is None:
            rich = _TOKENIZERS[template_key] = chat_tokenizer(tokenizer_json, chat_template, special)
        for i, c in enumerate(chats):
            if c:
                ids, targets = chat.render(rich, chat.loads(texts[i]))
                flagged = chat.flag(ids, targets)
                docs[i] = flagged if ids and ids[-1] == eos else [*flagged, -(eos + 1)]
    blocks, lengths = text.pack_blocks(docs, block_size, pad)
    return pa.table(
        {"input_ids": pa.array(blocks, pa.list_(pa.int32())), "length": pa.array(lengths, pa.int32())}
    )


def _duplicates(
    rows: list[dict[str, Any]], method: str | None, threshold: float
) -> tuple[set[int], set[int]]:
    """(exact, near) ids to drop; the lowest id of each group stays."""
    if method is None:
        return set(), set()
    first: dict[str, int] = {}
    exact: set[int] = set()
    for row in sorted(rows, key=lambda r: r["id"]):
        if row["hash"] in first:
            exact.add(row["id"])
        else:
            first[row["hash"]] = row["id"]
    if method != "near":
        return exact, set()
    rest = sorted((r for r in rows if r["id"] not in exact), key=lambda r: r["id"])
    drop = dedup.near_duplicates([list(r["sig"]) for r in rest], threshold)
    return exact, {rest[i]["id"] for i in drop}


def _validation_ids(rows: list[dict[str, Any]], fraction: float) -> set[int]:
    if fraction <= 0 or len(rows) < 2:
        return set()
    chosen = {r["id"] for r in rows if r["bucket"] < fraction}
    if not chosen:  # tiny datasets: hold out at least one document
        chosen = {min(rows, key=lambda r: r["bucket"])["id"]}
    if len(chosen) == len(rows):
        chosen.discard(max(rows, key=lambda r: r["bucket"])["id"])
    return chosen


def _tokenizer(
    ctx: Context, base: ModelSource | None, train_ds, teacher: ModelSource | None = None
) -> tuple[Any, str]:
    local = ctx.scratch / "tokenizer"
    arch = ctx.spec.model.architecture
    if base is not None:
        base.fetch(local, TOKENIZER_FILES)
        origin = f"base model {base.description}"
    elif arch is not None and not arch.tokenizer and teacher is not None:
        # Distillation compares logits id by id: the student speaks the teacher's vocabulary.
        teacher.fetch(local, TOKENIZER_FILES)
        origin = f"distillation teacher {teacher.description}"
    elif arch is not None and arch.tokenizer:
        from llmops.training.model import resolve_uri

        resolve_uri(ctx, arch.tokenizer, "spec.model.architecture.tokenizer").fetch(local, TOKENIZER_FILES)
        origin = arch.tokenizer
    else:
        assert arch is not None
        texts = (row["text"] for row in train_ds.select_columns(["text"]).iter_rows())
        train_tokenizer(texts, arch.vocab_size, local)
        return load_tokenizer(
            local
        ), f"byte-level BPE trained on the training split (vocab {arch.vocab_size})"
    try:
        tok = load_tokenizer(local)
    except UserError:
        raise
    except Exception as e:
        raise UserError(
            f"the tokenizer of {origin} does not load ({type(e).__name__}: {e}); it needs tokenizer.json"
        ) from e
    if arch is not None and len(tok) > arch.vocab_size:
        raise UserError(
            f"spec.model.architecture.vocabSize is {arch.vocab_size} but the tokenizer {origin} "
            f"has {len(tok)} tokens; "
            "raise vocabSize to at least the tokenizer's size"
        )
    return tok, origin


def run(
    ctx: Context, base: ModelSource | None, ingested: dict[str, Any], teacher: ModelSource | None = None
) -> dict[str, Any]:
    """`teacher`: spec.method.distillation.teacher resolved, whose tokenizer an architecture student
    without architecture.tokenizer reuses."""
    if summary := ctx.done("prepare"):
        log.info("prepare: done before, skipping")
        return summary
    import ray
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    ctx.clear("prepare")
    prep = ctx.spec.data.preparation
    fs, root = ctx.work.arrow()
    entities = list(prep.pii.entities) if prep.pii and prep.pii.enabled else []
    pii_action = prep.pii.action if prep.pii else "redact"
    regions = list(prep.pii.regions) if prep.pii else []
    if entities:
        try:
            pii.shared.detector(tuple(e for e in entities if e != "name"), tuple(regions))
        except ValueError as e:
            raise UserError(f"spec.data.preparation.pii: {e}") from e
    method = prep.dedup.method if prep.dedup else None
    detector = pii.load_name_detector()[0] if "name" in entities else None

    raw = ray.data.read_parquet([f"{root}/{p}" for p in ingested["parts"]], filesystem=fs)
    cleaned = raw.map_batches(
        clean_batch,
        batch_format="pyarrow",
        batch_size=256,
        fn_kwargs={
            "normalize": prep.normalize,
            "min_length": prep.min_length,
            "max_length": prep.max_length,
            "entities": entities,
            "regions": regions,
            "pii_action": pii_action,
            "name_detector": detector,
            "near": method == "near",
        },
    ).materialize()

    # One pass over the small columns gives every count; Ray Data's groupby/sum would each run a shuffle.
    small = (
        ["id", "hash", "bucket", "drop", "chat"]
        + [f"pii_{e}" for e in entities]
        + (["sig"] if method == "near" else [])
    )
    rows = cleaned.select_columns(small).take_all()
    total = len(rows)
    reasons: dict[str, int] = {}
    for r in rows:
        reasons[r["drop"]] = reasons.get(r["drop"], 0) + 1
    found = {e: sum(int(r[f"pii_{e}"]) for r in rows) for e in entities}
    keys = [r for r in rows if r["drop"] == ""]
    exact, near = _duplicates(keys, method, prep.dedup.threshold if prep.dedup else 1.0)
    removed = exact | near
    survivors = [r for r in keys if r["id"] not in removed]
    counts: dict[str, Any] = {
        "input": total,
        "dropped": {reason: int(reasons.get(reason, 0)) for reason in DROP_REASONS}
        | {"exact_duplicate": len(exact), "near_duplicate": len(near)},
        "kept": len(survivors),
    }
    if not survivors:
        dropped = ", ".join(f"{n} {k}" for k, n in counts["dropped"].items() if n)
        raise UserError(
            f"no documents left after preparation: {total} read, dropped {dropped or 'none'}; "
            "relax spec.data.preparation (minLength/maxLength, dedup threshold, pii action drop) or add data"
        )
    val_ids = _validation_ids(survivors, prep.validation_split)
    keep = {r["id"] for r in survivors}
    docs = cleaned.filter(lambda r: r["id"] in keep).select_columns(["id", "text", "chat"])
    train_docs = docs.filter(lambda r: r["id"] not in val_ids).select_columns(["text", "chat"])
    val_docs = docs.filter(lambda r: r["id"] in val_ids).select_columns(["text", "chat"])

    canaries = suites.make_canaries(ctx.spec.planted_canaries(), ctx.spec.method.hyperparameters.seed)
    if canaries:
        train_docs = train_docs.union(
            ray.data.from_items([{"text": c.text, "chat": False} for c in canaries])
        )
    ctx.put_json("prepare/canaries.json", [{"prefix": c.prefix, "secret": c.secret} for c in canaries])
    if prep.augmentation:
        steps = [a.model_dump() for a in prep.augmentation]
        train_docs = train_docs.map_batches(
            augment_batch,
            batch_format="pyarrow",
            fn_kwargs={"steps": steps, "seed": ctx.spec.method.hyperparameters.seed},
        )
    train_docs = train_docs.materialize()
    val_docs = val_docs.materialize()
    counts["train_documents"] = train_docs.count()
    counts["validation_documents"] = val_docs.count()
    counts["canaries"] = len(canaries)
    counts["augmented"] = counts["train_documents"] - (len(survivors) - len(val_ids)) - len(canaries)

    tokenizer, tokenizer_origin = _tokenizer(ctx, base, train_docs, teacher)
    chats = sum(bool(r["chat"]) for r in survivors)
    chat_template = chat.require_template(tokenizer, tokenizer_origin) if chats else None
    counts["conversations"] = chats
    tokenizer.save_pretrained(ctx.scratch / "tokenizer")
    from llmops.training.context import upload_dir

    upload_dir(ctx.store, "prepare/tokenizer", ctx.scratch / "tokenizer")
    block_size = prep.tokenization.block_size
    pack_args = {
        "tokenizer_json": tokenizer.backend_tokenizer.to_str(),
        "bos": tokenizer.bos_token_id,
        "eos": tokenizer.eos_token_id,
        "pad": tokenizer.pad_token_id,
        "block_size": block_size,
        "chat_template": chat_template,
        "special": {k: v for k, v in tokenizer.special_tokens_map.items() if isinstance(v, str)},
    }
    blocks: dict[str, int] = {}
    tokens: dict[str, int] = {}
    for split, ds in (("train", train_docs), ("validation", val_docs)):
        ds.write_parquet(f"{root}/prepare/documents/{split}", filesystem=fs)
        packed = ds.map_batches(
            pack_batch, batch_format="pyarrow", batch_size=1024, fn_kwargs=pack_args
        ).materialize()
        blocks[split] = packed.count()
        tokens[split] = sum(int(r["length"]) for r in packed.select_columns(["length"]).take_all())
        if blocks[split]:
            packed.write_parquet(f"{root}/prepare/{split}", filesystem=fs)
    if not blocks["train"]:
        raise UserError("the training split is empty after preparation; add data or lower validationSplit")

    digest = hashlib.sha256()
    for key in sorted(k for k in ctx.store.list("prepare/") if not k.startswith("prepare/tokenizer/")):
        digest.update(f"{key}:{hashlib.sha256(ctx.store.get_bytes(key)).hexdigest()}\n".encode())
    summary = {
        "counts": counts,
        "pii": {
            "entities": entities,
            "regions": regions,
            "action": pii_action,
            "found": found,
            "nameDetector": detector,
        },
        "dedup": {"method": method, "threshold": prep.dedup.threshold if prep.dedup else None},
        "normalize": prep.normalize,
        "augmentation": [a.model_dump(by_alias=True) for a in prep.augmentation],
        "tokenizer": tokenizer_origin,
        "blockSize": block_size,
        "blocks": blocks,
        "tokens": tokens,
        "digest": digest.hexdigest(),
    }
    log.info("prepare: %s", counts)
    return ctx.mark_done("prepare", summary)
