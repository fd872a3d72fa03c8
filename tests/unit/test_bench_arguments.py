"""bench/arguments.py: every bench script's --help shows its options' defaults, not a flag's, None or []."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_options_show_their_defaults_and_flags_do_not(monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(BENCH))
    sys.modules.pop("arguments", None)
    import arguments

    parser = arguments.parser("What it measures.\n\n    python bench/x.py [--objects N]")
    parser.add_argument("--objects", type=int, default=1000, help="objects to create")
    parser.add_argument("--no-restart", dest="restart", action="store_false", help="skip the restart")
    parser.add_argument("--allocators", action="store_true", help="the allocators' accounts")
    parser.add_argument("--more", type=int, help="further objects (none given: a quarter of --objects)")
    parser.add_argument("--env", action="append", default=[], help="a variable, repeatable")
    text = " ".join(parser.format_help().split())
    assert "objects to create (default: 1000)" in text
    assert "skip the restart --allocators" in text  # no "(default: True)" after a flag's help
    assert "the allocators' accounts" in text and "default: False" not in text
    assert "a quarter of --objects)" in text and "default: None" not in text
    assert "a variable, repeatable" in text and "default: []" not in text
    assert "What it measures.\n\n    python bench/x.py [--objects N]" in parser.format_help()
