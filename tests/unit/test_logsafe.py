"""llmops/logsafe.py: HTTP client loggers kept at INFO, and known secret values redacted from every
log record (message, arguments, exception text), in their plain, base64 and URL-encoded forms."""

from __future__ import annotations

import base64
import io
import logging
import urllib.parse
from collections.abc import Iterator

import pytest

from llmops import logsafe

SECRET = "marker-logsafe-unit-7f3a9c"


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Root at DEBUG (as the operator's --verbose sets it) writing into a buffer; levels restored."""
    root = logging.getLogger()
    levels = {name: logging.getLogger(name).level for name in logsafe.HTTP_CLIENT_LOGGERS}
    old_root = root.level
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield buffer
    finally:
        root.removeHandler(handler)
        root.setLevel(old_root)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def test_http_client_debug_lines_are_off_even_when_the_process_logs_debug(
    captured: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(logsafe.HTTP_DEBUG_ENV, raising=False)
    logsafe.install(environ={})
    for name in logsafe.HTTP_CLIENT_LOGGERS:
        assert not logging.getLogger(name).isEnabledFor(logging.DEBUG), name
    logging.getLogger("kubernetes.client.rest").debug("response body: %s", '{"data": {"k": "djE="}}')
    logging.getLogger("llmops.operators").debug("our own debug line")
    assert captured.getvalue() == "llmops.operators our own debug line\n"


def test_the_opt_in_turns_them_on(captured: io.StringIO, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in logsafe.HTTP_CLIENT_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET)
    monkeypatch.setenv(logsafe.HTTP_DEBUG_ENV, "1")
    logsafe.install(environ={})
    assert logging.getLogger("botocore").isEnabledFor(logging.DEBUG)


def test_remembered_values_are_redacted_in_every_form(captured: io.StringIO) -> None:
    logsafe.install(environ={})
    logsafe.remember(SECRET)
    log = logging.getLogger("llmops.test")
    b64 = base64.b64encode(SECRET.encode()).decode()
    log.info("plain %s", SECRET)
    log.info("base64 %s", b64)
    log.info("url %s", urllib.parse.quote(f"{SECRET}/x", safe=""))
    log.info({"headers": {"Authorization": f"Credential={SECRET}/20260101"}})
    try:
        raise ValueError(f"refused key {SECRET}")
    except ValueError:
        log.exception("failed")
    text = captured.getvalue()
    assert SECRET not in text and b64 not in text and b64.rstrip("=") not in text, text
    assert text.count(logsafe.REDACTED) == 5, text  # four lines and the exception message


def test_environment_credentials_are_remembered_by_name(captured: io.StringIO) -> None:
    logsafe.install(environ={"DATA_AWS_SECRET_ACCESS_KEY": "marker-env-secret-1", "HOME": "/home/someone"})
    logging.getLogger("llmops.test").info("marker-env-secret-1 in /home/someone")
    assert captured.getvalue() == f"llmops.test {logsafe.REDACTED} in /home/someone\n"


def test_short_and_empty_values_are_not_remembered() -> None:
    logsafe.remember("k", "", None, "abc")
    assert not {"k", "abc"} & set(logsafe.remembered())


def test_bytes_are_remembered_as_base64_and_hex() -> None:
    key = bytes(range(32))
    logsafe.remember(key)
    assert (
        logsafe.redact(f"{key.hex()} {base64.b64encode(key).decode()}")
        == f"{logsafe.REDACTED} {logsafe.REDACTED}"
    )


def test_only_an_explicit_yes_opts_in_to_http_debug(monkeypatch) -> None:
    for value, expected in (("1", True), ("TRUE", True), ("yes", True), ("on", True), ("False", False),
                            ("no", False), ("0", False), ("", False), ("off", False)):  # fmt: skip
        monkeypatch.setenv(logsafe.HTTP_DEBUG_ENV, value)
        assert logsafe.http_debug_opted_in() is expected, value
