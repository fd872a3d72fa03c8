"""The operator process: every llmops operator in one kopf process (`llmops operator`)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import kopf
from prometheus_client import start_http_server

from llmops import logsafe
from llmops.api import GROUP, VERSION
from llmops.operators import admission, backlog, runtime
from llmops.operators.apply import Applier
from llmops.operators.auditing import Auditor
from llmops.operators.kube import UPDATE_MANAGER, ApiError, Kube, Unreachable
from llmops.operators.runtime import REQUEUE_FAILED, Kind
from llmops.storage import StoreCache

PREFIX = "llmops.io"


@dataclass(frozen=True)
class WebhookOptions:
    """Where the validating webhook listens and how the apiserver reaches it."""

    port: int = 9443
    # Local runs: the apiserver calls https://<host>:<port>. In a cluster: a Service instead.
    host: str = "127.0.0.1"
    listen: str = "0.0.0.0"
    service: str | None = None  # "namespace/name" of the Service in front of the operator
    config_name: str = "validate.llmops.io"


def identity(kube: Kube) -> str:
    """The user name the apiserver knows this process by (a SelfSubjectReview, Kubernetes 1.28+):
    the actor of the operator's audit records, and whose requests the admission webhook does not stamp
    as a person's. `LLMOPS_OPERATOR_IDENTITY` when the review is not possible."""
    try:
        review = kube.create({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
        return review["status"]["userInfo"]["username"]
    except Exception as e:  # an older apiserver, or no permission: fall back to the configured name
        logging.getLogger(__name__).warning("could not learn the operator's own user name: %s", e)
        return os.environ.get("LLMOPS_OPERATOR_IDENTITY") or "llmops-operator"


def webhook_server(options: WebhookOptions) -> kopf.WebhookServer:
    """A serving certificate signed by a fresh CA; kopf puts the CA into the webhook configuration."""
    from llmops import certs  # cryptography (about 7 MiB): only an operator that serves the webhook

    tmp = Path(tempfile.mkdtemp(prefix="llmops-webhook-"))
    names = [options.host]
    if options.service:
        ns, name = options.service.split("/", 1)
        names += [f"{name}.{ns}.svc", f"{name}.{ns}.svc.cluster.local"]
    ca_cert, ca_key = certs.new_ca("llmops-webhook-ca", days=365)
    cert, key = certs.issue_certificate(ca_cert, ca_key, certs.common_name(names[-1]), server_names=names)
    (tmp / "ca.crt").write_bytes(certs.pem(ca_cert))
    (tmp / "tls.crt").write_bytes(certs.pem(cert))
    certs.write_key(tmp / "tls.key", key)
    common = {
        "addr": options.listen,
        "port": options.port,
        "host": options.host,
        "cafile": tmp / "ca.crt",
        "certfile": tmp / "tls.crt",
        "pkeyfile": tmp / "tls.key",
    }
    if options.service:
        ns, name = options.service.split("/", 1)
        return admission.ServiceWebhookServer(service_namespace=ns, service_name=name, **common)
    return kopf.WebhookServer(**common)


class DigestDiffBaseStorage(kopf.StatusDiffBaseStorage):
    """kopf's "last handled configuration", kept as a SHA-256 digest of it in
    `status.lastHandledConfiguration` (`llmops.api.common.Status`).

    kopf compares the stored essence (spec, labels, annotations other than its own) with the current
    one to tell a change from a status write. Its default stores the essence itself, a second copy of
    the spec in `metadata.annotations`, which the apiserver caps at 256 KiB in all: an object near its
    CRD's size bounds is accepted, and then every patch that carries the copy is refused. Our reconcile
    is level-based and reads no `diff`/`old`, so a digest tells a change just as well:
    `{"sha256": "<64 hex>"}` whatever the size of the object.

    In the status, not in an annotation: kopf writes its record after the reconcile, together with the
    status the reconcile wrote, in one PATCH of the status subresource (kopf's `patch_obj` sends a
    patch of the object itself only for what lies outside the status). An annotation took a second
    PATCH, of the object, at every handled change, and a second watch event of the object back.
    Versions before this one kept it in the annotation `llmops.io/last-handled-configuration`
    (`legacy`): read from there while the status has none. kopf stores its record only when the
    object has changed, so an object moves at its next change (the record written to both places) and
    the annotation goes at the change after that; an object that never changes keeps its annotation,
    which stays correct.

    `in_status=False` keeps it in that annotation, as before: for CRDs older than this operator,
    whose status schema has no such field (`stale_crds`), where the apiserver would drop it and every
    status write would then look like a new object to kopf.
    """

    def __init__(self, prefix: str, *, in_status: bool = True) -> None:
        super().__init__(field="status.lastHandledConfiguration")
        self.prefix = prefix
        self.in_status = in_status
        self.legacy = f"{prefix}/last-handled-configuration"

    def build(self, *, body: Any, extra_fields: Any = None) -> Any:
        essence = super().build(body=body, extra_fields=extra_fields)
        meta = essence.get("metadata", {})
        annotations = meta.get("annotations", {})
        for key in [k for k in annotations if k.startswith(f"{self.prefix}/")]:
            del annotations[key]  # our own bookkeeping is no change of the object
        if "annotations" in meta and not annotations:
            del meta["annotations"]  # none left: as kopf builds an object with none
        if "metadata" in essence and not meta:
            del essence["metadata"]
        text = json.dumps(essence, sort_keys=True, separators=(",", ":"), default=str)
        return {"sha256": hashlib.sha256(text.encode()).hexdigest()}

    def fetch(self, *, body: Any) -> Any:
        found = super().fetch(body=body) if self.in_status else None
        if found is None:
            legacy = (body.get("metadata", {}).get("annotations") or {}).get(self.legacy)
            found = json.loads(legacy) if legacy else None
        return found

    def store(self, *, body: Any, patch: Any, essence: Any) -> None:
        if not self.in_status:
            patch.meta.annotations[self.legacy] = json.dumps(essence, separators=(",", ":"))
            return
        super().store(body=body, patch=patch, essence=essence)
        if self.legacy in (body.get("metadata", {}).get("annotations") or {}):
            if super().fetch(body=body) is None:  # not in the status yet: both, until it is there
                patch.meta.annotations[self.legacy] = json.dumps(essence, separators=(",", ":"))
            else:
                patch.meta.annotations[self.legacy] = None  # moved to the status: deleted here


def stale_crds(kube: Kube, kinds: list[Kind]) -> list[str]:
    """The CRDs of `kinds` whose served version's status schema lacks `lastHandledConfiguration`
    (installed by an earlier release: Helm never upgrades CRDs), or that are not installed, by name.
    Raises kopf.TemporaryError when the apiserver does not answer (the startup handler is retried)."""
    stale = []
    for kind in kinds:
        name = f"{kind.resource.plural}.{GROUP}"
        try:
            found = kube.list(
                "apiextensions.k8s.io/v1", "CustomResourceDefinition", field_selector=f"metadata.name={name}"
            )
        except Exception as e:
            raise kopf.TemporaryError(f"could not read the CRD {name}: {e}", delay=5) from e
        versions = (found[0].get("spec") or {}).get("versions") or [] if found else []
        schema = next((v.get("schema") or {} for v in versions if v.get("name") == VERSION), {})
        status = (schema.get("openAPIV3Schema") or {}).get("properties", {}).get("status") or {}
        if "lastHandledConfiguration" not in (status.get("properties") or {}):
            stale.append(name)
    return stale


class UnmarkedProgressStorage(kopf.AnnotationsProgressStorage):
    """kopf's per-handler progress in annotations under our prefix, without kopf's brand marker.

    kopf adds `<prefix>/kopf-managed: yes` to every object the first time it stores anything for it
    (`_store_marker`). With kopf's record of what it handled in the status (DigestDiffBaseStorage),
    that marker was the only thing kopf wrote outside the status when it handled a new object: a PATCH
    of the object, and its watch event back, for each one (bench/reconcile_scale.py with an audit log,
    2026-12-04). The progress records themselves (a handler being retried) stay where they were.

    The trade-off: the marker is how *another* kopf-based operator watching our kinds (kopf's
    `DiffBaseStorage.build`, `_detect_marked_prefixes`) would learn that `llmops.io/...` annotations
    are bookkeeping, not changes. Without it, such an operator would see one change whenever our
    progress record is written or removed, which happens only while one of our handlers is retried.
    Our own operator strips its prefix itself (DigestDiffBaseStorage.build).
    """

    def _store_marker(self, prefix: str, patch: Any, body: Any) -> None:
        return None


# The most our bookkeeping annotations (kopf's per-handler progress record while a handler is retried;
# the digest above while it is kept in its annotation, `in_status=False`, or an object moves to the
# status) may take of the apiserver's 256 KiB for all of an object's annotations; the rest is the user's
# (tests/cluster/test_operator.py measures it on objects at their CRD bounds).
BOOKKEEPING_BUDGET = 2048


# Connections kopf may open for requests (status patches, Events) beside its watches, which hold
# theirs for as long as they run.
REQUEST_CONNECTIONS = 16

# Objects per page of the initial lists (configure). The pages of one list must all be read before
# etcd compacts past the list's revision (5 to 10 minutes with the apiserver's default
# --etcd-compaction-interval of 5m; a managed etcd may compact on its own schedule); else the next
# page is refused with 410 Expired and the list starts again from its first page
# (wrap_list_and_watch). kopf reads the pages one after another as fast as they come (it queues each
# object for its worker without waiting), so a list of thousands takes seconds. client-go's pager
# asks for 500; a page here holds its objects whole, managedFields included, until kopf has queued
# the last of them, and up to 16 resources are listed at once at start.
LIST_PAGE_SIZE = 100

# Objects of a kind reconciled at once (kopf's `settings.queueing.worker_limit`, set in configure);
# the objects beyond it wait outside kopf, compressed (backlog.Backlog).
WORKER_LIMIT = 250
# The resources whose objects wait outside kopf beyond its places, as (group, version, plural): the
# kinds' own (configure adds them; every other child's events go to its watch: DIRECT). Not kopf's
# own watches of CustomResourceDefinitions and Namespaces, whose processing skips a listing's events
# (type None), which a held event of a listed object stays.
GATED: set[tuple[str, str, str]] = set()
# The resources of which only the deletions count (runtime.deletions_only; configure adds them).
DELETIONS_ONLY: set[tuple[str, str, str]] = set()
# The resources whose events go straight to their child watches, none to kopf (runtime.direct_children;
# configure adds them).
DIRECT: set[tuple[str, str, str]] = set()


def connection_limit(kinds: list[Kind]) -> int:
    """Connections for kopf's session: one per resource it can watch (every kind, every kind of child,
    and kopf's own watch of CustomResourceDefinitions and Namespaces) plus REQUEST_CONNECTIONS. A
    smaller limit would let the watches take every connection and leave the requests waiting."""
    return len(runtime.watched_resources(kinds)) + 2 + REQUEST_CONNECTIONS


def kubeconfig_login(settings: kopf.OperatorSettings) -> kopf.ConnectionInfo | None:
    """kopf's credentials from the kubeconfig as every client of ours reads it (`kubeconfig.read`:
    a list merged by kubectl's rules, missing files skipped, relative file paths resolved against
    their own file, the files an entry names checked), or None when there is no kubeconfig at all.
    In place of kopf's `login_with_kubeconfig`, which resolves relative paths against the working
    directory and fails on a listed file that does not exist, so that kopf and lightkube could see
    different clusters. The fields map as kopf maps them; a `tokenFile` is read, as kubectl reads it.
    Raises click.ClickException (one line) for a kubeconfig that is there but wrong."""
    from llmops import kubeconfig

    if not any(os.path.exists(os.path.expanduser(p)) for p in kubeconfig.location().split(os.pathsep) if p):
        return None
    _, merged, name = kubeconfig.read()
    context = kubeconfig.entry(merged, "contexts", name) or {}
    cluster = kubeconfig.entry(merged, "clusters", context.get("cluster")) or {}
    user = kubeconfig.entry(merged, "users", context.get("user")) or {}
    token = user.get("token") or (user.get("auth-provider") or {}).get("config", {}).get("access-token")
    if not token and user.get("tokenFile"):
        token = Path(user["tokenFile"]).read_text().strip()
    return kopf.ConnectionInfo(
        server=cluster.get("server"),
        ca_path=cluster.get("certificate-authority"),
        ca_data=cluster.get("certificate-authority-data"),
        insecure=cluster.get("insecure-skip-tls-verify"),
        certificate_path=user.get("client-certificate"),
        certificate_data=user.get("client-certificate-data"),
        private_key_path=user.get("client-key"),
        private_key_data=user.get("client-key-data"),
        username=user.get("username"),
        password=user.get("password"),
        token=token,
        default_namespace=context.get("namespace"),
        proxy_url=cluster.get("proxy-url"),
        trust_env=settings.networking.trust_env,
        priority=10,  # kopf's own for a kubeconfig (PRIORITY_OF_KUBECONFIG)
    )


def bounded_session(info: kopf.ConnectionInfo, limit: int) -> kopf.AiohttpSession:
    """kopf's own session for `info`, with at most `limit` connections open at once.

    kopf's default session pools connections without a limit (`aiohttp.TCPConnector(limit=0)`):
    1,000 objects reconciled at once left it with over a hundred TLS connections, each holding a read
    buffer in asyncio's SSL protocol (small_tls_read_buffers) and OpenSSL's own state
    (bench/reconcile_scale.py --tracemalloc). Requests beyond the limit wait for a connection instead.
    """
    import aiohttp

    headers = info.as_http_headers()  # the credentials, basic auth included
    headers["User-Agent"] = UPDATE_MANAGER  # the field manager of kopf's patches
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit, ssl=info.as_ssl_context()),
        headers=headers,
        proxy=info.proxy_url,
        trust_env=info.trust_env,
    )
    return kopf.AiohttpSession(
        aiohttp_session=session,
        server=info.server,
        default_namespace=info.default_namespace,
        priority=info.priority,
        expiration=info.expiration,
    )


