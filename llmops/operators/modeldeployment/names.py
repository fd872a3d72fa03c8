"""Deterministic names, labels and selectors of a ModelDeployment's children.

Names: `<md>-<version>-vllm` per served version (`vllm_name`), `<md>-gateway`, `<md>-feedback-key`
(`feedback_key_name`), `<md>-<part>` for the rest (`child_name`). Labels: every child carries
`child_labels` (plus the owner's, from operators.manifests.adopt); pods are selected by
`child_selector`: the ModelDeployment, the component, and for a model server its model and version.
"""

from __future__ import annotations

import hashlib
from typing import Any

from llmops.operators.manifests import dns_label

COMPONENT = "app.kubernetes.io/component"
MD_LABEL = "llmops.io/modeldeployment"
MODEL_LABEL = "llmops.io/model"
VERSION_LABEL = "llmops.io/model-version"
ROLE_LABEL = "llmops.io/role"


def _dns(text: str) -> str:
    return dns_label(text) or "x"


def digest(text: str, n: int = 6) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def child_name(*parts: str, limit: int = 63) -> str:
    """A DNS-1035 label from parts joined by '-'. Parts that are not already clean (upper case,
    dots), or a result longer than `limit`, get a hash of the original appended, so distinct inputs
    keep distinct names."""
    raw = "-".join(parts)
    name = "-".join(_dns(p) for p in parts)
    if not name[0].isalpha():
        name = f"m-{name}"
    if name == raw and len(name) <= limit:
        return name
    suffix = digest(raw)
    return f"{name[: limit - len(suffix) - 1].rstrip('-')}-{suffix}"


def vllm_name(md: str, model: str, version: str, stable_model: str) -> str:
    """`<md>-<version>-vllm`; the model's name joins in when it is not the stable model's."""
    if model == stable_model:
        return child_name(md, version, "vllm")
    return child_name(md, model, version, "vllm")


def gateway_name(md: str) -> str:
    return child_name(md, "gateway")


def feedback_key_name(md: str) -> str:
    """The Secret of the key that signs the gateway's completion ids (gateway.feedback_key_secret)."""
    return child_name(md, "feedback-key")


def endpoint(md: str, namespace: str, tls: bool = False) -> str:
    """The gateway's OpenAI base URL inside the cluster (https with spec.gateway.tls)."""
    return f"{'https' if tls else 'http'}://{gateway_name(md)}.{namespace}.svc/v1"


def child_labels(name: str, component: str, **extra: str) -> dict[str, str]:
    """The labels of a child: `app.kubernetes.io/name` `name`, the component, and `extra`."""
    return {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/part-of": "llmops",
        COMPONENT: component,
        **extra,
    }


def child_selector(owner: dict[str, Any], component: str, **extra: str) -> dict[str, str]:
    """The labels that select the pods of one component of the ModelDeployment `owner`."""
    return {MD_LABEL: owner["metadata"]["name"], COMPONENT: component, **extra}
