"""`llmops audit` (read and verify the audit trail), `llmops report compliance` (a model's record) and
`llmops report usage` (a ModelDeployment's use of its replicas, from Prometheus).

    llmops audit verify [--expect-head SHA256]
    llmops audit show [--model NAME] [--version V] [--kind KIND] [--namespace NS] [--since T] [--until T]
    llmops report compliance --model NAME [--namespace NS] [--format markdown|json] [--out FILE]
    llmops report usage --deployment NAME [-n NS] --prometheus URL [--since 1h | --start T [--end T]]
        [--file MANIFEST] [--registry URI] [--format markdown|json] [--out FILE]

The trail's location is `--audit` (s3://bucket/prefix or a directory), default the environment's
`LLMOPS_AUDIT`, the same setting the operator reads (llmops/audit.py AuditConfig: S3 endpoint and
region from the standard AWS variables, credentials from `LLMOPS_AUDIT_AWS_ACCESS_KEY_ID`/`..._SECRET_
ACCESS_KEY` or the standard pair). The report also reads the registry (`--registry`, default
`LLMOPS_REGISTRY`, as `llmops models`). Times (`--since`, `--until`) are ISO 8601 (UTC when no offset
is given) or a duration back from now: `30m`, `24h`, `7d`. The usage report reads the
ModelDeployment from the cluster (the current kubeconfig) or from `--file`, and Prometheus at
`--prometheus` (default `LLMOPS_PROMETHEUS_URL`, the operator's setting); its figures and rules are
llmops/operators/modeldeployment/usage.py's.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import re
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import click

from llmops import command_group
from llmops.audit import AUDIT_ENV, Actor, AuditConfig, AuditError, AuditLog, AuditRecord, Verification
from llmops.command_group import Group
from llmops.registry import (
    MANIFEST,
    ModelVersion,
    RegistryError,
    Tombstone,
    alias_history,
    read_tombstone,
    read_version,
    retired_versions,
    version_prefix,
    versions,
)
from llmops.registry_cli import REGISTRY_ENV, _store, _table, cli_store, location
from llmops.storage import ObjectStore

DURATION = re.compile(r"^(\d+)([smhd])$")


def when(value: str | None, *, now: dt.datetime | None = None, flag: str | None = None) -> dt.datetime | None:
    """`2026-11-30T10:00`, `2026-11-30T10:00+01:00` or `24h` (back from `now`) as an aware datetime.
    Raises click.BadParameter naming `flag` for anything else."""
    if not value:
        return None
    if match := DURATION.match(value.strip()):
        seconds = int(match[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]
        return (now or dt.datetime.now(dt.UTC)) - dt.timedelta(seconds=seconds)
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r}: use ISO 8601 (2026-11-30T10:00) or 30m, 24h, 7d", param_hint=flag
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def open_log(uri: str | None) -> AuditLog:
    try:
        config = AuditConfig.from_env({**dict(os.environ), **({AUDIT_ENV: uri} if uri else {})})
    except AuditError as e:
        raise click.ClickException(str(e)) from None
    if config is None:
        raise click.UsageError(
            f"no audit trail: pass --audit s3://bucket/prefix (or a directory) or set {AUDIT_ENV}"
        )
    try:
        log = config.open()
    except ValueError as e:
        raise click.BadParameter(f"{config.uri!r}: {e}", param_hint="--audit") from None
    if next(iter(log._keys()), None) is None:  # a typo in the location reads as an empty log: say so
        raise click.ClickException(f"{log.uri}: no audit records there (is the location right?)")
    return log


audit_option = click.option(
    "--audit", "audit_uri", metavar="URI", help=f"s3://bucket/prefix or a directory [env {AUDIT_ENV}]"
)
output_option = command_group.output_option("table")
format_option = click.option(  # the reports: a document, not a table
    "--format",
    "fmt",
    type=click.Choice(["markdown", "json"]),
    default="markdown",
    show_default=True,
    help="Markdown for people, or JSON for programs.",
)


def _storage_errors(f: Any) -> Any:
    """Registry and audit errors, and storage failures (command_group.storage_errors): one clear line."""
    import functools

    @functools.wraps(f)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except (RegistryError, AuditError) as e:
            raise click.ClickException(str(e)) from None

    return command_group.storage_errors(run)


@click.group("audit", cls=Group)
def audit_group() -> None:
    """Read and verify the audit trail of lifecycle actions."""


@audit_group.command("verify")
@audit_option
@click.option(
    "--expect-head",
    metavar="SHA256",
    help="A head hash noted earlier (or its first 12+ hex digits, as an Event's [audit N hash] says): the"
    " chain must contain it.",
)
@output_option
@_storage_errors
def verify_command(audit_uri: str | None, expect_head: str | None, output: str) -> None:
    """Check the whole hash chain; exit status 1 when it is broken."""
    log = open_log(audit_uri)
    try:
        result = log.verify(expect_head=expect_head)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--expect-head") from None
    if output == "json":
        click.echo(json.dumps({"location": log.uri, **result.to_dict()}, indent=2))
    elif result.ok:
        click.echo(f"{log.uri}: {result.count} records, chain intact, head {result.head}")
    elif result.problem.startswith("no record has the expected head"):
        click.echo(
            f"{log.uri}: {result.count} records intact, but {result.problem}: records after it were"
            f" cut off or rewritten; the head now is {result.head}"
        )
    else:
        click.echo(
            f"{log.uri}: chain BROKEN at record {result.broken_at}: {result.problem}\n"
            f"{result.count} records intact before it, last intact hash {result.head}"
        )
    if not result.ok:
        sys.exit(1)


def _actor(actor: Actor) -> str:
    """An audit actor as the reports write it: `type:name`, and `for PERSON` when on someone's behalf."""
    return f"{actor.type}:{actor.name}" + (f" for {actor.on_behalf_of}" if actor.on_behalf_of else "")


