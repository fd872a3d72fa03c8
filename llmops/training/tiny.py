"""Tiny Llama checkpoints for tests, benchmarks and demos: random weights, a BPE tokenizer trained on
the given text, nothing downloaded.

Defaults: hidden 128 with 2 heads, so head_dim is 64 (vLLM's CPU backend rejects head_dim 16 and
serves 64), 2 layers, vocabulary 512, 256 positions.

    python -m llmops.training.tiny OUT_DIR CORPUS_FILE...
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path

from llmops.training.model import llama_config, train_tokenizer

TINY = {
    "hidden_size": 128,
    "heads": 2,
    "kv_heads": 2,
    "layers": 2,
    "intermediate_size": 256,
    "vocab_size": 512,
    "max_position_embeddings": 256,
}


def make_tiny_llama(texts: Iterable[str], out: Path, seed: int = 0, **overrides: int) -> Path:
    import torch
    from transformers import LlamaForCausalLM

    arch = TINY | overrides
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(list(texts), arch["vocab_size"], out)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(llama_config(arch, tokenizer, 0.0))
    model.save_pretrained(out, safe_serialization=True)
    return out


def corpus(paths: Iterable[Path]) -> list[str]:
    """Lines of text files, and the "text" field of JSONL files."""
    from llmops import jsonl

    texts = []
    for path in paths:
        if path.suffix == ".jsonl":
            texts += [row.get("text", "") for _, row in jsonl.read_path(path)]
        else:
            texts += [line for line in path.read_text().split("\n") if line.strip()]
    return texts


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    print(make_tiny_llama(corpus(Path(p) for p in sys.argv[2:]), Path(sys.argv[1])))
