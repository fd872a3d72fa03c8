"""A suspended ModelDeployment's gateway (`suspension` in its config, from `spec.suspend`), through the
gateway process and the official `openai` client: the config change applies live; new requests and
those still queued get 503 with error code model_suspended; a request already at a replica finishes
(the in-flight gauge the drain reads goes back to 0, and `llmops_gateway_suspended` says the gateway has
taken the suspend); resuming serves again.

The replica is tests/serving/fake_upstream.py: it streams a long answer slowly on cue (`pieces`,
`--delay`), which a tiny vLLM model cannot be made to do."""

from __future__ import annotations

import json
import threading

import pytest

from tests.helpers import eventually, http_get
from tests.serving.gateway_calls import MODEL, single

PIECES = [f"p{i} " for i in range(60)]  # 60 chunks, 0.25 s apart: in flight for ~15 s


def test_suspend_refuses_new_and_queued_requests_and_lets_in_flight_ones_finish(
    gateway_factory, fake_upstream
):
    import openai

    url = fake_upstream("pii", "--delay", "0.25")
    gw = gateway_factory(single(url, maxOutstandingPerReplica=1))  # one slot: a second request queues
    client = gw.client()
    stream = iter(
        client.completions.create(model=MODEL, prompt="x", stream=True, extra_body={"pieces": PIECES})
    )
    got = [next(stream).choices[0].text]
    assert gw.value("llmops_gateway_inflight_requests", version="1") == 1

    queued: list[BaseException] = []

    def wait_in_queue() -> None:
        try:
            client.completions.create(model=MODEL, prompt="x")
        except BaseException as e:
            queued.append(e)

    waiter = threading.Thread(target=wait_in_queue)
    waiter.start()
    eventually(lambda: gw.value("llmops_gateway_pending_requests") == 1, timeout=30, interval=0.05)

    # What the operator writes for spec.suspend: true (llmops/operators/modeldeployment/gateway.py).
    config = json.loads(gw.config_path.read_text())
    suspension = {"modelDeployment": "support-bot", "namespace": "team-a"}
    gw.config_path.write_text(json.dumps({**config, "suspension": suspension}))

    def refused() -> openai.APIStatusError | None:
        try:
            client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
        except openai.APIStatusError as e:
            return e
        return None

    error = eventually(refused, timeout=30, interval=0.1)
    # The stream began before the suspend and is still at the replica: not cut.
    assert gw.value("llmops_gateway_inflight_requests", version="1") == 1
    assert gw.value("llmops_gateway_suspended") == 1
    assert error.status_code == 503 and error.code == "model_suspended"
    assert error.type == "service_unavailable"
    message = (
        "model deployment team-a/support-bot is suspended (spec.suspend is true): it answers no requests"
        " until it is resumed"
    )
    assert error.message == f"Error code: 503 - {message}"  # the client's prefix
    assert "retry-after" not in error.response.headers  # a suspension has no known end
    assert error.response.headers["x-should-retry"] == "false"  # the openai clients do not retry it
    assert error.body == {
        "message": message,
        "type": "service_unavailable",
        "param": None,
        "code": "model_suspended",
    }

    waiter.join(30)  # the queued request reached no replica: answered at the suspend
    assert len(queued) == 1 and isinstance(queued[0], openai.APIStatusError), queued
    assert queued[0].code == "model_suspended"
    assert gw.value("llmops_gateway_pending_requests") == 0

    got += [c.choices[0].text for c in stream]  # the stream in flight finishes whole
    assert "".join(got) == "".join(PIECES)
    eventually(lambda: gw.value("llmops_gateway_inflight_requests", version="1") == 0, timeout=10)
    assert gw.value("llmops_gateway_requests_total", version="1", code="200") == 1
    assert gw.value("llmops_gateway_requests_total", version="none", code="503") >= 2
    assert gw.value("llmops_gateway_errors_total", version="none", reason="suspended") >= 2

    # Every OpenAI endpoint answers the same; the gateway itself stays ready, and /v1/models lists
    # the model (the deployment exists; a request for it gets the error above).
    with pytest.raises(openai.APIStatusError) as embeddings:
        client.embeddings.create(model=MODEL, input="x")
    assert embeddings.value.code == "model_suspended"
    assert http_get(f"{gw.url}/readyz")[0] == 200
    assert [m.id for m in client.models.list().data] == [MODEL]

    gw.config_path.write_text(json.dumps(config))  # resumed
    answer = eventually(lambda: refused() is None and client.completions.create(model=MODEL, prompt="x"))
    assert answer.choices[0].text
    assert gw.value("llmops_gateway_suspended") == 0
