"""The shared reconcile path every operator goes through.

parse the spec -> the kind's reconcile (pure builders + apply) -> one full status write.

A kind supplies only `reconcile(spec, ctx) -> Outcome`. Everything that must be the same for
every kind lives here: a malformed object becomes a Stalled condition and an Event instead of a
crash; Ready/Reconciling/Stalled with observedGeneration; metrics; retries for what will heal.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import kopf
import pydantic
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic.exceptions import DynamicApiError

from llmops import conditions
from llmops.api import Resource
from llmops.api.common import ApiModel
from operators import metrics
from operators.apply import Applier

Spec = TypeVar("Spec", bound=ApiModel)


@dataclass(frozen=True)
class Outcome:
    """Where an object stands after one reconcile.

    `state`: "ready" (does what the spec asks), "reconciling" (work in progress that should
    finish by itself) or "stalled" (stuck until someone changes something). `reason` and
    `message` explain it. `status` holds the kind's own status fields (snake_case, as in its
    pydantic status model).
    """

    state: conditions.State
    phase: str
    reason: str
    message: str
    status: dict[str, Any] = field(default_factory=dict)


@dataclass
class Context:
    """What a kind's reconcile may use: the object, the applier, and Events."""

    body: dict
    applier: Applier
    logger: logging.Logger | logging.LoggerAdapter

    @property
    def name(self) -> str:
        return self.body["metadata"]["name"]

    @property
    def namespace(self) -> str:
        return self.body["metadata"]["namespace"]

    def event(self, reason: str, message: str, *, warning: bool = False) -> None:
        kopf.event(self.body, type="Warning" if warning else "Normal", reason=reason, message=message)


@dataclass(frozen=True)
class Kind(Generic[Spec]):
    """One custom resource the operator reconciles: its registry entry and its reconcile."""

    resource: Resource
    reconcile: Callable[[Spec, Context], Outcome]


def describe_validation_error(error: pydantic.ValidationError, prefix: str = "spec") -> str:
    """`spec.method.lora.r: Input should be greater than 0; ...` (field paths, never values)."""
    parts = []
    for e in error.errors(include_url=False, include_input=False):
        path = ".".join([prefix, *(str(p) for p in e["loc"])])
        parts.append(f"{path}: {e['msg']}")
    return "; ".join(parts)[:2000]


def status_patch(resource: Resource, body: dict, outcome: Outcome, now: dt.datetime | None = None) -> dict:
    """The full status to write: the kind's fields, phase, message, conditions, observedGeneration."""
    generation = body.get("metadata", {}).get("generation", 0)
    try:
        current = resource.status.model_validate(body.get("status") or {})
    except pydantic.ValidationError:
        current = resource.status()  # an unreadable status is rewritten whole
    status = current.model_copy(
        update={
            **outcome.status,
            "phase": outcome.phase,
            "message": outcome.message,
            "conditions": conditions.standard(
                current.conditions,
                outcome.state,
                outcome.reason,
                outcome.message,
                generation,
                now or dt.datetime.now(dt.UTC),
            ),
        }
    )
    # Re-validate so a kind's status fields are checked against the model before they are written.
    status = resource.status.model_validate(status.model_dump(by_alias=True))
    return conditions.status_patch(status, generation)


def _heals(error: Exception) -> bool:
    """API errors worth a retry: conflicts, throttling, server errors, timeouts."""
    status = getattr(error, "status", None)
    return isinstance(error, ApiException | DynamicApiError) and (
        status is None or status in (409, 429) or status >= 500
    )


def reconcile(kind: Kind, body: dict, applier: Applier, logger: Any, patch: kopf.Patch) -> None:
    """Run one reconcile of `body` and put the full status into kopf's `patch`.

    Never raises on a malformed object: that becomes Stalled plus a Warning Event. API errors
    that will heal become Reconciling and a retry; anything else is Stalled (InternalError).
    """
    resource = kind.resource
    ctx = Context(body=body, applier=applier, logger=logger)
    with metrics.timed(resource.kind):
        try:
            spec = resource.spec.model_validate(body.get("spec") or {})
        except pydantic.ValidationError as e:
            message = describe_validation_error(e)
            ctx.event("InvalidSpec", f"{message}. Fix the spec; nothing was changed.", warning=True)
            return _write(patch, resource, body, Outcome("stalled", "Failed", "InvalidSpec", message))
        try:
            outcome = kind.reconcile(spec, ctx)
            status = status_patch(resource, body, outcome)  # a kind's bad status field is a bug too
        except kopf.PermanentError as e:
            ctx.event("ReconcileFailed", str(e), warning=True)
            return _write(patch, resource, body, Outcome("stalled", "Failed", "ReconcileFailed", str(e)))
        except Exception as e:
            phase = (body.get("status") or {}).get("phase") or "Pending"
            if _heals(e):
                message = f"{type(e).__name__} from the API while reconciling; retrying"
                _write(patch, resource, body, Outcome("reconciling", phase, "Retrying", message))
                raise kopf.TemporaryError(message, delay=10) from e
            # A bug or an unexpected object: say so on the object; do not crash or spin.
            metrics.ERRORS.labels(resource.kind, type(e).__name__).inc()
            logger.exception("reconcile failed")
            message = f"internal error ({type(e).__name__}); see the operator log"
            ctx.event("InternalError", message, warning=True)
            return _write(patch, resource, body, Outcome("stalled", "Failed", "InternalError", message))
        patch.status.update(status)
        metrics.RECONCILES.labels(resource.kind, outcome.state).inc()


def _write(patch: kopf.Patch, resource: Resource, body: dict, outcome: Outcome) -> None:
    patch.status.update(status_patch(resource, body, outcome))
    metrics.RECONCILES.labels(resource.kind, "retry" if outcome.reason == "Retrying" else outcome.state).inc()


def register(kind: Kind, registry: kopf.OperatorRegistry) -> None:
    """One idempotent reconcile for create, update and resume (kopf runs it once per change)."""
    from llmops.api import GROUP, VERSION

    plural = kind.resource.plural

    @kopf.on.resume(GROUP, VERSION, plural, id="reconcile", registry=registry)
    @kopf.on.create(GROUP, VERSION, plural, id="reconcile", registry=registry)
    @kopf.on.update(GROUP, VERSION, plural, id="reconcile", registry=registry)
    def handler(body: kopf.Body, patch: kopf.Patch, logger: Any, memo: kopf.Memo, **_: Any) -> None:
        reconcile(kind, dict(body), memo.applier, logger, patch)
