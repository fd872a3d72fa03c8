"""The audit trail: an append-only, hash-chained log of lifecycle actions in object storage.

Every lifecycle action of every operator (a TrainingJob started or finished, a deployment rolled out, a
canary promoted or rolled back, a retraining triggered, an alias moved, a retirement step, ...) and every
alias move or registration made with the `llmops` command becomes one record.

Records are CloudEvents 1.0 (https://github.com/cloudevents/spec, JSON format) whose `data` says who did
what to which object:

    {"specversion": "1.0", "id": "<uuid4>", "source": "/llmops/operator", "type": "io.llmops.<action>",
     "time": "2026-11-30T10:05:00.123456+00:00", "subject": "<namespace>/<kind>/<name>",
     "datacontenttype": "application/json",
     "data": {"sequence": 7, "actor": {"type": "operator", "name": "...", "onBehalfOf": "alice"},
              "action": "modeldeployment.promoted", "object": {"kind", "namespace", "name", "uid"},
              "model": "support-bot", "version": "3", "digests": {"model/config.json": "<sha256>"},
              "reason": "Promoted", "details": {"message": "..."},
              "previous": "<sha256 hex of record 6>", "hash": "<sha256 hex of this record>"}}

The chain (after RFC 6962's idea of a log whose every entry commits to all before it):
- record N lives at `<prefix>/records/<N, 12 digits>.json`, N counting from 1, and says so in
  `data.sequence`;
- `data.previous` is record N-1's `data.hash`; record 1's is GENESIS (64 zeros);
- `data.hash` is the SHA-256 (hex) of the record's canonical form with `data.hash` left out.

The canonical form (`canonical`): the record as JSON with object keys sorted, no insignificant
whitespace (separators "," and ":"), non-ASCII characters kept as UTF-8, encoded as UTF-8: Python's
`json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()`. Records hold
only strings, integers, booleans, null, lists and objects (no floats), so this equals RFC 8785 (JCS)
for them.

What verification catches: an edited record (its hash no longer matches), a deleted one (a gap in
the sequence), records reordered or one inserted (a sequence or `previous` that does not match).
Someone who can rewrite *every* record after the one they change can forge a consistent chain: compare
the head hash with one noted elsewhere (`verify(expect_head=...)`, and every record's hash is in the
Kubernetes Event that mirrors it), and keep the log in an S3 Object Lock bucket (`LockSettings`, written
through storage's `ObjectLock`) so records cannot be rewritten or deleted before their retention ends.

Appending is safe with several writers (the operator, people with the CLI): a record is written with
a conditional create (S3 If-None-Match; a hard link on a local disk) at the next sequence number; a
writer that loses the race reads the new head and tries again. The head is cached, so an append reads
and writes one object in the common case and never lists the log.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import re
import threading
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from llmops.storage import Credentials, ObjectExists, ObjectLock, ObjectStore, S3Store, open_store

log = logging.getLogger(__name__)

GENESIS = "0" * 64
RECORDS = "records/"
SEQUENCE_DIGITS = 12
TYPE_PREFIX = "io.llmops."
SPECVERSION = "1.0"
MAX_APPEND_ATTEMPTS = 100

# Environment of the operator (set by the Helm chart, deploy/charts/llmops/values.yaml `audit`) and of
# the `llmops audit` commands. Without AUDIT_ENV, nothing is written to storage.
AUDIT_ENV = "LLMOPS_AUDIT"  # s3://bucket/prefix or a directory
CREDENTIALS_PREFIX = "LLMOPS_AUDIT_"  # LLMOPS_AUDIT_AWS_ACCESS_KEY_ID, ..._SECRET_ACCESS_KEY
LOCK_MODE_ENV = "LLMOPS_AUDIT_LOCK_MODE"  # GOVERNANCE or COMPLIANCE
LOCK_DAYS_ENV = "LLMOPS_AUDIT_LOCK_DAYS"
ENDPOINT_ENV = "LLMOPS_AUDIT_S3_ENDPOINT"  # else AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL
REGION_ENV = "LLMOPS_AUDIT_S3_REGION"  # else AWS_REGION / AWS_DEFAULT_REGION


# Stamped on llmops objects by the operator's mutating admission webhook: the Kubernetes user name of
# the person who created the object or last changed its spec or an llmops annotation. The operator's
# records name that person as `actor.onBehalfOf` (llmops/operators/auditing.py).
REQUESTED_BY = "llmops.io/requested-by"


class AuditError(Exception):
    """The audit log cannot be read or written as asked."""


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class Actor(_Model):
    """Who acted. `type`: "user" (a person, by the Kubernetes user name admission saw), "operator" (the
    operator, by its own identity; `on_behalf_of` names the person whose change it acted on, from the
    `llmops.io/requested-by` annotation the admission webhook stamps) or "cli" (the `llmops` command,
    by `--by` or the OS user)."""

    type: Literal["user", "operator", "cli"]
    name: str
    on_behalf_of: str | None = None


class ObjectRef(_Model):
    """The object acted on (a Kubernetes object; for registry actions kind "ModelVersion" or "Alias")."""

    kind: str
    namespace: str = ""
    name: str
    uid: str = ""


Scalar = str | int | bool | None


class AuditData(_Model):
    """What a record says; see the module docstring for the chain fields."""

    sequence: int = Field(ge=1)
    actor: Actor
    action: str  # "<kind, lower case>.<what happened>", e.g. "trainingjob.started", "alias.moved"
    object: ObjectRef
    model: str | None = None
    version: str | None = None
    digests: dict[str, str] = Field(default_factory=dict)  # name -> sha256 hex
    reason: str = ""
    details: dict[str, Scalar | list[str]] = Field(default_factory=dict)
    previous: str
    hash: str = ""


class AuditRecord(_Model):
    """One CloudEvents 1.0 event (JSON format) of the log."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")  # CloudEvents names are lower case

    specversion: Literal["1.0"] = SPECVERSION
    id: str
    source: str
    type: str
    time: str  # RFC 3339, UTC, microseconds
    subject: str
    datacontenttype: Literal["application/json"] = "application/json"
    data: AuditData

    def document(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)

    def computed_hash(self) -> str:
        body = self.document()
        body["data"].pop("hash", None)
        return hashlib.sha256(canonical(body)).hexdigest()


