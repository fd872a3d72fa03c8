"""A real local Kubernetes control plane: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kwok (which plays the kubelet for fake nodes), on free loopback ports.

Everything lives in one state folder: certificates, etcd data, logs, the kubeconfig and
`state.json` with the process ids, so `llmops dev status/down` can find a cluster that
`llmops dev up` started from another process.

Over 400 lines on purpose: one control plane's lifecycle (certificates, the five processes in
order, fake nodes, third-party CRDs, teardown) shares one state folder and one set of ports.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from llmops.certs import ClusterPKI, create_cluster_pki
from llmops.dev.tools import binary, ensure_tools, go_module_dir

CONTEXT = "llmops-dev"
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"

# Controllers the tests and operators rely on: the Deployment -> ReplicaSet -> Pod chain,
# Jobs (KubeRay's submitter), garbage collection of owned objects, namespace deletion,
# EndpointSlices for Services and the default ServiceAccount in each namespace.
CONTROLLERS = [
    "deployment-controller",
    "replicaset-controller",
    "garbage-collector-controller",
    "job-controller",
    "namespace-controller",
    "endpointslice-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "disruption-controller",
    "horizontal-pod-autoscaler-controller",
    # Lifts the not-ready taint that admission puts on every new node once kwok reports it Ready.
    "node-lifecycle-controller",
]

# Stages from the kwok module: nodes become Ready and keep their leases; pods become Running
# and Ready, Job pods complete, deleted pods go away.
KWOK_STAGES = [
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
]


@dataclass(frozen=True)
class ThirdPartyCRDs:
    """CRDs we write objects of but never re-implement, read from their Go modules."""

    module: str
    version: str
    files: tuple[str, ...]


THIRD_PARTY_CRDS = [
    ThirdPartyCRDs(
        "github.com/ray-project/kuberay/ray-operator",
        "v1.5.0",
        (
            "config/crd/bases/ray.io_rayclusters.yaml",
            "config/crd/bases/ray.io_rayjobs.yaml",
            "config/crd/bases/ray.io_rayservices.yaml",
        ),
    ),
    ThirdPartyCRDs(
        "github.com/prometheus-operator/prometheus-operator",
        "v0.90.1",
        tuple(
            f"example/prometheus-operator-crd/monitoring.coreos.com_{p}.yaml"
            for p in ("servicemonitors", "podmonitors", "prometheusrules")
        ),
    ),
    ThirdPartyCRDs(
        "github.com/kedacore/keda/v2",
        "v2.18.0",
        (
            "config/crd/bases/keda.sh_scaledobjects.yaml",
            "config/crd/bases/keda.sh_triggerauthentications.yaml",
        ),
    ),
]


@dataclass(frozen=True)
class FakeNode:
    name: str
    cpu: str = "32"
    memory: str = "128Gi"
    gpus: int = 0
    gpu_product: str = "NVIDIA-H100-80GB-HBM3"

    def manifest(self) -> dict:
        capacity = {"cpu": self.cpu, "memory": self.memory, "pods": "110"}
        labels = {
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "type": "kwok",
        }
        spec: dict = {}
        if self.gpus:
            capacity["nvidia.com/gpu"] = str(self.gpus)
            labels |= {"nvidia.com/gpu.present": "true", "nvidia.com/gpu.product": self.gpu_product}
            # As the NVIDIA GPU operator does: only pods that ask for GPUs land here.
            spec["taints"] = [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.name, "labels": labels, "annotations": {KWOK_NODE_ANNOTATION: "fake"}},
            "spec": spec,
            "status": {
                "capacity": capacity,
                "allocatable": capacity,
                "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux"},
            },
        }


DEFAULT_NODES = (
    FakeNode("kwok-cpu-0"),
    FakeNode("kwok-cpu-1"),
    FakeNode("kwok-gpu-0", cpu="64", memory="512Gi", gpus=8),
)


class ClusterError(RuntimeError):
    """The cluster failed to start; the message names the component and its log."""


def free_port() -> int:
    """A port that is free now (one of `free_ports`)."""
    return free_ports(1)[0]


# Ports for local servers lie outside Linux's ephemeral range (net.ipv4.ip_local_port_range,
# 32768-60999 by default), from which every outgoing connection takes its local port, and above Ray's
# worker ports (--min-worker-port 10002 to --max-worker-port 19999, its defaults).
_LOWEST_PORT = 20000
_LEAST_BAND = 1000  # a range of fewer ports is not used
_ports_lock = threading.Lock()
_ports_given: dict[range, int] = {}  # the next port to try, per band: one process hands each out once per lap


def _ephemeral_ports() -> tuple[int, int]:
    """The first and last port of the kernel's ephemeral range (Linux's defaults where unreadable)."""
    try:
        first, last = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[:2])
    except (OSError, ValueError):
        return 32768, 60999
    return first, last


def _port_band() -> range:
    """This process's ports for local servers.

    Outside the ephemeral range there are two ranges: from 20000 up to it (the main one) and from
    above it to 65535 (the spare one). Under pytest-xdist the main range is split between the workers
    (PYTEST_XDIST_WORKER gwN of PYTEST_XDIST_WORKER_COUNT), so that two workers never pick the same
    port; a worker numbered past the count (xdist replaces a crashed worker under a new number) takes
    the spare range. Outside xdist: the main range. A range of under 1,000 ports is left out (the
    other serves for both); where both are, the ephemeral range itself is all there is."""
    first, last = _ephemeral_ports()
    below, above = range(_LOWEST_PORT, first), range(max(last + 1, _LOWEST_PORT), 65536)
    ranges = [r for r in (below, above) if len(r) >= _LEAST_BAND] or [range(first, last + 1)]
    main, spare = ranges[0], ranges[-1]
    worker, count = os.environ.get("PYTEST_XDIST_WORKER", ""), os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if not (worker.startswith("gw") and worker[2:].isdigit() and count.isdigit() and int(count) > 1):
        return main
    index, size = int(worker[2:]), len(main) // int(count)
    if index >= int(count):
        return spare
    if size < _LEAST_BAND:
        return main  # too many workers to split it: shared, each port still checked
    return range(main.start + index * size, main.start + (index + 1) * size)


def free_ports(n: int) -> list[int]:
    """`n` different ports, free now (bound on the IPv4 wildcard address as they are checked, which
    conflicts with any IPv4 or dual-stack listener on the port), for local servers. Thread-safe.

    Raises RuntimeError if this process's band (`_port_band`) has fewer than `n` free ports.

    A port asked of the kernel (bind to port 0) comes from its ephemeral range, which it also hands to
    every outgoing connection: in the seconds before the server that is given the port binds it, any
    process's connect() may take it (CI, 2026-12-06: "--health-port 33141: cannot listen ... Address
    already in use", the operator of a test started beside a worker training on Ray). So the ports
    come from outside that range, one band per pytest-xdist worker, and each process goes round its
    band from a random start, so that a port it released is not handed out again for a lap. Each port
    is held until all `n` are chosen: one call's ports never coincide."""
    if n <= 0:
        return []
    band = _port_band()
    with _ports_lock, contextlib.ExitStack() as held:
        ports: list[int] = []
        # A random start (not `random`'s: tests seed it), kept from one call to the next.
        cursor = _ports_given.get(band, band.start + secrets.randbelow(len(band)))
        for _ in range(len(band)):
            port, cursor = cursor, (band.start if cursor + 1 >= band.stop else cursor + 1)
            s = socket.socket()
            try:
                s.bind(("", port))
            except OSError:
                s.close()
                continue
            held.enter_context(s)
            ports.append(port)
            if len(ports) == n:
                _ports_given[band] = cursor
                return ports
    raise RuntimeError(f"fewer than {n} free ports in {band.start}-{band.stop - 1}")


