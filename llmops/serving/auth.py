"""API keys from a mounted Secret: a directory with one key per file, or a file with one key per line.

Only SHA-256 digests of the keys stay in memory, mapped to a key id (the file name in the Secret, or
`line-N`); the id, never the key, appears in logs and rate-limit state. Kubernetes updates a mounted
Secret in place, so `reload()` is called periodically and picks up added and revoked keys.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from llmops import logsafe

log = logging.getLogger("llmops.gateway")


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def read_keys(path: Path) -> dict[bytes, str]:
    keys: dict[bytes, str] = {}
    if path.is_dir():
        for f in sorted(path.iterdir()):
            # Skip the `..data` symlink machinery of a mounted volume and hidden files.
            if f.name.startswith(".") or not f.is_file():
                continue
            key = f.read_text().strip()
            if key:
                keys[_digest(key)] = f.name
                logsafe.remember(key)
    else:
        for i, line in enumerate(path.read_text().splitlines(), 1):
            key = line.strip()
            if key and not key.startswith("#"):
                keys[_digest(key)] = f"line-{i}"
                logsafe.remember(key)
    return keys


class KeyStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.keys: dict[bytes, str] = {}
        self.reload()

    def reload(self) -> None:
        try:
            keys = read_keys(self.path)
        except OSError as e:  # keep the last good set; a Secret mid-update can be briefly absent
            log.warning("cannot read API keys at %s: %s; keeping %d keys", self.path, e, len(self.keys))
            return
        if len(keys) != len(self.keys) or keys.keys() != self.keys.keys():
            log.info("loaded %d API keys from %s", len(keys), self.path)
        self.keys = keys

    def identify(self, authorization: str | None) -> str | None:
        """The key id for an `Authorization: Bearer <key>` header, or None if it is not a valid key."""
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return self.keys.get(_digest(token.strip()))
