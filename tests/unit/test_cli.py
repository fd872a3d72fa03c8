"""The `llmops` command tree: `--help` imports no sub-command, every listing shows each command's
summary whole, and every option says what it is for."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import click

from llmops.cli import COMMANDS, main
from llmops.command_group import Group, summary


def _tree(command: click.Command, ctx: click.Context) -> Iterator[tuple[click.Command, click.Context]]:
    yield command, ctx
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            assert sub is not None, name
            yield from _tree(sub, click.Context(sub, parent=ctx, info_name=name))


def _everything() -> list[tuple[click.Command, click.Context]]:
    return list(_tree(main, click.Context(main, info_name="llmops")))


def test_help_lists_the_commands_without_importing_them():
    modules = sorted({target.split(":")[0] for target, _ in COMMANDS.values()})
    script = (
        "import sys\nfrom llmops.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        f"print('IMPORTED', [m for m in {modules!r} if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert "IMPORTED []" in out
    for name, (_, text) in COMMANDS.items():
        assert name in out and " ".join(text.split()[:3]) in out


def test_the_command_table_summaries_are_the_commands_own():
    """`llmops --help` reads COMMANDS; the command, once imported, says the same."""
    ctx = click.Context(main, info_name="llmops")
    for name, (_, text) in COMMANDS.items():
        assert summary(main.get_command(ctx, name)) == text, name


def test_every_listing_shows_each_summary_whole():
    """click's own listing cut "GDPR Art. 17, CCPA" at "Art." and long ones at the width, with "..."."""
    groups = [(c, ctx) for c, ctx in _everything() if isinstance(c, click.Group)]
    assert len(groups) >= 7
    for group, ctx in groups:
        assert isinstance(group, Group), ctx.command_path
        listed = " ".join(group.get_help(ctx).partition("Commands:")[2].split())
        assert listed and "..." not in listed, ctx.command_path
        for name in group.list_commands(ctx):
            text = group.summary_of(ctx, name)
            assert text and " ".join(text.split()) in listed, (ctx.command_path, name)
    top = " ".join(main.get_help(click.Context(main, info_name="llmops")).split())
    assert "erasure Erase one data subject's records (GDPR Art. 17, CCPA); receipts and decisions." in top


def test_every_option_has_help():
    missing = [
        f"{ctx.command_path} {'/'.join(p.opts)}"
        for command, ctx in _everything()
        for p in command.params
        if isinstance(p, click.Option) and not p.help
    ]
    assert not missing


def test_dev_env_without_a_cluster_makes_the_eval_fail(tmp_path) -> None:
    """`eval "$(llmops dev env)"` in a real shell: without a cluster the eval itself fails (an empty
    eval would succeed), nothing is exported, and the reason is on stderr."""
    none = tmp_path / "none"
    script = f'eval "$({sys.executable} -m llmops.cli dev env --state-dir {none})" && echo "$KUBECONFIG"'
    shell = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}
    )
    assert shell.returncode == 1 and shell.stdout == ""
    assert f"no cluster in {none}: start one with `llmops dev up --state-dir {none}`" in shell.stderr


def test_dev_down_removes_only_a_dev_clusters_own_folder(tmp_path) -> None:
    """A mistyped --state-dir must delete nothing: a folder without the cluster's state.json is
    refused, a folder that is not there is nothing to stop (exit 0), and a cluster's folder (its
    state.json, no process left) is removed."""
    from click.testing import CliRunner

    other = tmp_path / "important"
    other.mkdir()
    (other / "data.txt").write_text("keep me")
    result = CliRunner().invoke(main, ["dev", "down", "--state-dir", str(other)])
    assert result.exit_code == 1 and "is not the state folder of a dev cluster" in result.output
    assert (other / "data.txt").read_text() == "keep me"
    result = CliRunner().invoke(main, ["dev", "down", "--state-dir", str(tmp_path / "none")])
    assert result.exit_code == 0 and f"no cluster in {tmp_path / 'none'}: nothing to stop" in result.output
    ours = tmp_path / "state"
    ours.mkdir()
    (ours / "state.json").write_text('{"ports": {}, "pids": {}}')
    result = CliRunner().invoke(main, ["dev", "down", "--state-dir", str(ours)])
    assert result.exit_code == 0 and not ours.exists(), result.output


