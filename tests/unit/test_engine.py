"""The vLLM command (llmops/engine.py:vllm_argv)."""

from __future__ import annotations

import sys

import pytest

from llmops import engine
from llmops.api.modeldeployment import (
    Engine,
)
from tests.unit.operators.modeldeployment.cases import (
    example,
)


def test_vllm_argv_every_flag() -> None:
    spec = Engine.model_validate(
        {
            "servedModelName": "ignored-here",
            "maxModelLen": 8192,
            "dtype": "bfloat16",
            "tensorParallelSize": 2,
            "quantization": "awq",
            "gpuMemoryUtilization": 0.85,
            "loraAdapters": [
                {"name": "billing", "model": {"name": "b", "version": "1"}},
                {"name": "shipping", "model": {"name": "s", "alias": "prod"}},
            ],
            "extraArgs": ["--max-lora-rank=64", "--enforce-eager"],
        }
    )
    argv = engine.vllm_argv(spec, model_path="/models/model", served_model_name="bot", port=9000)
    assert argv == [
        "python", "-m", "vllm.entrypoints.openai.api_server",
        "--model", "/models/model",
        "--served-model-name", "bot",
        "--host", "0.0.0.0",
        "--port", "9000",
        "--dtype", "bfloat16",
        "--tensor-parallel-size", "2",
        "--gpu-memory-utilization", "0.85",
        "--max-model-len", "8192",
        "--quantization", "awq",
        "--enable-lora", "--max-loras", "2",
        "--lora-modules", "billing=/models/adapters/billing", "shipping=/models/adapters/shipping",
        "--max-lora-rank=64", "--enforce-eager",
    ]  # fmt: skip


def test_vllm_argv_defaults_and_local_paths() -> None:
    argv = engine.vllm_argv(
        Engine(), model_path="/tmp/m/model", served_model_name="tiny", python=sys.executable
    )
    assert argv[0] == sys.executable
    assert "--max-model-len" not in argv and "--quantization" not in argv and "--enable-lora" not in argv
    assert (
        argv[argv.index("--dtype") + 1] == "auto"
        and argv[argv.index("--gpu-memory-utilization") + 1] == "0.9"
    )
    lora = Engine.model_validate({"loraAdapters": [{"name": "a", "model": {"name": "x", "version": "1"}}]})
    argv = engine.vllm_argv(
        lora, model_path="/tmp/m/model", served_model_name="t", adapter_paths={"a": "/elsewhere"}
    )
    assert argv[argv.index("--lora-modules") + 1] == "a=/elsewhere"


def _vllm_parser():
    """vLLM's own server argument parser, wherever this vLLM keeps it (skip when vLLM is absent)."""
    import importlib

    pytest.importorskip("vllm")
    for module, flexible in (
        ("vllm.entrypoints.launchers.cli_args", "vllm.utils.argparse_utils"),
        ("vllm.entrypoints.openai.cli_args", "vllm.utils"),
    ):
        try:
            make = importlib.import_module(module).make_arg_parser
            parser_class = importlib.import_module(flexible).FlexibleArgumentParser
        except (ImportError, AttributeError):
            continue
        return make(parser_class())
    pytest.skip("this vLLM keeps its argument parser elsewhere")


def test_vllm_argv_parses_with_vllms_own_flags() -> None:
    """The flags we emit are flags vLLM's parser knows, when vLLM is installed here."""
    parser = _vllm_parser()
    _, spec = example("lora-adapters")
    argv = engine.vllm_argv(spec.engine, model_path="/models/model", served_model_name="bot")
    args = parser.parse_args(argv[3:])
    assert args.model == "/models/model" and args.served_model_name == ["bot"]
    assert args.max_model_len == 8192 and args.enable_lora and args.max_loras == 4  # extraArgs win
    assert [m.name for m in args.lora_modules] == ["billing", "shipping"]
    _, spec = example("canary")
    args = parser.parse_args(engine.vllm_argv(spec.engine, model_path="/m", served_model_name="bot")[3:])
    assert args.tensor_parallel_size == 1 and args.gpu_memory_utilization == 0.9 and args.port == 8000


def test_the_versions_quantization_comes_from_its_manifest() -> None:
    """A quantized version gets --quantization from its manifest; a contradicting spec is refused."""
    from llmops.operators.modeldeployment.versions import WrongContent, quantization
    from llmops.registry import Content, ModelVersion, Quantization

    def version(content: Content | None) -> ModelVersion:
        return ModelVersion(
            name="bot", version="2", created_at="2026-11-30T00:00:00+00:00", artifacts={}, content=content
        )

    quantized = version(Content(quantization=Quantization(method="compressed-tensors", scheme="W4A16")))
    assert quantization(quantized, None, "spec.model") == "compressed-tensors"
    assert quantization(quantized, "compressed-tensors", "spec.model") == "compressed-tensors"
    with pytest.raises(
        WrongContent,
        match=r"spec.engine.quantization is gptq, but spec.rollout.canary.model bot:2 is"
        r" quantized as compressed-tensors W4A16",
    ):
        quantization(quantized, "gptq", "spec.rollout.canary.model")
    assert quantization(version(None), "fp8", "spec.model") == "fp8"  # vLLM quantizes as it loads
    int4 = version(Content(quantization=Quantization(method="compressed-tensors", format="pack-quantized")))
    assert quantization(int4, None, "spec.model", "bfloat16") == "compressed-tensors"
    with pytest.raises(WrongContent, match=r"spec.engine.dtype is float32, but spec.model bot:2 holds int4"):
        quantization(int4, None, "spec.model", "float32")
    int8 = version(
        Content(quantization=Quantization(method="compressed-tensors", format="int-quantized", scheme="W8A8"))
    )
    assert quantization(int8, None, "spec.model", "auto") == "compressed-tensors"
    with pytest.raises(
        WrongContent,
        match=r"spec.engine.dtype is float32, but spec.model bot:2 holds int8 weights and activations"
        r" \(int-quantized, W8A8\), whose vLLM kernels compute in 16 bits; set spec.engine.dtype to auto",
    ):
        quantization(int8, None, "spec.model", "float32")
    assert (
        quantization(quantized, None, "spec.model", "float32") == "compressed-tensors"
    )  # no format: W8A8 ok
    assert quantization(version(Content()), None, "spec.model") is None
    argv = engine.vllm_argv(
        Engine(quantization="fp8"), model_path="/m", served_model_name="b", quantization="compressed-tensors"
    )
    assert (
        argv[argv.index("--quantization") + 1] == "compressed-tensors" and argv.count("--quantization") == 1
    )


def test_lora_is_on_with_adapters_or_when_extra_args_turn_it_on() -> None:
    """`engine.lora_enabled` says what the gateway must know (it refuses prompt logprobs there)."""
    adapters = [{"name": "billing", "model": {"name": "billing", "version": "1"}}]
    assert engine.lora_enabled(Engine.model_validate({"loraAdapters": adapters}))
    for args, on in [
        ([], False),
        (["--enable-lora"], True),
        (["--enable-lora=true"], True),
        (["--enable-lora=False"], False),
        (["--enable-lora-bias"], False),
        (["--max-lora-rank=64"], False),
    ]:
        assert engine.lora_enabled(Engine.model_validate({"extraArgs": args})) is on, args
