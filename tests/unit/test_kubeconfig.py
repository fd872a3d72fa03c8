"""Every command that talks to the cluster reads the kubeconfig through llmops/kubeconfig.py: a wrong
one (or a server that does not answer) is one line naming the file, exit status 1, no traceback."""

from __future__ import annotations

import pytest
import yaml
from click.testing import CliRunner

from llmops.cli import main
from llmops.dev.cluster import free_port


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
        path.write_text(yaml.safe_dump(_config(f"https://127.0.0.1:{free_port()}")))
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


@pytest.mark.parametrize("case", [k for k in CASES if k != "unreachable"])
def test_every_command_says_the_same_of_the_same_file(tmp_path, monkeypatch, case):
    """The operator (lightkube, kopf) and the CLI (the kubernetes client) read one kubeconfig alike."""
    monkeypatch.setenv("KUBECONFIG", _kubeconfig(tmp_path, case))
    said = {c: CliRunner().invoke(main, COMMANDS[c]).output.strip() for c in COMMANDS}
    assert len(set(said.values())) == 1, said


def test_a_list_of_files_merges_as_kubectl_merges(tmp_path, monkeypatch):
    from llmops import kubeconfig

    (tmp_path / "a").mkdir()
    first = _config("https://first:6443") | {"current-context": "dev"}
    first["clusters"][0]["cluster"]["certificate-authority"] = "ca.pem"  # relative to a/
    second = _config("https://second:6443", current="other")
    second["contexts"].append({"name": "other", "context": {"cluster": "c2", "user": "u"}})
    second["clusters"].append({"name": "c2", "cluster": {"server": "https://c2:6443"}})
    (tmp_path / "a" / "config").write_text(yaml.safe_dump(first))
    (tmp_path / "config2").write_text(yaml.safe_dump(second))
    files = [str(tmp_path / "a" / "config"), str(tmp_path / "config2")]
    merged = kubeconfig.merge(files)
    assert merged["current-context"] == "dev"  # the first file to set it
    assert [c["name"] for c in merged["clusters"]] == ["c", "c2"]  # first wins by name, others added
    assert merged["clusters"][0]["cluster"] == {
        "server": "https://first:6443",
        "certificate-authority": str(tmp_path / "a" / "ca.pem"),
    }
    (tmp_path / "a" / "ca.pem").write_text("")
    monkeypatch.setenv("KUBECONFIG", ":".join(files))
    assert kubeconfig.read() == (":".join(files), merged, "dev")
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'gone'}:{files[1]}")  # kubectl skips a missing file
    assert kubeconfig.read()[2] == "other"


@pytest.mark.parametrize(
    ("fault", "said"),
    [
        ("cluster", "the context names cluster 'c', which it does not define"),
        ("ca", "certificate-authority {a}/ca.pem: no such file"),
        ("token file", "tokenFile {a}/token: no such file"),
    ],
)
def test_what_a_context_names_must_be_there_and_every_command_says_so_alike(
    tmp_path, monkeypatch, fault, said
):
    (tmp_path / "a").mkdir()
    config = _config(f"https://127.0.0.1:{free_port()}")
    if fault == "cluster":
        config["clusters"] = []
    elif fault == "ca":
        config["clusters"][0]["cluster"]["certificate-authority"] = "ca.pem"  # relative to a/, absent
    else:
        config["users"][0]["user"] = {"tokenFile": "token"}
    (tmp_path / "a" / "config").write_text(yaml.safe_dump(config))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KUBECONFIG", "a/config")
    outputs = {c: CliRunner().invoke(main, COMMANDS[c]).output.strip() for c in COMMANDS}
    expected = f"Error: kubeconfig a/config (context dev): {said.format(a=tmp_path / 'a')}"
    assert set(outputs.values()) == {expected}, outputs


def test_the_operators_login_is_the_same_reading(tmp_path, monkeypatch):
    """kopf's credentials come from `kubeconfig.read` (relative paths against their own file, a
    tokenFile read, an undefined user without credentials), not from kopf's own kubeconfig login."""
    import kopf

    from llmops.operators.main import kubeconfig_login

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "ca.pem").write_text("pem")
    (tmp_path / "a" / "token").write_text("marker-token\n")
    config = _config("https://first:6443")
    config["clusters"][0]["cluster"]["certificate-authority"] = "ca.pem"
    config["users"][0]["user"] = {"tokenFile": "token"}
    config["contexts"][0]["context"]["namespace"] = "ml"
    (tmp_path / "a" / "config").write_text(yaml.safe_dump(config))
    monkeypatch.chdir(tmp_path)  # not a/: a relative path must not depend on the working directory
    monkeypatch.setenv("KUBECONFIG", "gone:a/config")
    info = kubeconfig_login(kopf.OperatorSettings())
    assert (info.server, info.ca_path, info.token, info.default_namespace) == (
        "https://first:6443",
        str(tmp_path / "a" / "ca.pem"),
        "marker-token",
        "ml",
    )
    config["contexts"][0]["context"]["user"] = "nobody"  # kubectl: no credentials
    (tmp_path / "a" / "config").write_text(yaml.safe_dump(config))
    assert kubeconfig_login(kopf.OperatorSettings()).token is None
    monkeypatch.setenv("KUBECONFIG", "gone")
    assert kubeconfig_login(kopf.OperatorSettings()) is None  # no kubeconfig: kopf tries the next way


def test_the_operators_start_up_line_names_where_its_server_came_from(tmp_path, monkeypatch):
    """`describe` feeds the operator's one line when the API server never answered: the kubeconfig,
    its context and server; in a pod without $KUBECONFIG, the ServiceAccount and the service address;
    a bad kubeconfig, the same line every command prints for it."""
    from llmops import kubeconfig

    token = tmp_path / "token"
    token.write_text("t")
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setattr(kubeconfig, "SERVICE_ACCOUNT_TOKEN", token)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    assert kubeconfig.describe() == "the pod's ServiceAccount (server https://10.96.0.1:443)"
    config = tmp_path / "config"
    config.write_text("not: [a kubeconfig")
    monkeypatch.setenv("KUBECONFIG", str(config))
    assert kubeconfig.describe().startswith(f"kubeconfig {config}: ")
