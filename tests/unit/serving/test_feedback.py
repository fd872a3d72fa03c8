"""Completion ids the gateway signs, and `POST /v1/feedback` (serving.feedback, Gateway.feedback).

The endpoint is exercised on the gateway's own HTTP server over a real socket; no model server is
needed (a feedback request never reaches one). tests/serving/test_serving_feedback.py runs the whole
chain with vLLM and the official openai client."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request

import pytest

from llmops.gateway_config import GatewayConfig
from llmops.serving.feedback import (
    BadFeedback,
    CompletionIds,
    completion_id,
    parse_feedback,
    sentiment,
)
from llmops.serving.gateway import Gateway
from llmops.serving.metrics import MAX_FEEDBACK_NAMES

KEY = bytes(range(32))
NOW = 1_764_000_000.0


def test_an_id_verifies_for_its_tenant_only_and_carries_the_version():
    ids = CompletionIds(KEY)
    rid = ids.issue("team-a", "3.1-rc", NOW)
    for cid in (rid, f"chatcmpl-{rid}", f"cmpl-{rid}"):
        found = ids.verify(cid, "team-a", NOW + 60)
        assert found is not None and (found.version, found.issued) == ("3.1-rc", int(NOW))
    assert ids.verify(rid, "team-b", NOW) is None  # another tenant
    assert CompletionIds(bytes(32)).verify(rid, "team-a", NOW) is None  # another deployment's key
    assert ids.issue("team-a", "3", NOW) != ids.issue("team-a", "3", NOW)  # the nonce


@pytest.mark.parametrize("key_length", [1, 31, 32, 63, 64, 65, 200])
def test_the_id_mac_is_hmac_sha256(key_length):
    """The id's MAC is RFC 2104's HMAC-SHA256 (hmac.new's), first MAC_BYTES, base64url: for keys
    shorter than, as long as and longer than SHA-256's 64-byte block."""
    import base64
    import hashlib
    import hmac

    from llmops.serving.feedback import MAC_BYTES

    key = bytes((7 * i + key_length) % 256 for i in range(key_length))
    rid = CompletionIds(key).issue("team-a", "3.1-rc", NOW)
    _, issued, nonce, mac = rid.split(".")
    expected = hmac.new(key, f"team-a\n3.1-rc\n{issued}\n{nonce}".encode(), hashlib.sha256).digest()
    assert mac == base64.urlsafe_b64encode(expected[:MAC_BYTES]).rstrip(b"=").decode()


def test_an_id_expires_after_the_ttl():
    ids = CompletionIds(KEY, ttl_seconds=3600)
    rid = ids.issue("t", "1", NOW)
    assert ids.verify(rid, "t", NOW + 3600) is not None
    assert ids.verify(rid, "t", NOW + 3601) is None
    assert ids.verify(rid, "t", NOW - 3600) is None  # from the far future: not ours


@pytest.mark.parametrize(
    "tamper",
    [
        lambda v, t, n, m: f"{v}.{int(t) + 1}.{n}.{m}",  # a later issue time
        lambda v, t, n, m: f"Mg.{t}.{n}.{m}",  # another version ("2")
        lambda v, t, n, m: f"{v}.{t}.{'0' * 16}.{m}",  # another nonce
        lambda v, t, n, m: f"{v}.{t}.{n}.{m[:-1]}{'B' if m[-1] == 'A' else 'A'}",  # another mac
        lambda v, t, n, m: f"{v}.{t}.{n}",  # a part missing
        lambda v, t, n, m: f"!!.{t}.{n}.{m}",  # not base64
        lambda v, t, n, m: f"{v}.-5.{n}.{m}",  # not a time
        lambda v, t, n, m: "chatcmpl-" + "x" * 40,  # vLLM's own kind of id
    ],
)
def test_a_forged_id_does_not_verify(tamper):
    ids = CompletionIds(KEY)
    forged = tamper(*ids.issue("t", "1", NOW).split("."))
    assert ids.verify(forged, "t", NOW) is None


def test_completion_ids_per_endpoint():
    assert completion_id("chat", "r") == "chatcmpl-r"
    assert completion_id("completions", "r") == "cmpl-r"
    assert completion_id("embeddings", "r") == "r"


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1, "positive"), (0.5, "positive"), (True, "positive"), (-1, "negative"), (False, "negative"),
     (-0.1, "negative"), (0, "neutral"), ("helpful", "neutral")],
)  # fmt: skip
def test_sentiment(value, expected):
    assert sentiment(value) == expected


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "body"),
        ({"value": 1}, "completion_id"),
        ({"completion_id": 5, "value": 1}, "completion_id"),
        ({"completion_id": "c"}, "value"),
        ({"completion_id": "c", "value": None}, "value"),
        ({"completion_id": "c", "value": [1]}, "value"),
        ({"completion_id": "c", "value": ""}, "value"),
        ({"completion_id": "c", "value": "x" * 65}, "value"),
        ({"completion_id": "c", "value": float("inf")}, "value"),
        ({"completion_id": "c", "value": 1, "name": "a b"}, "name"),
        ({"completion_id": "c", "value": 1, "name": "x" * 65}, "name"),
        ({"completion_id": "c", "value": 1, "comment": "x" * 2001}, "comment"),
        ({"completion_id": "c", "value": 1, "user": 7}, "user"),
        ({"completion_id": "c", "value": 1, "user": "u" * 257}, "user"),
        ({"completion_id": "c", "value": 1, "metadata": {str(i): "v" for i in range(17)}}, "metadata"),
        ({"completion_id": "c", "value": 1, "metadata": {"k": 1}}, "metadata"),
        ({"completion_id": "c", "value": 1, "rating": 1}, "rating"),
    ],
)
def test_bad_feedback_names_the_field(body, field):
    with pytest.raises(BadFeedback) as e:
        parse_feedback(body)
    assert e.value.field == field


