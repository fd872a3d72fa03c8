#!/usr/bin/env bash
# The test command (`make test`): set up what the tests need, then run pytest.
# Extra arguments go to pytest. "No tests collected" is a failure, never a pass.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
python3 -m llmops.dev.preflight test || { echo "make test needs the above first" >&2; exit 1; }
venv=$(hack/venv.sh)
# llm-compressor's own venv (it cannot share one with vLLM): the quantize workload tests run the
# compress stage's child process in it (llmops/training/compress.py).
LLMOPS_OPTIMIZE_PYTHON=$(hack/venv.sh optimize)/bin/python
export LLMOPS_OPTIMIZE_PYTHON
tools=$(hack/tools/build.sh)
# Skaffold's own config types, for tests/unit/test_skaffold.py (into the Go module cache, 43 MB once).
GOFLAGS=-mod=mod go mod download github.com/GoogleContainerTools/skaffold/v2@v2.16.1
export PATH="$venv/bin:$tools:$PATH"
set +e
python -m pytest --durations=30 "$@"  # the slowest 30, to keep the CI budget in view
rc=$?
set -e
if [[ $rc -eq 5 ]]; then echo "pytest collected no tests: failing" >&2; exit 1; fi
exit $rc
