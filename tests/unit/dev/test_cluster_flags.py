"""The local control plane's kube-apiserver flags (llmops.dev.cluster.LocalCluster.apiserver_args)."""

from __future__ import annotations

from pathlib import Path

from llmops.certs import ClusterPKI
from llmops.dev import cluster as cluster_module
from llmops.dev.cluster import LocalCluster


def _apiserver_argv(local: LocalCluster, monkeypatch) -> list[str]:
    spawned: dict[str, list[str]] = {}
    monkeypatch.setattr(cluster_module, "binary", lambda name: f"/bin/{name}")
    monkeypatch.setattr(local, "spawn", lambda name, argv: spawned.setdefault(name, argv))
    local._start_apiserver({"apiserver": 6443, "etcd": 2379}, ClusterPKI(local.state_dir / "pki"))
    return spawned["kube-apiserver"]


def test_further_flags_come_after_ours_so_they_win(tmp_path: Path, monkeypatch) -> None:
    """A bench's `--watch-cache=false` reaches the apiserver, after the defaults (the last of a
    repeated flag is the one kube-apiserver keeps), and on every start of it: a restart of the
    apiserver (`start_component`) goes through the same `_start_apiserver`."""
    argv = _apiserver_argv(LocalCluster(tmp_path, apiserver_args=("--watch-cache=false",)), monkeypatch)
    assert argv[0] == "/bin/kube-apiserver"
    assert argv[-1] == "--watch-cache=false"
    assert "--endpoint-reconciler-type=none" in argv


def test_no_further_flags_by_default(tmp_path: Path, monkeypatch) -> None:
    argv = _apiserver_argv(LocalCluster(tmp_path), monkeypatch)
    assert argv[-1] == "--endpoint-reconciler-type=none"
    assert not any(a.startswith("--watch-cache") for a in argv)
