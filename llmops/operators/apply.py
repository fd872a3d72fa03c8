"""The one way operators write to the cluster: server-side apply under our field manager.

Children get deterministic names, our labels and an owner reference to their parent
(operators.manifests.adopt), so the garbage collector removes them with the parent and a missed
event is harmless: applying the same desired state twice is a no-op on the server.

A parent that deletes the children it no longer wants by its recorded inventory (`status.inventory`,
the ModelDeployment) records a child there *before* it applies it for the first time (`write_ahead`):
a process killed between the apply and the status write then leaves no child unlisted, which the
next reconcile, after a spec change, would never delete (issue 17). See
llmops/operators/modeldeployment/reconcile.py for why a write-ahead and not a sweep by label.

Fault injection (crash-safety tests only, tests/reliability/test_operator_kill.py): with
$LLMOPS_FAULT_STOP_AFTER_APPLY set to an inventory entry (apiVersion/kind/name), the process stops
itself (SIGSTOP) right after the apiserver accepted that object, so a test can SIGKILL it at exactly
that moment. Read once, here; unset (always, in production) it does nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time
from collections.abc import Iterable
from typing import Any

from llmops.operators.kube import Conflict, Kube, NotFound

FIELD_MANAGER = "llmops"
FAULT_STOP_AFTER_APPLY = os.environ.get("LLMOPS_FAULT_STOP_AFTER_APPLY") or None

# Fields another controller takes over when our manifest stops setting them (an autoscaler writes a
# Deployment's replicas). Server-side apply removes a field its only manager stops applying, and the
# apiserver's defaulting then sets it anew (replicas 1): the running value must survive the change of
# owner. Before such an apply, the value is handed to a second manager (`<manager>-handover`), as
# https://kubernetes.io/docs/reference/using-api/server-side-apply/#transferring-ownership describes.
# The live object is read for it only when this process's last apply of the child may have owned the
# field (`Applier._released`): after an apply that left a field out, our manager owns it no more. That
# holds while this process is the only writer with our field manager; another (a second operator, a
# person's `kubectl apply --server-side --field-manager=llmops`) could set it again unseen, so a
# release is trusted for RELEASE_TRUSTED_S after the apply that made it, then the child is read again.
HANDOVER_FIELDS: dict[tuple[str, str], tuple[tuple[str, ...], ...]] = {
    ("apps/v1", "Deployment"): (("spec", "replicas"),),
    ("apps/v1", "StatefulSet"): (("spec", "replicas"),),
}
RELEASE_TRUSTED_S = 60.0  # seconds (see above)
HANDOVER_ATTEMPTS = 3  # reads and applies of a hand-over whose object changed in between (409)


def ref(manifest: dict) -> str:
    """apiVersion/kind/name: a child's inventory entry (`status.inventory`)."""
    return f"{manifest['apiVersion']}/{manifest['kind']}/{manifest['metadata']['name']}"


def parse_ref(entry: str) -> tuple[str, str, str]:
    """(apiVersion, kind, name) of an inventory entry."""
    api_version, kind, name = entry.rsplit("/", 2)
    return api_version, kind, name


def write_ahead(recorded: Iterable[str], manifests: Iterable[dict]) -> list[str] | None:
    """The inventory to record before `manifests` are applied: the union of the `recorded` entries and
    theirs, sorted; None when every one is recorded already (nothing to write).

    The rule of a write-ahead log: nothing is created that the record does not name, so a crash at
    any point leaves every child findable by the next reconcile. Entries recorded but never applied
    (a crash before the apply) cost the next prune one delete that finds nothing."""
    have = set(recorded)
    new = {ref(m) for m in manifests} - have
    return sorted(have | new) if new else None


