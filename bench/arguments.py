"""The command line of every bench script: `parser(__doc__)` gives `--help` the script's whole
docstring (what it measures, against which baseline, how to run it) as written, and each option's
default beside its help (a flag's, None and a repeatable option's empty list are left out: a flag is off
unless given, an option without a default says in its help what happens then, and a repeatable one is
none unless given)."""

from __future__ import annotations

import argparse


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    def _get_help_string(self, action: argparse.Action) -> str | None:
        # A flag (store_true, store_false) takes no value: "(default: True)" beside `--no-restart`
        # read as if the restart were skipped by default. No default (None): the help says what then.
        # A repeatable option (append) starts from an empty list: "(default: [])" says nothing.
        if action.nargs == 0 or action.default is None or action.default == []:
            return action.help
        return super()._get_help_string(action)


def parser(doc: str | None) -> argparse.ArgumentParser:
    """An ArgumentParser whose description is `doc` (a module docstring) unwrapped as written and
    whose options show their defaults."""
    return argparse.ArgumentParser(description=doc, formatter_class=_Formatter)