def _row(r: AuditRecord) -> list[str]:
    d = r.data
    actor = _actor(d.actor)
    target = f"{d.model}:{d.version}" if d.model and d.version else d.model or "-"
    return [str(d.sequence), r.time[:19] + "Z", actor, d.action, r.subject, target,
            str(d.details.get("message") or d.reason)[:80]]  # fmt: skip


@audit_group.command("show")
@audit_option
@click.option("--model", help="Records of this model.")
@click.option("--version", "version", help="Records of this version (with --model, of that model's).")
@click.option("--kind", help="Records of objects of this kind (TrainingJob, ModelDeployment, Alias, ...).")
@click.option("--namespace", help="Records of objects in this namespace.")
@click.option("--since", help="From this time (ISO 8601, or 30m, 24h, 7d back from now).")
@click.option("--until", help="Before this time.")
@output_option
@_storage_errors
def show_command(
    audit_uri: str | None,
    model: str | None,
    version: str | None,
    kind: str | None,
    namespace: str | None,
    since: str | None,
    until: str | None,
    output: str,
) -> None:
    """List the records that match every filter, oldest first."""
    records = open_log(audit_uri).records(
        model=model,
        version=version,
        kind=kind,
        namespace=namespace,
        since=when(since, flag="--since"),
        until=when(until, flag="--until"),
    )
    if output == "json":
        click.echo(json.dumps([r.document() for r in records], indent=2, ensure_ascii=False))
        return
    headers = ["SEQ", "TIME", "ACTOR", "ACTION", "OBJECT", "MODEL", "MESSAGE"]
    click.echo(_table(headers, [_row(r) for r in records]))


def _emit(text: str, out: str | None) -> None:
    """`text` to stdout, or to the file `out` (its folder made if it is not there yet: `--out`)."""
    if not out:
        click.echo(text, nl=False)
        return
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(text)


# -- the compliance report ----------------------------------------------------------------------------


def erasure_requests(
    log: AuditLog | None, name: str, receipts: ObjectStore | None = None
) -> list[dict[str, Any]]:
    """Erasure requests that concern `name`: the audit records whose action starts with "erasure." and
    name the model. With `receipts` (where `llmops erasure` wrote its receipts), each
    `erasure.version_affected` record carries `decision`: the decision recorded on that version
    (`llmops erasure decide`: retrain-without, accept-with-justification or retire, with who and
    when), or None while it is pending."""
    if log is None:
        return []
    found = [r.document()["data"] for r in log.records(model=name) if r.data.action.startswith("erasure.")]
    if receipts is None:
        return found
    from llmops.erasure import receipts_with_decisions

    decided = {
        (r["id"], v["name"], str(v["version"])): v["decision"]
        for r in receipts_with_decisions(receipts)
        for v in r.get("modelVersions") or []
    }
    for record in found:
        if record["action"] == "erasure.version_affected":
            rid = (record.get("object") or {}).get("name")
            record["decision"] = decided.get((rid, record.get("model"), record.get("version")))
    return found


