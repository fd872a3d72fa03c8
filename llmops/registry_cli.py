"""`llmops models`: the registry for people. List models and versions, show a version's manifest,
move an alias (recorded, with who and why) and read an alias's history.

    llmops models list
    llmops models versions NAME           (retired versions below, with their tombstones)
    llmops models show NAME:VERSION        (or NAME@ALIAS; a retired version shows its tombstone)
    llmops models alias set NAME ALIAS VERSION --reason TEXT [--by WHO] [--move-id KEY]
    llmops models alias history NAME [ALIAS]
    llmops models import SOURCE NAME       (a checkpoint from the Hub, S3 or a directory, as a version)

Every command takes `--registry` (s3://bucket/prefix, or a directory), default the environment's
`LLMOPS_REGISTRY`; there is no cluster-wide default registry (each ModelDeployment and TrainingJob
names its own `registry`). S3 access uses the standard AWS environment: `AWS_ACCESS_KEY_ID` and
`AWS_SECRET_ACCESS_KEY` (else boto3's own chain: profile, IRSA, instance role), `AWS_ENDPOINT_URL_S3`
or `AWS_ENDPOINT_URL` for an S3-compatible service such as MinIO, `AWS_REGION` or
`AWS_DEFAULT_REGION`. Output is a table for people, or `-o json` for programs.
"""

from __future__ import annotations

import functools
import getpass
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import yaml
from pydantic import ValidationError

from llmops.api.common import ModelReference, ObjectStorageLocation
from llmops.audit import AuditConfig, AuditError
from llmops.command_group import Group, output_option, split_ref, storage_failures
from llmops.registry import (
    AliasMove,
    BrokenRecord,
    Content,
    Lineage,
    ModelVersion,
    RegistryError,
    Tombstone,
    VersionRetired,
    alias_history,
    aliases,
    check_name,
    find_move,
    models,
    move_alias,
    problems,
    read_tombstone,
    read_version,
    register,
    resolve,
    retired_versions,
    version_prefix,
    versions,
)
from llmops.storage import (
    LocalStore,
    ObjectStore,
    S3Store,
    credentials_from_env,
    download_dir,
    explain,
    open_store,
)

REGISTRY_ENV = "LLMOPS_REGISTRY"
# What `models import hf://...` leaves out of a Hub repository: model cards, git metadata and weight
# formats that no server here loads (the Hub's original/ folders hold a second copy of the weights).
HUB_LEFT_OUT = ["*.md", ".gitattributes", "original/*", "*.pth", "*.h5", "*.msgpack", "*.onnx", "*.gguf"]


def location(uri: str, env: dict[str, str] | None = None) -> ObjectStorageLocation:
    """`s3://bucket[/prefix]`, `file:///dir` or a directory path as a registry location; an S3
    endpoint and region from the standard AWS variables of `env` (default: the environment)."""
    env = dict(os.environ) if env is None else env
    if uri.startswith("s3://"):
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
        region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
        s3 = {"bucket": bucket, "prefix": prefix.strip("/") or None, "endpoint": endpoint, "region": region}
        return ObjectStorageLocation.model_validate({"s3": {k: v for k, v in s3.items() if v}})
    if "://" in uri and not uri.startswith("file://"):
        raise click.BadParameter(f"{uri!r}: use s3://bucket/prefix or a directory", param_hint="--registry")
    return ObjectStorageLocation.model_validate(
        {"local": {"path": str(Path(uri.removeprefix("file://")).expanduser().resolve())}}
    )


def open_uri(uri: str, flag: str, *, must_exist: bool = True) -> ObjectStore:
    """The store at `uri` (s3://bucket/prefix or a directory; click.BadParameter naming `flag` when it
    cannot be). A local directory that does not exist is refused when `must_exist` (a reader: a typo
    would read as a location with nothing in it), else created by the first write (a writer)."""
    try:
        where = location(uri)
    except ValidationError as e:  # a bucket name that S3 refuses, say: the field and the rule, one line
        raise click.BadParameter(f"{uri!r}: {problems(e, most=9)}", param_hint=flag) from None
    if must_exist and where.local is not None and not Path(where.local.path).is_dir():
        raise click.BadParameter(f"{uri!r}: no such directory", param_hint=flag)
    return cli_store(where)


