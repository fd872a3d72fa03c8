"""The local control plane's further flags (llmops.dev.cluster.LocalCluster.apiserver_args and
controller_manager_args)."""

from __future__ import annotations

from pathlib import Path

from llmops.certs import ClusterPKI
from llmops.dev import cluster as cluster_module
from llmops.dev.cluster import LocalCluster


def _argvs(local: LocalCluster, monkeypatch) -> dict[str, list[str]]:
    """Every control-plane component's argv as `start` would spawn it (no process is started)."""
    spawned: dict[str, list[str]] = {}
    monkeypatch.setattr(cluster_module, "binary", lambda name: f"/bin/{name}")
    monkeypatch.setattr(cluster_module, "go_module_dir", lambda *_, **__: Path("/kwok"))
    monkeypatch.setattr(local, "spawn", lambda name, argv: spawned.setdefault(name, argv))
    ports = {"apiserver": 6443, "etcd": 2379, "scheduler": 10259, "kwok": 10247}
    pki = ClusterPKI(local.state_dir / "pki")
    local._start_apiserver(ports, pki)
    local._start_controllers(ports, pki)
    return spawned


def _moved(argv: list[str], old: Path, new: Path) -> list[str]:
    return [a.replace(str(old), str(new)) for a in argv]


def test_further_flags_come_last_in_their_order_and_ours_stay(tmp_path: Path, monkeypatch) -> None:
    """A bench's `--watch-cache=false` reaches the apiserver, and its `--kube-api-qps=100` the
    controller-manager, after every flag of ours, which are unchanged (both keep the last of a
    repeated single-value flag); the other components are untouched."""
    a, b = tmp_path / "a", tmp_path / "b"
    ours = _argvs(LocalCluster(a), monkeypatch)
    apiserver = ("--watch-cache=false", "--event-ttl=5m")
    kcm = ("--kube-api-qps=100", "--kube-api-burst=200")
    given = _argvs(LocalCluster(b, apiserver_args=apiserver, controller_manager_args=kcm), monkeypatch)
    assert given["kube-apiserver"] == _moved(ours["kube-apiserver"], a, b) + list(apiserver)
    assert given["kube-controller-manager"] == _moved(ours["kube-controller-manager"], a, b) + list(kcm)
    for name in ("kube-scheduler", "kwok"):
        assert given[name] == _moved(ours[name], a, b)
    assert ours["kube-apiserver"][0] == "/bin/kube-apiserver"
    assert not any(flag.startswith("--watch-cache") for flag in ours["kube-apiserver"])
    assert not any(flag.startswith("--kube-api-qps") for flag in ours["kube-controller-manager"])
