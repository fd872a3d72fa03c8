"""The operator's log lines (llmops/operators/main.py: configure_logging), in a process of their own:
kopf's configuration replaces the root logger's handlers."""

from __future__ import annotations

import json
import subprocess
import sys

LOGGER = "llmops.operators.modeldeployment.reconcile"
EMIT = (
    "import logging, sys\n"
    "from llmops.operators.main import configure_logging\n"
    "configure_logging(sys.argv[1])\n"
    f"logging.getLogger({LOGGER!r}).warning('canary step %s', 2)\n"
)


def log_line(log_format: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", EMIT, log_format], capture_output=True, text=True, timeout=120, check=True
    )
    lines = [line for line in done.stderr.splitlines() if "canary step" in line]
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_text_lines_carry_the_whole_logger_name() -> None:
    line = log_line("text")
    assert f" {LOGGER} [WARNING ] canary step 2" in line, line


def test_json_lines_carry_the_logger_name() -> None:
    record = json.loads(log_line("json"))
    assert (record["logger"], record["message"], record["severity"]) == (LOGGER, "canary step 2", "warn")
