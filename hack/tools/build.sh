#!/usr/bin/env bash
# Build the control-plane tools (kube-apiserver, kube-controller-manager, kube-scheduler,
# etcd, kwok, helm, minio, prometheus, promtool and toxiproxy) from the Go module proxy and cache them
# outside the clone. No root, no system package: everything lands in $LLMOPS_TOOLS_BIN.
#
# Each tool lives in its own wrapper module under hack/tools/<tool>/ so the dependency
# graphs cannot push each other's versions. A tool's cache key is the hash of its go.mod,
# go.sum, packages, flags and the Go version (see key below): a warm machine never rebuilds,
# and a change to one tool rebuilds only that tool. One build of a tool runs at a time on a machine
# (a lock per tool; a second caller says it waits, then finds it built); each builds in a private
# folder, and a folder counts as built only when it holds every binary of the tool.
# Tools: k8s etcd kwok helm minio prometheus toxiproxy (all of them when none is named).
#
#   hack/tools/build.sh [tool ...]     build (or reuse) and link into $LLMOPS_TOOLS_BIN
#   hack/tools/build.sh --print-bin    print the bin directory and exit
#   hack/tools/build.sh --missing      print the tools a build would have to compile, one a line
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${LLMOPS_CACHE:-$HOME/.cache/llmops}
bin=${LLMOPS_TOOLS_BIN:-$cache/bin}
logdir=$cache/logs
all_tools=(k8s etcd kwok helm minio prometheus toxiproxy)

if [[ ${1:-} == --print-bin ]]; then echo "$bin"; exit 0; fi
tools=("$@"); [[ ${#tools[@]} -gt 0 ]] || tools=("${all_tools[@]}")
mkdir -p "$bin" "$logdir"

# Two compile processes of about 2 GiB each: bounded memory on a small machine.
export GOFLAGS="${GOFLAGS:--p=2} -trimpath -mod=readonly"
export CGO_ENABLED=0

modversion() { (cd "$here/$1" && go list -m -f '{{.Version}}' "$2"); }

# The packages to build and their version ldflags, per tool.
plan() {
  local tool=$1 v ldf=""
  case $tool in
    k8s)
      v=$(modversion k8s k8s.io/kubernetes)
      local minor=${v#v1.}; minor=${minor%%.*}
      for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ldf+=" -X $p.gitVersion=$v -X $p.gitMajor=1 -X $p.gitMinor=$minor"
        ldf+=" -X $p.gitTreeState=clean -X $p.buildDate=2026-01-01T00:00:00Z"
      done
      echo "$ldf|k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler" ;;
    etcd) echo "|go.etcd.io/etcd/server/v3" ;;
    kwok) echo "|sigs.k8s.io/kwok/cmd/kwok" ;;
    helm)
      v=$(modversion helm helm.sh/helm/v3)
      # Without the k8sVersion stamps `helm template` assumes Kubernetes 1.20.
      local kv; kv=$(modversion k8s k8s.io/kubernetes); kv=${kv#v1.}; kv=${kv%%.*}
      echo " -X helm.sh/helm/v3/internal/version.version=$v -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$kv|helm.sh/helm/v3/cmd/helm" ;;
    minio) echo "|github.com/minio/minio" ;;
    prometheus)
      # The local Prometheus discovers targets from files only: every other service-discovery
      # plugin (cloud SDKs, Kubernetes) is left out by Prometheus's own build tag.
      v=$(modversion prometheus github.com/prometheus/prometheus)
      # Module v0.316.0 is Prometheus 3.16.0 (the project's own mapping of its Go versions).
      local mm=${v#v0.}; mm=${mm%%.*}
      local c=github.com/prometheus/common/version
      echo " -X $c.Version=${mm:0:1}.${mm:1}.${v##*.} -X $c.Branch=HEAD -X $c.Revision=module|github.com/prometheus/prometheus/cmd/prometheus github.com/prometheus/prometheus/cmd/promtool|remove_all_sd" ;;
    toxiproxy)
      # Toxiproxy's own version stamp, so `toxiproxy-server -version` says what runs.
      v=$(modversion toxiproxy github.com/Shopify/toxiproxy/v2)
      echo " -X github.com/Shopify/toxiproxy/v2.Version=${v#v}|github.com/Shopify/toxiproxy/v2/cmd/server github.com/Shopify/toxiproxy/v2/cmd/cli" ;;
    *) echo "unknown tool: $tool" >&2; return 1 ;;
  esac
}

