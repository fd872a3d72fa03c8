"""The operator runtime's own cost, on a real local control plane.

N ModelDeployments (no children) go through the shared path: the watch, parsing into the pydantic
spec, the runtime and one full status write per object (plus kopf's own bookkeeping annotation).
The baseline, in the same run and on the same apiserver, is the same status writes made directly
by one client in a loop. Prints both rates, their ratio and the operator's peak RSS.

    python bench/operator_overhead.py [--objects 1000]
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml
from kubernetes import client, config
from procfs import rss_mib  # bench/procfs.py, beside this script

from llmops.api import GROUP, MODEL_DEPLOYMENT, VERSION
from llmops.dev.cluster import LocalCluster
from llmops.operators.outcome import Outcome
from llmops.operators.runtime import status_patch

ROOT = Path(__file__).resolve().parents[1]
PLURAL = MODEL_DEPLOYMENT.plural


def objects(n: int) -> list[dict]:
    example = yaml.safe_load((ROOT / "examples" / "modeldeployment-scale-to-zero.yaml").read_text())
    out = []
    for i in range(n):
        obj = copy.deepcopy(example)
        obj["metadata"] = {"name": f"bench-{i:05d}"}
        out.append(obj)
    return out


def create_all(api: client.CustomObjectsApi, namespace: str, bodies: list[dict]) -> list[dict]:
    with ThreadPoolExecutor(8) as pool:
        return list(
            pool.map(
                lambda b: api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, b), bodies
            )
        )


def direct_status_writes(api: client.CustomObjectsApi, namespace: str, created: list[dict]) -> float:
    """The baseline: one client writes the same full status the operator would, one object at a time."""
    outcome = Outcome("reconciling", "Pending", "WaitingForServing", "accepted")
    start = time.perf_counter()
    for obj in created:
        status = status_patch(MODEL_DEPLOYMENT, obj, outcome)
        api.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, obj["metadata"]["name"], {"status": status}
        )
    return time.perf_counter() - start


def reconciled(api: client.CustomObjectsApi, namespace: str) -> int:
    items = api.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
    return sum(
        1 for o in items if (o.get("status") or {}).get("observedGeneration") == o["metadata"]["generation"]
    )


def main() -> None:
    import arguments  # bench/arguments.py, beside this script

    parser = arguments.parser(__doc__)
    parser.add_argument("--objects", type=int, default=1000, help="ModelDeployments to create")
    n = parser.parse_args().objects

    with tempfile.TemporaryDirectory(prefix="llmops-bench-") as tmp:
        cluster = LocalCluster(Path(tmp) / "cluster", tie_to_parent=True, install_crds=False)
        cluster.start()
        try:
            cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
            cluster.wait_established(f"crd/{MODEL_DEPLOYMENT.crd_name}")
            api = client.CustomObjectsApi(config.new_client_from_config(config_file=str(cluster.kubeconfig)))
            for ns in ("direct", "operator"):
                cluster.kubectl("create", "namespace", ns)

            created = create_all(api, "direct", objects(n))
            direct = direct_status_writes(api, "direct", created)

            create_all(api, "operator", objects(n))
            log = open(Path(tmp) / "operator.log", "w")  # noqa: SIM115 - closed below
            start = time.perf_counter()
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "llmops.cli",
                    "operator",
                    "--namespace",
                    "operator",
                    "--metrics-port",
                    "0",
                    "--health-port",
                    "0",
                ],
                env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                while (done := reconciled(api, "operator")) < n:
                    if proc.poll() is not None:
                        raise SystemExit(f"the operator exited ({proc.returncode}); see {log.name}")
                    time.sleep(0.25)
                operator = time.perf_counter() - start
                rss = rss_mib(proc.pid)[1]  # the peak
            finally:
                proc.terminate()
                proc.wait(60)
                log.close()
        finally:
            cluster.stop(remove=True)

    print(f"objects: {n} (done: {done})")
    print(f"direct status writes, one client: {n / direct:8.1f} objects/s ({direct:.1f} s)")
    print(f"operator shared path (from start): {n / operator:8.1f} objects/s ({operator:.1f} s)")
    print(f"ratio operator/direct: {direct / operator:.2f}")
    print(f"operator peak RSS: {rss:.0f} MiB")


if __name__ == "__main__":
    main()
