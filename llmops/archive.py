"""A registry version's end of life: a verified archive (with S3 Object Lock where asked), then its
deletion behind a tombstone.

    archive_version(source, name, version, target, lock=..., legal_hold=..., extra=...) -> ArchiveReceipt
    verify_archive(target, receipt) -> list of problems ([] when the archive holds what it claims)
    delete_version(source, name, version, target=..., receipt=..., actor=..., reason=...) -> Tombstone

The archive copies every object under the version's prefix (llmops.registry.version_prefix: the
claim, the files under model/, manifest.json with its lineage, gates and metrics, and anything else
there) to the same keys in `target`, plus the caller's `extra` objects (audit records, the
post-mortem) beside them, then reads every copied object back and hashes it with sha256: against
the manifest's digest for the files the manifest lists, against the digest of the source bytes for
the rest. An S3 ETag is no content hash (multipart and SSE-KMS objects have other ETags; AWS S3 API
reference, "Checking object integrity"), so nothing here trusts one. Only then is the receipt,
`<prefix>/ARCHIVE.json`, written in the target: every key, size, sha256, the Object Lock each
object carries as read back (mode, retain-until, legal hold), when, and the source location. A
receipt therefore never claims more than was verified; a call cut off mid-copy leaves no receipt,
and the next call resumes, skipping each object already in the target whose read-back hash and lock
are right.

The deletion refuses while an alias names the version (VersionInUse) and unless `verify_archive`
of the receipt comes back clean (ArchiveNotVerified): no byte is deleted before a verified archive.
It writes the tombstone first (create-only), then deletes the manifest (from then on the registry
answers VersionRetired, naming the archive) and the other objects; a call cut off mid-delete is
completed by the next one.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from llmops.registry import (
    MANIFEST,
    TOMBSTONE,
    RegistryError,
    Tombstone,
    VersionInUse,
    aliases,
    read_tombstone,
    read_version,
    version_prefix,
)
from llmops.registry import problems as validation_problems
from llmops.storage import LockState, ObjectExists, ObjectLock, ObjectStore, sha256_file

RECEIPT = "ARCHIVE.json"


class ArchiveError(RegistryError):
    """The archive could not be made or verified; the message says which object and why."""


class BrokenReceipt(ArchiveError):
    """A stored archive receipt that does not read as one. Every later read finds the same bytes, so
    retrying cannot help: a person must look at it."""


def read_receipt(target: ObjectStore, key: str) -> ArchiveReceipt:
    """The archive receipt at `key` in `target`. Raises BrokenReceipt naming the receipt and what is
    wrong with it (not JSON, or its fields) for one that does not read as a receipt."""
    try:
        return ArchiveReceipt.model_validate_json(target.get_bytes(key))
    except ValidationError as e:
        why = validation_problems(e)
        raise BrokenReceipt(f"the archive receipt {key} in {target.uri} is broken ({why})") from None


class ArchiveNotVerified(ArchiveError):
    """An archive that does not hold what its receipt claims; `problems` lists each finding."""

    def __init__(self, message: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{message}: " + "; ".join(problems[:10]) + (" ..." if len(problems) > 10 else ""))


class _Record(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")


class ArchivedObject(_Record):
    """One object of an archive as read back: `key` in the target store, `size` in bytes, `sha256`
    of its bytes (hex), the Object Lock it carries (`retain_until` ISO 8601 UTC; None: none), and
    `version_id`, the S3 object version verified (on a versioned bucket, such as every Object Lock
    bucket: the locked version stays readable by it even under a later overwrite)."""

    key: str
    size: int
    sha256: str
    lock_mode: str | None = None
    retain_until: str | None = None
    legal_hold: bool = False
    version_id: str | None = None


class ArchiveReceipt(_Record):
    """<prefix>/ARCHIVE.json in the target: what the archive holds, every object verified by sha256.

    `source`, `target`: store URIs; `key`: the receipt's own key in the target; `artifacts` and
    `manifest_sha256`: the manifest's file digests and the digest of its bytes; `lock_mode`,
    `retain_until`, `legal_hold`: the Object Lock asked for; `archived_at`: ISO 8601 UTC.
    """

    name: str
    version: str
    source: str
    target: str
    key: str
    manifest_sha256: str
    artifacts: dict[str, str]
    objects: list[ArchivedObject] = Field(default_factory=list)
    lock_mode: str | None = None
    retain_until: str | None = None
    legal_hold: bool = False
    archived_at: str


def _iso(when: dt.datetime | None) -> str | None:
    return when.astimezone(dt.UTC).isoformat(timespec="seconds") if when is not None else None


def _lock_problem(state: LockState | None, lock: ObjectLock | None, legal_hold: bool) -> str | None:
    """Why the lock read back falls short of the one asked for, or None when it holds."""
    if lock is not None:
        until = state.retain_until if state else None
        # S3 keeps the date to the millisecond (MinIO to the second): a second's slack.
        if (
            state is None
            or state.mode != lock.mode
            or until is None
            or (until < lock.retain_until - dt.timedelta(seconds=1))
        ):
            found = f"{state.mode} until {_iso(until)}" if state and state.mode else "no retention"
            return f"Object Lock {lock.mode} until {_iso(lock.retain_until)} asked for, {found} found"
    if legal_hold and not (state and state.legal_hold):
        return "legal hold asked for, none found"
    return None


def _read_back(store: ObjectStore, key: str, scratch: Path) -> tuple[str, int]:
    """sha256 (hex) and size of the object as the store returns it now."""
    path = scratch / "read-back"
    store.download_file(key, path)
    try:
        return sha256_file(path), path.stat().st_size
    finally:
        path.unlink(missing_ok=True)


def _verified(
    target: ObjectStore, key: str, digest: str, lock: ObjectLock | None, legal_hold: bool, scratch: Path
) -> tuple[ArchivedObject | None, str | None]:
    """The object at `key` as read back, if its sha256 is `digest` and it carries the lock; else the
    problem."""
    if not target.exists(key):
        return None, "missing"
    found, size = _read_back(target, key, scratch)
    if found != digest:
        return None, f"sha256 {found} read back, {digest} expected"
    state = target.lock_state(key)
    if (problem := _lock_problem(state, lock, legal_hold)) is not None:
        return None, problem
    return ArchivedObject(
        key=key,
        size=size,
        sha256=found,
        lock_mode=state.mode if state else None,
        retain_until=_iso(state.retain_until) if state else None,
        legal_hold=bool(state and state.legal_hold),
        version_id=state.version_id if state else None,
    ), None


def _written(
    target: ObjectStore,
    key: str,
    digest: str,
    write: Callable[[], None],
    lock: ObjectLock | None,
    legal_hold: bool,
    scratch: Path,
) -> ArchivedObject:
    """The object at `key` as read back, after `write` unless it reads back right already. Raises
    ArchiveError when what was written does not read back with `digest` and the lock."""
    done, _ = _verified(target, key, digest, lock, legal_hold, scratch)
    if done is None:
        write()
        done, problem = _verified(target, key, digest, lock, legal_hold, scratch)
        if done is None:
            raise ArchiveError(f"{target.uri}/{key} does not read back as written: {problem}")
    return done


def archive_version(
    source: ObjectStore,
    name: str,
    version: str,
    target: ObjectStore,
    *,
    lock: ObjectLock | None = None,
    legal_hold: bool = False,
    extra: Mapping[str, bytes] | None = None,
) -> ArchiveReceipt:
    """Copy `name`:`version` from the registry `source` to `target` (same keys), with `extra`
    objects (key relative to the version's prefix -> bytes) beside it; read everything back and
    verify it by sha256; write and return the receipt.

    `lock` and `legal_hold` set S3 Object Lock on every object written, the receipt included; the
    target must be a bucket with Object Lock enabled (ObjectLockUnavailable, naming the bucket, before
    anything is copied, otherwise). Restartable: an object already in the target with the right
    sha256 and lock is not copied again; when the receipt exists already, it is returned as it is.

    Raises VersionRetired / RegistryError for a version that is retired or does not exist,
    ArchiveError for a target that is the registry's own location,
    ArchiveError for a source file that does not match its manifest digest, a manifest file missing
    from the source, an `extra` key that clashes with the version's own, or an object that does not
    read back as written (then no receipt is written).
    """
    extra = dict(extra or {})
    if target.uri.rstrip("/") == source.uri.rstrip("/"):
        raise ArchiveError(f"the archive must be another location than the registry {source.uri}")
    manifest = read_version(source, name, version)
    prefix = version_prefix(name, version)
    receipt_key = f"{prefix}/{RECEIPT}"
    if read_tombstone(source, name, version) is not None:
        raise ArchiveError(f"{name}:{version} is being retired (its tombstone exists): its files may be gone")
    if lock is not None or legal_hold:
        target.require_object_lock(lock, legal_hold)
    if target.exists(receipt_key):
        return read_receipt(target, receipt_key)

    keys = sorted(k for k in source.list(f"{prefix}/") if k != receipt_key)
    model = {f"{prefix}/model/{rel}": digest for rel, digest in manifest.artifacts.items()}
    if missing := sorted(set(model) - set(keys)):
        raise ArchiveError(
            f"{name}:{version} in {source.uri}: manifest files missing from the source: {missing}"
        )
    for key in extra:
        if (
            not key.strip("/")
            or key.startswith("/")
            or ".." in key.split("/")
            or f"{prefix}/{key}" in {*keys, receipt_key}
            or (key == TOMBSTONE)
        ):
            raise ArchiveError(
                f"extra object {key!r} clashes with the version's own keys or leaves its prefix"
            )

    objects: list[ArchivedObject] = []
    manifest_sha256 = hashlib.sha256(source.get_bytes(f"{prefix}/{MANIFEST}")).hexdigest()
    with tempfile.TemporaryDirectory(prefix="llmops-archive-") as tmp:
        scratch = Path(tmp)
        for key in keys:
            expected = model.get(key)
            if expected is not None:  # a manifest file: its digest is known without reading the source
                done, _ = _verified(target, key, expected, lock, legal_hold, scratch)
                if done is not None:
                    objects.append(done)
                    continue
            copy = scratch / "copy"
            source.download_file(key, copy)
            digest = sha256_file(copy)
            if expected is not None and digest != expected:
                raise ArchiveError(
                    f"{source.uri}/{key}: sha256 {digest} does not match the manifest's {expected}; "
                    "nothing archived from a source that does not match its manifest"
                )
            write = functools.partial(target.upload_file, key, copy, lock=lock, legal_hold=legal_hold)
            objects.append(_written(target, key, digest, write, lock, legal_hold, scratch))
            copy.unlink()
        for rel, data in sorted(extra.items()):
            key, digest = f"{prefix}/{rel}", hashlib.sha256(data).hexdigest()
            write = functools.partial(target.put_bytes, key, data, lock=lock, legal_hold=legal_hold)
            objects.append(_written(target, key, digest, write, lock, legal_hold, scratch))

    receipt = ArchiveReceipt(
        name=name,
        version=version,
        source=source.uri,
        target=target.uri,
        key=receipt_key,
        manifest_sha256=manifest_sha256,
        artifacts=manifest.artifacts,
        objects=objects,
        lock_mode=lock.mode if lock else None,
        retain_until=_iso(lock.retain_until) if lock else None,
        legal_hold=legal_hold,
        archived_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
    body = receipt.model_dump_json(by_alias=True, indent=2).encode()
    try:
        target.put_bytes(receipt_key, body, overwrite=False, lock=lock, legal_hold=legal_hold)
    except ObjectExists:  # a concurrent archive of the same version finished first
        return read_receipt(target, receipt_key)
    if hashlib.sha256(target.get_bytes(receipt_key)).digest() != hashlib.sha256(body).digest():
        raise ArchiveError(f"{target.uri}/{receipt_key} does not read back as written")
    return receipt


def verify_archive(target: ObjectStore, receipt: ArchiveReceipt) -> list[str]:
    """Every way `target` differs from what `receipt` claims, one line each ("<key>: <problem>");
    [] for an archive that holds it all. Reads every object back and hashes it with sha256, and
    checks the Object Lock retention (mode, retain-until no earlier than recorded) each carries (a
    legal hold lifted since is no problem: lifting one is an authorised act that deletes nothing);
    checks that the receipt is stored in the target as given and that it covers every file of the
    manifest it names."""
    problems: list[str] = []
    if not target.exists(receipt.key):
        problems.append(f"{receipt.key}: the receipt is not in {target.uri}")
    else:
        try:
            if read_receipt(target, receipt.key) != receipt:
                problems.append(f"{receipt.key}: the stored receipt differs from the one given")
        except ArchiveError as e:
            problems.append(f"{receipt.key}: {e}")
    by_key = {o.key: o for o in receipt.objects}
    prefix = version_prefix(receipt.name, receipt.version)
    for rel, digest in receipt.artifacts.items():
        listed = by_key.get(f"{prefix}/model/{rel}")
        if listed is None or listed.sha256 != digest:
            problems.append(f"{prefix}/model/{rel}: in the manifest, not archived with its digest")
    if f"{prefix}/{MANIFEST}" not in by_key:
        problems.append(f"{prefix}/{MANIFEST}: not archived")
    with tempfile.TemporaryDirectory(prefix="llmops-verify-") as tmp:
        for obj in receipt.objects:
            lock = (
                ObjectLock(obj.lock_mode, dt.datetime.fromisoformat(obj.retain_until))  # type: ignore[arg-type]
                if obj.lock_mode and obj.retain_until
                else None
            )
            # A legal hold may be lifted by whoever may (s3:PutObjectLegalHold) without the archive
            # losing a byte: its retention and content are what must still hold.
            found, problem = _verified(target, obj.key, obj.sha256, lock, False, Path(tmp))
            if found is None:
                problems.append(f"{obj.key}: {problem}")
            elif found.size != obj.size:
                problems.append(f"{obj.key}: {found.size} bytes read back, {obj.size} recorded")
    return problems


def delete_version(
    source: ObjectStore,
    name: str,
    version: str,
    *,
    target: ObjectStore,
    receipt: ArchiveReceipt,
    actor: str,
    reason: str,
    archive_location: str | None = None,
) -> Tombstone:
    """Delete `name`:`version` from the registry `source` behind a tombstone, once its archive in
    `target` verifies against `receipt`; returns the tombstone.

    `actor`: who retires it ("user:<name>", "modelretirement/<namespace>/<name>"); `reason`: why;
    `archive_location`: where the archive is, for people (default: the receipt's target URI).
    Refuses, deleting nothing: VersionInUse while an alias names the version; ArchiveNotVerified when
    the receipt is for another version or manifest, leaves out an object of the version, or
    `verify_archive` finds a problem. Restartable: once the tombstone exists, a repeat deletes what
    is left and returns it.
    """
    prefix = version_prefix(name, version)
    if target.uri.rstrip("/") == source.uri.rstrip("/"):  # deleting would take the archive with it
        raise ArchiveNotVerified(
            f"{name}:{version} not deleted", [f"the archive is the registry {source.uri}"]
        )
    tombstone = read_tombstone(source, name, version)
    if tombstone is None:
        manifest = read_version(source, name, version)
        named = sorted(a for a, v in aliases(source, name).items() if v == version)
        if named:
            raise VersionInUse(
                f"{name}:{version} is still named by alias {', '.join(named)}: move the alias to another "
                "version first (llmops models alias set); nothing deleted"
            )
        problems = []
        manifest_bytes = source.get_bytes(f"{prefix}/{MANIFEST}")
        if (receipt.name, receipt.version) != (name, version):
            problems.append(f"the receipt is for {receipt.name}:{receipt.version}")
        if receipt.artifacts != manifest.artifacts or (
            receipt.manifest_sha256 != hashlib.sha256(manifest_bytes).hexdigest()
        ):
            problems.append("the receipt's manifest differs from the registry's")
        archived = {o.key for o in receipt.objects}
        problems += [f"{key}: not in the archive" for key in source.list(f"{prefix}/") if key not in archived]
        problems += verify_archive(target, receipt) if not problems else []
        if problems:
            raise ArchiveNotVerified(f"{name}:{version} not deleted: its archive does not verify", problems)
        tombstone = Tombstone(
            name=name,
            version=version,
            artifacts=manifest.artifacts,
            manifest_sha256=receipt.manifest_sha256,
            archive_location=archive_location or receipt.target,
            receipt_key=receipt.key,
            retain_until=receipt.retain_until,
            lock_mode=receipt.lock_mode,
            legal_hold=receipt.legal_hold,
            by=actor,
            reason=reason,
            at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        )
        try:
            source.put_bytes(
                f"{prefix}/{TOMBSTONE}", tombstone.model_dump_json(by_alias=True, indent=2).encode(),
                overwrite=False,
            )  # fmt: skip
        except ObjectExists:  # a concurrent retirement wrote it first: its record stands
            tombstone = read_tombstone(source, name, version)
            assert tombstone is not None
    # The manifest first: from then on the registry answers VersionRetired, never a half version.
    rest = sorted(
        k for k in source.list(f"{prefix}/") if k not in (f"{prefix}/{TOMBSTONE}", f"{prefix}/{MANIFEST}")
    )
    for key in [f"{prefix}/{MANIFEST}", *rest]:
        source.delete(key)
    return tombstone
