"""The one reader of JSON lines (https://jsonlines.org) in the project: training data, evaluation
data, the drift monitor's reference and sampled prompts, labelled test sets.

- Lines end at `\\n` only (a preceding `\\r` is dropped). Never `str.splitlines()`: it also splits at
  U+2028, U+2029, U+0085 and other characters that JSON allows unescaped inside strings, which
  `json.dumps(..., ensure_ascii=False)` writes as they are.
- A UTF-8 byte-order mark at the start of the file is skipped; blank lines are skipped.
- Each line is decoded as UTF-8 and parsed on its own; a line that is not valid raises
  `JsonLinesError` naming the file (`source`) and the 1-based line number, or, with `on_error`, is
  reported to that callable and skipped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

BOM = b"\xef\xbb\xbf"


class JsonLinesError(ValueError):
    """A line of a JSON lines file that is not UTF-8 JSON: `source`, `line` (1-based), `reason`."""

    def __init__(self, source: str, line: int, reason: str) -> None:
        super().__init__(f"{source}: line {line} is not valid JSON ({reason})")
        self.source, self.line, self.reason = source, line, reason


def read(
    data: bytes | str,
    source: str,
    *,
    on_error: Callable[[JsonLinesError], None] | None = None,
) -> Iterator[tuple[int, Any]]:
    """(line number, value) for each non-blank line of `data` (bytes, or text already decoded)."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if raw.startswith(BOM):
        raw = raw[len(BOM) :]
    for number, line in enumerate(raw.split(b"\n"), 1):
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line.strip():
            continue
        try:
            value = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError as e:
            error = JsonLinesError(source, number, f"not UTF-8 at byte {e.start}")
        except json.JSONDecodeError as e:
            error = JsonLinesError(source, number, f"{e.msg} at column {e.colno}")
        else:
            yield number, value
            continue
        if on_error is None:
            raise error
        on_error(error)


def read_path(path: str | Path, **kwargs: Any) -> Iterator[tuple[int, Any]]:
    """`read` over a local file; the source in errors is its path."""
    return read(Path(path).read_bytes(), str(path), **kwargs)
