"""Shared API types (llmops/api/common.py): locations under locations."""

from __future__ import annotations

from llmops.api.common import ObjectStorageLocation


def test_a_child_location_keeps_bucket_endpoint_and_credentials() -> None:
    s3 = ObjectStorageLocation.model_validate(
        {
            "s3": {
                "bucket": "models",
                "prefix": "team-a/",
                "endpoint": "http://minio:9000",
                "credentialsSecretRef": {"name": "creds"},
            }
        }
    )
    child = s3.child("jobs/ns/name")
    assert child.s3 is not None and s3.s3 is not None
    assert child.s3.prefix == "team-a/jobs/ns/name"
    assert child.s3.model_dump(exclude={"prefix"}) == s3.s3.model_dump(exclude={"prefix"})
    assert child.uri == "s3://models/team-a/jobs/ns/name"
    bare = ObjectStorageLocation.model_validate({"s3": {"bucket": "models"}})
    assert bare.child("a/b").s3.prefix == "a/b"  # type: ignore[union-attr]
    assert bare.uri == "s3://models"
    local = ObjectStorageLocation.model_validate({"local": {"path": "/srv/registry/"}})
    assert local.child("monitoring/p").local.path == "/srv/registry/monitoring/p"  # type: ignore[union-attr]
    assert local.uri == "/srv/registry/"
