"""The Ray Jobs API, as the TrainingJob operator uses it: look up, submit, stop, find by owner.

Behind a small interface (`JobsApi`) so that the operator's logic is tested without Ray, and so
that `ray` is imported only when a TrainingJob asks for `runtime.type: rayJobsAPI`: the operator
starts, and serves every other object, without it.

Job details travel as plain dicts with the fields of Ray's `JobDetails` that we use: submission_id,
status (PENDING, RUNNING, STOPPED, SUCCEEDED, FAILED), message, error_type, entrypoint, metadata,
start_time and end_time (milliseconds since the epoch).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol

FIELDS = (
    "submission_id",
    "status",
    "message",
    "error_type",
    "entrypoint",
    "metadata",
    "start_time",
    "end_time",
)


class RayUnavailable(Exception):
    """Ray cannot be reached, or its client is not installed; the message says which, never a secret."""


class JobsApi(Protocol):
    def get(self, submission_id: str) -> dict[str, Any] | None: ...
    def find(self, metadata_key: str, value: str) -> list[dict[str, Any]]: ...
    def submit(self, submission_id: str, entrypoint: str, metadata: dict[str, str]) -> None: ...
    def stop(self, submission_id: str) -> None: ...


def _details(info: Any) -> dict[str, Any]:
    out = {name: getattr(info, name, None) for name in FIELDS}
    out["status"] = getattr(out["status"], "value", out["status"])
    return out


def _not_found(error: Exception) -> bool:
    return "404" in str(error) or "does not exist" in str(error)


class RayJobsApi:
    """`ray.job_submission.JobSubmissionClient` for one Ray dashboard address."""

    def __init__(self, address: str) -> None:
        try:
            from ray.job_submission import JobSubmissionClient
        except ImportError as e:
            raise RayUnavailable(
                "the operator cannot submit to a Ray cluster: the `ray[default]` package is not "
                "installed in the operator image"
            ) from e
        self.address = address
        try:
            self.client = JobSubmissionClient(address)
        except Exception as e:  # connection refused, DNS, version check
            raise RayUnavailable(f"cannot reach the Ray Jobs API at {address} ({type(e).__name__})") from e

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except RuntimeError:
            raise  # an answer from the Jobs API; the caller decides
        except Exception as e:  # requests' ConnectionError, timeouts
            raise RayUnavailable(f"{what} at {self.address} failed ({type(e).__name__})") from e

    def get(self, submission_id: str) -> dict[str, Any] | None:
        try:
            return _details(self._call("looking up a job", lambda: self.client.get_job_info(submission_id)))
        except RuntimeError as e:
            if _not_found(e):
                return None
            raise RayUnavailable(f"looking up job {submission_id} at {self.address} failed: {e}") from e

    def find(self, metadata_key: str, value: str) -> list[dict[str, Any]]:
        jobs = self._call("listing jobs", self.client.list_jobs)
        found = [_details(j) for j in jobs if (getattr(j, "metadata", None) or {}).get(metadata_key) == value]
        return sorted(found, key=lambda j: j.get("start_time") or 0)

    def submit(self, submission_id: str, entrypoint: str, metadata: dict[str, str]) -> None:
        try:
            self._call(
                "submitting a job",
                lambda: self.client.submit_job(
                    entrypoint=entrypoint, submission_id=submission_id, metadata=metadata
                ),
            )
        except RuntimeError as e:
            if "already exists" in str(e):
                return  # submitted before (by us, with this deterministic id): that is success
            raise RayUnavailable(f"submitting job {submission_id} to {self.address} failed: {e}") from e

    def stop(self, submission_id: str) -> None:
        try:
            self._call("stopping a job", lambda: self.client.stop_job(submission_id))
        except RuntimeError as e:
            if not _not_found(e):
                raise RayUnavailable(f"stopping job {submission_id} at {self.address} failed: {e}") from e


_clients: dict[str, JobsApi] = {}
_lock = threading.Lock()


def connect(address: str) -> JobsApi:
    """A client for `address`, shared between reconciles (connecting checks versions: two requests)."""
    with _lock:
        client = _clients.get(address)
    if client is None:
        client = RayJobsApi(address)
        with _lock:
            _clients[address] = client
    return client


def forget(address: str) -> None:
    """Drop a cached client (after it failed), so the next reconcile connects afresh."""
    with _lock:
        _clients.pop(address, None)
