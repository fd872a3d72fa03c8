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
"""

from __future__ import annotations

import hashlib
import io
import re
from typing import Any

from llmops import jsonl
from llmops.training import chat
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


def read_file(
    source: StoreSpec, key: str, fmt: str, text_field: str, where: str, work: StoreSpec, number: int
) -> dict[str, Any]:
    """Read, hash and convert one file; runs as a Ray task."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        data = source.open().get_bytes(key)
    except UserError:
        raise
    except Exception as e:
        raise UserError(
            f"{where}: cannot read it ({type(e).__name__}: {e}); check the URI and credentials"
        ) from e
    docs = parse(data, fmt, text_field, where)
    table = pa.table(
        {
            "id": pa.array([(number << ID_SHIFT) | i for i in range(len(docs))], pa.int64()),
            "text": pa.array(docs, pa.string()),
            "chat": pa.array([fmt == "chat"] * len(docs), pa.bool_()),
        }
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    out = f"ingest/part-{number:05d}.parquet"
    work.open().put_bytes(out, buffer.getvalue())
    return {
        "key": key,
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "rows": len(docs),
        "part": out,
    }


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
    sources, pending, number = [], [], 0
    for index, source in enumerate(ctx.spec.data.sources):
        store_spec, keys = list_files(ctx, index, source.uri, source.format)
        refs = []
        for key in keys:
            where = f"spec.data.sources[{index}] {source.uri}" + (f" ({key})" if len(keys) > 1 else "")
            field = (source.messages_field or "messages") if source.format == "chat" else source.text_field
            refs.append(task.remote(store_spec, key, source.format, field, where, ctx.work, number))
            number += 1
        pending.append((index, source, refs))
    for index, source, refs in pending:
        files = ray.get(refs)
        digest = hashlib.sha256("".join(f["sha256"] for f in files).encode()).hexdigest()
        fields = {"messagesField": source.messages_field or "messages"} if source.format == "chat" else {}
        sources.append(
            {
                "index": index,
                "uri": source.uri,
                "format": source.format,
                "textField": source.text_field,
                **fields,
                "rows": sum(f["rows"] for f in files),
                "bytes": sum(f["bytes"] for f in files),
                "sha256": files[0]["sha256"] if len(files) == 1 else digest,
                "files": files,
            }
        )
    total = sum(s["rows"] for s in sources)
    if total == 0:
        raise UserError("the data sources hold no documents; check spec.data.sources and textField")
    log.info("ingest: %d documents from %d files", total, number)
    return ctx.mark_done(
        "ingest",
        {"sources": sources, "rows": total, "parts": [f["part"] for s in sources for f in s["files"]]},
    )
