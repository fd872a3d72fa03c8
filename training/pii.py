"""Find and redact personal data: e-mail, phone, card numbers (Luhn-checked), IPv4/IPv6, names.

Pure functions. Each finding is replaced by a placeholder such as `[EMAIL]`, and counted per entity,
so the prepare report says how many of each were removed. Names need a detector: the built-in one
is a conservative heuristic (titles, "my name is", sign-offs); set LLMOPS_PII_NAME_DETECTOR to
`module:function` (a callable text -> list of (start, end) spans) to plug in a real NER model.
"""

from __future__ import annotations

import importlib
import ipaddress
import os
import re
from collections.abc import Callable, Iterable

Span = tuple[int, int]
NameDetector = Callable[[str], list[Span]]

PLACEHOLDER = {
    "email": "[EMAIL]",
    "phone": "[PHONE]",
    "creditCard": "[CREDIT_CARD]",
    "ipAddress": "[IP_ADDRESS]",
    "name": "[NAME]",
}
# Order matters: card numbers before phones (a card contains phone-shaped runs), addresses before
# phones (dotted quads look like separated digits).
ORDER = ("email", "creditCard", "ipAddress", "phone", "name")

EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![\w-])")
CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.]|\.\d)")
IPV6 = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?(?![\w:])"
)
PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]\d{2,4}){1,4}(?![\w])"
)
_TITLE_NAME = re.compile(r"\b(?:Mr|Mrs|Ms|Miss|Dr|Prof)\.?\s+((?:[A-Z][a-z]+)(?:\s+[A-Z][a-z]+)?)")
_INTRO_NAME = re.compile(
    r"\b(?:[Mm]y name is|[Nn]ame:|[Rr]egards,|[Ss]incerely,|[Tt]hanks,)\s*((?:[A-Z][a-z]+)(?:\s+[A-Z][a-z]+)?)"
)


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum of a card number (digits only)."""
    if not digits.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _emails(text: str) -> Iterable[Span]:
    return (m.span() for m in EMAIL.finditer(text))


def _cards(text: str) -> Iterable[Span]:
    for m in CARD.finditer(text):
        digits = re.sub(r"\D", "", m.group())
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            yield m.span()


def _ips(text: str) -> Iterable[Span]:
    for m in IPV4.finditer(text):
        try:
            ipaddress.IPv4Address(m.group())
        except ValueError:
            continue
        yield m.span()
    for m in IPV6.finditer(text):
        candidate = m.group()
        if sum(c in "0123456789abcdefABCDEF" for c in candidate) < 3:
            continue  # "a::b"-like fragments of code are not addresses
        try:
            ipaddress.IPv6Address(candidate)
        except ValueError:
            continue
        yield m.span()


def _phones(text: str) -> Iterable[Span]:
    for m in PHONE.finditer(text):
        digits = sum(c.isdigit() for c in m.group())
        if 7 <= digits <= 15:  # E.164 allows at most 15 digits
            yield m.span()


def heuristic_names(text: str) -> list[Span]:
    """Names after a title (Dr. Jane Smith) or an introduction (my name is ..., Regards, ...)."""
    return [m.span(1) for pattern in (_TITLE_NAME, _INTRO_NAME) for m in pattern.finditer(text)]


def name_detector_from_env() -> tuple[str, NameDetector]:
    """The configured name detector: LLMOPS_PII_NAME_DETECTOR=module:function, else the heuristic."""
    spec = os.environ.get("LLMOPS_PII_NAME_DETECTOR", "").strip()
    if not spec or spec == "heuristic":
        return "heuristic", heuristic_names
    module, _, attr = spec.partition(":")
    if not attr:
        raise ValueError(f"LLMOPS_PII_NAME_DETECTOR={spec!r}: expected module:function")
    return spec, getattr(importlib.import_module(module), attr)


FINDERS: dict[str, Callable[[str], Iterable[Span]]] = {
    "email": _emails,
    "creditCard": _cards,
    "ipAddress": _ips,
    "phone": _phones,
}


def find(text: str, entities: Iterable[str], name_detector: NameDetector | None = None) -> list[tuple[str, Span]]:
    """Non-overlapping findings as (entity, span), earlier entities in ORDER winning overlaps."""
    wanted = set(entities)
    taken: list[tuple[str, Span]] = []
    for entity in ORDER:
        if entity not in wanted:
            continue
        if entity == "name":
            if name_detector is None:
                continue
            spans: Iterable[Span] = name_detector(text)
        else:
            spans = FINDERS[entity](text)
        for start, end in spans:
            if all(end <= s or start >= e for _, (s, e) in taken):
                taken.append((entity, (start, end)))
    return sorted(taken, key=lambda f: f[1])


def scrub(
    text: str, entities: Iterable[str], name_detector: NameDetector | None = None
) -> tuple[str, dict[str, int]]:
    """`text` with every finding replaced by its placeholder, and the count per entity."""
    findings = find(text, entities, name_detector)
    counts: dict[str, int] = {}
    out, last = [], 0
    for entity, (start, end) in findings:
        out.append(text[last:start])
        out.append(PLACEHOLDER[entity])
        last = end
        counts[entity] = counts.get(entity, 0) + 1
    out.append(text[last:])
    return "".join(out), counts
