"""Object storage behind one small interface: an S3-compatible bucket (boto3) or a local directory.

Workloads, the operator and the gateway all address storage through `ObjectStorageLocation`
(llmops.api.common); credentials come from a Secret the caller has already read, never from
the spec itself.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, Protocol

from llmops import logsafe
from llmops.api.common import ObjectStorageLocation

TMP_SUFFIX = ".tmp"  # a local object being written; never listed


class ObjectExists(Exception):
    """A write that must not overwrite found the key already there."""


class ObjectLockUnavailable(Exception):
    """A write asked for S3 Object Lock (retention or a legal hold) where the store cannot lock: a
    local directory, or a bucket created without Object Lock. The message names the bucket."""


# Error codes of S3 (AWS S3 API reference, "Error responses"; MinIO answers the same) by cause.
_CREDENTIAL_CODES = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken", "InvalidClientTokenId",
     "AuthorizationHeaderMalformed", "InvalidSecurity"}
)  # fmt: skip
_DENIED_CODES = frozenset({"AccessDenied", "AllAccessDisabled", "AccountProblem", "403", "Forbidden"})
_BUCKET_CODES = frozenset({"NoSuchBucket"})
_THROTTLE_CODES = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "503"})

# Attempts per request, the first included: botocore's `total_max_attempts` ("standard" retry mode;
# its older `max_attempts` counts the retries only, one more request than it reads like).
MAX_ATTEMPTS = 5
CONNECT_TIMEOUT_S = 10.0  # seconds to open a connection to the endpoint
READ_TIMEOUT_S = 60.0  # seconds without a byte from the endpoint before an attempt is given up
# Connections one S3Store keeps open for reuse: as many as the threads that may share it at once (the
# operator's 16 handler threads share one store per location, operators.main; an archive copies with
# boto3's 10 transfer threads). botocore keeps 10 by default: with more threads at once, each
# connection given back beyond the tenth is closed ("Connection pool is full, discarding connection")
# and opened anew, TLS handshake included, when next needed (tests/workloads/test_retention_storage.py).
POOL_CONNECTIONS = 32


@dataclass(frozen=True)
class StorageFailure:
    """Why a storage request failed, named by its cause, for a status message or a CLI error.

    `cause`: credentials-refused, credentials-missing, access-denied, bucket-missing, tls,
    unreachable, timeout, server-error, or other (any other S3 answer, such as a key deleted since
    it was listed: retryable, as every storage error was before the causes were told apart).
    `retryable`: the cause can heal by itself (the endpoint answers again, the server recovers), so
    the caller retries later; the others need a person (new keys, a policy, the bucket, the CA
    bundle). `message` never holds a credential:
    it is built from the error's class, S3's error code and the endpoint or bucket only.
    """

    cause: str
    retryable: bool
    message: str

    def __str__(self) -> str:
        return self.message


# What a person does about a cause, by who reads the credentials and the CA bundle: "kubernetes", the
# operator and the pods it makes (from the Secret and ConfigMap the location names), or "cli", the
# `llmops` command on someone's machine (from the standard AWS environment, boto3's own chain).
ADVICE = {
    "credentials-refused": {
        "kubernetes": "fix the access key and secret in the credentials Secret (s3.credentialsSecretRef)",
        "cli": "fix AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the keys of the AWS_PROFILE profile)",
    },
    "credentials-missing": {
        "kubernetes": "name a credentials Secret (the location's s3.credentialsSecretRef) or give the pod "
        "an identity",
        "cli": "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE for a profile of ~/.aws "
        '(for the MinIO of `llmops dev up --services`: eval "$(llmops dev env)")',
    },
    "tls": {
        "kubernetes": "name the CA bundle in s3.caBundle",
        "cli": "point AWS_CA_BUNDLE at a PEM file of the CA",
    },
}


def explain(
    error: BaseException, where: str = "", *, reader: Literal["kubernetes", "cli"] = "kubernetes"
) -> StorageFailure | None:
    """The StorageFailure of an error raised by object storage (botocore, urllib3, an OSError from a
    local store), or None for an error of another kind (a bug, a parse error). `where` names the
    location (`s3://bucket/prefix`) in the message; `reader` picks the advice (ADVICE): "kubernetes"
    for the operator and its pods, "cli" for the `llmops` command run by a person.

    Retries are botocore's own, bounded: MAX_ATTEMPTS attempts per request for connection errors,
    timeouts, throttling and 5xx (the "standard" retry mode), none for the others; the message of a
    retryable failure says that the client gave up after them.
    """
    at = f"{where}: " if where else ""
    tried = f"; gave up after {MAX_ATTEMPTS} attempts" if MAX_ATTEMPTS > 1 else ""
    if type(error).__name__ == "S3UploadFailedError" and isinstance(error.__context__, Exception):
        # boto3's upload_file wraps the ClientError that names the cause (raised while handling it)
        return explain(error.__context__, where, reader=reader)
    module = type(error).__module__
    if module.startswith(("botocore", "boto3", "s3transfer", "urllib3")):
        from botocore import exceptions as bx

        if isinstance(error, bx.ClientError):
            err = error.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            op = getattr(error, "operation_name", "") or "request"
            if code in _CREDENTIAL_CODES:
                return StorageFailure(
                    "credentials-refused",
                    False,
                    f"{at}object storage refused the credentials ({code} on {op}): "
                    + ADVICE["credentials-refused"][reader],
                )
            if code in _BUCKET_CODES:
                bucket = err.get("BucketName") or where
                return StorageFailure(
                    "bucket-missing",
                    False,
                    f"{at}the bucket does not exist ({code} on {op}{f' for {bucket}' if bucket else ''}): "
                    "create it or fix the location's bucket",
                )
            if code in _DENIED_CODES or status == 403:
                return StorageFailure(
                    "access-denied",
                    False,
                    f"{at}object storage denied access ({code or status} on {op}): the credentials are "
                    "valid but their policy does not allow this; grant it or use other credentials",
                )
            if code in _THROTTLE_CODES or (isinstance(status, int) and status >= 500):
                return StorageFailure(
                    "server-error", True, f"{at}object storage answered {status} {code} on {op}{tried}"
                )
            # Another answer (a key deleted since it was listed, a precondition): retried, as before;
            # only the causes above need a person.
            return StorageFailure("other", True, f"{at}object storage answered {op} with {code or status}")
        if isinstance(error, bx.NoCredentialsError | bx.PartialCredentialsError):
            # Retryable: an ambient identity (IRSA, the instance metadata service) can come late.
            return StorageFailure(
                "credentials-missing",
                True,
                f"{at}no credentials for object storage ({type(error).__name__}): "
                + ADVICE["credentials-missing"][reader],
            )
        if isinstance(error, bx.SSLError) or "CERTIFICATE_VERIFY_FAILED" in str(error):
            return StorageFailure(
                "tls",
                False,
                f"{at}TLS verification of the object-storage endpoint failed ({_endpoint(error)}): "
                "its certificate is not signed by a trusted CA; " + ADVICE["tls"][reader],
            )
        if isinstance(error, bx.ConnectTimeoutError | bx.ReadTimeoutError):
            what = f"{type(error).__name__}, {_endpoint(error)}"
            return StorageFailure("timeout", True, f"{at}object storage timed out ({what}){tried}")
        if isinstance(error, bx.EndpointConnectionError | bx.ConnectionClosedError | bx.HTTPClientError):
            return StorageFailure(
                "unreachable",
                True,
                f"{at}object storage is unreachable ({type(error).__name__}, {_endpoint(error)}){tried}",
            )
        if isinstance(error, bx.ResponseStreamingError | bx.IncompleteReadError):
            return StorageFailure(
                "unreachable", True, f"{at}object storage broke off an answer ({type(error).__name__}){tried}"
            )
        return StorageFailure("other", True, f"{at}object storage failed ({type(error).__name__})")
    if isinstance(error, TimeoutError):
        return StorageFailure("timeout", True, f"{at}storage timed out ({type(error).__name__})")
    if isinstance(error, ConnectionError):
        return StorageFailure("unreachable", True, f"{at}storage is unreachable ({type(error).__name__})")
    if isinstance(error, PermissionError):
        return StorageFailure("access-denied", False, f"{at}permission denied ({error.filename or 'a file'})")
    if isinstance(error, OSError):
        return StorageFailure("other", True, f"{at}storage failed ({type(error).__name__}: {error.strerror})")
    return None


BUCKET_SEEN_S = 60.0  # seconds a listing that showed the bucket exists stands for a HEAD's 404


def is_missing(error: BaseException) -> bool:
    """True for "no such object" from either store: a local FileNotFoundError, or S3's NoSuchKey (a
    GET) or bodiless 404 (a HEAD). What a reader sees when an object it had listed or checked was
    deleted in between."""
    if isinstance(error, FileNotFoundError):
        return True
    from botocore.exceptions import ClientError  # its subclasses too (botocore.errorfactory.NoSuchKey)

    return isinstance(error, ClientError) and _code(error) in ("404", "NoSuchKey", "NotFound")


def _code(error: Any) -> str:
    """S3's error code of a botocore ClientError ("404" for a HEAD, which has no body)."""
    return str(error.response.get("Error", {}).get("Code", ""))


