"""User feedback through the real chain: the official openai client -> the gateway -> vLLM on the CPU,
then `POST /v1/feedback` with the completion id the client got (serving.feedback)."""

from __future__ import annotations

import json

from tests.helpers import eventually
from tests.serving.gateway_calls import MODEL, post, single


def test_feedback_on_the_id_the_openai_client_got(vllm_server, gateway_factory, tmp_path):
    """vLLM answers with the gateway's id (plain and streamed); the tenant that got it rates it (201);
    another tenant and a forged id get 404; the counter is on /metrics; the stored feedback record
    names the completion id that the payload sample of the same exchange carries."""
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "team-a").write_text("sk-alpha-0123456789")
    (keys / "team-b").write_text("sk-bravo-0123456789")
    (tmp_path / "idkey").write_bytes(bytes(range(32)))
    store = tmp_path / "store"
    destination = {"local": {"path": str(store)}}
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
    client = gw.client("sk-alpha-0123456789")
    messages = [{"role": "user", "content": "Hi"}]
    answer = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=2, user="end-user-1")
    chunks = list(client.chat.completions.create(model=MODEL, messages=messages, max_tokens=2, stream=True))
    assert answer.id.startswith("chatcmpl-") and answer.id.count(".") == 3
    streamed = {c.id for c in chunks}
    assert len(streamed) == 1 and streamed != {answer.id}
    completion = client.completions.create(model=MODEL, prompt="Hi", max_tokens=2)
    assert completion.id.startswith("cmpl-") and completion.id.count(".") == 3

    url = f"{gw.url}/v1/feedback"
    alpha = {"Authorization": "Bearer sk-alpha-0123456789"}
    bravo = {"Authorization": "Bearer sk-bravo-0123456789"}
    status, _, body = post(url, {"completion_id": answer.id, "value": -1, "user": "end-user-1"}, alpha)
    assert status == 201, body
    assert (body["object"], body["completion_id"], body["model"], body["version"]) == (
        "feedback",
        answer.id,
        MODEL,
        "1",
    )
    assert post(url, {"completion_id": streamed.pop(), "value": True}, alpha)[0] == 201
    assert post(url, {"completion_id": completion.id, "name": "tone", "value": "terse"}, alpha)[0] == 201
    status, _, body = post(url, {"completion_id": answer.id, "value": 1}, bravo)
    assert status == 404 and body["error"]["param"] == "completion_id", body
    forged = answer.id[: answer.id.rindex(".") + 1] + "A" * 22
    assert post(url, {"completion_id": forged, "value": 1}, alpha)[0] == 404
    status, _, body = post(url, {"completion_id": answer.id, "value": [1]}, alpha)
    assert status == 400 and body["error"]["param"] == "value"

    counted = {
        tuple(v for _, v in labels): value
        for (metric, labels), value in gw.metrics().items()
        if metric == "llmops_gateway_feedback_total"
    }  # labels sorted: name, sentiment, version
    assert counted == {
        ("thumbs", "negative", "1"): 1,
        ("thumbs", "positive", "1"): 1,
        ("tone", "neutral", "1"): 1,
    }

    def records(kind: str) -> list[dict]:
        files = sorted(store.rglob(f"*-{kind}-*.jsonl")) if store.exists() else []
        return [json.loads(line) for f in files for line in f.read_text().splitlines()]

    eventually(lambda: len(records("feedback")) == 3 and len(records("payload")) == 3, timeout=30)
    rated = next(r for r in records("feedback") if r["completion_id"] == answer.id)
    assert (rated["value"], rated["user"], rated["tenant"], rated["version"]) == (
        -1,
        "end-user-1",
        "team-a",
        "1",
    )
    assert rated["model_deployment"] == "chat" and rated["model"] == MODEL
    sample = next(r for r in records("payload") if r["id"] == answer.id)
    assert sample["user"] == "end-user-1" and sample["endpoint"] == "chat"
    assert {r["id"] for r in records("payload")} == {answer.id, completion.id, *{c.id for c in chunks}}
