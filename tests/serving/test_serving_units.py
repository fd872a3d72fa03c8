"""The gateway's pure parts: config, token buckets, balancer and queue, PII redaction, anomaly detection."""

from __future__ import annotations

import asyncio
import itertools
import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from llmops.api.modeldeployment import PiiRedaction, RateLimit
from llmops.gateway_config import (
    GatewayConfig,
    UpstreamGroup,
    per_replica,
)
from llmops.pii import Detector
from serving.anomaly import AnomalyMonitor, Ewma, RobustZ
from serving.balancer import Balancer, Dispatcher, NoReplicas, QueueFull, QueueTimeout
from serving.pii import AnswerRedactor, Redaction, redact_json
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
        pii_redaction=PiiRedaction(scope="prompts", regions=["DE", "FR"]),
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
        ({"piiRedaction": {"scope": "everything"}}, "promptsAndAnswers"),
        ({"piiRedaction": {"regions": ["us"]}}, "pattern"),
        ({"piiRedaction": {"entities": ["ssn"]}}, "creditCard"),
        ({"piiRedaction": True}, "valid dictionary"),
    ],
)
def test_config_rejects(change, message):
    base = {"servedModelName": "m", "upstreams": [{"version": "1", "replicas": ["http://a:1"]}]}
    with pytest.raises(ValidationError, match=message):
        GatewayConfig.model_validate({**base, **change})


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
# Detection itself is tested in tests/unit/test_pii.py; here: the OpenAI shapes in serving.pii.

DETECTOR = Detector(regions=["US"])
SECRET = "Mail jane.doe@example.com or call (415) 555-0132; card 4111 1111 1111 1111."
REDACTED = "Mail [EMAIL] or call [PHONE]; card [CARD]."
ARGS = json.dumps(
    {"to": "jane.doe@example.com", "phone": "+1 415 555 0132", "card": 4111111111111111, "n": 3}
)


def test_tool_call_arguments_stay_valid_json():
    out = redact_json(DETECTOR, ARGS)
    assert json.loads(out) == {"to": "[EMAIL]", "phone": "[PHONE]", "card": "[CARD]", "n": 3}
    escaped = json.dumps({"note": "call\n(415) 555-0132 or jos\u00e9@example.com"}, ensure_ascii=True)
    assert json.loads(redact_json(DETECTOR, escaped)) == {"note": "call\n[PHONE] or [EMAIL]"}
    assert redact_json(DETECTOR, '{"a": "unterminated 415-555-0132') == '{"a": "unterminated [PHONE]'


def _chunk(index, finish=None, **delta):
    return {"choices": [{"index": index, "delta": delta, "finish_reason": finish}]}


def _pieces(text: str, cuts: list[int]) -> list[str]:
    bounds = [0, *sorted({c % (len(text) + 1) for c in cuts}), len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=150, deadline=None)
@given(
    cuts=st.lists(st.lists(st.integers(min_value=0, max_value=500), max_size=15), min_size=3, max_size=3),
    order=st.randoms(use_true_random=False),
)
def test_a_streamed_answer_equals_the_whole_answer_redacted(cuts, order):
    """n = 2 choices, interleaved at random, with content, reasoning and tool-call arguments each split
    at random: the client gets, per choice and field, exactly the whole text redacted."""
    fields = {"content": SECRET, "reasoning_content": "think: " + SECRET}
    events = []
    for index in (0, 1):
        events.append(
            [(index, name, piece) for name, text in fields.items() for piece in _pieces(text, cuts[index])]
        )
        events[-1] += [(index, "args", piece) for piece in _pieces(ARGS, cuts[2])]
    merged = []
    while any(events):
        queue = order.choice([q for q in events if q])
        merged.append(queue.pop(0))
    answer = AnswerRedactor(DETECTOR, chat=True)
    got: dict[tuple[int, str], str] = {}
    for index, name, piece in [*merged, (0, "end", ""), (1, "end", "")]:
        if name == "end":
            chunk = _chunk(index, "stop")
        elif name == "args":
            chunk = _chunk(index, tool_calls=[{"index": 0, "function": {"arguments": piece}}])
        else:
            chunk = _chunk(index, **{name: piece})
        answer.event(chunk)
        delta = chunk["choices"][0]["delta"]
        for key in fields:
            if isinstance(delta.get(key), str):
                got[(index, key)] = got.get((index, key), "") + delta[key]
        for call in delta.get("tool_calls") or []:
            got[(index, "args")] = got.get((index, "args"), "") + call["function"]["arguments"]
    for index in (0, 1):
        for name, text in fields.items():
            assert got[(index, name)] == DETECTOR.redact(text)
        assert got[(index, "args")] == redact_json(DETECTOR, ARGS)
        assert json.loads(got[(index, "args")])["to"] == "[EMAIL]"


