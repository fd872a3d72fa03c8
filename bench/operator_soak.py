"""The operator under churn for a long time, on a real local control plane (kwok makes the pods Ready).

N ModelDeployments (default 300) are created and left to become Ready; then, for `--minutes`
(default 30), the bench keeps changing them at `--rate` operations per second: updates of the spec
(CPU request, replica bounds, gateway replicas: each a new generation and a rolled child Deployment),
deletions, and creations of new objects in their place, so the count stays at N. At the end it waits
until every object has converged, lets the operator settle, and prints:

- the operator's RSS at the start (every object Ready, before the churn) and at the end, with the
  growth between them (goal: under 10%) and the samples taken every 30 s in between;
- reconcile latency percentiles (p50/p95/p99, nearest-rank): from the moment the bench's write
  returns to the first status the bench's watch sees with Ready=True at the written generation
  (`observedGeneration`). This includes the controllers' part of the way to Ready (the Deployment
  rollout by kube-controller-manager, the scheduler, kwok), the same for every sample;
- how long deletions took to be gone (the finalizer released).

Not in CI (30 minutes). Run it niced on a shared machine:

    nice -n 10 python bench/operator_soak.py [--objects 300] [--minutes 30] [--rate 2] [--seed 0]
"""

from __future__ import annotations

import math
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from kubernetes import client, config

sys.path.insert(0, str(Path(__file__).resolve().parent))
from procfs import rss_mib  # bench/procfs.py, beside this script
from reconcile_scale import PLURAL, PODS_PER_OBJECT, ROOT, Tally, create_all, spec

from llmops.api import GROUP, MODEL_DEPLOYMENT, VERSION
from llmops.dev.cluster import DEFAULT_NODES, FakeNode, LocalCluster
from llmops.registry import GateVerdict, Lineage, register
from llmops.storage import LocalStore

NAMESPACE = "soak"


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (the smallest value with at least p% of the samples at or below it)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] if ordered else float("nan")


def ready_generation(obj: dict) -> int | None:
    """The generation a Ready=True condition was observed at, or None."""
    for c in (obj.get("status") or {}).get("conditions", []):
        if c.get("type") == "Ready" and c.get("status") == "True":
            return c.get("observedGeneration")
    return None


