"""User feedback through the real chain: the official openai client -> the gateway -> vLLM on the CPU,
then `POST /v1/feedback` with the completion id the client got (serving.feedback), counted in a real
Prometheus that scrapes the gateway with the labels its ServiceMonitor gives it."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import subprocess
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from llmops.api.retrainpolicy import FeedbackTrigger
from llmops.dev.cluster import free_port
from llmops.dev.tools import binary
from llmops.operators.retrainpolicy import triggers
from tests.helpers import eventually, http_get
from tests.serving.gateway_calls import MODEL, post, single

NAMESPACE, MD = "team-a", "chat"
OURS = f'namespace="{NAMESPACE}",model_deployment="{MD}"'


@contextlib.contextmanager
def prometheus(tmp_path: Path, target: str, vllm: tuple[str, str] | None = None) -> Iterator[str]:
    """A real Prometheus scraping `target` every second with the target labels the operator's gateway
    ServiceMonitor gives (`namespace` from the Service, `model_deployment` relabelled from the pod's
    llmops.io/modeldeployment label: monitoring.service_monitor); with `vllm` (host:port, version),
    that vLLM server too, with the labels of the vLLM PodMonitor (monitoring.pod_monitor: `version`
    from the pod's llmops.io/model-version)."""
    config = tmp_path / "prometheus.yml"
    labels = {"namespace": NAMESPACE, "model_deployment": MD}
    jobs = [{"job_name": "gateway", "static_configs": [{"targets": [target], "labels": labels}]}]
    if vllm is not None:
        address, version = vllm
        pod = {**labels, "version": version}
        jobs.append({"job_name": "vllm", "static_configs": [{"targets": [address], "labels": pod}]})
    config.write_text(yaml.safe_dump({"global": {"scrape_interval": "1s"}, "scrape_configs": jobs}))
    port = free_port()
    with open(tmp_path / "prometheus.log", "w") as log:
        proc = subprocess.Popen(
            [
                binary("prometheus"),
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            eventually(lambda: http_get(f"{url}/-/ready")[0] == 200, timeout=60)
            yield url
        finally:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def query(url: str, promql: str) -> list[dict]:
    status, text = http_get(f"{url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}")
    assert status == 200, text
    return json.loads(text)["data"]["result"]


def test_feedback_on_the_id_the_openai_client_got(vllm_server, gateway_factory, tmp_path):
    """vLLM answers with the gateway's id (plain and streamed); the tenant that got it rates it (201);
    another tenant and a forged id get 404; the counter is on /metrics and in Prometheus, where the
    RetrainPolicy's feedback trigger reads it and fires; the stored feedback record names the
    completion id that the payload sample of the same exchange carries."""
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
                "modelDeployment": MD,
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
    # Another name's first feedback, before Prometheus' first scrape: its series appear with it, at 1,
    # which increase() never counts (the default name's series exist at 0 once ids are issued).
    assert post(url, {"completion_id": completion.id, "name": "tone", "value": "terse"}, alpha)[0] == 201
    with prometheus(tmp_path, f"127.0.0.1:{gw.port}") as prom:
        eventually(lambda: len(query(prom, f"llmops_gateway_feedback_total{{{OURS}}}")) == 6, timeout=60)
        status, _, body = post(url, {"completion_id": answer.id, "value": -1, "user": "end-user-1"}, alpha)
        assert status == 201, body
        assert (body["object"], body["completion_id"], body["model"], body["version"]) == (
            "feedback",
            answer.id,
            MODEL,
            "1",
        )
        assert post(url, {"completion_id": streamed.pop(), "value": True}, alpha)[0] == 201
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
            ("thumbs", "neutral", "1"): 0,
            ("tone", "negative", "1"): 0,
            ("tone", "positive", "1"): 0,
            ("tone", "neutral", "1"): 1,
        }
        # The RetrainPolicy feedback trigger's queries, with the selector the gateway's series carry in a
        # cluster: one negative of the two thumbs counted since the first scrape (tone is another name).
        trigger = FeedbackTrigger(max_negative_ratio=0.4, min_count=1, window_seconds=300)
        every, negative = triggers.feedback_queries(NAMESPACE, MD, trigger)
        assert f'llmops_gateway_feedback_total{{{OURS},name="thumbs"}}' in every

        def counts() -> tuple[float, float] | None:
            found = [query(prom, q) for q in (every, negative)]
            return (float(found[0][0]["value"][1]), float(found[1][0]["value"][1])) if all(found) else None

        # increase() extrapolates to the window's edges: the ratio is 0.5 give or take a little.
        half = pytest.approx(0.5, abs=0.01)
        eventually(lambda: (c := counts()) is not None and c[0] > 0 and c[1] / c[0] == half, timeout=60)
        count, negatives = counts()  # type: ignore[misc]
        status = triggers.feedback(trigger, count, negatives, None, dt.datetime.now(dt.UTC))
        assert status.firing and status.value == half, status.message

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
    assert rated["model_deployment"] == MD and rated["model"] == MODEL
    sample = next(r for r in records("payload") if r["id"] == answer.id)
    assert sample["user"] == "end-user-1" and sample["endpoint"] == "chat"
    assert {r["id"] for r in records("payload")} == {answer.id, completion.id, *{c.id for c in chunks}}
