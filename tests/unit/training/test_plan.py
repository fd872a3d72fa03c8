"""Small pure pieces of the stages: input parsing, step planning, CPU quantities, error unwrapping."""

from __future__ import annotations

import io
import json

import pytest

from llmops.training.context import arrow_proxy
from llmops.training.errors import UserError
from llmops.training.ingest import parse
from llmops.training.train import cpu_count, plan_steps, resource_wait, unwrap


def test_parse_jsonl_text_and_errors():
    data = b'{"text": "a"}\n\n{"text": "b", "x": 1}\n'
    assert parse(data, "jsonl", "text", "src") == ["a", "b"]
    with pytest.raises(UserError, match=r"src: line 2 is not valid JSON"):
        parse(b'{"text": "a"}\n{oops\n', "jsonl", "text", "src")
    with pytest.raises(UserError, match=r"line 1 has no field 'body' \(fields: text\); set textField"):
        parse(data, "jsonl", "body", "src")
    with pytest.raises(UserError, match="not UTF-8"):
        parse(b"\xff\xfe\x00", "jsonl", "text", "src")
    assert parse(b"para one\nstill one\n\n\npara two\n", "text", "text", "src") == [
        "para one\nstill one",
        "para two",
    ]


def test_parse_gzip_and_parquet():
    import gzip

    assert parse(gzip.compress(b'{"t": "z"}\n'), "jsonl", "t", "src") == ["z"]
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(pa.table({"body": ["x", "y"]}), buffer)
    assert parse(buffer.getvalue(), "parquet", "body", "src") == ["x", "y"]
    with pytest.raises(UserError, match=r"no column 'text' \(columns: body\)"):
        parse(buffer.getvalue(), "parquet", "text", "src")
    with pytest.raises(UserError, match="not a readable Parquet file"):
        parse(json.dumps({"a": 1}).encode(), "parquet", "text", "src")


def test_plan_steps():
    assert plan_steps(100, 8, 1, 3, None) == (13, 39)
    assert plan_steps(100, 8, 4, 1, None) == (3, 3)
    assert plan_steps(3, 8, 4, 2, None) == (1, 2)  # tiny shards still make progress
    assert plan_steps(100, 8, 1, 3, 7) == (13, 7)


def test_cpu_count():
    assert cpu_count(None) == 1 and cpu_count(4) == 4 and cpu_count("3500m") == 3 and cpu_count("250m") == 1


def test_unwrap_finds_the_user_error_inside_wrappers():
    inner = UserError("fix this")

    class Wrapper(Exception):
        def __init__(self) -> None:
            super().__init__("wrapped")
            self.worker_failures = {0: RuntimeError("other"), 1: inner}

    assert unwrap(Wrapper()) is inner
    plain = RuntimeError("x")
    assert unwrap(plain) is plain

    class RemoteTaskError(UserError):  # what ray.get raises: the cause's class, a traceback as text
        def __init__(self) -> None:
            super().__init__("Traceback ... ray::read_file() ...")
            self.cause = inner

    assert unwrap(RemoteTaskError()) is inner


def test_resource_wait_names_what_ray_waits_for():
    tail = (
        " (it may be scaling up; without an autoscaler it waits until spec.runtime.activeDeadlineSeconds,"
        " or for good when that is unset)"
    )

    def gpu(workers: int, each: float, have: float) -> str | None:
        return resource_wait(workers, {"GPU": each, "CPU": 1}, {"GPU": have, "CPU": 64})

    assert gpu(2, 4, 0) == "waiting for 8 GPUs (2 workers x 4) for Ray Train; the Ray cluster has 0" + tail
    assert gpu(1, 0.5, 0) == (
        "waiting for 0.5 GPUs (1 worker x 0.5) for Ray Train; the Ray cluster has 0" + tail
    )
    assert gpu(1, 1, 0) == "waiting for 1 GPU (1 worker x 1) for Ray Train; the Ray cluster has 0" + tail
    assert gpu(3, 2, 4) is not None and "has 4 " in gpu(3, 2, 4)
    assert gpu(2, 4, 8) is None and gpu(2, 4, 16) is None  # enough
    assert gpu(2, 0, 0) is None  # a CPU run waits for no GPU
    # CPUs: Ray blocks the same way when the workers ask for more than the cluster has.
    assert resource_wait(2, {"CPU": 8}, {"CPU": 4}) == (
        "waiting for 16 CPUs (2 workers x 8) for Ray Train; the Ray cluster has 4" + tail
    )
    assert resource_wait(2, {"CPU": 2}, {"CPU": 4}) is None
    # GPUs are named first; a quantization task is one task.
    assert resource_wait(1, {"CPU": 64, "GPU": 1}, {"CPU": 2}, "the quantization task", "task") == (
        "waiting for 1 GPU (1 task x 1) for the quantization task; the Ray cluster has 0" + tail
    )


def test_arrow_proxy_follows_the_standard_environment(monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert arrow_proxy("http", "minio.llmops-system:9000") is None  # no proxy set
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:3128")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost,.internal")
    assert arrow_proxy("http", "minio.llmops-system:9000") == "http://127.0.0.1:3128"
    assert arrow_proxy("http", "127.0.0.1:9000") is None  # NO_PROXY exempts it
    assert arrow_proxy("http", "store.internal:9000") is None
    assert arrow_proxy("https", "s3.us-east-1.amazonaws.com") is None  # no HTTPS_PROXY
