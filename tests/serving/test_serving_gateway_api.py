"""The gateway as deployed (`python -m llmops.serving.gateway`) in front of a real vLLM on the CPU: the
OpenAI API it passes (completions, chat, responses, embeddings, tokenize, models), the requests it
refuses, and its metrics beside vLLM's.

Clients are the official `openai` package and plain HTTP (tests/serving/gateway_calls.py).
"""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.parse
import urllib.request

from llmops.dev.cluster import free_port
from llmops.dev.tools import binary
from tests.helpers import eventually, http_get
from tests.serving.gateway_calls import ADAPTER, EMBED, MODEL, NO_EOS, logged, post, single


def test_openai_client_plain_and_streaming(vllm_server, gateway_factory):
    gw = gateway_factory(single(vllm_server.url))
    client = gw.client()
    assert [m.id for m in client.models.list()] == [MODEL]

    done = client.completions.create(model=MODEL, prompt="The river ran", max_tokens=8, extra_body=NO_EOS)
    assert done.choices[0].text and done.usage.completion_tokens == 8

    chat = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hello"}], max_tokens=6, extra_body=NO_EOS
    )
    assert chat.choices[0].message.content and chat.usage.completion_tokens == 6

    chunks = list(
        client.completions.create(
            model=MODEL, prompt="A cup of tea", max_tokens=8, stream=True, extra_body=NO_EOS
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices)
    # The gateway asked vLLM for usage to count tokens; the client did not, so it gets no usage chunk.
    assert all(c.choices for c in chunks) and all(getattr(c, "usage", None) is None for c in chunks)

    with_usage = list(
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Hi"}],
            max_tokens=5,
            stream=True,
            stream_options={"include_usage": True},
            extra_body=NO_EOS,
        )
    )
    assert with_usage[-1].usage.completion_tokens == 5

    assert gw.value("llmops_gateway_requests_total", version="1", code="200") == 4
    assert gw.value("llmops_gateway_completion_tokens_total", version="1") == 8 + 6 + 8 + 5
    assert gw.value("llmops_gateway_prompt_tokens_total", version="1") > 0
    assert gw.value("llmops_gateway_time_to_first_token_seconds_count", version="1") == 2
    assert gw.value("llmops_gateway_request_duration_seconds_count", version="1") == 4
    assert gw.value("llmops_gateway_ready_replicas", version="1") == 1


def test_malformed_requests_get_400(vllm_server, gateway_factory):
    gw = gateway_factory(single(vllm_server.url, maxRequestBytes=2048))
    url = f"{gw.url}/v1/completions"
    cases = [
        (b"{not json", 400, "not valid JSON"),
        ([1, 2], 400, "JSON object"),
        ({"prompt": "x"}, 400, "'model' is required"),
        ({"model": MODEL}, 400, "'prompt' is required"),
        ({"model": MODEL, "prompt": "x", "stream": "yes"}, 400, "'stream'"),
        ({"model": MODEL, "prompt": "x", "max_tokens": -1}, 400, "'max_tokens'"),
        ({"model": "gpt-9", "prompt": "x"}, 404, "does not exist"),
        ({"model": MODEL, "prompt": "x" * 4000}, 413, "exceeds"),
    ]
    for body, code, words in cases:
        status, _, answer = post(url, body)
        assert status == code, (body, answer)
        assert words in answer["error"]["message"], answer
    status, _, answer = post(
        f"{gw.url}/v1/chat/completions", {"model": MODEL, "messages": [{"content": "x"}]}
    )
    assert status == 400 and "role" in answer["error"]["message"]
    # What only vLLM can judge passes through with vLLM's own 400: longer than --max-model-len 256.
    status, _, answer = post(url, {"model": MODEL, "prompt": "x", "max_tokens": 100000})
    assert status == 400 and answer["error"]["message"]
    assert gw.value("llmops_gateway_errors_total", version="none", reason="bad_request") == 7
    assert gw.value("llmops_gateway_errors_total", version="1", reason="upstream_400") == 1
    assert http_get(f"{gw.url}/healthz")[0] == 200