def test_feedback_defaults():
    fb = parse_feedback({"completion_id": "c", "value": "meh", "metadata": {"k": "v"}})
    assert (fb.name, fb.value, fb.comment, fb.user, fb.metadata) == ("thumbs", "meh", None, None, {"k": "v"})


# The endpoint, on the gateway's own server ----------------------------------------------------------


def _post(port: int, body, key: str | None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/feedback", data, headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _records(root) -> list[dict]:
    return [
        json.loads(line)
        for f in sorted(root.rglob("*-feedback-*.jsonl"))
        for line in f.read_text().splitlines()
    ]


def test_the_feedback_endpoint(tmp_path):
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "team-a").write_text("sk-a")
    (keys / "team-b").write_text("sk-b")
    (tmp_path / "idkey").write_bytes(KEY)
    store = tmp_path / "store"
    config = GatewayConfig.model_validate(
        {
            "servedModelName": "chat",
            "upstreams": [{"version": "7", "replicas": ["http://127.0.0.1:9"]}],
            "apiKeysPath": str(keys),
            "healthCheckIntervalSeconds": 300,
            "feedback": {
                "modelDeployment": "chat",
                "destination": {"local": {"path": str(store)}},
                "keyPath": str(tmp_path / "idkey"),
                "idTtlSeconds": 3600,
            },
        }
    )
    ids = CompletionIds(KEY, 3600)

    async def scenario() -> None:
        gateway = Gateway(config)
        await gateway.start()
        listener = await gateway.server().listen("127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        post = lambda body, key="sk-a": asyncio.to_thread(_post, port, body, key)  # noqa: E731
        try:
            cid = "chatcmpl-" + ids.issue("team-a", "7", time.time())
            status, answer = await post({"completion_id": cid, "value": 1, "user": "u1", "comment": "good"})
            assert status == 201, answer
            assert answer["id"].startswith("fb_") and answer["object"] == "feedback"
            assert (answer["completion_id"], answer["model"], answer["version"]) == (cid, "chat", "7")
            # A repeat is stored too (readers keep the last); a label, a boolean, another name.
            assert (await post({"completion_id": cid, "value": -1, "user": "u1"}))[0] == 201
            assert (await post({"completion_id": cid, "name": "tone", "value": "curt"}))[0] == 201
            assert (await post({"completion_id": cid, "name": "ok", "value": False}))[0] == 201
            # 404 alike: another tenant, a forged id, an expired id, another key's id.
            expired = "chatcmpl-" + ids.issue("team-a", "7", time.time() - 3601)
            stranger = "chatcmpl-" + CompletionIds(bytes(32)).issue("team-a", "7", time.time())
            for body, key in [
                ({"completion_id": cid, "value": 1}, "sk-b"),
                ({"completion_id": cid[:-1] + ("B" if cid[-1] == "A" else "A"), "value": 1}, "sk-a"),
                ({"completion_id": expired, "value": 1}, "sk-a"),
                ({"completion_id": stranger, "value": 1}, "sk-a"),
            ]:
                status, answer = await post(body, key)
                assert status == 404, answer
                assert answer["error"]["type"] == "not_found_error"
                assert answer["error"]["param"] == "completion_id"
            status, answer = await post({"completion_id": cid, "value": 1}, None)
            assert status == 401 and answer["error"]["type"] == "authentication_error"
            status, answer = await post({"completion_id": cid, "value": {"x": 1}})
            assert status == 400 and answer["error"]["param"] == "value"
            status, answer = await post(b"{not json")
            assert status == 400 and answer["error"]["type"] == "invalid_request_error"
            await gateway.feedback_store.flush()
            m = gateway.metrics.feedback_total
            assert m.labels("7", "thumbs", "positive")._value.get() == 1
            assert m.labels("7", "thumbs", "negative")._value.get() == 1
            assert m.labels("7", "tone", "neutral")._value.get() == 1
            assert m.labels("7", "ok", "negative")._value.get() == 1
        finally:
            listener.close()
            await gateway.stop()

    asyncio.run(scenario())
    records = _records(store)
    assert [(r["name"], r["value"], r["user"]) for r in records] == [
        ("thumbs", 1, "u1"),
        ("thumbs", -1, "u1"),
        ("tone", "curt", None),
        ("ok", False, None),
    ]
    first = records[0]
    assert set(first) == {
        "id", "completion_id", "name", "value", "comment", "user", "metadata", "tenant",
        "model_deployment", "model", "version", "time",
    }  # fmt: skip
    assert (first["tenant"], first["model_deployment"], first["model"], first["version"]) == (
        "team-a",
        "chat",
        "chat",
        "7",
    )
    assert first["comment"] == "good" and isinstance(first["time"], float)


def test_feedback_names_beyond_the_cap_count_as_other():
    from prometheus_client import CollectorRegistry

    from llmops.serving.metrics import Metrics

    metrics = Metrics(CollectorRegistry())
    for i in range(MAX_FEEDBACK_NAMES + 5):
        metrics.feedback("1", f"n{i}", "neutral")
    assert metrics.feedback_total.labels("1", "other", "neutral")._value.get() == 5
    metrics.feedback("1", "n0", "neutral")  # a name already labelled keeps its label
    assert metrics.feedback_total.labels("1", "n0", "neutral")._value.get() == 2
