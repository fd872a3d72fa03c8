"""Object storage as the operator sees it (registries, work folders): how to describe a storage error
without a secret, and which errors heal by themselves (a location names itself: `.uri`).

Opening stores is `llmops.storage.StoreCache` (one per operator process, `Context.stores`); the
credentials come from llmops/operators/secrets.py; the registry's layout is `llmops.registry`'s alone.
"""

from __future__ import annotations


def describe(error: Exception) -> str:
    """`TypeName: first 300 characters` of a storage error, for a status message (no credentials)."""
    return f"{type(error).__name__}: {str(error)[:300]}" if str(error) else type(error).__name__


def transient(error: Exception) -> bool:
    """Errors from object storage that will heal: connection problems, throttling, 5xx."""
    return isinstance(error, OSError) or type(error).__module__.startswith(("botocore", "boto3", "urllib3"))
