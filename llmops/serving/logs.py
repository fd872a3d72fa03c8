"""The gateway's logs: one JSON object per line on stderr.

Every line has `time`, `level` and `msg`; the request line (`msg` "request", one per request that
reached the queue or whose client hung up) adds `key` (the API key's id, never the key), `version`,
`code`, `seconds`, `stream`, `reason` and `endpoint`. No line carries a key or prompt text.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from llmops import logsafe

log = logging.getLogger("llmops.gateway")


class JsonFormatter(logging.Formatter):
    """One JSON object per line; request logs carry ids and numbers, never keys or prompt text."""

    FIELDS = ("key", "version", "code", "seconds", "stream", "reason", "endpoint")

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": round(record.created, 3),
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
        }
        for field in self.FIELDS:
            if hasattr(record, field):
                out[field] = getattr(record, field)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def setup(level: str) -> None:
    """Log at `level` (a logging level name, any case) to stderr through `JsonFormatter`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=level.upper(), handlers=[handler])
    # At debug too: no HTTP client wire logs, and no credential value in any line (llmops/logsafe.py).
    logsafe.install()


def request_line(
    key: str, version: str, code: int, seconds: float, stream: bool, reason: str | None, endpoint: str
) -> None:
    """The request line: `seconds` from the request to its last byte, rounded to 0.1 ms."""
    if not log.isEnabledFor(logging.INFO):  # cached by logging: nothing is built for a line not written
        return
    log.info(
        "request",
        extra={
            "key": key,
            "version": version,
            "code": code,
            "seconds": round(seconds, 4),
            "stream": stream,
            "reason": reason,
            "endpoint": endpoint,
        },
    )
