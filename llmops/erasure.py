"""Erasure of one data subject (GDPR Art. 17, CCPA §1798.105): `llmops erasure` (docs/operations.md,
Erasure of a data subject).

Given one identifier, the command finds the subject's records where the platform stores personal
data, erases them, lists every model version whose training data held them (each needs a recorded
decision), and writes a receipt. It is a command, not a kind: a kind would store the identifier,
personal data itself, in etcd, in Git (GitOps) and in Events; the receipt stores only a keyed hash.

**The subject** (`Subject`): `user` (the OpenAI `user` field of a request or of a feedback),
`apiKeyId` (the API key's id as the gateway records it: the `tenant` of feedback records; payload
records carry no tenant, so the payloads of a key are found through the completions its feedback
names), or `field` (a dotted path in a record, e.g. `request.metadata.customer_id`, equal to a value).
A payload record is the subject's when it matches, or when the subject's feedback names its
completion id; a feedback record when it matches, or when it rates one of the subject's completions.
Drift prompts (`-prompt-` files) carry no identifier: only `field` (e.g. `text`) finds them; their
retention bounds them otherwise.

**Where, and what happens** (in this order; reading all first, so a failure leaves nothing half
known):
1. Sample files under each `--samples` location (a ModelDeployment's payloadSampling destination;
   drift-prompts/ below it included): the gateway's files only (llmops.gateway_config.SAMPLE_KEY).
   `--action delete` drops the subject's lines; `redact` keeps each line as valid JSON with every
   string replaced by `[ERASED]` but the operational fields (`KEPT_FIELDS`), so counts and ids still
   add up. The file is rewritten whole under its key (one atomic put), or deleted when no line is
   left. Other lines stay byte for byte. These files are the gateway's append-only logs, not
   versioned data sets.
2. Model versions (`--registry`, every model or `--model`): a version is affected when its lineage
   names a rewritten sample file (by sha256 of the bytes before, or by location and key), or when its
   run's ingested documents hold one of the subject's exchanges (found by their exact training text:
   `llmops.training.traffic.exchange` rendered by `chat.dumps`, as ingest wrote it).
3. The data sets of an affected version's run, in its work folder `jobs/<ns>/<job>/<uid>/` (the
   datasets its lineage digests): `ingest/*.parquet` rows with one of those texts and
   `prepare/documents/**.parquet` rows with the same document ids are dropped. Data set objects are
   never edited in place: the rows that stay are written as a new object beside the old one
   (`<name>.erasure-<receipt>.parquet`; none when no row stays), then the old one is deleted. Where
   storage refuses the deletion (Object Lock, a legal hold: the policy wins), the receipt says
   `retained` with the error; on a versioned bucket a delete leaves the old version behind a delete
   marker, which the bucket's own rules (Object Lock retention, noncurrent-version expiration) keep
   or remove. The packed token blocks of that run (`prepare/train/`, `prepare/validation/`) mix
   documents and cannot be filtered: they are deleted (rebuilt only by a new run). Checkpoints
   (`train/`) and the registered weights are not data sets: they follow the version's decision.
4. The receipt (JSON, `SCHEMA`) at `<receipts>/erasures/<id>/receipt.json` (create-only), then the
   audit record (`append_audit_record`, the one place). Before changing anything the run writes its
   plan (`plan.json`: the same object with `state: planned`), so a run cut short is listed. Each
   affected version needs a decision: `llmops erasure decide` writes
   `erasures/<id>/decisions/<model>/<version>.json` (create-only): retrain-without,
   accept-with-justification (the justification required) or retire.

Running again is safe: what was erased no longer matches. Data sets are erased before the samples
they are found through, so a run cut short (its plan without a receipt, `incomplete` in `list`) is
finished by running it again.
`--dry-run` reads and reports, writes nothing.

The subject's hash: HMAC-SHA256 (RFC 2104) over `<kind>\\n<path>\\n<value>` with the key of
`--key-file` (keep it secret and the same across requests: the hash then tells whether a subject was
erased before, and nobody without the key can test a guess).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import io
import json
import os
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import click

from llmops import records, registry
from llmops.audit import Actor, AuditConfig, Entry, ObjectRef
from llmops.command_group import Group, output_option, split_ref, storage_errors
from llmops.registry_cli import open_uri
from llmops.storage import ObjectExists, ObjectStore

SCHEMA = "llmops.io/erasure-receipt/v1"
ERASED = "[ERASED]"
# Operational fields a redacted record keeps: no personal data, and they keep counts and links whole.
KEPT_FIELDS = frozenset(
    {"id", "completion_id", "time", "endpoint", "version", "status", "latency_seconds", "usage", "name"}
    | {"model", "model_deployment"}
)
DECISIONS = ("retrain-without", "accept-with-justification", "retire")
KeyKind = Literal["user", "apiKeyId", "field"]


@dataclass(frozen=True)
class Subject:
    """Whose data: `kind` user, apiKeyId or field (`path`: the dotted path of the field)."""

    kind: KeyKind
    value: str
    path: str = ""

    def __post_init__(self) -> None:
        if not self.value:
            raise ValueError("the subject's identifier is empty")
        if self.kind == "field" and not re.fullmatch(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*", self.path):
            raise ValueError(f"field path {self.path!r}: use dotted names, e.g. request.metadata.customer_id")

    def _at_path(self, record: dict[str, Any]) -> Any:
        value: Any = record
        for part in self.path.split("."):
            if not isinstance(value, dict):
                return None
            value = value.get(part)
        return value

    def matches(self, record: Any, kind: str) -> bool:
        """Whether one record (of a `payload`, `feedback` or `prompt` file) names the subject itself."""
        if not isinstance(record, dict):
            return False
        if self.kind == "user":
            return kind in ("payload", "feedback") and record.get("user") == self.value
        if self.kind == "apiKeyId":
            return kind == "feedback" and record.get("tenant") == self.value
        return self._at_path(record) == self.value

    def hashed(self, key: bytes) -> str:
        mac = hmac.new(key, f"{self.kind}\n{self.path}\n{self.value}".encode(), hashlib.sha256)
        return "hmac-sha256:" + mac.hexdigest()


def redacted(record: dict[str, Any]) -> dict[str, Any]:
    """The record with every string replaced by `[ERASED]`, at any depth, except the top-level
    `KEPT_FIELDS`; numbers, booleans and nulls stay (shape and counts remain valid JSON)."""

    def scrub(value: Any) -> Any:
        if isinstance(value, str):
            return ERASED
        if isinstance(value, list):
            return [scrub(v) for v in value]
        if isinstance(value, dict):
            return {k: scrub(v) for k, v in value.items()}
        return value

    return {k: (v if k in KEPT_FIELDS else scrub(v)) for k, v in record.items()}


def _lines(data: bytes) -> list[bytes]:
    """The file's lines, split at \\n only (llmops.jsonl's rule), the last one without its \\n."""
    lines = data.split(b"\n")
    return lines[:-1] if lines and lines[-1] == b"" else lines


def _parse(line: bytes) -> Any:
    try:
        return json.loads(line)
    except ValueError:
        return None  # a broken line is nobody's record: kept as it is


@dataclass
class SampleFile:
    key: str
    kind: str
    data: bytes
    records: list[Any]
    erase: list[int] = field(default_factory=list)  # line indexes


def _sample_files(store: ObjectStore) -> Iterable[SampleFile]:
    for key in sorted(store.list()):
        kind = records.sample_kind(key)
        if kind is not None:
            data = store.get_bytes(key)
            yield SampleFile(key, kind, data, [_parse(line) for line in _lines(data)])


def scan_samples(store: ObjectStore, subject: Subject) -> list[SampleFile]:
    """The gateway's files under `store` that hold the subject's lines, those lines marked (see the
    module docstring for the links between payload and feedback records). Two passes, so that only
    those files are held in memory: the subject's completion ids first, then the lines."""
    ids: set[str] = set()
    for f in _sample_files(store):
        for r in f.records:
            if subject.matches(r, f.kind):
                ids.add(str(r.get("completion_id") if f.kind == "feedback" else r.get("id")))
    ids.discard("None")
    found = []
    for f in _sample_files(store):
        for i, r in enumerate(f.records):
            linked = isinstance(r, dict) and (
                (f.kind == "payload" and r.get("id") in ids)
                or (f.kind == "feedback" and r.get("completion_id") in ids)
            )
            if subject.matches(r, f.kind) or linked:
                f.erase.append(i)
        if f.erase:
            found.append(f)
    return found


