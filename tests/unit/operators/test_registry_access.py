"""llmops/operators/registry_access.py: storage errors described and classified."""

from __future__ import annotations

from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError, SSLError

from llmops.operators import registry_access


def _client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject"
    )


def test_describe_is_short_and_typed() -> None:
    assert registry_access.describe(ValueError("x" * 1000)) == "ValueError: " + "x" * 300
    assert "unreachable" in registry_access.describe(ConnectionRefusedError())


def test_what_heals() -> None:
    assert registry_access.transient(ConnectionRefusedError())  # an OSError
    assert registry_access.transient(EndpointConnectionError(endpoint_url="http://minio:9000"))
    assert registry_access.transient(ReadTimeoutError(endpoint_url="http://minio:9000"))
    assert registry_access.transient(_client_error("SlowDown", 503))
    assert registry_access.transient(_client_error("InternalError", 500))
    assert not registry_access.transient(ValueError("a bug"))
    assert not registry_access.refused(ValueError("a bug"))


def test_what_needs_a_person() -> None:
    for code, status, words in [
        ("InvalidAccessKeyId", 403, "refused the credentials"),
        ("SignatureDoesNotMatch", 403, "refused the credentials"),
        ("AccessDenied", 403, "denied access"),
        ("NoSuchBucket", 404, "bucket does not exist"),
    ]:
        error = _client_error(code, status)
        assert registry_access.refused(error) and not registry_access.transient(error), code
        assert words in registry_access.describe(error) and code in registry_access.describe(error)
    tls = SSLError(endpoint_url="https://minio:9000", error="CERTIFICATE_VERIFY_FAILED")
    assert registry_access.refused(tls) and "TLS verification" in registry_access.describe(tls)
