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
# With no arguments (the whole suite, as CI runs it) the tests run on LLMOPS_TEST_WORKERS pytest-xdist
# workers (default 2, one per core). Each worker starts what its tests need (a control plane, MinIO,
# a vLLM server, a Ray head) on free loopback ports, as a sequential session would. The CPU-bound tests (Ray training
# and the e2e runs) are one scope that one worker runs in turn; the other worker takes the rest, file by file,
# which mostly wait (tests/conftest.py makes the scopes and says why; `--no-loadscope-reorder` keeps
# its order). With arguments (one file, one test) pytest runs as given; add `-n N --dist loadscope
# --no-loadscope-reorder` to spread them the same way.
workers=()
if [[ $# -eq 0 ]]; then
  workers=(-n "${LLMOPS_TEST_WORKERS:-2}" --dist loadscope --no-loadscope-reorder)
fi
set +e
python -m pytest --durations=30 "${workers[@]}" "$@"  # the slowest 30, to keep the CI budget in view
rc=$?
set -e
if [[ $rc -eq 5 ]]; then echo "pytest collected no tests: failing" >&2; exit 1; fi
exit $rc
