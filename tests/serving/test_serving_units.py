"""The gateway's pure parts: config, token buckets, balancer and queue, PII redaction, anomaly detection."""

from __future__ import annotations

import asyncio
import itertools
import json
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from llmops.api.common import LocalLocation, ObjectStorageLocation, SecretRef
from llmops.api.modeldeployment import Gateway, PayloadSampling, RateLimit
from llmops.gateway_config import (
    API_KEYS_MOUNT,
    GatewayConfig,
    UpstreamGroup,
    gateway_config_for,
    per_replica,
)
from llmops.pii import find, luhn_valid, redact
from serving.anomaly import AnomalyMonitor, Ewma, RobustZ
from serving.balancer import Balancer, Dispatcher, NoReplicas, QueueFull, QueueTimeout
from serving.pii import StreamRedactor
from serving.ratelimit import KeyLimiter, TokenBucket


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# Config ------------------------------------------------------------------------------------------


def test_config_round_trip_and_camel_case(tmp_path):
    cfg = GatewayConfig(
        served_model_name="llama",
        upstreams=[
            UpstreamGroup(
                version="3", weight=90, service={"host": "llama-v3.ns.svc.cluster.local", "port": 8000}
            ),
            UpstreamGroup(version="4", role="canary", weight=10, replicas=["http://10.0.0.1:8000"]),
        ],
        rate_limit=RateLimit(requests_per_minute=60, burst=5),
        scale_to_zero_hold_seconds=120,
        pii_redaction=True,
    )
    text = cfg.dumps()
    data = json.loads(text)
    assert data["servedModelName"] == "llama"
    assert data["upstreams"][0]["service"]["host"] == "llama-v3.ns.svc.cluster.local"
    assert data["rateLimit"] == {"requestsPerMinute": 60, "burst": 5}
    path = tmp_path / "config.json"
    path.write_text(text)
    assert GatewayConfig.load(path) == cfg


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"upstreams": []}, "at least 1"),
        ({"upstreams": [{"version": "1", "weight": 0, "replicas": ["http://a:1"]}]}, "weight above 0"),
        (
            {
                "upstreams": [
                    {"version": "1", "replicas": ["http://a:1"]},
                    {"version": "1", "replicas": ["http://b:1"]},
                ]
            },
            "unique",
        ),
        ({"upstreams": [{"version": "1"}]}, "exactly one of replicas or service"),
        ({"maxQueue": -1}, "greater than or equal"),
        ({"queueTimeoutSeconds": 0}, "greater than 0"),
        ({"surprise": 1}, "Extra inputs"),
        ({"piiScope": "everything"}, "traffic"),
    ],
)
def test_config_rejects(change, message):
    base = {"servedModelName": "m", "upstreams": [{"version": "1", "replicas": ["http://a:1"]}]}
    with pytest.raises(ValidationError, match=message):
        GatewayConfig.model_validate({**base, **change})


def test_config_from_model_deployment_gateway():
    local = ObjectStorageLocation(local=LocalLocation(path="/samples"))
    spec = Gateway(
        api_keys_secret_ref=SecretRef(name="keys"),
        rate_limit=RateLimit(tokens_per_minute=1000),
        pii_redaction=True,
        payload_sampling=PayloadSampling(rate=0.5, destination=local),
        max_queue=7,
        queue_timeout_seconds=9,
    )
    groups = [UpstreamGroup(version="1", replicas=["http://x:8000"])]
    cfg = gateway_config_for(
        spec, served_model_name="m", upstreams=groups, scale_to_zero=True, hold_seconds=42
    )
    assert cfg.api_keys_path == API_KEYS_MOUNT
    assert (cfg.max_queue, cfg.queue_timeout_seconds, cfg.scale_to_zero_hold_seconds) == (7, 9, 42)
    assert cfg.pii_redaction and cfg.payload_sampling is not None and cfg.payload_sampling.rate == 0.5
    assert cfg.rate_limit == RateLimit(tokens_per_minute=500)  # each of the 2 gateway replicas: half
    one = gateway_config_for(spec.model_copy(update={"replicas": 1}), served_model_name="m", upstreams=groups)
    assert one.rate_limit == RateLimit(tokens_per_minute=1000)
    plain = gateway_config_for(Gateway(), served_model_name="m", upstreams=groups)
    assert plain.api_keys_path is None and plain.scale_to_zero_hold_seconds == 0


