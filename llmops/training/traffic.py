"""Served traffic as training data (the data flywheel): the chat exchanges the gateway sampled,
filtered by the feedback users gave. Pure functions; ingest.py reads the files and calls them.

What the gateway writes under a ModelDeployment's `spec.gateway.payloadSampling.destination`
(llmops/serving/sampler.py: `<YYYY-MM-DD>/<HHMMSS>-<host>-<kind>-<seq>.jsonl`):

- payload samples, files whose names contain `-payload-`, one record a line:
  `{"id": "<completion id>", "time": <unix seconds>, "endpoint": "chat" | "completions", "version",
  "status": <HTTP status>, "request": {<the OpenAI request body>}, "completions": ["<text>", ...],
  "usage", "user"}`;
- feedback, files whose names contain `-feedback-`: `{"id": "fb_...", "completion_id", "name",
  "value", "user", "tenant", "model_deployment", "model", "version", "time"}`.

A training row is a chat exchange: `request.messages` and `{"role": "assistant", "content":
completions[0]}`, from a record with status 200 on the chat endpoint. Messages are the OpenAI
ones: a content that is a list of parts keeps its text parts joined; `developer` counts as `system`;
an exchange with any other role (tool calls) or without text is skipped. `sinceSeconds` keeps the
records whose `time` is at most that old when the job ingests them.

Feedback (`feedback: {name, minValue}`): for each (completion_id, name, user) the record with the
latest `time` counts (a repeat replaces the earlier value). A completion passes when it has at least
one such rating and every one of them is a number >= minValue (true counts as 1, false as 0; any
other value fails). Without `feedback`, every exchange is kept.

Every skipped record is counted by why (`SKIP_REASONS`), for the ingest summary and the lineage.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from llmops.training import chat

PAYLOAD_MARK = "-payload-"
FEEDBACK_MARK = "-feedback-"
SUFFIXES = (".jsonl", ".jsonl.gz")
SKIP_REASONS = ("status", "endpoint", "too_old", "messages", "feedback")


def is_payload(key: str) -> bool:
    name = key.rsplit("/", 1)[-1]
    return PAYLOAD_MARK in name and name.endswith(SUFFIXES)


def is_feedback(key: str) -> bool:
    name = key.rsplit("/", 1)[-1]
    return FEEDBACK_MARK in name and name.endswith(SUFFIXES)


def numeric(value: Any) -> float | None:
    """A feedback value as a number: numbers as they are, true 1, false 0; anything else None."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value)
    return None


def latest_ratings(records: Iterable[dict[str, Any]], name: str) -> dict[str, list[Any]]:
    """completion id -> the latest value of each user's `name` feedback on it."""
    latest: dict[tuple[str, Any], tuple[float, Any]] = {}
    for r in records:
        if r.get("name") != name or not isinstance(r.get("completion_id"), str):
            continue
        key = (r["completion_id"], r.get("user"))
        time = float(r.get("time") or 0)
        if key not in latest or time >= latest[key][0]:
            latest[key] = (time, r.get("value"))
    out: dict[str, list[Any]] = {}
    for (completion, _), (_, value) in latest.items():
        out.setdefault(completion, []).append(value)
    return out


def passing(ratings: dict[str, list[Any]], min_value: float) -> set[str]:
    """The completions whose every latest rating is a number >= min_value."""
    return {
        completion
        for completion, values in ratings.items()
        if values and all((v := numeric(value)) is not None and v >= min_value for value in values)
    }


def _text(content: Any) -> str | None:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        if parts and all(isinstance(p, str) for p in parts):
            return "".join(parts)
    return None


def exchange(
    record: dict[str, Any], *, cutoff: float | None, keep: set[str] | None
) -> tuple[list[chat.Message] | None, str]:
    """(the conversation, "") of a payload record, or (None, why it is skipped: one of SKIP_REASONS).

    `cutoff`: the oldest `time` kept (None: any); `keep`: the completion ids that passed the
    feedback filter (None: no filter)."""
    if record.get("status") != 200:
        return None, "status"
    if record.get("endpoint") != "chat":
        return None, "endpoint"
    time = record.get("time")
    if cutoff is not None and not (isinstance(time, int | float) and time >= cutoff):
        return None, "too_old"
    if keep is not None and record.get("id") not in keep:
        return None, "feedback"
    request = record.get("request") or {}
    completions = record.get("completions") or []
    messages = []
    for m in request.get("messages") or []:
        role = m.get("role") if isinstance(m, dict) else None
        role = "system" if role == "developer" else role
        content = _text(m.get("content")) if isinstance(m, dict) else None
        if role not in chat.ROLES or content is None:
            return None, "messages"
        messages.append({"role": role, "content": content})
    answer = completions[0] if completions else None
    if not messages or not isinstance(answer, str) or not answer:
        return None, "messages"
    return [*messages, {"role": "assistant", "content": answer}], ""
