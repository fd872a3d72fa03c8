"""Hostile but well-typed bodies through the gateway to the real vLLM on the CPU (issue 17, point 11).

tests/reliability/test_gateway_fuzz.py shows that what the gateway forwards is valid per the request
schema it accepts; this shows that vLLM takes all of it: bodies that pass the gateway's checks with
edge values in every field it passes (extreme but finite numbers, int64 bounds, empty and odd
strings, NUL and right-to-left characters, emoji, unknown content part types, token ids out of the
vocabulary, contradictory settings) get an answer or vLLM's own 4xx, never a 5xx, and vLLM stays
healthy. Hypothesis draws them (`EXAMPLES`, kept small: each is a real request to the model).

The session's vLLM runs with LoRA on (one adapter), as a ModelDeployment with `loraAdapters` does, and
every body is sent while another request is running on it, to the base model or to the adapter: some
faults of vLLM's show only when a batch holds more than one sequence. The kind found that way
(in CI, with `echo` and `logprobs` on a 200-token prompt): a request for prompt logprobs takes vLLM's
engine down where LoRA is on, so the gateway of such a deployment refuses every form of it
(serving.endpoints.PROMPT_LOGPROBS_WITH_LORA); those fields are drawn here too.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import http_get
from tests.serving.gateway_calls import ADAPTER, MODEL, NO_EOS, single

EXAMPLES = 60
INT64 = 1 << 63

edge_ints = st.sampled_from([0, -1, 1, 2**31 - 1, -(2**31), INT64 - 1, -INT64, 10**12])
edge_floats = st.sampled_from([0.0, -0.0, 1e-308, 5e-324, 1e308, -1e308, -1.0, 2.5, 1e6])
odd_text = st.sampled_from(["", " ", "\x00", "\u202eevil", "😀" * 50, "a" * 2000, "\n\n\n", "\\u0000"])
fields = {
    "temperature": edge_floats,
    "top_p": edge_floats,
    "top_k": edge_ints,
    "min_p": edge_floats,
    "presence_penalty": edge_floats,
    "frequency_penalty": edge_floats,
    "repetition_penalty": edge_floats,
    "seed": edge_ints,
    "max_tokens": st.sampled_from([0, 1, 3, 10**6, 2**62, INT64 - 1]),
    "min_tokens": edge_ints,
    "n": st.integers(1, 3),
    "stop": st.one_of(odd_text, st.lists(odd_text, max_size=3)),
    "stop_token_ids": st.lists(edge_ints, max_size=3),
    "logprobs": st.sampled_from([0, 1, 5, 10**6, True, None]),
    "top_logprobs": st.sampled_from([0, 1, 5, -1, None]),
    "prompt_logprobs": st.sampled_from([0, 1, 5, -1, None]),
    "logit_bias": st.dictionaries(
        st.sampled_from(["0", "5", "999999", "-1", "abc"]), edge_floats, max_size=2
    ),
    "user": odd_text,
    "echo": st.booleans(),
    "ignore_eos": st.booleans(),
    "stream": st.booleans(),
}


models = st.sampled_from([MODEL, ADAPTER])


@st.composite
def completions(draw):
    prompt = draw(
        st.one_of(
            odd_text.filter(bool),
            st.lists(st.sampled_from([0, 1, 2, 31999, 10**9, INT64 - 1, -1]), min_size=1, max_size=4),
        )
    )
    chosen = draw(st.lists(st.sampled_from(sorted(fields)), max_size=5, unique=True))
    body = {"model": draw(models), "prompt": prompt, "max_tokens": 3}
    body.update({name: draw(fields[name]) for name in chosen})
    return body


@st.composite
def chats(draw):
    content = draw(
        st.one_of(
            odd_text,
            st.none(),
            st.lists(
                st.fixed_dictionaries(
                    {"type": st.sampled_from(["text", "input_text", "nope"]), "text": odd_text}
                ),
                max_size=2,
            ),
        )
    )
    role = draw(st.sampled_from(["user", "system", "assistant", "tool", "wizard"]))
    chosen = draw(st.lists(st.sampled_from(sorted(fields)), max_size=5, unique=True))
    body = {"model": draw(models), "messages": [{"role": role, "content": content}], "max_tokens": 3}
    body.update({name: draw(fields[name]) for name in chosen})
    return body


class Beside:
    """Keeps one long request running on vLLM itself (64 tokens, no early stop) until stopped, so that
    what is sent meanwhile shares a batch with it; counts the requests and their failures."""

    def __init__(self, vllm_url: str) -> None:
        self.url, self.done, self.failed = vllm_url, 0, []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        body = json.dumps({"model": MODEL, "prompt": "hello", "max_tokens": 64, **NO_EOS}).encode()
        while not self.stopped.is_set():
            req = urllib.request.Request(
                f"{self.url}/v1/completions", data=body, headers={"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(req, timeout=120) as r:
                    r.read()
                self.done += 1
            except Exception as e:  # any failure of a plain request is the finding
                self.failed.append(repr(e)[:200])
                self.stopped.wait(1)

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=150)


def test_hostile_well_typed_bodies_never_make_vllm_fail(vllm_server, gateway_factory):
    gw = gateway_factory(single(vllm_server.url, extraModelNames=[ADAPTER], loraEnabled=True))
    answers: Counter[str] = Counter()
    failures = []

    def send(path: str, body: dict) -> None:
        req = urllib.request.Request(
            f"{gw.url}{path}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                status, data = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, data = e.code, e.read()
        answers[f"{path} {status}"] += 1
        if status >= 500:
            failures.append((status, body, data[:300]))
        elif status >= 400:
            error = json.loads(data).get("error")
            assert isinstance(error, dict), data
            if "LoRA" in error["message"]:
                answers[f"{path} 400 prompt logprobs ({error['param']})"] += 1
        elif body.get("stream"):
            # vLLM refuses some bodies only once streaming (a token id out of the vocabulary): an
            # error event with its 4xx code, then [DONE]. A failure would be a 5xx event or no end.
            codes = [
                json.loads(line[6:])["error"].get("code")
                for line in data.split(b"\n")
                if line.startswith(b"data: {") and b'"error"' in line[:20]
            ]
            if not data.rstrip().endswith(b"data: [DONE]") or any(
                not isinstance(c, int) or c >= 500 for c in codes
            ):
                failures.append((status, body, data[-300:]))
            if codes:
                answers[f"{path} 200, then vLLM's {codes[0]} error event"] += 1

    common = settings(
        max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None
    )

    @common
    @given(body=completions())
    def fuzz_completions(body):
        send("/v1/completions", body)

    @common
    @given(body=chats())
    def fuzz_chats(body):
        send("/v1/chat/completions", body)

    beside = Beside(vllm_server.url)
    try:
        fuzz_completions()
        fuzz_chats()
    finally:
        beside.stop()
    print(f"\nhostile well-typed bodies to the real vLLM: {dict(sorted(answers.items()))}")
    print(f"requests running beside them: {beside.done} done, {len(beside.failed)} failed")
    assert not failures, failures[:3]
    assert not beside.failed and beside.done > 0, beside.failed[:3]
    assert http_get(f"{vllm_server.url}/health")[0] == 200
    reply = gw.client().completions.create(model=MODEL, prompt="x", max_tokens=2)
    assert reply.choices


def test_prompt_logprobs_are_refused_where_lora_is_on_and_vllm_keeps_serving(vllm_server, gateway_factory):
    """The body that took the shared vLLM down in CI, and each other form of its kind, sent through the
    gateway of a deployment with LoRA on while another request runs: each is a 400 naming the field,
    before it reaches vLLM; the same bodies without it are answered; the request beside them finishes."""
    gw = gateway_factory(single(vllm_server.url, extraModelNames=[ADAPTER], loraEnabled=True))
    emoji = "\U0001f600" * 50  # about 200 tokens of the test model
    chat = {"messages": [{"role": "user", "content": emoji}], "max_tokens": 3}
    asking = [
        ("/v1/completions", {"prompt": emoji, "max_tokens": 3, "echo": True, "logprobs": 1, "n": 3}, "echo"),
        ("/v1/completions", {"prompt": emoji, "max_tokens": 0, "echo": True, "logprobs": 0}, "echo"),
        ("/v1/completions", {"prompt": [1, 2, 3], "max_tokens": 3, "prompt_logprobs": 0}, "prompt_logprobs"),
        ("/v1/chat/completions", {**chat, "prompt_logprobs": 1, "n": 2}, "prompt_logprobs"),
        ("/v1/chat/completions", {**chat, "echo": True}, "echo"),
        ("/v1/chat/completions", {**chat, "echo": True, "logprobs": True, "top_logprobs": 2}, "echo"),
    ]
    beside = Beside(vllm_server.url)
    try:
        for path, body, field in asking:
            for model in (MODEL, ADAPTER):
                req = urllib.request.Request(
                    f"{gw.url}{path}",
                    data=json.dumps({"model": model, **body}).encode(),
                    headers={"Content-Type": "application/json"},
                )
                try:
                    urllib.request.urlopen(req, timeout=60).read()
                    raise AssertionError(f"answered: {body}")
                except urllib.error.HTTPError as e:
                    error = json.loads(e.read())["error"]
                    assert e.code == 400 and error["param"] == field, (body, error)
                    assert "LoRA" in error["message"] and "vllm-project/vllm#16668" in error["message"]
        client = gw.client()
        plain = client.completions.create(model=ADAPTER, prompt=emoji, max_tokens=3, n=3, logprobs=1)
        assert len(plain.choices) == 3 and plain.choices[0].logprobs.tokens
        echoed = client.completions.create(model=MODEL, prompt="hi", max_tokens=2, echo=True)
        assert echoed.choices[0].text.startswith("hi")
    finally:
        beside.stop()
    assert not beside.failed and beside.done > 0, beside.failed[:3]
    assert http_get(f"{vllm_server.url}/health")[0] == 200
