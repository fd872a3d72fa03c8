"""Pieces every kind's pure builders share: the owned-object skeleton, pod and container security,
the one non-root uid, probes, spreading, credentials by reference.

Pure: dicts in, dicts out, no Kubernetes client (operators/apply.py is the I/O). Each function
returns a new object, so callers may change what they get.

Children get our labels and a controller reference to their parent (`adopt`), so the garbage
collector removes them with the parent, and the runtime finds them by the label
`llmops.io/<kind>: <parent name>` (`labels_for`).
"""

from __future__ import annotations

from typing import Any

from llmops.api.common import ObjectStorageLocation, SecretKeysRef

Manifest = dict[str, Any]

MANAGED_BY = {"app.kubernetes.io/managed-by": "llmops"}
NON_ROOT_UID = 65532  # the user our images run as (images/serving/Dockerfile, images/trainer/Dockerfile)


# -- ownership ---------------------------------------------------------------------------------


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


def owned_object(
    api_version: str, kind: str, name: str, owner: Manifest, labels: dict, spec: Any, **top: Any
) -> Manifest:
    """A child of `owner`: apiVersion, kind, name and `labels`, `spec` (left out when None) and any
    other top-level fields (`data=` of a ConfigMap), adopted by `owner`."""
    body = {"apiVersion": api_version, "kind": kind, "metadata": {"name": name, "labels": labels}}
    if spec is not None:
        body["spec"] = spec
    body.update(top)
    return adopt(body, owner)


# -- pods --------------------------------------------------------------------------------------


def container_security() -> dict:
    """A container that cannot gain privileges, runs as non-root, on a read-only root filesystem."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def pod_security() -> dict:
    """Every container of the pod as NON_ROOT_UID, volumes group-owned by it, seccomp by default."""
    return {
        "runAsNonRoot": True,
        "runAsUser": NON_ROOT_UID,
        "runAsGroup": NON_ROOT_UID,
        "fsGroup": NON_ROOT_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def http_probe(path: str, port: str, period: int, failures: int, timeout: int = 5) -> dict:
    """An HTTP GET probe of `path` on the named `port`; `period` and `timeout` in seconds."""
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": timeout,
    }


def topology_spread(selector: dict[str, str]) -> list[dict]:
    """Spread the pods `selector` matches over nodes, as evenly as scheduling allows."""
    return [
        {
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": dict(selector)},
        }
    ]


# -- credentials -------------------------------------------------------------------------------


def location_secret(location: ObjectStorageLocation | None) -> SecretKeysRef | None:
    """The Secret with a location's S3 access keys, if it names one."""
    return location.s3.credentials_secret_ref if location and location.s3 else None


def credentials_env(ref: SecretKeysRef | None, prefix: str = "") -> list[dict]:
    """AWS_* (or PREFIX_AWS_*) from the Secret by reference: values never pass through the operator.

    Read in the pod by llmops.fetch.credentials_from_env (and boto3 itself, without a prefix)."""
    if ref is None:
        return []
    return [
        {
            "name": f"{prefix}AWS_ACCESS_KEY_ID",
            "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.access_key_id_key}},
        },
        {
            "name": f"{prefix}AWS_SECRET_ACCESS_KEY",
            "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.secret_access_key_key}},
        },
    ]
