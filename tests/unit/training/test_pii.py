"""PII scrubbing of training data: the gateway's detectors, per-entity choice and counts, names."""

from __future__ import annotations

import pytest

from llmops.training import pii


def test_scrub_counts_each_entity():
    doc = (
        "Mail jane.doe@example.com or call +1 415-555-0132. Card 4111 1111 1111 1111, "
        "host 192.168.10.24 and 2001:db8::8a2e:370:7334."
    )
    out, counts = pii.scrub(doc, ["email", "phone", "creditCard", "ipAddress"])
    assert counts == {"email": 1, "phone": 1, "creditCard": 1, "ipAddress": 2}
    for secret in ("jane.doe", "415-555", "4111", "192.168", "2001:db8"):
        assert secret not in out
    assert out.startswith("Mail [EMAIL] or call [PHONE]. Card [CARD], host [IP] and [IP].")


def test_card_numbers_need_the_luhn_check():
    out, counts = pii.scrub("order 4012 8888 8888 1882 shipped", ["creditCard"])
    assert counts == {} and "4012 8888 8888 1882" in out
    out, counts = pii.scrub("card 4012-8888-8888-1881 on file", ["creditCard"])
    assert counts == {"creditCard": 1} and out == "card [CARD] on file"


def test_only_the_requested_entities():
    doc = "write to a@b.org from 10.0.0.1"
    out, counts = pii.scrub(doc, ["ipAddress"])
    assert counts == {"ipAddress": 1} and "a@b.org" in out


def test_dates_and_versions_are_not_phones():
    _, counts = pii.scrub("released 2024-01-15 at 10:30, version 1.2.3", ["phone", "ipAddress"])
    assert counts == {}


def test_names_need_a_detector():
    doc = "Dr. Maria Gonzales signed. Regards, Tom"
    assert pii.scrub(doc, ["name"]) == (doc, {})  # no detector: names stay
    name, detector = pii.load_name_detector("heuristic")
    out, counts = pii.scrub(doc, ["name"], detector)
    assert name == "heuristic" and counts == {"name": 2}
    assert out == "Dr. [NAME] signed. Regards, [NAME]"


def test_a_configured_name_detector(monkeypatch):
    monkeypatch.setenv("LLMOPS_PII_NAME_DETECTOR", "tests.unit.training.test_pii:_every_capital")
    name, detector = pii.load_name_detector()
    assert name.endswith(":_every_capital")
    assert pii.scrub("hello Bob and Ann", ["name"], detector) == ("hello [NAME] and [NAME]", {"name": 2})


def _every_capital(text: str) -> list[tuple[int, int]]:
    import re

    return [m.span() for m in re.finditer(r"\b[A-Z][a-z]+\b", text)]


def test_drop_keeps_ordinary_documents_and_drops_personal_ones():
    """action: drop on the labelled set's look-alikes drops none of the kinds the issue lists (dates,
    times, versions, decimals, amounts, coordinates, grouped thousands, lists) and few of the rest,
    and drops the documents with personal data (its regions configured)."""
    import sys
    from pathlib import Path

    pa = pytest.importorskip("pyarrow")
    from llmops.training.prepare import clean_batch

    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench"))
    import pii_detection

    rows = pii_detection.load()
    batch = pa.table({"id": list(range(len(rows))), "text": [r["text"] for r in rows]})
    out = clean_batch(
        batch,
        normalize=True,
        min_length=None,
        max_length=None,
        entities=["email", "phone", "creditCard", "ipAddress"],
        regions=list(pii_detection.REGIONS.values()),
        pii_action="drop",
        name_detector=None,
        near=False,
    )
    dropped = [d == "pii" for d in out.column("drop").to_pylist()]
    issue_kinds = {"date", "time", "version", "decimal", "amount", "coordinates", "thousands", "list"}
    traps = [i for i, r in enumerate(rows) if r["trap"]]
    personal = [i for i, r in enumerate(rows) if r["entities"]]
    assert not any(dropped[i] for i in traps if rows[i]["trap"] in issue_kinds)
    assert sum(dropped[i] for i in traps) <= 0.05 * len(traps)  # held-out look-alikes: 2 of 27
    assert sum(dropped[i] for i in personal) >= 0.98 * len(personal)
