"""Completion ids the gateway controls, and user feedback on them (`POST /v1/feedback`); pure.

**Ids.** The gateway sends every proxied request to vLLM with `X-Request-Id: <rid>`; vLLM (0.32,
`OpenAIServing._base_request_id`) makes it the answer's id: `chatcmpl-<rid>` (chat), `cmpl-<rid>`
(completions), in plain and streamed answers alike. The rid verifies itself, so that any gateway
replica accepts feedback on an id another replica issued, with no shared state, and a tenant cannot
mint one:

    rid = <version>.<issued>.<nonce>.<mac>
      version  the serving version, base64url without padding (versions may contain dots)
      issued   issue time, unix seconds, decimal
      nonce    8 random bytes, 16 hex digits
      mac      HMAC-SHA256 (RFC 2104; Python's hmac) with the ModelDeployment's key over
               "<tenant>\\n<version>\\n<issued>\\n<nonce>", first 16 bytes, base64url without padding

`tenant` is the API key's id (serving.auth; "anonymous" without keys) and is not in the id: an id
checks only for the tenant it was issued to. `CompletionIds.verify` answers None alike for a forged
id, another tenant's, another deployment's (another key), or one older than the TTL, so the endpoint
gives one answer (404) to all of them.

**Feedback.** `parse_feedback` checks a request body (`BadFeedback` names the field) and
`sentiment` folds a value into the metric's bounded label: positive (a number > 0, true), negative
(a number < 0, false) or neutral (0, a string label).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import os
import re
from dataclasses import dataclass
from typing import Any

PREFIXES = ("chatcmpl-", "cmpl-")  # vLLM's prefixes of chat and completions ids
DEFAULT_TTL_SECONDS = 7 * 24 * 3600
CLOCK_SKEW_SECONDS = 300  # an id "issued" this far ahead of our clock still verifies (replicas' clocks)
MAC_BYTES = 16

NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
MAX_LABEL = 64
MAX_COMMENT = 2000
MAX_USER = 256
MAX_METADATA = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _b64(data: bytes) -> str:
    """base64url without padding (base64.urlsafe_b64encode, less its Python wrapper: once per id)."""
    return binascii.b2a_base64(data, newline=False).translate(_URLSAFE).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class Issued:
    """What a verified id says: the version that answered and when (unix seconds)."""

    version: str
    issued: int


class CompletionIds:
    """Issues and verifies rids with one ModelDeployment's `key` (bytes; 32 random bytes from its
    Secret); ids older than `ttl_seconds` no longer verify."""

    def __init__(self, key: bytes, ttl_seconds: float = DEFAULT_TTL_SECONDS) -> None:
        self.ttl_seconds = ttl_seconds
        self.key = key

    @property
    def key(self) -> bytes:
        return self._key

    @key.setter
    def key(self, key: bytes) -> None:
        if not key:
            raise ValueError("the completion id key is empty")
        self._key = key
        self._keyed = hmac.new(key, digestmod=hashlib.sha256)  # copied per id: the key is set up once
        self._versions: dict[str, str] = {}  # version -> its base64url, encoded once

    def _mac(self, tenant: str, version: str, issued: str, nonce: str) -> str:
        mac = self._keyed.copy()
        mac.update(f"{tenant}\n{version}\n{issued}\n{nonce}".encode())
        return _b64(mac.digest()[:MAC_BYTES])

    def issue(self, tenant: str, version: str, now: float) -> str:
        """A new rid for an answer of `version` to `tenant` at `now` (unix seconds)."""
        issued, nonce = str(int(now)), os.urandom(8).hex()
        if (encoded := self._versions.get(version)) is None:
            if len(self._versions) >= 1024:  # versions come and go with rollouts: forget the old ones
                self._versions.clear()
            encoded = self._versions[version] = _b64(version.encode())
        return f"{encoded}.{issued}.{nonce}.{self._mac(tenant, version, issued, nonce)}"

    def verify(self, completion_id: str, tenant: str, now: float) -> Issued | None:
        """The id's version and issue time if `completion_id` (`chatcmpl-<rid>`, `cmpl-<rid>` or the
        bare rid) was issued to `tenant` with this key no longer than the TTL ago; else None."""
        rid = completion_id
        for prefix in PREFIXES:
            if rid.startswith(prefix):
                rid = rid[len(prefix) :]
                break
        parts = rid.split(".")
        if len(parts) != 4:
            return None
        encoded, issued, nonce, mac = parts
        try:
            version = _unb64(encoded).decode()
        except (binascii.Error, ValueError):
            return None
        if not issued.isdigit() or len(issued) > 12:
            return None
        if not hmac.compare_digest(self._mac(tenant, version, issued, nonce), mac):
            return None
        age = now - int(issued)
        if age > self.ttl_seconds or age < -CLOCK_SKEW_SECONDS:
            return None
        return Issued(version, int(issued))


def completion_id(kind: str, rid: str) -> str:
    """The id the client gets for endpoint `kind`: vLLM's prefix and the rid (chat, completions); the
    bare rid for the other endpoints, whose answers carry vLLM's own ids."""
    if kind == "chat":
        return f"chatcmpl-{rid}"
    if kind == "completions":
        return f"cmpl-{rid}"
    return rid


