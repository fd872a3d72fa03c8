"""Pieces every kind's pure builders share: the owned-object skeleton, pod and container security,
the one non-root uid, GPU placement, resources to requests/limits, DNS labels, probes, spreading,
credentials by reference.

Pure: dicts in, dicts out, no Kubernetes client (llmops/operators/apply.py is the I/O). Each function
returns a new object, so callers may change what they get.

Children get our labels and a controller reference to their parent (`adopt`), so the garbage
collector removes them with the parent, and the runtime finds them by the label
`llmops.io/<kind>: <parent name>` (`labels_for`).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from llmops.api.common import ObjectStorageLocation, Resources, S3Connection, SecretKeysRef

Manifest = dict[str, Any]

MANAGED_BY = {"app.kubernetes.io/managed-by": "llmops"}
NON_ROOT_UID = 65532  # the user all our images run as (images/*/Dockerfile)
GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"  # set on nodes by NVIDIA's GPU feature discovery
GPU_TOLERATION = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}


def dns_label(text: str) -> str:
    """`text` lower-cased with every run of other characters than [a-z0-9-] turned into one '-',
    trimmed of '-' at both ends; "" when nothing is left. Callers add their own prefix or hash where
    a label must start with a letter or stay distinct."""
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")


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


def container_security(read_only_root: bool = True) -> dict:
    """A container that cannot gain privileges and runs as non-root, without capabilities; on a
    read-only root filesystem unless `read_only_root` is False (Ray writes to its own)."""
    context: dict[str, Any] = {"allowPrivilegeEscalation": False}
    if read_only_root:
        context["readOnlyRootFilesystem"] = True
    context["runAsNonRoot"] = True
    context["capabilities"] = {"drop": ["ALL"]}
    return context


def pod_security() -> dict:
    """Every container of the pod as NON_ROOT_UID, volumes group-owned by it, seccomp by default."""
    return {
        "runAsNonRoot": True,
        "runAsUser": NON_ROOT_UID,
        "runAsGroup": NON_ROOT_UID,
        "fsGroup": NON_ROOT_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def resource_amounts(resources: Resources) -> dict[str, Any]:
    """cpu, memory and nvidia.com/gpu of `resources` that are set, as given in the spec (a quantity
    string or a number); requests and limits are both these (pods sized to the node, not burstable)."""
    amounts: dict[str, Any] = {}
    if resources.cpu is not None:
        amounts["cpu"] = resources.cpu
    if resources.memory is not None:
        amounts["memory"] = resources.memory
    if resources.gpus:
        amounts[GPU_RESOURCE] = resources.gpus
    return amounts


def requests_limits(amounts: dict[str, Any]) -> dict[str, Any]:
    """A container's `resources`: requests equal to limits; {} when nothing is set."""
    return {"requests": dict(amounts), "limits": dict(amounts)} if amounts else {}


def node_placement(resources: Resources) -> dict[str, Any]:
    """nodeSelector and tolerations of a pod (only those that are set).

    The spec's node selector plus, with `gpu_type`, the GPU product label; the spec's tolerations
    plus, for pods with GPUs, NVIDIA's usual taint (`GPU_TOLERATION`) unless one already covers it.
    """
    placement: dict[str, Any] = {}
    selector = dict(resources.node_selector)
    if resources.gpu_type:
        selector[GPU_PRODUCT_LABEL] = resources.gpu_type
    if selector:
        placement["nodeSelector"] = dict(sorted(selector.items()))
    tolerations = [t.to_dict() for t in resources.tolerations]
    if resources.gpus and not any(
        t.get("key") == GPU_RESOURCE
        and t.get("operator") == "Exists"
        and t.get("effect") in (None, "NoSchedule")
        for t in tolerations
    ):
        tolerations.append(dict(GPU_TOLERATION))
    if tolerations:
        placement["tolerations"] = tolerations
    return placement


def http_probe(
    path: str, port: str, period: int, failures: int, timeout: int = 5, scheme: str = "HTTP"
) -> dict:
    """An HTTP GET probe of `path` on the named `port`; `period` and `timeout` in seconds; `scheme`
    HTTPS for a TLS port (the kubelet does not verify the certificate)."""
    get = {"path": path, "port": port}
    if scheme != "HTTP":
        get["scheme"] = scheme
    return {
        "httpGet": get,
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


def ca_bundle_mounts(
    *locations: ObjectStorageLocation | S3Connection | None,
) -> tuple[list[dict], list[dict]]:
    """(volumes, volumeMounts) for the CA bundles that `locations` (or S3 connections, such as a
    TrainingJob's spec.data.s3) name in `caBundle`: each
    ConfigMap once, read-only under /etc/llmops/ca/<ConfigMap>/, where the pod's
    `llmops.storage.open_store` looks (`ca_bundle_path`). ([], []) when none names one, so a pod
    without a private CA is unchanged."""
    from llmops.storage import CA_MOUNT_ROOT

    connections = [loc.s3 if isinstance(loc, ObjectStorageLocation) else loc for loc in locations]
    names = sorted({c.ca_bundle.name for c in connections if c is not None and c.ca_bundle is not None})
    volumes, mounts = [], []
    for name in names:
        volume = (
            f"ca-{hashlib.sha256(name.encode()).hexdigest()[:12]}"  # a ConfigMap name may not fit a label
        )
        volumes.append({"name": volume, "configMap": {"name": name}})
        mounts.append({"name": volume, "mountPath": f"{CA_MOUNT_ROOT}/{name}", "readOnly": True})
    return volumes, mounts


def credentials_env(ref: SecretKeysRef | None, prefix: str = "") -> list[dict]:
    """AWS_* (or PREFIX_AWS_*) from the Secret by reference: values never pass through the operator.

    Read in the pod by llmops.storage.credentials_from_env(prefix) (and by boto3 itself, without one)."""
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