def cli_store(where: ObjectStorageLocation) -> ObjectStore:
    """The store at `where` with the environment's credentials, for a command a person waits on:
    each retry of a failing request is told on stderr (`S3Store.on_retry`)."""
    store = open_store(where, credentials_from_env())
    if isinstance(store, S3Store):
        store.on_retry(lambda line: click.echo(line, err=True))
    return store


def _store(uri: str | None, *, must_exist: bool = True) -> ObjectStore:
    if not uri:
        raise click.UsageError(
            f"no registry: pass --registry s3://bucket/prefix (or a directory) or set {REGISTRY_ENV}"
        )
    ctx = click.get_current_context(silent=True)
    from_env = (
        ctx is not None and ctx.get_parameter_source("registry") == click.core.ParameterSource.ENVIRONMENT
    )
    flag = f"{REGISTRY_ENV} (environment)" if from_env else "--registry"
    store = open_uri(uri, flag, must_exist=must_exist)
    if must_exist and isinstance(store, LocalStore) and not (store.root / "models").is_dir():
        click.echo(
            f"warning: {store.root} holds no models/ folder: it may not be a registry (check {flag};"
            " a registry's first `llmops models import` makes it)",
            err=True,
        )
    return store


def _not_blank(value: str | None, flag: str, what: str) -> str | None:
    """`value` unless it is given but blank (a usage error naming `flag` and saying `what` to give)."""
    if value is not None and not value.strip():
        raise click.BadParameter(f"is blank: {what}", param_hint=flag)
    return value


