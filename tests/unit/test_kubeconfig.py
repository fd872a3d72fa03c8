"""Every command that talks to the cluster reads the kubeconfig through llmops/kubeconfig.py: a wrong
one (or a server that does not answer) is one line naming the file, exit status 1, no traceback."""

from __future__ import annotations

import socket

import pytest
import yaml
from click.testing import CliRunner

from llmops.cli import main


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(server: str, current: str | None = "dev") -> dict:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "contexts": [{"name": "dev", "context": {"cluster": "c", "user": "u"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
    }
    if current:
        config["current-context"] = current
    return config


def _kubeconfig(tmp_path, case: str) -> str:
    path = tmp_path / "kubeconfig"
    if case == "missing":
        return str(path)
    if case == "a directory":
        path.mkdir()
    elif case == "not YAML":
        path.write_text("clusters: [a\n")
    elif case == "empty":
        path.write_text("")
    elif case == "no current context":
        path.write_text(yaml.safe_dump(_config("https://127.0.0.1:1", current=None)))
    elif case == "unreachable":
        path.write_text(yaml.safe_dump(_config(f"https://127.0.0.1:{_free_port()}")))
    return str(path)


COMMANDS = {
    "watch": ["watch", "tj", "job"],
    "report usage": ["report", "usage", "--deployment", "d", "--prometheus", "http://127.0.0.1:1"],
    "operator": ["operator", "--metrics-port", "0", "--health-port", "0"],
}
CASES = ["missing", "a directory", "not YAML", "empty", "no current context", "unreachable"]
# The operator, a long-running process, waits for an API server that does not answer (kopf retries).
PAIRS = [(c, k) for c in sorted(COMMANDS) for k in CASES if (c, k) != ("operator", "unreachable")]


@pytest.mark.parametrize(("command", "case"), PAIRS)
def test_a_wrong_kubeconfig_is_one_line_naming_it(tmp_path, monkeypatch, command, case):
    path = _kubeconfig(tmp_path, case)
    monkeypatch.setenv("KUBECONFIG", path)
    result = CliRunner().invoke(main, COMMANDS[command])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)  # a ClickException, not an escaped error
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: kubeconfig {path}"), result.output
    assert "Traceback" not in result.output
    if case == "unreachable":
        assert "(context dev): cannot reach the API server https://127.0.0.1:" in lines[0]
