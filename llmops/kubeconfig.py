"""The kubeconfig every `llmops` command that talks to the cluster reads, and the one line it prints
when that file or the cluster behind it is wrong (no traceback; exit status 1).

Where: `$KUBECONFIG` (a list of files joined by `:`, merged as kubectl does: the first file to name
an entry or the current context wins; listed files that do not exist are skipped), else
`~/.kube/config`; the operator in a pod without `$KUBECONFIG` uses its ServiceAccount instead. One
reading (`read`) feeds every client: the CLI's `kubernetes` client, and the operator's lightkube
client and kopf login (`llmops.operators.main`), so they see the same cluster and say the same of a
bad file.
What is reported, always naming the file (and the context once it is known): a file that does not
exist, one that cannot be read, one that is not YAML or holds no kubeconfig, one with no current
context (or without the context asked for), and a server that does not answer (`Cluster.talking`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


def location() -> str:
    """The kubeconfig path as the clients read it: $KUBECONFIG, else ~/.kube/config (expanded)."""
    return os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")


def problem(reason: str, path: str, context: str | None = None) -> click.ClickException:
    """The one-line error: `kubeconfig PATH (context NAME): REASON`."""
    where = f"kubeconfig {path}" + (f" (context {context})" if context else "")
    return click.ClickException(f"{where}: {reason}")


def _reason(error: BaseException) -> str:
    """What is wrong, in one line, from the loader's exception (YAML, OS or the client's own)."""
    import yaml

    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        return f"not valid YAML (line {mark.line + 1}, column {mark.column + 1}: {error.problem})"
    if isinstance(error, yaml.YAMLError):
        return f"not valid YAML ({' '.join(str(error).split())})"
    if isinstance(error, OSError) and error.strerror:
        return f"cannot read it: {error.strerror}"
    if isinstance(error, AttributeError | TypeError | KeyError):  # an empty file, a list for a mapping
        return f"not a kubeconfig ({error})"
    return " ".join(str(error).split())


def _check_exists(path: str) -> None:
    files = [os.path.expanduser(p) for p in path.split(os.pathsep) if p]
    if not any(os.path.exists(p) for p in files):
        raise problem("no such file (set KUBECONFIG, or run `llmops dev up` for a local cluster)", path)


@dataclass
class Cluster:
    """A `kubernetes` API client (`api`) from the kubeconfig at `kubeconfig`, context `context`."""

    api: Any  # kubernetes.client.ApiClient
    kubeconfig: str
    context: str

    @contextmanager
    def talking(self, what: str) -> Iterator[None]:
        """Calls about `what` (e.g. "trainingjob default/x") inside: the API server's error answer
        and an unreachable server become one-line ClickExceptions."""
        import urllib3
        from kubernetes.client.exceptions import ApiException

        try:
            yield
        except ApiException as e:
            raise click.ClickException(f"{what}: the API server answered {e.status} {e.reason}") from None
        except (urllib3.exceptions.HTTPError, OSError) as e:
            reason = " ".join(str(getattr(e, "reason", None) or e).split())
            reason = f"cannot reach the API server {self.api.configuration.host} ({reason})"
            raise problem(reason, self.kubeconfig, self.context) from None


# Fields of a kubeconfig's cluster and user entries that name a file, relative to that kubeconfig.
_FILE_FIELDS = ("certificate-authority", "client-certificate", "client-key", "tokenFile")


def merge(paths: list[str]) -> dict[str, Any]:
    """The kubeconfig files `paths` as one, by kubectl's rules (Kubernetes docs, "Organizing Cluster
    Access Using kubeconfig Files", merging): the first file to set `current-context` wins, and the
    first to name a cluster, context or user wins for that name. Relative file paths in an entry are
    made absolute against its own file's folder. Raises OSError (a file cannot be read), a YAMLError,
    or TypeError (a file that is not a kubeconfig mapping)."""
    import yaml

    merged: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [],
        "contexts": [],
        "users": [],
    }
    for path in paths:
        config = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(config, dict):
            raise TypeError(f"{path} holds a {type(config).__name__}, not a mapping")
        if "current-context" not in merged and config.get("current-context"):
            merged["current-context"] = config["current-context"]
        for section, inner in (("clusters", "cluster"), ("contexts", "context"), ("users", "user")):
            names = {entry["name"] for entry in merged[section]}
            for entry in config.get(section) or []:
                if entry["name"] in names:
                    continue
                body = dict(entry.get(inner) or {})
                for key in _FILE_FIELDS:
                    if isinstance(body.get(key), str) and not os.path.isabs(body[key]):
                        body[key] = str(Path(path).expanduser().resolve().parent / body[key])
                merged[section].append({"name": entry["name"], inner: body})
                names.add(entry["name"])
    return merged


def entry(merged: dict[str, Any], section: str, name: str | None) -> dict[str, Any] | None:
    """The body of the entry `name` of `section` ("clusters", "contexts", "users") of a merged
    kubeconfig (its "cluster", "context" or "user" mapping), or None when there is none."""
    inner = section[:-1]
    return next((e.get(inner) or {} for e in merged[section] if e["name"] == name), None)


def read(context: str | None = None) -> tuple[str, dict[str, Any], str]:
    """The kubeconfig of `location()`: (its path as set, its files merged by `merge`, the context to
    use: `context`, else the current one). Listed files that do not exist are skipped, as kubectl
    skips them. A context's user that no file defines is added without credentials (kubectl's
    reading). Raises click.ClickException, one line naming the path (the same line for every
    command): no listed file exists, one cannot be read, is not YAML, holds no kubeconfig, names no
    current context, lacks the context or the cluster it names, or names a certificate, key or token
    file that does not exist."""
    path = location()
    files = [f for f in (os.path.expanduser(p) for p in path.split(os.pathsep) if p) if os.path.exists(f)]
    _check_exists(path)
    try:
        merged = merge(files)
    except Exception as e:  # OSError, YAMLError; a malformed entry's TypeError or KeyError
        raise problem(_reason(e), path, context) from None
    if not (merged["clusters"] or merged["contexts"] or merged["users"]):
        raise problem("not a kubeconfig (no clusters, contexts or users in it)", path, context)
    name = context or merged.get("current-context")
    if not name:
        raise problem("no current context (choose one: kubectl config use-context NAME)", path)
    if (chosen := entry(merged, "contexts", name)) is None:
        raise problem("no such context in it", path, name)
    cluster = entry(merged, "clusters", chosen.get("cluster"))
    if cluster is None:
        raise problem(
            f"the context names cluster {chosen.get('cluster')!r}, which it does not define", path, name
        )
    user = entry(merged, "users", chosen.get("user"))
    if user is None and chosen.get("user"):
        merged["users"].append({"name": chosen["user"], "user": {}})
    for key in _FILE_FIELDS:
        for body in (cluster, user or {}):
            if isinstance(body.get(key), str) and not os.path.isfile(body[key]):
                raise problem(f"{key} {body[key]}: no such file", path, name)
    return path, merged, name


def connect(context: str | None = None) -> Cluster:
    """The CLI's client of the cluster of the kubeconfig (`read`), in `context` (None: its current
    one). Raises click.ClickException (one line, naming the file) as `read` does, or when the
    context's entries cannot make a client (a cluster or user it names is missing, say)."""
    from kubernetes import config

    path, merged, name = read(context)
    try:
        api = config.new_client_from_config_dict(merged, context=name)
    except Exception as e:  # ConfigException; a malformed entry's TypeError or KeyError
        raise problem(_reason(e), path, name) from None
    return Cluster(api, path, name)


