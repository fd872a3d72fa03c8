"""The command line of every bench script: `parser(__doc__)` gives `--help` the script's whole
docstring (what it measures, against which baseline, how to run it) as written, and each option's
default beside its help."""

from __future__ import annotations

import argparse


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def parser(doc: str | None) -> argparse.ArgumentParser:
    """An ArgumentParser whose description is `doc` (a module docstring) unwrapped as written and
    whose options show their defaults."""
    return argparse.ArgumentParser(description=doc, formatter_class=_Formatter)