def _endpoint(error: BaseException) -> str:
    """The endpoint a botocore connection error names: scheme, host and port of its URL only (the
    path and query, where a presigned URL would carry a signature, are left out)."""
    from urllib.parse import urlsplit

    url = urlsplit(str(getattr(error, "kwargs", {}).get("endpoint_url") or ""))
    return f"{url.scheme}://{url.netloc.rpartition('@')[2]}" if url.netloc else "the endpoint"


@dataclass(frozen=True)
class ObjectLock:
    """S3 Object Lock retention of one object version (AWS S3 user guide, "Object Lock"): WORM
    until `retain_until` (timezone-aware). GOVERNANCE: a user with s3:BypassGovernanceRetention may
    still delete the version or shorten the date; COMPLIANCE: nobody can, the root account included,
    until the date passes."""

    mode: Literal["GOVERNANCE", "COMPLIANCE"]
    retain_until: datetime

    def __post_init__(self) -> None:
        if self.mode not in ("GOVERNANCE", "COMPLIANCE"):
            raise ValueError(f"ObjectLock.mode {self.mode!r}: GOVERNANCE or COMPLIANCE")
        if self.retain_until.tzinfo is None:
            raise ValueError("ObjectLock.retain_until must be timezone-aware (UTC)")

    @classmethod
    def for_days(
        cls, mode: Literal["GOVERNANCE", "COMPLIANCE"], days: int, now: datetime | None = None
    ) -> ObjectLock:
        """Retention of `days` (> 0) from `now` (default: the current time, UTC), to the second.
        Compute it once and keep it: a repeated archive with a later date rewrites every object."""
        if days <= 0:
            raise ValueError(f"Object Lock retention days must be positive, not {days}")
        start = now or datetime.now(UTC)
        return cls(mode, (start + timedelta(days=days)).replace(microsecond=0))