# Rate limits -------------------------------------------------------------------------------------


def test_token_bucket_refills_at_rate():
    clock = FakeClock()
    bucket = TokenBucket(rate=2.0, capacity=3, clock=clock)
    assert [bucket.take() for _ in range(3)] == [0, 0, 0]
    assert bucket.take() == pytest.approx(0.5)  # one more needs half a second at 2/s
    clock.now += 0.5
    assert bucket.take() == 0
    clock.now += 100
    assert [bucket.take() for _ in range(4)][-1] > 0  # never above capacity


def test_key_limiter_requests_burst_and_per_key():
    clock = FakeClock()
    limiter = KeyLimiter(RateLimit(requests_per_minute=60, burst=2), clock)
    assert limiter.admit("a").allowed and limiter.admit("a").allowed
    refused = limiter.admit("a")
    assert not refused.allowed and refused.reason == "requests_per_minute"
    assert refused.retry_after == pytest.approx(1.0) and refused.retry_after_header == "1"
    assert limiter.admit("b").allowed  # keys do not share buckets
    clock.now += 1
    assert limiter.admit("a").allowed


def test_key_limiter_tokens_charged_after_the_fact():
    clock = FakeClock()
    limiter = KeyLimiter(RateLimit(tokens_per_minute=600), clock)  # 10 tokens/s
    assert limiter.admit("k").allowed
    limiter.charge_tokens("k", 650)  # a big request drives the bucket to -50
    refused = limiter.admit("k")
    assert not refused.allowed and refused.reason == "tokens_per_minute"
    assert refused.retry_after == pytest.approx(5.0, abs=0.01)
    assert refused.retry_after_header == "5"
    clock.now += 5.01
    assert limiter.admit("k").allowed


def test_per_replica_share_of_limits():
    limit = RateLimit(requests_per_minute=5, tokens_per_minute=1000, burst=3)
    assert per_replica(limit, 1) == limit and per_replica(None, 3) is None
    assert per_replica(limit, 3) == RateLimit(requests_per_minute=2, tokens_per_minute=334, burst=1)


def test_no_limit_admits_everything():
    limiter = KeyLimiter(None)
    assert all(limiter.admit("x").allowed for _ in range(1000))


# Balancer ----------------------------------------------------------------------------------------


def _balancer(weights: dict[str, int], replicas: int = 1, max_outstanding: int = 1000) -> Balancer:
    b = Balancer([(v, "stable", w) for v, w in weights.items()], max_outstanding)
    for v in weights:
        b.set_replicas(v, [f"http://{v}-{i}" for i in range(replicas)])
        for r in b.groups[v].replicas.values():
            r.ready = True
    return b


def test_weighted_split_is_exact_and_interleaved():
    b = _balancer({"stable": 80, "canary": 20})
    picks = [b.pick().version for _ in range(100)]
    assert picks.count("stable") == 80 and picks.count("canary") == 20
    # Smooth: canary requests are spread out, never two in a row at 20%.
    assert all(not (a == c == "canary") for a, c in itertools.pairwise(picks))


def test_weight_zero_and_unready_groups_get_nothing():
    b = _balancer({"stable": 100, "canary": 0})
    assert {b.pick().version for _ in range(50)} == {"stable"}
    b = _balancer({"stable": 50, "canary": 50})
    for r in b.groups["canary"].replicas.values():
        r.ready = False
    assert {b.pick().version for _ in range(50)} == {"stable"}  # its share moves to the others


