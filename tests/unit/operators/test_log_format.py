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
    # What kopf's object logger adds to the records of a handler's messages.
    "ref = dict(apiVersion='llmops.io/v1alpha1', kind='ModelDeployment', namespace='team-a', name='bot')\n"
    "logging.getLogger('kopf.objects').info('canary step %s', 3, extra={'k8s_ref': ref})\n"
)


def log_lines(log_format: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", EMIT, log_format], capture_output=True, text=True, timeout=120, check=True
    )
    lines = [line for line in done.stderr.splitlines() if "canary step" in line]
    assert len(lines) == 2, done.stderr
    return lines


def test_text_lines_carry_the_whole_logger_name_and_the_object() -> None:
    ours, objects = log_lines("text")
    assert f" {LOGGER} [WARNING ] canary step 2" in ours, ours
    assert " kopf.objects [INFO    ] [team-a/bot] canary step 3" in objects, objects


def test_json_lines_carry_the_logger_name_and_the_object() -> None:
    ours, objects = map(json.loads, log_lines("json"))
    assert (ours["logger"], ours["message"], ours["severity"]) == (LOGGER, "canary step 2", "warn")
    assert "object" not in ours
    assert objects["message"] == "canary step 3" and objects["logger"] == "kopf.objects"
    assert objects["object"] == {
        "apiVersion": "llmops.io/v1alpha1",
        "kind": "ModelDeployment",
        "namespace": "team-a",
        "name": "bot",
    }