def training_texts(files: Iterable[SampleFile]) -> set[str]:
    """The exact ingested text (llmops.training.ingest) of each of the subject's payload records that
    a servedTraffic source would have kept."""
    from llmops.training import chat, traffic

    texts = set()
    for f in files:
        if f.kind != "payload":
            continue
        for i in f.erase:
            record = f.records[i]
            messages, _ = (
                traffic.exchange(record, cutoff=None, keep=None) if isinstance(record, dict) else (None, "")
            )
            if messages is not None:
                texts.add(chat.dumps(messages))
    return texts


def rewritten(f: SampleFile, action: Literal["delete", "redact"]) -> bytes:
    """The file's bytes with the subject's lines dropped (delete) or redacted; other lines as they were."""
    out, erase = [], set(f.erase)
    for i, line in enumerate(_lines(f.data)):
        if i not in erase:
            out.append(line + b"\n")
        elif action == "redact":
            out.append(json.dumps(redacted(f.records[i]), ensure_ascii=False).encode() + b"\n")
    return b"".join(out)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- model versions and their data sets ---------------------------------------------------------


@dataclass
class Affected:
    version: registry.ModelVersion
    evidence: list[str]

    @property
    def work_dir(self) -> str | None:
        """jobs/<ns>/<job>/<uid> of the run that produced it (llmops.workload.work_dir_for)."""
        job, uid = self.version.lineage.parent_job, (self.version.lineage.model_extra or {}).get("job_uid")
        return f"jobs/{job}/{uid}" if job and uid else None


