"""llmops/erasure.py decisions without a gateway: who matches, how lines are rewritten, decisions.
The real chain (gateway, samples, ingest, registry, erasure): tests/serving/test_serving_erasure.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmops import erasure, registry
from llmops.serving.feedback import Feedback, feedback_record
from llmops.storage import LocalStore

KEY = b"k" * 32
PAYLOAD = "2026-11-30/101500-gw-1-payload-000001.jsonl"
FEEDBACK = "2026-11-30/101500-gw-1-feedback-000002.jsonl"
PROMPT = "drift-prompts/2026-11-30/101500-gw-1-prompt-000003.jsonl"


def payload(rid: str, user: str | None, text: str, **request) -> dict:
    return {
        "id": rid,
        "time": 1.0,
        "endpoint": "chat",
        "version": "1",
        "status": 200,
        "latency_seconds": 0.1,
        "user": user,
        "request": {"model": "m", "messages": [{"role": "user", "content": text}], **request},
        "completions": ["ok"],
        "usage": {"prompt_tokens": 3},
    }


def rated(rid: str, user: str | None, tenant: str) -> dict:
    fb = Feedback(completion_id=rid, name="thumbs", value=1, comment="great", user=user, metadata=None)
    return feedback_record(fb, tenant, "md", "m", "1", 2.0)


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    s = LocalStore(tmp_path)
    lines = [
        payload("chatcmpl-a1", "alice", "mine", metadata={"customer": "c-9"}),
        payload("chatcmpl-b1", "bob", "his"),
        payload("chatcmpl-k1", None, "no user"),
    ]
    s.put_bytes(PAYLOAD, b"".join(json.dumps(r).encode() + b"\n" for r in lines) + b"{broken\n")
    s.put_bytes(
        FEEDBACK, b"".join(json.dumps(r).encode() + b"\n" for r in [rated("chatcmpl-k1", None, "team-k")])
    )
    s.put_bytes(PROMPT, b'{"time": 1, "text": "c-9 says hi"}\n')
    s.put_bytes("2026-11-30/notes.jsonl", b'{"user": "alice"}\n')  # not the gateway's: never touched
    return s


def erased(store: LocalStore, subject: erasure.Subject, action="delete") -> dict:
    return erasure.erase(
        subject, key=KEY, samples=[("s", store)], registry_store=None, receipts=store, action=action
    )


def test_a_user_loses_their_payload_lines_others_stay_byte_for_byte(store):
    before = store.get_bytes(PAYLOAD).split(b"\n")
    receipt = erased(store, erasure.Subject("user", "alice"))
    after = store.get_bytes(PAYLOAD).split(b"\n")
    assert after == [before[1], before[2], before[3], b""]  # bob, no user, the broken line
    assert receipt["totals"]["payloadRecords"] == 1 and receipt["samples"][0]["recordsBefore"] == 4
    assert store.get_bytes("2026-11-30/notes.jsonl") == b'{"user": "alice"}\n'
    assert b"alice" not in store.get_bytes(erasure.receipt_key(receipt["id"]))


def test_an_api_key_reaches_the_payloads_its_feedback_names(store):
    receipt = erased(store, erasure.Subject("apiKeyId", "team-k"))
    assert (receipt["totals"]["payloadRecords"], receipt["totals"]["feedbackRecords"]) == (1, 1)
    assert not store.exists(FEEDBACK)  # nothing left in it: deleted, not left empty
    assert [json.loads(x)["id"] for x in store.get_bytes(PAYLOAD).splitlines()[:2]] == [
        "chatcmpl-a1",
        "chatcmpl-b1",
    ]


def test_a_field_value_finds_records_and_drift_prompts_by_path(store):
    receipt = erased(store, erasure.Subject("field", "c-9", "request.metadata.customer"))
    assert receipt["totals"]["payloadRecords"] == 1 and receipt["totals"]["promptRecords"] == 0
    receipt = erased(store, erasure.Subject("field", "c-9 says hi", "text"))
    assert receipt["totals"]["promptRecords"] == 1


def test_redaction_keeps_valid_json_lines_and_operational_fields(store):
    erased(store, erasure.Subject("user", "alice"), action="redact")
    lines = store.get_bytes(PAYLOAD).splitlines()
    assert len(lines) == 4
    record = json.loads(lines[0])
    assert record["user"] == "[ERASED]" and record["request"]["messages"][0]["content"] == "[ERASED]"
    assert record["request"]["metadata"] == {"customer": "[ERASED]"} and record["completions"] == ["[ERASED]"]
    assert (record["id"], record["status"], record["usage"]) == ("chatcmpl-a1", 200, {"prompt_tokens": 3})


def test_dry_run_writes_nothing(store):
    before = store.get_bytes(PAYLOAD)
    receipt = erasure.erase(
        erasure.Subject("user", "alice"),
        key=KEY,
        samples=[("s", store)],
        registry_store=None,
        receipts=store,
        dry_run=True,
    )
    assert receipt["totals"]["payloadRecords"] == 1 and store.get_bytes(PAYLOAD) == before
    assert not list(store.list("erasures/"))


def test_the_hash_is_keyed_and_stable():
    a = erasure.Subject("user", "alice")
    assert a.hashed(KEY) == erasure.Subject("user", "alice").hashed(KEY) != a.hashed(b"x" * 32)
    assert a.hashed(KEY) != erasure.Subject("apiKeyId", "alice").hashed(KEY)


@pytest.mark.parametrize(
    ("kind", "value", "path"), [("user", "", ""), ("field", "v", "a..b"), ("field", "v", "")]
)
def test_bad_subjects_are_refused(kind, value, path):
    with pytest.raises(ValueError):
        erasure.Subject(kind, value, path)


def test_decisions_are_recorded_once_and_checked(tmp_path):
    store = LocalStore(tmp_path)
    receipt = {"id": "er-1", "modelVersions": [{"name": "chat", "version": "2", "decision": None}]}
    store.put_bytes(erasure.receipt_key("er-1"), json.dumps(receipt).encode())
    with pytest.raises(ValueError, match="justification"):
        erasure.record_decision(store, "er-1", "chat", "2", "accept-with-justification", by="x")
    with pytest.raises(ValueError, match="not among"):
        erasure.record_decision(store, "er-1", "chat", "3", "retire", by="x")
    erasure.record_decision(store, "er-1", "chat", "2", "retire", by="x")
    with pytest.raises(ValueError, match="already recorded"):
        erasure.record_decision(store, "er-1", "chat", "2", "retrain-without", by="x")
    (listed,) = erasure.receipts_with_decisions(store)
    assert listed["modelVersions"][0]["decision"]["decision"] == "retire"


def test_versions_named_by_lineage_are_affected_others_not(tmp_path):
    store = LocalStore(tmp_path / "reg")
    weights = tmp_path / "w"
    weights.mkdir()
    (weights / "model.safetensors").write_bytes(b"x")
    files = [{"key": PAYLOAD, "sha256": "abc", "rows": 1, "bytes": 1}]
    for data in (
        [{"uri": "/s", "files": files}],
        [{"uri": "/other", "files": [{"key": "a", "sha256": "def"}]}],
    ):
        lineage = registry.Lineage(parent_job="ns/job", data=data, job_uid="u")
        registry.register(store, "chat", weights, metrics={}, gates=[], lineage=lineage)
    found = erasure.affected_versions(store, {"abc": ("/s", PAYLOAD)}, {"/s"}, set(), None)
    assert [(a.version.version, a.work_dir) for a in found] == [("1", "jobs/ns/job/u")]


class FailingOnce(LocalStore):
    """Storage that fails the first rewrite of the payload file: a run cut short."""

    failed = False

    def put_bytes(self, key: str, data: bytes, *, overwrite: bool = True) -> None:
        if key == PAYLOAD and not self.failed:
            self.failed = True
            raise OSError("connection reset")
        super().put_bytes(key, data, overwrite=overwrite)


def test_a_run_cut_short_is_listed_incomplete_and_finished_by_running_again(tmp_path):
    store = FailingOnce(tmp_path)
    lines = [payload("chatcmpl-a1", "alice", "mine"), payload("chatcmpl-b1", "bob", "his")]
    LocalStore(tmp_path).put_bytes(PAYLOAD, b"".join(json.dumps(r).encode() + b"\n" for r in lines))
    with pytest.raises(OSError):
        erased(store, erasure.Subject("user", "alice"))
    (listed,) = erasure.receipts_with_decisions(store)
    assert listed["state"] == "incomplete" and listed["samples"][0]["recordsErased"] == 1
    erased(store, erasure.Subject("user", "carol"))  # another subject's run finishes nothing of alice's
    assert [r["state"] for r in erasure.receipts_with_decisions(store) if r["id"] == listed["id"]] == [
        "incomplete"
    ]
    receipt = erased(store, erasure.Subject("user", "alice"))
    assert receipt["state"] == "completed" and receipt["totals"]["payloadRecords"] == 1
    assert [json.loads(x)["user"] for x in store.get_bytes(PAYLOAD).splitlines()] == ["bob"]
    (cut,) = [r for r in erasure.receipts_with_decisions(store) if r["id"] == listed["id"]]
    assert (cut["state"], cut["supersededBy"]) == ("superseded", receipt["id"])