def _command(f: Callable[..., Any] | None = None, *, creates: bool = False, people: str = "table") -> Any:
    """--registry and -o on a sub-command; registry errors and storage errors become one clear line.
    `creates`: the command writes the first version, so a local registry directory that does not
    exist yet is made (other commands refuse it: a typo would read as an empty registry).
    `people`: the -o choice for people ("table", or "yaml" for a nested document)."""
    if f is None:
        return functools.partial(_command, creates=creates, people=people)

    @click.option(
        "--registry",
        "registry",
        envvar=REGISTRY_ENV,
        metavar="URI",
        help=f"s3://bucket/prefix or a directory [env {REGISTRY_ENV}]",
    )
    @output_option(people)
    @functools.wraps(f)
    def run(registry: str | None, output: str, **kwargs: Any) -> None:
        store = _store(registry, must_exist=not creates)
        try:
            with storage_failures(store.uri):  # no access, no bucket, TLS...
                f(store, output, **kwargs)
        except ValidationError as e:  # a model or alias name that is no DNS label
            raise click.ClickException(problems(e, most=9)) from None
        except RegistryError as e:
            raise click.ClickException(str(e)) from None

    return run


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows, strict=False)]
    lines = [headers, *rows]
    return "\n".join(
        "   ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def _json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2))


def _by_version(store: ObjectStore, name: str) -> dict[str, list[str]]:
    named: dict[str, list[str]] = {}
    for alias, version in aliases(store, name).items():
        named.setdefault(version, []).append(alias)
    return named


@click.group("models", cls=Group)
def models_group() -> None:
    """The model registry: models, versions, aliases and their history."""


@models_group.command("list")
@_command
def list_models(store: ObjectStore, output: str) -> None:
    """Every model with its number of versions (and of retired ones), the newest one and its aliases."""
    rows = []
    for name in models(store):
        numbers, retired = versions(store, name), retired_versions(store, name)
        rows.append(
            {
                "name": name,
                "versions": len(numbers),
                "retired": len(retired),
                "latest": _newest_readable(store, name, numbers),
                "aliases": aliases(store, name),
            }
        )
    if output == "json":
        return _json(rows)
    table = [
        [
            r["name"],
            f"{r['versions']} (+{r['retired']} retired)" if r["retired"] else str(r["versions"]),
            r["latest"] or "-",
            ", ".join(f"{a}={v}" for a, v in r["aliases"].items()),
        ]
        for r in rows
    ]
    click.echo(_table(["NAME", "VERSIONS", "LATEST", "ALIASES"], table))


def _readable(store: ObjectStore, name: str, version: str) -> ModelVersion | None:
    """The manifest of `name`:`version`, or None (said on stderr, the listing goes on) when it is broken."""
    try:
        return read_version(store, name, version)
    except BrokenRecord as e:
        click.echo(f"warning: {e}", err=True)
        return None


def _newest_readable(store: ObjectStore, name: str, numbers: list[str]) -> str | None:
    """The newest of `numbers` whose manifest reads, as `NAME@latest` resolves without a latest alias."""
    return next((v for v in reversed(numbers) if _readable(store, name, v)), None)


def _described(manifest: ModelVersion, named: dict[str, list[str]]) -> dict[str, Any]:
    """A version as `-o json` gives it in every command (show, versions, import): its manifest and
    `aliases`, the aliases naming it (`named`: version -> aliases, `_by_version`)."""
    return {**manifest.model_dump(by_alias=True, mode="json"), "aliases": named.get(manifest.version, [])}


def _retired(tombstone: Tombstone) -> dict[str, Any]:
    return {"version": tombstone.version, "retired": tombstone.model_dump(by_alias=True, mode="json")}


@models_group.command("versions")
@click.argument("name")
@_command
def list_versions(store: ObjectStore, output: str, name: str) -> None:
    """The versions of NAME, oldest first, with their gates and aliases; then the retired ones.

    A retired version is listed with its tombstone: when, who, why, where the archive is."""
    numbers = versions(store, name)
    tombstones = [t for v in retired_versions(store, name) if (t := read_tombstone(store, name, v))]
    if not numbers and not tombstones:
        raise RegistryError(f"model {name!r} has no versions in {store.uri}")
    named = _by_version(store, name)
    manifests = [m for v in numbers if (m := _readable(store, name, v))]
    if output == "json":
        return _json([_described(m, named) for m in manifests] + [_retired(t) for t in tombstones])
    rows = []
    for m in manifests:
        gates = "none" if m.ungated else ("passed" if m.gates_passed else "failed")
        rows.append(
            [m.version, m.created_at, gates, m.lineage.parent_job or "", ", ".join(named.get(m.version, []))]
        )
    if rows:
        click.echo(_table(["VERSION", "CREATED", "GATES", "TRAINING JOB", "ALIASES"], rows))
    if tombstones:
        if rows:
            click.echo()
        retired = [
            [t.version, t.at, t.by, t.reason, t.archive_location, t.retain_until or "-"] for t in tombstones
        ]
        click.echo(_table(["RETIRED", "AT", "BY", "REASON", "ARCHIVE", "RETAIN UNTIL"], retired))


@models_group.command("show")
@click.argument("ref", metavar="NAME:VERSION|NAME@ALIAS")
@_command(people="yaml")
def show(store: ObjectStore, output: str, ref: str) -> None:
    """A version's manifest (artifacts, metrics, gates, lineage, content) and the aliases naming it."""
    name, sep, rest = split_ref(ref)
    if sep == ":":
        version = rest
        try:
            manifest = read_version(store, name, version)
        except VersionRetired as e:
            body = _retired(e.tombstone)
            return (
                _json(body)
                if output == "json"
                else click.echo(yaml.safe_dump(body, sort_keys=False).rstrip())
            )
    else:
        manifest = resolve(store, ModelReference(name=name, alias=rest))
    body = _described(manifest, _by_version(store, name))
    if output == "json":
        return _json(body)
    click.echo(yaml.safe_dump(body, sort_keys=False).rstrip())


@models_group.command("verify-archive")
@click.argument("ref", metavar="NAME:VERSION")
@click.option(
    "--archive",
    "archive_uri",
    required=True,
    metavar="URI",
    help="The archive: s3://bucket[/prefix] or a directory.",
)
@_command
def verify_archive_command(store: ObjectStore, output: str, ref: str, archive_uri: str) -> None:
    """Re-hash a version's archive against its receipt; exit status 1 on any problem.

    Every object is read back and hashed with sha256 against the receipt (and, for a retired version,
    the receipt against the registry's tombstone)."""
    from llmops import archive

    name, _, version = split_ref(ref, "NAME:VERSION", "NAME:VERSION")
    target = open_uri(archive_uri, "--archive")  # a directory that is not there is a typo, not an archive
    key = f"{version_prefix(name, version)}/{archive.RECEIPT}"
    if not target.exists(key):
        raise click.ClickException(f"no archive receipt for {name}:{version} in {target.uri} ({key})")
    receipt = archive.read_receipt(target, key)  # ArchiveError (a RegistryError): one line, by _command
    found = archive.verify_archive(target, receipt)
    tombstone = read_tombstone(store, name, version)
    if tombstone is not None and tombstone.manifest_sha256 != receipt.manifest_sha256:
        found.append(
            f"the tombstone's manifest sha256 {tombstone.manifest_sha256} is not the archived one"
            f" {receipt.manifest_sha256}"
        )
    body = {
        "archive": f"{target.uri}/{version_prefix(name, version)}",
        "objects": len(receipt.objects),
        "bytes": sum(o.size for o in receipt.objects),
        "archivedAt": receipt.archived_at,
        "lockMode": receipt.lock_mode,
        "retainUntil": receipt.retain_until,
        "legalHold": receipt.legal_hold,
        "retired": tombstone is not None,
        "problems": found,
    }
    if output == "json":
        _json(body)
    else:
        verdict = "verified" if not found else f"{len(found)} problems"
        click.echo(
            f"{name}:{version} in {body['archive']}: {body['objects']} objects, {body['bytes']} bytes,"
            f" sha256 {verdict}; lock {receipt.lock_mode or 'none'} until {receipt.retain_until or '-'}"
        )
        for problem in found:
            click.echo(f"  {problem}")
    if found:
        raise SystemExit(1)


@models_group.group("alias")
def alias_group() -> None:
    """Move an alias, or read the history of its moves."""


def _user() -> str:
    try:
        return f"user:{os.environ.get('USER') or getpass.getuser()}"
    except OSError:  # no user name anywhere (a bare container)
        return "user:unknown"


def _move_row(m: AliasMove) -> list[str]:
    return [m.at, m.alias, m.previous or "-", m.version, m.by, m.reason]


@alias_group.command("set")
@click.argument("name")
@click.argument("alias")
@click.argument("version")
@click.option("--reason", required=True, help="Why it moves; kept in the alias's history.")
@click.option("--by", default=None, help="Who moves it [default: user:$USER].")
@click.option("--move-id", default=None, help="Idempotency key: a repeat with the same key changes nothing.")
@_command
def set_alias_command(
    store: ObjectStore, output: str, name: str, alias: str, version: str, reason: str, by: str | None,
    move_id: str | None,
) -> None:  # fmt: skip
    """Point ALIAS of model NAME at VERSION, and record who, when, from which version and why.

    With LLMOPS_AUDIT set (the audit trail's location, as the operator's), the move is also an audit
    record (`llmops audit show --kind Alias`)."""
    _not_blank(reason, "--reason", "say why the alias moves (it is kept in the alias's history)")
    _not_blank(by, "--by", "name who moves it, or leave --by out for user:$USER")
    before = aliases(store, name).get(alias)
    done = find_move(store, name, move_id) if move_id else None
    if done is not None and (done.alias, done.version) != (alias, version):
        raise click.ClickException(
            f"move id {move_id!r} already moved {name}@{done.alias} to {done.version} at {done.at}:"
            " pass a new --move-id for a different move"
        )
    try:
        audit = AuditConfig.from_env()  # LLMOPS_AUDIT: the move is also an audit record
    except AuditError as e:
        raise click.ClickException(str(e)) from None
    move = move_alias(
        store, name, alias, version, by=by or _user(), reason=reason, move_id=move_id,
        audit=audit.open() if audit is not None else None,
    )  # fmt: skip
    moved = done is None and not (before == version and move.move_id != move_id)
    if output == "json":
        return _json({**move.model_dump(by_alias=True, mode="json"), "moved": moved})
    if done is not None:
        click.echo(
            f"{name}@{alias}: move {move_id} was already made ({move.previous or '(new)'} -> {move.version}"
            f" by {move.by} at {move.at}): nothing moved"
        )
    elif not moved:
        click.echo(f"{name}@{alias} already names version {version}: nothing moved, nothing recorded")
    else:
        click.echo(f"{name}@{alias}: {move.previous or '(new)'} -> {move.version}  by {move.by} at {move.at}")


@alias_group.command("history")
@click.argument("name")
@click.argument("alias", required=False)
@_command
def history(store: ObjectStore, output: str, name: str, alias: str | None) -> None:
    """Every move of ALIAS (or of every alias of NAME), oldest first."""
    moves = alias_history(store, name, alias)
    if not moves:
        if not versions(store, name) and not retired_versions(store, name):
            raise RegistryError(f"model {name!r} has no versions in {store.uri}")
        if alias is not None:
            named = ", ".join(aliases(store, name)) or "none"
            raise RegistryError(
                f"model {name!r} has no alias {alias!r} in {store.uri} (its aliases: {named})"
            )
    if output == "json":
        return _json([m.model_dump(by_alias=True, mode="json") for m in moves])
    click.echo(_table(["AT", "ALIAS", "FROM", "TO", "BY", "REASON"], [_move_row(m) for m in moves]))


# The files a Hugging Face tokenizer loads from (fast: tokenizer.json; SentencePiece: tokenizer.model;
# byte-level BPE: vocab.json with merges.txt; WordPiece: vocab.txt; tiktoken: *.tiktoken).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "*.tiktoken")


@models_group.command("import")
@click.argument("source")
@click.argument("name")
@click.option("--by", default=None, help="Who imports it [default: user:$USER].")
@_command(creates=True)
def import_command(store: ObjectStore, output: str, source: str, name: str, by: str | None) -> None:
    """Register the checkpoint at SOURCE as the next version of model NAME.

    TrainingJobs (`model.base`: quantize it, distil from it, fine-tune it) and ModelDeployments can
    then name it.

    SOURCE: `hf://org/name[@revision]` (the Hugging Face Hub; HF_TOKEN for gated models),
    `s3://bucket/prefix` (the standard AWS environment, as --registry) or a directory. It must be a
    Hugging Face checkpoint folder: config.json (a model; a quantization_config makes the version a
    quantized one, served with the matching --quantization) or adapter_config.json (a PEFT adapter),
    with its weights (*.safetensors or *.bin, required) and, for vLLM to serve it, its tokenizer files.
    The version records SOURCE as `lineage.baseModel` and has no gates: a ModelDeployment serves it
    only with `spec.allowUngated: true`. With LLMOPS_AUDIT set, the registration is an audit record."""
    import tempfile

    try:
        audit = AuditConfig.from_env()
    except AuditError as e:
        raise click.ClickException(str(e)) from None
    _not_blank(by, "--by", "name who imports it, or leave --by out for user:$USER")
    check_name(name)
    if isinstance(store, LocalStore) and not source.startswith(("hf://", "s3://")):
        src = Path(source.removeprefix("file://")).expanduser().resolve()
        if store.root.resolve() == src or src in store.root.resolve().parents:
            raise click.BadParameter(
                f"{store.root} lies inside SOURCE {src}: the version would copy the registry into itself;"
                " pass a registry outside it",
                param_hint="--registry",
            )
    new = isinstance(store, LocalStore) and not store.root.exists()
    with tempfile.TemporaryDirectory(prefix="llmops-import-") as scratch:
        folder = _checkpoint(source, Path(scratch))
        try:
            content = Content.of_folder(folder)
        except RegistryError as e:
            raise click.ClickException(f"{source}: {e}") from None
        tokenizer = content.kind == "adapter" or any(any(folder.glob(pattern)) for pattern in TOKENIZER_FILES)
        if not source.startswith(("hf://", "s3://")):  # a directory: recorded as an absolute path
            source = str(folder.resolve())
        version = register(
            store, name, folder, metrics={}, gates=[], content=content, by=by or _user(),
            lineage=Lineage(base_model=source, method="import"), audit=audit.open() if audit else None,
        )  # fmt: skip
    if new:
        click.echo(f"created a new registry at {store.root}", err=True)
    if twin := _same_files(store, version):  # allowed (versions are immutable records), but said
        click.echo(
            f"note: {name}:{version.version} holds the same files as {name}:{twin} (both are kept;"
            f" `llmops models alias set {name} ALIAS {twin} --reason TEXT` names an existing version"
            " without a new one)",
            err=True,
        )
    if not tokenizer:  # registered (a tokenizer may come later, by --tokenizer), but said
        click.echo(
            f"note: {source} has no tokenizer files ({', '.join(TOKENIZER_FILES)}): vLLM loads the"
            " tokenizer from the model's folder and will not start without one; import the folder"
            " again with them, or give vLLM one in spec.engine.extraArgs (--tokenizer)",
            err=True,
        )
    if output == "json":
        return _json(_described(version, _by_version(store, name)))
    what = "a PEFT adapter" if content.kind == "adapter" else "a model"
    if content.quantization is not None:
        q = content.quantization
        what += f" quantized ({' '.join(x for x in (q.method, q.format) if x)})"
    click.echo(
        f"registered {name}:{version.version} from {source}: {what}, {len(version.artifacts)} files;"
        " no gates (a ModelDeployment serves it only with spec.allowUngated: true)"
    )


def _same_files(store: ObjectStore, version: ModelVersion, looked_at: int = 20) -> str | None:
    """The newest of the `looked_at` versions before `version` whose artifacts (every path and its
    sha256) are the same as its own, or None."""
    earlier = [v for v in versions(store, version.name) if v != version.version][-looked_at:]
    for v in reversed(earlier):
        try:
            if read_version(store, version.name, v).artifacts == version.artifacts:
                return v
        except RegistryError:  # retired or broken since it was listed: not a twin
            continue
    return None


def _checkpoint(source: str, scratch: Path) -> Path:
    """The local folder that holds SOURCE's files: downloaded from the Hub or S3 into `scratch`, or the
    directory itself."""
    if source.startswith("hf://"):
        repo, _, revision = source.removeprefix("hf://").strip("/").partition("@")
        try:
            from huggingface_hub import snapshot_download
        except ImportError:  # not in the operator image; the training and serving extras have it
            raise click.ClickException(
                f"{source}: downloading from the Hugging Face Hub needs huggingface_hub (pip install"
                " huggingface_hub, or llmops[training]); or download it yourself and import the directory"
            ) from None

        if repo.count("/") != 1 or not all(repo.split("/")):
            raise click.BadParameter(f"{source!r}: name a Hub repository as hf://org/name[@revision]")
        try:
            folder = Path(
                snapshot_download(
                    repo, revision=revision or None, local_dir=scratch, token=os.environ.get("HF_TOKEN"),
                    ignore_patterns=HUB_LEFT_OUT,
                )
            )  # fmt: skip
            shutil.rmtree(folder / ".cache", ignore_errors=True)  # the download's own bookkeeping
            return folder
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise click.ClickException(
                f"{source}: cannot download it from the Hugging Face Hub ({type(e).__name__}: {first});"
                " check the repo name and revision, HF_TOKEN for gated models, and network access"
            ) from None
    if source.startswith("s3://"):
        try:
            bucket_store = cli_store(location(source))
            keys = download_dir(bucket_store, "", scratch)
        except ValueError as e:  # pydantic's: a bucket name S3 refuses
            raise click.BadParameter(f"{source!r}: not an S3 location ({e})", param_hint="SOURCE") from None
        except Exception as e:
            if (failure := explain(e, source, reader="cli")) is not None:
                raise click.ClickException(
                    f"{failure.message} (SOURCE; the command reads S3 with AWS_ACCESS_KEY_ID,"
                    " AWS_SECRET_ACCESS_KEY and AWS_ENDPOINT_URL_S3)"
                ) from None
            raise
        if not keys:
            raise click.ClickException(f"{source}: no object there")
        return scratch
    if "://" in source and not source.startswith("file://"):
        raise click.BadParameter(f"{source!r}: use hf://org/name, s3://bucket/prefix or a directory")
    folder = Path(source.removeprefix("file://")).expanduser()
    if not folder.is_dir():
        raise click.BadParameter(f"{source!r}: no such directory", param_hint="SOURCE")
    return folder
