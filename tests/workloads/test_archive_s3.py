"""Archive, Object Lock, retirement and server-side encryption against a real MinIO.

MinIO implements S3 Object Lock (WORM on versioned buckets) and, with a static key from
`MINIO_KMS_SECRET_KEY`, SSE-S3 and SSE-KMS; so the locks are proven by MinIO refusing the deletes,
not by reading our own flags back. S3 (MinIO too) accepts SSE-C only over HTTPS, so this MinIO
serves TLS with a certificate made here (llmops.certs).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from llmops.api.common import ObjectStorageLocation
from llmops.archive import ArchiveNotVerified, archive_version, delete_version, verify_archive
from llmops.dev.services import MinioServer
from llmops.registry import GateVerdict, Lineage, VersionRetired, read_version, register, version_prefix
from llmops.storage import (
    Credentials,
    ObjectLock,
    ObjectLockUnavailable,
    S3Store,
    ServerSideEncryption,
    open_store,
)
from tests.helpers import eventually, s3_client
from tests.workloads.conftest import MINIO, _stop_group

KMS_KEY = "llmops-test-key"
MULTIPART = 9 << 20  # above boto3's 8 MiB multipart threshold: the archive copies it in parts


def serving_certificate(certs: Path) -> Path:
    """A CA and a serving certificate for 127.0.0.1 (llmops.certs, as the local control plane's),
    in MinIO's certs-dir layout (public.crt, private.key); returns the CA's certificate, which the
    clients trust by AWS_CA_BUNDLE."""
    from llmops.certs import common_name, issue_certificate, new_ca, pem, write_key

    ca, ca_key = new_ca("llmops-test-minio", days=1)
    cert, key = issue_certificate(ca, ca_key, common_name("127.0.0.1"), server_names=["127.0.0.1"], days=1)
    (certs / "public.crt").write_bytes(pem(cert))
    write_key(certs / "private.key", key)
    (certs.parent / "minio-ca.crt").write_bytes(pem(ca))
    return certs.parent / "minio-ca.crt"


def _ready(endpoint: str, ca: Path) -> bool:
    import ssl
    import urllib.request

    try:
        context = ssl.create_default_context(cafile=str(ca))
        with urllib.request.urlopen(f"{endpoint}/minio/health/ready", timeout=2, context=context) as r:
            return r.status == 200
    except OSError:  # not listening yet
        return False


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A MinIO of its own, on TLS (S3 accepts SSE-C over HTTPS only) with a certificate from a CA
    made here that the clients trust through AWS_CA_BUNDLE, and with a static KMS key for SSE-S3 and SSE-KMS
    (the session's MinIO has neither)."""
    if not MINIO.exists():
        pytest.fail(f"{MINIO} is missing: build it with hack/tools/build.sh minio")
    data = tmp_path_factory.mktemp("minio-kms")
    certs = tmp_path_factory.mktemp("minio-certs")
    ca = serving_certificate(certs)
    log = data.parent / "minio-kms.log"
    server = MinioServer.on_loopback(MINIO, data, user="llmops-archive")
    endpoint = server.endpoint.replace("http://", "https://")
    kms = f"{KMS_KEY}:{base64.b64encode(secrets.token_bytes(32)).decode()}"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [*server.argv, "--certs-dir", str(certs)],
            env={**os.environ, **server.env, "MINIO_KMS_SECRET_KEY": kms},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    before = os.environ.get("AWS_CA_BUNDLE")
    os.environ["AWS_CA_BUNDLE"] = str(ca)
    try:
        eventually(lambda: proc.poll() is None and _ready(endpoint, ca), timeout=60)
    except AssertionError:
        _stop_group(proc, 5)
        raise AssertionError(f"MinIO did not start; log:\n{log.read_text()[-3000:]}") from None
    yield {"endpoint": endpoint, "access_key": server.user, "secret_key": server.password}
    _stop_group(proc, 10)
    if before is None:
        os.environ.pop("AWS_CA_BUNDLE", None)
    else:
        os.environ["AWS_CA_BUNDLE"] = before


@pytest.fixture(scope="module")
def client(server: dict[str, str]):

    return s3_client(server)


@pytest.fixture(scope="module")
def buckets(client) -> dict[str, str]:
    client.create_bucket(Bucket="registry")
    client.create_bucket(Bucket="archive-plain")
    client.create_bucket(Bucket="archive-lock", ObjectLockEnabledForBucket=True)
    return {"registry": "registry", "plain": "archive-plain", "lock": "archive-lock"}


def store(server: dict[str, str], bucket: str, prefix: str = "", **kwargs) -> S3Store:
    credentials = Credentials(server["access_key"], server["secret_key"])
    return S3Store(
        bucket, prefix, endpoint=server["endpoint"], region=None, credentials=credentials, **kwargs
    )


def registered(registry: S3Store, tmp: Path, name: str) -> str:
    model = tmp / name
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"name": name}))
    (model / "model.safetensors").write_bytes(secrets.token_bytes(MULTIPART))
    gates = [GateVerdict(metric="accuracy", operator=">=", threshold=0.5, value=0.9, passed=True)]
    return register(registry, name, model, metrics={}, gates=gates, lineage=Lineage()).version


