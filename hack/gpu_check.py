"""GPU check: the operator's vLLM container command, run on a GPU with a tiny model.

For `examples/modeldeployment-single.yaml` and `-lora-adapters.yaml`, the operator's own builder
(`llmops.operators.modeldeployment.vllm.vllm_deployment`) makes the vLLM Deployment; this script takes
its serving container's command and environment as deployed and runs them on this machine's GPU.
Only what cannot hold outside the pod is rewritten (`llmops.engine.localize_argv`): the interpreter,
the model volume's path, the host and the port. A tiny random Llama, and two LoRA adapters for it
made with peft, stand in for the registered versions that the init container would fetch.

Each server must come up, answer the official `openai` client from the GPU (a chat, a completion and
a streamed completion, and each LoRA adapter by its name) and export the vLLM metrics that the
operator's autoscaler and alerts query. With `--bench`, `bench/gateway_overhead.py` then runs against
the first server. A JSON report goes to `--out`.

    python hack/gpu_check.py [--out DIR] [--bench] [--only single|lora-adapters]

This needs a CUDA GPU and vLLM built for it; CI has neither, so it runs on a device machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llmops.api.modeldeployment import ModelDeploymentSpec  # noqa: E402
from llmops.dev.cluster import free_port  # noqa: E402
from llmops.engine import localize_argv  # noqa: E402
from llmops.operators.modeldeployment.autoscaling import scaler_queries  # noqa: E402
from llmops.operators.modeldeployment.names import vllm_name  # noqa: E402
from llmops.operators.modeldeployment.plan import Adapter, ServedVersion, ServingSettings  # noqa: E402
from llmops.operators.modeldeployment.vllm import vllm_deployment  # noqa: E402
from llmops.serving.local import make_lora_adapter, make_tiny_llama, stop, wait_healthy  # noqa: E402

CASES = ("single", "lora-adapters")
CORPUS = ROOT / "tests" / "serving" / "data" / "corpus.txt"


def deployed_container(case: str) -> tuple[ModelDeploymentSpec, dict, ServedVersion]:
    """The serving container of the vLLM Deployment the operator builds for the example `case`."""
    doc = yaml.safe_load((ROOT / "examples" / f"modeldeployment-{case}.yaml").read_text())
    name, spec = doc["metadata"]["name"], ModelDeploymentSpec.model_validate(doc["spec"])
    owner = {
        "apiVersion": "llmops.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": "gpu-check", "uid": "00000000-0000-4000-8000-000000000001"},
    }
    deployment_name = vllm_name(name, spec.model.name, "1", spec.model.name)
    served = ServedVersion(spec.model.name, "1", "stable", 100, deployment_name)
    adapters = tuple(Adapter(a.name, a.model.name, "1") for a in spec.engine.lora_adapters)
    deployment = vllm_deployment(spec, owner, served, adapters, ServingSettings())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return spec, {"owner": owner, **container}, served


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


def gpu_processes() -> str:
    try:
        return subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,process_name,used_memory", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"nvidia-smi failed: {e}"


def check_case(case: str, work: Path, bench: bool) -> dict:
    spec, container, served = deployed_container(case)
    root = work / case
    # bf16 weights, as real checkpoints declare them (`--dtype auto` follows the checkpoint).
    max_len = spec.engine.max_model_len or 512
    model = make_tiny_llama(root / "model", CORPUS, max_positions=max_len, dtype="bfloat16")
    names = [spec.engine.served_model_name or spec.model.name]
    for i, adapter in enumerate(spec.engine.lora_adapters):
        make_lora_adapter(model, root / "adapters" / adapter.name, seed=i + 1)
        names.append(adapter.name)
    port = free_port()
    argv = localize_argv(container["command"], root, {"--port": str(port), "--host": "127.0.0.1"})
    env = {**os.environ, **{e["name"]: e["value"] for e in container.get("env", []) if "value" in e}}
    env.update(HOME=str(root), HF_HOME=str(root / "hf"), VLLM_CACHE_ROOT=str(root / "vllm-cache"))
    report: dict = {"case": case, "deployed_command": container["command"], "run_argv": argv, "names": names}
    print(f"== {case}: {' '.join(argv)}", flush=True)
    log = root / "vllm.log"
    started = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, timeout=480, log=log)
        report["startup_seconds"] = round(time.monotonic() - started, 1)
        report["gpu_processes"] = gpu_processes()
        report["answers"] = ask(url, names)
        metrics = get(f"{url}/metrics")
        queries = scaler_queries(container["owner"], served)
        report["scaler_queries"] = queries
        # Each autoscaling query on vLLM's signals needs one of the metrics it names (old or new name).
        report["metrics_present"] = {
            signal: [m for m in re.findall(r"vllm:[a-z_:]+", query) if m in metrics]
            for signal, query in queries.items()
            if "vllm:" in query
        }
        report["ok"] = all(report["metrics_present"].values()) and all(
            a["ok"] for a in report["answers"].values()
        )
        if bench:
            report["bench"] = run_bench(url, names[0])
    except Exception as e:  # report and go on to the next case
        report["ok"] = False
        report["error"] = f"{type(e).__name__}: {e}"
    finally:
        stop(proc)
        report["log_tail"] = log.read_text()[-3000:] if not report.get("ok") else ""
    print(json.dumps({k: v for k, v in report.items() if k != "log_tail"}, indent=1), flush=True)
    if report["log_tail"]:
        print(report["log_tail"], flush=True)
    return report


def ask(url: str, names: list[str]) -> dict:
    from openai import OpenAI

    client = OpenAI(base_url=f"{url}/v1", api_key="unused")
    listed = {m.id for m in client.models.list().data}
    answers = {}
    for name in names:
        started = time.perf_counter()
        chat = client.chat.completions.create(
            model=name, messages=[{"role": "user", "content": "Where is my parcel?"}], max_tokens=16
        )
        plain = client.completions.create(model=name, prompt="The river ran low", max_tokens=16)
        chunks = list(
            client.completions.create(model=name, prompt="Once", max_tokens=16, stream=True, temperature=0)
        )
        answers[name] = {
            "listed": name in listed,
            "chat": chat.choices[0].message.content,
            "completion_tokens": plain.usage.completion_tokens,
            "stream_chunks": len(chunks),
            "seconds": round(time.perf_counter() - started, 3),
            "ok": name in listed and plain.usage.completion_tokens > 0 and len(chunks) > 1,
        }
    return answers


def run_bench(url: str, model: str) -> str:
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "gateway_overhead.py"),
            "--vllm-url",
            url,
            "--model",
            model,
            "--requests",
            "512",
            "--rounds",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    print(result.stdout, result.stderr[-3000:], flush=True)
    return result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="folder for report.json")
    parser.add_argument("--bench", action="store_true", help="run the gateway benchmark on the first case")
    parser.add_argument("--only", choices=CASES)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    cases = [args.only] if args.only else list(CASES)
    reports = []
    for i, case in enumerate(cases):
        reports.append(check_case(case, work, bench=args.bench and i == 0))
        if args.out:  # after each case: a run cut short still leaves what it found
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "report.json").write_text(json.dumps(reports, indent=1))
    print("GPU CHECK", "PASSED" if all(r["ok"] for r in reports) else "FAILED", flush=True)
    sys.exit(0 if all(r["ok"] for r in reports) else 1)


if __name__ == "__main__":
    main()
