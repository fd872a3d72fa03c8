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
