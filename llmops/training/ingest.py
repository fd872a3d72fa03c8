"""Stage 1, ingest: read every source (S3 or a local path; JSONL, Parquet, plain text) into Parquet.

One Ray task per file: it reads the bytes, hashes them (sha256, for lineage), parses them and writes
`ingest/part-<file>.parquet` (columns id, text, chat) to the work folder. The summary records, per source,
its files with their sha256, byte and row counts; a source's digest is the sha256 over its files'
digests in key order.

Plain text: one document per paragraph (blank-line separated). JSONL, read by `llmops.jsonl` (lines
end at \\n only; a byte-order mark is skipped): one object per line, text in `textField`. Parquet: the
`textField` column. Rows whose text field is null or not a string are an error, not silently skipped:
the message names the line or column to fix. Chat (JSON lines, llmops/training/chat.py): the
conversation in `messagesField`, checked and kept as a JSON array in `text`, with `chat` true.

Served traffic (`servedTraffic`, llmops/training/traffic.py): the driver reads the feedback files
(small) and works out which completions pass the filter; then one task per payload file keeps the
chat exchanges that pass (status, endpoint, age, feedback), as chat documents. Its summary adds
the records skipped by reason, the feedback filter and the age cut-off, for the lineage.
"""

from __future__ import annotations

import hashlib
import io
import re
import time
from typing import Any

from llmops import jsonl
from llmops.training import chat, traffic
from llmops.training.context import Context, StoreSpec, access_source, log
from llmops.training.errors import UserError

SUFFIXES = {
    "jsonl": (".jsonl", ".json", ".jsonl.gz"),
    "parquet": (".parquet",),
    "text": (".txt", ".text", ".md"),
    "chat": (".jsonl", ".json", ".jsonl.gz"),
}
ID_SHIFT = 32  # document id = file number << 32 | row number: unique and ordered across files


def parse(data: bytes, fmt: str, text_field: str, where: str) -> list[str]:
    """The documents in one file's bytes (for chat, `text_field` is the messages field and each
    document a conversation as `chat.dumps` writes it). Raises UserError naming what to fix."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(io.BytesIO(data))
        except Exception as e:
            raise UserError(f"{where}: not a readable Parquet file ({e}); fix the file or set format") from e
        if text_field not in table.column_names:
            raise UserError(
                f"{where}: no column {text_field!r} (columns: {', '.join(table.column_names)}); "
                f"set textField to the column that holds the text"
            )
        values = table.column(text_field).to_pylist()
        for i, v in enumerate(values):
            if not isinstance(v, str):
                raise UserError(f"{where}: row {i} of column {text_field!r} is {type(v).__name__}, not text")
        return values
    if data[:2] == b"\x1f\x8b":
        import gzip

        data = gzip.decompress(data)
    if fmt == "text":
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise UserError(f"{where}: not UTF-8 text (byte {e.start}); convert it or set format") from e
        return [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    docs = []
    try:
        for number, row in jsonl.read(data, where):
            if not isinstance(row, dict):
                raise UserError(f"{where}: line {number} is a JSON {type(row).__name__}, expected an object")
            if fmt == "chat":
                if text_field not in row:
                    fields = ", ".join(sorted(row)) or "none"
                    raise UserError(
                        f"{where}: line {number} has no field {text_field!r} (fields: {fields}); "
                        "set messagesField to the field that holds the conversation"
                    )
                docs.append(chat.dumps(chat.check_messages(row[text_field], f"{where}: line {number}")))
                continue
            value = row.get(text_field)
            if not isinstance(value, str):
                fields = ", ".join(sorted(row)) or "none"
                problem = "has no field" if text_field not in row else "has a non-text field"
                raise UserError(
                    f"{where}: line {number} {problem} {text_field!r} (fields: {fields}); "
                    f"set textField to the field that holds the text"
                )
            docs.append(value)
    except jsonl.JsonLinesError as e:
        raise UserError(f"{e}; fix the line or set format") from e
    return docs


def _write_part(work: StoreSpec, number: int, docs: list[str], is_chat: bool) -> str:
    """ingest/part-<number>.parquet (id, text, chat) in the work folder; returns its key."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "id": pa.array([(number << ID_SHIFT) | i for i in range(len(docs))], pa.int64()),
            "text": pa.array(docs, pa.string()),
            "chat": pa.array([is_chat] * len(docs), pa.bool_()),
        }
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    out = f"ingest/part-{number:05d}.parquet"
    work.open().put_bytes(out, buffer.getvalue())
    return out


