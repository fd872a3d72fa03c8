#!/usr/bin/env bash
# The main job (`make demo`): on a fresh machine, set up everything, start a real local control
# plane with the llmops operator, apply the examples and show what the platform made of them.
# Every step says what it does; a failure names the step and its log.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
fail() { echo "demo failed at step: $current (log: ${2:-see above})" >&2; exit 1; }
trap 'fail "$current"' ERR

current="python environment"; step "$current (hack/venv.sh; cached in ~/.cache/llmops)"
venv=$(hack/venv.sh)
export PATH="$venv/bin:$PATH"

current="control-plane tools"; step "$current (built from the Go module proxy on the first run: 20-30 min on 2 cores)"
hack/tools/build.sh k8s etcd kwok helm >/dev/null

current="local cluster and operator"; step "$current (llmops dev up --operator)"
eval "$(llmops dev up --operator)"
kubectl get nodes -o custom-columns='NODE:.metadata.name,CPU:.status.capacity.cpu,GPUS:.status.capacity.nvidia\.com/gpu,READY:.status.conditions[?(@.type=="Ready")].status'

current="examples"; step "$current (kubectl apply -f examples/ into namespace demo)"
kubectl create namespace demo --dry-run=client -o yaml | kubectl apply -f - >/dev/null
# Credentials the examples refer to: the admission webhook refuses references to missing Secrets.
for s in dataset-credentials payload-credentials registry-credentials support-bot-api-keys hf-token; do
  kubectl -n demo create secret generic "$s" --from-literal=placeholder=demo --dry-run=client -o yaml | kubectl apply -f - >/dev/null
done
kubectl -n demo apply -f examples/
for kind in trainingjobs modeldeployments; do
  kubectl -n demo wait "$kind" --all --for=jsonpath='{.status.observedGeneration}' --timeout=60s >/dev/null
done
kubectl -n demo get llmops

current="bad input"; step "$current (each file in examples/invalid/ is refused with the field that is wrong)"
for f in examples/invalid/*.yaml; do
  msg=$(kubectl -n demo apply -f "$f" 2>&1 >/dev/null || true)
  printf '  %-48s %s\n' "$(basename "$f")" "$(echo "$msg" | grep -oE '(unknown field "[^"]*"|spec[^:]*: [^;]*)' | head -1 | cut -c1-110)"
done

current="summary"; step "look around"
cat <<TXT
  export KUBECONFIG=$KUBECONFIG
  kubectl get llmops -A                       # every llmops object (the category)
  kubectl -n demo describe trainingjob support-bot-lora-billing
  kubectl -n demo get modeldeployments -o yaml | less
  llmops dev status                           # the processes, the operator included
  llmops dev down                             # stop everything and remove the state folder
TXT
