"""The operator's Kubernetes API client: the one module that knows the client library and its errors.

The operator process talks to the apiserver through lightkube (https://github.com/gtsystem/lightkube,
httpx underneath) and never through the `kubernetes` package: importing `kubernetes.client` loads its
865 API and model modules (about 67 MiB of a process that should hold 1,000 objects in 128 MiB, issue
17). Objects are plain dicts in and out (lightkube's generic resources), for any apiVersion and kind the
apiserver serves, found by discovery (`/api/v1`, `/apis/<group>/<version>`: plural and scope, cached
per group version, asked again when a kind is not there, so a CRD installed later is found).

Errors are ours, so reconcile code never catches a library's type:

- `ApiError`: the apiserver answered with an error; `status` is the HTTP code, `reason` the Status
  reason (`NotFound`, `Conflict`, `Invalid`...), `message` its message.
- `NotFound` (404) and `Conflict` (409) are subclasses of it.
- `KindNotServed`: the apiserver serves no such apiVersion/kind (its CRD is not installed).
- `Unreachable` (`status` None): no answer at all (connection refused or reset, a timeout), as while the
  apiserver restarts; the runtime retries it like a 5xx.

The CLI tools and the tests keep the `kubernetes` package.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import lightkube
from lightkube.core import resource as lkres
from lightkube.generic_resource import Generic, create_api_info
from lightkube.types import PatchType

# kopf's own requests give up after settings.networking.request_timeout (60 s); ours too.
TIMEOUT = httpx.Timeout(60.0, connect=10.0)
RETRIES, MAX_WAIT = 3, 10.0  # answers with Retry-After: how often and how long (s) to wait and retry
# The manager our patches, creates and kopf's own requests are recorded under in managedFields
# (kopf's by its User-Agent, operators.main.bounded_session). Server-side apply names its own
# (operators.apply.FIELD_MANAGER). Without it each client was a manager of its own ("python-httpx",
# "kopf"), one managedFields entry each on every object, and every watch event carries them all.
UPDATE_MANAGER = "llmops-operator"


class ApiError(Exception):
    """The apiserver refused a request: `status` (HTTP code), `reason` (Status reason), `message`."""

    def __init__(
        self, status: int | None, reason: str, message: str, retry_after: float | None = None
    ) -> None:
        super().__init__(f"({status}) {reason}: {message}")
        self.status, self.reason, self.message = status, reason, message
        self.retry_after = retry_after  # seconds, from a 429 or 503 answer's Retry-After header


class NotFound(ApiError):
    """404: no object of that name."""


class Conflict(ApiError):
    """409: an object of that name exists (create), or a field manager conflict (apply, not forced)."""


class Unreachable(ApiError):
    """No answer from the apiserver (connection refused or reset, a timeout); `status` is None."""

    def __str__(self) -> str:
        return f"the apiserver did not answer: {self.reason}: {self.message}"


class KindNotServed(ApiError):
    """The apiserver serves no `api_version`/`kind` (its CRD is not installed)."""

    def __init__(self, api_version: str, kind: str) -> None:
        super().__init__(404, "NotFound", f"the apiserver serves no {kind} in {api_version}")
        self.api_version, self.kind = api_version, kind

    def __str__(self) -> str:
        return self.message


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """lightkube's and httpx's status errors as ours."""
    try:
        yield
    except lightkube.ApiError as e:
        raise _ours(
            e.response.headers.get("Retry-After"),
            e.status.code or e.response.status_code,
            e.status.reason or "",
            e.status.message or "",
        ) from e
    except httpx.HTTPStatusError as e:  # an answer that is not a JSON Status (a proxy's, a 503 page)
        raise _ours(
            e.response.headers.get("Retry-After"),
            e.response.status_code,
            e.response.reason_phrase,
            e.response.text[:1000],
        ) from e
    except httpx.TransportError as e:
        raise Unreachable(None, type(e).__name__, str(e) or type(e).__name__) from e


def _ours(retry_after: str | None, status: int, reason: str, message: str) -> ApiError:
    cls = {404: NotFound, 409: Conflict}.get(status, ApiError)
    try:
        wait = float(retry_after) if retry_after is not None and status in (429, 503) else None
    except ValueError:
        wait = None
    return cls(status, reason, message, wait)


def _retrying(call: Any) -> Any:
    """`call()`, again after the wait a 429 or 503 answer's Retry-After asks (at most MAX_WAIT s), up to
    RETRIES times, as client-go and urllib3 do (an apiserver whose watch cache is initializing
    answers 429 with Retry-After 1)."""
    for attempt in range(RETRIES + 1):
        try:
            with _errors():
                return call()
        except ApiError as e:
            if e.retry_after is None or attempt == RETRIES:
                raise
            time.sleep(min(e.retry_after, MAX_WAIT))
    raise AssertionError("unreachable")


# Connections kept open between requests, and for how long an idle one is kept (seconds): more than
# the threads that share one client may use at once (kopf's executor, `settings.execution.max_workers`,
# 16, and asyncio's default executor, min(32, CPUs + 4)). httpx keeps 20 for 5 s by default, and its
# pool closes idle connections whenever more than 20 exist: with more threads than that at once, most
# requests closed a connection or opened one, TLS handshake included, work the apiserver pays for too
# (24 threads against the bench's real apiserver, a one-off script: 628 connections opened for 998
# requests; tests/unit/operators/test_kube.py: 289 and 431 for 600 against a local HTTPS server, 24 with
# these limits). client-go keeps 25 per host for 90 s (k8s.io/apimachinery/pkg/util/net,
# SetTransportDefaults) and multiplexes over HTTP/2. The connections open at once are not capped
# (httpx caps them at 100): the threads bound them.
KEEPALIVE_CONNECTIONS = 64
KEEPALIVE_SECONDS = 90.0
LIMITS = httpx.Limits(
    max_connections=None, max_keepalive_connections=KEEPALIVE_CONNECTIONS, keepalive_expiry=KEEPALIVE_SECONDS
)


def http_client(config: Any) -> httpx.Client:
    """The httpx client lightkube makes for a lightkube SingleConfig (its server, TLS settings with
    the cluster's CA and any client certificate, its authentication, TIMEOUT, proxies from the
    environment), with LIMITS in place of httpx's default connection pool, for the direct
    connection and a proxy's alike."""
    from lightkube.config import client_adapter  # pinned lightkube>=0.22,<0.23

    params = client_adapter.ConnectionParams(timeout=TIMEOUT).httpx_params(config)
    return httpx.Client(**params, limits=LIMITS)


