"""The model registry: immutable, versioned model records in object storage.

Layout under the registry location (one per organisation or team):

    models/<name>/versions/<version>/claim              create-only: this writer owns the number
    models/<name>/versions/<version>/model/...          weights (safetensors), tokenizer, config
    models/<name>/versions/<version>/manifest.json      written last, create-only: the version exists
    models/<name>/versions/<version>/tombstone.json     create-only: the version is retired (archived,
                                                        then its artifacts deleted; llmops.archive)
    models/<name>/aliases/<alias>.json                  the alias now: its last AliasMove (camelCase
                                                        JSON; "version" is the version it names)
    models/<name>/alias-history/<alias>/<seq>-<at>-<moveId>.json
                                                        create-only: one AliasMove per move; `seq`
                                                        counts the alias's moves from 00000001, `at`
                                                        as YYYYMMDDTHHMMSSZ

A writer first claims the next number with a create-only put (two racing writers never share a
folder), uploads the files, then writes the manifest, also create-only: its presence is what makes
the version exist, and nothing overwrites it. Versions are integers counted up from 1; a retired
version keeps its tombstone, so its number is never given out again.

Aliases (`champion`, `challenger`, `production`) are movable pointers to versions. `move_alias`
writes the pointer, then the move's history record; a move carries an idempotency key (`move_id`),
so a writer that crashed between the two writes repeats the call and completes it, and every later
move (and `alias_history`) first makes good a pointer whose record is missing: pointer and history
always agree. A pointer written before the history existed holds only {"version"}: it still
resolves, and reads as a move with empty `by`, `reason`, `at` and `move_id`. Moves of one alias are
meant to come from one writer at a time (a person, or the RetrainPolicy that owns the alias); two
concurrent moves are both recorded and the later pointer write wins.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import re
import uuid
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from llmops.api.common import ModelReference
from llmops.audit import Actor, AuditLog, Entry, ObjectRef
from llmops.storage import ObjectExists, ObjectStore, is_missing, sha256_file

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
CLAIM = "claim"
TOMBSTONE = "tombstone.json"


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
    parent: str | None = Field(
        None,
        description=(
            "name:version of the registered version it derives from: the parent a quantize run"
            " compressed, the teacher a distill run learned from; None for other methods."
        ),
    )
    recipe: str | None = Field(
        None, description="How it was derived, as the tool that did it records it (llm-compressor's recipe)."
    )


class Quantization(_Record):
    """How a version's weights are quantized: what serving needs to know, so a ModelDeployment passes
    vLLM's `--quantization` by itself.

    `method` is vLLM's name for the checkpoint format (its `--quantization` value, the config's
    `quantization_config.quant_method`), e.g. "compressed-tensors" for what llm-compressor saves;
    `format` is that format's own layout name ("int-quantized", "pack-quantized", "float-quantized");
    `scheme` and `algorithm` are what the TrainingJob asked for (spec.method.quantization).
    """

    method: str
    format: str | None = None
    scheme: str | None = None
    algorithm: str | None = None

    @classmethod
    def from_config(
        cls, config: dict[str, Any], scheme: str | None = None, algorithm: str | None = None
    ) -> Quantization | None:
        """From a Hugging Face config.json (a dict); None when it declares no quantization_config."""
        qc = config.get("quantization_config")
        if not isinstance(qc, dict) or not isinstance(qc.get("quant_method"), str):
            return None
        layout = qc.get("format")
        return cls(
            method=qc["quant_method"],
            format=layout if isinstance(layout, str) else None,
            scheme=scheme,
            algorithm=algorithm,
        )


class Content(_Record):
    """What a version's `model/` folder holds, so that the serving side never guesses.

    - `kind: model`: a full model (weights, config, tokenizer) at the folder's root, served as a
      ModelDeployment's `spec.model`. `merged` is true when it is a base with a LoRA adapter merged
      into it (a `lora` or `qlora` TrainingJob), and then `adapter` names the sub-folder that holds
      the same adapter unmerged (PEFT layout: adapter_config.json, adapter_model.safetensors), which
      vLLM can serve on top of `base` under `spec.engine.loraAdapters`.
    - `kind: adapter`: only a LoRA adapter, at `adapter` ("" for the folder's root), for `base`.

    `quantization` says how the weights are stored when they are quantized (a quantize TrainingJob's
    version), so the serving side passes the matching engine argument.

    A manifest written before this record existed has none: `ModelVersion.described` reads it as a
    full model without an adapter. One written before `quantization` existed reads as unquantized.
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
    quantization: Quantization | None = Field(
        None, description="How the weights are quantized (a quantize TrainingJob's version); None: not."
    )

    @classmethod
    def of_folder(cls, folder: Path) -> Content:
        """What a Hugging Face checkpoint folder holds, read from its files: a PEFT adapter
        (adapter_config.json, its base from `base_model_name_or_path`) or a full model (config.json,
        quantized when it declares a quantization_config). RegistryError when it is neither, when a
        JSON file does not parse, when it holds no weights (*.safetensors or *.bin), or when an
        adapter does not name its base."""
        safetensors, pickled = any(folder.glob("*.safetensors")), any(folder.glob("*.bin"))
        adapter, config = folder / "adapter_config.json", folder / "config.json"
        if not adapter.is_file() and not config.is_file():
            raise RegistryError(
                "no config.json (a model) and no adapter_config.json (a PEFT adapter) here: it is not a"
                " Hugging Face checkpoint folder"
            )
        if not (safetensors or pickled):
            raise RegistryError("no weights here (*.safetensors or *.bin): a checkpoint folder holds them")
        weights = "safetensors" if safetensors else "pytorch"
        which = adapter if adapter.is_file() else config
        try:
            settings = json.loads(which.read_text())
        except (ValueError, UnicodeDecodeError) as e:
            raise RegistryError(f"{which.name} is not valid JSON ({e})") from None
        if which is adapter:
            base = settings.get("base_model_name_or_path")
            if not base:
                raise RegistryError(
                    "adapter_config.json names no base_model_name_or_path: an adapter is served on its base"
                )
            return cls(kind="adapter", format=weights, adapter="", base=base)
        return cls(format=weights, quantization=Quantization.from_config(settings))

    @classmethod
    def from_saved(
        cls, info: dict[str, Any], base: str | None, quantization: Quantization | None = None
    ) -> Content:
        """From what training.model.save_final (or training.compress) returns: {"format", "merged",
        "adapter": "adapter/"}, and the quantization read from the saved config.json."""
        adapter = info.get("adapter")
        return cls(
            kind="model",
            format=info.get("format", "safetensors"),
            merged=bool(info.get("merged")),
            adapter=adapter.strip("/") if adapter is not None else None,
            base=base if adapter is not None or info.get("merged") else None,
            quantization=quantization,
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


def _numbers(store: ObjectStore, name: str, *leaves: str) -> set[str]:
    """The version numbers of `name` with any of the files `leaves` (one listing)."""
    return {
        key.split("/")[3]
        for key in store.list(f"models/{name}/versions/")
        if key.count("/") == 4 and key.rsplit("/", 1)[1] in leaves
    }


def versions(store: ObjectStore, name: str) -> list[str]:
    """Registered (manifest written) versions of `name`, oldest first; a retired version (its
    manifest deleted, its tombstone kept) is not one of them: `retired_versions` lists those."""
    return sorted(
        _numbers(store, name, MANIFEST), key=lambda v: (not v.isdigit(), int(v) if v.isdigit() else 0, v)
    )


def models(store: ObjectStore) -> list[str]:
    """Names of the models with at least one registered or retired version, sorted. Lists every key
    under models/ (the store interface has no delimiter listing): seconds on a registry of many
    versions."""
    return sorted(
        {
            k.split("/")[1]
            for k in store.list("models/")
            if k.count("/") == 4 and k.rsplit("/", 1)[1] in (MANIFEST, TOMBSTONE)
        }
    )


class BrokenRecord(RegistryError):
    """A manifest that exists but cannot be read as one (truncated or hand-edited)."""


class Tombstone(_Record):
    """tombstone.json of a retired version: what it was and where its archive is, so lineage that
    names it never dangles. Written before any artifact is deleted (llmops.archive.delete_version).

    `artifacts`: path under model/ -> sha256, as its manifest had them; `manifest_sha256`: of the
    manifest's bytes; `archive_location`: where the archive is (s3://bucket/prefix); `receipt_key`:
    the archive receipt's key there; `retain_until`: ISO 8601 UTC, the Object Lock retention of the
    archive (None: not locked); `by`: who retired it; `at`: ISO 8601 UTC to the second.
    """

    name: str
    version: str
    artifacts: dict[str, str]
    manifest_sha256: str
    archive_location: str
    receipt_key: str
    retain_until: str | None = None
    lock_mode: str | None = None
    legal_hold: bool = False
    by: str
    reason: str
    at: str


class VersionRetired(RegistryError):
    """The version was retired: archived, then deleted. The message names the archive location;
    `tombstone` holds the whole record."""

    def __init__(self, tombstone: Tombstone, uri: str) -> None:
        self.tombstone = tombstone
        super().__init__(
            f"{tombstone.name}:{tombstone.version} in {uri} was retired at {tombstone.at} by "
            f"{tombstone.by} ({tombstone.reason}); its archive is at {tombstone.archive_location}"
        )


class VersionInUse(RegistryError):
    """A version that an alias still names cannot be deleted; the message names the aliases."""


def read_tombstone(store: ObjectStore, name: str, version: str) -> Tombstone | None:
    """The tombstone of a retired version, or None when the version is not retired."""
    key = f"{version_prefix(name, version)}/{TOMBSTONE}"
    if not store.exists(key):
        return None
    return Tombstone.model_validate_json(store.get_bytes(key))


def retired_versions(store: ObjectStore, name: str) -> list[str]:
    """Retired (tombstoned) versions of `name`, oldest first; `versions` lists the live ones."""
    return sorted(
        _numbers(store, name, TOMBSTONE), key=lambda v: (not v.isdigit(), int(v) if v.isdigit() else 0, v)
    )


def read_version(store: ObjectStore, name: str, version: str) -> ModelVersion:
    """The manifest of `name`:`version`. Raises VersionRetired (naming the archive) for a retired
    version, RegistryError for one that does not exist, BrokenRecord for an unreadable manifest."""
    key = f"{version_prefix(name, version)}/{MANIFEST}"
    try:
        raw = store.get_bytes(key)
    except Exception as e:  # gone, or deleted since it was listed (a retirement in between)
        if not is_missing(e):
            raise
        if (tombstone := read_tombstone(store, name, version)) is not None:
            raise VersionRetired(tombstone, store.uri) from None
        raise RegistryError(
            f"model {name!r} has no version {version!r} in {store.uri}{_which(store, name)}"
        ) from None
    try:
        manifest = ModelVersion.model_validate_json(raw)
    except ValidationError as e:
        raise BrokenRecord(
            f"{name}:{version} in {store.uri} has a broken {MANIFEST} ({problems(e)}); "
            "it is skipped as a version"
        ) from None
    if (manifest.name, manifest.version) != (name, version):  # copied or edited by hand
        raise BrokenRecord(
            f"{name}:{version} in {store.uri} has a broken {MANIFEST} (it says it is "
            f"{manifest.name}:{manifest.version}); it is skipped as a version"
        )
    return manifest


def problems(error: ValidationError, most: int = 3, under: str = "") -> str:
    """A ValidationError in one line: `field: message` for its first `most` problems (`not JSON: ...`
    for a document that does not parse), then how many more. `under`: the path of the validated
    object in its document (`spec`), put before each field. Field paths and messages only, never the
    values (a value may be a secret); pydantic's "Value error, " before our own rules' messages is
    left out."""
    found = error.errors(include_url=False, include_input=False)
    said = [
        f"not JSON: {x['msg'].removeprefix('Invalid JSON: ')}"
        if x["type"] == "json_invalid"
        else f"{'.'.join([under] * bool(under) + list(map(str, x['loc']))) or 'the document'}: "
        + x["msg"].removeprefix("Value error, ")
        for x in found[:most]
    ]
    if len(found) > most:
        said.append(f"{len(found) - most} more")
    return "; ".join(said)


def resolve(store: ObjectStore, ref: ModelReference) -> ModelVersion:
    """The version a ModelReference names: a version, an alias, or the alias `latest`."""
    if ref.version:
        return read_version(store, ref.name, ref.version)
    alias = ref.alias or "latest"
    key = _pointer_key(ref.name, alias)
    if store.exists(key):
        return read_version(store, ref.name, json.loads(store.get_bytes(key))["version"])
    if alias == "latest":
        for version in reversed(versions(store, ref.name)):
            try:
                return read_version(store, ref.name, version)
            except BrokenRecord as e:
                log.warning("%s", e)  # the newest readable version stands
    raise RegistryError(
        f"model {ref.name!r} has no alias {alias!r} in {store.uri}{_which(store, ref.name, alias=True)}"
    )


def _which(store: ObjectStore, name: str, *, alias: bool = False) -> str:
    """What a reader who named a missing version or alias needs next: that the model itself is not
    there (a typo in the name, or the wrong registry), or which live versions it has (the newest
    five), or that all of its versions are retired; for a missing `alias`, the aliases it has."""
    if alias and (named := aliases(store, name)):
        return f" (its aliases: {', '.join(named)})"
    held = versions(store, name)
    if alias and held:
        return f" (it has no aliases; its versions: {'..., ' if len(held) > 5 else ''}{', '.join(held[-5:])})"
    if not held:
        if retired := retired_versions(store, name):
            return f" (every version of it is retired: {', '.join(retired[-5:])})"
        return " (no model of that name there)"
    shown = ", ".join(held[-5:])
    return f" (its versions: {'..., ' if len(held) > 5 else ''}{shown})"


# -- aliases ------------------------------------------------------------------------------------

ALIAS_PATTERN = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")  # a DNS label, as ModelReference.alias
MOVE_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class AliasMove(_Record):
    """One move of an alias, and the pointer's content (the alias now is its last move).

    `at` is ISO 8601 UTC to the second ("2026-11-30T10:05:00+00:00"). `by`: who moved it,
    "user:<name>" from the `llmops models` command, "retrainpolicy/<namespace>/<name>" from the
    operator. `previous`: the version the alias named before, None when the move created it.
    `move_id`: the idempotency key; a repeat of a move with the same key changes nothing.
    """

    model: str
    alias: str
    version: str
    previous: str | None = None
    by: str
    reason: str
    at: str
    move_id: str


def _pointer_key(name: str, alias: str) -> str:
    return f"models/{name}/aliases/{alias}.json"


def _history_prefix(name: str, alias: str) -> str:
    return f"models/{name}/alias-history/{alias}/"


def check_name(name: str) -> None:
    """RegistryError unless `name` is a DNS label, as every ModelReference.name is: a model no
    TrainingJob or ModelDeployment could name is never registered (nor can `../x` leave models/)."""
    if not ALIAS_PATTERN.fullmatch(name):
        raise RegistryError(
            f"model name {name!r} is not a DNS label (lower-case letters, digits, '-', 1-63), as"
            " TrainingJobs and ModelDeployments name models"
        )


def _check_alias(alias: str) -> None:
    if not ALIAS_PATTERN.fullmatch(alias):
        raise RegistryError(f"alias {alias!r} is not a DNS label (lower-case letters, digits, '-', 1-63)")


def read_alias(store: ObjectStore, name: str, alias: str) -> AliasMove | None:
    """The alias now (its last move), or None when `name` has no such alias.

    A pointer from before the history ({"version"} only) reads with empty by, reason, at and move_id.
    """
    _check_alias(alias)
    key = _pointer_key(name, alias)
    if not store.exists(key):
        return None
    body = json.loads(store.get_bytes(key))
    if "moveId" not in body:
        return AliasMove(model=name, alias=alias, version=str(body["version"]), by="", reason="", at="",
                         move_id="")  # fmt: skip
    return AliasMove.model_validate(body)


def aliases(store: ObjectStore, name: str) -> dict[str, str]:
    """Every alias of `name` and the version it names, by alias name."""
    prefix = f"models/{name}/aliases/"
    found = {}
    for key in store.list(prefix):
        alias = key[len(prefix) :]
        if alias.endswith(".json") and ALIAS_PATTERN.fullmatch(alias.removesuffix(".json")):
            move = read_alias(store, name, alias.removesuffix(".json"))
            if move is not None:
                found[move.alias] = move.version
    return dict(sorted(found.items()))


def _recorded(store: ObjectStore, name: str, alias: str) -> dict[str, str]:
    """The history record keys of `alias`, oldest first, by move_id.

    A record's name is <seq>-<YYYYMMDDTHHMMSSZ>-<move_id>.json, `seq` counting the alias's moves from
    1 in eight digits: it orders moves made within one second, which `at` cannot."""
    keys = sorted(k for k in store.list(_history_prefix(name, alias)) if k.endswith(".json"))
    return {k.rsplit("/", 1)[-1][26:].removesuffix(".json"): k for k in keys}


def _record(store: ObjectStore, move: AliasMove, recorded: dict[str, str]) -> None:
    """Write `move` as the next record of its alias unless it is recorded already; a record of the
    same move written meanwhile (the same key) is fine."""
    if move.move_id in recorded:
        return
    stamp = dt.datetime.fromisoformat(move.at).astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    key = f"{_history_prefix(move.model, move.alias)}{len(recorded) + 1:08d}-{stamp}-{move.move_id}.json"
    with contextlib.suppress(ObjectExists):
        store.put_bytes(key, move.model_dump_json(by_alias=True).encode(), overwrite=False)
    recorded[move.move_id] = key


def move_alias(
    store: ObjectStore,
    name: str,
    alias: str,
    version: str,
    *,
    by: str,
    reason: str,
    move_id: str | None = None,
    audit: AuditLog | None = None,
) -> AliasMove:
    """Point `alias` of model `name` at `version` and record the move; returns the recorded move.

    Idempotent by `move_id` (default: a fresh uuid4): a repeat with a key already recorded, or with
    the key the pointer holds, changes nothing and returns that move; a repeat after a crash between
    the pointer write and the history write completes the history (and so does the next move of the
    alias, whatever its key). Moving an alias to the version it already names is a no-op that
    records nothing and returns the alias as it is (whose move_id is then not the one passed).
    Writes: the pointer (overwrite), then the history record (create-only). Raises RegistryError
    for a version that does not exist, an alias that is not a DNS label, or a move_id outside
    [A-Za-z0-9._-] (at most 128).

    `audit`: the audit log that records the move (a no-op or a repeat records nothing), with `by` as
    the actor; the operator passes none, its Event of the move is its record (operators/auditing.py).
    """
    _check_alias(alias)
    move_id = move_id or uuid.uuid4().hex
    if not MOVE_ID_PATTERN.fullmatch(move_id):
        raise RegistryError(f"move_id {move_id!r}: letters, digits, '.', '_', '-' only, at most 128")
    read_version(store, name, version)  # only existing versions get an alias
    current = read_alias(store, name, alias)
    recorded = _recorded(store, name, alias)
    if current is not None and current.move_id:
        _record(store, current, recorded)  # a crash may have cut it between pointer and record
        if current.move_id == move_id:
            return current
    if move_id in recorded:  # recorded, and the alias has moved on since: never move it back
        return AliasMove.model_validate_json(store.get_bytes(recorded[move_id]))
    if current is not None and current.version == version:
        return current
    move = AliasMove(
        model=name,
        alias=alias,
        version=version,
        previous=current.version if current else None,
        by=by,
        reason=reason,
        at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        move_id=move_id,
    )
    store.put_bytes(_pointer_key(name, alias), move.model_dump_json(by_alias=True, indent=2).encode())
    _record(store, move, recorded)
    if audit is not None:
        audit.append(
            Entry(
                actor=_cli_actor(by),
                action="alias.moved",
                object=ObjectRef(kind="Alias", name=f"{name}@{alias}"),
                model=name,
                version=version,
                reason=reason[:1024],
                details={"previous": move.previous, "moveId": move_id, "registry": store.uri},
                source="/llmops/cli",
            )
        )
    return move


def _cli_actor(by: str) -> Actor:
    """`user:alice` (the `llmops` command's form) -> a "cli" actor named alice."""
    return Actor(type="cli", name=by.removeprefix("user:"))


def find_move(store: ObjectStore, name: str, move_id: str) -> AliasMove | None:
    """The move of any alias of model `name` that carries the idempotency key `move_id` (its history
    record, or the pointer whose record a crash left out), or None when no alias moved with it."""
    prefix = f"models/{name}/alias-history/"
    for key in store.list(prefix):
        # <seq>-<at>-<moveId>.json (`_record`); a move id may itself hold dashes
        if key.count("/") == 4 and key.rsplit("/", 1)[-1].split("-", 2)[-1] == f"{move_id}.json":
            return AliasMove.model_validate_json(store.get_bytes(key))
    return next(
        (m for a in aliases(store, name) if (m := read_alias(store, name, a)) and m.move_id == move_id), None
    )


def alias_history(store: ObjectStore, name: str, alias: str | None = None) -> list[AliasMove]:
    """Every move of `alias` (or of every alias of `name`), oldest first: one alias's moves in the
    order they were made, different aliases' by `at` (to the second).

    A pointer whose record a crash left out comes last, as it will be recorded (read-only here).
    """
    if alias is not None:
        _check_alias(alias)
    names = [alias] if alias is not None else sorted(
        {k.split("/")[3] for k in store.list(f"models/{name}/alias-history/") if k.count("/") == 4}
        | set(aliases(store, name))
    )  # fmt: skip
    moves: list[AliasMove] = []
    for each in names:
        recorded = _recorded(store, name, each)
        mine = [AliasMove.model_validate_json(store.get_bytes(key)) for key in recorded.values()]
        pointer = read_alias(store, name, each)
        if pointer is not None and pointer.move_id and pointer.move_id not in recorded:
            mine.append(pointer)
        moves += mine
    return sorted(moves, key=lambda m: m.at)  # stable: each alias keeps its own order


def set_alias(
    store: ObjectStore, name: str, alias: str, version: str, *, by: str = "unknown", reason: str = ""
) -> AliasMove:
    """`move_alias` with a fresh move_id (kept for the callers from before the history)."""
    return move_alias(store, name, alias, version, by=by, reason=reason)


def register(
    store: ObjectStore,
    name: str,
    model_dir: Path,
    *,
    metrics: dict[str, float],
    gates: list[GateVerdict],
    lineage: Lineage,
    content: Content | None = None,
    audit: AuditLog | None = None,
    by: str = "unknown",
) -> ModelVersion:
    """Upload `model_dir` as the next version of `name` and write its manifest, never overwriting.

    `content` says what `model_dir` holds (default: a full model, no adapter); an adapter folder it
    names must exist in `model_dir`. Refuses a version whose gates did not all pass. `audit`: the
    audit log that records the registration (actor `by`, digests: the manifest's and every artifact's).
    """
    check_name(name)
    content = content or Content()
    if content.adapter is not None and not (model_dir / content.adapter / "adapter_config.json").is_file():
        raise RegistryError(f"content.adapter {content.adapter!r}: no adapter_config.json under {model_dir}")
    if not all(g.passed for g in gates):
        failed = ", ".join(g.metric for g in gates if not g.passed)
        raise RegistryError(f"gates failed ({failed}): a version is registered only when every gate passes")
    files = sorted(p for p in model_dir.rglob("*") if p.is_file())
    artifacts = {p.relative_to(model_dir).as_posix(): sha256_file(p) for p in files}
    for _ in range(100):
        taken = _numbers(store, name, CLAIM, MANIFEST, TOMBSTONE)  # a retired number is never reused
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
    if audit is not None:
        audit.append(
            Entry(
                actor=_cli_actor(by),
                action="modelversion.registered",
                object=ObjectRef(kind="ModelVersion", name=f"{name}:{version}"),
                model=name,
                version=version,
                digests={MANIFEST: hashlib.sha256(body).hexdigest(), **artifacts},
                details={"registry": store.uri, "parentJob": lineage.parent_job},
                source="/llmops/cli",
            )
        )
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
