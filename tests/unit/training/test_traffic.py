"""llmops/training/traffic.py on records the gateway's own Sampler wrote to a local store (the test
imports serving and training both; the code of neither imports the other), and the ingest of a
servedTraffic source through read_traffic: feedback filter, age, status, endpoint, PII left for
preparation."""

from __future__ import annotations

import asyncio
import io
import time

import pytest

from llmops.api.common import ObjectStorageLocation
from llmops.gateway_config import Sampling
from llmops.serving.sampler import Sampler
from llmops.storage import open_store
from llmops.training import chat, traffic

pa = pytest.importorskip("pyarrow")
NOW = time.time()


def payload(cid: str, question: str, answer: str, **changes) -> dict:
    record = {
        "id": cid,
        "time": NOW - 60,
        "endpoint": "chat",
        "version": "3",
        "status": 200,
        "request": {"model": "support-bot", "messages": [{"role": "user", "content": question}]},
        "completions": [answer],
        "usage": {"prompt_tokens": 5, "completion_tokens": 7},
        "user": "u1",
    }
    return record | changes


def rating(cid: str, value, user: str = "u1", at: float = NOW, name: str = "thumbs") -> dict:
    return {
        "id": f"fb_{cid}_{user}_{at}",
        "completion_id": cid,
        "name": name,
        "value": value,
        "user": user,
        "tenant": "acme",
        "model_deployment": "support-bot",
        "model": "support-bot",
        "version": "3",
        "time": at,
    }


def write(tmp_path, kind: str, records: list[dict]) -> None:
    location = ObjectStorageLocation.model_validate({"local": {"path": str(tmp_path / "samples")}})
    sampler = Sampler(Sampling(rate=1.0, destination=location), kind=kind)
    for r in records:
        sampler.add(r)
    asyncio.run(sampler.flush())


@pytest.fixture
def samples(tmp_path):
    write(
        tmp_path,
        "payload",
        [
            payload("c-good", "How do I reset my password?", "Open Settings, then Security."),
            payload("c-bad", "Is it free?", "No idea."),
            payload("c-changed", "Where is billing?", "Under Settings, Billing."),
            payload("c-unrated", "Hello?", "Hi."),
            payload("c-old", "Old question", "Old answer", time=NOW - 10 * 86400),
            payload("c-error", "Crash?", "", status=500, completions=[]),
            payload("c-text", "", "x", endpoint="completions", request={"prompt": "Once upon"}),
            payload(
                "c-parts",
                "",
                "Call us at +1 415 555 0100.",
                request={
                    "messages": [
                        {"role": "developer", "content": "Be brief."},
                        {
                            "role": "user",
                            "content": [{"type": "text", "text": "Phone? Mine is jane@example.com"}],
                        },
                    ]
                },
            ),
            payload("c-tool", "", "x", request={"messages": [{"role": "tool", "content": "{}"}]}),
        ],
    )
    write(
        tmp_path,
        "feedback",
        [
            rating("c-good", 1),
            rating("c-bad", 0),
            rating("c-changed", 0, at=NOW - 30),
            rating("c-changed", True, at=NOW - 10),  # the repeat replaces the earlier value
            rating("c-parts", 1),
            rating("c-parts", 5, user="u2"),
            rating("c-old", 1),
            rating("c-tool", 1),
            rating("c-unrated", 1, name="accuracy"),  # another feedback name
        ],
    )
    return open_store(ObjectStorageLocation.model_validate({"local": {"path": str(tmp_path / "samples")}}))


def test_sampler_files_are_told_apart(samples):
    keys = list(samples.list(""))
    assert len([k for k in keys if traffic.is_payload(k)]) == 1
    assert len([k for k in keys if traffic.is_feedback(k)]) == 1


def test_feedback_latest_rating_per_user_wins(samples):
    from llmops import jsonl

    records = [
        r
        for key in samples.list("")
        if traffic.is_feedback(key)
        for _, r in jsonl.read(samples.get_bytes(key), key)
    ]
    ratings = traffic.latest_ratings(records, "thumbs")
    assert ratings["c-changed"] == [True] and sorted(ratings["c-parts"]) == [1, 5]
    assert "c-unrated" not in ratings
    assert traffic.passing(ratings, 1) == {"c-good", "c-changed", "c-parts", "c-old", "c-tool"}
    assert traffic.passing(ratings, 2) == set()  # c-parts: u1 gave 1
    assert traffic.passing({"x": ["yes"], "y": [None]}, 0) == set()  # not numbers: never pass


def test_read_traffic_keeps_rated_recent_chat_exchanges(samples, tmp_path):
    import pyarrow.parquet as pq

    from llmops.training.context import StoreSpec
    from llmops.training.ingest import read_traffic

    source = StoreSpec(ObjectStorageLocation.model_validate({"local": {"path": str(tmp_path / "samples")}}))
    work = StoreSpec(ObjectStorageLocation.model_validate({"local": {"path": str(tmp_path / "work")}}))
    key = next(k for k in samples.list("") if traffic.is_payload(k))
    keep = {"c-good", "c-changed", "c-parts", "c-old", "c-tool"}
    out = read_traffic(source, key, "spec.data.sources[1]", work, 3, NOW - 86400, keep)
    assert out["rows"] == 3 and out["skipped"] == {
        "status": 1,
        "endpoint": 1,
        "too_old": 1,
        "messages": 1,
        "feedback": 2,
    }
    table = pq.read_table(io.BytesIO(open_store(work.location).get_bytes(out["part"]))).to_pylist()
    assert all(r["chat"] for r in table) and [r["id"] >> 32 for r in table] == [3, 3, 3]
    conversations = [chat.loads(r["text"]) for r in table]
    assert conversations[0] == [
        {"role": "user", "content": "How do I reset my password?"},
        {"role": "assistant", "content": "Open Settings, then Security."},
    ]
    # Text parts joined, developer as system; personal data is left for preparation to scrub.
    assert conversations[2] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Phone? Mine is jane@example.com"},
        {"role": "assistant", "content": "Call us at +1 415 555 0100."},
    ]
    # Without a feedback filter and an age limit, every chat exchange with status 200 is kept.
    every = read_traffic(source, key, "w", work, 4, None, None)
    assert every["rows"] == 6 and every["skipped"] == {"status": 1, "endpoint": 1, "messages": 1}
