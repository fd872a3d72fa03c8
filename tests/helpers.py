"""Small helpers shared by the test suites."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from llmops.dev.cluster import LocalCluster, free_port, process_alive

T = TypeVar("T")


def eventually(check: Callable[[], T], timeout: float = 60, interval: float = 0.5) -> T:
    """Poll until `check()` returns something truthy and return it.

    A readiness wait for asynchronous controllers, not a timing assertion: the timeout is generous.
    """
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s; last value: {last!r}")


def when_webhooks_answer(
    cluster: LocalCluster,
    namespace: str,
    manifest: str,
    answered: Callable[[subprocess.CompletedProcess], Any],
    *kubectl_args: str,
    timeout: float = 60,
) -> subprocess.CompletedProcess:
    """Apply `manifest` as a server-side dry run until `answered(result)` holds; return that result.

    The wait before a test relies on the operator's admission webhooks: kopf creates each webhook
    configuration empty and adds its webhooks after, and the apiserver takes up a configuration a
    moment later, so a request sent in between is admitted unchecked. A dry run calls the webhooks
    (theirs are sideEffects None or NoneOnDryRun) and stores nothing. `kubectl_args` go to `kubectl
    apply` (an `--as`, an `-o`).
    """

    def probe() -> subprocess.CompletedProcess | None:
        result = cluster.kubectl(
            "apply", "--dry-run=server", *kubectl_args, "-n", namespace, "-f", "-",
            input=manifest, check=False,
        )  # fmt: skip
        return result if answered(result) else None

    return eventually(probe, timeout)


# The Pod Security Standard every namespace the tests make enforces (issue 17, point 7): the real
# apiserver's PodSecurity admission then checks each pod the operators' children get.
POD_SECURITY_LEVEL = "restricted"
# The one exception, for the test modules whose ModelDeployments read a `local` registry: the vLLM pod
# mounts it as a hostPath volume (llmops/operators/modeldeployment/vllm.py), which `restricted` and
# `baseline` both refuse, so their namespaces are `privileged`. Everything else in them is the same.
LOCAL_REGISTRY_POD_SECURITY = pytest.mark.pod_security(
    "privileged", reason="a local registry is a hostPath volume in the vLLM pod"
)


def create_namespace(cluster: LocalCluster, name: str, level: str = POD_SECURITY_LEVEL) -> None:
    """Create namespace `name` labelled `pod-security.kubernetes.io/enforce=<level>` (and `warn`, so
    a workload whose pods would be refused gets a warning when it is applied)."""
    cluster.kubectl("create", "namespace", name)
    cluster.kubectl(
        "label", "namespace", name,
        f"pod-security.kubernetes.io/enforce={level}", f"pod-security.kubernetes.io/warn={level}",
    )  # fmt: skip


def pod_security_refusals(cluster: LocalCluster, namespace: str) -> list[str]:
    """The FailedCreate events of `namespace` that PodSecurity admission caused, as
    "<kind>/<name>: <message>" (a controller's pod it refused leaves nothing else behind)."""
    out = cluster.kubectl(
        "get", "events", "-n", namespace, "--field-selector", "reason=FailedCreate", "-o", "json", check=False
    )  # fmt: skip
    if out.returncode != 0:
        return []
    return [
        f"{e['involvedObject']['kind']}/{e['involvedObject']['name']}: {e['message']}"
        for e in json.loads(out.stdout)["items"]
        if "violates PodSecurity" in e.get("message", "")
    ]


@contextlib.contextmanager
def operator_in_thread(namespace: str, kinds: list) -> Iterator[None]:
    """The real operator runtime (operators.main's registry) for `kinds`, in a thread of this process,
    watching `namespace` only; stopped on exit. KUBECONFIG must name the test cluster."""
    import asyncio
    import threading

    import kopf

    from llmops.operators.main import build_registry, memories

    registry = build_registry(webhook=None, kinds=kinds)
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(
        target=lambda: asyncio.run(
            kopf.operator(
                registry=registry,
                memories=memories(),
                standalone=True,
                namespaces=[namespace],
                stop_flag=stop,
                ready_flag=ready,
            )
        )
    )
    thread.start()
    try:
        assert ready.wait(30), "the in-process operator did not start"
        yield
    finally:
        stop.set()
        thread.join(60)


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:  # not listening yet
        return 0, ""


@contextlib.contextmanager
def operator_process(
    cluster: LocalCluster, namespace: str, *extra: str, kubeconfig: Path | None = None
) -> Iterator[dict]:
    """`llmops operator` as users run it, in its own process, watching one namespace.

    `kubeconfig` runs it as someone else (for example a ServiceAccount token); default: the admin.
    """
    ports = {"metrics": free_port(), "health": free_port(), "webhook": free_port()}
    # One file per process, numbered: a test that restarts the operator keeps every run's log.
    runs = len(list(cluster.logs.glob(f"operator-{namespace}*.log")))
    log = cluster.logs / (f"operator-{namespace}.log" if not runs else f"operator-{namespace}-{runs}.log")
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llmops.cli",
                "operator",
                "--namespace",
                namespace,
                "--metrics-port",
                str(ports["metrics"]),
                "--health-port",
                str(ports["health"]),
                "--webhook-port",
                str(ports["webhook"]),
                *extra,
            ],
            env={**os.environ, "KUBECONFIG": str(kubeconfig or cluster.kubeconfig)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        started(proc, ports["health"], log)
        yield {"proc": proc, "log": log, **ports}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(60)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def started(proc: subprocess.Popen, health_port: int, log: Path, timeout: float = 180) -> None:
    """Wait until the operator answers /healthz (kopf serves it once the startup handlers are done).

    Generous: on CI's two cores, beside a worker training or serving, one start went past the 60 s
    this wait had (tests/cluster/test_audit.py, 2026-12-05; its log was gone, so why is not known).
    A failure now says whether the process exited and ends with its log, which is otherwise removed
    with the cluster's state folder."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if http_get(f"http://127.0.0.1:{health_port}/healthz")[0] == 200:
            return
        time.sleep(0.5)
    exited = proc.poll() is not None
    state = f"exited with {proc.returncode}" if exited else f"no /healthz within {timeout:.0f}s"
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
    raise AssertionError(f"llmops operator did not start ({state}); the end of {log}:\n{tail}")


@contextlib.contextmanager
def gpu_node(cluster: LocalCluster, product: str, gpus: int = 8) -> Iterator[str]:
    """A kwok node with `gpus` nvidia.com/gpu labelled `nvidia.com/gpu.product: <product>` and tainted
    as NVIDIA's GPU operator does; yields its name once it is Ready, and deletes it on exit (so that
    later tests' GPU pods without a product find only the cluster's own kwok-gpu-0)."""
    import json

    import yaml

    from llmops.dev.cluster import FakeNode
    from llmops.operators.manifests import dns_label

    name = f"kwok-{dns_label(product)}-0"
    node = FakeNode(name, cpu="64", memory="512Gi", gpus=gpus, gpu_product=product)
    cluster.kubectl("create", "-f", "-", input=yaml.safe_dump(node.manifest()))

    def ready() -> bool:
        got = json.loads(cluster.kubectl("get", "node", name, "-o", "json").stdout)
        taints = {t["key"] for t in got.get("spec", {}).get("taints", [])}
        conditions = got.get("status", {}).get("conditions", [])
        return "node.kubernetes.io/not-ready" not in taints and any(
            c["type"] == "Ready" and c["status"] == "True" for c in conditions
        )

    try:
        eventually(ready, timeout=60)
        yield name
    finally:
        cluster.kubectl("delete", "node", name, "--wait=false", check=False)


def s3_client(minio: dict) -> Any:
    """A boto3 S3 client of a test's MinIO: the dev services' record (endpoint, accessKeyId,
    secretAccessKey) or a test server's (endpoint, access_key, secret_key)."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=minio["endpoint"],
        aws_access_key_id=minio.get("accessKeyId") or minio["access_key"],
        aws_secret_access_key=minio.get("secretAccessKey") or minio["secret_key"],
        region_name="us-east-1",
    )


def stop_spawned(cluster: LocalCluster, *names: str) -> None:
    """Stop the processes a test spawned in `cluster` under `names` (`llmops dev serve`'s pods): SIGTERM
    to each one's process group, then wait until each is gone."""
    procs = cluster.processes()
    names = tuple(n for n in names if n in procs)
    for name in names:
        if procs[name][1]:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(procs[name][0], signal.SIGTERM)
    for name in names:
        exe = cluster.state()["exes"][name]
        eventually(lambda name=name, exe=exe: not process_alive(procs[name][0], exe), 60)