TLS_READ_BUFFER = 64 * 1024


def small_tls_read_buffers() -> None:
    """asyncio's TLS connections in this process read into TLS_READ_BUFFER bytes, not 256 KiB.

    asyncio (3.11 to 3.13: `asyncio.sslproto.SSLProtocol`, the class every TLS connection of the
    event loop gets) fills a read buffer of the class's `max_size` (256 KiB) with zeros when it opens a
    connection and keeps it, every page resident, until the connection closes. kopf's session keeps
    up to `connection_limit` connections (33 for our kinds) open, idle or not: 8.3 MiB of the settled
    operator's heap at 300 objects (bench/reconcile_scale.py --tracemalloc). A read returns at most
    what the socket holds, and a TLS record is at most 16 KiB of plaintext (RFC 8446, 5.1), so 64 KiB
    still takes four records per read; a list of 1,000 objects (about 5 MiB) takes more reads, each
    cheaper. Set once for the process: every TLS connection it opens (kopf's, the admission
    webhook's server) gets the smaller buffer; tests/unit/operators/test_session.py checks it on a
    real TLS connection, so a Python that stops reading the attribute fails there.
    """
    from asyncio import sslproto

    sslproto.SSLProtocol.max_size = TLS_READ_BUFFER


def _resource_key(resource: Any) -> tuple[str | None, str | None, str | None]:
    """(group, version, plural) of kopf's `Resource`: the key of GATED, DELETIONS_ONLY and DIRECT."""
    return (
        getattr(resource, "group", None),
        getattr(resource, "version", None),
        getattr(resource, "plural", None),
    )


