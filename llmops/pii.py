"""Find and redact personal data in text: e-mail addresses, phone numbers, payment card numbers, IPs.

Shared by the gateway (prompts, answers, stored samples) and training data preparation, so both ends
of the lifecycle find the same things. Detection leans on maintained libraries where one exists:

- phone numbers: Google's libphonenumber (the `phonenumbers` package), `PhoneNumberMatcher` at
  leniency `VALID`: a number in international form (`+44 20 7946 0958`) is found whatever the
  regions; one in national form (`020 7946 0958`, `06 12 34 56 78`) only when it is a valid number of
  one of the configured `regions` (ISO 3166-1 alpha-2). The matcher itself refuses dates, time
  stamps and digits glued to Latin letters; "valid" (assigned ranges and lengths per region) is what
  keeps versions, decimals, amounts, coordinates, grouped thousands and lists of small numbers out
  (with the guards in `_looks_like_number_of_another_kind`). Besides, a possible number of 10 or
  more digits written exactly in libphonenumber's grouping counts (the fictional (555) 010-9999);
- e-mail addresses: a loose candidate pattern (atext local parts, Unicode letters included, and
  domain literals), each candidate then checked by `email_validator.validate_email` (RFC 5321/5322
  syntax, internationalised addresses per RFC 6531 and IDNA 2008, no DNS look-up);
- payment card numbers: 13-19 digits, contiguous or in the usual groupings (4-4-4-4[-1..3], 4-6-5,
  4-6-4) with one separator (space or hyphen), a major industry identifier of 2-6 (ISO/IEC 7812-1) and
  a valid Luhn check digit (ISO/IEC 7812-1 annex B);
- IP addresses: IPv4 dotted quads and IPv6 addresses that the standard library's `ipaddress` accepts.

Segments. Text is cut into segments that are detected independently: a cut falls at a run of white
space that touches a letter (`Call 555`: after `Call`; `0132 ext`: before `ext`) and after CJK
sentence punctuation (U+3002 and the like), so no entity spans a cut (phone and card digit groups
are separated by spaces and punctuation, never by words); besides,
a segment is cut at its first white space after `SOFT_SEGMENT` characters and anywhere after
`HARD_SEGMENT` characters (a very long run of numbers or a very long token). A cut depends only on
the text before it and one character after it, so `Segmenter` finds the same cuts in a text fed in
any chunks: that is what lets a stream be redacted exactly as the whole text would be
(`StreamRedactor`), while holding back at most one segment.

Every match is replaced by a typed placeholder (`[EMAIL]`, `[PHONE]`, `[CARD]`, `[IP]`), so redacted
text still reads.

Over 400 lines on purpose: the detectors and the segmenter that makes streamed and whole-text
redaction agree are one algorithm; split, the invariant between them would span modules.
"""

from __future__ import annotations

import functools
import ipaddress
import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import phonenumbers
from email_validator import EmailNotValidError, validate_email

ENTITIES = ("email", "creditCard", "ipAddress", "phone")  # priority order when matches overlap
PLACEHOLDERS = {"email": "[EMAIL]", "creditCard": "[CARD]", "ipAddress": "[IP]", "phone": "[PHONE]"}
DEFAULT_REGIONS = ("US",)
LENIENCIES = {
    "formatted": phonenumbers.Leniency.VALID,  # and possible numbers that pass `_formatted`
    "possible": phonenumbers.Leniency.POSSIBLE,
    "valid": phonenumbers.Leniency.VALID,
    "strictGrouping": phonenumbers.Leniency.STRICT_GROUPING,
    "exactGrouping": phonenumbers.Leniency.EXACT_GROUPING,
}
SOFT_SEGMENT = 256  # characters after which a segment ends at its next white space
HARD_SEGMENT = 1024  # characters after which a segment ends wherever it is
MIN_PHONE_DIGITS = 5  # the shortest national numbers (some small countries) have 5 digits
FORMATTED_MIN_DIGITS = 10  # a possible (not valid) number counts from this many digits, if `_formatted`

