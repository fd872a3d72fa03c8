"""llmops/operators/registry_access.py: storage errors described and classified."""

from __future__ import annotations

from llmops.operators import registry_access


def test_describe_is_short_and_typed() -> None:
    assert registry_access.describe(ConnectionError()) == "ConnectionError"
    assert registry_access.describe(ValueError("x" * 1000)) == "ValueError: " + "x" * 300


def test_what_heals() -> None:
    assert registry_access.transient(ConnectionRefusedError())  # an OSError
    assert registry_access.transient(
        type("EndpointConnectionError", (Exception,), {"__module__": "botocore.exceptions"})()
    )
    assert not registry_access.transient(ValueError("a bug"))