def test_a_busy_replica_is_not_ejected_for_one_slow_health_check():
    from serving.balancer import UNHEALTHY_AFTER, Replica

    r = Replica("http://a:1", "1")
    assert r.observe_health(True) and r.ready  # the first good check admits it
    for _ in range(UNHEALTHY_AFTER - 1):  # timeouts or 5xx: a busy server, maybe
        assert not r.observe_health(False) and r.ready
    assert r.observe_health(False) and not r.ready  # failing in a row: out
    assert r.observe_health(True) and r.ready and r.failures == 0  # one good check: back
    assert r.observe_health(False, refused=True) and not r.ready  # nothing listens: out at once


def test_least_outstanding_with_round_robin_ties():
    b = _balancer({"v": 100}, replicas=3)
    first = [b.pick() for _ in range(3)]
    assert len({r.url for r in first}) == 3  # ties rotate
    r0, r1, r2 = b.groups["v"].replicas.values()
    r0.outstanding, r1.outstanding, r2.outstanding = 5, 1, 3
    assert b.pick() is r1
    r1.outstanding = 9
    assert b.pick() is r2


def test_max_outstanding_per_replica():
    b = _balancer({"v": 100}, replicas=2, max_outstanding=2)
    taken = []
    for _ in range(4):
        r = b.pick()
        r.outstanding += 1
        taken.append(r)
    assert b.pick() is None
    taken[0].outstanding -= 1
    assert b.pick() is taken[0]


def test_set_replicas_keeps_state_of_known_replicas():
    b = _balancer({"v": 100}, replicas=2)
    keep = b.groups["v"].replicas["http://v-0"]
    keep.outstanding = 3
    assert b.set_replicas("v", ["http://v-0", "http://new"])
    assert b.groups["v"].replicas["http://v-0"] is keep
    assert not b.groups["v"].replicas["http://new"].ready
    assert not b.set_replicas("v", ["http://v-0", "http://new"])


# Dispatcher (the bounded queue) ------------------------------------------------------------------


def test_queue_is_bounded_fifo_and_times_out():
    async def scenario():
        b = _balancer({"v": 100}, replicas=1, max_outstanding=1)
        pending = []
        d = Dispatcher(b, max_queue=2, queue_timeout=0.2, hold_timeout=0, on_pending=pending.append)
        first = await d.acquire()
        waiters = [asyncio.create_task(d.acquire()) for _ in range(2)]
        await asyncio.sleep(0)
        assert len(d.pending) == 2 and pending[-1] == 2
        with pytest.raises(QueueFull):
            await d.acquire()
        d.release(first)  # the oldest waiter gets the slot
        got = await waiters[0]
        assert got is first and not waiters[1].done()
        with pytest.raises(QueueTimeout):
            await waiters[1]
        assert len(d.pending) == 0 and pending[-1] == 0

    asyncio.run(scenario())


def test_hold_while_scaled_to_zero_then_serve():
    async def scenario():
        b = Balancer([("v", "stable", 100)], 10)
        d = Dispatcher(b, max_queue=10, queue_timeout=0.05, hold_timeout=5)
        held = asyncio.create_task(d.acquire())
        await asyncio.sleep(0.1)  # longer than the queue timeout: the hold applies, not the queue's
        assert not held.done() and len(d.pending) == 1
        b.set_replicas("v", ["http://pod"])
        b.groups["v"].replicas["http://pod"].ready = True
        d.wake()
        replica = await asyncio.wait_for(held, 1)
        assert replica.url == "http://pod" and replica.outstanding == 1

    asyncio.run(scenario())


def test_no_replicas_and_no_hold_fails_fast():
    async def scenario():
        d = Dispatcher(Balancer([("v", "stable", 100)], 10), max_queue=10, queue_timeout=5, hold_timeout=0)
        with pytest.raises(NoReplicas):
            await d.acquire()

    asyncio.run(scenario())


def test_cancelled_waiter_leaves_the_queue_and_returns_its_slot():
    async def scenario():
        b = _balancer({"v": 100}, max_outstanding=1)
        d = Dispatcher(b, max_queue=5, queue_timeout=5, hold_timeout=0)
        first = await d.acquire()
        waiter = asyncio.create_task(d.acquire())
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert not d.pending
        d.release(first)
        assert first.outstanding == 0
        assert (await d.acquire()) is first

    asyncio.run(scenario())


