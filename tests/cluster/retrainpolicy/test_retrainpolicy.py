"""RetrainPolicy on the real control plane: triggers start runs (a manual request, user feedback read
from real Prometheus, a cron schedule in real time), a winner goes out as a canary of a real
ModelDeployment reconcile (kwok pods, canary analysis on real Prometheus samples) by moving registry
aliases, a loser is recorded with the margin it lost by, and the operator killed at every point of
trigger handling and promotion never makes two runs nor half-moves an alias.

A run's TrainingJob is finished by the test (see conftest.py): no Ray here.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
from pathlib import Path

import kopf
import pytest

from llmops import registry as reg
from llmops.api import API_VERSION
from llmops.dev.cluster import LocalCluster
from llmops.operators import retrainpolicy, runtime
from llmops.operators.apply import Applier
from llmops.operators.modeldeployment import make_kind
from llmops.operators.modeldeployment.canary import PrometheusSource
from llmops.operators.modeldeployment.plan import ServingSettings
from llmops.operators.retrainpolicy.reconcile import Reconciler, Settings
from llmops.storage import LocalStore, StoreCache
from tests.cluster.modeldeployment.support import GatewayMetrics, apply, condition, deployment, get
from tests.helpers import (
    LOCAL_REGISTRY_POD_SECURITY,
    create_namespace,
    eventually,
    operator_in_thread,
    operator_process,
)

pytestmark = [pytest.mark.usefixtures("llmops_crds", "kubeconfig_env"), LOCAL_REGISTRY_POD_SECURITY]

CANARY = {
    "model": {"name": "support-bot", "alias": "challenger"},
    "weight": 50,
    "steps": [100],
    "analysis": {"intervalSeconds": 10, "maxErrorRate": 0.05, "maxLatencyRatio": 2.0},
}


def target(registry: Path) -> dict:
    """The ModelDeployment `bot`, on the champion and challenger aliases."""
    body = deployment("bot", registry, rollout={"canary": CANARY}, gateway={"replicas": 1})
    body["spec"]["model"] = {"name": "support-bot", "alias": "champion"}
    return body


def policy(name: str, registry: Path, **spec: object) -> dict:
    template = {
        "model": {"base": {"name": "support-bot", "alias": "champion"}},
        "data": {"sources": [{"uri": "s3://datasets/support/"}]},
        "method": {"type": "lora"},
        "runtime": {"type": "rayJobsAPI", "address": "http://ray-head.example:8265"},
        "output": {"registry": {"local": {"path": str(registry)}}, "modelName": "support-bot"},
    }
    return {
        "apiVersion": API_VERSION,
        "kind": "RetrainPolicy",
        "metadata": {"name": name},
        "spec": {
            "modelDeployment": "bot",
            "trainingJobTemplate": {"spec": template},
            "promotion": {
                "metrics": [{"metric": "perplexity", "greaterIsBetter": False, "minRelativeChange": 0.05}]
            },
            **spec,
        },
    }


def runs(cluster: LocalCluster, namespace: str, name: str) -> list[dict]:
    out = cluster.kubectl("get", "tj", "-n", namespace, "-l", f"llmops.io/retrainpolicy={name}", "-o", "json")
    return json.loads(out.stdout)["items"]


def finish(
    cluster: LocalCluster, namespace: str, registry: Path, tj: dict, perplexity: float, champion: float
) -> str:
    """Write what the TrainingJob operator writes after a run: a registered version, the candidate's
    perplexity and the baseline's (the champion its spec names, measured in the same run)."""
    store = LocalStore(registry)
    baseline = tj["spec"]["evaluation"]["baseline"]
    model = registry.parent / f"trained-{tj['metadata']['name']}"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text("{}")
    gates = [reg.GateVerdict(metric="perplexity", operator="<=", threshold=50, value=perplexity, passed=True)]
    version = reg.register(store, "support-bot", model, metrics={"perplexity": perplexity}, gates=gates,
                           lineage=reg.Lineage()).version  # fmt: skip
    status = {
        "phase": "Succeeded",
        "evaluation": {"perplexity": perplexity},
        "baseline": {"name": "support-bot", "version": baseline["version"],
                     "metrics": {"perplexity": champion}},
        "modelVersion": {"name": "support-bot", "version": version, "uri": str(registry)},
    }  # fmt: skip
    cluster.kubectl("patch", "tj", tj["metadata"]["name"], "-n", namespace, "--subresource=status",
                    "--type=merge", "-p", json.dumps({"status": status}))  # fmt: skip
    return version