def test_prometheus_scrapes_gateway_and_vllm(vllm_server, gateway_factory, tmp_path):
    gw = gateway_factory(single(vllm_server.url))
    client = gw.client()
    for _ in range(3):
        client.completions.create(
            model=MODEL, prompt="The garden needs water", max_tokens=4, extra_body=NO_EOS
        )
    list(client.completions.create(model=MODEL, prompt="x", max_tokens=4, stream=True, extra_body=NO_EOS))

    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: gateway\n    static_configs: [{{targets: ['127.0.0.1:{gw.port}']}}]\n"
        f"  - job_name: vllm\n    static_configs: [{{targets: ['127.0.0.1:{vllm_server.port}']}}]\n"
    )
    with open(tmp_path / "prometheus.log", "w") as log:
        prom = subprocess.Popen(
            [
                binary("prometheus"),
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        base = f"http://127.0.0.1:{port}"

        def query(q: str) -> list[dict]:
            status, text = http_get(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": q}))
            return json.loads(text)["data"]["result"] if status == 200 else []

        up = eventually(lambda: len(query("up == 1")) == 2 and query("up == 1"), timeout=60)
        assert {r["metric"]["job"] for r in up} == {"gateway", "vllm"}
        served = eventually(lambda: query('llmops_gateway_requests_total{code="200"}'), timeout=30)
        assert float(served[0]["value"][1]) == 4 and served[0]["metric"]["version"] == "1"
        assert eventually(lambda: query("llmops_gateway_completion_tokens_total"), timeout=30)
        assert eventually(lambda: query("llmops_gateway_time_to_first_token_seconds_count"), timeout=30)
        assert eventually(lambda: query("llmops_gateway_pending_requests"), timeout=30)
        # vLLM's own signals, which autoscaling reads, come through too.
        for name in (
            "vllm:num_requests_waiting",
            "vllm:num_requests_running",
            "vllm:generation_tokens_total",
        ):
            assert eventually(lambda name=name: query(name), timeout=30), name
        p50 = eventually(
            lambda: query(
                "histogram_quantile(0.5, sum by (le)"
                " (rate(llmops_gateway_request_duration_seconds_bucket[1m])))"
            ),
            timeout=30,
        )
        assert p50
    finally:
        prom.terminate()
        prom.wait(30)


def test_models_pass_through_what_vllm_reports(vllm_server, gateway_factory):
    """GET /v1/models through the gateway is vLLM's answer: every field, the LoRA adapter with its base
    as `parent`; merged across two versions (both this one vLLM here) without duplicates."""
    _, text = http_get(f"{vllm_server.url}/v1/models")
    direct = {card["id"]: card for card in json.loads(text)["data"]}
    assert direct[ADAPTER]["parent"] == MODEL and direct[MODEL]["max_model_len"] == 256

    upstreams = [
        {"version": "1", "role": "stable", "weight": 90, "replicas": [vllm_server.url]},
        {"version": "2", "role": "canary", "weight": 10, "replicas": [vllm_server.url]},
    ]
    gw = gateway_factory({"servedModelName": MODEL, "extraModelNames": [ADAPTER], "upstreams": upstreams})
    models = gw.client().models.list().data
    assert [m.id for m in models] == [MODEL, ADAPTER]
    volatile = ("created", "permission")  # vLLM stamps these afresh on every call
    for m in models:
        card = m.model_dump(exclude_unset=True)  # what the gateway sent, no SDK defaults
        want = direct[m.id]
        assert card.keys() == want.keys()
        for field in want.keys() - set(volatile):
            if not (m.id == ADAPTER and field == "max_model_len"):
                assert card[field] == want[field], field
        assert isinstance(card["created"], int)
        assert [sorted(p) for p in card["permission"]] == [sorted(p) for p in want["permission"]]
    base, adapter = models
    assert (base.owned_by, base.root, base.parent) == ("vllm", direct[MODEL]["root"], None)
    assert (adapter.parent, adapter.root) == (MODEL, direct[ADAPTER]["root"])
    # vLLM lists an adapter with max_model_len null; it runs within its base's context length.
    assert direct[ADAPTER]["max_model_len"] is None and adapter.max_model_len == 256

    # The adapter is served through the gateway by its name.
    done = gw.client().completions.create(
        model=ADAPTER, prompt="The river ran", max_tokens=4, extra_body=NO_EOS
    )
    assert done.model == ADAPTER and done.usage.completion_tokens == 4

    # A name the gateway does not accept is not listed, even if a replica serves it.
    only_base = gateway_factory(single(vllm_server.url), name="base-only")
    assert [m.id for m in only_base.client().models.list()] == [MODEL]


def test_responses_api_plain_and_streamed(vllm_server, gateway_factory):
    """/v1/responses through the gateway with the openai client: a whole answer, and a stream of typed
    events in vLLM's order, ending with response.completed; tokens, TTFT and codes in the metrics."""
    gw = gateway_factory(single(vllm_server.url))
    client = gw.client()
    answer = client.responses.create(
        model=MODEL, input="Tell me about the river", max_output_tokens=8, extra_body={**NO_EOS, "seed": 7}
    )
    assert answer.output_text and answer.usage.output_tokens == 8

    ask = {"model": MODEL, "input": [{"role": "user", "content": "Hi"}], "max_output_tokens": 5}
    events = list(client.responses.create(**ask, stream=True, extra_body={**NO_EOS, "seed": 7}))
    types = [e.type for e in events]
    assert types[:2] == ["response.created", "response.in_progress"] and types[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))  # none lost, none added
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    (done,) = [e for e in events if e.type == "response.output_text.done"]
    assert deltas and deltas == done.text and events[-1].response.usage.output_tokens == 5

    assert gw.value("llmops_gateway_requests_total", version="1", code="200") == 2
    assert gw.value("llmops_gateway_completion_tokens_total", version="1") == 8 + 5
    assert gw.value("llmops_gateway_prompt_tokens_total", version="1") > 0
    assert gw.value("llmops_gateway_time_to_first_token_seconds_count", version="1") == 1
    assert logged(gw, code=200, endpoint="responses")


def test_tokenize_and_detokenize(vllm_server, gateway_factory):
    """/tokenize and /detokenize (vLLM's, at the root) through the gateway, with the openai client's
    generic `post`; the round trip gives back the text."""
    import openai

    gw = gateway_factory(single(vllm_server.url))
    root = openai.OpenAI(base_url=gw.url, api_key="none", max_retries=0)
    tokens = root.post("/tokenize", body={"model": MODEL, "prompt": "The river ran low"}, cast_to=object)
    assert tokens["count"] == len(tokens["tokens"]) > 0 and tokens["max_model_len"] == 256
    chat = root.post(
        "/tokenize",
        body={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "add_generation_prompt": True},
        cast_to=object,
    )
    assert chat["count"] > 0
    text = root.post("/detokenize", body={"model": MODEL, "tokens": tokens["tokens"]}, cast_to=object)
    assert text["prompt"].endswith("The river ran low")
    status, _, body = post(f"{gw.url}/detokenize", {"model": MODEL, "tokens": "abc"})
    assert status == 400 and "'tokens'" in body["error"]["message"]
    status, _, body = post(f"{gw.url}/tokenize", {"model": "other", "prompt": "x"})
    assert status == 404
    assert gw.value("llmops_gateway_requests_total", version="1", code="200") == 3


def test_embeddings(vllm_embedding_server, gateway_factory):
    """/v1/embeddings through the gateway against a vLLM that serves the tiny model as an embedding
    model (`--runner pooling --convert embed`), with the openai client; prompt tokens are counted."""
    gw = gateway_factory(
        {"servedModelName": EMBED, "upstreams": [{"version": "1", "replicas": [vllm_embedding_server.url]}]}
    )
    client = gw.client()
    out = client.embeddings.create(model=EMBED, input=["The river ran low", "A cup of tea"])
    assert len(out.data) == 2 and len(out.data[0].embedding) == 128 and out.usage.prompt_tokens > 0
    single_input = client.embeddings.create(model=EMBED, input="Hello", encoding_format="float")
    assert len(single_input.data) == 1
    assert gw.value("llmops_gateway_prompt_tokens_total", version="1") == (
        out.usage.prompt_tokens + single_input.usage.prompt_tokens
    )
    assert [m.id for m in client.models.list()] == [EMBED]
    status, _, body = post(f"{gw.url}/v1/embeddings", {"model": EMBED, "input": [{"a": 1}]})
    assert status == 400 and "'input'" in body["error"]["message"]


def test_new_endpoints_share_auth_limits_redaction_and_sampling(vllm_server, gateway_factory, tmp_path):
    """/v1/responses, /v1/embeddings, /tokenize and /detokenize pass the same API keys, rate limits,
    PII redaction (prompts and answers: the model sees the redacted prompt) and sampling as chat."""
    import openai

    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "team-a").write_text("sk-alpha-0123456789")
    samples = tmp_path / "samples"
    sampling = {"rate": 1.0, "destination": {"local": {"path": str(samples)}}, "flushIntervalSeconds": 0.2}
    gw = gateway_factory(
        single(
            vllm_server.url,
            apiKeysPath=str(keys),
            piiRedaction={"scope": "promptsAndAnswers"},
            payloadSampling=sampling,
            rateLimit={"requestsPerMinute": 6, "burst": 5},
        )
    )
    for path in ("/v1/responses", "/v1/embeddings", "/tokenize", "/detokenize"):
        status, _, body = post(
            f"{gw.url}{path}", {"model": MODEL, "input": "x", "prompt": "x", "tokens": [1]}
        )
        assert status == 401 and body["error"]["type"] == "authentication_error", path

    secret = "Mail jane.roe@example.org today"
    client = gw.client("sk-alpha-0123456789")
    root = openai.OpenAI(base_url=gw.url, api_key="sk-alpha-0123456789", max_retries=0)
    tokens = root.post("/tokenize", body={"model": MODEL, "prompt": secret}, cast_to=object)["tokens"]
    req = urllib.request.Request(  # what the model was given, read back at vLLM
        f"{vllm_server.url}/detokenize",
        data=json.dumps({"model": MODEL, "tokens": tokens}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        seen = json.loads(r.read())["prompt"]
    assert "[EMAIL]" in seen and "jane.roe" not in seen

    answer = client.responses.create(model=MODEL, input=secret, max_output_tokens=4)
    assert answer.output_text is not None
    # Streamed typed events are redacted too (tests/unit/serving/test_endpoints.py splits the text).
    events = list(client.responses.create(model=MODEL, input=secret, max_output_tokens=2, stream=True))
    assert events[-1].type == "response.completed"
    root.post("/detokenize", body={"model": MODEL, "tokens": tokens}, cast_to=object)
    # The burst of 5 is spent (tokenize, responses, the stream, detokenize ... and this one).
    codes = []
    for _ in range(3):
        try:
            root.post("/tokenize", body={"model": MODEL, "prompt": "x"}, cast_to=object)
            codes.append(200)
        except openai.RateLimitError:
            codes.append(429)
    assert 429 in codes

    def stored() -> list[dict]:
        files = samples.rglob("*.jsonl") if samples.exists() else []
        return [json.loads(line) for f in files for line in f.read_text().splitlines()]

    eventually(
        lambda: {"tokenize", "responses", "detokenize"} <= {r["endpoint"] for r in stored()}, timeout=10
    )
    assert "jane.roe" not in json.dumps(stored())
