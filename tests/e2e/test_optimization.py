"""Optimization end to end (issue 16): the quickstart's quantize and distill examples, as written, take a
registered version, compress it or distil it, gate the result against the version it came from in the
same run, register it with its lineage, and serve it with vLLM on the CPU behind the gateway, where the
official `openai` client gets an answer.

The chain is real: the control plane with kwok nodes; the TrainingJob and ModelDeployment operators in
one runtime; MinIO as the registry and data store; a local Ray head running the workload through the
Ray Jobs API (data preparation, llm-compressor in the optimize venv for quantize, Ray Train with the
teacher beside the student for distill, evaluation with the parent or teacher scored in the same run,
registration); the operator's vLLM and gateway commands run here (`llmops.dev.serve`).

What cannot run here, and what stands in for it:
- The kubelet: kwok makes the pods Running and Ready; their containers run here as `llmops dev serve`
  runs them (`run_version`, `run_gateway`).
- Cluster DNS: the gateway's upstream group names the version's headless Service; here it names the
  loopback address that version's vLLM listens on.
- The version the examples start from (`support-tiny`, filled in as ${MODEL_VERSION}) is a tiny random
  Llama written to MinIO as a checkpoint folder and imported with `llmops models import s3://...`, as a
  checkpoint from the Hub or a bucket is (the Hub itself is not reachable here). The examples'
  ${S3_ENDPOINT} and ${RAY_ADDRESS} are the dev MinIO's and Ray head's, as
  `make demo` fills them in.
- The ModelDeployment is examples/quickstart/modeldeployment.yaml with its name and `spec.model`
  pointed at each new version: the operator adds vLLM's --quantization from the quantized version's
  manifest by itself; it refuses the example's `dtype: float32` for the W8A8 version (Stalled,
  WrongContent), which is then served at bfloat16 (docs/quickstart.md says so).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from openai import OpenAI

from llmops import registry as reg
from llmops.api.common import ObjectStorageLocation
from llmops.dev import services
from llmops.dev.cluster import LocalCluster, free_port
from llmops.dev.serve import run_gateway, run_version, serving_deployments, wait_version
from llmops.gateway_config import UpstreamGroup
from llmops.serving.local import make_tiny_llama
from llmops.storage import Credentials, open_store
from tests.helpers import eventually, operator_in_thread, stop_spawned

ROOT = Path(__file__).parents[2]
QUICKSTART = ROOT / "llmops/training/data/quickstart"
EXAMPLES = ROOT / "examples/quickstart"
PARENT = "support-tiny"
CHECKPOINT = "s3://llmops/checkpoints/support-tiny"
pytestmark = [pytest.mark.timeout(2400), pytest.mark.usefixtures("llmops_crds")]


def render(path: Path, values: dict[str, str]) -> dict:
    """The example with ${NAME} filled in for the named variables only, as hack/demo.sh renders it."""
    text = re.sub(r"\$\{(\w+)\}", lambda m: values.get(m.group(1), m.group(0)), path.read_text())
    return yaml.safe_load(text)


def _get(cluster: LocalCluster, namespace: str, kind: str, name: str) -> dict:
    got = cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(got.stdout) if got.returncode == 0 else {}


class Served:
    """One ModelDeployment's vLLM and gateway pods, run here; stopped by `stop`."""

    def __init__(self, cluster: LocalCluster, namespace: str) -> None:
        self.cluster, self.namespace = cluster, namespace
        self.names: list[str] = []

    def start(self, md: str) -> tuple[str, list[str]]:
        """Run `md`'s vLLM Deployments and its gateway; returns the gateway's address and vLLM's argv."""
        vllm, gateway = serving_deployments(self.cluster, md, self.namespace)
        upstream, argvs = {}, []
        for name, deployment in vllm.items():
            port = free_port()
            run_version(self.cluster, self.namespace, deployment, port)
            self.names.append(name)
            upstream[name] = f"127.0.0.1:{port}"
            argvs.append(deployment["spec"]["template"]["spec"]["containers"][0]["command"])
        for name, address in upstream.items():
            wait_version(self.cluster, name, address)

        def local(group: UpstreamGroup) -> UpstreamGroup:
            address = upstream.get(group.service.host.split(".")[0] if group.service else "")
            return group.model_copy(
                update={"service": None, "replicas": [f"http://{address}"] if address else []}
            )

        address, _pod, _config, _keys = run_gateway(self.cluster, self.namespace, gateway, local)
        self.names.append(gateway["metadata"]["name"])
        return address, argvs[0]

    def stop(self) -> None:
        stop_spawned(self.cluster, *self.names)