# PII ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("write to jane.doe+news@mail.example.org now", "write to [EMAIL] now"),
        ("card 4111 1111 1111 1111, exp 12/29", "card [CARD], exp 12/29"),
        ("card 4111-1111-1111-1111", "card [CARD]"),
        ("not a card 4111 1111 1111 1112", "not a card 4111 1111 1111 1112"),
        ("call +1 (555) 123-4567 today", "call [PHONE] today"),
        ("call 555-123-4567", "call [PHONE]"),
        ("+44 20 7946 0958", "[PHONE]"),
        ("from 192.168.1.20 and 2001:db8::8a2e:370:7334", "from [IP] and [IP]"),
        ("on 2024-01-15 at 12:30:45, pi 3.14159, v1.2.3, 12345678 apples", None),
        ("year 1999, room 101, 256.1.1.1", None),
    ],
)
def test_redact(text, expected):
    assert redact(text) == (text if expected is None else expected)


def test_luhn():
    assert luhn_valid("4111111111111111") and luhn_valid("79927398713")
    assert not luhn_valid("4111111111111112")


def test_find_reports_kinds_without_overlap():
    kinds = [m.kind for m in find("a@b.io 10.0.0.1 4111111111111111 (555) 123-4567")]
    assert kinds == ["EMAIL", "IP", "CARD", "PHONE"]


def test_stream_redactor_equals_whole_text_redaction_for_any_chunking():
    rng = random.Random(7)
    texts = [
        "Reach me at john.smith@example.com or 555-123-4567; card 4111 1111 1111 1111. Host 10.1.2.3!",
        "plain words only, nothing to hide here",
        "digits 4111111111111111",
        "a@b.co",
    ]
    for text in texts:
        for _ in range(200):
            r, out, i = StreamRedactor(), "", 0
            while i < len(text):
                n = rng.randint(1, 7)
                out += r.feed(text[i : i + n])
                i += n
            out += r.flush()
            assert out == redact(text)


def test_stream_redactor_holds_back_little():
    r = StreamRedactor()
    assert r.feed("hello ") == "hello "
    assert r.feed("wor") == ""  # could still become an address
    assert r.feed("ld, mail is a@b") == "world, mail is "
    assert r.feed(".com ok") == "[EMAIL] "
    assert r.flush() == "ok"


# Anomaly -----------------------------------------------------------------------------------------


def test_robust_z_flags_a_spike_not_noise():
    rng = random.Random(1)
    z = RobustZ(history=60)
    flags = [z.update(0.2 + rng.gauss(0, 0.01)).anomalous for _ in range(200)]
    assert sum(flags) <= 2  # noise: essentially never
    spike = z.update(0.5)
    assert spike.anomalous and spike.score > 10


def test_robust_z_flat_history_uses_floor():
    z = RobustZ(history=20, abs_floor=0.01, rel_floor=0)
    for _ in range(20):
        z.update(0.0)
    assert not z.update(0.02).anomalous  # 2 points of error rate: within noise
    assert z.update(0.2).anomalous


def test_ewma_band():
    e = Ewma(alpha=0.1, k=4)
    rng = random.Random(2)
    assert not any(e.update(1 + rng.gauss(0, 0.05)).anomalous for _ in range(100))
    assert e.update(3).anomalous


def test_anomaly_monitor_windows():
    m = AnomalyMonitor(history=30)
    rng = random.Random(3)
    for _ in range(20):
        for _ in range(50):
            m.observe(0.1 + rng.gauss(0, 0.005), error=rng.random() < 0.01)
        verdicts = m.tick()
        assert not verdicts["latency"].anomalous
    for _ in range(50):
        m.observe(1.0, error=True)
    verdicts = m.tick()
    assert verdicts["latency"].anomalous and verdicts["error_rate"].anomalous
    assert m.tick() == verdicts  # an empty window keeps the last verdict


# API keys, sampling, request checks and stream handling -------------------------------------------


