"""The gateway at 10x its replicas' capacity, and slow readers (issue 17, point 4).

The gateway process (`python -m llmops.serving.gateway`) runs in front of a replica process of known
capacity (tests/reliability/recording_upstream.py run with `--slots` and `--delay`: it answers `SLOTS`
requests at once, each in `DELAY` s). It stands in for vLLM because a tiny model on this machine's
two CPU cores cannot be offered 10x its own capacity by a client on the same cores (the client would
be the bottleneck, not the replica); what is measured is the gateway's queue, answers and memory.

`test_overload`: capacity measured first, in the same run (requests a second completed through the
gateway at `SLOTS` concurrent clients); then an open-loop load of 10x that rate for `SECONDS`,
mixing completions, chat (plain and streamed) and embeddings. The queue stays within `maxQueue`
(sampled from /metrics), the excess gets 429 or 503 with Retry-After and nothing else, every admitted
request completes (a stream to its `[DONE]`), the gateway's peak RSS (VmHWM, the kernel's own high
water mark) stays bounded, and once the load stops a normal request (the official `openai` client)
succeeds.

`test_slow_readers_are_cut`: clients with a tiny receive buffer that read a long stream a few bytes
a second: the gateway holds at most its bounded buffers for each (serving.server's WRITE_HIGH,
serving.upstream's READ_HIGH: the replica is held back by TCP instead, measured by the bytes it got
out), and cuts each after serving.server's send_timeout with a "slow reader" log line.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from llmops.dev.cluster import free_port
from llmops.serving.server import WRITE_HIGH, Limits
from llmops.serving.upstream import READ_HIGH
from tests.helpers import eventually, http_get
from tests.serving.conftest import start_gateway, stop_gateway

ROOT = Path(__file__).parents[2]
MODEL = "tiny"
SLOTS = 4  # requests the replica answers at once
DELAY = 0.2  # seconds per answer: capacity about SLOTS / DELAY = 20 requests a second
MAX_QUEUE = 16
QUEUE_TIMEOUT = 2.0
BODIES = {
    "/v1/completions": {"model": MODEL, "prompt": "hello", "max_tokens": 4},
    "/v1/chat/completions": {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 4,
    },
    "/v1/embeddings": {"model": MODEL, "input": ["hello"]},
}
MIX = [  # (path, stream)
    ("/v1/completions", False),
    ("/v1/completions", True),
    ("/v1/chat/completions", False),
    ("/v1/chat/completions", True),
    ("/v1/embeddings", False),
]


def rss_kib(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak) of a process, KiB, from /proc."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            out[name] = int(value.split()[0])
    return out


@pytest.fixture
def replica_and_gateway(tmp_path):
    """`start(slots, delay, **gateway_config)`: a replica process and a gateway in front of it."""
    procs, gateways = [], []

    def start(slots: int, delay: float, **config):
        port = free_port()
        log = open(tmp_path / f"replica-{port}.log", "w")  # noqa: SIM115 - the child owns it
        argv = [sys.executable, "-m", "tests.reliability.recording_upstream", "--port", str(port)]
        argv += ["--slots", str(slots), "--delay", str(delay)]
        procs.append(subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=log))
        url = f"http://127.0.0.1:{port}"
        eventually(lambda: http_get(f"{url}/health")[0] == 200, timeout=30, interval=0.1)
        upstreams = [{"version": "1", "replicas": [url]}]
        gw = start_gateway({"servedModelName": MODEL, "upstreams": upstreams, **config}, tmp_path)
        gateways.append(gw)
        return url, gw

    yield start
    for gw in gateways:
        assert stop_gateway(gw) == 0
    for proc in procs:
        proc.kill()
        proc.wait()


async def one(session: aiohttp.ClientSession, url: str, path: str, stream: bool) -> tuple[int, str, str]:
    """(status, Retry-After, what is wrong with a 200: '' if it is complete)."""
    body = {**BODIES[path], **({"stream": True} if stream else {})}
    try:
        async with session.post(url + path, json=body) as r:
            data = await r.read()
            problem = ""
            if r.status == 200:
                if stream:
                    problem = "" if data.rstrip().endswith(b"data: [DONE]") else "stream cut"
                else:
                    obj = json.loads(data)
                    problem = "" if obj.get("choices") or obj.get("data") else "no choices"
            return r.status, r.headers.get("Retry-After", ""), problem
    except aiohttp.ClientError as e:
        return -1, "", type(e).__name__


async def measure_capacity(url: str, seconds: float) -> float:
    """Requests a second completed through the gateway by SLOTS clients, each one after the other."""
    done = 0
    stop = time.monotonic() + seconds

    async def client(session):
        nonlocal done
        i = 0
        while time.monotonic() < stop:
            status, _, problem = await one(session, url, *MIX[i % len(MIX)])
            assert status == 200 and not problem, (status, problem)
            done += 1
            i += 1

    started = time.monotonic()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await asyncio.gather(*[client(session) for _ in range(SLOTS)])
    return done / (time.monotonic() - started)


async def offer(url: str, rate: float, seconds: float, sample) -> tuple[Counter, list[float], list[str], int]:
    """Open-loop load: `rate` requests a second for `seconds`, whatever the answers; `sample()` is
    called every 0.25 s meanwhile. Returns the answers by status, the queue samples, the problems,
    and how many requests were sent."""
    answers: Counter = Counter()
    problems: list[str] = []
    queue: list[float] = []
    tasks = []

    async def record(coro):
        status, retry_after, problem = await coro
        answers[status] += 1
        if status in (429, 503) and not retry_after:
            problems.append(f"{status} without Retry-After")
        if problem and status == 200:
            problems.append(problem)

    async def sampler():
        while True:
            queue.append(await asyncio.to_thread(sample))
            await asyncio.sleep(0.25)

    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as session:
        watcher = asyncio.create_task(sampler())
        started = time.monotonic()
        n = 0
        while (elapsed := time.monotonic() - started) < seconds:
            while n < elapsed * rate:
                tasks.append(asyncio.create_task(record(one(session, url, *MIX[n % len(MIX)]))))
                n += 1
            await asyncio.sleep(0.005)
        await asyncio.gather(*tasks)
        watcher.cancel()
    return answers, queue, problems, n


@pytest.mark.parametrize(
    "seconds", [pytest.param(15, id="ci"), pytest.param(120, id="long", marks=pytest.mark.long)]
)
def test_overload(replica_and_gateway, seconds):
    _, gw = replica_and_gateway(
        SLOTS, DELAY, maxOutstandingPerReplica=SLOTS, maxQueue=MAX_QUEUE, queueTimeoutSeconds=QUEUE_TIMEOUT
    )
    before = rss_kib(gw.proc.pid)
    capacity = asyncio.run(measure_capacity(gw.url, 4))
    rate = 10 * capacity

    def queued() -> float:
        return gw.value("llmops_gateway_pending_requests")

    answers, queue, problems, sent = asyncio.run(offer(gw.url, rate, seconds, queued))
    after = rss_kib(gw.proc.pid)

    # Recovery: the load is gone; the queue empties and a normal request succeeds.
    eventually(lambda: queued() == 0, timeout=30, interval=0.2)
    client = gw.client()
    recovered = time.monotonic()
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=4
    )
    recovered = time.monotonic() - recovered
    print(
        f"\ncapacity {capacity:.1f} req/s through the gateway ({SLOTS} slots x {DELAY} s);"
        f" offered {sent / seconds:.0f} req/s ({sent / seconds / capacity:.1f}x) for {seconds} s:"
        f" {sent} requests; answers by status {dict(sorted(answers.items()))};"
        f" served {answers[200] / seconds:.1f} req/s; queue at most {max(queue):.0f} (maxQueue {MAX_QUEUE},"
        f" {len(queue)} samples); gateway RSS {before['VmRSS'] / 1024:.0f} MiB before, peak"
        f" {after['VmHWM'] / 1024:.0f} MiB, {after['VmRSS'] / 1024:.0f} MiB after;"
        f" recovered: a normal request answered in {recovered:.2f} s"
    )
    assert not problems, Counter(problems)
    assert set(answers) <= {200, 429, 503}, answers
    assert answers[200] > 0 and answers[429] + answers[503] > 0
    assert max(queue) <= MAX_QUEUE
    assert reply.choices
    # Bounded memory: the peak is the idle gateway's plus at most 128 MiB (a few hundred open
    # requests' buffers and Python's allocator); without bounds it grows with the load's length.
    assert after["VmHWM"] - before["VmRSS"] < 128 * 1024, (before, after)


def slow_reader(port: int, events: int, stop: threading.Event, result: dict) -> None:
    """A streamed completion of `events` events read 16 bytes a second through a tiny receive buffer
    until `stop`; records its port (the gateway's log names it) and the bytes read. (Whether the
    gateway cut it is read from the gateway's log: a reset connection still yields what the tiny
    buffer holds, at 16 bytes a second.)"""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    s.connect(("127.0.0.1", port))
    result["port"] = s.getsockname()[1]
    result["started"] = time.time()
    body = json.dumps({"model": MODEL, "prompt": "x", "max_tokens": events, "stream": True}).encode()
    s.sendall(
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    read = 0
    s.settimeout(120)  # the answer may start late on a loaded machine
    try:
        while not stop.is_set():
            data = s.recv(16)
            if not data:
                break
            read += len(data)
            time.sleep(1)
    except OSError:
        pass
    finally:
        result["read"] = read
        s.close()


@pytest.mark.parametrize(
    "clients", [pytest.param(8, id="ci"), pytest.param(64, id="long", marks=pytest.mark.long)]
)
def test_slow_readers_are_cut(replica_and_gateway, clients):
    replica, gw = replica_and_gateway(0, 0.0, maxOutstandingPerReplica=clients)
    events = 500_000  # about 70 MiB per answer
    event_bytes = len(b"data: ") + 140
    before = rss_kib(gw.proc.pid)
    stop = threading.Event()
    results = [{} for _ in range(clients)]
    threads = [
        threading.Thread(target=slow_reader, args=(gw.port, events, stop, r), daemon=True) for r in results
    ]
    for t in threads:
        t.start()
    send_timeout = Limits().send_timeout

    def cut_lines() -> dict[int, float]:
        """The clients' ports the gateway logged as cut slow readers, with the time of the line."""
        out = {}
        for line in gw.log.read_text().splitlines():
            if "slow reader" in line:
                entry = json.loads(line)
                out[int(entry["msg"].split()[1].rsplit(":", 1)[1])] = entry["time"]
        return out

    # The cut comes send_timeout after the gateway's buffer is full, which is after the kernel's socket
    # buffers on the way are (several MiB per stream here, written by the replica 140 bytes at a time).
    eventually(lambda: len(cut_lines()) >= clients, timeout=send_timeout + 60 + 4 * clients, interval=1)
    stop.set()
    for t in threads:
        t.join(10)
    after = rss_kib(gw.proc.pid)
    _, stats = http_get(f"{replica}/stats")
    streamed = json.loads(stats)["streamed_bytes"]
    lines = cut_lines()
    cut_after = sorted(round(lines[r["port"]] - r["started"]) for r in results if r["port"] in lines)
    print(
        f"\n{clients} slow readers (16 B/s, 2 KiB receive buffer), each asking for"
        f" ~{events * event_bytes >> 20} MiB: cut after {cut_after} s (send_timeout"
        f" {send_timeout:g} s), having read {sum(r['read'] for r in results)} bytes in all;"
        f" the replica got {streamed >> 20} MiB out in all (flow control); gateway RSS"
        f" {before['VmRSS'] / 1024:.0f} MiB before, peak {after['VmHWM'] / 1024:.0f} MiB"
        f" ({(after['VmHWM'] - before['VmRSS']) / 1024 / clients:.2f} MiB a client);"
        f" 'slow reader' log lines: {len(lines)}; per-connection bound WRITE_HIGH {WRITE_HIGH >> 10} KiB +"
        f" READ_HIGH {READ_HIGH >> 10} KiB"
    )
    assert len(cut_after) == clients, (lines, results)
    # The answers were not pulled into the gateway: the replica was held back by TCP (what it got
    # out sits in the kernel's socket buffers on both sides, autotuned up to a few MiB each here).
    assert streamed < clients * events * event_bytes / 3
    # Bounded: a few copies of one read from the replica (up to 256 KiB) per connection at the peak,
    # about 1.3 MiB each measured here with 64 clients, never the answer (70 MiB each).
    assert after["VmHWM"] - before["VmRSS"] < (32 + 2 * clients) * 1024, (before, after)
    reply = gw.client().completions.create(model=MODEL, prompt="x", max_tokens=2)
    assert reply.choices
