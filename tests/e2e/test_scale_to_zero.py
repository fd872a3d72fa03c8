"""The shipped scale-to-zero example, as written: at zero replicas, the first request wakes it and is
answered (issue 12, point 3).

The chain is real: the control plane with kwok nodes, the ModelDeployment operator, MinIO holding the
registered version, Prometheus scraping what the operator's own monitors select (`llmops.dev.scrape`),
the operator's gateway command holding the request and exporting `llmops_gateway_pending_requests`,
the operator's vLLM command on this CPU, and the official `openai` client.

What cannot run here, and what stands in for it:
- KEDA (only its CRDs are installed). `keda_poll` plays one cycle of KEDA's scale loop for the
  operator-built ScaledObject: it evaluates the object's own Prometheus triggers (serverAddress, query,
  activationThreshold, ignoreNullValues) and, as KEDA's scale executor does, scales the target
  Deployment through the scale subresource: to `idleReplicaCount` when no trigger is active (a new
  object has no cooldown to wait for), and from 0 to `minReplicaCount` when one is. It polls every
  2 s instead of the object's `pollingInterval`; the hand-over to the HPA above one replica is not played.
- The kubelet: kwok makes the scheduled pod Running and Ready; its containers then run here as
  `llmops dev serve` runs them (`llmops.dev.serve.run_version`, `run_gateway`).
- Cluster DNS: the gateway's upstream group is the version's headless Service, which answers with the
  ready pods only. Here it names the loopback address the vLLM process will listen on; until that
  process answers `GET /health` the gateway's own health check finds no ready replica, which is how
  the gateway sees a version at zero, so it holds the request.
- The GPU and AWQ: the example asks for one NVIDIA-L4 and `quantization: awq`. A kwok node labelled
  `nvidia.com/gpu.product: NVIDIA-L4` with four `nvidia.com/gpu` takes the pod (its GPU request and node
  selector are asserted); the served model is a tiny random Llama in float32, because vLLM's AWQ kernels
  need CUDA and an AWQ checkpoint, so `--quantization awq` is the one flag left out of the vLLM argv
  on this CPU. `maxModelLen: 4096` holds as written (the tiny model has 4096 positions).
- The registry endpoint `http://minio.llmops-system:9000` resolves only inside a cluster: as the
  quickstart does with `${S3_ENDPOINT}`, it is set to the dev MinIO's endpoint, and the Secret the
  example names (`registry-credentials`, keys `rootUser`/`rootPassword`) holds the dev MinIO's root
  credentials. The version the alias `production` points at is registered there first.
Everything else in the example is applied as shipped.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from openai import OpenAI

from llmops.api.common import ObjectStorageLocation
from llmops.dev import services
from llmops.dev.cluster import LocalCluster, free_port
from llmops.dev.serve import run_gateway, run_version, scrape, serving_deployments, wait_version
from llmops.gateway_config import ServiceEndpoints, UpstreamGroup
from llmops.operators.modeldeployment.plan import ServingSettings
from llmops.registry import GateVerdict, Lineage, register, set_alias
from llmops.serving.local import make_tiny_llama
from llmops.storage import Credentials, open_store
from tests.helpers import eventually, gpu_node, operator_in_thread, s3_client, stop_spawned

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "examples/modeldeployment-scale-to-zero.yaml"
pytestmark = [pytest.mark.timeout(1500), pytest.mark.usefixtures("llmops_crds")]


def _get(cluster: LocalCluster, namespace: str, kind: str, name: str) -> dict:
    return json.loads(cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json").stdout)


def trigger_value(trigger: dict) -> float:
    """A KEDA `prometheus` trigger's value: its query at its serverAddress, one sample expected; an
    empty answer is 0 with `ignoreNullValues` (KEDA's prometheus scaler)."""
    meta = trigger["metadata"]
    url = f"{meta['serverAddress']}/api/v1/query?" + urllib.parse.urlencode({"query": meta["query"]})
    with urllib.request.urlopen(url, timeout=10) as r:
        result = json.load(r)["data"]["result"]
    if not result:
        assert meta.get("ignoreNullValues") == "true", f"trigger {trigger['name']} has no data"
        return 0.0
    assert len(result) == 1, f"trigger {trigger['name']} returned {len(result)} series"
    return float(result[0]["value"][1])


def keda_poll(cluster: LocalCluster, namespace: str, scaled: dict) -> int | None:
    """One cycle of KEDA's scale loop for ScaledObject `scaled` (see the module docstring); returns
    the replicas it set, None when it left the target alone."""
    spec = scaled["spec"]
    target = spec["scaleTargetRef"]["name"]
    active = any(
        trigger_value(t) > float(t["metadata"].get("activationThreshold", "0")) for t in spec["triggers"]
    )
    current = _get(cluster, namespace, "deployment", target)["spec"]["replicas"]
    if active and current == 0:
        wanted = max(spec.get("minReplicaCount", 0), 1)
    elif (
        not active
        and current > 0
        and (idle := spec.get("idleReplicaCount", spec.get("minReplicaCount"))) == 0
    ):
        wanted = idle
    else:
        return None
    cluster.kubectl(
        "scale", "deployment", target, "-n", namespace, f"--replicas={wanted}"
    )  # the scale subresource
    return wanted


def _ensure_bucket(info: dict, bucket: str) -> None:

    s3 = s3_client(info)
    if bucket not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
        s3.create_bucket(Bucket=bucket)


@pytest.fixture
def stack() -> Iterator[contextlib.ExitStack]:
    with contextlib.ExitStack() as stack:
        yield stack


def test_the_scale_to_zero_example_wakes_on_the_first_request_and_answers_it(
    cluster: LocalCluster,
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    stack: contextlib.ExitStack,
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    example = yaml.safe_load(EXAMPLE.read_text())
    spec = example["spec"]
    md = example["metadata"]["name"]
    assert spec["autoscaling"]["scaleToZero"] and spec["autoscaling"]["engine"] == "keda"
    assert not spec.get("monitoring", {}).get("serviceMonitor"), "the example leaves the flag off"

    # The environment, set up as the docs say: a GPU node of the example's type, MinIO, Prometheus.
    node = stack.enter_context(gpu_node(cluster, spec["resources"]["gpuType"], gpus=4))
    minio = services.start_minio(cluster)
    prometheus = services.start_prometheus(cluster)["url"]
    s3 = spec["registry"]["s3"]
    _ensure_bucket(minio, s3["bucket"])
    s3["endpoint"] = minio["endpoint"]  # the in-cluster name does not resolve here (module docstring)
    ref = s3["credentialsSecretRef"]
    cluster.kubectl(
        "create", "secret", "generic", ref["name"], "-n", namespace,
        f"--from-literal={ref['accessKeyIdKey']}={minio['accessKeyId']}",
        f"--from-literal={ref['secretAccessKeyKey']}={minio['secretAccessKey']}",
    )  # fmt: skip
    # The registered version the alias points at: a tiny Llama that holds the example's maxModelLen.
    model = make_tiny_llama(
        tmp_path / "model",
        ROOT / "llmops/training/data/quickstart/train.jsonl",
        max_positions=spec["engine"]["maxModelLen"],
    )
    store = open_store(
        ObjectStorageLocation.model_validate(
            {"s3": {k: v for k, v in s3.items() if k != "credentialsSecretRef"}}
        ),
        Credentials(minio["accessKeyId"], minio["secretAccessKey"]),
    )
    gates = [GateVerdict(metric="accuracy", operator=">=", threshold=0.5, value=0.9, passed=True)]
    version = register(
        store, spec["model"]["name"], model, metrics={"accuracy": 0.9}, gates=gates, lineage=Lineage()
    ).version
    set_alias(store, spec["model"]["name"], spec["model"]["alias"], version)

    settings = ServingSettings(prometheus_url=prometheus, resync_seconds=600)
    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        _wake(cluster, namespace, example, settings, node, pool)
    finally:
        # The processes that played the pods, and their scrape targets, go with the test.
        stop_spawned(cluster, f"{md}-{version}-vllm", f"{md}-gateway")
        services.set_scrape_targets(cluster, [])
        pool.shutdown(cancel_futures=True)


def _wake(
    cluster: LocalCluster,
    namespace: str,
    example: dict,
    settings: ServingSettings,
    node: str,
    pool: concurrent.futures.ThreadPoolExecutor,
) -> None:
    """Apply the example, see it at zero, send the first request and see it answered."""
    spec, md = example["spec"], example["metadata"]["name"]
    with operator_in_thread(namespace, [_kind(settings)]):
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(example))
        cluster.kubectl("wait", f"md/{md}", "-n", namespace, "--for=condition=Ready", "--timeout=180s")
        vllm, gateway = serving_deployments(cluster, md, namespace)
        ((target, vllm_deployment),) = vllm.items()
        scaled = _get(cluster, namespace, "scaledobject", target)
        assert scaled["spec"]["scaleTargetRef"]["name"] == target

        # The gateway runs; its group is the version's replicas, none of which answers yet.
        vllm_port = free_port()

        def at_zero(group: UpstreamGroup) -> UpstreamGroup:
            assert group.service is not None, "a scaled-to-zero version is found through its Service"
            return group.model_copy(update={"service": ServiceEndpoints(host="127.0.0.1", port=vllm_port)})

        address, gateway_pod, config, keys = run_gateway(cluster, namespace, gateway, at_zero)
        scrape(cluster, md, namespace, [gateway_pod])
        pending = next(
            t
            for t in scaled["spec"]["triggers"]
            if "llmops_gateway_pending_requests" in t["metadata"]["query"]
        )
        # Prometheus has the gateway's series (0 pending), selected by the trigger's own query.
        eventually(lambda: _series(pending) is not None, timeout=60)

        # Created at KEDA's idle count (idleReplicaCount 0: autoscaling.start_replicas), where KEDA at
        # idle leaves it: no pod starts before the first request.
        assert _get(cluster, namespace, "deployment", target)["spec"]["replicas"] == 0
        eventually(
            lambda: _get(cluster, namespace, "deployment", target)["status"].get("replicas", 0) == 0, 60
        )
        assert keda_poll(cluster, namespace, scaled) is None  # and stays there while nobody asks

        # The first request: the gateway holds it, exports it as pending, and the trigger fires.
        client = OpenAI(base_url=f"http://{address}/v1", api_key=_key(keys), max_retries=0, timeout=900)
        answer = pool.submit(
            client.chat.completions.create,
            model=config.served_model_name,
            messages=[{"role": "user", "content": "Write the weekly report."}],
            max_tokens=16,
        )
        eventually(lambda: keda_poll(cluster, namespace, scaled), timeout=120, interval=2)
        assert not answer.done(), "the request was held, not refused"
        assert trigger_value(pending) == 1.0  # what woke it: the gateway's one held request
        deployment = _get(cluster, namespace, "deployment", target)
        assert deployment["spec"]["replicas"] == spec["autoscaling"]["minReplicas"] == 1

        # kwok runs the pod on the GPU node it asked for and reports it Ready.
        eventually(
            lambda: _get(cluster, namespace, "deployment", target)["status"].get("readyReplicas") == 1, 120
        )
        pods = json.loads(
            cluster.kubectl(
                "get",
                "pods",
                "-n",
                namespace,
                "-o",
                "json",
                "-l",
                ",".join(f"{k}={v}" for k, v in deployment["spec"]["selector"]["matchLabels"].items()),
            ).stdout
        )["items"]
        running = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        assert len(running) == 1 and running[0]["spec"]["nodeName"] == node
        (server,) = [c for c in running[0]["spec"]["containers"] if c["name"] == "vllm"]
        assert server["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert running[0]["spec"]["nodeSelector"]["nvidia.com/gpu.product"] == "NVIDIA-L4"
        assert "--quantization" in server.get("command", []) + server.get("args", [])

        # Its containers run here: the init container fetches the version from MinIO, vLLM serves it.
        vllm_pod = run_version(cluster, namespace, vllm_deployment, vllm_port, drop=("--quantization",))
        scrape(cluster, md, namespace, [gateway_pod, vllm_pod])
        wait_version(cluster, target, f"127.0.0.1:{vllm_port}")

        # The gateway notices the replica by itself and answers the held request.
        reply = answer.result(timeout=900)
        assert reply.model == config.served_model_name == spec["model"]["name"]
        assert reply.choices[0].message.content is not None
        assert reply.usage.completion_tokens > 0
        eventually(lambda: _series(pending) == 0.0, timeout=60)  # nothing held any more


def _series(trigger: dict) -> float | None:
    """The trigger query's value when Prometheus has the series (None while it has none)."""
    meta = trigger["metadata"]
    url = f"{meta['serverAddress']}/api/v1/query?" + urllib.parse.urlencode({"query": meta["query"]})
    with urllib.request.urlopen(url, timeout=10) as r:
        result = json.load(r)["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def _key(keys: Path | None) -> str:
    return next((p.read_text().strip() for p in sorted(keys.iterdir())), "none") if keys else "none"


def _kind(settings: ServingSettings):
    from llmops.operators.modeldeployment import make_kind

    return make_kind(settings, None)
