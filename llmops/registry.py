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
from typing import Any, Literal

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


class BaselineRecord(_Record):
    """The version a new one was compared with in its own run (spec.evaluation.baseline), and its
    scores from that run: the same evaluation as the new version's `metrics`."""

    name: str
    version: str
    metrics: dict[str, float] = Field(default_factory=dict)


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
    baseline: BaselineRecord | None = Field(
        None, description="The version it was compared with in its run, with that version's metrics."
    )


class Content(_Record):
    """What a version's `model/` folder holds, so that the serving side never guesses.

    - `kind: model`: a full model (weights, config, tokenizer) at the folder's root, served as a
      ModelDeployment's `spec.model`. `merged` is true when it is a base with a LoRA adapter merged
      into it (a `lora` or `qlora` TrainingJob), and then `adapter` names the sub-folder that holds
      the same adapter unmerged (PEFT layout: adapter_config.json, adapter_model.safetensors), which
      vLLM can serve on top of `base` under `spec.engine.loraAdapters`.
    - `kind: adapter`: only a LoRA adapter, at `adapter` ("" for the folder's root), for `base`.

    A manifest written before this record existed has none: `ModelVersion.described` reads it as a
    full model without an adapter.
    """

    kind: Literal["model", "adapter"] = "model"
    format: str = Field("safetensors", description="Weight file format.")
    merged: bool = False
    adapter: str | None = Field(
        None, description="Sub-folder of model/ holding a LoRA adapter (PEFT layout); None: no adapter."
    )
    base: str | None = Field(
        None, description="The model the adapter was trained on: a registry name:version or a hub id."
    )

    @classmethod
    def from_saved(cls, info: dict[str, Any], base: str | None) -> Content:
        """From what training.model.save_final returns: {"format", "merged", "adapter": "adapter/"}."""
        adapter = info.get("adapter")
        return cls(
            kind="model",
            format=info.get("format", "safetensors"),
            merged=bool(info.get("merged")),
            adapter=adapter.strip("/") if adapter is not None else None,
            base=base if adapter is not None or info.get("merged") else None,
        )


class ModelVersion(_Record):
    """manifest.json of one registered version."""

    name: str
    version: str
    created_at: str
    artifacts: dict[str, str] = Field(description="Path under model/ -> sha256 of its bytes.")
    metrics: dict[str, float] = Field(default_factory=dict)
    gates: list[GateVerdict] = Field(default_factory=list)
    lineage: Lineage = Field(default_factory=Lineage)
    content: Content | None = Field(None, description="What model/ holds; None in manifests written before.")

    @property
    def described(self) -> Content:
        """`content`, or for an older manifest without one: a full model with no adapter."""
        return self.content or Content()

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
    content: Content | None = None,
) -> ModelVersion:
    """Upload `model_dir` as the next version of `name` and write its manifest, never overwriting.

    `content` says what `model_dir` holds (default: a full model, no adapter); an adapter folder it
    names must exist in `model_dir`. Refuses a version whose gates did not all pass.
    """
    content = content or Content()
    if content.adapter is not None and not (model_dir / content.adapter / "adapter_config.json").is_file():
        raise RegistryError(f"content.adapter {content.adapter!r}: no adapter_config.json under {model_dir}")
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
        content=content,
    )
    body = manifest.model_dump_json(by_alias=True, indent=2).encode()
    store.put_bytes(f"{prefix}/{MANIFEST}", body, overwrite=False)
    return manifest


def selected(manifest: ModelVersion, under: str = "") -> dict[str, str]:
    """The version's artifacts (path -> sha256) inside the sub-folder `under` ("" for all of them)."""
    under = under.strip("/")
    return {r: d for r, d in manifest.artifacts.items() if not under or r.startswith(f"{under}/")}


def download(store: ObjectStore, manifest: ModelVersion, target: Path, under: str = "") -> Path:
    """Fetch a version's files into `target` and verify every checksum against the manifest.

    `under`: only the files inside that sub-folder (such as a lora version's "adapter"), kept at their
    paths relative to the version (target/adapter/...). Raises RegistryError when it holds none.
    """
    prefix = version_prefix(manifest.name, manifest.version)
    files = selected(manifest, under)
    if not files:
        raise RegistryError(f"{manifest.name}:{manifest.version} has no files under {under!r}")
    for rel, digest in files.items():
        path = target / rel
        store.download_file(f"{prefix}/model/{rel}", path)
        if sha256_file(path) != digest:
            raise RegistryError(f"{manifest.name}:{manifest.version} file {rel} does not match its checksum")
    return target
