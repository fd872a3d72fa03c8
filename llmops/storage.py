"""Object storage behind one small interface: an S3-compatible bucket (boto3) or a local directory.

Workloads, the operator and the gateway all address storage through `ObjectStorageLocation`
(llmops.api.common); credentials come from a Secret the caller has already read, never from
the spec itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from llmops.api.common import ObjectStorageLocation

TMP_SUFFIX = ".tmp"  # a local object being written; never listed


class ObjectExists(Exception):
    """A write that must not overwrite found the key already there."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One listed object: its key (relative to the location), size in bytes, and when it was last
    written (S3 LastModified; a file's mtime), timezone-aware UTC."""

    key: str
    size: int
    modified: datetime


class ObjectStore(Protocol):
    """Keys are '/'-separated paths relative to the location's prefix."""

    uri: str

    def put_bytes(self, key: str, data: bytes, *, overwrite: bool = True) -> None: ...
    def get_bytes(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str = "") -> Iterator[str]: ...
    def upload_file(self, key: str, path: Path) -> None: ...
    def download_file(self, key: str, path: Path) -> None: ...
    def delete(self, key: str) -> None: ...
    def list_info(self, prefix: str = "") -> Iterator[ObjectInfo]: ...


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str

    def __repr__(self) -> str:  # never print secrets
        return "Credentials(***)"


def credentials_from_env(prefix: str = "") -> Credentials | None:
    """`{prefix}AWS_ACCESS_KEY_ID` and `{prefix}AWS_SECRET_ACCESS_KEY` when both are set, else None
    (then boto3 finds the pod's own identity, IRSA or an instance role).

    The one convention of every pod the operators make: each location's Secret reaches the pod by
    `secretKeyRef` under these names (llmops/operators/manifests.py `credentials_env`), one prefix a location
    where a pod reads more than one; the values never pass through the operator.
    """
    key = os.environ.get(f"{prefix}AWS_ACCESS_KEY_ID")
    secret = os.environ.get(f"{prefix}AWS_SECRET_ACCESS_KEY")
    return Credentials(key, secret) if key and secret else None


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
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
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

    def put_bytes(self, key: str, data: bytes, *, overwrite: bool = True) -> None:
        self._publish(key, lambda tmp: tmp.write_bytes(data), overwrite=overwrite)

    def get_bytes(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

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

    def upload_file(self, key: str, path: Path) -> None:
        self._publish(key, lambda tmp: shutil.copyfile(path, tmp), overwrite=True)

    def download_file(self, key: str, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self._path(key), path)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def list_info(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """`list`, with each object's size and modification time."""
        for key in self.list(prefix):
            try:
                st = self._path(key).stat()
            except FileNotFoundError:  # deleted since it was listed
                continue
            yield ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))


class S3Store:
    def __init__(
        self,
        bucket: str,
        prefix: str,
        *,
        endpoint: str | None,
        region: str | None,
        credentials: Credentials | None,
    ) -> None:
        import boto3
        from botocore.config import Config

        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name=region or "us-east-1",
            aws_access_key_id=credentials.access_key_id if credentials else None,
            aws_secret_access_key=credentials.secret_access_key if credentials else None,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 5, "mode": "standard"}),
        )

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def put_bytes(self, key: str, data: bytes, *, overwrite: bool = True) -> None:
        from botocore.exceptions import ClientError

        extra = {} if overwrite else {"IfNoneMatch": "*"}  # conditional write: never overwrite
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
        return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def list(self, prefix: str = "") -> Iterator[str]:
        strip = len(self.prefix) + 1 if self.prefix else 0
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self._key(prefix)
        ):
            for obj in page.get("Contents", []):
                yield obj["Key"][strip:]

    def upload_file(self, key: str, path: Path) -> None:
        self.client.upload_file(str(path), self.bucket, self._key(key))

    def download_file(self, key: str, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.client.download_file(self.bucket, self._key(key), str(path))

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

    def open(self, location: ObjectStorageLocation, credentials: Credentials | None = None) -> ObjectStore:
        secret = [credentials.access_key_id, credentials.secret_access_key] if credentials else None
        key = hashlib.sha256(json.dumps([location.to_dict(), secret], sort_keys=True).encode()).hexdigest()
        with self._lock:
            if (store := self._stores.get(key)) is not None:
                self._stores.move_to_end(key)
                return store
        store = open_store(location, credentials)
        with self._lock:
            self._stores[key] = store
            while len(self._stores) > self.size:
                self._stores.popitem(last=False)
        return store

    def __len__(self) -> int:
        return len(self._stores)


def open_store(location: ObjectStorageLocation, credentials: Credentials | None = None) -> ObjectStore:
    """The store for `location`; `credentials` are the values of its credentialsSecretRef, if any."""
    if location.local:
        return LocalStore(Path(location.local.path))
    assert location.s3 is not None
    s3 = location.s3
    return S3Store(
        s3.bucket, s3.prefix or "", endpoint=s3.endpoint, region=s3.region, credentials=credentials
    )
