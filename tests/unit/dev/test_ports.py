"""Ports for the local components (llmops.dev.cluster.free_ports)."""

from __future__ import annotations

import socket

from llmops.dev.cluster import free_ports


def test_the_ports_of_one_component_are_different_and_free() -> None:
    """Asked together, the ports never coincide (a Ray head takes nine: asked one at a time, two of
    them once came back equal and the head refused to start), and each can be bound once returned."""
    for _ in range(50):
        ports = free_ports(9)
        assert len(set(ports)) == 9
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[0]))


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