def test_key_store_directory_and_file(tmp_path):
    from serving.auth import KeyStore

    keys = tmp_path / "secret"
    keys.mkdir()
    (keys / "team-a").write_text("sk-a\n")
    (keys / "..data").mkdir()  # a mounted Secret's machinery is skipped
    store = KeyStore(keys)
    assert store.identify("Bearer sk-a") == "team-a"
    assert store.identify("bearer  sk-a ") == "team-a"
    assert store.identify("Bearer sk-b") is None and store.identify(None) is None
    assert store.identify("Basic sk-a") is None
    (keys / "team-b").write_text("sk-b")
    (keys / "team-a").unlink()  # revoked
    store.reload()
    assert store.identify("Bearer sk-b") == "team-b" and store.identify("Bearer sk-a") is None
    lines = tmp_path / "keys.txt"
    lines.write_text("# comment\nsk-1\n\nsk-2\n")
    assert KeyStore(lines).identify("Bearer sk-2") == "line-4"
    assert all("sk-" not in repr(k) for k in KeyStore(lines).keys)  # only digests are kept


def test_sampler_writes_jsonl_and_bounds_its_buffer(tmp_path):
    from llmops.gateway_config import Sampling
    from serving.sampler import Sampler

    dropped: list[int] = []
    config = Sampling(rate=0.5, destination={"local": {"path": str(tmp_path)}}, max_buffered=3)
    sampler = Sampler(config, kind="prompt", rng=random.Random(0), on_dropped=dropped.append)
    chosen = sum(sampler.chosen() for _ in range(1000))
    assert 400 < chosen < 600
    for i in range(5):
        sampler.add({"text": f"t{i}"})
    assert len(dropped) == 2
    asyncio.run(sampler.flush())
    files = list(tmp_path.rglob("*-prompt-000001.jsonl"))
    assert len(files) == 1
    assert [json.loads(line)["text"] for line in files[0].read_text().splitlines()] == ["t0", "t1", "t2"]