def _read(source: StoreSpec, key: str, where: str) -> bytes:
    try:
        return source.open().get_bytes(key)
    except UserError:
        raise
    except Exception as e:
        raise UserError(
            f"{where}: cannot read it ({type(e).__name__}: {e}); check the URI and credentials"
        ) from e


def read_file(
    source: StoreSpec, key: str, fmt: str, text_field: str, where: str, work: StoreSpec, number: int
) -> dict[str, Any]:
    """Read, hash and convert one file; runs as a Ray task."""
    data = _read(source, key, where)
    docs = parse(data, fmt, text_field, where)
    out = _write_part(work, number, docs, fmt == "chat")
    return {
        "key": key,
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "rows": len(docs),
        "part": out,
    }


def _records(data: bytes, where: str) -> list[dict[str, Any]]:
    if data[:2] == b"\x1f\x8b":
        import gzip

        data = gzip.decompress(data)
    try:
        return [row for _, row in jsonl.read(data, where) if isinstance(row, dict)]
    except jsonl.JsonLinesError as e:
        raise UserError(f"{e}; the gateway writes these files: check that it is the samples' location") from e


def read_traffic(
    source: StoreSpec,
    key: str,
    where: str,
    work: StoreSpec,
    number: int,
    cutoff: float | None,
    keep: set[str] | None,
) -> dict[str, Any]:
    """The chat exchanges of one payload sample file that pass (traffic.exchange), as a part; runs
    as a Ray task. Returns the file's record like read_file's, plus `skipped` (reason -> records)."""
    data = _read(source, key, f"{where} ({key})")
    docs, skipped = [], {}
    for record in _records(data, f"{where} ({key})"):
        messages, why = traffic.exchange(record, cutoff=cutoff, keep=keep)
        if messages is None:
            skipped[why] = skipped.get(why, 0) + 1
        else:
            docs.append(chat.dumps(messages))
    return {
        "key": key,
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "rows": len(docs),
        "part": _write_part(work, number, docs, True),
        "skipped": skipped,
    }


def list_traffic(store_spec: StoreSpec, where: str) -> tuple[list[str], list[str]]:
    """(payload sample keys, feedback keys) under a servedTraffic location; UserError without samples."""
    try:
        keys = sorted(store_spec.open().list(""))
    except Exception as e:
        raise UserError(
            f"{where}: cannot list it ({type(e).__name__}: {e}); check the location and its Secret"
        ) from e
    payloads = [k for k in keys if traffic.is_payload(k)]
    if not payloads:
        raise UserError(
            f"{where}: no payload samples there (files whose names contain {traffic.PAYLOAD_MARK}); point"
            " location at the ModelDeployment's spec.gateway.payloadSampling.destination"
        )
    return payloads, [k for k in keys if traffic.is_feedback(k)]


def traffic_filter(ctx: Context, index: int, store_spec: StoreSpec, feedback_keys: list[str], where: str):
    """(completion ids that pass the feedback filter or None, the filter's summary or None)."""
    served = ctx.spec.data.sources[index].served_traffic
    assert served is not None
    if served.feedback is None:
        return None, None
    records = [
        r for key in feedback_keys for r in _records(_read(store_spec, key, where), f"{where} ({key})")
    ]
    ratings = traffic.latest_ratings(records, served.feedback.name)
    keep = traffic.passing(ratings, served.feedback.min_value)
    summary = {
        "name": served.feedback.name,
        "minValue": served.feedback.min_value,
        "files": len(feedback_keys),
        "rated": len(ratings),
        "passing": len(keep),
    }
    return keep, summary