class Applied:
    """What the operator last applied of each child: (scope, child ref) -> (digest of the manifest,
    `manifest_digest`; when, `time.monotonic()` seconds); the scope is the parent's uid for a
    reconcile's record, the child's namespace for the Applier's record of released fields.
    Thread-safe and process-local (lost on restart, when everything is applied again: harmless). At
    most `size` children, the least recently applied dropped first. Compact for tens of thousands of
    parents: a child takes about 230 bytes (16-byte BLAKE2b key and digest), where tuples of strings
    took 450.
    """

    def __init__(self, size: int = 200_000) -> None:
        self.size = size
        self._entries: dict[bytes, tuple[bytes, float]] = {}  # insertion order: least recent first
        self._lock = threading.Lock()

    @staticmethod
    def _key(uid: str, entry: str) -> bytes:
        return hashlib.blake2b(f"{uid}\0{entry}".encode(), digest_size=16).digest()

    def get(self, uid: str, entry: str) -> tuple[bytes, float] | None:
        with self._lock:
            return self._entries.get(self._key(uid, entry))

    def put(self, uid: str, entry: str, digest: bytes, at: float) -> None:
        key = self._key(uid, entry)
        with self._lock:
            self._entries.pop(key, None)  # to the end: the most recent
            self._entries[key] = (digest, at)
            while len(self._entries) > self.size:
                del self._entries[next(iter(self._entries))]

    def pop(self, uid: str, entry: str) -> None:
        with self._lock:
            self._entries.pop(self._key(uid, entry), None)

    def __len__(self) -> int:
        return len(self._entries)


def manifest_digest(value: Any) -> bytes:
    """BLAKE2b (16 bytes) of `value` as canonical JSON: equal manifests, equal digests."""
    return hashlib.blake2b(json.dumps(value, sort_keys=True, default=str).encode(), digest_size=16).digest()


def _releases_all(manifest: dict) -> bool:
    """Whether `manifest` is of a kind with HANDOVER_FIELDS and leaves out every one of them."""
    paths = HANDOVER_FIELDS.get((manifest["apiVersion"], manifest["kind"]), ())
    return bool(paths) and all(_lookup(manifest, p) is _MISSING for p in paths)


def _release_key(manifest: dict) -> tuple[str, str]:
    """(namespace, child ref): the key of `Applier._released`."""
    return manifest["metadata"].get("namespace") or "", ref(manifest)


