#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment outside the clone, keyed by
# pyproject.toml, install this checkout into it in editable mode, and print its path.
#   hack/venv.sh [extras]     default extras: dev
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
extras=${1:-dev}
cache=${LLMOPS_CACHE:-$HOME/.cache/llmops}
# Keyed by what the environment is built from: the declared dependencies, the extras, Python.
deps=$(python3 -c 'import sys, tomllib, json; p = tomllib.load(open(sys.argv[1], "rb"))["project"]
print(json.dumps([p["dependencies"], p.get("optional-dependencies", {})], sort_keys=True))' "$root/pyproject.toml")
key=$(cat <(echo "$deps") <(echo "$extras") <(python3 --version) | sha256sum | cut -c1-16)
venv=$cache/venv-$extras-$key
mkdir -p "$cache/logs"
# One builder at a time: concurrent callers wait here instead of racing on the same folder.
exec 9>"$cache/venv.lock"; flock 9
if [[ ! -f $venv/.complete ]]; then
  echo "creating the virtual environment $venv (log: $cache/logs/venv.log)" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip setuptools >"$cache/logs/venv.log" 2>&1
  # Dependencies only: the checkout itself is installed below, per clone.
  "$venv/bin/pip" install -q "$root[$extras]" >>"$cache/logs/venv.log" 2>&1 \
    || { tail -20 "$cache/logs/venv.log" >&2; exit 1; }
  touch "$venv/.complete"
fi
# This checkout, editable; skipped when the venv already points here.
if [[ $(cat "$venv/.editable-root" 2>/dev/null) != "$root" ]]; then
  "$venv/bin/pip" install -q --no-deps --no-build-isolation -e "$root" >>"$cache/logs/venv.log" 2>&1 \
    || { tail -20 "$cache/logs/venv.log" >&2; exit 1; }
  echo "$root" >"$venv/.editable-root"
fi
echo "$venv"