def test_validate_requests():
    pytest.importorskip("aiohttp")
    from serving.gateway import HttpError, validate

    names = {"m"}
    validate({"model": "m", "prompt": "x"}, False, names)
    validate({"model": "m", "prompt": [1, 2, 3]}, False, names)
    validate({"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True}, True, names)
    bad = [
        ("x", False, 400),
        ({"model": "other", "prompt": "x"}, False, 404),
        ({"model": "m", "prompt": [1, "a"]}, False, 400),
        ({"model": "m", "prompt": []}, False, 400),
        ({"model": "m", "messages": []}, True, 400),
        ({"model": "m", "prompt": "x", "n": True}, False, 400),
    ]
    for body, chat, status in bad:
        with pytest.raises(HttpError) as err:
            validate(body, chat, names)
        assert err.value.status == status


def _sse(obj) -> bytes:
    return json.dumps(obj).encode()


def test_stream_state_strips_the_injected_usage_chunk_and_counts():
    pytest.importorskip("aiohttp")
    from serving.gateway import StreamState

    state = StreamState(redacting=False, collect=True, strip_usage=True)
    first = _sse({"choices": [{"index": 0, "text": "Hel"}]})
    assert state.transform(first, chat=False) == first  # untouched bytes when nothing changes
    assert state.first_token_at is not None
    usage = _sse({"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 3}})
    assert state.transform(usage, chat=False) is None  # the client did not ask for it
    assert state.usage == {"prompt_tokens": 2, "completion_tokens": 3}
    assert state.transform(b"[DONE]", chat=False) == b"[DONE]" and state.done
    assert state.texts == {0: ["Hel"]}


def test_stream_state_redacts_chat_deltas_across_chunks():
    pytest.importorskip("aiohttp")
    from serving.gateway import StreamState

    state = StreamState(redacting=True, collect=False, strip_usage=False)
    pieces = ["mail jo", "hn@exam", "ple.com", " now"]
    out = []
    for i, piece in enumerate(pieces):
        finish = "stop" if i == len(pieces) - 1 else None
        data = state.transform(
            _sse({"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": finish}]}), True
        )
        out.append(json.loads(data)["choices"][0]["delta"]["content"])
    assert "".join(out) == "mail [EMAIL] now"


def test_forwarded_body_keeps_the_clients_bytes_or_splices_usage():
    pytest.importorskip("aiohttp")
    from serving.gateway import forwarded_body

    raw = b' {"model": "m", "prompt": "a long prompt", "stream": true}'
    body = json.loads(raw)
    assert forwarded_body(raw, body, changed=False, add_usage=False) is raw  # untouched: no re-encoding
    spliced = forwarded_body(raw, body, changed=False, add_usage=True)
    assert json.loads(spliced) == {**body, "stream_options": {"include_usage": True}}
    assert spliced.count(b"stream_options") == 1
    body["prompt"] = "[REDACTED]"  # a changed body (PII redaction) is re-encoded
    assert json.loads(forwarded_body(raw, body, changed=True, add_usage=False))["prompt"] == "[REDACTED]"
    utf16 = json.dumps({"model": "m"}).encode("utf-16")  # json.loads accepts it; splicing bytes would not
    assert json.loads(forwarded_body(utf16, {"model": "m"}, changed=False, add_usage=True)) == {"model": "m"}


@pytest.mark.parametrize(
    ("event", "parse"),
    [
        (b'data: {"choices":[{"text":"a"}]}', False),
        (b'data: {"choices":[{"text":"a"}],"usage":null}', False),  # OpenAI's form: nothing to count
        (b'data: {"choices":[],"usage": {"prompt_tokens":1}}', True),
        (b"data: [DONE]", True),
    ],
)
def test_only_usage_and_done_events_are_parsed_on_the_fast_path(event, parse):
    pytest.importorskip("aiohttp")
    from serving.gateway import USAGE_OR_DONE, usage_or_done_at

    assert bool(USAGE_OR_DONE.search(event)) is parse
    assert (usage_or_done_at(event) >= 0) is parse


@given(
    st.lists(
        st.sampled_from(['"usage"', ":", " ", "\n", "{", "null", "[DONE]", "data: ", "x", "["]), max_size=12
    )
)
def test_usage_or_done_at_finds_what_the_expression_matches(parts):
    pytest.importorskip("aiohttp")
    from serving.gateway import USAGE_OR_DONE, usage_or_done_at

    data = "".join(parts).encode()
    match = USAGE_OR_DONE.search(data)
    assert usage_or_done_at(data) == (match.start() if match else -1)


def test_check_request_per_endpoint():
    pytest.importorskip("aiohttp")
    from serving.gateway import HttpError, check_request

    names = {"m"}
    good = [
        ({"model": "m", "input": "x", "stream": True}, "responses"),
        ({"model": "m", "input": [{"role": "user", "content": "x"}]}, "responses"),
        ({"model": "m", "input": ["a", "b"]}, "embeddings"),
        ({"model": "m", "input": [[1, 2], [3]]}, "embeddings"),
        ({"prompt": "x"}, "tokenize"),  # vLLM's tokenize needs no model
        ({"model": "m", "messages": [{"role": "user", "content": "x"}]}, "tokenize"),
        ({"tokens": [1, 2]}, "detokenize"),
    ]
    for body, kind in good:
        check_request(body, kind, names)
    bad = [
        ({"model": "m"}, "responses", 400, "'input'"),
        ({"model": "m", "input": ["x"]}, "responses", 400, "input[0]"),
        ({"model": "m", "input": "x", "max_output_tokens": -1}, "responses", 400, "'max_output_tokens'"),
        ({"model": "m", "input": [1, "a"]}, "embeddings", 400, "'input'"),
        ({"model": "m", "input": "x", "stream": True}, "embeddings", 400, "'stream'"),
        ({"input": "x"}, "embeddings", 400, "'model'"),
        ({"model": "other", "prompt": "x"}, "tokenize", 404, "other"),
        ({"model": "m"}, "tokenize", 400, "'prompt'"),
        ({"tokens": [1, True]}, "detokenize", 400, "'tokens'"),
    ]
    for body, kind, status, field in bad:
        with pytest.raises(HttpError) as err:
            check_request(body, kind, names)
        assert err.value.status == status and field in err.value.message, (body, err.value.message)


def test_prompt_texts_and_redaction_of_every_endpoint():
    pytest.importorskip("aiohttp")
    from serving.endpoints import prompt_texts
    from serving.gateway import redact_request

    mail = "write to a.b@example.com"
    bodies = {
        "responses": {
            "model": "m",
            "instructions": mail,
            "input": [{"role": "user", "content": [{"type": "input_text", "text": mail}]}],
        },
        "embeddings": {"model": "m", "input": [mail, mail]},
        "tokenize": {"prompt": mail},
        "chat": {"model": "m", "messages": [{"role": "user", "content": mail}]},
    }
    for kind, body in bodies.items():
        assert prompt_texts(body, kind) == [mail, mail] if kind in ("responses", "embeddings") else [mail]
        redact_request(body, kind)
        assert prompt_texts(body, kind) and all(t == "write to [EMAIL]" for t in prompt_texts(body, kind))
    assert prompt_texts({"tokens": [1]}, "detokenize") == []


def test_responses_stream_state():
    from serving.endpoints import ResponsesStream

    state = ResponsesStream(collect=True)
    created = _sse({"type": "response.created", "response": {"usage": None}})
    assert state.transform(created) == created and not state.done and state.first_token_at is None
    state.transform(_sse({"type": "response.output_text.delta", "output_index": 0, "delta": "Hel"}))
    state.transform(_sse({"type": "response.output_text.delta", "output_index": 0, "delta": "lo"}))
    assert state.first_token_at is not None and state.texts == {0: ["Hel", "lo"]}
    usage = {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5}
    state.transform(_sse({"type": "response.completed", "response": {"usage": usage}}))
    assert state.done and state.usage == {"prompt_tokens": 3, "completion_tokens": 2}


def test_merge_model_cards():
    from serving.endpoints import merge_model_cards

    def card(name, root, length, parent=None, **extra):
        return {"id": name, "object": "model", "owned_by": "vllm", "root": root, "parent": parent,
                "max_model_len": length, **extra}  # fmt: skip

    stable = [card("m", "/v3", 8192, created=3), card("m-sql", "/v3/sql", None, parent="m")]
    canary = [card("m", "/v4", 4096, created=4), card("m-new", "/v4/new", None, parent="m")]
    idle = [card("m", "/v2", 1024)]  # a version at weight 0 takes no traffic
    merged = merge_model_cards(
        [("canary", 10, canary), ("previous", 0, idle), ("stable", 90, stable)], {"m", "m-sql", "m-new"}
    )
    assert [c["id"] for c in merged] == ["m", "m-sql", "m-new"]
    base, sql, new = merged
    # The stable version's card, but the smallest context any version with traffic has.
    assert (base["root"], base["created"], base["max_model_len"]) == ("/v3", 3, 4096)
    assert (sql["parent"], sql["root"], sql["max_model_len"]) == ("m", "/v3/sql", 4096)
    assert (new["parent"], new["root"]) == ("m", "/v4/new")
    assert merge_model_cards([("stable", 100, stable)], {"m"}) == [card("m", "/v3", 8192, created=3)]
    assert stable[0]["max_model_len"] == 8192  # the replicas' lists are not changed in place


def test_flat_usage_of_a_whole_answer():
    pytest.importorskip("aiohttp")
    from serving.gateway import _flat_usage

    usage = {"prompt_tokens": 3, "total_tokens": 8, "completion_tokens": 5, "prompt_tokens_details": None}
    text = 'He said "usage": {"x": 1}'  # in the text, the quotes are escaped: never a match
    answer = {"id": "c", "choices": [{"index": 0, "text": text}], "usage": usage}
    assert _flat_usage(json.dumps(answer).encode()) == usage
    nested = {**answer, "usage": {**usage, "prompt_tokens_details": {"cached_tokens": 0}}}
    assert _flat_usage(json.dumps(nested).encode()) is None  # not flat: the caller parses it all
    assert _flat_usage(json.dumps({"choices": []}).encode()) is None