def wrap_list_and_watch() -> None:
    """Five changes to the objects kopf lists or watches, as they arrive.

    **Only the deletions of DELETIONS_ONLY's resources.** Of a child whose parent reads nothing of it
    but its deletion (runtime.deletions_only: a ModelDeployment's Services, ConfigMaps, budgets,
    policies, autoscalers, monitors), every other event (its listing, at a start and whenever kopf
    lists it again; ADDED; MODIFIED, a status the controllers write) is dropped before its child watch
    (below) reads it: each would cost CPU and memory for nothing. kopf keeps the resource version
    from the events before they reach this wrap, so its watch goes on from where it was.

    **A child's events straight to its watch.** Every event of a resource of DIRECT (a kind of child
    that is no kind's own resource: Deployments, RayJobs, the deletions of the children above) goes to
    its child watches (runtime.child_event), in the stream's order, and none to kopf: kopf's worker per
    object, its queue and its place cost memory and CPU that a child watch does not need (a restart of
    1,000 ModelDeployments: 136-148 MiB through kopf's workers, 111 without; docs/operations.md).
    Bookmarks still go to kopf's watcher (the listing's end marks the resource listed); kopf's own
    listing and watch have handled an ERROR event (a 410 lists again) before this wrap sees it.

    **managedFields dropped.** kopf (pinned to 1.45) keeps each watch event's whole object in the
    object's queue until that object's worker takes it, one event after another: 1,000 objects
    reconciled at once held about two ModelDeployment bodies each (bench/reconcile_scale.py
    --tracemalloc: watch-event bodies were 139 of 225 MiB traced). managedFields, one entry per
    manager and operation each spelling out the tree of fields it set, is most of such a body, and
    nothing reads it from a watch event: kopf does not, and our handlers read it only from objects
    they GET (`apply.Applier`).

    **Objects that kopf has not begun wait outside it**, compressed, while
    `settings.queueing.worker_limit` of them have a worker (`backlog.Backlog`: at a start with every
    object there, or when the resource is listed again, kopf would otherwise queue them all at once;
    GATED, the kinds' own resources). One backlog per resource of GATED and namespace, for as long as
    kopf's watcher of it runs; kopf's `worker` is wrapped to tell it when a worker ends.

    **An expired list listed again.** The initial list comes in pages (LIST_PAGE_SIZE); a page asked
    for after etcd compacted past the list's revision is refused with 410 (reason Expired), which
    kopf raises out of its watcher and so ends the operator. Here it ends only this stream: kopf's
    `infinite_watch` then lists again from the first page (after its reconnect backoff), as
    client-go's reflector relists when its pager's continue token has expired. (A 410 of the watch
    that follows comes as an ERROR event, which kopf handles itself; were a watch request refused
    with 410 outright, listing again is the right answer too.)

    kopf has no hook for any of these; its `infinite_watch` takes its events from the module's
    `continuous_watch` (the listing and the watch), its orchestration starts each resource's
    `watcher` by the queueing module's name, and the watcher makes each object's worker by the
    module's `worker`; all three are wrapped here once (tests/unit/operators/test_session.py and
    test_backlog.py guard the names).
    """
    from kopf._cogs.clients import errors, watching
    from kopf._core.reactor import queueing

    listed_and_watched = watching.continuous_watch
    if getattr(listed_and_watched, "llmops_wrapped", False):
        return

    async def stripped(events: Any, deletions_only: bool) -> Any:
        async for event in events:
            if isinstance(event, dict) and isinstance(obj := event.get("object"), dict):
                if deletions_only and event.get("type") in (None, "ADDED", "MODIFIED"):
                    continue
                (obj.get("metadata") or {}).pop("managedFields", None)
            yield event

    async def to_child_watches(events: Any, key: tuple[str, str, str]) -> Any:
        async for event in events:
            if (
                isinstance(event, dict)
                and event.get("type") in (None, "ADDED", "MODIFIED", "DELETED")
                and isinstance(event.get("object"), dict)
            ):
                await runtime.child_event(key, event)
            else:
                yield event  # a bookmark: kopf's watcher reads the listing's end from it

    async def continuous_watch(**kwargs: Any) -> Any:
        key = _resource_key(kwargs.get("resource"))
        events = stripped(listed_and_watched(**kwargs), key in DELETIONS_ONLY)
        if key in DIRECT:
            events = to_child_watches(events, key)
        elif (line := backlog.of(kwargs.get("resource"), kwargs.get("namespace"))) is not None:
            events = line.gate(events)
        try:
            async for event in events:
                yield event
        except errors.APIClientError as e:
            if e.status != 410:
                raise
            logging.getLogger(__name__).warning(
                "the list or watch of %s was refused as expired (%s); listing it again",
                kwargs.get("resource"),
                e.message or e,
            )

    continuous_watch.llmops_wrapped = True  # type: ignore[attr-defined]
    watching.continuous_watch = continuous_watch

    kopfs_watcher = queueing.watcher
    if not getattr(kopfs_watcher, "llmops_wrapped", False):

        async def watcher(**kwargs: Any) -> None:
            resource, limit = kwargs.get("resource"), kwargs["settings"].queueing.worker_limit
            if not (limit and _resource_key(resource) in GATED):
                return await kopfs_watcher(**kwargs)
            with backlog.watching(resource, kwargs.get("namespace"), limit):
                return await kopfs_watcher(**kwargs)

        watcher.llmops_wrapped = True  # type: ignore[attr-defined]
        watcher.__wrapped__ = kopfs_watcher  # type: ignore[attr-defined]
        queueing.watcher = watcher

    kopfs_worker = queueing.worker
    if not getattr(kopfs_worker, "llmops_wrapped", False):

        async def worker(**kwargs: Any) -> None:
            try:
                await kopfs_worker(**kwargs)
            finally:
                if kwargs["key"] not in kwargs["streams"]:  # else a newer worker has the object
                    backlog.finished(*kwargs["key"])

        worker.llmops_wrapped = True  # type: ignore[attr-defined]
        worker.__wrapped__ = kopfs_worker  # type: ignore[attr-defined]
        queueing.worker = worker


