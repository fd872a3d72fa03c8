"""API keys (serving.auth)."""

from __future__ import annotations

from llmops.serving.auth import KeyStore


def test_key_store_directory_and_file(tmp_path):
    keys = tmp_path / "secret"
    keys.mkdir()
    (keys / "team-a").write_text("sk-a\n")
    (keys / "..data").mkdir()  # a mounted Secret's machinery is skipped
    store = KeyStore(keys)
    assert store.identify("Bearer sk-a") == "team-a"
    assert store.identify("bearer  sk-a ") == "team-a"
    assert store.identify("Bearer sk-b") is None and store.identify(None) is None
    assert store.identify("Basic sk-a") is None
    (keys / "team-b").write_text("sk-b")
    (keys / "team-a").unlink()  # revoked
    store.reload()
    assert store.identify("Bearer sk-b") == "team-b" and store.identify("Bearer sk-a") is None
    lines = tmp_path / "keys.txt"
    lines.write_text("# comment\nsk-1\n\nsk-2\n")
    assert KeyStore(lines).identify("Bearer sk-2") == "line-4"
    assert all("sk-" not in repr(k) for k in KeyStore(lines).keys)  # only digests are kept
