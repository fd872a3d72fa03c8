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