class BadFeedback(ValueError):
    """A feedback body that breaks a rule; `field` is the offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class Feedback:
    completion_id: str
    name: str
    value: float | int | bool | str
    comment: str | None
    user: str | None
    metadata: dict[str, str] | None


def _optional_text(body: dict[str, Any], field: str, limit: int) -> str | None:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadFeedback(field, f"'{field}' must be a string")
    if len(value) > limit:
        raise BadFeedback(field, f"'{field}' is longer than {limit} characters")
    return value


def parse_feedback(body: Any) -> Feedback:
    """The feedback in a `POST /v1/feedback` body:

    `{"completion_id": str, "name": str = "thumbs" (1-64 of [A-Za-z0-9_.:-]), "value": number |
    boolean | string label (1-64 chars), "comment"?: str (<= 2000), "user"?: str (<= 256),
    "metadata"?: {str: str} (<= 16 pairs, keys <= 64, values <= 512 chars, as OpenAI's)}`.

    Raises `BadFeedback` naming the field; unknown fields are refused too (a typo is not lost)."""
    if not isinstance(body, dict):
        raise BadFeedback("body", "the request body must be a JSON object")
    known = {"completion_id", "name", "value", "comment", "user", "metadata"}
    for field in body:
        if field not in known:
            raise BadFeedback(field, f"unknown field '{field}'; known: {', '.join(sorted(known))}")
    cid = body.get("completion_id")
    if not isinstance(cid, str) or not cid or len(cid) > 256:
        raise BadFeedback("completion_id", "'completion_id' must be the id of a completion (a string)")
    name = body.get("name", "thumbs")
    if not isinstance(name, str) or not NAME.match(name):
        raise BadFeedback("name", "'name' must be 1-64 characters of letters, digits and _.:-")
    if "value" not in body:
        raise BadFeedback("value", "'value' is required: a number, a boolean or a string label")
    value = body["value"]
    if isinstance(value, bool):
        pass
    elif isinstance(value, int | float):
        if not math.isfinite(value):
            raise BadFeedback("value", "'value' must be a finite number")
    elif isinstance(value, str):
        if not value or len(value) > MAX_LABEL:
            raise BadFeedback("value", f"a string 'value' must be a label of 1-{MAX_LABEL} characters")
    else:
        raise BadFeedback("value", "'value' must be a number, a boolean or a string label")
    metadata = body.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict) or len(metadata) > MAX_METADATA:
            raise BadFeedback("metadata", f"'metadata' must be an object of at most {MAX_METADATA} pairs")
        for k, v in metadata.items():
            if len(k) > MAX_METADATA_KEY or not isinstance(v, str) or len(v) > MAX_METADATA_VALUE:
                raise BadFeedback(
                    "metadata",
                    f"'metadata' keys must be at most {MAX_METADATA_KEY} characters and values strings"
                    f" of at most {MAX_METADATA_VALUE}",
                )
    return Feedback(
        completion_id=cid,
        name=name,
        value=value,
        comment=_optional_text(body, "comment", MAX_COMMENT),
        user=_optional_text(body, "user", MAX_USER),
        metadata=metadata,
    )


def sentiment(value: float | int | bool | str) -> str:
    """positive (a number > 0, true), negative (a number < 0, false), neutral (0, a string label)."""
    if isinstance(value, bool):
        return "positive" if value else "negative"
    if isinstance(value, int | float):
        return "positive" if value > 0 else "negative" if value < 0 else "neutral"
    return "neutral"


def feedback_id() -> str:
    """A new feedback id: `fb_` and 24 hex digits."""
    return "fb_" + os.urandom(12).hex()


def feedback_record(
    fb: Feedback, tenant: str, model_deployment: str, model: str, version: str, now: float
) -> dict[str, Any]:
    """The stored record of one feedback (one jsonl line in a `-feedback-` file; docs/operations.md,
    User feedback): `id` (`feedback_id`), the feedback's fields, `tenant` (the API key's id), the
    ModelDeployment, the served model name, the version that answered (from the id), and `time`
    (unix seconds). Records are only added: of several on one (completion_id, name, user), the one
    with the latest `time` holds."""
    return {
        "id": feedback_id(),
        "completion_id": fb.completion_id,
        "name": fb.name,
        "value": fb.value,
        "comment": fb.comment,
        "user": fb.user,
        "metadata": fb.metadata,
        "tenant": tenant,
        "model_deployment": model_deployment,
        "model": model,
        "version": version,
        "time": now,
    }