_CJK = "\u1100-\u11ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_CJK_RE = re.compile(f"[{_CJK}]")
# Characters that end a candidate address: white space, brackets, quotes and sentence punctuation
# (ASCII, CJK and full-width). Local parts keep the rest of atext (RFC 5322 3.2.3) and any Unicode
# letter, mark or digit (RFC 6531); domain labels letters, marks, digits and hyphens. Quoted local
# parts are not sought.
_STOP = (  # white space, @, brackets, quotes, sentence punctuation (ASCII, CJK, full-width)
    '\\s@<>()\\[\\]\\\\,;:"'
    "\u201c\u201d\u2018\u2019\u00ab\u00bb\u300c\u300d\u300e\u300f\u3010\u3011\u3008\u3009\u300a\u300b"
    "\uff08\uff09\uff3b\uff3d\uff5b\uff5d\u3001\u3002\uff0c\uff0e\uff1a\uff1b\uff01\uff1f\u2026"
)
_LOCAL = f"[^{_STOP}'`./][^{_STOP}]{{0,127}}"
_LABEL = f"[^{_STOP}.!#$%&'*+/=?^`{{|}}~_]{{1,63}}"
_EMAIL = re.compile(f"{_LOCAL}@(?:\\[[0-9A-Za-z:.]{{2,60}}\\]|(?:{_LABEL}\\.)+{_LABEL})")
# File names such as logo@2x.png look like addresses; these extensions are not top-level domains.
_FILE_SUFFIXES = frozenset({"png", "jpg", "jpeg", "gif", "svg", "webp", "avif", "bmp", "ico", "tif", "tiff"})
_CARD = re.compile(
    r"(?<![\w.,+-])(?:\d{4}([ -])\d{4}\1\d{4}\1\d{4}(?:\1\d{1,3})?|\d{4}([ -])\d{6}\2\d{4,5}|\d{13,19})"
    r"(?![\w-]|[.,]\d)"
)
_IPV4 = re.compile(
    r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\w]|\.\d)"
)
_IPV6 = re.compile(
    r"(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:(?:\.\d{1,3}){3})?(?![\w:]|\.\d)"
)
_DIGIT = re.compile(r"\d")
_SPACE_RUN = re.compile(r"\s+")
# CJK and full-width sentence punctuation (ideographic comma and full stop; full-width comma,
# exclamation and question marks, semicolon, colon): no entity contains it, so writing without spaces
# is cut after it too.
_CLAUSE_END = re.compile("[\u3001\u3002\uff0c\uff01\uff1f\uff1b\uff1a]")


@dataclass(frozen=True)
class Match:
    """One finding: `entity` is one of `ENTITIES`; `start`/`end` index the text (end exclusive)."""

    entity: str
    start: int
    end: int

    @property
    def placeholder(self) -> str:
        return PLACEHOLDERS[self.entity]


_DECIMAL_TOKEN = re.compile(r"(?:^|\s)[-+]?\d+[.,]\d+(?:\s|$)")
_GROUPS = re.compile(r"\d+")


def _looks_like_number_of_another_kind(text: str, start: int, end: int) -> bool:
    """What libphonenumber may accept as a valid number in some region but is something else here.

    - part of a decimal number: glued to `<digit>.` or `,<digit>` on either side, or a token of the
      match is a decimal (`0.693147`, `0.52 0.48`): a phone written with dots has two or more;
    - part of an identifier: glued by `#`, `_` or a hyphen or slash to a word (`INV-2024-000123`);
    - a list of small numbers: two or more single-digit groups after the first (`1 2 3 4 5`).
    """
    before, after = text[max(0, start - 2) : start], text[end : end + 2]
    if re.fullmatch(r"\d[.,]", before) or re.fullmatch(r"[.,]\d", after):
        return True
    if before[-1:] in ("#", "_") or after[:1] == "_":
        return True
    if re.fullmatch(r"\w[-/]", before) or re.fullmatch(r"[-/]\w", after):
        return True
    candidate = text[start:end]
    if _DECIMAL_TOKEN.search(candidate):
        return True
    groups = _GROUPS.findall(candidate)
    return sum(len(g) == 1 for g in groups[1:]) >= 2


_LATIN_LETTER = re.compile(r"[A-Za-z\u00c0-\u024f]")