def record(cluster: LocalCluster, namespace: str, name: str, job: str) -> dict:
    rp = get(cluster, "rp", name, namespace) or {}
    return next((r for r in (rp.get("status") or {}).get("runs", []) if r["trainingJob"] == job), {})


def start_aliases(registry: Path, version: str = "1") -> LocalStore:
    store = LocalStore(registry)
    for alias in ("champion", "challenger"):
        reg.move_alias(store, "support-bot", alias, version, by="user:test", reason="the first release")
    return store


def test_a_winner_goes_out_as_a_canary_and_a_loser_is_recorded_with_its_margin(
    cluster: LocalCluster, namespace: str, registry: Path, prometheus: tuple[str, GatewayMetrics]
) -> None:
    url, traffic = prometheus
    store = start_aliases(registry)
    serving = ServingSettings(
        prometheus_url=url, resync_seconds=600, scrape_interval="1s", alias_poll_seconds=2
    )
    kinds = [
        make_kind(serving, PrometheusSource(url)),
        retrainpolicy.make_kind(Reconciler(Settings(evaluate_every=2, prometheus_url=url))),
    ]
    with operator_in_thread(namespace, kinds):
        apply(cluster, namespace, target(registry))
        eventually(
            lambda: condition(get(cluster, "md", "bot", namespace), "Ready").get("status") == "True", 90
        )
        apply(cluster, namespace, policy("fresh", registry))
        eventually(
            lambda: (
                (get(cluster, "rp", "fresh", namespace) or {}).get("status", {}).get("phase") == "Watching"
            )
        )

        # A person asks for a run (the requester stamped here by hand, as the admission webhook would).
        cluster.kubectl("annotate", "rp", "fresh", "-n", namespace, "retrain.llmops.io/requested=first",
                        "llmops.io/requested-by=alice")  # fmt: skip
        (tj,) = eventually(lambda: runs(cluster, namespace, "fresh") or None, 30)
        assert tj["metadata"]["annotations"]["retrain.llmops.io/trigger"] == "manual"
        assert tj["metadata"]["annotations"]["llmops.io/requested-by"] == "alice"  # the run's records say so
        assert tj["spec"]["evaluation"]["baseline"] == {"name": "support-bot", "version": "1"}
        assert tj["metadata"]["ownerReferences"][0]["kind"] == "RetrainPolicy"

        # It trains (here: the test writes its result), beats the champion, and goes out as a canary.
        traffic.set("1")
        version = finish(cluster, namespace, registry, tj, perplexity=9.0, champion=10.0)
        traffic.set(version)
        job = tj["metadata"]["name"]
        eventually(lambda: record(cluster, namespace, "fresh", job).get("verdict") == "Canary", 60)
        assert reg.read_alias(store, "support-bot", "challenger").version == version
        eventually(lambda: (get(cluster, "md", "bot", namespace) or {}).get("status", {}).get("canary", {})
                   .get("version") == version, 60)  # fmt: skip
        # The canary passes its steps on real Prometheus samples; the champion moves.
        eventually(lambda: record(cluster, namespace, "fresh", job).get("verdict") == "Promoted", 240)
        assert reg.read_alias(store, "support-bot", "champion").version == version
        rp = get(cluster, "rp", "fresh", namespace)
        assert rp["status"]["lastPromotedVersion"] == version
        (row,) = record(cluster, namespace, "fresh", job)["comparison"]
        assert (row["metric"], row["candidate"], row["champion"], row["passed"]) == (
            "perplexity",
            9.0,
            10.0,
            True,
        )
        history = reg.alias_history(store, "support-bot")
        by_policy = [
            (m.alias, m.previous, m.version) for m in history if m.by == f"retrainpolicy/{namespace}/fresh"
        ]
        assert by_policy == [("challenger", "1", version), ("champion", "1", version)]
        # The deployment serves the new version alone once it re-resolved champion.
        eventually(lambda: [v["version"] for v in get(cluster, "md", "bot", namespace)["status"]["versions"]
                            if v["role"] == "stable"] == [version], 60)  # fmt: skip

        # A second run that does worse than the new champion: recorded, not promoted.
        cluster.kubectl("annotate", "rp", "fresh", "-n", namespace, "retrain.llmops.io/requested=second",
                        "--overwrite")  # fmt: skip
        second = eventually(lambda: next((t for t in runs(cluster, namespace, "fresh")
                                          if t["metadata"]["name"] != job), None), 30)  # fmt: skip
        assert second["spec"]["evaluation"]["baseline"]["version"] == version
        worse = finish(cluster, namespace, registry, second, perplexity=8.9, champion=9.0)  # 1.1% better
        lost = eventually(lambda: (r := record(cluster, namespace, "fresh", second["metadata"]["name"]))
                          .get("verdict") == "Lost" and r, 30)  # fmt: skip
        assert f"version {worse} lost to champion {version}" in lost["message"]
        assert "1.11%, less than 5.00%" in lost["message"], lost
        assert reg.read_alias(store, "support-bot", "champion").version == version
        assert len(reg.alias_history(store, "support-bot")) == len(history)


