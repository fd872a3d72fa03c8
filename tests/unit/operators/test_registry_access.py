"""operators/registry_access.py: locations in messages, storage errors described and classified."""

from __future__ import annotations

from llmops.api.common import ObjectStorageLocation
from operators import registry_access


def test_location_uri() -> None:
    s3 = ObjectStorageLocation.model_validate({"s3": {"bucket": "models", "prefix": "team-a/"}})
    assert registry_access.location_uri(s3) == "s3://models/team-a"
    bare = ObjectStorageLocation.model_validate({"s3": {"bucket": "models"}})
    assert registry_access.location_uri(bare) == "s3://models"
    local = ObjectStorageLocation.model_validate({"local": {"path": "/registry"}})
    assert registry_access.location_uri(local) == "/registry"


def test_describe_is_short_and_typed() -> None:
    assert registry_access.describe(ConnectionError()) == "ConnectionError"
    assert registry_access.describe(ValueError("x" * 1000)) == "ValueError: " + "x" * 300


def test_what_heals() -> None:
    assert registry_access.transient(ConnectionRefusedError())  # an OSError
    assert registry_access.transient(
        type("EndpointConnectionError", (Exception,), {"__module__": "botocore.exceptions"})()
    )
    assert not registry_access.transient(ValueError("a bug"))