def _formatted(text: str, match: phonenumbers.PhoneNumberMatch) -> bool:
    """A possible number of `FORMATTED_MIN_DIGITS` or more, written in three or more digit groups,
    exactly as libphonenumber groups it (national form, or international when it starts with +),
    and, as at libphonenumber's `valid` leniency, not glued to a Latin letter, `%` or a currency."""
    raw = match.raw_string
    groups = _GROUPS.findall(raw)
    if len(groups) < 3 or sum(map(len, groups)) < FORMATTED_MIN_DIGITS:
        return False
    before = text[match.start - 1] if match.start else ""
    after = text[match.end] if match.end < len(text) else ""
    if before and raw[0] not in "(+[" and (_LATIN_LETTER.match(before) or before in "%$€£¥₹"):
        return False
    if after and (_LATIN_LETTER.match(after) or after in "%$€£¥₹"):
        return False
    style = (
        phonenumbers.PhoneNumberFormat.INTERNATIONAL
        if raw.lstrip("([").startswith("+")
        else phonenumbers.PhoneNumberFormat.NATIONAL
    )
    return groups == _GROUPS.findall(phonenumbers.format_number(match.number, style))


def luhn_valid(digits: str) -> bool:
    """The Luhn check digit (ISO/IEC 7812-1 annex B) that payment card numbers end with."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


class Segmenter:
    """Cut positions of a text fed in chunks; the same cuts for any chunking (see the module doc).

    `feed(chunk)` returns the new cuts (absolute character offsets, increasing) that the text so far
    settles; a cut is never withdrawn. Whole text: `Segmenter().feed(text)`.
    """

    def __init__(self) -> None:
        self.pos = 0  # characters consumed
        self.seg = 0  # start of the current segment
        self.prev_alpha = False  # the last character consumed is a letter
        self.prev_space = False  # the last character consumed is white space
        self.run_open = False  # a white-space run is open and not yet decided

    def _cut(self, p: int, out: list[int]) -> None:
        while p - self.seg > HARD_SEGMENT:
            self.seg += HARD_SEGMENT
            out.append(self.seg)
        if p > self.seg:
            self.seg = p
            out.append(p)

    def _hard(self, upto: int, out: list[int]) -> None:
        """Hard cuts settled once characters up to `upto` (exclusive) are known."""
        while upto - self.seg > HARD_SEGMENT:
            self.seg += HARD_SEGMENT
            out.append(self.seg)

    def _stretch(self, chunk: str, i: int, s: int, base: int, out: list[int]) -> None:
        """Non-space characters chunk[i:s]."""
        if self.run_open and chunk[i].isalpha():
            self._cut(base + i, out)  # a run that ends at a letter: cut after the run
        self.run_open = False
        for m in _CLAUSE_END.finditer(chunk, i, s):
            self._cut(base + m.end(), out)  # after CJK sentence punctuation: text without spaces
        self._hard(base + s, out)
        self.prev_alpha = chunk[s - 1].isalpha()
        self.prev_space = False

    def feed(self, chunk: str) -> list[int]:
        out: list[int] = []
        base, i, n = self.pos, 0, len(chunk)
        for m in _SPACE_RUN.finditer(chunk):
            s, e = m.span()
            if s > i:
                self._stretch(chunk, i, s, base, out)
            if not self.prev_space:  # a new run starts at s
                if self.prev_alpha or base + s - self.seg >= SOFT_SEGMENT:
                    self._cut(base + s, out)
                    self.run_open = False
                else:
                    self.run_open = True
            self._hard(base + e, out)
            self.prev_space, self.prev_alpha, i = True, False, e
        if i < n:
            self._stretch(chunk, i, n, base, out)
        self.pos = base + n
        return out


def segments(text: str) -> list[tuple[int, int]]:
    """The (start, end) segments of a whole text."""
    bounds = [0, *Segmenter().feed(text), len(text)]
    return [(a, b) for a, b in itertools.pairwise(bounds) if b > a]


def _is_cjk(ch: str) -> bool:
    return _CJK_RE.match(ch) is not None


def _trim_scripts(local: str, domain: str) -> tuple[str, str]:
    """Drop CJK or other text glued to an address in unspaced writing (`連絡はtaro@x.jpまで`): the local
    part keeps what follows its last switch between CJK and other letters, the domain what precedes
    the first switch inside a label."""
    letters = [c for c in local if c.isalpha()]
    if letters and any(_is_cjk(c) for c in letters) and not all(_is_cjk(c) for c in letters):
        tail = _is_cjk(letters[-1])
        i = len(local)
        while i > 0 and (not local[i - 1].isalpha() or _is_cjk(local[i - 1]) == tail):
            i -= 1
        local = local[i:].lstrip(".")
    labels = domain.split(".")
    for n, label in enumerate(labels):
        letters = [c for c in label if c.isalpha()]
        if letters and any(_is_cjk(c) for c in letters) and not all(_is_cjk(c) for c in letters):
            head = _is_cjk(letters[0])
            j = 0
            while j < len(label) and (not label[j].isalpha() or _is_cjk(label[j]) == head):
                j += 1
            domain = ".".join([*labels[:n], label[:j]]).rstrip(".-")
            break
    return local, domain


@functools.lru_cache(maxsize=4096)
def _valid_email(address: str) -> bool:
    try:
        validate_email(address, check_deliverability=False, allow_smtputf8=True, allow_domain_literal=True)
    except EmailNotValidError:
        return False
    return True


class Detector:
    """Finds the configured entities in text.

    `entities`: names from `ENTITIES` (default all); `regions`: ISO 3166-1 alpha-2 codes whose national
    formats count as phone numbers (international `+` numbers are found whatever they are);
    `leniency`: a key of `LENIENCIES`: libphonenumber's own (`valid`: an assigned number of its
    region; `possible`: a plausible length only; the grouping ones), or `formatted` (the default):
    valid numbers, and possible ones of 10 digits or more written in exactly the digit groups
    libphonenumber formats them with, so that fictional numbers such as (555) 010-9999 count.
    `cache_size`: segments whose findings are remembered (0: none).
    Raises ValueError naming an unknown entity, region or leniency.
    """

    def __init__(
        self,
        entities: Iterable[str] = ENTITIES,
        regions: Sequence[str] = DEFAULT_REGIONS,
        leniency: str = "formatted",
        cache_size: int = 4096,
    ) -> None:
        wanted = set(entities)
        if unknown := wanted - set(ENTITIES):
            raise ValueError(f"entities: unknown {sorted(unknown)}; known: {list(ENTITIES)}")
        supported = phonenumbers.SUPPORTED_REGIONS
        if bad := [r for r in regions if r.upper() not in supported]:
            raise ValueError(f"regions: {bad} are not ISO 3166-1 alpha-2 codes libphonenumber knows")
        if leniency not in LENIENCIES:
            raise ValueError(f"leniency: {leniency!r} is not one of {list(LENIENCIES)}")
        self.entities = tuple(e for e in ENTITIES if e in wanted)
        self.regions = tuple(dict.fromkeys(r.upper() for r in regions)) or ("ZZ",)
        self.leniency = LENIENCIES[leniency]
        self.formatted = leniency == "formatted"
        # A conversation sends its history again with every turn: remember the findings per segment.
        self.find_in_segment = functools.lru_cache(maxsize=cache_size)(self._find_in_segment)

    def _email(self, text: str) -> list[Match]:
        out: list[Match] = []
        if "@" not in text:
            return out
        for m in _EMAIL.finditer(text):
            at = text.index("@", m.start())
            local, domain = text[m.start() : at].lstrip("."), text[at + 1 : m.end()]
            if not domain.startswith("["):
                local, domain = _trim_scripts(local, domain)
            if domain.rsplit(".", 1)[-1].lower() in _FILE_SUFFIXES:
                continue
            if local and domain and _valid_email(f"{local}@{domain}"):
                out.append(Match("email", at - len(local), at + 1 + len(domain)))
        return out

    @staticmethod
    def _card(text: str) -> list[Match]:
        out = []
        for m in _CARD.finditer(text):
            digits = m.group().replace(" ", "").replace("-", "")
            if digits[0] in "23456" and luhn_valid(digits):
                out.append(Match("creditCard", m.start(), m.end()))
        return out

    @staticmethod
    def _ip(text: str) -> list[Match]:
        out = [Match("ipAddress", m.start(), m.end()) for m in _IPV4.finditer(text)]
        if text.count(":") >= 2:
            for m in _IPV6.finditer(text):
                cand = m.group()
                if cand.count(":") < 2 or not any(c != ":" for c in cand):
                    continue
                try:
                    ipaddress.IPv6Address(cand)
                except ValueError:
                    continue
                out.append(Match("ipAddress", m.start(), m.end()))
        return out

    def _phone(self, text: str, digits: int) -> list[Match]:
        out = []
        for region in self.regions:
            for m in phonenumbers.PhoneNumberMatcher(text, region, leniency=self.leniency, max_tries=1 << 30):
                if not _looks_like_number_of_another_kind(text, m.start, m.end):
                    out.append(Match("phone", m.start, m.end))
        if not self.formatted or digits < FORMATTED_MIN_DIGITS:
            return out
        covered = sum(1 for f in out for c in text[f.start : f.end] if c.isdigit())
        if digits - covered < FORMATTED_MIN_DIGITS:  # no number left that the second pass could find
            return out
        for region in self.regions:
            for m in phonenumbers.PhoneNumberMatcher(
                text, region, leniency=phonenumbers.Leniency.POSSIBLE, max_tries=1 << 30
            ):
                if _formatted(text, m) and not _looks_like_number_of_another_kind(text, m.start, m.end):
                    out.append(Match("phone", m.start, m.end))
        return out

    def _find_in_segment(self, text: str) -> tuple[Match, ...]:
        """Findings in one segment, non-overlapping, in text order (earlier `ENTITIES` win overlaps).
        Called through `find_in_segment`, which caches the last `cache_size` segments' findings."""
        digits = len(_DIGIT.findall(text)) if any(c.isdigit() for c in text) else 0
        found: list[Match] = []
        for entity in self.entities:
            if entity == "email":
                found += self._email(text)
            elif digits == 0:
                continue
            elif entity == "creditCard" and digits >= 13:
                found += self._card(text)
            elif entity == "ipAddress":
                found += self._ip(text)
            elif entity == "phone" and digits >= MIN_PHONE_DIGITS:
                found += self._phone(text, digits)
        chosen: list[Match] = []
        # In priority order; within a kind the longest first (one region may read more of a number).
        found.sort(key=lambda m: (ENTITIES.index(m.entity), m.start - m.end, m.start))
        for cand in found:
            if all(cand.end <= c.start or cand.start >= c.end for c in chosen):
                chosen.append(cand)
        return tuple(sorted(chosen, key=lambda m: m.start))

    def find(self, text: str) -> list[Match]:
        """Findings in a whole text, segment by segment, in text order."""
        out = []
        for a, b in segments(text):
            out += [Match(m.entity, m.start + a, m.end + a) for m in self.find_in_segment(text[a:b])]
        return out

    def redact_segment(self, text: str) -> str:
        return _replace(text, self.find_in_segment(text))

    def redact(self, text: str) -> str:
        """`text` with each finding replaced by its placeholder, e.g. `[EMAIL]`."""
        return "".join(self.redact_segment(text[a:b]) for a, b in segments(text))

    def stream(self) -> StreamRedactor:
        return StreamRedactor(self)