def list_files(ctx: Context, index: int, uri: str, fmt: str) -> tuple[StoreSpec, list[str]]:
    where = f"spec.data.sources[{index}] {uri}"
    store_spec, key = ctx.data_store(uri)
    try:
        store = store_spec.open()
        if key and not key.endswith("/") and store.exists(key):
            return store_spec, [key]
        prefix = key.rstrip("/") + "/" if key else ""
        keys = [k for k in store.list(prefix) if k.lower().endswith(SUFFIXES[fmt])]
    except UserError:
        raise
    except Exception as e:
        access = access_source(ctx.spec.data.s3 or ctx.spec.output.registry.s3, ctx.spec.runtime.type)
        raise UserError(f"{where}: cannot list it ({type(e).__name__}: {e}); check the URI; {access}") from e
    if not keys:
        raise UserError(
            f"{where}: no {fmt} file there (looked for {', '.join(SUFFIXES[fmt])}); "
            f"fix the URI, or set format to match the files"
        )
    return store_spec, sorted(keys)


def run(ctx: Context) -> dict[str, Any]:
    if summary := ctx.done("ingest"):
        log.info("ingest: done before, skipping")
        return summary
    import ray

    ctx.clear("ingest")
    task = ray.remote(num_cpus=1, max_retries=2, retry_exceptions=False)(read_file)
    traffic_task = ray.remote(num_cpus=1, max_retries=2, retry_exceptions=False)(read_traffic)
    sources, pending, number = [], [], 0
    for index, source in enumerate(ctx.spec.data.sources):
        refs = []
        if source.served_traffic is not None:
            served = source.served_traffic
            store_spec = ctx.traffic_store(index)
            where = f"spec.data.sources[{index}].servedTraffic {store_spec.location.uri}"
            payloads, feedback_keys = list_traffic(store_spec, where)
            keep, feedback = traffic_filter(ctx, index, store_spec, feedback_keys, where)
            cutoff = time.time() - served.since_seconds if served.since_seconds else None
            for key in payloads:
                refs.append(traffic_task.remote(store_spec, key, where, ctx.work, number, cutoff, keep))
                number += 1
            extra = {"uri": store_spec.location.uri, "format": "servedTraffic", "feedback": feedback}
            extra["since"] = cutoff
            pending.append((index, extra, refs))
            continue
        store_spec, keys = list_files(ctx, index, source.uri or "", source.format)
        for key in keys:
            where = f"spec.data.sources[{index}] {source.uri}" + (f" ({key})" if len(keys) > 1 else "")
            field = (source.messages_field or "messages") if source.format == "chat" else source.text_field
            refs.append(task.remote(store_spec, key, source.format, field, where, ctx.work, number))
            number += 1
        fields = {"messagesField": source.messages_field or "messages"} if source.format == "chat" else {}
        extra = {"uri": source.uri, "format": source.format, "textField": source.text_field, **fields}
        pending.append((index, extra, refs))
    for index, extra, refs in pending:
        files = ray.get(refs)
        digest = hashlib.sha256("".join(f["sha256"] for f in files).encode()).hexdigest()
        entry = {
            "index": index,
            **extra,
            "rows": sum(f["rows"] for f in files),
            "bytes": sum(f["bytes"] for f in files),
            "sha256": files[0]["sha256"] if len(files) == 1 else digest,
            "files": [{k: v for k, v in f.items() if k != "skipped"} for f in files],
        }
        if extra["format"] == "servedTraffic":
            skipped: dict[str, int] = {}
            for f in files:
                for why, n in f["skipped"].items():
                    skipped[why] = skipped.get(why, 0) + n
            entry["skipped"] = skipped
            log.info("ingest: %s: %d exchanges kept, skipped %s", extra["uri"], entry["rows"], skipped)
        sources.append(entry)
    total = sum(s["rows"] for s in sources)
    if total == 0:
        raise UserError(
            "the data sources hold no documents; check spec.data.sources, textField and, for"
            " servedTraffic, its feedback filter and sinceSeconds"
        )
    log.info("ingest: %d documents from %d files", total, number)
    return ctx.mark_done(
        "ingest",
        {"sources": sources, "rows": total, "parts": [f["part"] for s in sources for f in s["files"]]},
    )
