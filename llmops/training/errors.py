"""Errors the workload reports to the user, as opposed to bugs."""

from __future__ import annotations


class UserError(Exception):
    """Bad input: the message says what is wrong and what to change. The run ends Failed, not retried."""


class GateFailure(Exception):
    """Evaluation finished and at least one gate did not pass: nothing is registered."""

    def __init__(self, failed: list[str], message: str) -> None:
        super().__init__(message)
        self.failed = failed