def in_pod() -> bool:
    """The operator uses its pod's ServiceAccount: no $KUBECONFIG, and the token Kubernetes mounts."""
    return "KUBECONFIG" not in os.environ and SERVICE_ACCOUNT_TOKEN.exists()


def describe() -> str:
    """Where the operator's credentials come from, in words for a start-up failure line: `kubeconfig
    PATH (context NAME, server URL)`, or the in-cluster ServiceAccount with its server (the
    KUBERNETES_SERVICE_HOST/PORT that Kubernetes sets in a pod). Never raises (`read`'s own line
    names a bad kubeconfig)."""
    if in_pod():
        host, port = (
            os.environ.get("KUBERNETES_SERVICE_HOST", "?"),
            os.environ.get("KUBERNETES_SERVICE_PORT", "?"),
        )
        return f"the pod's ServiceAccount (server https://{host}:{port})"
    try:
        path, merged, name = read()
    except click.ClickException as e:
        return e.message
    server = (entry(merged, "clusters", (entry(merged, "contexts", name) or {}).get("cluster")) or {}).get(
        "server"
    )
    return f"kubeconfig {path} (context {name}, server {server})"


def for_operator() -> Any:
    """The operator's lightkube configuration (a lightkube SingleConfig) from the kubeconfig (`read`:
    its files merged, as kopf's login merges them), or None in a pod without $KUBECONFIG (lightkube
    then takes the ServiceAccount). Raises click.ClickException, one line, as `read` does."""
    if in_pod():
        return None
    import lightkube

    path, merged, name = read()
    try:
        return lightkube.KubeConfig.from_dict(merged).get(context_name=name)
    except Exception as e:  # ConfigError; a malformed entry's TypeError or KeyError
        raise problem(_reason(e), path, name) from None


def check_for_operator() -> None:
    """Before the operator starts: read the kubeconfig as its clients will (`for_operator`), so that
    a wrong one stops it with one line instead of kopf's retries."""
    for_operator()