class Tracker:
    """Times each write of the ModelDeployments until Ready at its generation, and each deletion until
    the object is gone, from a watch of them (reconcile_scale.Tally: listed in pages, then watched,
    listed again when expired; an object gone while the watch was away counts as gone at the relist)."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self.lock = threading.Lock()
        self.pending: dict[str, tuple[int, float, str]] = {}  # name -> (generation, t0, op)
        self.deleting: dict[str, float] = {}
        self.latencies: dict[str, list[float]] = {"create": [], "update": []}
        self.deletions: list[float] = []
        api = client.CustomObjectsApi(api_client)
        self.tally = Tally(api, (GROUP, VERSION, PLURAL), NAMESPACE, ready_generation, self._changed)

    def expect(self, name: str, generation: int, t0: float, op: str) -> None:
        with self.lock:
            self.pending[name] = (generation, t0, op)
            self._check(name, self.tally.seen.get(name), time.perf_counter())

    def expect_gone(self, name: str, t0: float) -> None:
        with self.lock:
            self.pending.pop(name, None)
            self.deleting[name] = t0

    def _check(self, name: str, generation: int | None, now: float) -> None:
        want = self.pending.get(name)
        if want and generation is not None and generation >= want[0]:
            self.latencies[want[2]].append(now - want[1])
            del self.pending[name]

    def _changed(self, name: str, generation: int | None, gone: bool) -> None:
        now = time.perf_counter()
        with self.lock:
            if not gone:
                self._check(name, generation, now)
            elif name in self.deleting:
                self.deletions.append(now - self.deleting.pop(name))

    def outstanding(self) -> int:
        """Writes not yet Ready and deletions not yet gone; raises what ended the watch, if anything."""
        self.tally.existing()
        with self.lock:
            return len(self.pending) + len(self.deleting)

    def stop(self) -> None:
        self.tally.stop()


def body(name: str, registry: Path, rng: random.Random | None = None) -> dict:
    s = spec(registry)
    if rng is not None:
        mutate(s, rng)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": s,
    }


def mutate(s: dict, rng: random.Random) -> None:
    """A spec change that the operator must roll out: one of three fields, to a new value."""
    field = rng.choice(["cpu", "replicas", "gateway"])
    if field == "cpu":
        s["resources"]["cpu"] = rng.choice(
            [m for m in ("100m", "150m", "200m", "250m") if m != s["resources"]["cpu"]]
        )
    elif field == "replicas":
        s["autoscaling"]["maxReplicas"] = rng.choice(
            [n for n in (3, 4, 5, 6) if n != s["autoscaling"]["maxReplicas"]]
        )
    else:
        s["gateway"]["replicas"] = 2 if s["gateway"]["replicas"] == 1 else 1


def main() -> None:
    import arguments  # bench/arguments.py, beside this script

    parser = arguments.parser(__doc__)
    parser.add_argument("--objects", type=int, default=300, help="ModelDeployments kept alive")
    parser.add_argument("--minutes", type=float, default=30, help="minutes of churn")
    parser.add_argument("--rate", type=float, default=2.0, help="churn operations per second")
    parser.add_argument("--seed", type=int, default=0, help="seed of the churn (a run replays)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait for convergence")
    args = parser.parse_args()
    n, rng = args.objects, random.Random(args.seed)
    print(
        f"seed {args.seed}: {n} ModelDeployments, {args.minutes:g} min of churn at {args.rate:g} ops/s",
        flush=True,
    )
    # Room for every pod, gateways at 2 replicas included: 110 pods per kwok node.
    extra = [FakeNode(f"kwok-soak-{i}", cpu="64", memory="256Gi") for i in range(3 * n // 100 + 1)]

    with tempfile.TemporaryDirectory(prefix="llmops-soak-") as tmp:
        registry, model = Path(tmp) / "registry", Path(tmp) / "model"
        model.mkdir()
        (model / "config.json").write_text("{}")
        gates = [GateVerdict(metric="accuracy", operator=">=", threshold=0, value=1, passed=True)]
        register(LocalStore(registry), "bench", model, metrics={}, gates=gates, lineage=Lineage())

        cluster = LocalCluster(Path(tmp) / "cluster", nodes=(*DEFAULT_NODES, *extra), tie_to_parent=True)
        cluster.start()
        proc = log = tracker = None
        try:
            cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
            cluster.wait_established(f"crd/{MODEL_DEPLOYMENT.crd_name}")
            cluster.kubectl("create", "namespace", NAMESPACE)
            api_client = config.new_client_from_config(config_file=str(cluster.kubeconfig))
            api = client.CustomObjectsApi(api_client)
            tracker = Tracker(config.new_client_from_config(config_file=str(cluster.kubeconfig)))

            log = open(Path(tmp) / "operator.log", "w")  # noqa: SIM115 - closed below
            proc = subprocess.Popen(
                [sys.executable, "-m", "llmops.cli", "operator", "--namespace", NAMESPACE,
                 "--metrics-port", "0", "--health-port", "0"],
                env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)},
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

            def converge(what: str) -> None:
                deadline = time.monotonic() + args.timeout
                while tracker.outstanding():
                    if proc.poll() is not None:
                        raise SystemExit(f"the operator exited ({proc.returncode}) while waiting for {what}")
                    if time.monotonic() > deadline:
                        raise SystemExit(f"{what}: {tracker.outstanding()} objects did not converge")
                    time.sleep(1)

            # The start: every object created and Ready, before any churn.
            names = [f"soak-{i:05d}" for i in range(n)]
            specs = {name: spec(registry) for name in names}
            t0 = time.perf_counter()
            for created in create_all(api, NAMESPACE, [body(name, registry) for name in names]):
                tracker.expect(created["metadata"]["name"], created["metadata"]["generation"], t0, "create")
            converge("the first objects")
            first = sorted(tracker.latencies.pop("create"))
            tracker.latencies["create"] = []
            print(f"all {n} Ready after {first[-1]:.0f} s (cold start, not in the percentiles)", flush=True)
            time.sleep(10)
            rss_start, _ = rss_mib(proc.pid)
            print(f"operator RSS at the start: {rss_start:.1f} MiB", flush=True)

            # The churn.
            counts = {"create": 0, "update": 0, "delete": 0}
            samples: list[tuple[float, float]] = []
            begin = time.monotonic()
            end, next_sample, next_op = begin + args.minutes * 60, begin + 30, begin
            serial = n
            while (now := time.monotonic()) < end:
                if proc.poll() is not None:
                    raise SystemExit(f"the operator exited ({proc.returncode}) during the churn")
                tracker.outstanding()  # raises what ended the bench's watch: the churn would idle
                if now >= next_sample:
                    samples.append(((now - begin) / 60, rss_mib(proc.pid)[0]))
                    next_sample += 30
                if now < next_op:
                    time.sleep(min(next_op, next_sample) - now)
                    continue
                next_op += 1 / args.rate
                with tracker.lock:
                    busy = set(tracker.pending) | set(tracker.deleting)
                idle = [name for name in specs if name not in busy]
                if not idle:
                    continue
                name = rng.choice(idle)
                if rng.random() < 0.8:  # an update
                    mutate(specs[name], rng)
                    t0 = time.perf_counter()
                    got = api.patch_namespaced_custom_object(
                        GROUP, VERSION, NAMESPACE, PLURAL, name, {"spec": specs[name]}
                    )
                    tracker.expect(name, got["metadata"]["generation"], t0, "update")
                    counts["update"] += 1
                else:  # a deletion, and a new object in its place
                    tracker.expect_gone(name, time.perf_counter())
                    api.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name)
                    del specs[name]
                    counts["delete"] += 1
                    new = f"soak-{serial:05d}"
                    serial += 1
                    specs[new] = spec(registry)
                    t0 = time.perf_counter()
                    got = api.create_namespaced_custom_object(
                        GROUP, VERSION, NAMESPACE, PLURAL, body(new, registry)
                    )
                    tracker.expect(new, got["metadata"]["generation"], t0, "create")
                    counts["create"] += 1
            converge("the last changes")
            time.sleep(10)
            rss_end, peak = rss_mib(proc.pid)
        finally:
            if tracker:
                tracker.stop()
            if proc and proc.poll() is None:
                proc.terminate()
                proc.wait(60)
            if log:
                log.close()
            cluster.stop(remove=True)

    updates, creates = tracker.latencies["update"], tracker.latencies["create"]
    both = updates + creates
    print(
        f"objects: {n} ModelDeployments, {PODS_PER_OBJECT}+ pods each; "
        f"churn {args.minutes:g} min, seed {args.seed}"
    )
    print(f"operations: {counts['update']} updates, {counts['delete']} deletes, {counts['create']} creates")
    for label, values in (("update", updates), ("create", creates), ("all", both)):
        print(
            f"reconcile latency to Ready ({label}, {len(values)} samples): "
            f"p50 {percentile(values, 50):.2f} s, p95 {percentile(values, 95):.2f} s, "
            f"p99 {percentile(values, 99):.2f} s, max {max(values, default=0):.2f} s"
        )
    dels = tracker.deletions
    print(
        f"deletion to gone ({len(dels)}): p50 {percentile(dels, 50):.2f} s, p99 {percentile(dels, 99):.2f} s"
    )
    print("operator RSS every 30 s (min: MiB): " + ", ".join(f"{m:.1f}: {r:.0f}" for m, r in samples))
    growth = (rss_end - rss_start) / rss_start * 100
    print(
        f"operator RSS: start {rss_start:.1f} MiB, end {rss_end:.1f} MiB, "
        f"growth {growth:+.1f}% (goal < 10%), peak {peak:.1f} MiB"
    )


if __name__ == "__main__":
    main()