def test_negative_feedback_in_prometheus_fires_the_feedback_trigger_once(
    cluster: LocalCluster, namespace: str, registry: Path, prometheus: tuple[str, GatewayMetrics]
) -> None:
    url, traffic = prometheus
    start_aliases(registry)
    feedback = {"name": "thumbs", "maxNegativeRatio": 0.3, "minCount": 5, "windowSeconds": 120}
    body = policy("rated", registry, triggers={"feedback": feedback}, cooldownSeconds=3600)
    with operator_in_thread(namespace, [retrainpolicy.make_kind(Reconciler(Settings(2, url)))]):
        apply(cluster, namespace, target(registry))
        apply(cluster, namespace, body)

        def trigger() -> dict:
            rp = get(cluster, "rp", "rated", namespace) or {}
            return next((t for t in rp.get("status", {}).get("triggers", []) if t["type"] == "feedback"), {})

        # The series exist at 0 before the first rating, as the gateway's do (increase() cannot see
        # what a series held at its first sample).
        for sentiment in ("positive", "negative"):
            traffic.feedback.labels("1", "thumbs", sentiment)
        scraped = PrometheusSource(url).query
        eventually(lambda: scraped('count(llmops_gateway_feedback_total{name="thumbs"})') == 2, 60)
        # Mostly positive: not firing, and status says why.
        traffic.feedback.labels("1", "thumbs", "positive").inc(8)
        traffic.feedback.labels("1", "thumbs", "negative").inc(1)
        eventually(lambda: "at or below 0.3" in trigger().get("message", ""), 60)
        assert runs(cluster, namespace, "rated") == []
        # Users turn: 9 more thumbs down.
        traffic.feedback.labels("1", "thumbs", "negative").inc(9)
        (tj,) = eventually(lambda: runs(cluster, namespace, "rated") or None, 60)
        annotations = tj["metadata"]["annotations"]
        assert annotations["retrain.llmops.io/trigger"] == "feedback"
        assert float(annotations["retrain.llmops.io/trigger-value"]) > 0.3
        rp = get(cluster, "rp", "rated", namespace)
        assert rp["status"]["lastTrigger"].startswith("feedback at ")
        assert "negative share" in rp["status"]["lastTrigger"]

        # Still firing, but the cooldown holds (and the run is active): no second run.
        def message() -> str:
            return (get(cluster, "rp", "rated", namespace) or {}).get("status", {}).get("message", "")

        eventually(lambda: "feedback fired during the cooldown" in message(), 30)
        assert len(runs(cluster, namespace, "rated")) == 1


