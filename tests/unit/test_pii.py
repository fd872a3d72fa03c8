"""PII detection (llmops.pii): quality on the labelled set, the issue's false alarms, and the streaming
redactor's promise that any chunking gives the same output as redacting the whole text."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmops import pii

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import pii_detection  # noqa: E402

SET_REGIONS = list(pii_detection.REGIONS.values())


def test_the_labelled_set_meets_the_goal():
    rows = pii_detection.load()
    locales = {r["locale"] for r in rows if not r["trap"]}
    traps = {r["trap"] for r in rows if r["trap"]}
    assert len(rows) >= 300 and len(locales) >= 8
    assert {"date", "time", "version", "decimal", "amount", "coordinates", "thousands", "list"} <= traps
    result = pii_detection.score(pii.Detector(regions=SET_REGIONS), rows)
    for entity, t in result["entities"].items():
        assert t["tp"] >= 20, entity  # every entity is represented
        assert t["precision"] >= 0.95, (entity, result["false_alarms"])
        assert t["recall"] >= 0.95, (entity, result["misses"])


@pytest.mark.parametrize(
    "text",
    [
        "Logged at 2024-01-15 10:30:00 UTC",
        "Windows 10.0.19045",
        "The city has 1 500 000 inhabitants, or 1.500.000.",
        "Meet at 48.8566, 2.3522 or -33.8688, 151.2093.",
        "Pick 3, 5, 7, 11, 13 or 1 2 3 4 5 6 7 8 9 10.",
        "Total $1,234,567.89; ratio 1.6180339887; v3.12.1",
    ],
)
def test_the_issues_false_alarms_are_left_alone(text):
    assert pii.Detector(regions=SET_REGIONS).redact(text) == text


@pytest.mark.parametrize(
    ("text", "regions", "redacted"),
    [
        ("Call (415) 555-0132 now", ["US"], "Call [PHONE] now"),
        ("Ring +44 20 7946 0958.", ["US"], "Ring [PHONE]."),  # international: any region
        ("Ring 020 7946 0958.", ["GB"], "Ring [PHONE]."),
        ("Ring 020 7946 0958.", ["US"], "Ring 020 7946 0958."),  # national: only its region
        ("Appelez le 06 12 34 56 78.", ["FR"], "Appelez le [PHONE]."),
        ("電話は03-1234-5678です", ["JP"], "電話は[PHONE]です"),
        ("Mail josé@exemplo.com.br or 用户@例子.广告!", ["US"], "Mail [EMAIL] or [EMAIL]!"),
        ("連絡先はtaro@example.jpです", ["US"], "連絡先は[EMAIL]です"),
        ("Card 3714-496353-98431 and 4111111111111111.", ["US"], "Card [CARD] and [CARD]."),
        ("Not a card: 4111 1111 1111 1112.", ["US"], "Not a card: 4111 1111 1111 1112."),
        ("Hosts 10.0.0.1 and ::ffff:192.0.2.128.", ["US"], "Hosts [IP] and [IP]."),
    ],
)
def test_what_is_found(text, regions, redacted):
    assert pii.Detector(regions=regions).redact(text) == redacted


def test_entities_and_regions_are_configurable_and_checked():
    text = "a@example.com, +1 415 555 0132, 10.0.0.1"
    assert pii.Detector(entities=["email"]).redact(text) == "[EMAIL], +1 415 555 0132, 10.0.0.1"
    assert pii.Detector(entities=["phone", "ipAddress"]).redact(text) == "a@example.com, [PHONE], [IP]"
    with pytest.raises(ValueError, match="entities"):
        pii.Detector(entities=["ssn"])
    with pytest.raises(ValueError, match="regions"):
        pii.Detector(regions=["XX"])
    with pytest.raises(ValueError, match="leniency"):
        pii.Detector(leniency="loose")


# Streaming: the text of a stream is redacted as the whole text would be, whatever the chunking.

PIECES = [
    "Call",
    " (",
    "415",
    ") ",
    "555",
    "-",
    "0132",
    " now",
    " or mail jane.doe@example.com",
    " card 4111 1111 1111 1111",
    " ip 192.168.0.1",
    " +44 20 7946 0958",
    " 2024-01-15 10:30:00",
    "\n",
    "  ",
    "連絡先はtaro@example.jpです",
    "電話は03-1234-5678です。",
    "、",
    "携帯\uff1a090-1234-5678",
    " 1 500 000",
    " x",
    "(555) 123-4567",
    ".",
    "a" * 300,
    "7" * 40,
    " ",
]
texts = st.lists(st.sampled_from(PIECES) | st.text(max_size=8), max_size=30).map("".join)


def chunked(text: str, cuts: list[int]) -> list[str]:
    bounds = [0, *sorted({c % (len(text) + 1) for c in cuts}), len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=texts, cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12))
def test_a_stream_is_redacted_like_the_whole_text(text, cuts):
    detector = pii.Detector(regions=["US", "GB"])
    stream = detector.stream()
    out = "".join(stream.feed(c) for c in chunked(text, cuts)) + stream.flush()
    assert out == detector.redact(text)


@settings(max_examples=300, deadline=None)
@given(text=texts, cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12))
def test_cuts_do_not_depend_on_the_chunking(text, cuts):
    whole = pii.Segmenter().feed(text)
    seg = pii.Segmenter()
    assert [c for part in chunked(text, cuts) for c in seg.feed(part)] == whole


def test_the_issues_stream_no_longer_leaks_the_area_code():
    detector = pii.Detector(regions=["US"])
    stream = detector.stream()
    chunks = ["Call", " (", "415", ")", " 555", "-", "0132", " now"]
    out = [stream.feed(c) for c in chunks] + [stream.flush()]
    assert "".join(out) == "Call [PHONE] now" == detector.redact("".join(chunks))
    assert not any(d in "".join(out[:-1]) for d in "0123456789")  # digits are never released early


def test_long_texts_are_released_before_they_end():
    stream = pii.Detector().stream()
    released = stream.feed("7" * (pii.HARD_SEGMENT * 3))  # no white space at all
    assert len(released) >= pii.HARD_SEGMENT * 2


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=texts, cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12))
def test_short_segment_limits_keep_the_promise(text, cuts):
    """The soft and hard limits at small sizes, so that random texts reach them often."""
    with mock.patch.object(pii, "SOFT_SEGMENT", 8), mock.patch.object(pii, "HARD_SEGMENT", 16):
        whole = pii.Segmenter().feed(text)
        seg = pii.Segmenter()
        assert [c for part in chunked(text, cuts) for c in seg.feed(part)] == whole
        assert all(b - a <= 16 for a, b in pii.segments(text))
        detector = pii.Detector(regions=["US"])
        stream = detector.stream()
        out = "".join(stream.feed(c) for c in chunked(text, cuts)) + stream.flush()
        assert out == detector.redact(text)
