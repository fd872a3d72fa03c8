"""What every `llmops` command group shares: its click group, whose listing shows each command's
summary whole; the `-o/--output` option; and storage failures told in one line.

click's own listing cuts a command's help at its first sentence end (a period before a word that is
not lowercase: "GDPR Art. 17" ends at "Art.") or at the terminal's width, with "...". Here a
command's summary is its `short_help`, else the whole first paragraph of its help, wrapped in the
listing, never cut: keep that paragraph short.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any

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


def output_option(people: str = "table") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """`-o/--output`: `people` ("table", "text" or "yaml", the default) or "json" for programs."""
    what = {"table": "A table", "yaml": "YAML"}.get(people, people.capitalize())
    return click.option(
        "-o",
        "--output",
        type=click.Choice([people, "json"]),
        default=people,
        show_default=True,
        help=f"{what} for people, or JSON for programs.",
    )


@contextlib.contextmanager
def storage_failures(where: str = "") -> Iterator[None]:
    """Inside: an object-storage failure (no credentials, refused keys, no bucket, no answer, TLS)
    becomes a click.ClickException of one line naming the cause, `where` (an s3:// location) and what
    to set (`llmops.storage.explain`, reader "cli"), never a traceback; any other error goes on."""
    try:
        yield
    except click.ClickException:
        raise
    except Exception as e:
        from llmops.storage import explain

        if (failure := explain(e, where, reader="cli")) is not None:
            raise click.ClickException(failure.message) from None
        raise


def storage_errors(f: Callable[..., Any]) -> Callable[..., Any]:
    """A command whose storage failures end in one line (`storage_failures`)."""

    @functools.wraps(f)
    def run(*args: Any, **kwargs: Any) -> Any:
        with storage_failures():
            return f(*args, **kwargs)

    return run


def split_ref(ref: str, forms: str = "NAME:VERSION or NAME@ALIAS", hint: str = "REF") -> tuple[str, str, str]:
    """A model reference on the command line as (name, ":" or "@", version or alias); a usage error
    naming the argument `hint` unless `ref` is one of `forms` with both halves given."""
    seps = [sep for sep in (":", "@") if sep in forms]
    for sep in seps:
        if sep in ref:
            name, _, rest = ref.partition(sep)
            if name and rest:
                return name, sep, rest
            break
    raise click.BadParameter(
        f"{ref!r}: write {forms}, both halves given (e.g. tiny{seps[0]}1)", param_hint=hint
    )
