"""The one path of every lifecycle Event: an audit record (llmops/audit.py) and its Kubernetes Event.

Every Event an operator posts (`Context.event`, the runtime's `Announcements`, any kind's domain
Events, whatever kind comes next) goes through `Auditor.post`, which
1. appends an audit record: actor (the operator's identity, on behalf of the person the admission
   webhook stamped on the object as `llmops.io/requested-by`), action `<kind>.<reason in snake_case>`,
   the object, model, version, digests, the Event's reason and message;
2. posts the Kubernetes Event, its message ending in the record's sequence number and hash prefix
   (`[audit 42 1a2b3c4d5e6f]`), so the Event mirrors the record and notes the chain's head elsewhere.

Where the log lives is the operator's configuration (`LLMOPS_AUDIT...`, llmops/audit.py AuditConfig; the
Helm chart's `audit` values). Without it, Events still go out and the operator says once in its log
that auditing to storage is off. A record that cannot be written (storage away) never stops the
reconcile: the Event goes out without the suffix, the failure is logged and counted
(`llmops_audit_write_failures_total`).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf
from prometheus_client import Counter

from llmops.audit import REQUESTED_BY, Actor, AuditConfig, AuditLog, AuditRecord, Entry, ObjectRef

log = logging.getLogger(__name__)

OPERATOR_SOURCE = "/llmops/operator"
ADMISSION_SOURCE = "/llmops/admission"
EVENT_MESSAGE_LIMIT = 1024

WRITE_FAILURES = Counter(
    "llmops_audit_write_failures_total", "Audit records the operator could not write to storage", ["kind"]
)


@dataclass(frozen=True)
class Subject:
    """The model version an action concerns and the digests that pin it (name -> sha256 hex)."""

    model: str | None = None
    version: str | None = None
    digests: Mapping[str, str] = field(default_factory=dict)
    details: Mapping[str, Any] = field(default_factory=dict)


def action_name(kind: str, reason: str) -> str:
    """`ModelDeployment`, `AliasMoved` -> `modeldeployment.alias_moved`."""
    return f"{kind.lower()}.{re.sub(r'(?<!^)(?=[A-Z])', '_', reason).lower()}"


class Auditor:
    """The operator process's audit log (None: off) and its identity."""

    def __init__(self, audit: AuditLog | None, identity: str = "llmops-operator") -> None:
        self.log = audit
        self.identity = identity
        self._said_off = False
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, identity: str = "llmops-operator", env: Mapping[str, str] | None = None) -> Auditor:
        """From AuditConfig.from_env; a configuration error is logged and auditing stays off."""
        try:
            config = AuditConfig.from_env(env)
            audit = config.open(env) if config is not None else None
        except Exception as e:  # a bad setting must not keep the operator from running
            log.error("audit configuration unusable, auditing to storage is off: %s", e)
            audit = None
        auditor = cls(audit, identity)
        if audit is not None:
            log.info("audit records go to %s (lock: %s)", audit.uri, audit.lock)
        return auditor

    def actor(self, body: Mapping[str, Any]) -> Actor:
        person = ((body.get("metadata") or {}).get("annotations") or {}).get(REQUESTED_BY)
        return Actor(type="operator", name=self.identity, on_behalf_of=person or None)

    def record(
        self, body: Mapping[str, Any], reason: str, message: str, subject: Subject
    ) -> AuditRecord | None:
        """Append the record of the operator's action on `body` (on behalf of its requester); None when
        auditing is off or the write failed."""
        if self.log is None:
            with self._lock:
                if not self._said_off:
                    self._said_off = True
                    log.warning("auditing to storage is off (set LLMOPS_AUDIT); Events still go out")
            return None
        return self._append(body, self.actor(body), reason, message, subject, OPERATOR_SOURCE)

    def record_person(
        self, body: Mapping[str, Any], user: str, reason: str, message: str
    ) -> AuditRecord | None:
        """Append the record of a person's own action on `body`, seen at admission (a deletion)."""
        if self.log is None:
            return None
        return self._append(body, Actor(type="user", name=user), reason, message, Subject(), ADMISSION_SOURCE)

    def _append(
        self, body: Mapping[str, Any], actor: Actor, reason: str, message: str, subject: Subject, source: str
    ) -> AuditRecord | None:
        assert self.log is not None
        meta = body.get("metadata") or {}
        kind = body.get("kind") or "Unknown"
        entry = Entry(
            actor=actor,
            action=action_name(kind, reason),
            object=ObjectRef(
                kind=kind,
                namespace=meta.get("namespace") or "",
                name=meta.get("name") or "",
                uid=meta.get("uid") or "",
            ),
            model=subject.model,
            version=subject.version,
            digests=dict(subject.digests),
            reason=reason,
            details={"message": message, **{k: _scalar(v) for k, v in subject.details.items()}},
            source=source,
        )
        try:
            return self.log.append(entry)
        except Exception as e:  # storage away or refusing: the action happened; say so, go on
            WRITE_FAILURES.labels(kind).inc()
            log.error("could not write the audit record of %s %s/%s (%s): %s", kind,
                      meta.get("namespace"), meta.get("name"), reason, e)  # fmt: skip
            return None

    def post(
        self,
        body: Mapping[str, Any],
        reason: str,
        message: str,
        *,
        warning: bool = False,
        subject: Subject | None = None,
    ) -> AuditRecord | None:
        """Record the action, then post its Event (the record's sequence and hash in the message)."""
        record = self.record(body, reason, message, subject or Subject())
        text = message
        if record is not None:
            suffix = f" [audit {record.data.sequence} {record.data.hash[:12]}]"
            text = message[: EVENT_MESSAGE_LIMIT - len(suffix)] + suffix
        kopf.event(dict(body), type="Warning" if warning else "Normal", reason=reason, message=text)
        return record


def _scalar(value: Any) -> str | int | bool | list[str] | None:
    if value is None or isinstance(value, str | int | bool):
        return value
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    return str(value)


# Used where no operator process built one (unit tests of a kind, a Context made by hand): Events only.
EVENTS_ONLY = Auditor(None)
EVENTS_ONLY._said_off = True
