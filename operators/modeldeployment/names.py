"""Deterministic names of a ModelDeployment's children."""

from __future__ import annotations

import hashlib
import re


def _dns(text: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-") or "x"


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


def endpoint(md: str, namespace: str) -> str:
    return f"http://{gateway_name(md)}.{namespace}.svc/v1"
