"""The post-mortem on a real run: the official openai client -> the gateway -> vLLM on the CPU, scraped
by a real Prometheus with the labels the gateway's ServiceMonitor gives; then ModelRetirement's
post-mortem collects the version's window from that Prometheus, renders and writes it.

The version's second replica is tests/serving/fake_upstream.py in `hang` mode (a replica that never
answers, which a real vLLM cannot be made to be on cue): the gateway gives up on it after
`upstreamTimeoutSeconds` and answers 502, so the run has real server errors beside real answers."""

from __future__ import annotations

import collections
import datetime as dt
import json

import openai
import pytest

from llmops.api.modeldeployment import Alerts
from llmops.operators.modelretirement import postmortem as pm
from llmops.operators.prometheus import Prometheus
from llmops.storage import LocalStore
from tests.helpers import eventually
from tests.serving.gateway_calls import MODEL, post
from tests.serving.test_serving_feedback import MD, NAMESPACE, OURS, prometheus

VERSION = "3"
SELECTED = f'{OURS},version="{VERSION}"'


def test_the_post_mortem_counts_what_the_run_served(vllm_server, gateway_factory, fake_upstream, tmp_path):
    """Every request the client sent to the version is in the report, by status code (the 502s as
    server errors, with their reason), tokens as vLLM reported them, feedback by sentiment; a request
    refused before a version was chosen (an unknown model) is not the version's; p50 and p95 are what
    Prometheus' own histogram_quantile says; the Markdown, JSON and charts are written."""
    hang = fake_upstream("hang", "--hang-at", "headers")
    store = tmp_path / "store"
    (tmp_path / "idkey").write_bytes(bytes(range(32)))
    gw = gateway_factory(
        {
            "servedModelName": MODEL,
            "upstreams": [{"version": VERSION, "replicas": [vllm_server.url, hang]}],
            "upstreamTimeoutSeconds": 2,
            "feedback": {
                "modelDeployment": MD,
                "destination": {"local": {"path": str(store)}},
                "keyPath": str(tmp_path / "idkey"),
            },
        }
    )
    eventually(lambda: gw.value("llmops_gateway_ready_replicas", version=VERSION) == 2, timeout=60)
    client = gw.client()
    with prometheus(tmp_path, f"127.0.0.1:{gw.port}") as url:
        source = Prometheus(url)
        eventually(lambda: source.query(f"up{{{OURS}}}") == 1, timeout=60)
        start = dt.datetime.now(dt.UTC)

        codes: collections.Counter[int] = collections.Counter()
        answers = []
        for i in range(8):  # least outstanding, ties round-robin: vLLM and the hanging replica by turns
            try:
                answer = client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": f"Hi {i}"}], max_tokens=2
                )
            except openai.APIStatusError as e:
                codes[e.status_code] += 1
            else:
                codes[200] += 1
                answers.append(answer)
        assert set(codes) == {200, 502} and len(answers) >= 3, codes
        # Refused before a version was chosen (version="none"): not this version's.
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
        feedback = [(answers[0], 1), (answers[1], True), (answers[2], -1)]
        for answer, value in feedback:
            status, _, body = post(f"{gw.url}/v1/feedback", {"completion_id": answer.id, "value": value})
            assert status == 201, body

        sent = sum(codes.values())
        every = f"sum(llmops_gateway_requests_total{{{SELECTED}}})"
        rated = f"sum(llmops_gateway_feedback_total{{{SELECTED}}})"
        eventually(lambda: source.query(every) == sent and source.query(rated) == 3, timeout=60)
        end = dt.datetime.now(dt.UTC)

        alerts = Alerts(max_error_rate=0.05, p95_latency_ms=1000)
        m = pm.collect(
            source,
            namespace=NAMESPACE,
            deployments=[MD],
            version=VERSION,
            start=start,
            end=end,
            alerts=alerts,
        )
        # Prometheus' own percentiles of the same buckets (every series was born in the window, so
        # its value at the end is its increase).
        buckets = f"sum by (le) (llmops_gateway_request_duration_seconds_bucket{{{SELECTED}}})"
        own = {q: source.query(f"histogram_quantile({q}, {buckets})") for q in (0.5, 0.95)}

    assert m.unavailable is None and m.source == url
    assert m.requests == sent
    assert m.by_code == {str(code): n for code, n in sorted(codes.items())}
    assert m.server_errors == codes[502] and m.client_errors == 0
    assert m.error_ratio == codes[502] / sent
    assert m.errors_by_reason == {"upstream_error": codes[502]}
    assert m.prompt_tokens == sum(a.usage.prompt_tokens for a in answers)
    assert m.completion_tokens == sum(a.usage.completion_tokens for a in answers)
    assert m.feedback == {"positive": 2, "negative": 1, "neutral": 0}
    assert m.p50_ms == round(own[0.5] * 1000, 3) and m.p95_ms == round(own[0.95] * 1000, 3)
    assert m.drift_max is None  # no drift monitor in this run
    rate = next(o for o in m.objectives if o.name == "error rate")
    assert rate.observed == m.error_ratio and rate.met is False
    t = m.timeline
    assert (
        t is not None
        and len(t.times) <= pm.MAX_POINTS
        and abs(t.times[-1] - end) < dt.timedelta(milliseconds=1)
    )
    assert round(sum(t.requests_per_second) * t.step_seconds) == sent
    assert {s: round(sum(v)) for s, v in t.feedback.items()} == m.feedback

    report = pm.PostMortem(
        model="chat-llama",
        version=VERSION,
        namespace=NAMESPACE,
        deployments=[MD],
        start=start,
        end=end,
        reason="superseded by 4",
        requested_by="user:alice",
        events=[pm.ServingEvent(time=start, kind="rollout", deployment=f"{NAMESPACE}/{MD}")],
        metrics=m,
    )
    keys = pm.write(LocalStore(tmp_path / "reports"), "postmortems/chat-llama/3", report)
    names = [k.rsplit("/", 1)[1] for k in keys]
    assert names == [
        "traffic.png",
        "errors.png",
        "latency.png",
        "feedback.png",
        "postmortem.md",
        "postmortem.json",
    ]
    written = tmp_path / "reports" / "postmortems" / "chat-llama" / "3"
    text = (written / "postmortem.md").read_text()
    assert f"| Requests | {sent} |" in text and f"| 502 | {codes[502]} |" in text
    assert "![Requests per second](traffic.png)" in text and "no-such-model" not in text
    assert json.loads((written / "postmortem.json").read_text())["metrics"]["requests"] == sent
    assert pm.summary(report).startswith(
        f"served {pm.duration((end - start).total_seconds())}, {sent} requests"
    )