def archived_manifest(tombstone: Tombstone) -> dict[str, Any]:
    """A retired version's lineage, gates and metrics from the manifest in its archive (the tombstone
    names the archive), when it reads back with the sha256 the tombstone recorded; else why not. S3
    access through the standard AWS environment, as every command."""
    key = f"{version_prefix(tombstone.name, tombstone.version)}/{MANIFEST}"
    try:
        raw = cli_store(location(tombstone.archive_location)).get_bytes(key)
    except Exception as e:  # unreachable, no access, no such object: the report says so
        return {"archiveError": f"{tombstone.archive_location}/{key}: {type(e).__name__}: {e}"[:500]}
    digest = hashlib.sha256(raw).hexdigest()
    if digest != tombstone.manifest_sha256:
        problem = f"{key} in the archive has sha256 {digest}, the tombstone says {tombstone.manifest_sha256}"
        return {"archiveError": problem}
    manifest = ModelVersion.model_validate_json(raw)
    return {
        "manifestSource": "archive",
        "createdAt": manifest.created_at,
        "manifestSha256": digest,
        "artifacts": len(manifest.artifacts),
        "lineage": manifest.lineage.model_dump(by_alias=True, mode="json", exclude_none=True),
        "gates": [g.model_dump(by_alias=True, mode="json") for g in manifest.gates],
        "metrics": manifest.metrics,
    }


def serving_windows(records: list[AuditRecord]) -> list[dict[str, Any]]:
    """Where and when each version served: from each `modeldeployment.rolled_out` record to the
    `modeldeployment.serving_stopped` of the same deployment and version (open when none yet)."""
    windows: list[dict[str, Any]] = []
    open_: dict[tuple[str, str | None], dict[str, Any]] = {}
    for r in records:
        key = (r.subject, r.data.version)
        if r.data.action == "modeldeployment.rolled_out" and key not in open_:
            open_[key] = {"version": r.data.version, "deployment": r.subject, "from": r.time, "until": None,
                          "firstRecord": r.data.sequence}  # fmt: skip
            windows.append(open_[key])
        elif r.data.action == "modeldeployment.serving_stopped" and key in open_:
            open_.pop(key)["until"] = r.time
    return windows