def canonical(value: Any) -> bytes:
    """The canonical JSON form the hashes are taken over (see the module docstring)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class Entry:
    """What a writer says about one action; the log adds the id, time, sequence and hashes."""

    actor: Actor
    action: str
    object: ObjectRef
    model: str | None = None
    version: str | None = None
    digests: Mapping[str, str] | None = None
    reason: str = ""
    details: Mapping[str, Scalar | list[str]] | None = None
    source: str = "/llmops/operator"


def record_key(sequence: int) -> str:
    return f"{RECORDS}{sequence:0{SEQUENCE_DIGITS}d}.json"


def _sequence_of(key: str) -> int | None:
    name = key.removeprefix(RECORDS)
    if "/" in name or not name.endswith(".json"):
        return None
    digits = name.removesuffix(".json")
    return int(digits) if len(digits) == SEQUENCE_DIGITS and digits.isdigit() else None


@dataclass(frozen=True)
class LockSettings:
    """S3 Object Lock retention given to every record: `mode` GOVERNANCE or COMPLIANCE, for `days`
    from the moment it is written (https://docs.aws.amazon.com/AmazonS3/latest/userguide/object-lock.html).
    The bucket must have been created with Object Lock enabled."""

    mode: Literal["GOVERNANCE", "COMPLIANCE"]
    days: int


@dataclass(frozen=True)
class Verification:
    """The result of `AuditLog.verify`: `count` records read; `broken_at` the sequence number of the
    first record that breaks the chain (None when intact) and `problem` why; `head` the hash of the
    last intact record (GENESIS for an empty log)."""

    count: int
    head: str
    broken_at: int | None = None
    problem: str = ""

    @property
    def ok(self) -> bool:
        return self.broken_at is None

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "count": self.count, "head": self.head, "brokenAt": self.broken_at,
                "problem": self.problem}  # fmt: skip


def _parse_time(value: str) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


class AuditLog:
    """The log at one storage location. Thread-safe within a process; safe across processes."""

    def __init__(self, store: ObjectStore, lock: LockSettings | None = None) -> None:
        """`lock`: each record's Object Lock retention; a store that cannot lock (a directory) is
        refused here (AuditError), a bucket without Object Lock at the first append
        (storage.ObjectLockUnavailable), rather than write records unlocked."""
        if lock is not None and not isinstance(store, S3Store):
            raise AuditError("Object Lock retention needs an S3 location")
        self.store = store
        self.lock = lock
        self.uri = store.uri
        self._head: tuple[int, str] | None = None  # (sequence, hash) of the last record seen
        self._mutex = threading.Lock()

    # -- writing ---------------------------------------------------------------------------------

    def append(self, entry: Entry, *, now: dt.datetime | None = None) -> AuditRecord:
        """Write `entry` as the next record and return it. Raises AuditError after MAX_APPEND_ATTEMPTS
        lost races, and the storage's own errors (no bucket, no access) as they are."""
        with self._mutex:
            sequence, previous = self._head if self._head is not None else self._find_head()
            for _ in range(MAX_APPEND_ATTEMPTS):
                record = self._build(entry, sequence + 1, previous, now)
                body = json.dumps(record.document(), sort_keys=True, indent=1, ensure_ascii=False).encode()
                lock = ObjectLock.for_days(self.lock.mode, self.lock.days) if self.lock else None
                try:
                    self.store.put_bytes(record_key(sequence + 1), body, overwrite=False, lock=lock)
                except ObjectExists:
                    sequence, previous = self._advance(sequence + 1)  # another writer took it
                    continue
                self._head = (sequence + 1, record.data.hash)
                return record
            raise AuditError(f"{self.uri}: no free sequence number after {MAX_APPEND_ATTEMPTS} attempts")

    @staticmethod
    def _build(entry: Entry, sequence: int, previous: str, now: dt.datetime | None) -> AuditRecord:
        obj = entry.object
        subject = "/".join(p for p in (obj.namespace, obj.kind.lower(), obj.name) if p)
        record = AuditRecord(
            id=str(uuid.uuid4()),
            source=entry.source,
            type=f"{TYPE_PREFIX}{entry.action}",
            time=(now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).isoformat(timespec="microseconds"),
            subject=subject,
            data=AuditData(
                sequence=sequence,
                actor=entry.actor,
                action=entry.action,
                object=obj,
                model=entry.model,
                version=entry.version,
                digests=dict(entry.digests or {}),
                reason=entry.reason,
                details=dict(entry.details or {}),
                previous=previous,
            ),
        )
        record.data.hash = record.computed_hash()
        return record

    def _find_head(self) -> tuple[int, str]:
        """The last record's (sequence, hash), by listing once; (0, GENESIS) for an empty log."""
        last = max((s for k in self.store.list(RECORDS) if (s := _sequence_of(k)) is not None), default=0)
        return self._advance(last) if last else (0, GENESIS)

    def _advance(self, sequence: int) -> tuple[int, str]:
        """From record `sequence` (which exists) read forward to the last one; no listing."""
        head = (sequence, self._read(sequence).data.hash)
        while self.store.exists(record_key(head[0] + 1)):
            head = (head[0] + 1, self._read(head[0] + 1).data.hash)
        return head

    def _read(self, sequence: int) -> AuditRecord:
        return AuditRecord.model_validate_json(self.store.get_bytes(record_key(sequence)))

    # -- reading ---------------------------------------------------------------------------------

    def _keys(self) -> list[tuple[int, str]]:
        found = []
        for key in self.store.list(RECORDS):
            sequence = _sequence_of(key)
            if sequence is not None:
                found.append((sequence, key))
        return sorted(found)

    def all(self) -> Iterator[AuditRecord]:
        """Every readable record, in sequence order (no verification: see `verify`)."""
        for _, key in self._keys():
            try:
                yield AuditRecord.model_validate_json(self.store.get_bytes(key))
            except ValueError:
                log.warning("audit record %s is unreadable; skipped (llmops audit verify says more)", key)

    def records(
        self,
        *,
        model: str | None = None,
        version: str | None = None,
        kind: str | None = None,
        namespace: str | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
    ) -> list[AuditRecord]:
        """The records that match every filter given, oldest first. `kind` compares with the object's
        kind case-insensitively ("ModelDeployment", "modeldeployment"); `since` inclusive, `until`
        exclusive; naive datetimes are UTC."""

        def matches(r: AuditRecord) -> bool:
            d, at = r.data, _parse_time(r.time)
            return (
                (model is None or d.model == model)
                and (version is None or d.version == str(version))
                and (kind is None or d.object.kind.lower() == kind.lower())
                and (namespace is None or d.object.namespace == namespace)
                and (since is None or at >= (since if since.tzinfo else since.replace(tzinfo=dt.UTC)))
                and (until is None or at < (until if until.tzinfo else until.replace(tzinfo=dt.UTC)))
            )

        return [r for r in self.all() if matches(r)]

    def verify(self, *, expect_head: str | None = None) -> Verification:
        """Check the whole chain: sequence numbers 1..N without a gap, each record's hash over its
        canonical form, each `previous` equal to the record before's hash; and, given `expect_head`,
        that the chain contains a record with that hash, or a prefix of it of at least 12 hex digits as
        each Event carries it (a tail cut off or rewritten fails this). ValueError for a shorter one."""
        if expect_head is not None and not re.fullmatch(r"[0-9a-f]{12,64}", expect_head):
            raise ValueError(f"expect_head {expect_head!r}: 12 to 64 hex digits of a record's hash")
        previous, count, seen_expected = GENESIS, 0, expect_head is None
        for expected, (sequence, key) in enumerate(self._keys(), start=1):
            if sequence != expected:
                return Verification(count, previous, expected, f"record {expected} is missing")
            try:
                record = AuditRecord.model_validate_json(self.store.get_bytes(key))
            except ValueError as e:
                return Verification(count, previous, sequence, f"record {sequence} is unreadable: {e}"[:500])
            if record.data.sequence != sequence:
                return Verification(
                    count, previous, sequence,
                    f"record {sequence} says it is record {record.data.sequence} (moved or reordered)",
                )  # fmt: skip
            if record.computed_hash() != record.data.hash:
                return Verification(count, previous, sequence, f"record {sequence}: hash mismatch (edited)")
            if record.data.previous != previous:
                return Verification(
                    count, previous, sequence,
                    f"record {sequence} does not follow record {sequence - 1} (previous hash mismatch)",
                )  # fmt: skip
            previous, count = record.data.hash, count + 1
            seen_expected = seen_expected or previous.startswith(expect_head or "")
        if not seen_expected:
            return Verification(count, previous, count + 1, f"no record has the expected head {expect_head}")
        return Verification(count, previous)


# -- configuration ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditConfig:
    """Where the log lives: `uri` s3://bucket/prefix or a directory; S3 endpoint and region from
    `LLMOPS_AUDIT_S3_ENDPOINT`/`LLMOPS_AUDIT_S3_REGION`, else the standard AWS variables; credentials
    from `LLMOPS_AUDIT_AWS_ACCESS_KEY_ID` and `LLMOPS_AUDIT_AWS_SECRET_ACCESS_KEY`, else the standard
    `AWS_*` pair, else boto3's own chain (IRSA, an instance role)."""

    uri: str
    credentials: Credentials | None = None
    lock: LockSettings | None = None
    endpoint: str | None = None
    region: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AuditConfig | None:
        """The configuration in `env` (default: os.environ), None when LLMOPS_AUDIT is unset.
        Raises AuditError naming the variable for a bad lock mode or days."""
        env = os.environ if env is None else env
        uri = env.get(AUDIT_ENV, "").strip()
        if not uri:
            return None
        return cls(
            uri,
            _credentials(env),
            lock_settings(env.get(LOCK_MODE_ENV), env.get(LOCK_DAYS_ENV)),
            endpoint=env.get(ENDPOINT_ENV) or None,
            region=env.get(REGION_ENV) or None,
        )

    def open(self, env: Mapping[str, str] | None = None) -> AuditLog:
        """The log (no I/O yet). Raises ValueError for a location that is no s3:// URI or path."""
        from llmops.registry_cli import location  # the one parser of storage URIs

        env = dict(os.environ if env is None else env)
        if self.endpoint:
            env["AWS_ENDPOINT_URL_S3"] = self.endpoint
        if self.region:
            env["AWS_REGION"] = self.region
        return AuditLog(open_store(location(self.uri, env), self.credentials), self.lock)


def _credentials(env: Mapping[str, str]) -> Credentials | None:
    for prefix in (CREDENTIALS_PREFIX, ""):  # the same names credentials_from_env reads
        key, secret = env.get(f"{prefix}AWS_ACCESS_KEY_ID"), env.get(f"{prefix}AWS_SECRET_ACCESS_KEY")
        if key and secret:
            return Credentials(key, secret)
    return None


def lock_settings(mode: str | None, days: str | int | None) -> LockSettings | None:
    """LockSettings from a mode and days (both or neither); AuditError naming the setting when wrong."""
    if not mode and not days:
        return None
    mode = (mode or "").upper()
    if mode not in ("GOVERNANCE", "COMPLIANCE"):
        raise AuditError(f"{LOCK_MODE_ENV}: {mode or '(unset)'!r} is neither GOVERNANCE nor COMPLIANCE")
    try:
        count = int(days or 0)
    except ValueError:
        count = 0
    if count < 1:
        raise AuditError(f"{LOCK_DAYS_ENV}: {days!r} is not a whole number of days, at least 1")
    return LockSettings(mode, count)  # type: ignore[arg-type]