def _code(e: pytest.ExceptionInfo[ClientError]) -> str:
    return e.value.response["Error"]["Code"]


def _worm(e: pytest.ExceptionInfo[ClientError]) -> bool:
    """The refusal of a locked version's delete: AccessDenied on AWS S3; MinIO answers InvalidRequest
    "Object is WORM protected and cannot be overwritten"."""
    error = e.value.response["Error"]
    return error["Code"] == "AccessDenied" or "WORM protected" in error.get("Message", "")


def in_a_day() -> dt.datetime:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).replace(microsecond=0)


class FailingStore:
    """Fault injection: the S3 store, except that every write after the first `writes` raises, as
    storage failing mid-copy would."""

    def __init__(self, inner: S3Store, writes: int) -> None:
        self.inner, self.writes, self.uri = inner, writes, inner.uri

    def _write(self) -> None:
        if self.writes <= 0:
            raise ConnectionError("storage failed mid-copy")
        self.writes -= 1

    def put_bytes(self, key, data, **kwargs) -> None:
        self._write()
        self.inner.put_bytes(key, data, **kwargs)

    def upload_file(self, key, path, **kwargs) -> None:
        self._write()
        self.inner.upload_file(key, path, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


def test_a_locked_archive_resumes_after_a_failure_and_verifies(server, client, buckets, tmp_path) -> None:
    registry = store(server, buckets["registry"])
    version = registered(registry, tmp_path, "locked")
    target = store(server, buckets["lock"], "archive")
    lock = ObjectLock.for_days("GOVERNANCE", 1)
    with pytest.raises(ConnectionError):
        archive_version(registry, "locked", version, FailingStore(target, writes=1), lock=lock)
    prefix = version_prefix("locked", version)
    assert not target.exists(f"{prefix}/ARCHIVE.json")
    receipt = archive_version(
        registry, "locked", version, target, lock=lock, extra={"postmortem.md": b"# done"}
    )
    assert {o.lock_mode for o in receipt.objects} == {"GOVERNANCE"}
    assert {o.retain_until for o in receipt.objects} == {lock.retain_until.isoformat()}
    weights = next(o for o in receipt.objects if o.key.endswith("model.safetensors"))
    assert weights.size == MULTIPART and weights.sha256 == receipt.artifacts["model.safetensors"]
    etag = client.head_object(Bucket=buckets["lock"], Key=f"archive/{weights.key}")["ETag"].strip('"')
    assert etag.endswith("-2")  # a multipart ETag: no content hash, which is why we read back and hash
    assert verify_archive(target, receipt) == []
    assert target.lock_state(receipt.key).mode == "GOVERNANCE"  # the receipt is locked as well

    assert all(o.version_id for o in receipt.objects)  # the locked versions, by id
    # Overwriting adds a version (the locked one stays); the read-back sees the change.
    target.put_bytes(weights.key, b"not the weights")
    locked = client.get_object(
        Bucket=buckets["lock"], Key=f"archive/{weights.key}", VersionId=weights.version_id
    )
    assert hashlib.sha256(locked["Body"].read()).hexdigest() == weights.sha256
    assert verify_archive(target, receipt) == [
        f"{weights.key}: sha256 {hashlib.sha256(b'not the weights').hexdigest()} read back, {weights.sha256} "
        "expected"
    ]
    with pytest.raises(ArchiveNotVerified):
        delete_version(registry, "locked", version, target=target, receipt=receipt, actor="t", reason="t")
    assert read_version(registry, "locked", version).version == version  # nothing deleted


def test_object_lock_is_enforced_by_minio(server, client, buckets) -> None:
    lockable = store(server, buckets["lock"], "worm")
    key = "worm/governance"
    lockable.put_bytes("governance", b"kept", lock=ObjectLock("GOVERNANCE", in_a_day()))
    first = client.head_object(Bucket=buckets["lock"], Key=key)["VersionId"]
    with pytest.raises(ClientError) as e:
        client.delete_object(Bucket=buckets["lock"], Key=key, VersionId=first)
    assert _worm(e), e.value
    lockable.put_bytes("governance", b"overwritten")  # a new version on top; the locked one is intact
    assert client.get_object(Bucket=buckets["lock"], Key=key, VersionId=first)["Body"].read() == b"kept"
    client.delete_object(Bucket=buckets["lock"], Key=key, VersionId=first, BypassGovernanceRetention=True)

    key = "worm/compliance"
    lockable.put_bytes("compliance", b"kept", lock=ObjectLock("COMPLIANCE", in_a_day()))
    first = client.head_object(Bucket=buckets["lock"], Key=key)["VersionId"]
    with pytest.raises(ClientError) as e:
        client.delete_object(Bucket=buckets["lock"], Key=key, VersionId=first, BypassGovernanceRetention=True)
    assert _worm(e), e.value
    with pytest.raises(ClientError):  # nor can anyone shorten the date
        client.put_object_retention(
            Bucket=buckets["lock"], Key=key, VersionId=first, BypassGovernanceRetention=True,
            Retention={"Mode": "GOVERNANCE", "RetainUntilDate": dt.datetime.now(dt.UTC)},
        )  # fmt: skip
    assert client.get_object(Bucket=buckets["lock"], Key=key, VersionId=first)["Body"].read() == b"kept"

    key = "worm/held"
    lockable.put_bytes("held", b"kept", legal_hold=True)
    assert lockable.lock_state("held").legal_hold and lockable.lock_state("held").mode is None
    first = client.head_object(Bucket=buckets["lock"], Key=key)["VersionId"]
    with pytest.raises(ClientError) as e:
        client.delete_object(Bucket=buckets["lock"], Key=key, VersionId=first, BypassGovernanceRetention=True)
    assert _worm(e), e.value
    client.put_object_legal_hold(
        Bucket=buckets["lock"], Key=key, VersionId=first, LegalHold={"Status": "OFF"}
    )
    client.delete_object(Bucket=buckets["lock"], Key=key, VersionId=first)


def test_a_lock_on_a_bucket_without_object_lock_is_refused_before_copying(server, buckets, tmp_path) -> None:
    registry = store(server, buckets["registry"])
    version = registered(registry, tmp_path, "unlockable")
    target = store(server, buckets["plain"], "refused")
    with pytest.raises(ObjectLockUnavailable, match="bucket 'archive-plain' does not have Object Lock"):
        archive_version(registry, "unlockable", version, target, lock=ObjectLock("COMPLIANCE", in_a_day()))
    with pytest.raises(ObjectLockUnavailable, match="archive-plain"):
        target.put_bytes("held", b"x", legal_hold=True)
    assert list(target.list()) == []


def test_retire_on_s3_archive_verify_delete_tombstone(server, buckets, tmp_path) -> None:
    registry = store(server, buckets["registry"])
    version = registered(registry, tmp_path, "retired")
    target = store(server, buckets["plain"], "archive")
    receipt = archive_version(registry, "retired", version, target)
    tombstone = delete_version(
        registry, "retired", version, target=target, receipt=receipt, actor="user:ana", reason="superseded"
    )
    prefix = version_prefix("retired", version)
    assert list(registry.list(f"{prefix}/")) == [f"{prefix}/tombstone.json"]
    assert tombstone.archive_location == "s3://archive-plain/archive"
    with pytest.raises(VersionRetired, match="s3://archive-plain/archive"):
        read_version(registry, "retired", version)
    assert verify_archive(target, receipt) == []


def test_sse_s3_and_sse_kms_apply_to_every_write(server, client, buckets, tmp_path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(secrets.token_bytes(MULTIPART))
    for mode, kms_key_id, expected in (("SSE-S3", None, "AES256"), ("SSE-KMS", KMS_KEY, "aws:kms")):
        location = ObjectStorageLocation.model_validate(
            {
                "s3": {
                    "bucket": buckets["registry"],
                    "prefix": f"encrypted/{mode}",
                    "endpoint": server["endpoint"],
                    "encryption": {"mode": mode, **({"kmsKeyId": kms_key_id} if kms_key_id else {})},
                }
            }
        )
        encrypted = open_store(location, Credentials(server["access_key"], server["secret_key"]))
        encrypted.put_bytes("small", b"secret")
        encrypted.upload_file("big", big)  # multipart: the encryption goes on CreateMultipartUpload
        for key in ("small", "big"):
            head = client.head_object(Bucket=buckets["registry"], Key=f"encrypted/{mode}/{key}")
            assert head["ServerSideEncryption"] == expected
            if kms_key_id:
                assert head["SSEKMSKeyId"].endswith(KMS_KEY)
        assert encrypted.get_bytes("small") == b"secret"
        encrypted.download_file("big", tmp_path / f"back-{mode}")
        assert (tmp_path / f"back-{mode}").read_bytes() == big.read_bytes()
        # A whole registry version on the encrypted location, and its archive there too.
        (tmp_path / mode).mkdir()
        version = registered(encrypted, tmp_path / mode, "enc")
        manifest_key = f"encrypted/{mode}/{version_prefix('enc', version)}/manifest.json"
        assert (
            client.head_object(Bucket=buckets["registry"], Key=manifest_key)["ServerSideEncryption"]
            == expected
        )
        receipt = archive_version(encrypted, "enc", version, encrypted_archive := store(
            server, buckets["plain"], f"encrypted/{mode}", encryption=ServerSideEncryption(mode, kms_key_id)
        ))  # fmt: skip
        assert verify_archive(encrypted_archive, receipt) == []


def test_sse_c_round_trip_with_the_customers_key(server, client, buckets, tmp_path) -> None:
    key = secrets.token_bytes(32)
    sse_c = ServerSideEncryption("SSE-C", customer_key=key)
    registry = store(server, buckets["registry"], "sse-c", encryption=sse_c)
    sent: dict[str, str] = {}
    registry.client.meta.events.register(
        "before-send.s3.PutObject",
        lambda request, **_: sent.update(
            (k, v.decode() if isinstance(v, bytes) else v) for k, v in request.headers.items()
        ),
    )
    registry.put_bytes("object", b"secret")
    assert sent["x-amz-server-side-encryption-customer-algorithm"] == "AES256"
    assert (
        sent["x-amz-server-side-encryption-customer-key-MD5"]
        == base64.b64encode(hashlib.md5(key).digest()).decode()
    )
    assert registry.get_bytes("object") == b"secret" and registry.exists("object")
    with pytest.raises(ClientError):  # without the key, S3 cannot read it
        client.get_object(Bucket=buckets["registry"], Key="sse-c/object")
    wrong = store(
        server, buckets["registry"], "sse-c", encryption=ServerSideEncryption("SSE-C", customer_key=bytes(32))
    )
    with pytest.raises(ClientError):
        wrong.get_bytes("object")
    # A whole version (its weights in parts), archived to another SSE-C location and verified there.
    version = registered(registry, tmp_path, "customer")
    head = client.head_object(
        Bucket=buckets["registry"],
        Key=f"sse-c/{version_prefix('customer', version)}/model/model.safetensors",
        SSECustomerAlgorithm="AES256",
        SSECustomerKey=key,
    )
    assert head["SSECustomerAlgorithm"] == "AES256" and head["ContentLength"] == MULTIPART
    archive = store(server, buckets["plain"], "sse-c", encryption=sse_c)
    receipt = archive_version(registry, "customer", version, archive)
    assert verify_archive(archive, receipt) == []


def test_a_legal_hold_on_every_archived_object(server, client, buckets, tmp_path) -> None:
    registry = store(server, buckets["registry"])
    version = registered(registry, tmp_path, "held")
    target = store(server, buckets["lock"], "held")
    receipt = archive_version(registry, "held", version, target, legal_hold=True)
    assert all(o.legal_hold and o.lock_mode is None for o in receipt.objects) and receipt.legal_hold
    weights = next(o for o in receipt.objects if o.key.endswith("model.safetensors"))
    with pytest.raises(ClientError) as e:
        client.delete_object(Bucket=buckets["lock"], Key=f"held/{weights.key}", VersionId=weights.version_id)
    assert _worm(e), e.value
    # Lifting the hold is an authorised act that deletes nothing: the archive still verifies.
    client.put_object_legal_hold(
        Bucket=buckets["lock"],
        Key=f"held/{weights.key}",
        VersionId=weights.version_id,
        LegalHold={"Status": "OFF"},
    )
    assert verify_archive(target, receipt) == []
    tombstone = delete_version(
        registry, "held", version, target=target, receipt=receipt, actor="t", reason="t"
    )
    assert tombstone.legal_hold and tombstone.retain_until is None
