"""Issue 17, point 1: `llmops operator` (the real process, every kind) killed with SIGKILL at random
moments while it reconciles a mixed fleet on the real control plane: ModelDeployments created, given
canaries that step and promote on real Prometheus samples, new versions, autoscalers, deleted;
TrainingJobs run and deleted; RetrainPolicies asked for runs and deleted; ModelRetirements archiving
into MinIO. Afterwards every object reaches Ready or its terminal state, with 0 duplicate children,
0 orphans, 0 duplicate Ray submissions and 0 duplicate model versions (tests/reliability/fleet.py
says what each kind fakes: no kubelet, no Ray).

The kill times and the order of the changes come from a seed that is printed; set
LLMOPS_KILL_SEED=<n> to replay a run (the machine's timing aside). The CI-sized run is
`test_killed_at_random_moments`; the full size (>= 200 objects, 5 kills, 3 seeds) carries `long`.

And the targeted case: killed between applying a new child and writing the status, the spec then
changed so that the child is no longer wanted, started again: the child is deleted
(llmops/operators/apply.py `write_ahead`). The kill lands at that moment deterministically through
the operator's one fault-injection hook, $LLMOPS_FAULT_STOP_AFTER_APPLY: the process stops itself
right after the apiserver accepted that child, and the test sends SIGKILL to the stopped process.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmops import registry as reg
from llmops.api.common import ObjectStorageLocation
from llmops.dev import services
from llmops.dev.cluster import LocalCluster, free_port
from llmops.operators.modeldeployment.names import vllm_name
from llmops.registry import GateVerdict, Lineage, register
from llmops.storage import Credentials, LocalStore, ObjectStore, open_store
from tests.cluster.modeldeployment.conftest import registry
from tests.cluster.modeldeployment.support import (
    PROMETHEUS,
    GatewayMetrics,
    apply,
    condition,
    deployment,
    get,
)
from tests.cluster.modelretirement.conftest import archive
from tests.helpers import LOCAL_REGISTRY_POD_SECURITY, eventually, http_get, operator_process
from tests.reliability.fleet import MODEL, S3_MODEL, Fleet, KubeRay, Sizes, prometheus_config, wait_for

__all__ = ["archive", "registry"]

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("llmops_crds"), LOCAL_REGISTRY_POD_SECURITY]

CI = Sizes(
    deployments=24, canaries=4, bumps=4, autoscaled=4, deleted_deployments=3,
    training_jobs=5, deleted_training_jobs=1, policies=4, deleted_policies=1, retirements=5, kills=2,
)  # fmt: skip
FULL = Sizes(
    deployments=120, canaries=20, bumps=20, autoscaled=20, deleted_deployments=12,
    training_jobs=30, deleted_training_jobs=5, policies=24, deleted_policies=4, retirements=25, kills=5,
)  # fmt: skip


def log_lines_about(cluster: LocalCluster, namespace: str, names: list[str], most: int = 60) -> str:
    """The last `most` lines of this test's operator logs (one per process, in order) that name one of
    `names` (a child's name begins with its parent's), and the last 20 that report an error: a failure
    in CI says what the operators did and saw (the cluster's folder, with the logs, is removed at the
    end of the session)."""
    logs = sorted(cluster.logs.glob(f"operator-{namespace}*.log"), key=lambda p: p.stat().st_mtime)
    named = re.compile("|".join(rf"\b{re.escape(n)}(?!\d)" for n in names) or "(?!)")
    lines = [(log.name, line) for log in logs for line in log.read_text(errors="replace").splitlines()]
    about = [f"{log}: {line}" for log, line in lines if named.search(line)]
    errors = [f"{log}: {line}" for log, line in lines if "Error" in line and not named.search(line)]
    return "\n".join(["operator log lines naming them:", *about[-most:], "errors:", *errors[-20:]])


def pending_names(left: list[str]) -> list[str]:
    """The objects named in `Fleet.pending`'s lines: `md md-001: ...`, `rp rp-000: ...`, and an orphan's
    `orphan apps/v1/Deployment/md-001-gateway (owner ...)`, by its own name."""
    return [what.split()[1].rstrip(":").rsplit("/", 1)[-1] for what in left]


def seed_of(index: int) -> int:
    """The run's seed: $LLMOPS_KILL_SEED (plus `index` for the runs after the first), else a fresh one."""
    if os.environ.get("LLMOPS_KILL_SEED"):
        return int(os.environ["LLMOPS_KILL_SEED"]) + index
    return random.SystemRandom().randrange(1, 2**31)