def test_a_cron_schedule_starts_one_run_per_tick_in_real_time(
    cluster: LocalCluster, namespace: str, registry: Path
) -> None:
    start_aliases(registry)
    body = policy(
        "nightly", registry, triggers={"schedule": {"cron": "* * * * *"}}, concurrencyPolicy="Allow"
    )
    with operator_in_thread(
        namespace, [retrainpolicy.make_kind(Reconciler(Settings(30, "http://127.0.0.1:9")))]
    ):
        apply(cluster, namespace, target(registry))
        apply(cluster, namespace, body)
        (tj,) = eventually(lambda: runs(cluster, namespace, "nightly") or None, 90)
        scheduled = tj["metadata"]["annotations"]["retrain.llmops.io/scheduled-time"]
        at = dt.datetime.fromisoformat(scheduled)
        assert at.second == 0 and tj["metadata"]["name"] == f"nightly-{int(at.timestamp()) // 60}"
        rp = get(cluster, "rp", "nightly", namespace)
        assert dt.datetime.fromisoformat(rp["status"]["lastScheduleTime"].replace("Z", "+00:00")) == at
        (schedule,) = [t for t in rp["status"]["triggers"] if t["type"] == "schedule"]
        assert dt.datetime.fromisoformat(schedule["nextTime"].replace("Z", "+00:00")) == at + dt.timedelta(
            minutes=1
        )


# -- crash safety --------------------------------------------------------------------------------


class Crash(BaseException):
    """The operator process dying: nothing after this point of the reconcile happens (not even the
    runtime's error handling, which catches Exception only)."""


class Faults:
    """Counts the reconcile's side effects (creates, deletes, status writes, registry writes) and
    crashes before the one numbered `at` (None: never)."""

    def __init__(self, at: int | None) -> None:
        self.at, self.seen = at, 0

    def tick(self) -> None:
        self.seen += 1
        if self.at is not None and self.seen == self.at:
            raise Crash(f"crash before side effect {self.seen}")


class CrashingApplier(Applier):
    def __init__(self, kube, faults: Faults) -> None:
        super().__init__(kube)
        self.faults = faults

    def create(self, manifest: dict) -> bool:
        self.faults.tick()
        return super().create(manifest)

    def delete(self, *args, **kwargs) -> bool:
        self.faults.tick()
        return super().delete(*args, **kwargs)

    def patch_status(self, *args, **kwargs) -> dict:
        self.faults.tick()
        return super().patch_status(*args, **kwargs)


class CrashingStore(LocalStore):
    def __init__(self, root: Path, faults: Faults) -> None:
        super().__init__(root)
        self.faults = faults

    def put_bytes(self, key: str, data: bytes, *, overwrite: bool = True) -> None:
        self.faults.tick()
        super().put_bytes(key, data, overwrite=overwrite)


class CrashingStores(StoreCache):
    def __init__(self, root: Path, faults: Faults) -> None:
        super().__init__()
        self.store = CrashingStore(root, faults)

    def open(self, location, credentials=None):
        return self.store


