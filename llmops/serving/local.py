"""Serve a model with vLLM on this machine: a tiny random model, and a vLLM process started from the argv
the operator deploys (`llmops.engine.vllm_argv`). For tests, benchmarks and laptops without a GPU.

    python -m llmops.serving.local make-model DIR --corpus FILE     # tiny Llama, random weights
    python -m llmops.serving.local serve DIR --port 8000            # vLLM's OpenAI server on the CPU

The tiny model is a Llama with hidden size 128 and 2 heads (head_dim 64: the CPU attention backend
refuses smaller heads), 2 layers and a byte-level BPE tokenizer trained with `tokenizers` on `corpus`;
it is saved with `save_pretrained` (safetensors). It generates noise, quickly.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIAL = ["<unk>", "<s>", "</s>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>"]


def make_tiny_llama(
    target: Path,
    corpus: Path,
    *,
    vocab_size: int = 1024,
    seed: int = 0,
    max_positions: int = 512,
    dtype: str = "float32",
) -> Path:
    """Write a random-weight Llama and its tokenizer to `target` (idempotent: reuses a complete one).

    `max_positions` bounds the `--max-model-len` vLLM accepts for it; `dtype` is the weights' (and the
    config's) dtype, which vLLM's `--dtype auto` follows.
    """
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    target.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train([str(corpus)], trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.model_max_length = 256
    fast.save_pretrained(str(target))

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=max_positions,
        bos_token_id=bos,
        eos_token_id=tok.token_to_id("</s>"),
        pad_token_id=tok.token_to_id("<pad>"),
        tie_word_embeddings=True,
        torch_dtype=dtype,
    )
    model = LlamaForCausalLM(config).to(getattr(torch, dtype))
    model.save_pretrained(str(target), safe_serialization=True)
    return target


def make_lora_adapter(base: Path, out: Path, seed: int) -> Path:
    """A LoRA adapter (rank 8 on q_proj and v_proj) for the model at `base`, with non-zero weights so
    that it changes the answers; written with peft's `save_pretrained` (idempotent)."""
    if (out / "adapter_config.json").exists():
        return out
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(out)
    return out


def cpu_argv(
    model_dir: Path,
    *,
    port: int,
    served_model_name: str,
    host: str = "127.0.0.1",
    adapters: Mapping[str, Path] | None = None,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The operator's vLLM argv (llmops.engine.vllm_argv) for a tiny model on the CPU.

    `adapters` maps LoRA adapter names (as clients request them) to their folders; `extra_args` go
    to `engine.extraArgs` (e.g. `--runner pooling --convert embed` to serve embeddings).
    """
    from llmops.api.common import ModelReference
    from llmops.api.modeldeployment import Engine, LoraAdapter
    from llmops.engine import vllm_argv

    adapters = adapters or {}
    engine = Engine(
        max_model_len=256,
        dtype="float32",
        lora_adapters=[LoraAdapter(name=n, model=ModelReference(name=n, version="1")) for n in adapters],
        # The CPU build sizes its KV cache from VLLM_CPU_KVCACHE_SPACE. Keep the stats on: they are the
        # vllm:* metrics that autoscaling and the dashboards read.
        extra_args=["--max-num-seqs", "64", "--uvicorn-log-level", "warning", *extra_args],
    )
    return vllm_argv(
        engine, model_path=str(model_dir), served_model_name=served_model_name, port=port, host=host,
        python=sys.executable, adapter_paths={n: str(p) for n, p in adapters.items()},
    )  # fmt: skip


def cpu_env(threads: int | None = None) -> dict[str, str]:
    env = {
        **os.environ,
        "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB; without it vLLM reserves most of the RAM
        "VLLM_TARGET_DEVICE": "cpu",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def wait_healthy(
    url: str, proc: subprocess.Popen | None = None, timeout: float = 300, log: Path | None = None
) -> None:
    """Wait until `url`/health answers 200; fail early, with the log's tail, if the process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-4000:] if log and log.exists() else ""
            raise RuntimeError(f"vLLM exited with {proc.returncode} before it was healthy:\n{tail}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"vLLM at {url} was not healthy within {timeout}s")


def _die_with_parent() -> None:
    import ctypes
    import signal

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def start_vllm(
    model_dir: Path,
    *,
    port: int,
    served_model_name: str,
    log: Path,
    tie_to_parent: bool = False,
    adapters: Mapping[str, Path] | None = None,
    extra_args: Sequence[str] = (),
) -> subprocess.Popen:
    """Start vLLM's OpenAI server on the CPU in its own process group (stop it with `stop`).

    `tie_to_parent`: the server gets SIGTERM when the starting process dies (tests, benchmarks).
    `adapters`: LoRA adapters to serve beside the model, name -> folder; `extra_args`: see `cpu_argv`.
    """
    with open(log, "w") as out:
        return subprocess.Popen(
            cpu_argv(
                model_dir,
                port=port,
                served_model_name=served_model_name,
                adapters=adapters,
                extra_args=extra_args,
            ),
            env=cpu_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent if tie_to_parent else None,
        )


def stop(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM the process group (vLLM starts an engine-core child), then SIGKILL what is left."""
    import signal

    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    except ProcessLookupError:
        pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m llmops.serving.local")
    sub = parser.add_subparsers(dest="cmd", required=True)
    make = sub.add_parser("make-model", help="write a tiny random Llama")
    make.add_argument("dir", type=Path)
    make.add_argument("--corpus", type=Path, required=True, help="text file to train the tokenizer on")
    serve = sub.add_parser("serve", help="run vLLM's OpenAI server on the CPU")
    serve.add_argument("dir", type=Path)
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--served-model-name", default="tiny")
    args = parser.parse_args(argv)
    if args.cmd == "make-model":
        print(make_tiny_llama(args.dir, args.corpus))
    else:
        argv_ = cpu_argv(args.dir, port=args.port, served_model_name=args.served_model_name, host="0.0.0.0")
        os.execvpe(argv_[0], argv_, cpu_env())


if __name__ == "__main__":
    main()
