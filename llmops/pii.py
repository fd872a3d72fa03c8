"""Find and redact personal data in text: e-mail addresses, phone numbers, payment card numbers, IPs.

Pure and dependency-free, shared by the gateway (prompts, completions, sampled payloads) and the
training data preparation. Detection is deliberately conservative where numbers are ambiguous:

- card numbers: 13-19 digits, optionally grouped by single spaces or hyphens, that pass the Luhn check;
- phone numbers: 7-15 digits with an international `+`, a parenthesised area code, or at least two
  separators (`555-123-4567`, `+44 20 7946 0958`, `(555) 123 4567`), or a bare run of 10-15 digits;
  ISO dates, times and decimals are not phones;
- IPv4 addresses with octets 0-255, and IPv6 addresses that `ipaddress` accepts.

Every match is replaced by a typed placeholder such as `[EMAIL]`, so redacted text still reads.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass

KINDS = ("EMAIL", "CARD", "IP", "PHONE")

_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)*\.[A-Za-z]{2,24}(?![\w-])"
)
_CARD = re.compile(r"(?<![\w.-])\d(?:[ -]?\d){12,18}(?![\w-])")
_IPV4 = re.compile(
    r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\w]|\.\d)"
)
_IPV6 = re.compile(r"(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![\w:])")
_PHONE = re.compile(
    r"(?<![\w+.-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d+(?:[ .-]\d+){0,5}(?!\w|[.-]\d)"
)
_DATE_OR_TIME = re.compile(
    r"^\d{4}[-./]\d{1,2}[-./]\d{1,2}$|^\d{1,2}[-./]\d{1,2}[-./]\d{2,4}$|^\d{1,2}(?::\d\d)+$"
)

# The longest text one match can span; the streaming redactor holds back at most this much.
MAX_MATCH_CHARS = 320


@dataclass(frozen=True)
class Match:
    kind: str
    start: int
    end: int


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum that payment card numbers carry in their last digit."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _is_phone(candidate: str) -> bool:
    digits = sum(ch.isdigit() for ch in candidate)
    if not 7 <= digits <= 15 or _DATE_OR_TIME.match(candidate):
        return False
    if candidate.startswith("+") or "(" in candidate:
        return True
    separators = sum(ch in " .-" for ch in candidate)
    if separators == 0:
        return digits >= 10
    if "." in candidate and separators < 2:  # a decimal number
        return False
    return separators >= 2 or (separators == 1 and digits >= 7 and "." not in candidate)


def _candidates(text: str) -> Iterator[Match]:
    for m in _EMAIL.finditer(text):
        yield Match("EMAIL", m.start(), m.end())
    pos = 0
    while (m := _CARD.search(text, pos)) is not None:
        digits = re.sub(r"\D", "", m.group())
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            yield Match("CARD", m.start(), m.end())
            pos = m.end()
        else:  # a longer run that fails the checksum may hide a valid number further on
            pos = m.start() + 1
    for m in _IPV4.finditer(text):
        yield Match("IP", m.start(), m.end())
    for m in _IPV6.finditer(text):
        cand = m.group()
        if cand.count(":") >= 2 and any(c not in ":" for c in cand):
            try:
                ipaddress.IPv6Address(cand)
            except ValueError:
                continue
            yield Match("IP", m.start(), m.end())
    for m in _PHONE.finditer(text):
        if _is_phone(m.group()):
            yield Match("PHONE", m.start(), m.end())


def find(text: str) -> list[Match]:
    """Non-overlapping matches in text order; earlier kinds in `KINDS` win overlaps."""
    chosen: list[Match] = []
    for cand in _candidates(text):  # generated in priority order
        if all(cand.end <= c.start or cand.start >= c.end for c in chosen):
            chosen.append(cand)
    return sorted(chosen, key=lambda m: m.start)


def redact(text: str) -> str:
    """`text` with every match replaced by its placeholder, e.g. `[EMAIL]`."""
    matches = find(text)
    if not matches:
        return text
    out, pos = [], 0
    for m in matches:
        out.append(text[pos : m.start])
        out.append(f"[{m.kind}]")
        pos = m.end
    out.append(text[pos:])
    return "".join(out)


def contains_pii(text: str) -> bool:
    return bool(find(text))
