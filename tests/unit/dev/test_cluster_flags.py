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


def test_further_flags_come_last_in_their_order_and_ours_stay(tmp_path: Path, monkeypatch) -> None:
    """A bench's `--watch-cache=false` reaches the apiserver after every flag of ours, which are
    unchanged (kube-apiserver keeps the last of a repeated single-value flag)."""
    ours = _apiserver_argv(LocalCluster(tmp_path / "a"), monkeypatch)
    extra = ("--watch-cache=false", "--event-ttl=5m")
    given = _apiserver_argv(LocalCluster(tmp_path / "b", apiserver_args=extra), monkeypatch)
    assert given == [a.replace(str(tmp_path / "a"), str(tmp_path / "b")) for a in ours] + list(extra)
    assert ours[0] == "/bin/kube-apiserver"
    assert not any(a.startswith("--watch-cache") for a in ours)