@dataclass(frozen=True)
class LockState:
    """The Object Lock an object carries now, as the store reports it (HEAD), and the id of the
    object version that answered (None on an unversioned bucket)."""

    mode: str | None
    retain_until: datetime | None
    legal_hold: bool
    version_id: str | None = None


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One listed object: its key (relative to the location), size in bytes, and when it was last
    written (S3 LastModified; a file's mtime), timezone-aware UTC."""

    key: str
    size: int
    modified: datetime


class ObjectStore(Protocol):
    """Keys are '/'-separated paths relative to the location's prefix.

    `lock` and `legal_hold` on a write set S3 Object Lock on the object written; a store that cannot
    lock raises ObjectLockUnavailable rather than write an unlocked object.
    """

    uri: str

    def put_bytes(
        self, key: str, data: bytes, *, overwrite: bool = True, lock: ObjectLock | None = None,
        legal_hold: bool = False,
    ) -> None: ...  # fmt: skip
    def get_bytes(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def size(self, key: str) -> int: ...  # bytes of one object, without reading it
    def list(self, prefix: str = "") -> Iterator[str]: ...
    def upload_file(
        self, key: str, path: Path, *, lock: ObjectLock | None = None, legal_hold: bool = False
    ) -> None: ...
    def require_object_lock(self, lock: ObjectLock | None = None, legal_hold: bool = True) -> None: ...
    def lock_state(self, key: str) -> LockState | None: ...
    def download_file(self, key: str, path: Path) -> None: ...
    def delete(self, key: str) -> None: ...
    def list_info(self, prefix: str = "") -> Iterator[ObjectInfo]: ...


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str

    def __repr__(self) -> str:  # never print secrets
        return "Credentials(***)"


def download_dir(store: ObjectStore, prefix: str, path: Path) -> list[str]:
    """Every key under prefix/ into path; returns the relative names."""
    prefix = prefix.strip("/")
    names = []
    for key in store.list(f"{prefix}/" if prefix else ""):
        rel = key[len(prefix) + 1 :] if prefix else key
        store.download_file(key, path / rel)
        names.append(rel)
    return names


def credentials_from_env(prefix: str = "") -> Credentials | None:
    """`{prefix}AWS_ACCESS_KEY_ID` and `{prefix}AWS_SECRET_ACCESS_KEY` when both are set, else None
    (then boto3 finds the pod's own identity, IRSA or an instance role).

    The one convention of every pod the operators make: each location's Secret reaches the pod by
    `secretKeyRef` under these names (llmops/operators/manifests.py `credentials_env`), one prefix a location
    where a pod reads more than one; the values never pass through the operator.
    """
    key = os.environ.get(f"{prefix}AWS_ACCESS_KEY_ID")
    secret = os.environ.get(f"{prefix}AWS_SECRET_ACCESS_KEY")
    logsafe.remember(key, secret)  # no log line of this process shows them (llmops/logsafe.py)
    return Credentials(key, secret) if key and secret else None


SSE_CUSTOMER_KEY_ENV = "LLMOPS_SSE_CUSTOMER_KEY"


def customer_key_from_env(prefix: str = "") -> bytes | None:
    """The SSE-C key from `{prefix}LLMOPS_SSE_CUSTOMER_KEY` (base64 of 32 bytes, as the Secret that
    `s3.encryption.customerKeySecretRef` names holds it), or None when unset; the same convention
    as `credentials_from_env`, for a pod that gets the key by `secretKeyRef`. Raises ValueError
    naming the variable for a value that is not base64 of 32 bytes (the value is never shown)."""
    value = os.environ.get(f"{prefix}{SSE_CUSTOMER_KEY_ENV}")
    if not value:
        return None
    try:
        key = base64.b64decode(value, validate=True)
    except binascii.Error:
        key = b""
    if len(key) != 32:
        raise ValueError(f"{prefix}{SSE_CUSTOMER_KEY_ENV} must be base64 of 32 bytes (an AES-256 key)")
    return key


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class LocalStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.uri = f"file://{root}"

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in (path, *path.parents):
            raise ValueError(f"key {key!r} leaves the storage root")
        return path

    def _staged(self, path: Path, write: Callable[[Path], None]) -> Path:
        """Write a new file beside `path` under a unique temporary name, flushed to disk."""
        for attempt in range(5):
            path.parent.mkdir(parents=True, exist_ok=True)
            try:  # a delete may remove the folder between the two calls, once it is empty (`delete`)
                fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
                break
            except FileNotFoundError:
                if attempt == 4:
                    raise
        os.fchmod(fd, 0o644)  # readable by the serving pods that share a local registry
        os.close(fd)
        tmp = Path(name)
        try:
            write(tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp

    def _publish(self, key: str, write: Callable[[Path], None], *, overwrite: bool) -> None:
        """Make the whole object visible at once: a crash leaves either nothing or all of it.

        Create-only writes link the finished file into place (`link` fails when the name exists,
        atomically, as S3's If-None-Match); overwrites rename over it.
        """
        path = self._path(key)
        tmp = self._staged(path, write)
        try:
            if overwrite:
                tmp.replace(path)
                return
            try:
                os.link(tmp, path)
            except FileExistsError as e:
                raise ObjectExists(key) from e
        finally:
            tmp.unlink(missing_ok=True)

    def put_bytes(
        self, key: str, data: bytes, *, overwrite: bool = True, lock: ObjectLock | None = None,
        legal_hold: bool = False,
    ) -> None:  # fmt: skip
        self.require_object_lock(lock, legal_hold)
        self._publish(key, lambda tmp: tmp.write_bytes(data), overwrite=overwrite)

    def require_object_lock(self, lock: ObjectLock | None = None, legal_hold: bool = True) -> None:
        """Raises ObjectLockUnavailable when a lock or legal hold is asked for (with no arguments:
        always, since a directory has no Object Lock)."""
        if lock is not None or legal_hold:
            raise ObjectLockUnavailable(
                f"{self.uri} is a local directory: it cannot hold S3 Object Lock retention or a legal "
                "hold; archive to an S3 bucket created with Object Lock enabled"
            )

    def lock_state(self, key: str) -> LockState | None:
        """None: a directory has no Object Lock."""
        return None

    def get_bytes(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        return self._path(key).stat().st_size

    def list(self, prefix: str = "") -> Iterator[str]:
        base = self._path(prefix) if prefix else self.root
        if base.is_file():
            yield prefix
            return
        if not base.exists():
            return
        for p in sorted(base.rglob("*")):
            if p.is_file() and not p.name.endswith(TMP_SUFFIX):
                yield p.relative_to(self.root).as_posix()

    def upload_file(
        self, key: str, path: Path, *, lock: ObjectLock | None = None, legal_hold: bool = False
    ) -> None:
        self.require_object_lock(lock, legal_hold)
        self._publish(key, lambda tmp: shutil.copyfile(path, tmp), overwrite=True)

    def download_file(self, key: str, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self._path(key), path)

    def delete(self, key: str) -> None:
        """Delete the object, then every folder it leaves empty up to the root: a folder is not an
        object, so a prefix with no object left must not show as one (as in S3)."""
        path = self._path(key)
        path.unlink(missing_ok=True)
        root = self.root.resolve()
        for folder in path.parents:
            if folder == root or root not in folder.parents:
                break
            try:
                folder.rmdir()
            except OSError:  # not empty (or a writer just made it): it stays
                break

    def list_info(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """`list`, with each object's size and modification time."""
        for key in self.list(prefix):
            try:
                st = self._path(key).stat()
            except FileNotFoundError:  # deleted since it was listed
                continue
            yield ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))


@dataclass(frozen=True)
class ServerSideEncryption:
    """How S3 encrypts the objects the platform writes (AWS S3 user guide, "Protecting data with
    server-side encryption"): SSE-S3 (keys the service manages, AES256), SSE-KMS (a KMS key, by
    `kms_key_id`, or the service's default key), SSE-C (the caller's own 256-bit key, sent with every
    write and every read; the service keeps only a salted HMAC of it, and S3 accepts it over HTTPS
    only)."""

    mode: Literal["SSE-S3", "SSE-KMS", "SSE-C"]
    kms_key_id: str | None = None
    customer_key: bytes | None = field(default=None, repr=False)  # 32 bytes, SSE-C only

    def __post_init__(self) -> None:
        if self.mode == "SSE-C" and (self.customer_key is None or len(self.customer_key) != 32):
            raise ValueError("encryption SSE-C needs a customer key of exactly 32 bytes (AES-256)")
        if self.mode != "SSE-C" and self.customer_key is not None:
            raise ValueError(f"encryption {self.mode}: a customer key is for SSE-C only")
        if self.mode != "SSE-KMS" and self.kms_key_id is not None:
            raise ValueError(f"encryption {self.mode}: kmsKeyId is for SSE-KMS only")

    def write_args(self) -> dict[str, Any]:
        """The PutObject/CreateMultipartUpload parameters (boto3 names)."""
        if self.mode == "SSE-S3":
            return {"ServerSideEncryption": "AES256"}
        if self.mode == "SSE-KMS":
            return {"ServerSideEncryption": "aws:kms"} | (
                {"SSEKMSKeyId": self.kms_key_id} if self.kms_key_id else {}
            )
        return self.read_args()

    def read_args(self) -> dict[str, Any]:
        """The GetObject/HeadObject parameters: the customer key for SSE-C (boto3 adds its MD5 and
        base64), nothing otherwise (S3 decrypts SSE-S3 and SSE-KMS objects on its own)."""
        if self.mode != "SSE-C":
            return {}
        assert self.customer_key is not None
        return {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": self.customer_key}


def _lock_args(lock: ObjectLock | None, legal_hold: bool) -> dict[str, Any]:
    args: dict[str, Any] = {}
    if lock is not None:
        args |= {"ObjectLockMode": lock.mode, "ObjectLockRetainUntilDate": lock.retain_until}
    if legal_hold:
        args["ObjectLockLegalHoldStatus"] = "ON"
    return args


class S3Store:
    def __init__(
        self,
        bucket: str,
        prefix: str,
        *,
        endpoint: str | None,
        region: str | None,
        credentials: Credentials | None,
        encryption: ServerSideEncryption | None = None,
        ca_bundle: str | None = None,
        read_timeout: float = READ_TIMEOUT_S,
    ) -> None:
        """`ca_bundle`: a PEM file of the CAs that sign the endpoint's certificate (None: the
        system's, or AWS_CA_BUNDLE when set); `read_timeout`: seconds an attempt may wait for a byte.
        Every request is tried at most MAX_ATTEMPTS times (connection errors, timeouts, throttling,
        5xx), and an error of this store names its cause through `explain`."""
        import boto3
        from botocore.config import Config

        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.read_timeout = read_timeout
        self.uri = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self.encryption = encryption
        self._write = encryption.write_args() if encryption else {}
        self._read = encryption.read_args() if encryption else {}
        self._object_lock: bool | None = None  # the bucket's Object Lock, once asked
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name=region or "us-east-1",
            aws_access_key_id=credentials.access_key_id if credentials else None,
            aws_secret_access_key=credentials.secret_access_key if credentials else None,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"total_max_attempts": MAX_ATTEMPTS, "mode": "standard"},
                connect_timeout=CONNECT_TIMEOUT_S,
                read_timeout=read_timeout,
                max_pool_connections=POOL_CONNECTIONS,
            ),
            verify=ca_bundle,
        )
        self._bucket_seen = -1e9  # time.monotonic() when a listing last showed the bucket exists

    def on_retry(self, tell: Callable[[str], None]) -> None:
        """Call `tell` with one line each time a request failed in a way botocore's "standard" mode
        tries again (no connection, a timeout, 429, 5xx) and attempts are left, for a person waiting on
        a command: without it a store that never answers is MAX_ATTEMPTS x READ_TIMEOUT_S of silence.
        Example: `s3://models/m: GetObject got no answer in 60 s (ReadTimeoutError); attempt 2 of 5
        follows`."""

        def needs_retry(attempts: int, caught_exception: Exception | None = None, response: Any = None,
                        operation: Any = None, **_: Any) -> None:  # fmt: skip
            if attempts >= MAX_ATTEMPTS:
                return
            if caught_exception is not None:
                error = type(caught_exception).__name__
                waited = {"ReadTimeoutError": self.read_timeout, "ConnectTimeoutError": CONNECT_TIMEOUT_S}
                why = f"got no answer{f' in {waited[error]:g} s' if error in waited else ''} ({error})"
            elif response is not None and (response[0].status_code >= 500 or response[0].status_code == 429):
                why = f"was answered {response[0].status_code}"
            else:
                return
            name = getattr(operation, "name", "a request")
            tell(f"{self.uri}: {name} {why}; attempt {attempts + 1} of {MAX_ATTEMPTS} follows")

        self.client.meta.events.register("needs-retry.s3", needs_retry)

    def _explain_head(self, error: Exception, key: str) -> None:
        """A HEAD answer has no body, so S3 cannot say there why it refused: a missing bucket reads
        as a missing key (404), refused credentials as access denied (403). Ask again with a request
        whose answer carries the error code (a listing of at most one key under `key`) and raise its
        error instead when it names another cause; return when the HEAD's answer stands."""
        import time

        from botocore.exceptions import ClientError

        code = _code(error) if isinstance(error, ClientError) else ""
        if code not in ("403", "404", "NotFound", "Forbidden", "AccessDenied"):
            return
        if code in ("404", "NotFound") and time.monotonic() - self._bucket_seen < BUCKET_SEEN_S:
            return
        try:
            self.client.list_objects_v2(Bucket=self.bucket, Prefix=self._key(key), MaxKeys=1)
        except ClientError as probe:
            if _code(probe) in _CREDENTIAL_CODES | _BUCKET_CODES:
                raise probe from None
            return
        self._bucket_seen = time.monotonic()

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def require_object_lock(self, lock: ObjectLock | None = None, legal_hold: bool = True) -> None:
        """Raises ObjectLockUnavailable, naming the bucket, when a lock or legal hold is asked for and
        the bucket has no Object Lock (which S3 lets one enable only on a versioned bucket, best at
        creation: `create_bucket(..., ObjectLockEnabledForBucket=True)`); with no arguments, whether
        the bucket has Object Lock at all. Asks the bucket once."""
        if lock is None and not legal_hold:
            return
        if self._object_lock is None:
            from botocore.exceptions import ClientError

            try:
                config = self.client.get_object_lock_configuration(Bucket=self.bucket)
                enabled = config.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled"
            except ClientError as e:
                if e.response.get("Error", {}).get("Code") != "ObjectLockConfigurationNotFoundError":
                    raise
                enabled = False
            self._object_lock = enabled
        if not self._object_lock:
            raise ObjectLockUnavailable(
                f"bucket {self.bucket!r} does not have Object Lock enabled: create the archive bucket "
                "with Object Lock (ObjectLockEnabledForBucket=True, `mc mb --with-lock`) or ask for no "
                "retention and no legal hold"
            )

    def _head(self, key: str) -> dict[str, Any]:
        """HEAD Object, with the cause of a refusal found by `_explain_head`."""
        from botocore.exceptions import ClientError

        try:
            return self.client.head_object(Bucket=self.bucket, Key=self._key(key), **self._read)
        except ClientError as e:
            self._explain_head(e, key)
            raise

    def lock_state(self, key: str) -> LockState:
        """The Object Lock of the current version of `key` (HEAD Object)."""
        head = self._head(key)
        return LockState(
            mode=head.get("ObjectLockMode"),
            retain_until=head.get("ObjectLockRetainUntilDate"),
            legal_hold=head.get("ObjectLockLegalHoldStatus") == "ON",
            version_id=head.get("VersionId") if head.get("VersionId") not in (None, "null") else None,
        )

    def put_bytes(
        self, key: str, data: bytes, *, overwrite: bool = True, lock: ObjectLock | None = None,
        legal_hold: bool = False,
    ) -> None:  # fmt: skip
        from botocore.exceptions import ClientError

        self.require_object_lock(lock, legal_hold)
        extra = {} if overwrite else {"IfNoneMatch": "*"}  # conditional write: never overwrite
        extra |= self._write | _lock_args(lock, legal_hold)
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **extra)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in (
                "PreconditionFailed",
                "ConditionalRequestConflict",
            ):
                raise ObjectExists(key) from e
            raise

    def get_bytes(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=self._key(key), **self._read)["Body"].read()

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._head(key)
            return True
        except ClientError as e:
            if _code(e) in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def size(self, key: str) -> int:
        return int(self._head(key)["ContentLength"])

    def list(self, prefix: str = "") -> Iterator[str]:
        strip = len(self.prefix) + 1 if self.prefix else 0
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self._key(prefix)
        ):
            for obj in page.get("Contents", []):
                yield obj["Key"][strip:]

    def upload_file(
        self, key: str, path: Path, *, lock: ObjectLock | None = None, legal_hold: bool = False
    ) -> None:
        self.require_object_lock(lock, legal_hold)
        extra = self._write | _lock_args(lock, legal_hold)
        self.client.upload_file(str(path), self.bucket, self._key(key), ExtraArgs=extra or None)

    def download_file(self, key: str, path: Path) -> None:
        from botocore.exceptions import ClientError

        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.client.download_file(self.bucket, self._key(key), str(path), ExtraArgs=self._read or None)
        except ClientError as e:  # the transfer starts with a HEAD
            self._explain_head(e, key)
            raise

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def list_info(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """`list`, with each object's Size and LastModified, from the same ListObjectsV2 pages."""
        strip = len(self.prefix) + 1 if self.prefix else 0
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self._key(prefix)
        ):
            for obj in page.get("Contents", []):
                yield ObjectInfo(obj["Key"][strip:], int(obj["Size"]), obj["LastModified"].astimezone(UTC))