def test_the_operator_killed_at_every_point_never_makes_two_runs_nor_half_moves_an_alias(
    cluster: LocalCluster,
    kube: object,
    namespace: str,
    registry: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """One scheduled tick, then its run's promotion, driven by reconciles on the real apiserver with a
    clock the test sets; the operator dies before its k-th side effect, for every k, and a restarted
    one (reconciles without faults) finishes the work. The deployment's canary verdict is written by
    the test, as the ModelDeployment operator writes it (its own canary is tested above)."""
    monkeypatch.setattr(runtime.Context, "event", lambda self, *a, **k: None)
    # Tomorrow's 03:00, on a clock the test sets: after the objects' creation, as in real life.
    tomorrow = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    tick = tomorrow.replace(hour=3, minute=0, second=0, microsecond=0)
    reconciler = Reconciler(Settings(60, "http://127.0.0.1:9"), clock=lambda: tick + dt.timedelta(seconds=20))
    kind = retrainpolicy.make_kind(reconciler)
    plain = Applier(kube)

    def scenario(faults: Faults, ns: str, root: Path) -> str:
        applier, stores = CrashingApplier(kube, faults), CrashingStores(root, faults)

        def reconcile() -> None:
            obj = plain.get(API_VERSION, "RetrainPolicy", "fresh", ns)
            patch = kopf.Patch()
            runtime.reconcile(kind, obj, applier, logging.getLogger("crash"), patch, stores)
            applier.patch_status(API_VERSION, "RetrainPolicy", "fresh", ns, dict(patch.status))

        def survive(times: int = 1) -> None:
            for _ in range(times):
                try:
                    reconcile()
                except Crash:
                    faults.at = None  # the restarted operator runs without faults
                    reconcile()

        survive()  # the tick: one run
        (tj,) = runs(cluster, ns, "fresh")
        version = finish(cluster, ns, root, tj, perplexity=9.0, champion=10.0)
        survive()  # compared, won: the challenger moves
        canary = {"canary": {"weight": 100, "verdict": "Promoted", "version": version, "step": 1}}
        plain.patch_status(API_VERSION, "ModelDeployment", "bot", ns, canary)
        survive(2)  # the canary passed: the champion moves; then nothing more happens
        return version

    clean: int | None = None
    for at in [None, *range(1, 40)]:
        ns = namespace if at is None else f"{namespace}-{at}"
        if at is not None:
            create_namespace(cluster, ns, LOCAL_REGISTRY_POD_SECURITY.args[0])
        root = tmp_path / f"registry-{at}"
        shutil.copytree(registry, root)
        start_aliases(root)
        apply(cluster, ns, target(root))
        apply(cluster, ns, policy("fresh", root, triggers={"schedule": {"cron": "0 3 * * *"}}))
        faults = Faults(at)
        try:
            version = scenario(faults, ns, root)
            store = LocalStore(root)
            names = [t["metadata"]["name"] for t in runs(cluster, ns, "fresh")]
            assert names == [f"fresh-{int(tick.timestamp()) // 60}"], (at, names)
            moves = [
                (m.alias, m.previous, m.version)
                for m in reg.alias_history(store, "support-bot")
                if m.by == f"retrainpolicy/{ns}/fresh"
            ]
            assert moves == [("challenger", "1", version), ("champion", "1", version)], (at, moves)
            for alias in ("champion", "challenger"):
                pointer = reg.read_alias(store, "support-bot", alias)
                last = reg.alias_history(store, "support-bot", alias)[-1]
                assert pointer is not None and (pointer.version, pointer.move_id) == (
                    last.version,
                    last.move_id,
                )
            status = get(cluster, "rp", "fresh", ns)["status"]
            assert [r["verdict"] for r in status["runs"]] == ["Promoted"], (at, status["runs"])
        finally:
            if at is not None:
                cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
        if at is None:
            clean = faults.seen
        elif clean is not None and at >= clean:
            break  # every side effect of the clean run has been a crash point
    assert clean is not None and clean >= 8, clean
    print(
        f"crashed before each of the {clean} side effects of one tick and its promotion:"
        " one run, no half move"
    )


def test_a_stalled_policy_heals_by_itself_once_its_deployment_exists(
    cluster: LocalCluster, namespace: str, registry: Path
) -> None:
    """Stalled is not the end: a policy created before its ModelDeployment says so (DeploymentNotFound)
    and, with no change to the policy, goes Watching once the deployment exists (the operator reads
    the target again after STALLED_RETRY_SECONDS, 60 s)."""

    def ready(reason: str) -> bool:
        return condition(get(cluster, "rp", "early", namespace), "Ready").get("reason") == reason

    with operator_process(cluster, namespace):
        apply(cluster, namespace, policy("early", registry, promotion={"enabled": False, "metrics": []}))
        eventually(lambda: ready("DeploymentNotFound"), timeout=60)
        apply(cluster, namespace, deployment("bot", registry, gateway={"replicas": 1}))
        eventually(lambda: ready("Watching"), timeout=150)