def test_the_issues_chunks_reach_the_client_redacted_whole():
    answer = AnswerRedactor(DETECTOR, chat=True)
    pieces = ["Call", " (", "415", ")", " 555", "-", "0132", " now"]
    out = ""
    for i, piece in enumerate(pieces):
        chunk = _chunk(0, "stop" if i == len(pieces) - 1 else None, content=piece)
        answer.event(chunk)
        out += chunk["choices"][0]["delta"]["content"]
    assert out == "Call [PHONE] now"


@settings(max_examples=100, deadline=None)
@given(sizes=st.lists(st.integers(min_value=1, max_value=6), min_size=1, max_size=40))
def test_streamed_logprobs_spell_out_the_redacted_content(sizes):
    """One token per chunk, with its logprobs entry, as vLLM streams them: the tokens the client gets
    spell out exactly the content it gets, which is the whole text redacted."""
    tokens, i = [], 0
    while i < len(SECRET):
        n = sizes[len(tokens) % len(sizes)]
        tokens.append(SECRET[i : i + n])
        i += n
    answer = AnswerRedactor(DETECTOR, chat=True)
    content, spelled = "", []
    for k, token in enumerate(tokens):
        entry = {"token": token, "logprob": -1.0, "bytes": list(token.encode()), "top_logprobs": []}
        chunk = _chunk(0, "stop" if k == len(tokens) - 1 else None, content=token)
        chunk["choices"][0]["logprobs"] = {"content": [entry]}
        answer.event(chunk)
        content += chunk["choices"][0]["delta"]["content"]
        spelled += chunk["choices"][0]["logprobs"]["content"]
    assert content == REDACTED
    assert "".join(e["token"] for e in spelled) == REDACTED and len(spelled) == len(tokens)


def test_whole_responses_every_text_field_and_logprobs():
    red = Redaction(PiiRedaction(regions=["US"]))
    tokens = ["Call", " (", "415", ")", " 555", "-", "0132", " now"]
    chat = {
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "content": "".join(tokens),
                    "reasoning_content": SECRET,
                    "refusal": "no, a@example.com",
                    "tool_calls": [
                        {"id": "1", "type": "function", "function": {"name": "f", "arguments": ARGS}}
                    ],
                },
                "logprobs": {
                    "content": [
                        {
                            "token": t,
                            "logprob": -0.1,
                            "bytes": list(t.encode()),
                            "top_logprobs": [{"token": t, "logprob": -0.1, "bytes": list(t.encode())}],
                        }
                        for t in tokens
                    ]
                },
            }
        ]
    }
    assert red.response(chat, chat=True)
    message = chat["choices"][0]["message"]
    assert message["content"] == "Call [PHONE] now" and message["reasoning_content"] == REDACTED
    assert message["refusal"] == "no, [EMAIL]"
    assert json.loads(message["tool_calls"][0]["function"]["arguments"])["phone"] == "[PHONE]"
    spelled = chat["choices"][0]["logprobs"]["content"]
    assert len(spelled) == len(tokens) and "".join(e["token"] for e in spelled) == "Call [PHONE] now"
    assert all(bytes(e["bytes"]).decode() == e["token"] for e in spelled)
    assert not any(c.isdigit() for e in spelled for alt in e["top_logprobs"] for c in alt["token"])
    completion = {
        "choices": [
            {
                "index": 0,
                "finish_reason": "length",
                "text": "".join(tokens),
                "logprobs": {
                    "tokens": tokens,
                    "token_logprobs": [-0.1] * len(tokens),
                    "top_logprobs": [{t: -0.1} for t in tokens],
                    "text_offset": [0, 4, 6, 9, 10, 14, 15, 19],
                },
            }
        ]
    }
    assert red.response(completion, chat=False)
    choice = completion["choices"][0]
    assert choice["text"] == "Call [PHONE] now" and "".join(choice["logprobs"]["tokens"]) == choice["text"]
    assert choice["logprobs"]["tokens"][:3] == ["Call", " [PHONE]", ""]
    assert choice["logprobs"]["text_offset"] == [0, 4, 12, 12, 12, 12, 12, 12]
    assert not any(c.isdigit() for top in choice["logprobs"]["top_logprobs"] for t in top for c in t)