def _die_with_parent() -> None:
    # Used for test clusters: if pytest is killed, its control plane goes with it.
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def process_alive(pid: int, name: str) -> bool:
    """True if pid runs `name` (a recycled pid running something else does not count)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state != "Z" and os.path.basename(cmdline.decode()) == name


def wait_for(what: str, check: Callable[[], bool], timeout: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.5)
    hint = f"; see {log}" if log else ""
    raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}{hint}")


@dataclass
class LocalCluster:
    """One local control plane rooted at `state_dir`.

    `tie_to_parent` makes every component die with the process that started it (tests);
    the CLI leaves it off so the cluster outlives `llmops dev up`. `apiserver_args` are further
    kube-apiserver flags, after ours (for a single-value flag the later one wins; a list flag such
    as `--authorization-mode` adds to ours), for every start of the apiserver by this object (a
    bench's `--watch-cache=false`); `controller_manager_args` are the same for
    kube-controller-manager (a bench's `--kube-api-qps=100`: its client's default, 20 requests per
    second, sets the pace of bulk rollouts). Neither is kept in the state folder, so another
    `LocalCluster` of the same folder starts them without them.
    """

    state_dir: Path
    nodes: tuple[FakeNode, ...] = DEFAULT_NODES
    tie_to_parent: bool = False
    install_crds: bool = True
    apiserver_args: tuple[str, ...] = ()
    controller_manager_args: tuple[str, ...] = ()
    _procs: dict[str, subprocess.Popen] = field(default_factory=dict, repr=False)

    # -- locations ---------------------------------------------------------------------------
    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def logs(self) -> Path:
        return self.state_dir / "logs"

    @property
    def _state_file(self) -> Path:
        return self.state_dir / "state.json"

    def state(self) -> dict:
        try:
            return json.loads(self._state_file.read_text())
        except (OSError, ValueError):
            return {}

    # -- queries -----------------------------------------------------------------------------
    def processes(self) -> dict[str, tuple[int, bool]]:
        """Each component's pid and whether it is alive."""
        state = self.state()
        exes = state.get("exes", {})
        return {
            name: (pid, process_alive(pid, exes.get(name, name)))
            for name, pid in state.get("pids", {}).items()
        }

    def running(self) -> bool:
        procs = self.processes()
        return bool(procs) and all(alive for _, alive in procs.values()) and self._readyz()

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.state()['ports']['apiserver']}"

    def _ssl_context(self) -> ssl.SSLContext:
        pki = ClusterPKI(self.state_dir / "pki")
        ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
        ctx.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))
        return ctx

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.server + path, context=self._ssl_context(), timeout=5) as r:
            return r.read()

    def _readyz(self) -> bool:
        try:
            return self.get("/readyz") == b"ok"
        except Exception:
            return False

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [binary("kubectl"), "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
        )
        if check and result.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args[:3])} failed: {result.stderr.strip()}")
        return result

    def wait_established(self, *crds: str, timeout: float = 60) -> None:
        """Wait until CRDs (`crd/<name>` or `-l <selector>` arguments to kubectl) are Established.

        `kubectl wait` fails at once, instead of waiting, on a CRD the apiserver has not given any
        status conditions yet ("conditions accessor error"), which happens right after an apply on a
        busy machine: that answer is asked again until `timeout` seconds have passed.
        """
        deadline = time.monotonic() + timeout
        while True:
            left = max(1, int(deadline - time.monotonic()))
            result = self.kubectl(
                "wait", "--for=condition=Established", f"--timeout={left}s", *crds, check=False
            )
            if result.returncode == 0:
                return
            if "accessor error" not in result.stderr or time.monotonic() >= deadline:
                raise ClusterError(f"CRDs not Established within {timeout:.0f}s: {result.stderr.strip()}")
            time.sleep(0.5)

    def wait_garbage_collected(self, *owners: tuple[str, str], timeout: float = 180) -> None:
        """Wait until the garbage collector (kube-controller-manager) deletes dependents of owners of
        these kinds (`(apiVersion, kind)` pairs), such as kinds whose CRDs were just installed.

        It learns of new kinds from discovery every 30 s; until then a dependent whose owner is of an
        unknown kind is retried with a backoff that doubles at every failure (up to 1,000 s), so an
        owner deleted soon after, or while the apiserver is away, can leave its dependents for minutes.
        The probe: a ConfigMap owned by one made-up object of each kind (uids that exist nowhere),
        which the collector deletes once it can look every one of them up: at once where it knows the
        kinds, up to about a minute (discovery, then the probe's own backoff) right after their CRDs
        are installed. Raises ClusterError after `timeout` seconds, the probe deleted.
        """
        name = f"gc-probe-{os.urandom(4).hex()}"
        refs = [
            {"apiVersion": api_version, "kind": kind, "name": name, "uid": str(uuid.uuid4())}
            for api_version, kind in owners
        ]
        probe = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "default", "ownerReferences": refs},
        }
        self.kubectl("create", "-f", "-", input=json.dumps(probe))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.kubectl(
                "get", "configmap", name, "-n", "default", "--ignore-not-found", "-o", "name"
            )
            if not found.stdout.strip():
                return
            time.sleep(1)
        self.kubectl("delete", "configmap", name, "-n", "default", "--ignore-not-found", check=False)
        raise ClusterError(
            f"the garbage collector did not collect a dependent of {', '.join(k for _, k in owners)} "
            f"within {timeout:.0f}s (configmap/{name} in default; kube-controller-manager's log says why)"
        )

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, progress: Callable[[str], None] = lambda _: None) -> None:
        """Start every component and wait until the cluster is usable. Idempotent."""
        if self.running():
            progress(f"already running at {self.server}")
            return
        self.stop()  # leftovers of a half-dead cluster
        ensure_tools("k8s", "etcd", "kwok")
        self.logs.mkdir(parents=True, exist_ok=True)
        pki = create_cluster_pki(self.state_dir / "pki")
        names = ("etcd", "etcd_peer", "apiserver", "scheduler", "kwok")
        ports = dict(zip(names, free_ports(len(names)), strict=True))
        self.save_state({"ports": ports, "pids": {}})
        try:
            self._start_etcd(ports)
            progress("etcd ready")
            self._start_apiserver(ports, pki)
            self._write_kubeconfig(ports, pki)
            wait_for("kube-apiserver /readyz", self._readyz, 90, self.logs / "kube-apiserver.log")
            progress(f"kube-apiserver ready at {self.server}")
            self._start_controllers(ports, pki)
            self._create_nodes()
            wait_for("fake nodes to become Ready", self._nodes_ready, 60, self.logs / "kwok.log")
            progress(f"{len(self.nodes)} kwok nodes Ready")
            wait_for(
                "the default ServiceAccount (kube-controller-manager)",
                lambda: self.kubectl("get", "serviceaccount", "default", check=False).returncode == 0,
                60,
                self.logs / "kube-controller-manager.log",
            )
            if self.install_crds:
                self.install_third_party_crds()
                progress("KubeRay, prometheus-operator and KEDA CRDs installed")
        except BaseException:
            self.stop()
            raise

    def stop(self, remove: bool = False) -> None:
        """Stop every component (SIGTERM, then SIGKILL) and optionally remove the state folder."""
        for _name, (pid, alive) in reversed(list(self.processes().items())):
            if alive:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        exes = self.state().get("exes", {})
        for component, (pid, _) in self.processes().items():
            name = exes.get(component, component)
            while process_alive(pid, name) and time.monotonic() < deadline:
                if component in self._procs:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self._procs[component].wait(0.2)
                else:
                    time.sleep(0.2)
            if process_alive(pid, name):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
            if component in self._procs:
                self._procs.pop(component).wait()
            gone_by = time.monotonic() + 10
            while process_alive(pid, name) and time.monotonic() < gone_by:
                time.sleep(0.1)
        if self._state_file.exists():
            self.save_state({**self.state(), "pids": {}})
        if remove and self.owns_state_dir():
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def owns_state_dir(self) -> bool:
        """Whether `state_dir` is a folder a cluster made (its state.json is there): the only kind
        `stop(remove=True)` deletes."""
        return self._state_file.is_file()

    # -- one component at a time (fault tests) -----------------------------------------------
    RESTARTABLE = ("etcd", "kube-apiserver")

    def stop_component(self, name: str) -> None:
        """Stop one component (SIGTERM, then SIGKILL after 20 s) and leave the others running: an
        outage of etcd or kube-apiserver as a client sees it. `start_component` brings it back."""
        if name not in self.RESTARTABLE:
            raise ValueError(f"component: {name!r} is not one of {', '.join(self.RESTARTABLE)}")
        pid, alive = self.processes()[name]
        exe = self.state().get("exes", {}).get(name, name)
        if alive:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
        proc = self._procs.pop(name, None)
        deadline = time.monotonic() + 20
        while process_alive(pid, exe) and time.monotonic() < deadline:
            if proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(0.2)
            else:
                time.sleep(0.2)
        if process_alive(pid, exe):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        if proc is not None:
            proc.wait()

    def start_component(self, name: str) -> None:
        """Start a component that `stop_component` stopped, on the same ports, data and certificates,
        and wait until it answers (etcd: /health; kube-apiserver: /readyz, which needs etcd)."""
        if name not in self.RESTARTABLE:
            raise ValueError(f"component: {name!r} is not one of {', '.join(self.RESTARTABLE)}")
        ports = self.state()["ports"]
        if name == "etcd":
            self._start_etcd(ports)
        else:
            self._start_apiserver(ports, ClusterPKI(self.state_dir / "pki"))
            wait_for("kube-apiserver /readyz", self._readyz, 90, self.logs / "kube-apiserver.log")

    # -- components --------------------------------------------------------------------------
    def save_state(self, state: dict) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self._state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self._state_file)

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        """Start a process that belongs to this cluster: logged, recorded, stopped by `stop()`."""
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent if self.tie_to_parent else None,
        )
        log.close()
        self._procs[name] = proc
        state = self.state()
        state["pids"][name] = proc.pid
        state.setdefault("exes", {})[name] = os.path.basename(argv[0])
        self.save_state(state)

    def _spawn(self, name: str, args: list[str]) -> None:
        self.spawn(name, [binary(name), *args])

    def _start_etcd(self, ports: dict) -> None:
        client, peer = f"http://127.0.0.1:{ports['etcd']}", f"http://127.0.0.1:{ports['etcd_peer']}"
        self._spawn(
            "etcd",
            [
                "--name=default",
                f"--data-dir={self.state_dir / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=default={peer}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )

        def healthy() -> bool:
            with urllib.request.urlopen(f"{client}/health", timeout=2) as r:
                return json.load(r).get("health") == "true"

        wait_for("etcd", healthy, 30, self.logs / "etcd.log")

    def _start_apiserver(self, ports: dict, pki: ClusterPKI) -> None:
        port = ports["apiserver"]
        self._spawn(
            "kube-apiserver",
            [
                f"--etcd-servers=http://127.0.0.1:{ports['etcd']}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={self.state_dir / 'apiserver-certs'}",
                f"--tls-cert-file={pki.serving_cert}",
                f"--tls-private-key-file={pki.serving_key}",
                f"--client-ca-file={pki.ca_cert}",
                "--authorization-mode=Node,RBAC",
                f"--service-account-issuer=https://127.0.0.1:{port}",
                f"--service-account-key-file={pki.service_account_key}",
                f"--service-account-signing-key-file={pki.service_account_key}",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--allow-privileged=true",
                # No kube-proxy here: nothing maintains the `kubernetes` Service endpoints.
                "--endpoint-reconciler-type=none",
                *self.apiserver_args,
            ],
        )

    def _write_kubeconfig(self, ports: dict, pki: ClusterPKI) -> None:
        def b64(p: Path) -> str:
            return base64.b64encode(p.read_bytes()).decode()

        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": CONTEXT,
            "clusters": [
                {
                    "name": CONTEXT,
                    "cluster": {
                        "server": f"https://127.0.0.1:{ports['apiserver']}",
                        "certificate-authority-data": b64(pki.ca_cert),
                    },
                }
            ],
            "users": [
                {
                    "name": "llmops-admin",
                    "user": {
                        "client-certificate-data": b64(pki.admin_cert),
                        "client-key-data": b64(pki.admin_key),
                    },
                }
            ],
            "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": "llmops-admin"}}],
        }
        self.kubeconfig.write_text(yaml.safe_dump(config))
        self.kubeconfig.chmod(0o600)

    def _start_controllers(self, ports: dict, pki: ClusterPKI) -> None:
        kubeconfig = f"--kubeconfig={self.kubeconfig}"
        self._spawn(
            "kube-controller-manager",
            [
                kubeconfig,
                "--leader-elect=false",
                "--secure-port=0",
                f"--controllers={','.join(CONTROLLERS)}",
                f"--service-account-private-key-file={pki.service_account_key}",
                f"--root-ca-file={pki.ca_cert}",
                "--use-service-account-credentials=false",
                # The garbage collector's decisions and retries ("unable to get REST mapping"): a
                # few hundred lines a test session, what says why a child outlived its parent.
                "--vmodule=garbagecollector=5,graph_builder=2",
                *self.controller_manager_args,
            ],
        )
        self._spawn(
            "kube-scheduler",
            [
                kubeconfig,
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={ports['scheduler']}",
            ],
        )
        kwok_dir = go_module_dir("sigs.k8s.io/kwok", tool="kwok")
        self._spawn(
            "kwok",
            [
                kubeconfig,
                f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
                f"--server-address=127.0.0.1:{ports['kwok']}",
                "--node-lease-duration-seconds=40",
                *(f"--config={kwok_dir / stage}" for stage in KWOK_STAGES),
            ],
        )

    def _create_nodes(self) -> None:
        manifests = "\n---\n".join(yaml.safe_dump(n.manifest()) for n in self.nodes)
        # Nodes accept status on create, so capacity (GPUs included) is set in one step.
        self.kubectl("create", "-f", "-", input=manifests)

    def _nodes_ready(self) -> bool:
        """Every node Ready, and schedulable: the not-ready taint from admission is gone."""
        nodes = json.loads(self.kubectl("get", "nodes", "-o", "json").stdout)["items"]

        def usable(node: dict) -> bool:
            ready = any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in node.get("status", {}).get("conditions", [])
            )
            taints = {t["key"] for t in node.get("spec", {}).get("taints", [])}
            return ready and "node.kubernetes.io/not-ready" not in taints

        return sum(map(usable, nodes)) == len(self.nodes)

    def install_third_party_crds(self) -> None:
        files = [go_module_dir(c.module, c.version) / f for c in THIRD_PARTY_CRDS for f in c.files]
        # Server-side apply: the Ray CRDs are too big for the last-applied annotation.
        args = ["apply", "--server-side", "--force-conflicts", "--field-manager=llmops-dev"]
        for f in files:
            args += ["-f", str(f)]
        self.kubectl(*args)
        self.wait_established(*(f"crd/{yaml.safe_load(f.read_text())['metadata']['name']}" for f in files))
