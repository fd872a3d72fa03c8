#!/usr/bin/env bash
# Print the path of this checkout's Python environment, creating what is missing:
#  - the dependencies live in a shared venv outside the clone, keyed by the declared dependencies,
#    the extras and the Python version, so a fresh clone of an unchanged project installs nothing;
#  - the checkout gets its own thin venv (.venv) that sees those dependencies and this checkout's
#    code, so two clones never fight over one editable install.
#   hack/venv.sh [extras]     default extras: dev (overlay .venv); others get .venv-<extras>, e.g.
#                             `hack/venv.sh optimize` (llm-compressor, no vLLM) -> .venv-optimize
#   hack/venv.sh --print-shared [extras]   print the shared venv's path without creating anything
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
print_shared=; if [[ ${1:-} == --print-shared ]]; then print_shared=1; shift; fi
extras=${1:-dev}
cache=${LLMOPS_CACHE:-$HOME/.cache/llmops}
deps=$(python3 -c 'import sys, tomllib, json; p = tomllib.load(open(sys.argv[1], "rb"))["project"]
print(json.dumps([p["dependencies"], p.get("optional-dependencies", {})], sort_keys=True))' "$root/pyproject.toml")
key=$(cat <(echo "$deps") <(echo "$extras") <(python3 --version) <(cat "$root/hack/venv-extra.sh" 2>/dev/null) \
  | sha256sum | cut -c1-16)
shared=$cache/venv-$extras-$key
if [[ -n $print_shared ]]; then echo "$shared"; exit 0; fi
mkdir -p "$cache/logs"
log=$cache/logs/venv.log
# One builder at a time: concurrent callers wait here instead of racing on the same folder.
exec 9>"$cache/venv.lock"; flock 9
if [[ ! -f $shared/.complete ]]; then
  echo "creating the shared environment $shared (log: $log)" >&2
  rm -rf "$shared"
  python3 -m venv "$shared"
  "$shared/bin/pip" install -q --upgrade pip setuptools >"$log" 2>&1
  # Packages that need a special install order come first (see the script).
  if [[ -f $root/hack/venv-extra.sh ]]; then bash "$root/hack/venv-extra.sh" "$shared" "$extras" >>"$log" 2>&1 \
    || { tail -20 "$log" >&2; exit 1; }; fi
  "$shared/bin/pip" install -q "$root[$extras]" >>"$log" 2>&1 || { tail -20 "$log" >&2; exit 1; }
  # Dependencies only: each checkout brings its own code (below).
  "$shared/bin/pip" uninstall -q -y llmops >>"$log" 2>&1
  touch "$shared/.complete"
fi
overlay=$root/.venv; if [[ $extras != dev ]]; then overlay=$root/.venv-$extras; fi
if [[ $(cat "$overlay/.shared" 2>/dev/null) != "$shared" ]]; then
  rm -rf "$overlay"
  python3 -m venv --without-pip "$overlay"
  site=$("$overlay/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  shared_site=$("$shared/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  # .pth files run in name order: this checkout first, then the shared dependencies.
  echo "$root" >"$site/_llmops_checkout.pth"
  echo "import site; site.addsitedir('$shared_site')" >"$site/_llmops_deps.pth"
  for exe in kubectl ruff; do [[ ! -e $shared/bin/$exe ]] || ln -sf "$shared/bin/$exe" "$overlay/bin/$exe"; done
  printf '#!%s\nfrom llmops.cli import main\nmain()\n' "$overlay/bin/python" >"$overlay/bin/llmops"
  chmod +x "$overlay/bin/llmops"
  echo "$shared" >"$overlay/.shared"
fi
echo "$overlay"
