"""The model registry: immutable, versioned model records in object storage.

Layout under the registry location (one per organisation or team):

    models/<name>/versions/<version>/claim              create-only: this writer owns the number
    models/<name>/versions/<version>/model/...          weights (safetensors), tokenizer, config
    models/<name>/versions/<version>/manifest.json     written last, create-only: the version exists
    models/<name>/aliases/<alias>.json                  {"version": "<version>"}: movable pointer

A writer first claims the next number with a create-only put (two racing writers never share a
folder), uploads the files, then writes the manifest, also create-only: its presence is what makes
the version exist, and nothing overwrites it. Versions are integers counted up from 1.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from llmops.api.common import ModelReference
from llmops.storage import ObjectExists, ObjectStore, sha256_file

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
CLAIM = "claim"


class RegistryError(LookupError):
    """A model, version or alias that does not resolve; the message says which."""


class _Record(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")


class GateVerdict(_Record):
    metric: str
    operator: str
    threshold: float
    value: float | None = None
    passed: bool


class Lineage(_Record):
    """Where a version came from: enough to reproduce or audit it."""

    parent_job: str | None = Field(None, description="namespace/name of the TrainingJob that produced it.")
    base_model: str | None = None
    method: str | None = None
    data: list[dict[str, Any]] = Field(
        default_factory=list, description="Sources with row counts and sha256."
    )
    data_digest: str | None = None
    preparation: dict[str, Any] = Field(default_factory=dict, description="Rows kept and removed per step.")
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    code_version: str | None = None
    image: str | None = None


class ModelVersion(_Record):
    """manifest.json of one registered version."""

    name: str
    version: str
    created_at: str
    artifacts: dict[str, str] = Field(description="Path under model/ -> sha256 of its bytes.")
    metrics: dict[str, float] = Field(default_factory=dict)
    gates: list[GateVerdict] = Field(default_factory=list)
    lineage: Lineage = Field(default_factory=Lineage)

    @property
    def gates_passed(self) -> bool:
        return all(g.passed for g in self.gates)

    @property
    def ungated(self) -> bool:
        """Registered without any gate (its TrainingJob declared none): nothing vouches for it, so a
        ModelDeployment serves it only when `spec.allowUngated` is true."""
        return not self.gates


def version_prefix(name: str, version: str) -> str:
    return f"models/{name}/versions/{version}"


def _numbers(store: ObjectStore, name: str, leaf: str) -> set[str]:
    return {
        key.split("/")[3]
        for key in store.list(f"models/{name}/versions/")
        if key.count("/") == 4 and key.endswith(f"/{leaf}")
    }


def versions(store: ObjectStore, name: str) -> list[str]:
    """Registered (manifest written) versions of `name`, oldest first."""
    return sorted(
        _numbers(store, name, MANIFEST), key=lambda v: (not v.isdigit(), int(v) if v.isdigit() else 0, v)
    )


class BrokenRecord(RegistryError):
    """A manifest that exists but cannot be read as one (truncated or hand-edited)."""


def read_version(store: ObjectStore, name: str, version: str) -> ModelVersion:
    key = f"{version_prefix(name, version)}/{MANIFEST}"
    if not store.exists(key):
        raise RegistryError(f"model {name!r} has no version {version!r} in {store.uri}")
    try:
        return ModelVersion.model_validate_json(store.get_bytes(key))
    except ValidationError as e:
        raise BrokenRecord(
            f"{name}:{version} in {store.uri} has a broken {MANIFEST} ({e.error_count()} errors); "
            "it is skipped as a version"
        ) from None


def resolve(store: ObjectStore, ref: ModelReference) -> ModelVersion:
    """The version a ModelReference names: a version, an alias, or the alias `latest`."""
    if ref.version:
        return read_version(store, ref.name, ref.version)
    alias = ref.alias or "latest"
    key = f"models/{ref.name}/aliases/{alias}.json"
    if store.exists(key):
        return read_version(store, ref.name, json.loads(store.get_bytes(key))["version"])
    if alias == "latest":
        for version in reversed(versions(store, ref.name)):
            try:
                return read_version(store, ref.name, version)
            except BrokenRecord as e:
                log.warning("%s", e)  # the newest readable version stands
    raise RegistryError(f"model {ref.name!r} has no alias {alias!r} in {store.uri}")


def set_alias(store: ObjectStore, name: str, alias: str, version: str) -> None:
    read_version(store, name, version)  # only existing versions get an alias
    store.put_bytes(f"models/{name}/aliases/{alias}.json", json.dumps({"version": version}).encode())


def register(
    store: ObjectStore,
    name: str,
    model_dir: Path,
    *,
    metrics: dict[str, float],
    gates: list[GateVerdict],
    lineage: Lineage,
) -> ModelVersion:
    """Upload `model_dir` as the next version of `name` and write its manifest, never overwriting.

    Refuses a version whose gates did not all pass.
    """
    if not all(g.passed for g in gates):
        failed = ", ".join(g.metric for g in gates if not g.passed)
        raise RegistryError(f"gates failed ({failed}): a version is registered only when every gate passes")
    files = sorted(p for p in model_dir.rglob("*") if p.is_file())
    artifacts = {p.relative_to(model_dir).as_posix(): sha256_file(p) for p in files}
    for _ in range(100):
        taken = _numbers(store, name, CLAIM) | _numbers(store, name, MANIFEST)
        version = str(max((int(v) for v in taken if v.isdigit()), default=0) + 1)
        prefix = version_prefix(name, version)
        try:
            store.put_bytes(f"{prefix}/{CLAIM}", lineage.model_dump_json().encode(), overwrite=False)
        except ObjectExists:
            continue  # another writer took this number
        break
    else:
        raise RegistryError(f"could not allocate a version of {name!r}: too many concurrent registrations")
    for p in files:
        store.upload_file(f"{prefix}/model/{p.relative_to(model_dir).as_posix()}", p)
    manifest = ModelVersion(
        name=name,
        version=version,
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        artifacts=artifacts,
        metrics=metrics,
        gates=gates,
        lineage=lineage,
    )
    body = manifest.model_dump_json(by_alias=True, indent=2).encode()
    store.put_bytes(f"{prefix}/{MANIFEST}", body, overwrite=False)
    return manifest


def download(store: ObjectStore, manifest: ModelVersion, target: Path) -> Path:
    """Fetch a version's files into `target` and verify every checksum against the manifest."""
    prefix = version_prefix(manifest.name, manifest.version)
    for rel, digest in manifest.artifacts.items():
        path = target / rel
        store.download_file(f"{prefix}/model/{rel}", path)
        if sha256_file(path) != digest:
            raise RegistryError(f"{manifest.name}:{manifest.version} file {rel} does not match its checksum")
    return target
