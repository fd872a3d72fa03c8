"""PII redaction for the gateway: whole texts (`llmops.pii.redact`) and streamed completions.

A streamed completion arrives a few characters at a time, and an e-mail address or a card number can
straddle two chunks. `StreamRedactor` holds back the tail that could still grow into a match (the
trailing run of characters that PII can be made of, at most `llmops.pii.MAX_MATCH_CHARS`), redacts
what is settled and passes it on; `flush()` releases the rest when the choice finishes. Typically it
holds back one word.
"""

from __future__ import annotations

from llmops.pii import MAX_MATCH_CHARS, find, redact

__all__ = ["StreamRedactor", "redact"]

# Characters a match can contain. A space only counts between two digits (grouped phone/card numbers).
_PII_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-@:()")
_CONTEXT = 8  # characters before the held text that the patterns' look-behinds may inspect


def _settled_upto(text: str) -> int:
    """Index from which `text` might still be part of a match that the next chunk completes."""
    i = len(text)
    floor = max(0, len(text) - MAX_MATCH_CHARS)
    while i > floor:
        ch = text[i - 1]
        if ch in _PII_CHARS or (
            ch == " " and i >= 2 and i < len(text) and text[i - 2].isdigit() and text[i].isdigit()
        ):
            i -= 1
            continue
        break
    # A trailing space after a digit may be followed by more digits: hold it too.
    if i == len(text) and text.endswith(" ") and len(text) >= 2 and text[-2].isdigit():
        return _settled_upto(text[:-1])
    return i


class StreamRedactor:
    """Feed text chunks in order; get back redacted text that no later chunk can change."""

    def __init__(self) -> None:
        self._text = ""  # unreleased text, with up to _CONTEXT characters of released text before it
        self._released = 0  # how much of self._text was already released (the context)

    def feed(self, chunk: str) -> str:
        self._text += chunk
        cut = max(_settled_upto(self._text), self._released)
        # Never cut through a match: if one spans the cut, hold it back whole.
        for m in find(self._text):
            if m.start < cut < m.end:
                cut = max(m.start, self._released)
                break
        return self._release(cut)

    def flush(self) -> str:
        return self._release(len(self._text))

    def _release(self, cut: int) -> str:
        if cut <= self._released:
            return ""
        window = self._text[:cut]
        out = redact(window)
        # Drop the part of the output that covers the already released context.
        head = redact(self._text[: self._released]) if self._released else ""
        released = out[len(head) :] if out.startswith(head) else redact(self._text[self._released : cut])
        keep_from = max(0, cut - _CONTEXT)
        self._text = self._text[keep_from:]
        self._released = cut - keep_from
        return released
