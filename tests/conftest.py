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