# The cache key: what a build is made from (the wrapper module, the packages, flags and tags, the
# Go version), not this whole script, so a change elsewhere in it rebuilds nothing. Bump `recipe`
# when the build command below changes.
recipe=1
key() {
  cat "$here/$1/go.mod" "$here/$1/go.sum" <(plan "$1") <(echo "$recipe $GOFLAGS $CGO_ENABLED") <(go version) \
    | sha256sum | cut -c1-16
}

# The binaries each tool must leave (llmops/dev/tools.py TOOL_BINARIES names those the harness runs).
binaries() {
  case $1 in
    k8s) echo "kube-apiserver kube-controller-manager kube-scheduler" ;;
    prometheus) echo "prometheus promtool" ;;
    toxiproxy) echo "toxiproxy-server toxiproxy-cli" ;;
    *) echo "$1" ;;
  esac
}

# A folder is a finished build when it says so and holds every binary (a folder marked complete
# with one missing, as an older unlocked build could leave, is built again).
complete() {
  [[ -f $1/.complete ]] || return 1
  local b; for b in $(binaries "$2"); do [[ -x $1/$b ]] || return 1; done
}

if [[ ${1:-} == --missing ]]; then
  for tool in "${all_tools[@]}"; do
    complete "$cache/tools/$tool-$(key "$tool")" "$tool" || echo "$tool"
  done
  exit 0
fi

mkdir -p "$cache/tools"
for tool in "${tools[@]}"; do
  IFS='|' read -r ldflags pkgs tags < <(plan "$tool")
  out=$cache/tools/$tool-$(key "$tool")
  if ! complete "$out" "$tool"; then
    # One build of a tool at a time on this machine (tests, the demo and CI may ask at once): the
    # others wait here and then find it built.
    exec 8>"$cache/tools/$tool.lock"
    flock -n 8 || { echo "waiting for another build of $tool on this machine to finish" >&2; flock 8; }
  fi
  if ! complete "$out" "$tool"; then
    log=$logdir/$tool.log
    echo "building $tool (cold builds take minutes; log: $log)" >&2
    start=$SECONDS
    tmp=$(mktemp -d "$out.tmp.XXXXXX"); chmod 755 "$tmp"
    (cd "$here/$tool" && go mod download && go build -tags "${tags:-}" -ldflags "-s -w$ldflags" -o "$tmp/" $pkgs) >"$log" 2>&1 &
    pid=$!
    while kill -0 "$pid" 2>/dev/null; do
      sleep 30
      kill -0 "$pid" 2>/dev/null && echo "  $tool: still building ($((SECONDS - start))s)" >&2
    done
    if ! wait "$pid"; then
      echo "build of $tool failed; last lines of $log:" >&2; tail -20 "$log" >&2; rm -rf "$tmp"; exit 1
    fi
    # go names the etcd binary after its module path ("server"); give it its real name.
    [[ $tool == etcd ]] && mv "$tmp"/server "$tmp/etcd"
    # ... and Toxiproxy's two after their commands ("server", "cli") under their released names.
    if [[ $tool == toxiproxy ]]; then
      mv "$tmp/server" "$tmp/toxiproxy-server"; mv "$tmp/cli" "$tmp/toxiproxy-cli"
    fi
    touch "$tmp/.complete"
    if ! complete "$tmp" "$tool"; then
      echo "build of $tool did not leave all of: $(binaries "$tool"); log: $log" >&2; rm -rf "$tmp"; exit 1
    fi
    rm -rf "$out"; mv "$tmp" "$out"
    echo "built $tool in $((SECONDS - start))s" >&2
  fi
  exec 8>&-
  for f in "$out"/*; do ln -sf "$f" "$bin/$(basename "$f")"; done
done
echo "$bin"