def memories() -> Any:
    """kopf's per-object memories (`kopf.operator(memories=...)`), kept for our own kinds only.

    kopf (pinned to 1.45) remembers every object it has seen an event of until its deletion: a memo
    copied from the operator's, an error throttler, and its indexing and daemon records, about 1 KiB
    each (tracemalloc, kopf's `ResourceMemories.recall`). Most of the objects it watches are children (a
    ModelDeployment has eleven watched ones), whose only handlers are `on.event` (runtime's
    `_watch_child`), which read none of it between events (and whose events now reach kopf only for a
    kind's own resource watched as a child, a RetrainPolicy's TrainingJobs: DIRECT): what kopf keeps
    across events serves change handlers (the first listing, the handled-once flag), daemons and
    indices, which only our own kinds (`llmops.io/...`) have. A child's event gets a fresh memory,
    forgotten after it; only the throttle of kopf's own failures in processing one child's events
    restarts from its first delay (1 s) for every event instead of growing
    (tests/unit/operators/test_session.py guards the use of the kopf internals this relies on).
    """
    from kopf._core.reactor import inventory

    class OwnKindsMemories(inventory.ResourceMemories):
        async def recall(self, raw_body: Any, **kwargs: Any) -> Any:
            if not str(raw_body.get("apiVersion", "")).startswith(f"{GROUP}/"):
                kwargs["ephemeral"] = True
            return await super().recall(raw_body, **kwargs)

    return OwnKindsMemories()


