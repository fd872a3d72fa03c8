"""What S3Store sends for server-side encryption and Object Lock, and the errors for settings it
cannot honour. The requests themselves go to MinIO in tests/workloads/test_archive_s3.py."""

from __future__ import annotations

import datetime as dt

import pytest

from llmops.api.common import ObjectStorageLocation
from llmops.storage import (
    ObjectLock,
    S3Store,
    ServerSideEncryption,
    StoreCache,
    _lock_args,
    customer_key_from_env,
    open_store,
)

KEY = bytes(range(32))


def test_encryption_parameters_for_writes_and_reads() -> None:
    assert ServerSideEncryption("SSE-S3").write_args() == {"ServerSideEncryption": "AES256"}
    assert ServerSideEncryption("SSE-KMS").write_args() == {"ServerSideEncryption": "aws:kms"}
    assert ServerSideEncryption("SSE-KMS", "k1").write_args() == {
        "ServerSideEncryption": "aws:kms",
        "SSEKMSKeyId": "k1",
    }
    assert (
        ServerSideEncryption("SSE-S3").read_args() == ServerSideEncryption("SSE-KMS", "k1").read_args() == {}
    )
    sse_c = ServerSideEncryption("SSE-C", customer_key=KEY)
    assert (
        sse_c.write_args() == sse_c.read_args() == {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": KEY}
    )
    assert "customer_key" not in repr(sse_c) and str(KEY) not in repr(sse_c)
    for bad in (
        lambda: ServerSideEncryption("SSE-C"),
        lambda: ServerSideEncryption("SSE-C", customer_key=b"short"),
        lambda: ServerSideEncryption("SSE-S3", customer_key=KEY),
        lambda: ServerSideEncryption("SSE-S3", kms_key_id="k1"),
    ):
        with pytest.raises(ValueError, match="SSE"):
            bad()


def test_lock_parameters() -> None:
    until = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    assert _lock_args(None, False) == {}
    assert _lock_args(ObjectLock("COMPLIANCE", until), True) == {
        "ObjectLockMode": "COMPLIANCE",
        "ObjectLockRetainUntilDate": until,
        "ObjectLockLegalHoldStatus": "ON",
    }
    now = dt.datetime(2026, 11, 30, 12, 0, 0, 123456, tzinfo=dt.UTC)
    assert ObjectLock.for_days("GOVERNANCE", 30, now) == ObjectLock(
        "GOVERNANCE", dt.datetime(2026, 12, 30, 12, 0, tzinfo=dt.UTC)
    )
    with pytest.raises(ValueError, match="days must be positive"):
        ObjectLock.for_days("COMPLIANCE", 0)
    with pytest.raises(ValueError, match="GOVERNANCE or COMPLIANCE"):
        ObjectLock("governance", until)  # type: ignore[arg-type]


def test_open_store_applies_the_locations_encryption() -> None:
    def location(encryption: dict) -> ObjectStorageLocation:
        return ObjectStorageLocation.model_validate(
            {"s3": {"bucket": "models", "endpoint": "http://127.0.0.1:9", "encryption": encryption}}
        )

    kms = open_store(location({"mode": "SSE-KMS", "kmsKeyId": "k1"}))
    assert isinstance(kms, S3Store) and kms.encryption == ServerSideEncryption("SSE-KMS", "k1")
    sse_c = location({"mode": "SSE-C", "customerKeySecretRef": {"name": "archive-key", "key": "key"}})
    with pytest.raises(
        ValueError, match="SSE-C needs the customer key from customerKeySecretRef 'archive-key'"
    ):
        open_store(sse_c)
    assert open_store(sse_c, customer_key=KEY).encryption.customer_key == KEY  # type: ignore[union-attr]
    cache = StoreCache()
    assert cache.open(sse_c, customer_key=KEY) is cache.open(sse_c, customer_key=KEY)
    assert cache.open(sse_c, customer_key=KEY) is not cache.open(sse_c, customer_key=bytes(32))


def test_the_customer_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import base64

    assert customer_key_from_env("REGISTRY_") is None
    monkeypatch.setenv("REGISTRY_LLMOPS_SSE_CUSTOMER_KEY", base64.b64encode(KEY).decode())
    assert customer_key_from_env("REGISTRY_") == KEY
    for bad in ("not base64!", base64.b64encode(b"short").decode()):
        monkeypatch.setenv("REGISTRY_LLMOPS_SSE_CUSTOMER_KEY", bad)
        with pytest.raises(
            ValueError, match="REGISTRY_LLMOPS_SSE_CUSTOMER_KEY must be base64 of 32 bytes"
        ) as e:
            customer_key_from_env("REGISTRY_")
        assert bad not in str(e.value)


def test_the_advice_fits_who_reads_the_credentials() -> None:
    """The operator and its pods read a location's Secret and ConfigMap; the CLI the AWS environment."""
    from botocore.exceptions import ClientError, NoCredentialsError, SSLError

    from llmops.storage import explain

    refused = ClientError({"Error": {"Code": "InvalidAccessKeyId"}}, "ListObjectsV2")
    tls = SSLError(endpoint_url="https://minio:9000", error="CERTIFICATE_VERIFY_FAILED")
    for error, pod, cli in [
        (NoCredentialsError(), "s3.credentialsSecretRef", "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
        (refused, "credentials Secret", "fix AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
        (tls, "s3.caBundle", "AWS_CA_BUNDLE"),
    ]:
        in_cluster, on_a_laptop = explain(error).message, explain(error, reader="cli").message
        assert pod in in_cluster and "AWS_" not in in_cluster, in_cluster
        assert cli in on_a_laptop and "Secret" not in on_a_laptop, on_a_laptop
        assert "caBundle" not in on_a_laptop
