"""Shared fixtures: one real local control plane per test session."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmops.dev.cluster import LocalCluster, process_alive
from tests.helpers import POD_SECURITY_LEVEL, create_namespace, pod_security_refusals


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A real etcd + kube-apiserver + controller-manager + scheduler + kwok, shared by the session.

    kwok stands in for the kubelet (no containers run here); everything else is the real thing.
    """
    local = LocalCluster(tmp_path_factory.mktemp("cluster"), tie_to_parent=True)
    local.start()
    yield local
    procs = local.processes()
    local.stop(remove=True)
    left = [f"{name} (pid {pid})" for name, (pid, _) in procs.items() if process_alive(pid, name)]
    assert not left, f"control-plane processes left running: {left}"


@pytest.fixture(scope="session")
def llmops_crds(cluster: LocalCluster) -> list[str]:
    """Our generated CRDs, installed as users install them (server-side apply of crds/)."""
    from llmops.api import API_VERSION, RESOURCES

    cluster.kubectl("apply", "--server-side", "-f", str(Path(__file__).parents[1] / "crds"))
    names = [r.crd_name for r in RESOURCES]
    cluster.wait_established(*(f"crd/{n}" for n in names))
    # Tests that delete a parent expect its children to go: the garbage collector must know our kinds
    # first, or a dependent made before it looks them up (every 30 s) waits out a growing backoff.
    cluster.wait_garbage_collected(*((API_VERSION, r.kind) for r in RESOURCES))
    return names


@pytest.fixture(scope="session")
def kubeconfig(cluster: LocalCluster) -> Path:
    return cluster.kubeconfig


@pytest.fixture(scope="session")
def api_client(kubeconfig: Path):
    from kubernetes import config

    client = config.new_client_from_config(config_file=str(kubeconfig))
    yield client
    client.close()


@pytest.fixture(scope="session")
def kube(kubeconfig: Path):
    """The operator's own client (llmops/operators/kube.py) on the session's cluster."""
    from llmops.operators.kube import Kube

    client = Kube.from_environment(kubeconfig)
    yield client
    client.close()


# `make test` runs the suite on 2 pytest-xdist workers (hack/test.sh: `--dist loadscope
# --no-loadscope-reorder`, with the scopes below). The tests that keep both cores busy (Ray training
# and the e2e runs, which train and serve with vLLM on the CPU) form one scope, `cpu-bound`, which one
# worker runs in turn as a sequential session would; the other worker runs the rest meanwhile, file by
# file: tests that mostly wait on the control plane, the operator, real-time windows or a vLLM server
# that is up. Spreading the CPU-bound tests over several workers made them crowd each other out: on 3
# workers the optimization quickstart took 1,291 s instead of 377, the whole suite 4,532 s (4,813 s on
# one process), and the demo's Ray head missed its 120 s start (2026-12-03).
CPU_BOUND_DIRS = ("tests/e2e/", "tests/workloads/")
CPU_BOUND_FILES = (  # start Ray or train outside those folders
    "tests/reliability/test_secret_leaks.py",
    "tests/cluster/test_trainingjob_e2e.py",
    "tests/cluster/test_examples_as_written.py",
    "tests/cluster/test_dev_services.py",
)
# The scope's own order: its longest files first. The other worker takes the unit tests first, then
# the rest of the files in collection order.
LONGEST_FIRST = (
    "tests/e2e/test_retrain_loop.py",
    "tests/workloads/test_training_workload.py",
    "tests/e2e/test_optimization.py",
    "tests/e2e/test_demo.py",
)


def cpu_bound(path: str) -> bool:
    """Whether the test file at `path` (relative to the repository) belongs to the `cpu-bound` scope."""
    return path.startswith(CPU_BOUND_DIRS) or path in CPU_BOUND_FILES


@pytest.hookimpl(optionalhook=True)  # a run without pytest-xdist (`-p no:xdist`) has no such hook
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """With `--dist loadscope`: the `cpu-bound` scope above, and a scope per file for the rest.

    (pytest-xdist's own `--dist loadgroup` would say the same with `xdist_group` markers, but with
    pytest 9.2 and pytest-xdist 3.8 it grouped nothing: one group's tests went to both workers.)"""
    if config.getoption("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class Scheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "cpu-bound" if cpu_bound(path) else path

    return Scheduling(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Order the suite as above: the `cpu-bound` scope first, longest files first, then the unit
    tests; a file's tests stay together and in order. Any order passes."""
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}

    def key(item: pytest.Item) -> tuple[bool, bool, int]:
        path = item.nodeid.split("::", 1)[0]
        return (not cpu_bound(path), not path.startswith("tests/unit/"), rank.get(path, len(rank)))

    items.sort(key=key)  # stable


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "pod_security(level, reason): the Pod Security Standard the `namespace` fixture enforces instead"
        " of restricted, and why",
    )


@pytest.fixture
def namespace(cluster: LocalCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test, so no test depends on another's leftovers; it enforces the
    `restricted` Pod Security Standard (tests/helpers.py `create_namespace`), so the real apiserver
    refuses every pod made there that falls short of it. A test module that cannot meet it says which
    level it needs and why with `pytest.mark.pod_security(level, reason=...)`."""
    marker = request.node.get_closest_marker("pod_security")
    level = marker.args[0] if marker else POD_SECURITY_LEVEL
    assert not marker or marker.kwargs.get("reason"), "pod_security needs a reason"
    name = f"t-{uuid.uuid4().hex[:8]}"
    create_namespace(cluster, name, level)
    yield name
    # A pod PodSecurity refused is only a FailedCreate event on its ReplicaSet or Job: say it loudly.
    refused = pod_security_refusals(cluster, name)
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
    assert not refused, f"PodSecurity ({level}) refused pods in {name}:\n" + "\n".join(refused)


@pytest.fixture
def kube_env(kubeconfig: Path) -> dict[str, str]:
    """Environment for subprocesses (kubectl, helm) that talk to the test cluster."""
    return {**os.environ, "KUBECONFIG": str(kubeconfig)}
