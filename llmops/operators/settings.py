"""The operator's settings, read from its environment (docs/install.md, "Operator settings"; the
chart sets them from its `workloads.*` values).

One rule for all of them: a variable that is unset or blank takes the operator's default (a
`helm upgrade --reuse-values` renders a value the older release did not have as an empty string,
and an empty `value:` is how a Deployment often leaves one out), and a number (a rate, a period) or
a duration that is not what the setting takes is refused with a ValueError that names the variable,
its value and what it should be. (Text settings are taken as they are: the label lists,
`k=v,...`, skip an item without `=`.) The operator's start reads every setting once
(operators.cli), so a wrong one stops the start with that one line instead of failing each
reconcile that reads it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping


def text(env: Mapping[str, str | None], name: str, default: str) -> str:
    """The value of `name`, stripped; `default` when it is unset or blank."""
    value = (env.get(name) or "").strip()
    return value or default


def rate(env: Mapping[str, str | None], name: str, default: float, what: str) -> float:
    """A rate, `what` so many a second: a number above 0 (`inf` is accepted and paces nothing; 0
    would stop what it paces). `default` when unset or blank. Raises ValueError naming `name`."""
    raw = text(env, name, "")
    value = _number(raw, default)
    if not value > 0:  # NaN too
        raise ValueError(f"{name}={raw!r}: {what} a second, a number above 0")
    return value


def seconds(env: Mapping[str, str | None], name: str, default: float, what: str, zero: bool = False) -> float:
    """A duration in seconds, `what`: a finite number above 0 (or 0 too, with `zero`). `default` when
    unset or blank. Raises ValueError naming `name`."""
    raw = text(env, name, "")
    value = _number(raw, default)
    if not (math.isfinite(value) and (value >= 0 if zero else value > 0)):
        least = "0 or more" if zero else "above 0"
        raise ValueError(f"{name}={raw!r}: {what}, in seconds, a number {least}")
    return value


def _number(raw: str, default: float) -> float:
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        return math.nan