def test_every_text_of_a_request():
    red = Redaction(PiiRedaction(regions=["US"]))
    chat = {
        "messages": [
            {"role": "system", "content": SECRET},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": SECRET},
                    {"type": "image_url", "image_url": {"url": "x"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "1", "type": "function", "function": {"name": "f", "arguments": ARGS}}],
            },
            {"role": "tool", "tool_call_id": "1", "content": SECRET},
            {"role": "assistant", "reasoning_content": SECRET, "content": "ok"},
        ]
    }
    assert red.request(chat, "chat")
    text = json.dumps(chat)
    for secret in ("jane.doe", "415", "4111"):
        assert secret not in text
    assert json.loads(chat["messages"][2]["tool_calls"][0]["function"]["arguments"])["card"] == "[CARD]"
    completions = {"prompt": [SECRET, "plain"], "suffix": SECRET}
    assert red.request(completions, "completions")
    assert completions == {"prompt": [REDACTED, "plain"], "suffix": REDACTED}
    assert not red.request({"prompt": [1, 2, 3]}, "completions")  # token ids: nothing to read
    embeddings = {"input": [SECRET]}
    assert red.request(embeddings, "embeddings") and embeddings == {"input": [REDACTED]}
    responses = {
        "instructions": SECRET,
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": SECRET}]},
            {"type": "function_call", "call_id": "1", "name": "f", "arguments": ARGS},
            {"type": "function_call_output", "call_id": "1", "output": SECRET},
        ],
    }
    assert red.request(responses, "responses")
    assert "jane.doe" not in json.dumps(responses) and responses["instructions"] == REDACTED


@settings(max_examples=100, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=500), max_size=15))
def test_responses_api_events_agree_with_their_done_texts(cuts):
    red = Redaction(PiiRedaction(regions=["US"])).responses_answer()
    sent: list[dict] = []
    for family, whole, field in (
        ("response.output_text", SECRET, "text"),
        ("response.function_call_arguments", ARGS, "arguments"),
    ):
        for piece in _pieces(whole, cuts):
            sent += red.event(
                {"type": f"{family}.delta", "output_index": 0, "content_index": 0, "delta": piece}
            )
        sent += red.event({"type": f"{family}.done", "output_index": 0, "content_index": 0, field: whole})
        deltas = "".join(e["delta"] for e in sent if e["type"] == f"{family}.delta")
        done = next(e for e in sent if e["type"] == f"{family}.done")[field]
        assert deltas == done == (redact_json(DETECTOR, whole) if field == "arguments" else REDACTED)
    completed = {
        "type": "response.completed",
        "response": {
            "output": [
                {"type": "message", "content": [{"type": "output_text", "text": SECRET}]},
                {"type": "function_call", "arguments": ARGS},
                {"type": "reasoning", "summary": [{"type": "summary_text", "text": SECRET}]},
            ]
        },
    }
    (event,) = red.event(completed)
    assert "jane.doe" not in json.dumps(event) and "4111" not in json.dumps(event)


@pytest.mark.parametrize(
    ("scope", "prompts", "answers"),
    [("stored", False, False), ("prompts", True, False), ("promptsAndAnswers", True, True)],
)
def test_the_scope_decides_the_directions(scope, prompts, answers):
    red = Redaction(PiiRedaction(scope=scope))
    assert (red.prompts, red.answers) == (prompts, answers)
    assert PiiRedaction().scope == "promptsAndAnswers"  # the default


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

    state = StreamState(None, collect=True, strip_usage=True)
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

    state = StreamState(AnswerRedactor(DETECTOR, chat=True), collect=False, strip_usage=False)
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
    from llmops.api.modeldeployment import PiiRedaction
    from serving.endpoints import prompt_texts
    from serving.gateway import _redaction_endpoint

    redaction = Redaction(PiiRedaction(scope="prompts", entities=["email"]))

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
        redaction.request(body, _redaction_endpoint(body, kind))
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


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 12), min_size=1, max_size=12))
def test_streamed_responses_events_are_redacted_like_the_whole_text(sizes):
    """/v1/responses typed events, text split anywhere: the deltas joined equal the done text, which
    is the whole text redacted; every event keeps its `event:` name."""
    from llmops.api.modeldeployment import PiiRedaction
    from serving.endpoints import ResponsesStream

    text = "Call (555) 123-4567 or mail jane.roe@example.org now"
    redaction = Redaction(PiiRedaction(scope="promptsAndAnswers"))
    state = ResponsesStream(collect=True, redactor=redaction.responses_answer())
    cuts, at = [], 0
    for size in sizes:
        cuts.append(text[at : at + size])
        at += size
    cuts.append(text[at:])

    def event(obj: dict) -> bytes:
        return b"event: " + obj["type"].encode() + b"\ndata: " + json.dumps(obj).encode()

    out = []
    for piece in filter(None, cuts):
        delta = {"type": "response.output_text.delta", "output_index": 0, "content_index": 0, "delta": piece}
        out.append(state.transform_event(event(delta)))
    done = {"type": "response.output_text.done", "output_index": 0, "content_index": 0, "text": text}
    out.append(state.transform_event(event(done)))
    events = [e for chunk in out for e in chunk.split(b"\n\n") if e]
    parsed = []
    for e in events:
        name, data = e.split(b"\n")
        obj = json.loads(data.removeprefix(b"data: "))
        assert name == b"event: " + obj["type"].encode()
        parsed.append(obj)
    deltas = "".join(o["delta"] for o in parsed if o["type"].endswith(".delta"))
    whole = redaction.text(text)
    assert deltas == whole and parsed[-1]["text"] == whole
    assert "555" not in deltas and "jane.roe" not in deltas
