"""Names of the children (llmops/operators/modeldeployment/names.py)."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from llmops.operators.modeldeployment.names import child_name, vllm_name


@given(st.lists(st.from_regex(r"[a-zA-Z0-9][a-zA-Z0-9.-]{0,80}", fullmatch=True), min_size=1, max_size=4))
@settings(max_examples=200, deadline=None)
def test_child_names_are_dns_labels_and_distinct(parts: list[str]) -> None:

    name = child_name(*parts)
    assert len(name) <= 63 and re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name), name
    assert child_name(*parts) == name
    if name != "-".join(parts):
        assert child_name(*parts, "x") != name


def test_vllm_names() -> None:
    assert vllm_name("support-bot", "support-bot", "3", "support-bot") == "support-bot-3-vllm"
    assert vllm_name("bot", "other", "3", "support-bot") == "bot-other-3-vllm"
    long = vllm_name("a" * 60, "m", "12", "m")
    assert len(long) == 63 and long != vllm_name("a" * 60, "m", "13", "m")
