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


def test_encryption_combinations_are_checked_naming_the_field() -> None:
    import pytest
    from pydantic import ValidationError

    def s3(encryption: dict) -> ObjectStorageLocation:
        return ObjectStorageLocation.model_validate({"s3": {"bucket": "models", "encryption": encryption}})

    assert s3({"mode": "SSE-S3"}).to_dict()["s3"]["encryption"] == {"mode": "SSE-S3"}
    assert s3({"mode": "SSE-KMS", "kmsKeyId": "arn:aws:kms:eu-west-1:1:key/k"}).s3.encryption.kms_key_id  # type: ignore[union-attr]
    assert s3({"mode": "SSE-C", "customerKeySecretRef": {"name": "k", "key": "key"}})
    for bad, message in (
        ({"mode": "SSE-S3", "kmsKeyId": "k"}, "kmsKeyId is for mode SSE-KMS only"),
        ({"mode": "SSE-C"}, "mode SSE-C needs customerKeySecretRef"),
        ({"mode": "SSE-KMS", "customerKeySecretRef": {"name": "k", "key": "key"}}, "only SSE-C takes one"),
        ({"mode": "SSE-X"}, "Input should be 'SSE-S3', 'SSE-KMS' or 'SSE-C'"),
    ):
        with pytest.raises(ValidationError, match=message):
            s3(bad)
    assert ObjectStorageLocation.model_validate({"s3": {"bucket": "models"}}).to_dict() == {
        "s3": {"bucket": "models"}
    }  # no encryption: nothing new on the wire