def configure(settings: kopf.OperatorSettings, webhook: WebhookOptions | None, kinds: list[Kind]) -> None:
    # Our own names for kopf's bookkeeping, chosen before the first release (changing them re-runs handlers).
    settings.persistence.finalizer = f"{PREFIX}/finalizer"
    settings.persistence.progress_storage = UnmarkedProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = DigestDiffBaseStorage(prefix=PREFIX)
    # Watches that go silent behind load balancers are restarted rather than trusted forever.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60
    # Each attempt's TCP connect and TLS handshake, bounded as client-go bounds its TLS handshake
    # (10 s): an address that takes the connection but never answers fails each attempt at 10 s,
    # not at the request's 60 s (9 attempts: about 2.5 minutes at start instead of about 10).
    settings.networking.connect_timeout = 10
    # One replica with a Recreate strategy: no peering, so no same-priority freeze.
    settings.peering.standalone = True
    # We post our own Events with reasons; kopf's log-to-Event mirror only for warnings.
    settings.posting.level = logging.WARNING
    settings.execution.max_workers = 16
    # Bounds the objects in flight at once: at a cold start kopf would otherwise begin every listed
    # object's reconcile together (1,000 objects, 2026-11: 275 MiB peak RSS unbounded, 189 MiB with
    # 250). Fewer bound no more memory since the later savings (a limit of 100: 115 MiB settled
    # against 116 with 250, at 1,000 objects) and slow the start (to Ready 0.87 of the direct writes
    # against 0.95): docs/operations.md, "Sizing the operator". The objects waiting for a place wait
    # outside kopf (wrap_list_and_watch, backlog.Backlog).
    settings.queueing.worker_limit = WORKER_LIMIT
    # A worker (one per object with events) holds one of those places while it idles for more events;
    # kopf's default of 5 s let the watch events of objects waiting for a place pile up in memory.
    settings.queueing.idle_timeout = 0.5
    # The initial list of each watched resource in pages of LIST_PAGE_SIZE (the `limit` and
    # `continue` of the list API), not one response: at a restart every resource's whole list (a
    # ModelDeployment's children included) was in memory at once, as bytes and as parsed objects
    # (700 objects: 243 MiB peak against 122 in pages; docs/operations.md, "Sizing the operator").
    settings.watching.chunk_size = LIST_PAGE_SIZE
    # Made anew for these kinds (a process may run an operator again, with other kinds: the tests).
    for each in (DIRECT, GATED, DELETIONS_ONLY):
        each.clear()
    DIRECT.update(runtime.direct_children(kinds))
    GATED.update(runtime.watched_resources(kinds) - DIRECT)
    DELETIONS_ONLY.update(runtime.deletions_only(kinds))
    wrap_list_and_watch()
    small_tls_read_buffers()
    # The apiserver sends only our children of the resources we watch as children (runtime.child_selectors).
    for resource, label in runtime.child_selectors(kinds).items():
        settings.watching.label_selectors[resource] = label
    if webhook:
        settings.admission.server = webhook_server(webhook)
        settings.admission.managed = webhook.config_name