class StoreCache:
    """Stores opened once per location and credentials, and reused: an S3 client costs tens of
    milliseconds and a connection pool to build, and an operator reads the same few registries on
    every resync. Least recently used entries go beyond `size`; safe across threads.

    The key is a SHA-256 digest of the location and the credentials, so no secret is kept as a key.
    """

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._stores: OrderedDict[str, ObjectStore] = OrderedDict()
        self._lock = threading.Lock()

    def open(
        self,
        location: ObjectStorageLocation,
        credentials: Credentials | None = None,
        *,
        customer_key: bytes | None = None,
        ca_bundle: str | None = None,
    ) -> ObjectStore:
        """`open_store`'s store for these arguments, opened once. `ca_bundle`: a PEM file (the
        operator writes the ConfigMap that `s3.caBundle` names to one: llmops/operators/secrets.py)."""
        secret = [credentials.access_key_id, credentials.secret_access_key] if credentials else None
        if customer_key is not None:
            secret = [*(secret or []), customer_key.hex()]
        fingerprint = [location.to_dict(), secret, ca_bundle]
        key = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()
        with self._lock:
            if (store := self._stores.get(key)) is not None:
                self._stores.move_to_end(key)
                return store
        store = open_store(location, credentials, customer_key=customer_key, ca_bundle=ca_bundle)
        with self._lock:
            self._stores[key] = store
            while len(self._stores) > self.size:
                self._stores.popitem(last=False)
        return store

    def __len__(self) -> int:
        return len(self._stores)