def test_dev_env_exports_what_the_other_commands_read(tmp_path, monkeypatch) -> None:
    """The names `dev env` exports are the ones the CLI reads: the registry's S3 endpoint
    (AWS_ENDPOINT_URL_S3, as boto3), `report usage`'s Prometheus (LLMOPS_PROMETHEUS_URL); the
    templates' S3_ENDPOINT and PROMETHEUS_URL stay."""
    from click.testing import CliRunner

    from llmops.audit_cli import PROMETHEUS_ENV
    from llmops.dev import cli as dev_cli

    class Running:
        kubeconfig = tmp_path / "kubeconfig"

        def __init__(self, state_dir) -> None:
            self.state_dir = state_dir

        def processes(self):
            return {"kube-apiserver": (1, True)}

    services = {
        "minio": {"endpoint": "http://127.0.0.1:9000", "accessKeyId": "k", "secretAccessKey": "s"},
        "ray": {"address": "http://127.0.0.1:8265"},
        "prometheus": {"url": "http://127.0.0.1:9090"},
    }
    monkeypatch.setattr(dev_cli, "LocalCluster", Running)
    monkeypatch.setattr("llmops.dev.services.service", lambda cluster, name: services.get(name))
    result = CliRunner().invoke(main, ["dev", "env", "--state-dir", str(tmp_path)])
    exported = dict(line.removeprefix("export ").split("=", 1) for line in result.output.splitlines())
    assert exported["AWS_ENDPOINT_URL_S3"] == exported["S3_ENDPOINT"] == "http://127.0.0.1:9000"
    assert exported[PROMETHEUS_ENV] == exported["PROMETHEUS_URL"] == "http://127.0.0.1:9090"
    assert {"KUBECONFIG", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "RAY_ADDRESS"} <= exported.keys()


def test_a_busy_operator_port_is_one_line_naming_its_flag(tmp_path, monkeypatch) -> None:
    """Every port the operator listens on (metrics, health, webhook), taken by another listener:
    one line naming the flag and the port, before anything starts; a port out of range is a usage
    error."""
    import socket

    from click.testing import CliRunner

    config = tmp_path / "kubeconfig"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: ctx\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {token: t}}]\ncontexts: [{name: ctx, context: {cluster: c, user: u}}]\n"
    )
    monkeypatch.setenv("KUBECONFIG", str(config))
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        for flag, extra in (("--metrics-port", []), ("--health-port", []), ("--webhook-port", ["--webhook"])):
            others = [f for f in ("--metrics-port", "--health-port") if f != flag]
            args = ["operator", flag, port, *extra, *(x for f in others for x in (f, "0"))]
            result = CliRunner().invoke(main, args)
            assert result.exit_code == 1, result.output
            assert result.output.startswith(f"Error: {flag} {port}: cannot listen on 0.0.0.0:{port} ("), (
                result.output
            )
    result = CliRunner().invoke(main, ["operator", "--health-port", "70000"])
    assert result.exit_code == 2 and "'--health-port': 70000 is not in the range" in result.output


def test_an_operator_setting_the_environment_gets_wrong_stops_the_start(monkeypatch) -> None:
    """An operator setting the environment gets wrong (a rate that is not a number above 0, a period
    that is not a number of seconds, a scrape interval that is not a Prometheus duration): one line
    naming it, exit code 1, before the operator starts (not at every reconcile that reads it)."""
    from click.testing import CliRunner

    for name, value, what in (
        ("LLMOPS_RESYNC_RATE", "0", "resyncs a second"),
        ("LLMOPS_RESYNC_RATE", "-1", "resyncs a second"),
        ("LLMOPS_RESYNC_RATE", "fast", "resyncs a second"),
        ("LLMOPS_ALIAS_POLL_RATE", "0", "alias polls a second"),
        ("LLMOPS_RETRY_RATE", "0", "retries of a kind a second"),
        ("LLMOPS_POLL_RATE", "never", "polls of a kind a second"),
        ("LLMOPS_RESYNC_SECONDS", "5m", "the resync period, in seconds"),
        ("LLMOPS_ALIAS_POLL_SECONDS", "0", "the alias poll period, in seconds"),
        ("LLMOPS_SUSPEND_DRAIN_SECONDS", "-1", "the longest a suspend waits"),
        ("LLMOPS_SCRAPE_INTERVAL", "15", "the monitors' scrape interval, a Prometheus duration"),
        ("LLMOPS_RETRAIN_EVALUATION_SECONDS", "hourly", "the triggers' evaluation period, in seconds"),
        ("LLMOPS_RETENTION_SWEEP_SECONDS", "inf", "the retention sweep period, in seconds"),
    ):
        with monkeypatch.context() as env:
            env.setenv(name, value)
            result = CliRunner().invoke(main, ["operator"])
        assert result.exit_code == 1, result.output
        assert result.output.startswith(f"Error: {name}={value!r}: {what}"), result.output


def test_version_is_the_one_pyproject_declares() -> None:
    """Installed or run from the checkout (as CI runs it, with no distribution metadata), the same
    version: pyproject.toml's."""
    import tomllib
    from pathlib import Path

    from click.testing import CliRunner

    declared = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]["version"]
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and result.output == f"llmops {declared}\n", result.output
