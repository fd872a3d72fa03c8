"""Object storage as the operator sees it (registries, work folders): how to describe a storage error
without a secret, and which errors heal by themselves (a location names itself: `.uri`).

Opening stores is `llmops.storage.StoreCache` (one per operator process, `Context.stores`); the
credentials come from llmops/operators/secrets.py; the registry's layout is `llmops.registry`'s alone.
The causes (credentials refused, access denied, bucket missing, TLS, unreachable, timeouts, 5xx) are
`llmops.storage.explain`'s.
"""

from __future__ import annotations

from llmops.storage import explain


def describe(error: Exception) -> str:
    """A status message for a storage error that names its cause (`llmops.storage.explain`: refused
    credentials, access denied, a missing bucket, TLS verification, unreachable, timeouts, 5xx, with
    the bounded retries that were made), or `TypeName: first 300 characters` for another error.
    Never a credential: explain builds its text from error codes and the endpoint only."""
    if (failure := explain(error)) is not None:
        return failure.message
    return f"{type(error).__name__}: {str(error)[:300]}" if str(error) else type(error).__name__


def transient(error: Exception) -> bool:
    """Errors from object storage that will heal (connection problems, timeouts, throttling, 5xx);
    False for those that need a person (refused credentials, access denied, a missing bucket, TLS
    verification failed) and for errors that are not storage's."""
    failure = explain(error)
    return failure is not None and failure.retryable


def refused(error: Exception) -> bool:
    """A storage error that will not heal by itself: the kinds go Stalled with reason
    StorageRefused and `describe`'s message instead of retrying."""
    failure = explain(error)
    return failure is not None and not failure.retryable
