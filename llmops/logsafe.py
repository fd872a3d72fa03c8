"""Logs that never carry a secret, at every level: the one logging safeguard of every llmops process
(the operator, the gateway, the drift monitor, the model fetcher, the training run, the CLI).

Two layers (docs/security.md, "Secrets never leave their Secret"):

1. **HTTP client loggers stay at INFO.** At DEBUG the Kubernetes client logs every response body in
   full (`kubernetes.client.rest`: a Secret it reads, values included), and botocore logs each
   request's headers (the `Authorization` header names the access key id) and urllib3 each URL.
   `install` caps the loggers of `HTTP_CLIENT_LOGGERS` at INFO whatever the process's own level (the
   operator's `--verbose`, the gateway's `--log-level debug`), so turning on debug output shows our
   own debug lines and kopf's, not the wire. To debug the wire itself, set `LLMOPS_LOG_HTTP_DEBUG=1`
   (an explicit opt-in for a development machine; the second layer still applies).
2. **Known secret values are redacted** from every log record, as defence in depth: each value a
   process reads from a Secret (the operator's `llmops.operators.secrets`, a pod's
   `llmops.storage.credentials_from_env`, the gateway's API keys, and at `install` every environment
   variable whose name marks it as a credential, `SECRET_ENV_NAMES`) is registered with `remember`,
   and the log record factory replaces it, its base64 and its URL-encoded forms, in the message, its
   arguments and the exception text, with `REDACTED`. A value shorter than `MIN_SECRET_LENGTH`
   characters is not registered (it would redact ordinary words).

Standard library only, so every floor may import it (tests/unit/test_layering.py).
"""

from __future__ import annotations

import base64
import logging
import os
import re
import threading
import traceback
import urllib.parse
from collections.abc import Iterable

REDACTED = "[REDACTED]"
MIN_SECRET_LENGTH = 8
HTTP_DEBUG_ENV = "LLMOPS_LOG_HTTP_DEBUG"
# Loggers of the HTTP clients we use, whose DEBUG output carries bodies, headers or signed URLs.
HTTP_CLIENT_LOGGERS = (
    "kubernetes",
    "kubernetes.client.rest",
    "urllib3",
    "botocore",
    "boto3",
    "s3transfer",
    "aiobotocore",
    "httpx",
    "httpcore",
    "aiohttp.client",
)
# Environment variables holding credentials (by name): registered at `install`.
SECRET_ENV_NAMES = re.compile(
    r"(AWS_ACCESS_KEY_ID|AWS_SECRET_ACCESS_KEY|AWS_SESSION_TOKEN|TOKEN|PASSWORD|API_KEY|SSE_CUSTOMER_KEY)$"
)

_lock = threading.Lock()
_values: frozenset[str] = frozenset()
_pattern: re.Pattern[str] | None = None
_base_factory = logging.getLogRecordFactory()


def forms(value: str) -> set[str]:
    """`value` and the forms it takes on the wire and in manifests: base64 (standard and URL-safe,
    with and without padding) and URL-encoded."""
    raw = value.encode()
    out = {value, urllib.parse.quote(value, safe=""), urllib.parse.quote_plus(value)}
    for encoded in (base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()):
        out |= {encoded, encoded.rstrip("=")}
    return {f for f in out if len(f) >= MIN_SECRET_LENGTH}


def remember(*values: str | bytes | None) -> None:
    """Register secret values: from now on no log record of this process shows them (nor their
    base64 or URL-encoded forms). Bytes are registered as their base64 and hex text. None, empty and
    short values (< MIN_SECRET_LENGTH characters) are ignored."""
    global _values, _pattern
    new: set[str] = set()
    for value in values:
        if isinstance(value, bytes):
            texts = [base64.b64encode(value).decode(), value.hex()]
        else:
            texts = [value] if value else []
        for text in texts:
            if len(text) >= MIN_SECRET_LENGTH:
                new |= forms(text)
    with _lock:
        if new <= _values:
            return
        _values = _values | new
        # Longest first, so a value that contains another is replaced whole.
        ordered = sorted(_values, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(v) for v in ordered))


def redact(text: str) -> str:
    """`text` with every registered value replaced by REDACTED."""
    pattern = _pattern
    return pattern.sub(REDACTED, text) if pattern is not None and text else text


def _record_factory(*args: object, **kwargs: object) -> logging.LogRecord:
    record = _base_factory(*args, **kwargs)
    if _pattern is None:
        return record
    try:
        message = record.getMessage()
    except Exception:  # a malformed call: logging reports it later, from the same record
        return record
    clean = redact(message)
    if clean != message:
        record.msg, record.args = clean, None
    if record.exc_info and record.exc_info[0] is not None:
        text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        record.exc_text = redact(text)
    return record


def http_debug_opted_in() -> bool:
    """True only for an explicit yes (1, true, yes, on; any case): any other value keeps the wire
    logs off, so `LLMOPS_LOG_HTTP_DEBUG=False` or `no` never turns them on."""
    return os.environ.get(HTTP_DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def install(environ: dict[str, str] | None = None) -> None:
    """Install both layers in this process (idempotent; call it once logging is configured, after
    `logging.basicConfig` or `kopf.configure`, which may lower levels): HTTP client loggers capped at
    INFO unless LLMOPS_LOG_HTTP_DEBUG=1, the redacting record factory, and the credentials in
    `environ` (default: os.environ) registered by the names SECRET_ENV_NAMES matches."""
    if not http_debug_opted_in():
        for name in HTTP_CLIENT_LOGGERS:  # never below INFO; left alone where they already are
            logger = logging.getLogger(name)
            if logger.getEffectiveLevel() < logging.INFO:
                logger.setLevel(logging.INFO)
    if logging.getLogRecordFactory() is not _record_factory:
        logging.setLogRecordFactory(_record_factory)
    env = os.environ if environ is None else environ
    remember(*(value for name, value in env.items() if SECRET_ENV_NAMES.search(name)))


def remembered() -> Iterable[str]:
    """The registered forms (for tests)."""
    return _values