class ReconnectLog(logging.Filter):
    """Failed connection attempts to the apiserver as warnings at a bounded rate, errors past a threshold.

    kopf logs every failed attempt of an API request at error level (kopf/_cogs/clients/api.py,
    `request`: "Request attempt #n/9 failed; will retry: ..."), and each watched resource lists and
    watches on its own with backoffs of 1 to 21 s; urllib3 (under boto3) warns of each of its own
    retries ("Retrying (Retry(total=2, ...)) after connection broken by ..."); the requeue
    (runtime.Requeue) warns of each object whose poke failed and tries it again 10 s later. While the
    apiserver or etcd is away, every watch, every resync and every due object would log every few
    seconds, although nothing is wrong with this process and it reconnects by itself once the apiserver
    answers. kopf logs a request's attempts on the logger of whoever asked (its watches', each
    object's patches on `kopf.objects`, its Event poster's), so `install` puts the filters on the root
    logger's handlers, which every record reaches. Through the handler it is
    installed on, this filter keeps one record that starts with `prefix` per `INTERVAL` seconds (its
    message then says how many were not shown and for how long the attempts have failed) and logs it as
    a warning while the failures have lasted less than `ERROR_AFTER` seconds, as an error beyond that.
    Failures less than `GAP` seconds apart (more than kopf's longest backoff, 21 s) are one outage.
    Every other record passes untouched.
    """

    INTERVAL = 30.0  # seconds between two kept records
    ERROR_AFTER = 300.0  # seconds of failing attempts before they are errors
    GAP = 60.0  # seconds without a failed attempt that end an outage
    # The start of the messages, one count each: kopf's API requests (lists, watches, patches, Events),
    # urllib3's retries (any urllib3 client in this process: S3's), and the requeue's pokes
    # (runtime.Requeue), one per object due while the apiserver is away.
    PREFIXES = ("Request attempt", "Retrying (", REQUEUE_FAILED)

    def __init__(self, prefix: str = "Request attempt", clock: Any = None) -> None:
        super().__init__()
        self.prefix = prefix
        self.clock = clock or time.monotonic
        self.since: float | None = None  # when the failing began
        self.last = self.next = 0.0  # the last failed attempt; when the next one may be kept
        self.hidden = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(self.prefix):
            return True
        now = self.clock()
        if self.since is None or now - self.last > self.GAP:
            self.since, self.next, self.hidden = now, now, 0
        self.last = now
        if now < self.next:
            self.hidden += 1
            return False
        failing = now - self.since
        level = logging.ERROR if failing >= self.ERROR_AFTER else logging.WARNING
        record.levelno, record.levelname = level, logging.getLevelName(level)
        shown = f"{self.hidden} more failed attempts not shown; failing for {failing:.0f} s"
        record.msg = f"{record.getMessage()} ({shown})"
        record.args = ()
        self.next, self.hidden = now + self.INTERVAL, 0
        return True

    @classmethod
    def install(cls, handlers: list[logging.Handler] | None = None) -> list[ReconnectLog]:
        """One filter per prefix on each of `handlers` (default: the root logger's, which
        `kopf.configure` set up), each with its own count."""
        filters = []
        for handler in logging.getLogger().handlers if handlers is None else handlers:
            for prefix in cls.PREFIXES:
                filters.append(cls(prefix))
                handler.addFilter(filters[-1])
        return filters