@dataclasses.dataclass
class ComplianceReport:
    model: str
    namespace: str | None
    generated_at: str
    registry: str
    audit: str | None
    verification: dict[str, Any] | None
    versions: list[dict[str, Any]]
    alias_history: list[dict[str, Any]]
    erasure_requests: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, camelCase as every other llmops document."""
        from pydantic.alias_generators import to_camel

        return {to_camel(k): v for k, v in dataclasses.asdict(self).items()}


def compliance_report(
    store: ObjectStore,
    log: AuditLog | None,
    name: str,
    namespace: str | None = None,
    receipts: ObjectStore | None = None,
) -> ComplianceReport:
    """A model's record: every version's lineage (data sources with hashes, preparation and PII
    statistics as recorded, gates, evaluation metrics, baseline), its tombstone if retired, where and
    when it served (audit records, filtered to `namespace` when given), the alias history, erasure
    requests (with the decisions recorded under `receipts`, when given) and the audit chain's
    verification."""
    records = log.records(model=name, namespace=namespace) if log is not None else []
    windows = serving_windows(records)
    found = []
    every = set(versions(store, name)) | set(retired_versions(store, name))
    for version in sorted(every, key=lambda v: (not v.isdigit(), int(v) if v.isdigit() else 0, v)):
        entry: dict[str, Any] = {"version": version}
        tombstone = read_tombstone(store, name, version)
        try:
            manifest = read_version(store, name, version)
            raw = store.get_bytes(f"{version_prefix(name, version)}/{MANIFEST}")
            entry |= {
                "createdAt": manifest.created_at,
                "manifestSha256": hashlib.sha256(raw).hexdigest(),
                "artifacts": len(manifest.artifacts),
                "lineage": manifest.lineage.model_dump(by_alias=True, mode="json", exclude_none=True),
                "gates": [g.model_dump(by_alias=True, mode="json") for g in manifest.gates],
                "metrics": manifest.metrics,
            }
        except RegistryError as e:
            if tombstone is None:
                entry["manifestError"] = str(e)
            else:  # retired: the manifest as archived, checked against the tombstone's digest
                entry |= archived_manifest(tombstone)
        entry["tombstone"] = tombstone.model_dump(by_alias=True, mode="json") if tombstone else None
        entry["served"] = [w for w in windows if w["version"] == version]
        entry["auditRecords"] = sum(1 for r in records if r.data.version == version)
        entry["registeredBy"] = next(
            (_actor(r.data.actor) for r in records
             if r.data.action == "modelversion.registered" and r.data.version == version),
            None,
        )  # fmt: skip
        found.append(entry)
    verification: Verification | None = log.verify() if log is not None else None
    return ComplianceReport(
        model=name,
        namespace=namespace,
        generated_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        registry=store.uri,
        audit=log.uri if log is not None else None,
        verification=verification.to_dict() if verification is not None else None,
        versions=found,
        alias_history=[m.model_dump(by_alias=True, mode="json") for m in alias_history(store, name)],
        erasure_requests=erasure_requests(log, name, receipts),
    )


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown(report: ComplianceReport) -> str:
    """The report for people: Markdown with one section per version."""
    lines = [f"# Compliance report: {report.model}", ""]
    lines += [f"- Generated: {report.generated_at}", f"- Registry: `{report.registry}`"]
    if report.namespace:
        lines.append(f"- Namespace: {report.namespace}")
    v = report.verification
    if v is None:
        lines.append("- Audit trail: not configured (no serving history; pass --audit or set LLMOPS_AUDIT)")
    elif v["ok"]:
        lines.append(
            f"- Audit trail: `{report.audit}`, {v['count']} records, chain intact, head `{v['head']}`"
        )
    else:
        lines.append(
            f"- Audit trail: `{report.audit}`, chain **BROKEN** at record {v['brokenAt']}: {v['problem']}"
        )
    for entry in report.versions:
        lines += ["", f"## Version {entry['version']}", ""]
        if "manifestError" in entry:
            lines.append(f"- Manifest: unreadable ({entry['manifestError']})")
        elif "lineage" not in entry:
            lines.append(
                "- Retired: its manifest was deleted behind the tombstone below; the archive's copy could not"
                f" be read: {entry.get('archiveError', 'not looked for')}"
            )
        else:
            lineage = entry["lineage"]
            if entry.get("manifestSource") == "archive":
                lines.append(
                    "- Retired: lineage, gates and metrics from the archived manifest"
                    " (sha256 as the tombstone's)"
                )
            job = f" (TrainingJob `{lineage['parentJob']}`)" if lineage.get("parentJob") else ""
            lines += [
                f"- Registered: {entry['createdAt']} by `{entry.get('registeredBy') or '-'}`{job},"
                f" manifest sha256 `{entry['manifestSha256']}`, {entry['artifacts']} artifacts",
                f"- Base: {lineage.get('baseModel', '-')}, method {lineage.get('method', '-')},"
                f" data digest `{lineage.get('dataDigest', '-')}`",
            ]
            sources = lineage.get("data") or []
            if sources:
                lines += ["", "| data source | rows | sha256 |", "|---|---|---|"]
                lines += [f"| {_cell(s.get('uri') or s.get('name') or '-')} | {_cell(s.get('rows', '-'))} |"
                          f" `{_cell(s.get('sha256', '-'))}` |" for s in sources]  # fmt: skip
            if lineage.get("preparation"):
                lines += [
                    "",
                    "Preparation (rows kept and removed, PII handling): "
                    f"`{json.dumps(lineage['preparation'], sort_keys=True)}`",
                ]
            if entry["gates"]:
                lines += ["", "| gate | value | threshold | passed |", "|---|---|---|---|"]
                lines += [
                    f"| {g['metric']} {g['operator']} | {g.get('value')} | {g['threshold']} | {g['passed']} |"
                    for g in entry["gates"]
                ]
            if entry["metrics"]:
                lines += [
                    "",
                    "Evaluation: " + ", ".join(f"{k} {v}" for k, v in sorted(entry["metrics"].items())),
                ]
        if t := entry["tombstone"]:
            kept = (
                f", retained until {t['retainUntil']} ({t.get('lockMode')})" if t.get("retainUntil") else ""
            )
            lines += [
                "",
                f"Retired at {t['at']} by {_cell(t['by'])} ({_cell(t['reason'])}); archive"
                f" `{t['archiveLocation']}`{kept}, manifest sha256 `{t['manifestSha256']}`",
            ]
        lines.append("")
        if entry["served"]:
            lines += ["| served by | from | until |", "|---|---|---|"]
            lines += [f"| {w['deployment']} | {w['from']} | {w['until'] or 'now'} |" for w in entry["served"]]
        else:
            lines.append("Served: no record of serving.")
    lines += ["", "## Alias history", ""]
    if report.alias_history:
        lines += ["| at | alias | from | to | by | reason |", "|---|---|---|---|---|---|"]
        lines += [
            f"| {m['at']} | {m['alias']} | {m.get('previous') or '-'} | {m['version']} |"
            f" {_cell(m['by'])} | {_cell(m['reason'])} |"
            for m in report.alias_history
        ]
    else:
        lines.append("No alias moves recorded.")
    lines += ["", "## Erasure requests", ""]
    affected = [e for e in report.erasure_requests if e["action"] == "erasure.version_affected"]
    if not report.erasure_requests:
        lines.append("None recorded.")
    elif not affected:
        lines.append(f"{len(report.erasure_requests)} recorded; none concerned a version's training data.")
    else:
        lines += ["| erasure | at | version | decision |", "|---|---|---|---|"]
        for e in affected:
            d = e.get("decision", "not read (pass --receipts)")
            if isinstance(d, dict):
                d = f"{d['decision']} by {d['by']} at {d['at']}" + (
                    f": {d['justification']}" if d.get("justification") else ""
                )
            rid = (e.get("object") or {}).get("name")
            lines.append(f"| {rid} | {e.get('time', '')} | {e.get('version')} | {_cell(d or 'pending')} |")
    return "\n".join(lines) + "\n"


@click.group("report", cls=Group)
def report_group() -> None:
    """Reports over the registry and the audit trail."""


@report_group.command("compliance")
@click.option("--model", "name", required=True, help="The registered model.")
@click.option("--namespace", help="Only serving in this namespace.")
@click.option(
    "--registry",
    envvar=REGISTRY_ENV,
    metavar="URI",
    help=f"s3://bucket/prefix or a directory [env {REGISTRY_ENV}]",
)
@audit_option
@format_option
@click.option(
    "--out", type=click.Path(dir_okay=False, writable=True), help="Write it to this file, not stdout."
)
@click.option(
    "--receipts",
    "receipts_uri",
    metavar="URI",
    help="Where `llmops erasure` wrote its receipts: each affected version's decision joins the report.",
)
@_storage_errors
def compliance_command(
    name: str,
    namespace: str | None,
    registry: str | None,
    audit_uri: str | None,
    fmt: str,
    out: str | None,
    receipts_uri: str | None,
) -> None:
    """A model's compliance record, from the registry, the audit trail and the erasure receipts.

    Lineage, gates, evaluations, serving, aliases, erasures and their decisions, audit verification."""
    from llmops.registry_cli import open_uri

    store = _store(registry)
    log = open_log(audit_uri) if (audit_uri or dict(os.environ).get(AUDIT_ENV)) else None
    receipts = open_uri(receipts_uri, "--receipts") if receipts_uri else None
    report = compliance_report(store, log, name, namespace, receipts)
    if not report.versions:  # a typo in the name or the registry reads as an empty record: say so
        raise click.ClickException(f"model {name!r} has no version, live or retired, in {store.uri}")
    text = (
        json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n"
        if fmt == "json"
        else markdown(report)
    )
    _emit(text, out)


# -- the usage report ---------------------------------------------------------------------------------

PROMETHEUS_ENV = "LLMOPS_PROMETHEUS_URL"  # the operator's setting (operators/modeldeployment/plan.py)


def read_modeldeployment(name: str, namespace: str, path: str | None) -> Any:
    """The ModelDeployment's spec: from the manifest at `path` (YAML or JSON, the object as applied),
    else from the cluster of the current kubeconfig. One-line ClickException for what is missing."""
    import yaml
    from pydantic import ValidationError

    from llmops.api import GROUP, MODEL_DEPLOYMENT, VERSION
    from llmops.api.modeldeployment import ModelDeploymentSpec

    if path is not None:
        try:
            with open(path) as f:
                documents = [d for d in yaml.safe_load_all(f) if isinstance(d, dict)]
        except (OSError, yaml.YAMLError) as e:
            raise click.BadParameter(f"{path}: {e}", param_hint="--file") from None
        held = [d for d in documents if d.get("kind") == MODEL_DEPLOYMENT.kind]
        names = [str((d.get("metadata") or {}).get("name")) for d in held]
        found = [d for d, n in zip(held, names, strict=True) if n == name]
        if not found:
            there = f"its ModelDeployments: {', '.join(names)}" if names else "it holds none"
            raise click.BadParameter(
                f"{path} holds no ModelDeployment named {name!r} ({there})", param_hint="--file"
            )
        # Of several of that name (a file for many namespaces), the one in --namespace, else the first.
        obj = next((d for d in found if (d.get("metadata") or {}).get("namespace") == namespace), found[0])
    else:
        from kubernetes import client

        from llmops import kubeconfig

        cluster = kubeconfig.connect()
        with cluster.talking(f"ModelDeployment {namespace}/{name}"):
            api = client.CustomObjectsApi(cluster.api)
            obj = api.get_namespaced_custom_object(GROUP, VERSION, namespace, MODEL_DEPLOYMENT.plural, name)
    try:
        return ModelDeploymentSpec.model_validate(obj.get("spec") or {})
    except ValidationError as e:
        from llmops.registry import problems

        raise click.ClickException(
            f"ModelDeployment {namespace}/{name}: {problems(e, most=9, under='spec')}"
        ) from None


@report_group.command("usage")
@click.option("--deployment", "name", required=True, help="The ModelDeployment.")
@click.option("-n", "--namespace", default="default", show_default=True, help="Namespace of --deployment.")
@click.option(
    "--prometheus",
    "prometheus_url",
    envvar=PROMETHEUS_ENV,
    required=True,
    metavar="URL",
    help=f"Prometheus that scrapes the deployment, http://host:9090 [env {PROMETHEUS_ENV}]",
)
@click.option(
    "--since", default="1h", show_default=True, help="Window start: 30m, 24h, 7d back, or ISO 8601."
)
@click.option("--start", help="Window start (ISO 8601; overrides --since).")
@click.option("--end", help="Window end (ISO 8601 or a duration back from now; default now).")
@click.option(
    "--file",
    "path",
    type=click.Path(dir_okay=False),
    help="Read the ModelDeployment from this manifest instead of the cluster.",
)
@click.option(
    "--registry",
    envvar=REGISTRY_ENV,
    metavar="URI",
    help=f"Look there for compressed versions that passed their gates [env {REGISTRY_ENV}]",
)
@format_option
@click.option(
    "--out", type=click.Path(dir_okay=False, writable=True), help="Write it to this file, not stdout."
)
@_storage_errors
def usage_command(
    name: str,
    namespace: str,
    prometheus_url: str,
    since: str,
    start: str | None,
    end: str | None,
    path: str | None,
    registry: str | None,
    fmt: str,
    out: str | None,
) -> None:
    """A ModelDeployment's usage from Prometheus, and a recommendation.

    GPU-hours, tokens per GPU-second, utilisation, time above and below the autoscaler's targets, and
    a recommendation (replica bounds, gpuMemoryUtilization, gated compressed versions). Figures:
    llmops/operators/modeldeployment/usage.py."""
    from llmops.operators.modeldeployment import usage
    from llmops.operators.prometheus import Prometheus

    now = dt.datetime.now(dt.UTC)
    first = when(start or since, now=now, flag="--start" if start else "--since") or now
    last = when(end, now=now, flag="--end") or now
    if urllib.parse.urlsplit(prometheus_url).scheme not in ("http", "https"):
        raise click.BadParameter(
            f"{prometheus_url!r}: give its URL with the scheme, http://host:9090", param_hint="--prometheus"
        )
    if last <= first:
        raise click.BadParameter(
            f"the window ends ({last.isoformat()}) before it starts ({first.isoformat()})"
        )
    try:
        usage.selector(namespace, name)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    spec = read_modeldeployment(name, namespace, path)
    store = _store(registry) if registry else None
    try:
        report = usage.collect(
            Prometheus(prometheus_url),
            spec,
            namespace=namespace,
            name=name,
            start=first,
            end=last,
            store=store,
        )
    except usage.UsageError as e:
        raise click.ClickException(str(e)) from None
    text = (
        report.model_dump_json(by_alias=True, indent=2) + "\n"
        if fmt == "json"
        else usage.render_markdown(report)
    )
    _emit(text, out)
