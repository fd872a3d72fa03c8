"""Erasure of one data subject through the real chain (llmops/erasure.py): the official openai client
-> the gateway (payload sampling and feedback, to a directory) -> vLLM on the CPU; the work folder's
ingested data set made from those files by the real ingest function (`ingest.read_traffic`, what each
Ray task of a servedTraffic source runs; called here without Ray) and a version registered with that
lineage; then `llmops erasure run` (the command, through click), `decide` and `list`.

Stand-ins, said so: `prepare/documents/` and the packed blocks `prepare/train/` are written by the
test from the ingested rows (the prepare stage needs Ray Data, tests/workloads), in the columns the
erasure reads (id, text)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from click.testing import CliRunner

from llmops import registry
from llmops.api.common import ObjectStorageLocation
from llmops.cli import main
from llmops.storage import LocalStore
from llmops.training import chat, ingest
from llmops.training.context import StoreSpec
from tests.helpers import eventually
from tests.serving.gateway_calls import MODEL, post, single

WORK = "jobs/team-a/chat-tune/uid-1"


def _lines(store: Path, kind: str) -> list[str]:
    files = sorted(store.rglob(f"*-{kind}-*.jsonl")) if store.exists() else []
    return [line for f in files for line in f.read_text().splitlines()]


def _records(store: Path, kind: str) -> list[dict]:
    return [json.loads(line) for line in _lines(store, kind)]


def _texts(path: Path) -> list[str]:
    return pq.read_table(path).column("text").to_pylist()


def _work_folder(samples: Path, reg: Path) -> tuple[registry.ModelVersion, int]:
    """Ingest every payload file as a servedTraffic source does, and register a version whose lineage
    names them (register.lineage's shape), plus one version trained on other data."""
    source = StoreSpec(ObjectStorageLocation.model_validate({"local": {"path": str(samples)}}))
    work = StoreSpec(ObjectStorageLocation.model_validate({"local": {"path": str(reg / WORK)}}))
    keys = sorted(k for k in source.open().list() if "-payload-" in k)
    files = [ingest.read_traffic(source, key, "test", work, n, None, None) for n, key in enumerate(keys)]
    table = pa.concat_tables([pq.read_table(reg / WORK / f["part"]) for f in files])
    (reg / WORK / "prepare/documents/train").mkdir(parents=True)
    pq.write_table(table, reg / WORK / "prepare/documents/train/0_000000.parquet")
    (reg / WORK / "prepare/train").mkdir(parents=True)
    pq.write_table(table.select(["id"]), reg / WORK / "prepare/train/blocks.parquet")
    weights = reg.parent / "weights"
    weights.mkdir()
    (weights / "model.safetensors").write_bytes(b"weights")
    store = LocalStore(reg)
    gate = [registry.GateVerdict(metric="loss", operator="<", threshold=9, value=1, passed=True)]
    other = registry.Lineage(parent_job="team-a/base", data=[{"uri": "s3://corpus/a.jsonl", "files": []}])
    registry.register(store, "chat", weights, metrics={}, gates=gate, lineage=other)
    lineage = registry.Lineage(
        parent_job="team-a/chat-tune",
        data=[
            {
                "uri": str(samples.resolve()),
                "format": "servedTraffic",
                "files": [{k: f[k] for k in ("key", "sha256", "rows", "bytes")} for f in files],
            }
        ],
        job_uid="uid-1",
    )
    version = registry.register(store, "chat", weights, metrics={}, gates=gate, lineage=lineage)
    return version, sum(f["rows"] for f in files)


def test_erasure_of_one_user_and_one_api_key(vllm_server, gateway_factory, tmp_path):
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "team-a").write_text("sk-alpha-0123456789")
    (keys / "team-b").write_text("sk-bravo-0123456789")
    (tmp_path / "idkey").write_bytes(bytes(range(32)))
    samples, reg, receipts = tmp_path / "samples", tmp_path / "registry", tmp_path / "receipts"
    destination = {"local": {"path": str(samples)}}
    gw = gateway_factory(
        single(
            vllm_server.url,
            apiKeysPath=str(keys),
            payloadSampling={"rate": 1.0, "destination": destination, "flushIntervalSeconds": 0.2},
            feedback={
                "modelDeployment": "chat",
                "destination": destination,
                "keyPath": str(tmp_path / "idkey"),
                "flushIntervalSeconds": 0.2,
            },
        )
    )
    answers = {}
    for key, user in (("sk-alpha-0123456789", "alice"), ("sk-bravo-0123456789", "bob")):
        client = gw.client(key)
        for n in (1, 2):
            messages = [{"role": "user", "content": f"I am {user}, question {n}"}]
            answers[user, n] = client.chat.completions.create(
                model=MODEL, messages=messages, max_tokens=3, user=user
            )
    url = f"{gw.url}/v1/feedback"
    for user, key in (("alice", "sk-alpha-0123456789"), ("bob", "sk-bravo-0123456789")):
        body = {"completion_id": answers[user, 1].id, "value": 1, "user": user}
        assert post(url, body, {"Authorization": f"Bearer {key}"})[0] == 201
    eventually(lambda: len(_records(samples, "payload")) == 4 and len(_records(samples, "feedback")) == 2)

    version, ingested = _work_folder(samples, reg)
    assert ingested == 4  # every exchange is a training row
    bob_before = [line for line in _lines(samples, "payload") if json.loads(line)["user"] == "bob"]
    bob_exchanges = [
        chat.dumps([*r["request"]["messages"], {"role": "assistant", "content": r["completions"][0]}])
        for r in _records(samples, "payload")
        if r["user"] == "bob"
    ]
    assert [r["user"] for r in _records(samples, "payload")].count("alice") == 2

    common = ["--samples", str(samples), "--registry", str(reg), "--receipts", str(receipts)]
    common += ["--key-file", str(tmp_path / "idkey"), "--requested-by", "dpo", "-o", "json"]
    runner = CliRunner()
    dry = runner.invoke(main, ["erasure", "run", "--user", "alice", "--dry-run", *common])
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.output)["totals"]["payloadRecords"] == 2 and not receipts.exists()
    assert [r["user"] for r in _records(samples, "payload")].count("alice") == 2  # nothing written

    result = runner.invoke(main, ["erasure", "run", "--user", "alice", *common])
    assert result.exit_code == 0, result.output
    receipt = json.loads(result.output)
    payload, feedback = _records(samples, "payload"), _records(samples, "feedback")
    assert [r["user"] for r in payload] == ["bob", "bob"] and [r["user"] for r in feedback] == ["bob"]
    assert [line for line in _lines(samples, "payload")] == bob_before  # other lines byte for byte
    t = receipt["totals"]
    assert (t["payloadRecords"], t["feedbackRecords"], t["datasetRows"]) == (
        2,
        1,
        4,
    )  # 2 ingested + 2 prepared
    assert [(v["name"], v["version"], v["decision"]) for v in receipt["modelVersions"]] == [
        ("chat", version.version, None)
    ]
    # The data set is rewritten as new objects, never edited in place; the old ones are gone.
    # (How the gateway's flushes split the records over files decides how many objects change.)
    for change in receipt["datasets"]:
        assert change["newKey"] != change["key"] and change["old"] == "deleted"
        assert not (reg / change["key"]).exists()
    texts = [t for f in (reg / WORK).rglob("*.parquet") if "blocks" not in f.name for t in _texts(f)]
    assert sorted(texts) == sorted(bob_exchanges * 2)  # ingested and prepared; alice's are gone
    assert {c["key"] for c in receipt["derived"]} == {f"{WORK}/prepare/train/blocks.parquet"}
    assert not (reg / WORK / "prepare/train/blocks.parquet").exists()
    stored = (receipts / f"erasures/{receipt['id']}/receipt.json").read_text()
    assert "alice" not in stored and receipt["subject"]["hash"].startswith("hmac-sha256:")

    again = runner.invoke(main, ["erasure", "run", "--user", "alice", *common])
    assert json.loads(again.output)["totals"]["payloadRecords"] == 0  # idempotent

    # An API key id: its feedback, and the payload it rated (payloads carry no tenant), redacted.
    result = runner.invoke(main, ["erasure", "run", "--api-key-id", "team-b", "--action", "redact", *common])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["totals"]["payloadRecords"] == 1
    payload = _records(samples, "payload")  # every line still parses
    assert len(payload) == 2 and [r["user"] for r in payload].count("[ERASED]") == 1
    redacted = next(r for r in payload if r["user"] == "[ERASED]")
    assert redacted["id"] == answers["bob", 1].id and redacted["status"] == 200
    assert redacted["request"]["messages"][0]["content"] == "[ERASED]"
    assert _records(samples, "feedback")[0]["tenant"] == "[ERASED]"

    decide = [
        "erasure", "decide", receipt["id"], f"chat:{version.version}", "--decision", "retrain-without",
        "--by", "ml-lead", "--receipts", str(receipts),
    ]  # fmt: skip
    assert runner.invoke(main, decide).exit_code == 0
    listed = json.loads(
        runner.invoke(main, ["erasure", "list", "--receipts", str(receipts), "-o", "json"]).output
    )
    first = next(r for r in listed if r["id"] == receipt["id"])
    assert first["modelVersions"][0]["decision"]["decision"] == "retrain-without"
