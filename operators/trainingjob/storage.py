"""What the TrainingJob operator reads from object storage: the run report and base-model versions.

Registry credentials come from the Secret named in `spec.output.registry.s3.credentialsSecretRef`,
read with the operator's own client, used in memory and never written anywhere: not to status,
Events or logs (messages name the Secret and its keys, never a value).
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pydantic
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from llmops import registry
from llmops.api.common import ObjectStorageLocation
from llmops.api.trainingjob import TrainingJobSpec
from llmops.storage import Credentials, StoreCache
from llmops.workload import REPORT, RunReport


class SecretProblem(Exception):
    """The credentials Secret is missing or lacks a key; the message names the field and the Secret."""


def location_uri(location: ObjectStorageLocation) -> str:
    if location.local:
        return location.local.path
    assert location.s3 is not None
    prefix = (location.s3.prefix or "").strip("/")
    return f"s3://{location.s3.bucket}/{prefix}".rstrip("/")


def registry_credentials(spec: TrainingJobSpec, namespace: str, applier: Any) -> Credentials | None:
    """The registry's access keys from its Secret (`applier.api_client` reads it), or None."""
    s3 = spec.output.registry.s3
    ref = s3.credentials_secret_ref if s3 else None
    if ref is None:
        return None  # the operator's ambient identity (or a local registry)
    field = "spec.output.registry.s3.credentialsSecretRef"
    try:
        secret = client.CoreV1Api(applier.api_client).read_namespaced_secret(ref.name, namespace)
    except ApiException as e:
        if e.status == 404:
            raise SecretProblem(
                f"{field}: Secret {ref.name!r} does not exist in namespace {namespace!r}; create it"
            ) from None
        raise
    data = secret.data or {}
    missing = [k for k in (ref.access_key_id_key, ref.secret_access_key_key) if not data.get(k)]
    if missing:
        raise SecretProblem(f"{field}: Secret {ref.name!r} has no key {' or '.join(missing)}")
    key_id, secret_key = (
        base64.b64decode(data[k]).decode() for k in (ref.access_key_id_key, ref.secret_access_key_key)
    )
    return Credentials(key_id, secret_key)


def _describe(error: Exception) -> str:
    return f"{type(error).__name__}: {str(error)[:300]}" if str(error) else type(error).__name__


def read_report(
    work_dir: ObjectStorageLocation, credentials: Credentials | None, stores: StoreCache
) -> tuple[RunReport | None, str | None]:
    """(report, None), (None, None) when there is none yet, or (None, why it could not be read)."""
    if work_dir.local:
        # A local registry must be the same directory for the Ray pods and the operator.
        root = Path(work_dir.local.path).parents[3]  # <registry>/jobs/<namespace>/<name>/<uid>
        if not root.is_dir():
            return None, (
                f"the operator cannot see the local registry {root}: mount it into the operator "
                "as well, or use an S3 registry"
            )
    try:
        store = stores.open(work_dir, credentials)
        if not store.exists(REPORT):
            return None, None
        return RunReport.model_validate_json(store.get_bytes(REPORT)), None
    except pydantic.ValidationError as e:
        return (
            None,
            f"{REPORT} in {location_uri(work_dir)} is not a valid run report ({e.error_count()} errors)",
        )
    except Exception as e:
        return None, f"reading {REPORT} from {location_uri(work_dir)} failed ({_describe(e)})"


def resolve_base(spec: TrainingJobSpec, credentials: Credentials | None, stores: StoreCache) -> str:
    """The version `spec.model.base` names now; raises registry.RegistryError when there is none."""
    assert spec.model.base is not None
    store = stores.open(spec.output.registry, credentials)
    return registry.resolve(store, spec.model.base).version


def describe(error: Exception) -> str:
    return _describe(error)