def _replace(text: str, matches: Sequence[Match]) -> str:
    if not matches:
        return text
    out, pos = [], 0
    for m in matches:
        out.append(text[pos : m.start])
        out.append(m.placeholder)
        pos = m.end
    out.append(text[pos:])
    return "".join(out)


class StreamRedactor:
    """Feed a text's chunks in order, get back redacted text that no later chunk can change.

    What comes out over all `feed` calls plus `flush()` equals `detector.redact(whole text)`, for any
    chunking: settled segments are redacted and passed on, the last (open) segment is held back,
    `flush()` releases it when the text ends.
    """

    def __init__(self, detector: Detector) -> None:
        self.detector = detector
        self.segmenter = Segmenter()
        self.held = ""  # text since the last cut
        self.held_at = 0  # its offset in the whole text

    def feed(self, chunk: str) -> str:
        if not chunk:
            return ""
        cuts = self.segmenter.feed(chunk)
        self.held += chunk
        if not cuts:
            return ""
        out, start = [], 0
        for cut in cuts:
            end = cut - self.held_at
            out.append(self.detector.redact_segment(self.held[start:end]))
            start = end
        self.held = self.held[start:]
        self.held_at = cuts[-1]
        return "".join(out)

    def flush(self) -> str:
        out = self.detector.redact_segment(self.held) if self.held else ""
        self.held_at += len(self.held)
        self.held = ""
        return out


@functools.lru_cache(maxsize=32)
def detector(
    entities: tuple[str, ...] = ENTITIES,
    regions: tuple[str, ...] = DEFAULT_REGIONS,
    leniency: str = "formatted",
) -> Detector:
    """A shared `Detector` per configuration."""
    return Detector(entities, regions, leniency)


def find(text: str) -> list[Match]:
    """Every entity, default regions."""
    return detector().find(text)


def redact(text: str) -> str:
    """Every entity, default regions."""
    return detector().redact(text)