class Kube:
    """A thread-safe client for the operator: server-side apply, get, list, patch, delete of dicts."""

    def __init__(self, client: lightkube.Client) -> None:
        self.client = client
        self._kinds: dict[tuple[str, str], type] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_environment(cls, kubeconfig: str | os.PathLike | None = None) -> Kube:
        """In a pod: its ServiceAccount; elsewhere `kubeconfig`, else the files of $KUBECONFIG merged as
        kubectl does (`llmops.kubeconfig.for_operator`), else ~/.kube/config."""
        from llmops import kubeconfig as kubeconfigs

        config = (
            lightkube.KubeConfig.from_file(kubeconfig).get() if kubeconfig else kubeconfigs.for_operator()
        )
        if config is None:  # in a pod: its ServiceAccount, as lightkube finds it
            config = lightkube.KubeConfig.from_env().get()
        client = lightkube.Client(config=config, timeout=TIMEOUT, lazy=False, field_manager=UPDATE_MANAGER)
        # lightkube takes no connection limits (and its `transport=` fails: it deep-copies its
        # parameters, an SSLContext included), so the httpx client it made, not yet used, is replaced
        # by the same one with LIMITS.
        client._client._client.close()
        client._client._client = http_client(config)
        return cls(client)

    def close(self) -> None:
        self.client.close()

    # -- discovery ----------------------------------------------------------------------------------

    def _get_json(self, path: str, timeout: float | None = None) -> dict:
        # lightkube has no call for paths outside resources (discovery, /version); its httpx client,
        # with the configured server, credentials and CA, does (pinned lightkube>=0.22,<0.23).
        http: httpx.Client = self.client._client._client

        def call() -> dict:
            response = http.get(path, timeout=timeout if timeout is not None else TIMEOUT)
            response.raise_for_status()
            return response.json()

        return _retrying(call)

    def resource(self, api_version: str, kind: str) -> type:
        """lightkube's generic resource class for `api_version`/`kind`; KindNotServed if none."""
        key = (api_version, kind)
        found = self._kinds.get(key)
        if found is not None:
            return found
        path = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
        try:
            listed = self._get_json(path).get("resources") or []
        except NotFound:
            raise KindNotServed(api_version, kind) from None
        group, _, version = api_version.rpartition("/")
        with self._lock:
            for entry in listed:
                if "/" in entry.get("name", ""):
                    continue  # a subresource (deployments/scale)
                cls = _generic(group, version, entry["kind"], entry["name"], entry.get("namespaced", True))
                self._kinds[(api_version, entry["kind"])] = cls
        if key not in self._kinds:
            raise KindNotServed(api_version, kind)
        return self._kinds[key]

    # -- requests -----------------------------------------------------------------------------------

    def apply(self, manifest: dict, *, field_manager: str, force: bool = True, dry_run: bool = False) -> dict:
        """Server-side apply `manifest` (a dict) under `field_manager`; the object as stored (or as it
        would be, `dry_run`). `force` takes conflicting fields from other managers; without it a
        conflict raises Conflict."""
        res = self.resource(manifest["apiVersion"], manifest["kind"])
        meta = manifest["metadata"]
        got = _retrying(
            lambda: self.client.patch(
                res,
                meta["name"],
                manifest,
                namespace=meta.get("namespace"),
                patch_type=PatchType.APPLY,
                field_manager=field_manager,
                force=force,
                dry_run=dry_run,
            )
        )
        return _plain(got)

    def create(self, manifest: dict) -> dict:
        """Create `manifest`; Conflict if an object of that name exists."""
        res = self.resource(manifest["apiVersion"], manifest["kind"])
        namespace = (manifest.get("metadata") or {}).get("namespace")
        return _plain(_retrying(lambda: self.client.create(res(manifest), namespace=namespace)))

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict:
        """The object; NotFound if there is none."""
        res = self.resource(api_version, kind)
        return _plain(_retrying(lambda: self.client.get(res, name, namespace=namespace)))

    def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        page: int | None = None,
        field_selector: str | None = None,
    ) -> list[dict]:
        """Every object of the kind in `namespace` (all namespaces: None, for a namespaced kind),
        matching `label_selector` and `field_selector` (equality terms, `a=b,c=d`); read in pages of
        `page` objects (the list API's `limit` and `continue`) when given, else as one response."""
        res = self.resource(api_version, kind)
        if namespace is None and issubclass(res, lkres.NamespacedResource):
            namespace = lightkube.ALL_NS
        labels = dict(_selector(label_selector, "label")) if label_selector else None
        fields = dict(_selector(field_selector, "field")) if field_selector else None
        return _retrying(
            lambda: [
                _plain(item)
                for item in self.client.list(
                    res, namespace=namespace, labels=labels, fields=fields, chunk_size=page
                )
            ]
        )

    def merge_patch(
        self,
        api_version: str,
        kind: str,
        name: str,
        namespace: str | None,
        body: dict,
        *,
        status: bool = False,
        field_manager: str | None = None,
    ) -> dict:
        """JSON merge patch (RFC 7386) of the object, or of its status subresource (`status`)."""
        res = self.resource(api_version, kind)
        got = _retrying(
            lambda: self.client.patch(
                res.Status if status else res,
                name,
                body,
                namespace=namespace,
                patch_type=PatchType.MERGE,
                field_manager=field_manager,
            )
        )
        return _plain(got)

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> None:
        """Delete the object; NotFound if it was gone."""
        res = self.resource(api_version, kind)
        _retrying(lambda: self.client.delete(res, name, namespace=namespace))

    def version(self, timeout: float | None = None) -> str:
        """The apiserver's gitVersion (`/version`), waiting at most `timeout` seconds (default TIMEOUT)."""
        return str(self._get_json("/version", timeout).get("gitVersion", ""))