class Applier:
    """Server-side apply, status patches and deletes through one shared API client (`kube`)."""

    def __init__(self, kube: Kube, field_manager: str = FIELD_MANAGER, released_size: int = 200_000) -> None:
        self.kube = kube
        self.field_manager = field_manager
        # Children whose last apply through this Applier left out every one of their HANDOVER_FIELDS,
        # by (namespace, ref), at most `released_size`: the apply released those fields, so the next
        # one that leaves them out has nothing to hand over and skips the read, for RELEASE_TRUSTED_S
        # after that apply (`time.monotonic()`). Process-local: after a restart each child is read again.
        self._released = Applied(released_size)

    def apply(self, manifest: dict, *, dry_run: bool = False) -> dict:
        """Server-side apply one object; we own the fields we set, and take them back on conflict.

        A field of HANDOVER_FIELDS that we own and `manifest` leaves out keeps its running value: it is
        handed over first (see there), never dropped and defaulted."""
        trusted = not dry_run and self._release_trusted(manifest)
        if not dry_run and not trusted:
            self._hand_over(manifest)
            # Forgotten before the apply: one that fails on our side may still have been stored.
            self._forget_release(manifest)
        result = self.kube.apply(manifest, field_manager=self.field_manager, force=True, dry_run=dry_run)
        if not dry_run and not trusted:  # a trusted release keeps the time of the apply that made it
            self._remember_release(manifest)
        if FAULT_STOP_AFTER_APPLY is not None and not dry_run and ref(manifest) == FAULT_STOP_AFTER_APPLY:
            os.kill(os.getpid(), signal.SIGSTOP)  # fault injection (see the module's docstring)
        return result

    def _release_trusted(self, manifest: dict) -> bool:
        """Whether `manifest` leaves out every HANDOVER_FIELD of its kind and this process's apply that
        released them, less than RELEASE_TRUSTED_S ago, is the last it made: then there is nothing of
        ours to hand over."""
        if not _releases_all(manifest):
            return False
        got = self._released.get(*_release_key(manifest))
        return got is not None and time.monotonic() - got[1] < RELEASE_TRUSTED_S

    def _forget_release(self, manifest: dict) -> None:
        if (manifest["apiVersion"], manifest["kind"]) in HANDOVER_FIELDS:
            self._released.pop(*_release_key(manifest))

    def _remember_release(self, manifest: dict) -> None:
        """After a successful apply: remember the child if it left out all its HANDOVER_FIELDS (server-
        side apply then removed them from our manager's fields)."""
        if _releases_all(manifest):
            self._released.put(*_release_key(manifest), b"", time.monotonic())

    def _hand_over(self, manifest: dict) -> None:
        paths = HANDOVER_FIELDS.get((manifest["apiVersion"], manifest["kind"]), ())
        left_out = [p for p in paths if _lookup(manifest, p) is _MISSING]
        if not left_out:
            return
        meta = manifest["metadata"]
        for attempt in range(1, HANDOVER_ATTEMPTS + 1):
            live = self.get(manifest["apiVersion"], manifest["kind"], meta["name"], meta.get("namespace"))
            if live is None:
                return
            owned = _owned_fields(live, self.field_manager)
            keep = [p for p in left_out if _fields_key(p) in owned and _lookup(live, p) is not _MISSING]
            if not keep:
                return
            body: dict = {"apiVersion": manifest["apiVersion"], "kind": manifest["kind"]}
            body["metadata"] = {
                "name": meta["name"],
                **({"namespace": meta["namespace"]} if "namespace" in meta else {}),
            }
            # The value read is handed over only if nothing changed it since: an autoscaler (or a
            # person's `kubectl scale`) that wrote replicas between the read and this apply would
            # otherwise see its count put back. The resourceVersion is the apply's precondition (409).
            if version := (live.get("metadata") or {}).get("resourceVersion"):
                body["metadata"]["resourceVersion"] = version
            for path in keep:
                node = body
                for part in path[:-1]:
                    node = node.setdefault(part, {})
                node[path[-1]] = _lookup(live, path)
            try:
                self.kube.apply(body, field_manager=f"{self.field_manager}-handover", force=True)
                return
            except Conflict:
                if attempt == HANDOVER_ATTEMPTS:
                    raise  # changed at every read: the reconcile is retried as for any refused apply

    def create(self, manifest: dict) -> bool:
        """Create one object that must be made once (a run): True if this call created it, False if
        an object of that name exists (AlreadyExists is success: the caller made it before)."""
        try:
            self.kube.create(manifest)
            return True
        except Conflict:
            return False

    def apply_all(self, manifests: Iterable[dict], *, dry_run: bool = False) -> list[dict]:
        return [self.apply(m, dry_run=dry_run) for m in manifests]

    def patch_status(self, api_version: str, kind: str, name: str, namespace: str, status: dict) -> dict:
        """Merge-patch the status subresource (CRDs accept merge patches, which replace lists whole)."""
        return self.kube.merge_patch(api_version, kind, name, namespace, {"status": status}, status=True)

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict | None:
        try:
            return self.kube.get(api_version, kind, name, namespace)
        except NotFound:
            return None

    def list(
        self, api_version: str, kind: str, namespace: str | None = None, label_selector: str | None = None
    ) -> list[dict]:
        return self.kube.list(api_version, kind, namespace, label_selector=label_selector)

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> bool:
        """Delete one object; False if it was already gone."""
        try:
            self.kube.delete(api_version, kind, name, namespace)
            return True
        except NotFound:
            return False


_MISSING = object()


def _lookup(body: dict, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(body, dict) or part not in body:
            return _MISSING
        body = body[part]
    return body


def _fields_key(path: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(f"f:{part}" for part in path)


def _owned_fields(live: dict, manager: str) -> set[tuple[str, ...]]:
    """The leaf field paths (as `f:` keys) that `manager` owns by apply, from metadata.managedFields."""
    owned: set[tuple[str, ...]] = set()

    def walk(node: dict, prefix: tuple[str, ...]) -> None:
        for key, child in node.items():
            if key == ".":
                continue
            path = (*prefix, key)
            owned.add(path)
            if isinstance(child, dict):
                walk(child, path)

    for entry in live.get("metadata", {}).get("managedFields") or []:
        if entry.get("manager") == manager and entry.get("operation") == "Apply":
            walk(entry.get("fieldsV1") or {}, ())
    return owned