def default_kinds() -> list[Kind]:
    from llmops.operators import modeldeployment, modelretirement, retrainpolicy, trainingjob

    return [trainingjob.KIND, modeldeployment.KIND, retrainpolicy.KIND, modelretirement.KIND]


def build_registry(webhook: WebhookOptions | None, kinds: list[Kind] | None = None) -> kopf.OperatorRegistry:
    """Every handler of the operator process in one fresh registry (tests build their own)."""
    registry = kopf.OperatorRegistry()
    kinds = default_kinds() if kinds is None else kinds
    runtime.CHILD_WATCHES.clear()  # this registry's child watches only (runtime.register fills it)

    @kopf.on.login(registry=registry)
    async def login(settings: kopf.OperatorSettings, **kwargs: Any) -> kopf.AiohttpSession | None:
        # The same sources as Kube.from_environment(): the pod's ServiceAccount, else $KUBECONFIG.
        info = kopf.login_with_service_account(settings=settings, **kwargs) or kubeconfig_login(settings)
        return None if info is None else bounded_session(info, connection_limit(kinds))

    @kopf.on.startup(registry=registry)
    def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        configure(settings, webhook, kinds)
        memo.applier = Applier(Kube.from_environment())
        stale = stale_crds(memo.applier.kube, kinds)
        if stale:
            settings.persistence.diffbase_storage = DigestDiffBaseStorage(prefix=PREFIX, in_status=False)
            logging.getLogger(__name__).warning(
                "the installed CRDs %s are older than this operator (no status.lastHandledConfiguration);"
                " apply this release's CRDs (kubectl apply --server-side -f crds/) and restart the"
                " operator. Until then it keeps its record of what it handled in the annotation %s.",
                ", ".join(stale),
                settings.persistence.diffbase_storage.legacy,
            )
        memo.stores = StoreCache()
        memo.identity = identity(memo.applier.kube)
        memo.auditor = Auditor.from_env(memo.identity)

    @kopf.on.cleanup(registry=registry)
    def cleanup(memo: kopf.Memo, logger: Any, **_: Any) -> None:
        if webhook:
            # kopf creates the webhook configuration but never removes it; left behind, it would
            # refuse every llmops object while no operator answers (failurePolicy Fail).
            kube = memo.applier.kube
            for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
                # The same name: kopf manages both kinds.
                with contextlib.suppress(ApiError):
                    kube.delete("admissionregistration.k8s.io/v1", kind, webhook.config_name)
                    logger.info("removed the %s %s", kind, webhook.config_name)
        memo.applier.kube.close()

    @kopf.on.probe(id="api", registry=registry)
    async def api_reachable(memo: kopf.Memo, **_: Any) -> str:
        """The apiserver's version, or why it did not answer within 3 s: in /healthz's body, never
        failing it (docs/operations.md, "Probes and outages of the control plane"). A restart of this
        process cannot bring an apiserver back; watches gone silent are kopf's to reconnect
        (settings.watching.inactivity_timeout). Awaited on the event loop, not in the handlers' thread
        pool, so handlers stuck on an unreachable apiserver cannot hold the probe."""
        try:
            return await asyncio.wait_for(asyncio.to_thread(memo.applier.kube.version, timeout=2), 3)
        except Exception as e:  # the answer is the report: liveness must not track the apiserver
            return f"unreachable: {unreachable_reason(e)}"

    for kind in kinds:
        runtime.register(kind, registry)
    if webhook:
        admission.register(registry)
        admission.register_retirement_check(registry)
    return registry


