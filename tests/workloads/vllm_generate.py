"""Load checkpoints with vLLM (offline, on the CPU here) and generate 8 greedy tokens from each.

    python -m tests.workloads.vllm_generate '[{"path": ..., "quantization": ..., "dtype": ...}, ...]'

Prints one `GENERATED {json}` line per model: path, quantization (what vLLM's model config says),
tokens, seconds. The `__main__` guard matters: vLLM starts its engine core with multiprocessing.
"""

from __future__ import annotations

import gc
import json
import sys
import time


def main(models: list[dict]) -> None:
    from vllm import LLM, SamplingParams

    for model in models:
        start = time.monotonic()
        llm = LLM(
            model=model["path"],
            quantization=model["quantization"],
            dtype=model["dtype"],
            max_model_len=256,
            max_num_seqs=4,
            enforce_eager=True,
            seed=0,
        )
        out = llm.generate(
            ["Question: how much does the Basic plan cost?\nAnswer:"],
            SamplingParams(max_tokens=8, temperature=0, ignore_eos=True),
        )[0].outputs[0]
        found = {
            "path": model["path"],
            "quantization": llm.llm_engine.model_config.quantization,
            "dtype": model["dtype"],
            "tokens": len(out.token_ids),
            "text": out.text,
            "seconds": round(time.monotonic() - start, 1),
        }
        print("GENERATED " + json.dumps(found), flush=True)
        del llm
        gc.collect()


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
