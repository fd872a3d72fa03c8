"""The click group of every `llmops` command group: its listing shows each command's summary whole.

click's own listing cuts a command's help at its first sentence end (a period before a word that is
not lowercase: "GDPR Art. 17" ends at "Art.") or at the terminal's width, with "...". Here a
command's summary is its `short_help`, else the whole first paragraph of its help, wrapped in the
listing, never cut: keep that paragraph short.
"""

from __future__ import annotations

import click


def summary(command: click.Command) -> str:
    """The line a group lists for `command`: `short_help`, else its help's first paragraph, whole."""
    if command.short_help:
        return " ".join(command.short_help.split())
    return " ".join((command.help or "").partition("\n\n")[0].replace("\b", "").split())


class Group(click.Group):
    """A click group whose listing shows each command's `summary` (its sub-groups are Groups too)."""

    group_class = type  # `@group.group()` makes a Group

    def summary_of(self, ctx: click.Context, name: str) -> str | None:
        """The summary of sub-command `name`; None for one that is hidden or does not exist."""
        command = self.get_command(ctx, name)
        return None if command is None or command.hidden else summary(command)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [
            (name, text)
            for name in self.list_commands(ctx)
            if (text := self.summary_of(ctx, name)) is not None
        ]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)