CA_MOUNT_ROOT = "/etc/llmops/ca"  # where the operators mount the ConfigMaps that s3.caBundle names


def ca_bundle_path(location: ObjectStorageLocation) -> str | None:
    """Where a pod finds the CA bundle that `location.s3.caBundle` names:
    /etc/llmops/ca/<ConfigMap>/<key> (the operators mount it there: llmops/operators/manifests.py
    `ca_bundle_mounts`); None for a location that names none."""
    ref = location.s3.ca_bundle if location.s3 else None
    return f"{CA_MOUNT_ROOT}/{ref.name}/{ref.key}" if ref else None


def open_store(
    location: ObjectStorageLocation,
    credentials: Credentials | None = None,
    *,
    customer_key: bytes | None = None,
    ca_bundle: str | None = None,
) -> ObjectStore:
    """The store for `location`; `credentials` are the values of its credentialsSecretRef, if any.

    TLS: the endpoint's certificate is verified against `ca_bundle` (a PEM file) when given, else
    against the bundle mounted at `ca_bundle_path(location)` when the location names one and it is
    there, else as boto3 does it (AWS_CA_BUNDLE when set, then the system's CAs). A certificate none
    of them signed fails with the cause "tls" (`explain`).

    `s3.encryption` applies to every write (and, for SSE-C, every read) through the store;
    `customer_key`: the 32 bytes of its customerKeySecretRef (base64-decoded) for SSE-C. Raises
    ValueError naming the field for SSE-C without a key (or a key of another length).
    """
    if location.local:
        return LocalStore(Path(location.local.path))
    assert location.s3 is not None
    s3 = location.s3
    encryption = None
    if s3.encryption is not None:
        if s3.encryption.mode == "SSE-C" and customer_key is None:
            raise ValueError(
                f"{location.uri}: s3.encryption.mode SSE-C needs the customer key from "
                f"customerKeySecretRef {s3.encryption.customer_key_secret_ref.name!r}"  # type: ignore[union-attr]
            )
        encryption = ServerSideEncryption(
            s3.encryption.mode,
            kms_key_id=s3.encryption.kms_key_id,
            customer_key=customer_key if s3.encryption.mode == "SSE-C" else None,
        )
    if ca_bundle is None and (mounted := ca_bundle_path(location)) and Path(mounted).is_file():
        ca_bundle = mounted
    return S3Store(
        s3.bucket,
        s3.prefix or "",
        endpoint=s3.endpoint,
        region=s3.region,
        credentials=credentials,
        encryption=encryption,
        ca_bundle=ca_bundle,
    )