@pytest.fixture
def env(cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator process's settings: quick alias polls and evaluations, no resync flood."""
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    monkeypatch.setenv("LLMOPS_SCRAPE_INTERVAL", "1s")
    monkeypatch.setenv("LLMOPS_RESYNC_SECONDS", "600")
    monkeypatch.setenv("LLMOPS_RETRAIN_EVALUATION_SECONDS", "5")
    monkeypatch.delenv("LLMOPS_FAULT_STOP_AFTER_APPLY", raising=False)


@pytest.fixture
def more_nodes(cluster: LocalCluster) -> Iterator[list[str]]:
    """Two more kwok nodes (64 CPUs, 110 pods each) for the full size: a ModelDeployment's pods ask for
    0.75 CPU (the model fetch's init container 0.5, the gateway 0.25), and the cluster's two CPU nodes
    hold about 85 deployments. Deleted afterwards."""
    import yaml

    from llmops.dev.cluster import FakeNode

    names = [f"kwok-kill-{i}" for i in range(2)]
    for name in names:
        node = FakeNode(name, cpu="64", memory="256Gi")
        cluster.kubectl("create", "-f", "-", input=yaml.safe_dump(node.manifest()))
    try:
        yield names
    finally:
        for name in names:
            cluster.kubectl("delete", "node", name, "--wait=false", check=False)


@pytest.fixture
def s3_registry(cluster: LocalCluster, namespace: str) -> tuple[dict, Credentials, ObjectStore]:
    """A registry in the session's MinIO (a prefix of the bucket `llmops`) with `tiny` version 1, its
    credentials in the Secret `registry-credentials`: TrainingJobs (kuberay) take only object storage."""
    minio = services.start_minio(cluster)
    cluster.kubectl(
        "create", "secret", "generic", "registry-credentials", "-n", namespace,
        f"--from-literal=AWS_ACCESS_KEY_ID={minio['accessKeyId']}",
        f"--from-literal=AWS_SECRET_ACCESS_KEY={minio['secretAccessKey']}",
    )  # fmt: skip
    location = {
        "s3": {
            "endpoint": minio["endpoint"],
            "bucket": "llmops",
            "prefix": f"{namespace}-{uuid.uuid4().hex[:6]}/",
            "credentialsSecretRef": {"name": "registry-credentials"},
        }
    }
    credentials = Credentials(minio["accessKeyId"], minio["secretAccessKey"])
    store = open_store(ObjectStorageLocation.model_validate(location), credentials)
    return location, credentials, store


def tiny_version(store: ObjectStore, tmp_path: Path, name: str) -> None:
    model = tmp_path / f"{name}-model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text("{}")
    gates = [GateVerdict(metric="accuracy", operator=">=", threshold=0.5, value=0.9, passed=True)]
    register(store, name, model, metrics={"accuracy": 0.9}, gates=gates, lineage=Lineage())


@contextlib.contextmanager
def prometheus(tmp_path: Path, namespace: str, deployments: list[str]):
    """A real Prometheus scraping a gateway-shaped exporter once per canary deployment; versions 1 and
    2 serve without errors (so canaries promote), at the same latency."""
    exporter = GatewayMetrics()
    for version in ("1", "2", "3"):
        exporter.set(version, error_ratio=0.0, latency=0.3)
    port = free_port()
    config = tmp_path / "prometheus.yml"
    prometheus_config(config, namespace, exporter.port, deployments or ["none"])
    log = open(tmp_path / "prometheus.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
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
        log.close()
        exporter.close()


def churn(
    cluster: LocalCluster,
    namespace: str,
    api_client,
    registry: Path,
    s3: tuple,
    archive: dict,
    tmp_path: Path,
    sizes: Sizes,
    seed: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One run: the fleet's three waves of changes while the operator is killed `sizes.kills` times at
    moments drawn from `seed`; then one operator that is left alone until everything has converged;
    then the counts."""
    location, credentials, s3_store = s3
    tiny_version(s3_store, tmp_path, S3_MODEL)
    local = LocalStore(registry)
    for i in range(sizes.retirements):  # versions 4.. (1-3 are served): what the retirements retire
        folder = tmp_path / f"retire-{i}"
        folder.mkdir()
        tiny_version(local, folder, MODEL)
    fleet = Fleet(sizes, seed, namespace, api_client, registry, location, credentials, archive)
    fleet.versions_before["local"] = reg.versions(local, MODEL)
    waves = fleet.waves()
    span = 40.0 + 0.5 * sizes.objects  # the churn's length, about; kills fall inside it
    kill_at = fleet.kill_times(span)
    print(
        f"\nseed {seed} (LLMOPS_KILL_SEED={seed} replays it): {sizes.objects} objects of 4 kinds,"
        f" {sum(len(w) for w in waves)} changes in 3 waves, kills at {[round(t, 1) for t in kill_at]} s"
    )
    started = time.monotonic()
    kills: list[str] = []
    stop = threading.Event()

    def killer() -> None:
        for at in kill_at:
            with operator_process(cluster, namespace) as op:
                while time.monotonic() - started < at and not stop.is_set():
                    time.sleep(0.05)
                op["proc"].send_signal(signal.SIGKILL)
                op["proc"].wait(30)
                kills.append(f"{time.monotonic() - started:.1f}s")

    with prometheus(tmp_path, namespace, fleet.canaries) as url, KubeRay(fleet) as kuberay:
        monkeypatch.setenv("LLMOPS_PROMETHEUS_URL", url)
        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        for wave in waves:
            for _, change in wave:
                change()
            time.sleep(span / 4)
        thread.join(span + 300)
        stop.set()
        assert len(kills) == sizes.kills, kills
        with operator_process(cluster, namespace):
            left = wait_for(fleet.pending, timeout=240 + 2 * sizes.objects)
            converged = time.monotonic() - started
            duplicates = fleet.duplicates()
            orphans = fleet.orphans()
            children = len(fleet.children())
    counts = {k: len(v) for k, v in duplicates.items()}
    print(
        f"seed {seed}: {sizes.objects} objects (+{len(fleet.policies) + sizes.deleted_policies} runs),"
        f" {len(kills)} kills at {kills}, converged in {converged:.0f} s; {children} children;"
        f" {len(kuberay.finished)} RayJobs played; duplicates {counts}; orphans {len(orphans)}"
    )
    if left:  # what the operators said about the objects that did not converge, for the CI log
        print(log_lines_about(cluster, namespace, pending_names(left[:20])))
    assert not left, f"not converged (seed {seed}): {left[:20]}"
    assert duplicates == {k: [] for k in duplicates}, f"seed {seed}: {duplicates}"
    assert orphans == [], f"seed {seed}: {orphans}"


@pytest.mark.usefixtures("env")
def test_killed_at_random_moments(
    cluster: LocalCluster,
    namespace: str,
    api_client,
    registry: Path,
    s3_registry: tuple,
    archive: dict,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The CI size: about 40 objects of the four kinds, 2 kills, 1 seed."""
    churn(
        cluster, namespace, api_client, registry, s3_registry, archive, tmp_path, CI, seed_of(0), monkeypatch
    )


@pytest.mark.long
@pytest.mark.parametrize("index", [0, 1, 2])
@pytest.mark.usefixtures("env", "more_nodes")
def test_killed_at_random_moments_full_size(
    cluster: LocalCluster,
    namespace: str,
    api_client,
    registry: Path,
    s3_registry: tuple,
    archive: dict,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    index: int,
) -> None:
    """The full size: over 200 objects of the four kinds, 5 kills, 3 seeds."""
    churn(
        cluster, namespace, api_client, registry, s3_registry, archive, tmp_path, FULL, seed_of(index),
        monkeypatch,
    )  # fmt: skip


# -- the targeted case ------------------------------------------------------------------------------


def stopped(pid: int) -> bool:
    """Whether the process is stopped (SIGSTOP): state T in /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "T"


@pytest.mark.usefixtures("env")
def test_a_child_applied_before_a_kill_and_unwanted_after_is_deleted(
    cluster: LocalCluster, namespace: str, registry: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The canary's vLLM Deployment is applied, the operator is killed before any status write of that
    reconcile, the canary is taken out of the spec, the operator starts again: the Deployment goes."""
    monkeypatch.setenv("LLMOPS_PROMETHEUS_URL", "http://127.0.0.1:9")  # nothing answers: no analysis
    body = deployment("bot", registry, resources={"cpu": "100m", "memory": "128Mi"}, gateway={"replicas": 1})
    canary_child = vllm_name("bot", MODEL, "2", MODEL)

    def deployments() -> set[str]:
        out = cluster.kubectl("get", "deployments", "-n", namespace, "-l", "llmops.io/modeldeployment=bot",
                              "-o", "name")  # fmt: skip
        return {line.split("/", 1)[1] for line in out.stdout.split()}

    def settled() -> dict | None:
        md = get(cluster, "md", "bot", namespace) or {}
        status = md.get("status") or {}
        ok = status.get("observedGeneration") == md.get("metadata", {}).get("generation")
        return md if ok and condition(md, "Ready").get("status") == "True" else None

    with operator_process(cluster, namespace):
        apply(cluster, namespace, body)
        eventually(settled, 90)
    assert deployments() == {"bot-1-vllm", "bot-gateway"}

    monkeypatch.setenv("LLMOPS_FAULT_STOP_AFTER_APPLY", f"apps/v1/Deployment/{canary_child}")
    with operator_process(cluster, namespace) as op:
        with_canary = {**body, "spec": {**body["spec"], "rollout": {"canary": {
            "model": {"name": MODEL, "version": "2"}, "weight": 10}}}}  # fmt: skip
        apply(cluster, namespace, with_canary)
        eventually(lambda: stopped(op["proc"].pid), 60, 0.05)
        md = get(cluster, "md", "bot", namespace)
        assert md is not None
        # The moment: the child exists, this reconcile's own status (observedGeneration) is not written.
        assert canary_child in deployments()
        assert md["status"]["observedGeneration"] < md["metadata"]["generation"]
        inventory_at_kill = md["status"]["inventory"]
        op["proc"].send_signal(signal.SIGKILL)
        op["proc"].wait(30)
    monkeypatch.delenv("LLMOPS_FAULT_STOP_AFTER_APPLY")

    apply(cluster, namespace, body)  # the canary taken out before the operator is back
    with operator_process(cluster, namespace):
        md = eventually(settled, 90)
        left = eventually(lambda: (lambda d: d if canary_child not in d else None)(deployments()), 60)
    print(
        f"\nkilled after applying {canary_child} (inventory at the kill lists it: "
        f"{f'apps/v1/Deployment/{canary_child}' in inventory_at_kill}); after the restart: {sorted(left)}"
    )
    assert left == {"bot-1-vllm", "bot-gateway"}
    assert f"apps/v1/Deployment/{canary_child}" not in md["status"]["inventory"]
