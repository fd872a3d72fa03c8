"""Secrets into credentials: the one place where the operator reads the values of a Secret.

Every kind that reaches object storage on the operator's side (a registry, a work folder) names a
Secret in `<location>.s3.credentialsSecretRef`; `credentials` reads it with the operator's own
client. The values are used in memory only and never written anywhere: not to status, Events or
logs (`SecretProblem` messages name the field, the Secret and its keys, never a value;
`llmops.storage.Credentials.__repr__` hides them).

Pods get the same Secrets by reference (secretKeyRef), never by value: see each kind's builders.
`ca_bundle` reads the other thing a location names in its namespace, the ConfigMap of
`s3.caBundle` (CA certificates: public), into a file the operator's S3 clients verify against.
"""

from __future__ import annotations

import base64
import hashlib
import os
import tempfile
from pathlib import Path

from llmops import logsafe
from llmops.api.common import ObjectStorageLocation
from llmops.operators.kube import Kube, NotFound
from llmops.storage import Credentials


class SecretProblem(Exception):
    """The Secret a location names is missing, or lacks a key or its value.

    The message starts with the field path (`spec.registry.s3.credentialsSecretRef: ...`), names
    the Secret and what to do; the kinds report it with the reason CredentialsNotFound.
    """


def credentials(
    kube: Kube, namespace: str, location: ObjectStorageLocation, field: str
) -> Credentials | None:
    """The access keys for `location` from its Secret in `namespace`, or None when it names none.

    `field` is the location's path in the spec (`spec.output.registry`), for messages. None means
    the operator's ambient identity (IRSA, a local path). Raises SecretProblem when the Secret does
    not exist or a key is missing or empty; other API errors (403, 5xx) propagate as they are.
    """
    ref = location.s3.credentials_secret_ref if location.s3 else None
    if ref is None:
        return None
    where = f"{field}.s3.credentialsSecretRef"
    try:
        secret = kube.get("v1", "Secret", ref.name, namespace)
    except NotFound:
        raise SecretProblem(
            f"{where}: Secret {ref.name!r} does not exist in namespace {namespace!r}; create it"
        ) from None
    data = secret.get("data") or {}
    keys = (ref.access_key_id_key, ref.secret_access_key_key)
    missing = [k for k in keys if not data.get(k)]
    if missing:
        raise SecretProblem(f"{where}: Secret {ref.name!r} has no key {' or '.join(missing)}; add it")
    key_id, secret_key = (base64.b64decode(data[k]).decode() for k in keys)
    logsafe.remember(key_id, secret_key)  # defence in depth: no log line of this process shows them
    return Credentials(key_id, secret_key)


def ca_bundle(kube: Kube, namespace: str, location: ObjectStorageLocation, field: str) -> str | None:
    """The path of a PEM file with the CA bundle that `location.s3.caBundle` names (a ConfigMap key
    in `namespace`: certificates, public), for verifying the endpoint's TLS certificate; None when
    it names none. The file is written once per content, named by its sha256, under the temporary
    directory. Raises SecretProblem (naming `field`, the ConfigMap and the key) when the ConfigMap
    or the key is missing or holds no PEM certificate; other API errors propagate."""
    ref = location.s3.ca_bundle if location.s3 else None
    if ref is None:
        return None
    where = f"{field}.s3.caBundle" if field else "s3.caBundle"
    try:
        configmap = kube.get("v1", "ConfigMap", ref.name, namespace)
    except NotFound:
        raise SecretProblem(
            f"{where}: ConfigMap {ref.name!r} does not exist in namespace {namespace!r}; create it"
        ) from None
    pem = (configmap.get("data") or {}).get(ref.key, "")
    if "-----BEGIN CERTIFICATE-----" not in pem:
        raise SecretProblem(
            f"{where}: ConfigMap {ref.name!r} has no PEM certificate under key {ref.key!r}; add the CA bundle"
        )
    folder = Path(tempfile.gettempdir()) / "llmops-ca"
    folder.mkdir(mode=0o700, exist_ok=True)
    path = folder / f"{hashlib.sha256(pem.encode()).hexdigest()}.pem"
    if not path.is_file():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(pem)
        tmp.replace(path)
    return str(path)