@pytest.fixture
def served(cluster: LocalCluster, namespace: str) -> Iterator[Served]:
    local = Served(cluster, namespace)
    try:
        yield local
    finally:
        local.stop()


def test_quickstart_quantize_and_distill_examples_gate_register_and_serve(
    cluster: LocalCluster, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, served: Served
) -> None:
    from llmops.operators import trainingjob
    from llmops.operators.modeldeployment import make_kind
    from llmops.operators.modeldeployment.plan import ServingSettings

    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    # -- the environment, as the demo sets it up: MinIO (before Ray: the head brings its own storage
    # access), the local Ray head (it finds the optimize venv for llm-compressor), the Secrets.
    minio = services.start_minio(cluster)
    ray = services.start_ray(cluster)["address"]
    cluster.kubectl(
        "create", "secret", "generic", "minio-credentials", "-n", namespace,
        f"--from-literal=AWS_ACCESS_KEY_ID={minio['accessKeyId']}",
        f"--from-literal=AWS_SECRET_ACCESS_KEY={minio['secretAccessKey']}",
    )  # fmt: skip
    api_key = "demo-" + os.urandom(8).hex()
    cluster.kubectl(
        "create", "secret", "generic", "quickstart-api-keys", "-n", namespace,
        f"--from-literal=demo={api_key}",
    )  # fmt: skip
    creds = Credentials(minio["accessKeyId"], minio["secretAccessKey"])

    def store(prefix: str):
        location = {"s3": {"endpoint": minio["endpoint"], "bucket": "llmops", "prefix": prefix}}
        return open_store(ObjectStorageLocation.model_validate(location), creds)

    for path in (QUICKSTART / "train.jsonl", QUICKSTART / "eval.jsonl"):
        store("datasets/").upload_file(f"quickstart/{path.name}", path)
    registry = store("registry/")
    # The parent: a checkpoint in S3 (as one from the Hub or a bucket would be), imported as a version.
    parent = make_tiny_llama(tmp_path / "parent", QUICKSTART / "train.jsonl", max_positions=256)
    for path in parent.iterdir():
        store("checkpoints/support-tiny/").upload_file(path.name, path)
    env = os.environ | {
        "AWS_ACCESS_KEY_ID": minio["accessKeyId"],
        "AWS_SECRET_ACCESS_KEY": minio["secretAccessKey"],
        "AWS_ENDPOINT_URL_S3": minio["endpoint"],
        "LLMOPS_REGISTRY": "s3://llmops/registry",
    }
    imported = subprocess.run(
        [sys.executable, "-m", "llmops.cli", "models", "import", CHECKPOINT, PARENT, "-o", "json"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    version = json.loads(imported.stdout)["version"]
    assert (
        reg.read_version(registry, PARENT, version).lineage.base_model
        == "s3://llmops/checkpoints/support-tiny"
    )
    values = {"S3_ENDPOINT": minio["endpoint"], "RAY_ADDRESS": ray, "MODEL_VERSION": version}

    kinds = [trainingjob.KIND, make_kind(ServingSettings(resync_seconds=600))]
    with operator_in_thread(namespace, kinds):
        produced = {}
        for example in ("trainingjob-quantize.yaml", "trainingjob-distill.yaml"):
            job = render(EXAMPLES / example, values)
            name = job["metadata"]["name"]
            cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(job))
            eventually(
                lambda name=name: (
                    _get(cluster, namespace, "tj", name).get("status", {}).get("phase")
                    in ("Succeeded", "Failed")
                ),
                900,
            )
            status = _get(cluster, namespace, "tj", name)["status"]
            assert status["phase"] == "Succeeded", status
            relative = [g for g in status["gates"] if g.get("compare") in ("ratio", "difference")]
            assert relative and all(g["passed"] and g["baselineValue"] is not None for g in relative), status
            assert status["baseline"] == {
                "name": PARENT,
                "version": version,
                "metrics": status["baseline"]["metrics"],
            }
            model = status["modelVersion"]
            manifest = reg.read_version(registry, model["name"], model["version"])
            assert manifest.lineage.parent == f"{PARENT}:{version}", manifest.lineage
            assert manifest.lineage.method == job["spec"]["method"]["type"]
            assert manifest.lineage.recipe
            produced[example] = (model["name"], model["version"], manifest)
            for g in relative:
                print(
                    f"{example}: {g['metric']} {g['compare']} {g['compared']:.4f} (value {g['value']:.3f},"
                    f" parent {g['baselineValue']:.3f}) needs {g['operator']} {g['threshold']}"
                )

        quantized = produced["trainingjob-quantize.yaml"][2]
        assert quantized.described.quantization is not None
        assert quantized.described.quantization.method == "compressed-tensors"
        assert (quantized.described.quantization.scheme, quantized.described.quantization.algorithm) == (
            "W8A8",
            "SmoothQuantGPTQ",
        )
        assert "SmoothQuantModifier" in (quantized.lineage.recipe or "")
        assert produced["trainingjob-distill.yaml"][2].described.quantization is None

        # -- serve each new version: the quickstart ModelDeployment pointed at it.
        for example, (model, number, _manifest) in produced.items():
            md = render(EXAMPLES / "modeldeployment.yaml", values)
            md["metadata"]["name"] = name = model
            md["spec"]["model"] = {"name": model, "version": number}
            cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(md))
            if example.endswith("quantize.yaml"):
                # The example's float32 suits the unquantized version; W8A8's int8 kernels compute in 16
                # bits (on the GPU, and on CPUs with AMX, where vLLM would fail as it loads the model):
                # the operator refuses it, naming the field, and serves it once dtype is 16-bit.
                cluster.kubectl(
                    "wait", f"md/{name}", "-n", namespace, "--for=condition=Stalled", "--timeout=120s"
                )
                stalled = next(
                    c
                    for c in _get(cluster, namespace, "md", name)["status"]["conditions"]
                    if c["type"] == "Stalled"
                )
                assert (
                    stalled["reason"] == "WrongContent"
                    and "spec.engine.dtype is float32" in stalled["message"]
                )
                md["spec"]["engine"]["dtype"] = "bfloat16"
                cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(md))
            cluster.kubectl("wait", f"md/{name}", "-n", namespace, "--for=condition=Ready", "--timeout=180s")
            address, argv = served.start(name)
            quantization = argv[argv.index("--quantization") + 1] if "--quantization" in argv else None
            assert quantization == ("compressed-tensors" if example.endswith("quantize.yaml") else None)
            client = OpenAI(base_url=f"http://{address}/v1", api_key=api_key, max_retries=2, timeout=300)
            reply = client.chat.completions.create(
                model=md["spec"]["engine"]["servedModelName"],
                messages=[{"role": "user", "content": "How do I reset my password?"}],
                max_tokens=8,
            )
            assert reply.choices[0].message.content is not None and reply.usage.completion_tokens > 0
            print(
                f"{model}:{number} served (--quantization {quantization}):"
                f" {reply.choices[0].message.content!r}"
            )
            served.stop()
            served.names.clear()