def _selector(text: str, what: str = "label") -> Iterator[tuple[str, str]]:
    """A `what` ("label" or "field") selector of equality terms (`a=b,c=d`) as lightkube's `labels`
    or `fields`; ValueError, naming which selector, otherwise."""
    for term in text.split(","):
        key, sep, value = term.partition("=")
        if not sep or "!" in key:
            raise ValueError(f"{what} selector {text!r}: only equality terms (key=value) are supported")
        yield key.strip(), value.strip()


def _plain(obj: Any) -> dict:
    return obj.to_dict() if isinstance(obj, Generic) else dict(obj)


def _generic(group: str, version: str, kind: str, plural: str, namespaced: bool) -> type:
    """A generic resource class (dicts in and out) with its status subresource, outside lightkube's
    global registry (which a typed lightkube resource of the same kind would otherwise collide with)."""
    base = lkres.NamespacedResourceG if namespaced else lkres.GlobalResource
    info = create_api_info(group, version, kind, plural)
    status_info = lkres.ApiInfo(
        resource=info.resource,
        parent=info.resource,
        plural=plural,
        verbs=["get", "patch", "put"],
        action="status",
    )
    status_base = lkres.NamespacedResourceG if namespaced else lkres.GlobalSubResource
    status = type(f"{kind}Status", (status_base, Generic), {"_api_info": status_info})
    return type(kind, (base, Generic), {"_api_info": info, "Status": status})
