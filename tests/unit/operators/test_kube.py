"""The operator process stays off the `kubernetes` package (llmops/operators/kube.py, issue 17)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from llmops.operators import kube

# The operator's import path as `llmops operator` takes it: the CLI and its `operator` command, the
# operator module, every kind's handlers registered, the webhooks too (their certificate is made only
# when the operator starts serving them). Prints the names of the loaded modules that start with
# any of argv's prefixes.
OPERATOR_IMPORTS = """
import sys
import click
from llmops.cli import main
main.get_command(click.Context(main), "operator")
from llmops.operators.main import WebhookOptions, build_registry
build_registry(WebhookOptions())
prefixes = tuple(sys.argv[1:])
loaded = sorted(m for m in sys.modules if m in prefixes or m.startswith(tuple(p + "." for p in prefixes)))
print(len(sys.modules), "modules;", " ".join(loaded))
"""


def operator_imports(*prefixes: str) -> list[str]:
    """The modules of `prefixes` (packages or modules) that the operator process loads at start."""
    done = subprocess.run([sys.executable, "-c", OPERATOR_IMPORTS, *prefixes], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    print(done.stdout.strip())
    return done.stdout.split(";", 1)[1].split()


def test_the_operator_process_never_imports_the_kubernetes_client() -> None:
    """kopf imports `kubernetes.client` (865 modules, ~67 MiB) when it can; the operator's package
    hides it from kopf, and nothing of ours imports it."""
    assert operator_imports("kubernetes") == []


def test_the_operator_process_loads_no_command_line_client_of_httpx() -> None:
    """httpx imports its CLI (`rich`, `pygments`: ~4 MiB) when it can; the operator's package hides it."""
    assert operator_imports("rich", "pygments", "httpx._main") == []


def test_the_operator_process_imports_no_other_command_nor_the_webhook_certificates() -> None:
    """`llmops operator` loads no other sub-command's module (the developer cluster, the registry, the
    reports), and `cryptography` (about 7 MiB) only once it serves the admission webhook (issue 17)."""
    others = ["llmops.crdgen", "llmops.dev", "llmops.watch", "llmops.registry_cli", "llmops.audit_cli"]
    assert operator_imports("cryptography", "llmops.certs", "llmops.erasure", *others) == []


def test_a_label_selector_of_equality_terms() -> None:
    assert dict(kube._selector("a=b, c.io/d=e")) == {"a": "b", "c.io/d": "e"}
    with pytest.raises(ValueError, match="only equality terms"):
        dict(kube._selector("a!=b"))
    with pytest.raises(ValueError, match="only equality terms"):
        dict(kube._selector("a"))


def test_errors_are_ours_by_status() -> None:
    assert isinstance(kube._ours(None, 404, "NotFound", "x"), kube.NotFound)
    assert isinstance(kube._ours(None, 409, "AlreadyExists", "x"), kube.Conflict)
    refused = kube._ours(None, 422, "Invalid", "spec.replicas: Invalid value")
    assert type(refused) is kube.ApiError and refused.status == 422
    assert str(kube.KindNotServed("keda.sh/v1alpha1", "ScaledObject")) == (
        "the apiserver serves no ScaledObject in keda.sh/v1alpha1"
    )
    away = kube.Unreachable(None, "ConnectError", "[Errno 111] Connection refused")
    assert away.status is None and str(away) == (
        "the apiserver did not answer: ConnectError: [Errno 111] Connection refused"
    )
    assert kube._ours("1", 429, "TooManyRequests", "storage is (re)initializing").retry_after == 1.0