def affected_versions(
    store: ObjectStore,
    changed: dict[str, tuple[str, str]],
    locations: set[str],
    texts: set[str],
    models: list[str] | None,
) -> list[Affected]:
    """The versions whose training data held the subject. `changed`: sha256 (before) -> (location
    uri, key) of each sample file with the subject's records; `locations`: the sample locations' uris
    (a version whose lineage reads one of them has its ingested documents searched for `texts`)."""
    found = []
    for name in models or registry.models(store):
        for number in registry.versions(store, name):
            version = registry.read_version(store, name, number)
            evidence = []
            traffic = False
            for source in version.lineage.data:
                uri = source.get("uri")
                traffic = traffic or uri in locations
                for f in source.get("files") or []:
                    if f.get("sha256") in changed or (uri, f.get("key")) in changed.values():
                        evidence.append(f"lineage names {uri}/{f.get('key')} (sha256 {f.get('sha256')})")
            candidate = Affected(version, evidence)
            searched = traffic and texts and candidate.work_dir and not evidence
            if searched and _ingested_ids(store, candidate.work_dir, texts)[0]:
                evidence.append(f"{candidate.work_dir}/ingest holds the subject's exchanges")
            if evidence:
                found.append(candidate)
    return found


def _pyarrow() -> Any:
    """pyarrow, which reads and writes the data sets (Parquet); in the `training` extra."""
    try:
        import pyarrow
        import pyarrow.compute
        import pyarrow.parquet
    except ImportError:
        raise click.ClickException(
            "searching data sets (--registry) reads Parquet: install llmops[training] (pyarrow)"
        ) from None
    return pyarrow


