"""What every stage shares: where the work folder is, how to reach storage, the run report, stage markers.

Storage access travels as `StoreSpec` (a location plus resolved credentials): Ray tasks, Ray Data
and Ray Train workers do not inherit the driver's environment on every cluster, so the driver
resolves credentials once and hands them over explicitly.

Credentials depend on the runtime:
- kuberay (the operator owns the Ray cluster): a connection with `credentialsSecretRef` reads the two
  environment variables the operator sets in every Ray pod from that Secret, by reference, under the
  one convention of every pod (llmops/workload.py): AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY for the
  registry, DATA_AWS_* for spec.data.s3 when its Secret is another; without a ref,
  AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY when set, otherwise boto3's ambient identity (IRSA).
- rayJobsAPI (a shared Ray cluster the operator does not own): the cluster brings its own storage
  access (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in its environment, or its instance identity). The
  operator never sends Secret values to it: a job's runtime_env is readable by anyone who can see the
  Ray dashboard. A `credentialsSecretRef` is then the operator's own access (to read the run report).
Every location is probed when the run starts, so a missing permission fails the job at once with a
message that names the field, the location and where its access comes from.

A stage is done when `stages/<name>.json` exists in the work folder; it is written last, after the
stage's outputs, and holds the stage's summary. A rerun skips done stages.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmops.api.common import ObjectStorageLocation, S3Connection, S3Location
from llmops.api.trainingjob import Progress
from llmops.storage import Credentials, ObjectStore, credentials_from_env, open_store
from llmops.training.errors import UserError
from llmops.workload import (
    REPORT,
    RunReport,
    TrainingRun,
    data_credentials_prefix,
    traffic_credentials_prefix,
)

log = logging.getLogger("llmops.training")


def credentials_for(
    connection: S3Connection | None, what: str, runtime: str = "kuberay", prefix: str = ""
) -> Credentials | None:
    """The credentials the workload uses for `connection` (see the module's docstring for the rules);
    `prefix`: where the operator put this connection's Secret (llmops/workload.py)."""
    if connection is None:
        return None
    ref = connection.credentials_secret_ref
    if ref is None or runtime == "rayJobsAPI":
        return credentials_from_env()
    found = credentials_from_env(prefix)
    if found is None:
        raise UserError(
            f"{what}.credentialsSecretRef: the Ray pods have no {prefix}AWS_ACCESS_KEY_ID and "
            f"{prefix}AWS_SECRET_ACCESS_KEY, which the operator sets from the keys {ref.access_key_id_key} "
            f"and {ref.secret_access_key_key} of Secret {ref.name}: check that the Secret has those keys "
            "(accessKeyIdKey/secretAccessKeyKey name them)"
        )
    return found


def access_source(connection: S3Connection | None, runtime: str) -> str:
    """Where the workload's access to a location comes from, in words, for error messages."""
    ref = connection.credentials_secret_ref if connection else None
    if runtime == "rayJobsAPI":
        return (
            "with runtime rayJobsAPI the shared Ray cluster uses its own storage access "
            "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in its environment, or its instance identity); "
            "the operator never sends Secret values to a cluster it does not own"
            + (f", so Secret {ref.name} serves the operator only" if ref else "")
            + ": give the Ray cluster access to it"
        )
    if ref is not None:
        return f"the access comes from Secret {ref.name}: check its keys and the bucket's policy"
    return "the access comes from the pods' ambient identity (IRSA or AWS_* variables)"


def check_access(store: ObjectStore, what: str, connection: S3Connection | None, runtime: str) -> None:
    """List one key of `store`: raise UserError naming `what` and the access story when refused."""
    try:
        next(iter(store.list("")), None)
    except Exception as e:
        code = getattr(e, "response", {}).get("Error", {}).get("Code") or type(e).__name__
        if code == "NoSuchBucket":
            raise UserError(f"{what}: bucket of {store.uri} does not exist; create it") from None
        raise UserError(
            f"{what}: the job cannot read {store.uri} ({code}); {access_source(connection, runtime)}"
        ) from None


@dataclass(frozen=True)
class StoreSpec:
    """A storage location and its credentials: picklable, opened where it is used."""

    location: ObjectStorageLocation
    credentials: Credentials | None = None

    def open(self) -> ObjectStore:
        return open_store(self.location, self.credentials)

    def child(self, prefix: str) -> StoreSpec:
        """The same storage, `prefix` deeper."""
        prefix = prefix.strip("/")
        if self.location.local:
            path = f"{self.location.local.path.rstrip('/')}/{prefix}"
            return StoreSpec(
                ObjectStorageLocation.model_validate({"local": {"path": path}}), self.credentials
            )
        s3 = self.location.s3
        assert s3 is not None
        joined = f"{s3.prefix.rstrip('/')}/{prefix}" if s3.prefix else prefix
        loc = self.location.model_copy(update={"s3": s3.model_copy(update={"prefix": joined})})
        return StoreSpec(loc, self.credentials)

    def arrow(self) -> tuple[Any, str]:
        """(pyarrow filesystem, base path): Ray Data and Ray Train read and write through pyarrow."""
        from pyarrow import fs

        if self.location.local:
            return fs.LocalFileSystem(), self.location.local.path.rstrip("/")
        s3 = self.location.s3
        assert s3 is not None
        options: dict[str, Any] = {"region": s3.region or "us-east-1"}
        if s3.endpoint:
            scheme, _, host = s3.endpoint.partition("://")
            options.update(endpoint_override=host.rstrip("/"), scheme=scheme)
        if self.credentials:
            options.update(
                access_key=self.credentials.access_key_id, secret_key=self.credentials.secret_access_key
            )
        host = (
            s3.endpoint.partition("://")[2].rstrip("/")
            if s3.endpoint
            else f"s3.{options['region']}.amazonaws.com"
        )
        if proxy := arrow_proxy(options.get("scheme", "https"), host):
            options["proxy_options"] = proxy
        base = f"{s3.bucket}/{s3.prefix.strip('/')}" if s3.prefix else s3.bucket
        return fs.S3FileSystem(**options), base


def arrow_proxy(scheme: str, host: str) -> str | None:
    """The proxy URI for `scheme`://`host` ("host:port") from the standard environment (HTTP_PROXY,
    HTTPS_PROXY, NO_PROXY, either case), or None when there is none or NO_PROXY exempts the host.

    boto3 and requests honour these variables themselves; pyarrow's S3 filesystem (the AWS SDK for
    C++) does not, so `StoreSpec.arrow` passes it as `proxy_options`: Ray Data and Ray Train then reach
    the same endpoints the workload's boto3 calls do. Rules: Python's
    `urllib.request.getproxies_environment` and `proxy_bypass_environment`.
    """
    import urllib.request

    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(scheme)
    if not proxy or urllib.request.proxy_bypass_environment(host, proxies):
        return None
    return proxy


def s3_location(uri: str, connection: S3Connection | None) -> ObjectStorageLocation:
    """An s3://bucket/prefix URI on `connection`'s endpoint, as a location."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    fields: dict[str, Any] = {"bucket": bucket}
    if key.strip("/"):
        fields["prefix"] = key.strip("/")
    if connection is not None:
        fields.update(
            connection.model_dump(include={"endpoint", "region", "credentials_secret_ref", "ca_bundle"})
        )
    return ObjectStorageLocation(s3=S3Location(**fields))


def upload_dir(store: ObjectStore, prefix: str, path: Path) -> None:
    for p in sorted(path.rglob("*")):
        if p.is_file():
            store.upload_file(f"{prefix.strip('/')}/{p.relative_to(path).as_posix()}", p)


class Reporter:
    """Writes the RunReport (report.json in the work folder): the operator turns it into status.

    Picklable, so Ray Train's controller-side progress callback rewrites the same object.
    """

    def __init__(self, work: StoreSpec, report: RunReport | None = None) -> None:
        self.work = work
        self.report = report or RunReport()

    def reload(self) -> None:
        """Pick up what another writer (the training progress callback) put in report.json."""
        try:
            self.report = RunReport.model_validate_json(self.work.open().get_bytes(REPORT))
        except Exception as e:
            log.warning("could not read %s back: %s", REPORT, e)

    def write(self, **changes: Any) -> RunReport:
        import datetime as dt

        progress = changes.pop("progress", None)
        if progress is not None:
            merged = self.report.progress.model_dump() | {
                k: v for k, v in progress.items() if v is not None or k == "eta_seconds"
            }
            changes["progress"] = Progress(**merged)
        changes["updated_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        self.report = self.report.model_copy(update=changes)
        self.report = RunReport.model_validate(self.report.model_dump())  # re-validate merged fields
        try:
            self.work.open().put_bytes(REPORT, self.report.model_dump_json(by_alias=True, indent=2).encode())
        except Exception as e:  # progress must never kill training; the final write is checked by run.py
            log.warning("could not write %s: %s", REPORT, e)
        return self.report


class Context:
    """One run of the workload, as the driver sees it."""

    def __init__(self, run: TrainingRun, scratch: Path | None = None) -> None:
        self.run = run
        self.spec = run.spec
        runtime = run.spec.runtime.type
        work_conn = run.work_dir.s3
        registry = run.spec.output.registry
        self.registry = StoreSpec(registry, credentials_for(registry.s3, "spec.output.registry.s3", runtime))
        # The work folder sits under the registry (llmops/operators/trainingjob): the registry's access.
        self.work = StoreSpec(run.work_dir, credentials_for(work_conn, "spec.output.registry.s3", runtime))
        # s3:// data sources use spec.data.s3, else the registry's endpoint and credentials.
        self.data_connection: S3Connection | None = run.spec.data.s3 or registry.s3
        self.data_credentials = (
            credentials_for(
                run.spec.data.s3, "spec.data.s3", runtime, data_credentials_prefix(run.spec) or ""
            )
            if run.spec.data.s3
            else self.registry.credentials
        )
        check_access(self.work.open(), "spec.output.registry", registry.s3, runtime)
        root = scratch or Path(os.environ.get("LLMOPS_SCRATCH", tempfile.gettempdir())) / "llmops"
        self.scratch = root / run.job.uid
        self.scratch.mkdir(parents=True, exist_ok=True)
        self.store = self.work.open()
        previous = None
        if self.store.exists(REPORT):
            try:
                previous = RunReport.model_validate_json(self.store.get_bytes(REPORT))
            except ValueError:
                previous = None
        # A rerun starts Running again but keeps what earlier attempts measured.
        base = RunReport(
            progress=previous.progress if previous else Progress(),
            metrics=previous.metrics if previous else {},
        )
        self.reporter = Reporter(self.work, base)

    @property
    def job_ref(self) -> str:
        return f"{self.run.job.namespace}/{self.run.job.name}"

    def data_store(self, uri: str) -> tuple[StoreSpec, str]:
        """(store, key) for a data URI: the key is '' when the URI names a folder (trailing /)."""
        if uri.startswith("s3://"):
            bucket_key = uri.removeprefix("s3://")
            bucket, _, key = bucket_key.partition("/")
            return StoreSpec(s3_location(f"s3://{bucket}", self.data_connection), self.data_credentials), key
        path = Path(uri)
        if uri.endswith("/") or path.is_dir():
            return StoreSpec(ObjectStorageLocation.model_validate({"local": {"path": str(path)}})), ""
        return StoreSpec(
            ObjectStorageLocation.model_validate({"local": {"path": str(path.parent)}})
        ), path.name

    def traffic_store(self, index: int) -> StoreSpec:
        """spec.data.sources[index].servedTraffic.location with its credentials: its own Secret's,
        under the prefix llmops/workload.py gives it (the same rules as every location)."""
        traffic = self.spec.data.sources[index].served_traffic
        assert traffic is not None
        s3 = traffic.location.s3
        what = f"spec.data.sources[{index}].servedTraffic.location.s3"
        prefix = traffic_credentials_prefix(self.spec, index) or ""
        credentials = credentials_for(s3, what, self.spec.runtime.type, prefix) if s3 else None
        return StoreSpec(traffic.location, credentials)

    def done(self, stage: str) -> dict[str, Any] | None:
        key = f"stages/{stage}.json"
        return json.loads(self.store.get_bytes(key)) if self.store.exists(key) else None

    def mark_done(self, stage: str, summary: dict[str, Any]) -> dict[str, Any]:
        self.store.put_bytes(f"stages/{stage}.json", json.dumps(summary, indent=2, sort_keys=True).encode())
        return summary

    def put_json(self, key: str, value: Any) -> None:
        self.store.put_bytes(key, json.dumps(value, indent=2, sort_keys=True).encode())

    def get_json(self, key: str) -> Any:
        return json.loads(self.store.get_bytes(key))

    def clear(self, prefix: str) -> None:
        """Remove a stage's partial output before it runs again."""
        for key in list(self.store.list(prefix.strip("/") + "/")):
            self.store.delete(key)
