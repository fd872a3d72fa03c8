"""Ports for the local components (llmops.dev.cluster.free_ports)."""

from __future__ import annotations

import socket
from pathlib import Path

from llmops.dev.cluster import free_ports


def test_the_ports_of_one_component_are_different_and_free() -> None:
    """Asked together, the ports never coincide (a Ray head takes nine: asked one at a time, two of
    them once came back equal and the head refused to start), and each can be bound once returned."""
    for _ in range(50):
        ports = free_ports(9)
        assert len(set(ports)) == 9
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[0]))


def test_ports_come_from_outside_the_ephemeral_range_one_band_per_xdist_worker(monkeypatch) -> None:
    """Outgoing connections take their local port from the kernel's ephemeral range, so a port handed
    out from it can be taken before its server binds it (CI, 2026-12-06: the operator's health port
    33141). Ports come from between Ray's worker ports (10002-19999) and that range, split between
    pytest-xdist's workers; a worker xdist started in place of a crashed one takes the ports above it."""
    from llmops.dev import cluster

    assert cluster._ephemeral_ports()[0] == int(
        Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0]
    )
    monkeypatch.setattr(cluster, "_ephemeral_ports", lambda: (32768, 60999))  # Linux's defaults
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "3")
    bands = {}
    for worker in ("gw0", "gw1", "gw2", "gw3", "gw7"):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        bands[worker] = cluster._port_band()
    assert bands == {
        "gw0": range(20000, 24256),
        "gw1": range(24256, 28512),
        "gw2": range(28512, 32768),
        "gw3": range(61000, 65536),  # in place of a crashed worker
        "gw7": range(61000, 65536),
    }
    monkeypatch.delenv("PYTEST_XDIST_WORKER")
    assert cluster._port_band() == range(20000, 32768)  # outside xdist
    for ephemeral, band in (
        ((40000, 60999), range(20000, 40000)),
        ((1024, 15000), range(20000, 65536)),  # nothing below: above it, still past Ray's ports
        ((20500, 65000), range(20500, 65001)),  # no room outside: the ephemeral range itself
    ):
        monkeypatch.setattr(cluster, "_ephemeral_ports", lambda e=ephemeral: e)
        assert cluster._port_band() == band


def test_one_process_hands_a_port_out_once_a_lap_from_its_own_band() -> None:
    from llmops.dev import cluster

    band = cluster._port_band()  # this worker's, as it is
    given = [p for _ in range(100) for p in free_ports(3)]
    assert len(set(given)) == 300 and all(p in band for p in given)
    assert free_ports(0) == []


def test_a_port_in_use_is_passed_over(monkeypatch) -> None:
    """A port something already listens on is never handed out."""
    from llmops.dev import cluster

    band, port = cluster._port_band(), cluster.free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        monkeypatch.setattr(cluster, "_ports_given", {band: port})
        got = free_ports(2)
        assert port not in got and all(p in band for p in got)


def test_two_state_folders_of_one_name_get_their_own_ray_temp_dir(tmp_path) -> None:
    """Two test sessions' `cluster0` folders must not share a Ray head's sockets; the path stays short
    (Ray's unix socket paths have a length limit) and the same for the same folder."""
    from llmops.dev.services import ray_temp_dir

    first, second = tmp_path / "a" / "cluster0", tmp_path / "b" / "cluster0"
    assert ray_temp_dir(first) != ray_temp_dir(second)
    assert ray_temp_dir(first) == ray_temp_dir(first)
    assert (
        str(ray_temp_dir(tmp_path / ("x" * 80))).startswith("/tmp/ray-")
        and len(str(ray_temp_dir(first))) < 40
    )
