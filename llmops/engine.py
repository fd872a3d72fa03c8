"""How a model version is served: the vLLM command line, and the command that fetches the weights.

One pure function, `vllm_argv`, turns `ModelDeployment.spec.engine` into vLLM's OpenAI server
command. The operator puts it into the serving container, and local runs (the CPU demo, the
workload tests) start exactly the same argv, so what runs on a laptop is what was deployed.

`fetch_argv` is the init container's command: `python -m llmops.fetch` downloads the resolved
versions from the registry into the pod's model volume and verifies every checksum (llmops/fetch.py).

Layout of the model volume (`MODEL_ROOT`, an emptyDir in the pod, a temporary folder locally):

    <root>/model/...              the served version (weights, tokenizer, config)
    <root>/adapters/<name>/...    one folder per LoRA adapter, named as clients request it
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from llmops.api.common import ObjectStorageLocation
from llmops.api.modeldeployment import Engine

MODEL_ROOT = "/models"
VLLM_PORT = 8000
VLLM_MODULE = "vllm.entrypoints.openai.api_server"


def model_dir(root: str = MODEL_ROOT) -> str:
    return f"{root.rstrip('/')}/model"


def adapter_dir(name: str, root: str = MODEL_ROOT) -> str:
    return f"{root.rstrip('/')}/adapters/{name}"


def vllm_argv(
    engine: Engine,
    *,
    model_path: str,
    served_model_name: str,
    port: int = VLLM_PORT,
    host: str = "0.0.0.0",
    adapter_paths: Mapping[str, str] | None = None,
    quantization: str | None = None,
    python: str = "python",
) -> list[str]:
    """vLLM's OpenAI-compatible server command for `engine`.

    `quantization`: `--quantization` for the version served, as its manifest says how its weights
    are stored (the operator's versions.quantization); default `engine.quantization`.

    `adapter_paths` maps each `engine.loraAdapters[].name` to the folder holding that adapter
    (default: `adapter_dir(name)` under the model's root). `engine.extraArgs` come last, as given,
    so a user can override anything above (argparse keeps the last value).
    """
    argv = [
        python,
        "-m",
        VLLM_MODULE,
        "--model",
        model_path,
        "--served-model-name",
        served_model_name,
        "--host",
        host,
        "--port",
        str(port),
        "--dtype",
        engine.dtype,
        "--tensor-parallel-size",
        str(engine.tensor_parallel_size),
        "--gpu-memory-utilization",
        _number(engine.gpu_memory_utilization),
    ]
    if engine.max_model_len is not None:
        argv += ["--max-model-len", str(engine.max_model_len)]
    if (quantization := quantization or engine.quantization) is not None:
        argv += ["--quantization", quantization]
    if engine.lora_adapters:
        paths = dict(adapter_paths or {})
        root = model_path.rstrip("/").rsplit("/", 1)[0] or "/"
        modules = [f"{a.name}={paths.get(a.name) or adapter_dir(a.name, root)}" for a in engine.lora_adapters]
        argv += ["--enable-lora", "--max-loras", str(len(modules)), "--lora-modules", *modules]
    return [*argv, *engine.extra_args]


def lora_enabled(engine: Engine) -> bool:
    """Whether vLLM runs with LoRA on: adapters are configured, or `extraArgs` turn it on themselves
    (`--enable-lora`, or `--enable-lora=true` as vLLM's boolean flags also take it)."""
    return bool(engine.lora_adapters) or any(
        a == "--enable-lora" or (a.startswith("--enable-lora=") and a[14:].lower() not in ("false", "0"))
        for a in engine.extra_args
    )


def localize_argv(argv: Sequence[str], root: str | Path, replace: Mapping[str, str]) -> list[str]:
    """A pod's argv for this machine: this interpreter, the model volume at `root`, new flag values.

    What `llmops dev serve` and the GPU check run: the deployed command, with only what cannot hold
    outside the pod rewritten (`replace` maps a flag such as "--port" to its new value).
    """
    out: list[str] = []
    for i, arg in enumerate(argv):
        if i == 0 and arg in ("python", "python3"):
            arg = sys.executable
        elif out and out[-1] in replace:
            arg = replace[out[-1]]
        out.append(arg.replace(MODEL_ROOT, str(root)))
    return out


def _number(value: float) -> str:
    """0.9 -> "0.9", 1.0 -> "1": stable text for a float flag."""
    return f"{value:g}"


@dataclass(frozen=True)
class FetchItem:
    """One registered version to download, and the folder (relative to the root) it goes into."""

    folder: str  # "model" or "adapters/<name>"
    name: str
    version: str
    # Only this sub-folder of the version (a lora version's "adapter", without its merged model), kept
    # at its path: folder/<path>/...; "" for the whole version.
    path: str = ""

    def arg(self) -> str:
        return f"{self.folder}={self.name}:{self.version}" + (f"/{self.path}" if self.path else "")

    @classmethod
    def parse(cls, text: str) -> FetchItem:
        """FOLDER=NAME:VERSION, or FOLDER=NAME:VERSION/PATH for one sub-folder of the version."""
        folder, sep, ref = text.partition("=")
        name, sep2, rest = ref.rpartition(":")
        version, _, path = rest.partition("/")
        if not (sep and sep2 and folder and name and version) or any(
            p.startswith("/") or ".." in p for p in (folder, path)
        ):
            raise ValueError(
                f"expected FOLDER=NAME:VERSION[/PATH] with a relative folder and path, got {text!r}"
            )
        return cls(folder, name, version, path.strip("/"))


def fetch_argv(
    registry: ObjectStorageLocation,
    items: Sequence[FetchItem],
    *,
    root: str = MODEL_ROOT,
    python: str = "python",
) -> list[str]:
    """The init container's command: download `items` (resolved versions) from `registry` into `root`.

    Credentials are never on the command line: the fetcher reads AWS_ACCESS_KEY_ID and
    AWS_SECRET_ACCESS_KEY from its environment (secretKeyRef in the pod).
    """
    location = registry.model_dump_json(by_alias=True, exclude_none=True)
    return [python, "-m", "llmops.fetch", "--registry", location, "--into", root, *(i.arg() for i in items)]
