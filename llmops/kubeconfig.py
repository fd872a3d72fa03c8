"""The kubeconfig every `llmops` command that talks to the cluster reads, and the one line it prints
when that file or the cluster behind it is wrong (no traceback; exit status 1).

Where: `$KUBECONFIG` (for the CLI's `kubernetes` client a list of files joined by `:`, merged as
kubectl does; for the operator's lightkube one file), else `~/.kube/config`; the operator in a pod
without `$KUBECONFIG` uses its ServiceAccount instead. What is reported, always naming the file (and
the context once it is known): a file that does not exist, one that cannot be read, one that is not
YAML, one with no current context (or without the context asked for), and a server that does not
answer (`Cluster.talking`).
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


def connect(context: str | None = None) -> Cluster:
    """The CLI's client of the cluster of the kubeconfig (`location()`), in `context` (None: its
    current one). Raises click.ClickException (one line, naming the file) when the kubeconfig is
    missing, unreadable, not YAML, or names no usable context."""
    from kubernetes import config

    path = location()
    _check_exists(path)
    try:
        _, active = config.list_kube_config_contexts(config_file=path)
        name = context or (active or {}).get("name") or ""
        api = config.new_client_from_config(config_file=path, context=context)
    except Exception as e:  # ConfigException, YAMLError, OSError; a malformed entry's TypeError
        raise problem(_reason(e), path, context) from None
    return Cluster(api, path, name)


def check_for_operator() -> None:
    """Before the operator starts: read the kubeconfig as its lightkube client will (one file), so
    that a wrong one stops it with one line instead of kopf's retries. Nothing to check in a pod
    without $KUBECONFIG: the ServiceAccount is used."""
    if "KUBECONFIG" not in os.environ and SERVICE_ACCOUNT_TOKEN.exists():
        return
    import lightkube

    path = location()
    _check_exists(path)
    try:
        lightkube.KubeConfig.from_file(path).get()
    except Exception as e:  # ConfigError, YAMLError, OSError; a malformed entry's TypeError
        raise problem(_reason(e), path) from None
