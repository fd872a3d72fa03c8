"""PII scrubbing of training documents, on top of the detectors the gateway uses (llmops.pii).

One set of detectors for both ends of the lifecycle, so what the gateway redacts from prompts is
what training removes from data: e-mail, phone (libphonenumber, for the spec's `regions`), payment
cards (Luhn-checked), IPv4/IPv6. This module adds what data preparation needs: names of people (with a
detector), and counts per entity for the preparation report.

Names need a detector: the built-in one is a conservative heuristic (a title such as "Dr." or an
introduction such as "my name is" followed by capitalised words); set LLMOPS_PII_NAME_DETECTOR to
`module:function` (a callable text -> list of (start, end) spans) to plug in an NER model.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable, Iterable, Sequence

from llmops import pii as shared

Span = tuple[int, int]
NameDetector = Callable[[str], list[Span]]

NAME_PLACEHOLDER = "[NAME]"

_TITLE_NAME = re.compile(r"\b(?:Mr|Mrs|Ms|Miss|Dr|Prof)\.?\s+([A-Z][a-z]+(?:\s+[A-Z][a-z]+)?)")
_INTRO_NAME = re.compile(
    r"\b(?:[Mm]y name is|[Nn]ame:|[Rr]egards,|[Ss]incerely,|[Tt]hanks,)\s*([A-Z][a-z]+(?:\s+[A-Z][a-z]+)?)"
)


def heuristic_names(text: str) -> list[Span]:
    """Names after a title (Dr. Jane Smith) or an introduction (my name is ..., Regards, ...)."""
    return [m.span(1) for pattern in (_TITLE_NAME, _INTRO_NAME) for m in pattern.finditer(text)]


def load_name_detector(spec: str | None = None) -> tuple[str, NameDetector]:
    """The detector `spec` names (module:function); default LLMOPS_PII_NAME_DETECTOR, else the heuristic."""
    spec = (spec if spec is not None else os.environ.get("LLMOPS_PII_NAME_DETECTOR", "")).strip()
    if not spec or spec == "heuristic":
        return "heuristic", heuristic_names
    module, _, attr = spec.partition(":")
    if not attr:
        raise ValueError(f"LLMOPS_PII_NAME_DETECTOR={spec!r}: expected module:function")
    return spec, getattr(importlib.import_module(module), attr)


def find(
    text: str,
    entities: Iterable[str],
    name_detector: NameDetector | None = None,
    regions: Sequence[str] = shared.DEFAULT_REGIONS,
) -> list[tuple[str, Span, str]]:
    """Non-overlapping findings as (entity, span, placeholder), in text order."""
    wanted = set(entities)
    detector = shared.detector(tuple(e for e in shared.ENTITIES if e in wanted), tuple(regions))
    found = [(m.entity, (m.start, m.end), m.placeholder) for m in detector.find(text)]
    if "name" in wanted and name_detector is not None:
        for start, end in name_detector(text):
            if all(end <= s or start >= e for _, (s, e), _ in found):
                found.append(("name", (start, end), NAME_PLACEHOLDER))
    return sorted(found, key=lambda f: f[1])


def scrub(
    text: str,
    entities: Iterable[str],
    name_detector: NameDetector | None = None,
    regions: Sequence[str] = shared.DEFAULT_REGIONS,
) -> tuple[str, dict[str, int]]:
    """`text` with every finding replaced by its placeholder, and the count per entity."""
    counts: dict[str, int] = {}
    out, last = [], 0
    for entity, (start, end), placeholder in find(text, entities, name_detector, regions):
        out.append(text[last:start])
        out.append(placeholder)
        last = end
        counts[entity] = counts.get(entity, 0) + 1
    out.append(text[last:])
    return "".join(out), counts
