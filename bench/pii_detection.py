"""How well and how fast personal data is found: precision and recall per entity on the labelled set,
the cost of redaction per KiB, and (with `--gateway`) the gateway's added latency with redaction on.

    python bench/pii_detection.py [--regions US,GB,...] [--repeat 20] [--gateway] [--requests 300]

Quality: every string of tests/data/pii_labelled.jsonl (invented, 10 locales, plus look-alike traps:
dates, times, versions, decimals, amounts, coordinates, grouped thousands, lists, identifiers) goes
through `llmops.pii.Detector` configured with the set's regions (or `--regions`); a finding counts
as a true positive when its type, start and end equal a label's. Goal (issue 11): precision >= 0.95
and recall >= 0.95 for each entity. The traps' false positives are listed by kind.

Cost: the whole set redacted `--repeat` times, as µs per KiB of text, beside the baseline of
scanning the same text once with a trivial regex (`\\d`) in the same run, and the ratio; the set is
dense with numbers (the worst case), so the same is printed for ordinary prose (the quickstart
corpus), with the set's ten regions and with [US] alone (each region is one more matcher pass).

Gateway (`--gateway`): two gateway processes in front of one canned upstream that answers at once
(tests/serving/fake_upstream.py), one with `piiRedaction` (scope promptsAndAnswers) and one
without; `--requests` chat requests each carrying a labelled string go to both in turns, and the
p50/p99 latency of each and the difference are printed.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llmops.jsonl import read_path  # noqa: E402
from llmops.pii import ENTITIES, Detector  # noqa: E402

LABELLED = ROOT / "tests" / "data" / "pii_labelled.jsonl"
PROSE = ROOT / "llmops" / "training" / "data" / "quickstart" / "train.jsonl"
REGIONS = {
    "en-US": "US",
    "en-GB": "GB",
    "de-DE": "DE",
    "fr-FR": "FR",
    "es-ES": "ES",
    "it-IT": "IT",
    "pt-BR": "BR",
    "ja-JP": "JP",
    "en-IN": "IN",
    "nl-NL": "NL",
}


def load(path: Path = LABELLED) -> list[dict]:
    return [row for _, row in read_path(path)]


def score(detector: Detector, rows: list[dict]) -> dict:
    """Per entity: tp, fp, fn, precision, recall; plus the misses and false alarms, for the report."""
    tally = {e: {"tp": 0, "fp": 0, "fn": 0} for e in ENTITIES}
    misses, alarms = [], []
    for row in rows:
        gold = {(e["type"], e["start"], e["end"]) for e in row["entities"]}
        found = {(m.entity, m.start, m.end) for m in detector.find(row["text"])}
        for entity, _, _ in found & gold:
            tally[entity]["tp"] += 1
        for entity, start, end in found - gold:
            tally[entity]["fp"] += 1
            alarms.append((row.get("trap") or row["locale"], entity, row["text"][start:end], row["text"]))
        for entity, start, end in gold - found:
            tally[entity]["fn"] += 1
            misses.append((row["locale"], entity, row["text"][start:end], row["text"]))
    for t in tally.values():
        t["precision"] = t["tp"] / (t["tp"] + t["fp"]) if t["tp"] + t["fp"] else 1.0
        t["recall"] = t["tp"] / (t["tp"] + t["fn"]) if t["tp"] + t["fn"] else 1.0
    return {"entities": tally, "misses": misses, "false_alarms": alarms}


def cost(detector: Detector, rows: list[dict], repeat: int) -> dict:
    texts = [row["text"] for row in rows]
    kib = sum(len(t.encode()) for t in texts) / 1024
    trivial = re.compile(r"\d")
    base = time.perf_counter()
    for _ in range(repeat):
        for t in texts:
            trivial.findall(t)
    base = time.perf_counter() - base
    spent = 0.0
    for _ in range(repeat):
        detector.find_in_segment.cache_clear()  # measure detection, not the cache
        start = time.perf_counter()
        for t in texts:
            detector.redact(t)
        spent += time.perf_counter() - start
    return {
        "redact_us_per_kib": spent / repeat / kib * 1e6,
        "baseline_us_per_kib": base / repeat / kib * 1e6,
        "ratio": spent / base if base else float("inf"),
        "kib": kib,
    }


def gateway_latency(rows: list[dict], requests: int) -> dict:
    """p50/p99 of chat requests through a gateway with and without redaction, same canned upstream."""
    import subprocess
    import tempfile
    import urllib.request

    sys.path.insert(0, str(ROOT / "tests" / "serving"))
    from conftest import start_gateway, stop_gateway

    from llmops.dev.cluster import free_port

    work = Path(tempfile.mkdtemp(prefix="pii-bench-"))
    port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, str(ROOT / "tests/serving/fake_upstream.py"), "--port", str(port), "--mode", "pii"]
    )
    url = f"http://127.0.0.1:{port}"
    base = {"servedModelName": "tiny", "upstreams": [{"version": "1", "replicas": [url]}]}
    gateways = {}
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{url}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        for name in ("off", "on"):
            (work / name).mkdir()
        gateways["off"] = start_gateway(base, work / "off", name="off")
        gateways["on"] = start_gateway(
            {**base, "piiRedaction": {"scope": "promptsAndAnswers"}}, work / "on", name="on"
        )
        latencies: dict[str, list[float]] = {"off": [], "on": []}
        texts = [row["text"] for row in rows]
        for i in range(requests):
            body = json.dumps(
                {"model": "tiny", "messages": [{"role": "user", "content": texts[i % len(texts)]}]}
            ).encode()
            for name in ("off", "on") if i % 2 else ("on", "off"):
                req = urllib.request.Request(
                    f"{gateways[name].url}/v1/chat/completions",
                    data=body,
                    headers={"Content-Type": "application/json"},
                )
                start = time.perf_counter()
                with urllib.request.urlopen(req, timeout=30) as r:
                    r.read()
                latencies[name].append(time.perf_counter() - start)
    finally:
        for gw in gateways.values():
            stop_gateway(gw)
        upstream.terminate()
        upstream.wait(10)

    def pct(values: list[float], q: float) -> float:
        return statistics.quantiles(values, n=100)[int(q) - 1] * 1000

    out = {name: {"p50_ms": pct(v, 50), "p99_ms": pct(v, 99)} for name, v in latencies.items()}
    out["added_p50_ms"] = out["on"]["p50_ms"] - out["off"]["p50_ms"]
    out["added_p99_ms"] = out["on"]["p99_ms"] - out["off"]["p99_ms"]
    return out


def main() -> None:
    import arguments  # bench/arguments.py, beside this script

    parser = arguments.parser(__doc__)
    parser.add_argument("--regions", help="comma-separated ISO 3166-1 codes (default: the set's locales)")
    parser.add_argument("--repeat", type=int, default=20, help="passes over the set for the cost")
    parser.add_argument("--gateway", action="store_true", help="also measure the gateway with/without")
    parser.add_argument("--requests", type=int, default=300, help="with --gateway: requests each way")
    parser.add_argument("--verbose", action="store_true", help="list every miss and false alarm")
    args = parser.parse_args()
    rows = load()
    regions = args.regions.split(",") if args.regions else list(REGIONS.values())
    detector = Detector(regions=regions)
    result = score(detector, rows)
    locales = sorted({r["locale"] for r in rows if r["locale"] != "mixed"})
    traps = sum(1 for r in rows if r["trap"])
    print(f"labelled set: {len(rows)} strings, {len(locales)} locales, {traps} traps; regions {regions}")
    print(f"{'entity':<12}{'tp':>6}{'fp':>6}{'fn':>6}{'precision':>11}{'recall':>8}")
    for entity, t in result["entities"].items():
        print(f"{entity:<12}{t['tp']:>6}{t['fp']:>6}{t['fn']:>6}{t['precision']:>11.3f}{t['recall']:>8.3f}")
    if args.verbose or result["misses"] or result["false_alarms"]:
        for locale, entity, value, text in result["misses"]:
            print(f"  missed {entity} [{locale}] {value!r} in {text!r}")
        for where, entity, value, text in result["false_alarms"]:
            print(f"  false {entity} [{where}] {value!r} in {text!r}")
    c = cost(detector, rows, args.repeat)
    print(
        f"redaction: {c['redact_us_per_kib']:.0f} µs/KiB (baseline regex scan {c['baseline_us_per_kib']:.1f}"
        f" µs/KiB, ratio {c['ratio']:.0f}x) over {c['kib']:.1f} KiB x {args.repeat}"
    )
    us_only = cost(Detector(regions=["US"]), rows, max(1, args.repeat // 2))
    print(f"redaction with regions [US] only: {us_only['redact_us_per_kib']:.0f} µs/KiB")
    prose = [{"text": row["text"]} for _, row in read_path(PROSE)]
    for name, d in (("the set's regions", detector), ("[US]", Detector(regions=["US"]))):
        p = cost(d, prose, max(1, args.repeat // 4))
        print(
            f"redaction of ordinary prose ({PROSE.relative_to(ROOT)}, {p['kib']:.0f} KiB), regions {name}:"
            f" {p['redact_us_per_kib']:.0f} µs/KiB (ratio {p['ratio']:.0f}x the regex scan)"
        )
    if args.gateway:
        g = gateway_latency(rows, args.requests)
        print(
            f"gateway chat, {args.requests} requests each: redaction off p50 {g['off']['p50_ms']:.2f} ms"
            f" p99 {g['off']['p99_ms']:.2f} ms; on p50 {g['on']['p50_ms']:.2f} ms p99 {g['on']['p99_ms']:.2f}"
            f" ms; added p50 {g['added_p50_ms']:+.2f} ms, p99 {g['added_p99_ms']:+.2f} ms"
        )


if __name__ == "__main__":
    main()