def _read_table(store: ObjectStore, key: str) -> Any:
    return _pyarrow().parquet.read_table(io.BytesIO(store.get_bytes(key)))


def _ingested_ids(store: ObjectStore, work_dir: str, texts: set[str]) -> tuple[set[int], list[str]]:
    """Document ids of the ingested rows whose text is one of `texts`, and the part keys holding them."""
    ids, keys = set(), []
    for key in sorted(store.list(f"{work_dir}/ingest/")):
        if not key.endswith(".parquet"):
            continue
        table = _read_table(store, key)
        hit = {
            i
            for i, t in zip(table.column("id").to_pylist(), table.column("text").to_pylist(), strict=True)
            if t in texts
        }
        if hit:
            ids |= hit
            keys.append(key)
    return ids, keys


def _new_key(key: str, receipt_id: str) -> str:
    stem = re.sub(r"\.erasure-[^/]*$", "", key.removesuffix(".parquet"))
    return f"{stem}.erasure-{receipt_id}.parquet"


def erase_datasets(
    store: ObjectStore, work_dir: str, texts: set[str], receipt_id: str, dry_run: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(data set objects rewritten, derived objects deleted) in one run's work folder."""
    pa = _pyarrow()
    ids, parts = _ingested_ids(store, work_dir, texts)
    if not ids:
        return [], []
    documents = sorted(k for k in store.list(f"{work_dir}/prepare/documents/") if k.endswith(".parquet"))
    changes = []
    for key in [*parts, *documents]:
        table = _read_table(store, key)
        keep = pa.compute.invert(
            pa.compute.is_in(table.column("id"), value_set=pa.array(sorted(ids), pa.int64()))
        )
        kept = table.filter(keep)
        if kept.num_rows == table.num_rows:
            continue
        buffer = io.BytesIO()
        pa.parquet.write_table(kept, buffer)
        before = store.get_bytes(key)
        change = {
            "workDir": work_dir,
            "key": key,
            "rowsBefore": table.num_rows,
            "rowsErased": table.num_rows - kept.num_rows,
            "sha256Before": _sha256(before),
            "newKey": _new_key(key, receipt_id) if kept.num_rows else None,  # no rows left: no new object
            "sha256After": _sha256(buffer.getvalue()) if kept.num_rows else None,
            "old": "deleted",
        }
        if not dry_run:
            if change["newKey"] is not None:
                store.put_bytes(change["newKey"], buffer.getvalue(), overwrite=False)
            try:
                store.delete(key)
            except Exception as e:  # Object Lock, a legal hold: storage policy decides
                change["old"] = "retained"
                change["note"] = f"deleting the old object was refused: {type(e).__name__}: {e}"[:500]
        changes.append(change)
    derived = []
    for split in ("train", "validation"):
        for key in sorted(store.list(f"{work_dir}/prepare/{split}/")):
            derived.append(
                {
                    "workDir": work_dir,
                    "key": key,
                    "object": "deleted",
                    "why": "token blocks packed from erased documents",
                }
            )
            if not dry_run:
                store.delete(key)
    return changes, derived


# -- the receipt ---------------------------------------------------------------------------------


def receipt_id(now: dt.datetime) -> str:
    return f"er-{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def receipt_key(rid: str) -> str:
    return f"erasures/{rid}/receipt.json"


def plan_key(rid: str) -> str:
    """What a run will do, written before it changes anything; the receipt follows when it is done."""
    return f"erasures/{rid}/plan.json"


def append_audit_record(receipt: dict[str, Any], config: AuditConfig | None = None) -> None:
    """THE place where an erasure enters the audit trail: called once per completed (not dry-run)
    erasure with its receipt. Appends to the trail `LLMOPS_AUDIT` names (llmops/audit.py; nothing when
    unset) one `erasure.completed` record (actor: who requested it; the receipt's id, the subject's
    keyed hash, the totals) and one `erasure.version_affected` record per model version whose training
    data held the subject (model and version set, so `llmops report compliance` lists it). Never the
    identifier itself."""
    config = config or AuditConfig.from_env()
    if config is None:
        return
    log = config.open()
    common = {
        "actor": Actor(type="cli", name=receipt.get("requestedBy") or "unknown"),
        "object": ObjectRef(kind="Erasure", name=receipt["id"]),
        "reason": (receipt.get("reason") or "")[:1024],
        "source": "/llmops/erasure",
    }
    subject = receipt.get("subject") or {}
    totals = {k: v for k, v in (receipt.get("totals") or {}).items() if isinstance(v, int)}
    details = {
        "receipt": receipt_key(receipt["id"]),
        "subjectKind": subject.get("kind"),
        "subjectHash": subject.get("hash"),
        "action": receipt.get("action"),
        **totals,
    }
    log.append(Entry(action="erasure.completed", details=details, **common))
    for version in receipt.get("modelVersions") or []:
        log.append(
            Entry(
                action="erasure.version_affected",
                model=version["name"],
                version=str(version["version"]),
                details={"receipt": receipt_key(receipt["id"]), "trainingJob": version.get("trainingJob")},
                **common,
            )
        )


def erase(
    subject: Subject,
    *,
    key: bytes,
    samples: list[tuple[str, ObjectStore]],
    registry_store: ObjectStore | None,
    receipts: ObjectStore | None,
    models: list[str] | None = None,
    action: Literal["delete", "redact"] = "delete",
    requested_by: str = "",
    reason: str = "",
    dry_run: bool = False,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """Erase `subject` (see the module docstring); returns the receipt (a JSON object), also written
    to `receipts` unless `dry_run`. `samples`: (location uri, store) pairs. Storage errors propagate
    (nothing is written before every read succeeded)."""
    now = now or dt.datetime.now(dt.UTC)
    rid = receipt_id(now)
    scanned = [(uri, store, scan_samples(store, subject)) for uri, store in samples]
    files = [f for _, _, found in scanned for f in found]
    texts = training_texts(files)
    changed = {_sha256(f.data): (uri, f.key) for uri, _, found in scanned for f in found}
    affected = (
        affected_versions(registry_store, changed, {uri for uri, _ in samples}, texts, models)
        if registry_store is not None
        else []
    )
    planned = []
    for uri, store, found in scanned:
        for f in found:
            after = rewritten(f, action)
            left = len(_lines(after))
            change = {
                "location": uri,
                "key": f.key,
                "kind": f.kind,
                "recordsBefore": len(f.records),
                "recordsErased": len(f.erase),
                "sha256Before": _sha256(f.data),
                "sha256After": _sha256(after) if left else None,
                "object": "rewritten" if left else "deleted",
            }
            planned.append((store, f.key, after if left else None, change))
    sample_changes = [change for *_, change in planned]
    receipt: dict[str, Any] = {
        "schema": SCHEMA,
        "id": rid,
        "state": "planned",
        "requestedAt": now.isoformat(timespec="seconds"),
        "completedAt": None,
        "requestedBy": requested_by,
        "reason": reason,
        "dryRun": dry_run,
        "action": action,
        "subject": {
            "kind": subject.kind,
            "path": subject.path or None,
            "hash": subject.hashed(key),
            "keyId": hashlib.sha256(key).hexdigest()[:16],
        },
        "samples": sample_changes,
        "datasets": [],
        "derived": [],
        "modelVersions": [
            {
                "name": a.version.name,
                "version": a.version.version,
                "trainingJob": a.version.lineage.parent_job,
                "workDir": a.work_dir,
                "evidence": a.evidence,
                "decision": None,
                "decisionOptions": list(DECISIONS),
            }
            for a in affected
        ],
    }
    if not dry_run and receipts is not None:  # a run cut short leaves its plan: `list` shows it
        receipts.put_bytes(plan_key(rid), json.dumps(receipt, indent=2).encode(), overwrite=False)
    # Data sets first: they are found through the samples' records, which must still be there when a
    # run cut short is run again.
    datasets, derived = [], []
    if registry_store is not None and texts:
        for work_dir in sorted({a.work_dir for a in affected if a.work_dir}):
            rewritten_sets, deleted = erase_datasets(registry_store, work_dir, texts, rid, dry_run)
            datasets += rewritten_sets
            derived += deleted
    if not dry_run:
        for store, sample_key, after, _ in planned:
            if after is not None:
                store.put_bytes(sample_key, after)
            else:
                store.delete(sample_key)
    receipt.update(
        state="dry-run" if dry_run else "completed",
        completedAt=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        datasets=datasets,
        derived=derived,
        totals={
            "payloadRecords": sum(c["recordsErased"] for c in sample_changes if c["kind"] == "payload"),
            "feedbackRecords": sum(c["recordsErased"] for c in sample_changes if c["kind"] == "feedback"),
            "promptRecords": sum(c["recordsErased"] for c in sample_changes if c["kind"] == "prompt"),
            "datasetRows": sum(c["rowsErased"] for c in datasets),
            "objectsRewritten": sum(c["object"] == "rewritten" for c in sample_changes)
            + sum(c["newKey"] is not None for c in datasets),
            "objectsDeleted": sum(c["object"] == "deleted" for c in sample_changes)
            + sum(c["old"] == "deleted" for c in datasets)
            + len(derived),
            "modelVersions": len(affected),
        },
    )
    if not dry_run:
        if receipts is not None:
            receipts.put_bytes(receipt_key(rid), json.dumps(receipt, indent=2).encode(), overwrite=False)
        append_audit_record(receipt)
    return receipt


def record_decision(
    receipts: ObjectStore,
    rid: str,
    name: str,
    version: str,
    decision: str,
    *,
    by: str,
    justification: str = "",
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """Record the decision on one affected version (create-only); ValueError names what is wrong."""
    if decision not in DECISIONS:
        raise ValueError(f"--decision must be one of {', '.join(DECISIONS)}")
    if decision == "accept-with-justification" and not justification.strip():
        raise ValueError("--justification is required for accept-with-justification")
    receipt = json.loads(receipts.get_bytes(receipt_key(rid)))
    if not any(v["name"] == name and v["version"] == version for v in receipt["modelVersions"]):
        raise ValueError(f"{name}:{version} is not among the model versions of erasure {rid}")
    record = {
        "erasure": rid,
        "name": name,
        "version": version,
        "decision": decision,
        "justification": justification or None,
        "by": by,
        "at": (now or dt.datetime.now(dt.UTC)).isoformat(timespec="seconds"),
    }
    try:
        receipts.put_bytes(
            f"erasures/{rid}/decisions/{name}/{version}.json", json.dumps(record).encode(), overwrite=False
        )
    except ObjectExists:
        raise ValueError(f"a decision on {name}:{version} is already recorded for erasure {rid}") from None
    return record


def receipts_with_decisions(receipts: ObjectStore) -> list[dict[str, Any]]:
    """Every erasure under `receipts`: its receipt with the versions' `decision` filled from the
    recorded decisions, or, for a run cut short, its plan with `state: incomplete` (run it again), or
    `state: superseded` and `supersededBy: <id>` once a later run for the same subject (kind, field
    path and keyed hash) completed. What `llmops report compliance` lists."""
    keys = set(receipts.list("erasures/"))
    found = []
    for rid in sorted({k.split("/")[1] for k in keys if k.count("/") >= 2}):
        if receipt_key(rid) in keys:
            receipt = json.loads(receipts.get_bytes(receipt_key(rid)))
        elif plan_key(rid) in keys:
            receipt = json.loads(receipts.get_bytes(plan_key(rid))) | {"state": "incomplete"}
        else:
            continue
        decided = {}
        for dkey in sorted(k for k in keys if k.startswith(f"erasures/{rid}/decisions/")):
            record = json.loads(receipts.get_bytes(dkey))
            decided[(record["name"], record["version"])] = record
        for v in receipt["modelVersions"]:
            v["decision"] = decided.get((v["name"], v["version"]))
        found.append(receipt)
    for cut in (r for r in found if r.get("state") == "incomplete"):
        later = [
            r["id"]
            for r in found
            if r.get("state") == "completed"
            and r.get("subject") == cut["subject"]
            and r["id"] != cut["id"]
            and r.get("requestedAt", "") >= cut["requestedAt"]
        ]
        if later:
            cut.update(state="superseded", supersededBy=later[0])
    return found


# -- the command ---------------------------------------------------------------------------------


def _user() -> str:
    """Who runs the command: $USER, else the login name of the process (never empty)."""
    import getpass

    try:
        return os.environ.get("USER") or getpass.getuser()
    except Exception:  # no name for the uid (a container): its number
        return f"uid:{os.getuid()}"


@click.group("erasure", cls=Group)
def erasure_group() -> None:
    """Erase one data subject's records (GDPR Art. 17, CCPA); receipts and decisions."""


@erasure_group.command("run")
@click.option("--user", "user", help="The OpenAI `user` field of their requests and feedback.")
@click.option("--api-key-id", "api_key_id", help="The API key's id, as the gateway records it (tenant).")
@click.option(
    "--field", "field_match", metavar="PATH=VALUE", help="A dotted field of the records equal to VALUE."
)
@click.option(
    "--samples",
    "samples",
    multiple=True,
    required=True,
    metavar="URI",
    help="A payloadSampling destination (s3://bucket/prefix or a directory); repeatable.",
)
@click.option(
    "--registry",
    "registry_uri",
    envvar="LLMOPS_REGISTRY",
    metavar="URI",
    help="The registry whose versions and data sets to search [env LLMOPS_REGISTRY].",
)
@click.option("--model", "models", multiple=True, help="Only these registered models (default: all).")
@click.option("--receipts", "receipts_uri", required=True, metavar="URI", help="Where receipts are written.")
@click.option(
    "--key-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="LLMOPS_ERASURE_KEY_FILE",
    required=True,
    help="Secret key of the subject's hash (HMAC-SHA256) [env LLMOPS_ERASURE_KEY_FILE].",
)
@click.option(
    "--action",
    type=click.Choice(["delete", "redact"]),
    default="delete",
    show_default=True,
    help="Drop the subject's lines, or keep them with every string but the operational fields [ERASED].",
)
@click.option("--requested-by", default=_user, help="Who asked (default $USER, else the login name).")
@click.option("--reason", default="", help="The request's reference, e.g. a ticket.")
@click.option("--dry-run", is_flag=True, help="Report what would be erased; write nothing.")
@output_option("text")
@storage_errors
def run_command(
    user,
    api_key_id,
    field_match,
    samples,
    registry_uri,
    models,
    receipts_uri,
    key_file,
    action,
    requested_by,
    reason,
    dry_run,
    output,
) -> None:
    """Find and erase one subject's records; write the receipt.

    With LLMOPS_AUDIT set (the audit trail's location, as the operator's), a completed run is also
    an audit record, with one more per model version whose training data held the subject."""
    given = [x for x in (user, api_key_id, field_match) if x]
    if len(given) != 1:
        raise click.UsageError("give exactly one of --user, --api-key-id, --field PATH=VALUE")
    try:
        if user:
            subject = Subject("user", user)
        elif api_key_id:
            subject = Subject("apiKeyId", api_key_id)
        else:
            path, sep, value = field_match.partition("=")
            if not sep:
                raise ValueError("--field takes PATH=VALUE")
            subject = Subject("field", value, path)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    key = key_file.read_bytes()
    if len(key) < 16:
        raise click.BadParameter("the key file must hold at least 16 bytes", param_hint="--key-file")
    receipt = erase(
        subject,
        key=key,
        samples=[(store.uri, store) for store in (open_uri(u, "--samples") for u in samples)],
        registry_store=open_uri(registry_uri, "--registry") if registry_uri else None,
        receipts=open_uri(receipts_uri, "--receipts", must_exist=False),
        models=list(models) or None,
        action=action,
        requested_by=requested_by,
        reason=reason,
        dry_run=dry_run,
    )
    if output == "json":
        click.echo(json.dumps(receipt, indent=2))
        return
    t = receipt["totals"]
    click.echo(
        f"{'would erase' if dry_run else 'erased'} ({receipt['id']}): {t['payloadRecords']} payload,"
        f" {t['feedbackRecords']} feedback, {t['promptRecords']} prompt records; {t['datasetRows']} data set"
        f" rows; {t['objectsRewritten']} objects rewritten, {t['objectsDeleted']} deleted"
    )
    for v in receipt["modelVersions"]:
        click.echo(f"  decision needed: {v['name']}:{v['version']} (trained by {v['trainingJob']})")
    if not dry_run:
        click.echo(f"receipt: {receipts_uri.rstrip('/')}/{receipt_key(receipt['id'])}")


@erasure_group.command("decide")
@click.argument("rid", metavar="ERASURE_ID")
@click.argument("version_ref", metavar="NAME:VERSION")
@click.option("--decision", type=click.Choice(DECISIONS), required=True, help="What becomes of this version.")
@click.option("--justification", default="", help="Required for accept-with-justification.")
@click.option("--by", default=_user, help="Who decides (default $USER, else the login name).")
@click.option("--receipts", "receipts_uri", required=True, metavar="URI", help="Where the receipts are.")
@storage_errors
def decide_command(rid, version_ref, decision, justification, by, receipts_uri) -> None:
    """Record the decision on one model version an erasure listed."""
    name, _, version = split_ref(version_ref, "NAME:VERSION", "NAME:VERSION")
    try:
        record_decision(
            open_uri(receipts_uri, "--receipts"),
            rid,
            name,
            version,
            decision,
            by=by,
            justification=justification,
        )
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    except FileNotFoundError:
        raise click.ClickException(f"no erasure {rid!r} in the receipts (llmops erasure list)") from None
    click.echo(f"{name}:{version}: {decision}")


@erasure_group.command("list")
@click.option("--receipts", "receipts_uri", required=True, metavar="URI", help="Where the receipts are.")
@output_option("text")
@storage_errors
def list_command(receipts_uri, output) -> None:
    """Every erasure receipt, and the decisions still pending."""
    found = receipts_with_decisions(open_uri(receipts_uri, "--receipts"))
    if output == "json":
        click.echo(json.dumps(found, indent=2))
        return
    for r in found:
        if r["state"] == "superseded":
            done = r["supersededBy"]
            click.echo(
                f"{r['id']}  {r['requestedAt']}  {r['subject']['kind']}  cut short, finished by {done}"
            )
            continue
        if r["state"] != "completed":
            click.echo(f"{r['id']}  {r['requestedAt']}  {r['subject']['kind']}  INCOMPLETE: run it again")
            continue
        pending = [f"{v['name']}:{v['version']}" for v in r["modelVersions"] if v["decision"] is None]
        t = r["totals"]
        records = t["payloadRecords"] + t["feedbackRecords"] + t["promptRecords"]
        click.echo(
            f"{r['id']}  {r['requestedAt']}  {r['subject']['kind']}  {records} records,"
            f" {t['datasetRows']} rows  pending: {', '.join(pending) or 'none'}"
        )
