"""JSON lines: the shared reader and every reader built on it (training ingest, tiny corpora, the drift
monitor), with files that hold line separators inside strings, a byte-order mark, CRLF endings and a
broken line; and dedup keys that fold case and Unicode forms whatever `normalize` says."""

from __future__ import annotations

import json
import logging
import unicodedata

import pytest

from llmops import jsonl
from llmops.storage import LocalStore
from llmops.training.errors import UserError
from llmops.training.ingest import parse
from llmops.training.tiny import corpus

# Legal inside JSON strings, written unescaped by json.dumps(ensure_ascii=False); str.splitlines()
# splits at each of them.
SEPARATORS = ["\u2028", "\u2029", "\u0085", "\x1c", "\x1d", "\x1e", "\x0b", "\x0c"]
TEXTS = [f"line{i} with {sep} inside" for i, sep in enumerate(SEPARATORS)]


def jsonl_bytes(rows: list[dict], bom: bool = False, crlf: bool = False) -> bytes:
    end = "\r\n" if crlf else "\n"
    text = "".join(json.dumps(r, ensure_ascii=False) + end for r in rows)
    return (b"\xef\xbb\xbf" if bom else b"") + text.encode()


@pytest.mark.parametrize("bom", [False, True])
@pytest.mark.parametrize("crlf", [False, True])
def test_the_reader_splits_on_newlines_only(bom, crlf):
    data = jsonl_bytes([{"text": t} for t in TEXTS], bom=bom, crlf=crlf)
    assert any(sep.encode() in data for sep in SEPARATORS)
    assert [(n, row["text"]) for n, row in jsonl.read(data, "f.jsonl")] == list(enumerate(TEXTS, 1))


def test_a_broken_line_names_the_file_and_line():
    data = b'{"text": "a"}\n\n{"text": "b\xe2\x80\xa8"}\n{oops\n'
    with pytest.raises(jsonl.JsonLinesError, match=r"^data/f\.jsonl: line 4 is not valid JSON") as e:
        list(jsonl.read(data, "data/f.jsonl"))
    assert (e.value.source, e.value.line) == ("data/f.jsonl", 4)
    with pytest.raises(jsonl.JsonLinesError, match=r"line 2 is not valid JSON \(not UTF-8 at byte 0\)"):
        list(jsonl.read(b'{"a": 1}\n\xff{"a": 2}\n', "g.jsonl"))
    seen: list[jsonl.JsonLinesError] = []
    rows = list(jsonl.read(data, "f.jsonl", on_error=seen.append))
    assert [n for n, _ in rows] == [1, 3] and [e.line for e in seen] == [4]


def test_training_ingest_reads_such_files():
    data = jsonl_bytes([{"text": t} for t in TEXTS], bom=True)
    assert parse(data, "jsonl", "text", "src") == TEXTS
    with pytest.raises(UserError, match=r"^src: line 2 is not valid JSON .*; fix the line or set format"):
        parse(b'{"text": "a\xe2\x80\xa8"}\n{oops\n', "jsonl", "text", "src")
    assert parse(b"\xef\xbb\xbfpara one\n\npara two", "text", "text", "src") == ["para one", "para two"]


def test_tiny_corpus_reads_such_files(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes(jsonl_bytes([{"text": t} for t in TEXTS], bom=True))
    assert corpus([path]) == TEXTS


def test_the_drift_monitor_reads_every_prompt_the_gateway_sampled(tmp_path, caplog):
    from llmops.serving.drift import read_texts

    store = LocalStore(tmp_path)
    store.put_bytes("2026-01-01/000000-gw-prompt-000001.jsonl", jsonl_bytes([{"text": t} for t in TEXTS[:4]]))
    store.put_bytes("2026-01-01/000001-gw-prompt-000002.jsonl", b'{"text": "ok"}\n{"text": broken\n')
    with caplog.at_level(logging.WARNING, logger="llmops.drift"):
        texts = read_texts(store, limit=100)
    assert texts == [*TEXTS[:4], "ok"]  # before: 1 prompt of 4 from the first file
    assert "000001-gw-prompt-000002.jsonl: line 2 is not valid JSON" in caplog.text


def test_dedup_keys_fold_case_and_unicode_forms_without_normalize():
    pa = pytest.importorskip("pyarrow")
    from llmops.training.prepare import clean_batch

    word = "Crème Brûlée Straße"
    twins = [
        unicodedata.normalize("NFC", word),
        unicodedata.normalize("NFD", word),
        word.upper(),  # CRÈME BRÛLÉE STRASSE: case folding maps ß to ss
        "ｃｒèｍｅ brûlée strasse",  # full-width letters: NFKC
    ]
    batch = pa.table({"id": list(range(len(twins))), "text": twins})
    out = clean_batch(
        batch,
        normalize=False,
        min_length=None,
        max_length=None,
        entities=[],
        regions=[],
        pii_action="redact",
        name_detector=None,
        near=False,
    )
    assert out.column("text").to_pylist() == twins  # the text itself is left as it is
    assert len(set(out.column("hash").to_pylist())) == 1
