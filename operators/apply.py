"""The one way operators write to the cluster: server-side apply under our field manager.

Children get deterministic names, our labels and an owner reference to their parent, so the
garbage collector removes them with the parent and a missed event is harmless: applying the
same desired state twice is a no-op on the server.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from kubernetes import dynamic
from kubernetes.client import ApiClient
from kubernetes.dynamic.exceptions import NotFoundError

FIELD_MANAGER = "llmops"
MANAGED_BY = {"app.kubernetes.io/managed-by": "llmops"}


def owner_reference(owner: dict) -> dict:
    """A controller reference to `owner` (a parent object as the API returns it)."""
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def labels_for(owner: dict) -> dict[str, str]:
    """The labels every child carries: who manages it and which parent it belongs to."""
    kind, name = owner["kind"].lower(), owner["metadata"]["name"]
    return {
        **MANAGED_BY,
        "app.kubernetes.io/instance": name,
        f"llmops.io/{kind}": name,
    }


def adopt(child: dict, owner: dict) -> dict:
    """Return `child` in the parent's namespace, labelled and owned by it (a new dict)."""
    meta = dict(child.get("metadata", {}))
    meta["namespace"] = owner["metadata"]["namespace"]
    meta["labels"] = {**labels_for(owner), **meta.get("labels", {})}
    meta["ownerReferences"] = [owner_reference(owner)]
    return {**child, "metadata": meta}


class Applier:
    """Server-side apply, status patches and deletes through one shared API client."""

    def __init__(self, api_client: ApiClient, field_manager: str = FIELD_MANAGER) -> None:
        self.api_client = api_client
        self.field_manager = field_manager
        self._dynamic: dynamic.DynamicClient | None = None
        self._lock = threading.Lock()

    @property
    def client(self) -> dynamic.DynamicClient:
        # Discovery is slow; do it once, lazily, and share it between handler threads.
        with self._lock:
            if self._dynamic is None:
                self._dynamic = dynamic.DynamicClient(self.api_client)
            return self._dynamic

    def resource(self, api_version: str, kind: str) -> Any:
        return self.client.resources.get(api_version=api_version, kind=kind)

    def apply(self, manifest: dict, *, dry_run: bool = False) -> dict:
        """Server-side apply one object; we own the fields we set, and take them back on conflict."""
        resource = self.resource(manifest["apiVersion"], manifest["kind"])
        extra = {"dry_run": "All"} if dry_run else {}
        result = self.client.server_side_apply(
            resource,
            body=manifest,
            namespace=manifest["metadata"].get("namespace"),
            field_manager=self.field_manager,
            force_conflicts=True,
            **extra,
        )
        return result.to_dict()

    def apply_all(self, manifests: Iterable[dict], *, dry_run: bool = False) -> list[dict]:
        return [self.apply(m, dry_run=dry_run) for m in manifests]

    def patch_status(self, api_version: str, kind: str, name: str, namespace: str, status: dict) -> dict:
        """Merge-patch the status subresource (CRDs accept merge patches, which replace lists whole)."""
        resource = self.resource(api_version, kind)
        result = self.client.patch(
            resource.subresources["status"],
            body={"status": status},
            name=name,
            namespace=namespace,
            content_type="application/merge-patch+json",
        )
        return result.to_dict()

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict | None:
        try:
            return self.resource(api_version, kind).get(name=name, namespace=namespace).to_dict()
        except NotFoundError:
            return None

    def list(self, api_version: str, kind: str, namespace: str | None = None, **selectors: str) -> list[dict]:
        result = self.resource(api_version, kind).get(namespace=namespace, **selectors)
        return [item.to_dict() for item in result.items]

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> bool:
        """Delete one object; False if it was already gone."""
        try:
            self.resource(api_version, kind).delete(name=name, namespace=namespace)
            return True
        except NotFoundError:
            return False