def unreachable_reason(error: BaseException) -> str:
    """Why the apiserver did not answer, for /healthz: the error's kind and its first line (at most
    200 characters; a client error names no credential), e.g. `Unreachable: connection refused`."""
    if isinstance(error, Unreachable):
        detail = f"{error.reason}: {error.message}"
    else:
        lines = str(error).strip().splitlines()
        detail = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    return detail[:200]


# kopf's text format less its cut of logger names at 20 characters ("llmops.operators.mo").
TEXT_LOG_FORMAT = "[%(asctime)s] %(name)s [%(levelname)-8.8s] %(message)s"


def configure_logging(log_format: str = "json", verbose: bool = False) -> None:
    """The operator's logging: kopf's handler on the root logger in `log_format` ("json" lines, or
    "text" with whole logger names and `[namespace/name]` before an object's messages), debug lines
    with `verbose`, the HTTP clients kept quiet (llmops/logsafe.py), and reconnect attempts
    rate-limited (ReconnectLog)."""
    text = log_format != "json"
    kopf.configure(
        verbose=verbose,
        log_format=TEXT_LOG_FORMAT if text else kopf.LogFormat.JSON,  # type: ignore[arg-type]
        log_prefix=text,  # text: an object's messages start with [namespace/name]; JSON has "object"
    )
    # After kopf.configure, which sets the root level: --verbose shows our and kopf's debug lines,
    # never the HTTP clients' (Secrets in response bodies, key ids in headers); see llmops/logsafe.py.
    logsafe.install()
    if not logsafe.http_debug_opted_in():
        logging.getLogger("httpx").setLevel(logging.WARNING)  # else a line per API request at INFO
    ReconnectLog.install()
    for handler in logging.getLogger().handlers:
        handler.addFilter(logger_field)


def logger_field(record: logging.LogRecord) -> bool:
    """Name the logger in JSON lines too (`"logger": "llmops.operators..."`): kopf's JSON formatter
    writes a record's extra attributes, but not its name."""
    record.logger = record.name
    return True


def run(
    *,
    namespaces: list[str],
    metrics_port: int = 8080,
    health_port: int = 8081,
    webhook: WebhookOptions | None = None,
    log_format: str = "json",
    verbose: bool = False,
) -> None:
    """Run until SIGTERM/SIGINT (kopf drains handlers, then exits)."""
    configure_logging(log_format, verbose)
    if metrics_port:
        start_http_server(metrics_port)
    try:
        asyncio.run(
            kopf.operator(
                registry=build_registry(webhook),
                memories=memories(),
                standalone=True,
                clusterwide=not namespaces,
                namespaces=namespaces,
                liveness_endpoint=f"http://0.0.0.0:{health_port}/healthz" if health_port else None,
            )
        )
    except (aiohttp.ClientConnectionError, TimeoutError) as e:
        from llmops import kubeconfig

        # Only at start: kopf's first discovery of the served resources gives up after its request
        # attempts (settings.networking.error_backoffs, about a minute) and ends the operator; later
        # outages are ridden out (docs/operations.md, "Probes and outages of the control plane").
        raise SystemExit(
            f"llmops operator: the API server of {kubeconfig.describe()} did not answer at start "
            f"({type(e).__name__}: {e}); stopping (in a pod, Kubernetes starts it again)"
        ) from None
