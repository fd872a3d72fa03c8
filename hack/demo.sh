#!/usr/bin/env bash
# The main job (`make demo`): on a fresh machine, set up everything, then run the lifecycle for
# real on this machine: a local control plane with the llmops operator, MinIO, a Ray head and
# Prometheus; a TrainingJob that fine-tunes a tiny model on bundled data and registers a version;
# a ModelDeployment of that version, served on the CPU by exactly the commands the operator
# generated; a chat request through the gateway; metrics from Prometheus.
# Every step says what it does; a failure names the step and where its log is.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# The folder `llmops dev` uses (llmops/dev/cli.py default_state_dir: $TMPDIR honoured), set for it too.
state=${LLMOPS_DEV_DIR:-$(python3 -c 'import tempfile; print(tempfile.gettempdir())')/llmops-dev-$(id -u)}
export LLMOPS_DEV_DIR=$state
# The folder of the built Python environment and tools (as hack/venv.sh and hack/tools/build.sh read it).
cache=${LLMOPS_CACHE:-$HOME/.cache/llmops}
# Each step prints its wall time when the next one starts; the total comes at the end. A failed
# step names itself, what to look at, and stops every process the demo started (logs are kept).
current=""; hint=""; step_start=$SECONDS
step() {
  if [[ -n $current ]]; then printf '   (%s took %ds)\n' "$current" $((SECONDS - step_start)); fi
  current=$1; hint=${3:-"the logs in $state/logs"}; step_start=$SECONDS
  printf '\n\033[1m== %s\033[0m %s\n' "$1" "${2:-}"
}
failed() {
  echo "demo failed at step: $current after $((SECONDS - step_start))s; look at $hint" >&2
  if [[ -x ${venv:-}/bin/llmops ]]; then
    "$venv/bin/llmops" dev down --keep-state >/dev/null 2>&1 && echo "stopped every process of the demo (logs kept in $state/logs)" >&2
  fi
}
trap failed ERR
# Fill in ${NAME} for the named variables only (like envsubst, which a fresh machine may lack).
render() {
  python -c 'import os, string, sys
print(string.Template(sys.stdin.read()).safe_substitute({k: os.environ[k] for k in sys.argv[1:]}), end="")' "$@"
}
ns=quickstart

step "preflight" "(python3 -m llmops.dev.preflight demo: Python, Go, disk, memory, loopback)"
python3 -m llmops.dev.preflight demo || { current=""; echo "make demo needs the above first; nothing was started" >&2; exit 1; }

step "python environment" "(hack/venv.sh; torch, Ray and vLLM for the CPU; cached in $cache)" \
  "$cache/logs/venv.log"
venv=$(hack/venv.sh)
export PATH="$venv/bin:$(hack/tools/build.sh --print-bin):$PATH"

step "control-plane tools" "(built from the Go module proxy on the first run: about 22 min on 2 cores)" \
  "$cache/logs/<tool>.log"
hack/tools/build.sh >/dev/null

step "local cluster, operator, MinIO, Ray head, Prometheus" "(llmops dev up --operator --services)"
if [[ -d $state ]] && ! llmops dev status >/dev/null 2>&1; then
  # A stopped run's folder (a failed demo keeps its logs and data there): its etcd and MinIO data
  # would come back with the new cluster, so start afresh and keep that folder aside for a look.
  llmops dev down --keep-state >/dev/null 2>&1 || true
  rm -rf "$state.previous"; mv "$state" "$state.previous"
  echo "a stopped earlier run's state folder is now $state.previous (its logs: $state.previous/logs)"
fi
llmops dev up --operator --services >/dev/null
eval "$(llmops dev env)"
kubectl get nodes -o custom-columns='NODE:.metadata.name,CPU:.status.capacity.cpu,GPUS:.status.capacity.nvidia\.com/gpu,READY:.status.conditions[?(@.type=="Ready")].status'

step "quickstart data and base model" "(bundled corpus and a tiny random Llama, uploaded to MinIO)"
work=$(llmops dev status | awk '/^kubeconfig/ {print $2}' | xargs dirname)/quickstart
python -m llmops.serving.local make-model "$work/base" --corpus llmops/training/data/quickstart/train.jsonl >/dev/null
llmops dev upload "$work/base" s3://llmops/base/tiny-llama
llmops dev upload llmops/training/data/quickstart s3://llmops/datasets/quickstart
kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl -n "$ns" create secret generic quickstart-api-keys --from-literal=demo="demo-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')" \
  --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl -n "$ns" create secret generic minio-credentials --from-literal=AWS_ACCESS_KEY_ID="$AWS_ACCESS_KEY_ID" \
  --from-literal=AWS_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY" --dry-run=client -o yaml | kubectl apply -f - >/dev/null

step "TrainingJob" "(examples/quickstart/trainingjob.yaml, runtime rayJobsAPI on the local Ray head)" \
  "kubectl -n $ns describe tj quickstart, $state/logs/llmops-operator.log and $state/logs/ray.log"
render S3_ENDPOINT RAY_ADDRESS <examples/quickstart/trainingjob.yaml | kubectl -n "$ns" apply -f -
llmops watch trainingjob quickstart -n "$ns"
version=$(kubectl -n "$ns" get tj quickstart -o jsonpath='{.status.modelVersion.version}')

step "ModelDeployment" "of support-tiny version $version (examples/quickstart/modeldeployment.yaml)" \
  "kubectl -n $ns describe md quickstart and $state/logs/llmops-operator.log"
export MODEL_VERSION=$version
render S3_ENDPOINT MODEL_VERSION <examples/quickstart/modeldeployment.yaml | kubectl -n "$ns" apply -f -
kubectl -n "$ns" wait md/quickstart --for=condition=Ready --timeout=180s
kubectl -n "$ns" get md quickstart
kubectl -n "$ns" get deployments,services,scaledobjects,servicemonitors,podmonitors,prometheusrules -l llmops.io/modeldeployment=quickstart

step "serve what was deployed" "(the operator's vLLM and gateway commands, run here on the CPU)" \
  "the quickstart-* logs in $state/logs"
eval "$(llmops dev serve quickstart -n "$ns")"

step "chat" "(the official openai client, through the gateway)"
python - <<'PY'
import os
from openai import OpenAI

client = OpenAI(base_url=os.environ["GATEWAY_URL"], api_key=os.environ["GATEWAY_API_KEY"])
reply = client.chat.completions.create(
    model=os.environ["SERVED_MODEL"],
    messages=[{"role": "user", "content": "How much does the Basic plan cost?"}],
    max_tokens=24,
)
print(f"model {reply.model} answered: {reply.choices[0].message.content!r}")
print(f"tokens: prompt {reply.usage.prompt_tokens}, completion {reply.usage.completion_tokens}")
PY

step "metrics" "(queried from Prometheus at $PROMETHEUS_URL)"
llmops dev metrics quickstart -n "$ns"

step "summary" "(look around)"
cat <<TXT
  export KUBECONFIG=$KUBECONFIG
  kubectl get llmops -A                                # every llmops object (the category)
  kubectl -n $ns describe trainingjob quickstart       # progress, evaluation, gates, model version
  kubectl -n $ns get modeldeployment quickstart -o yaml
  export GATEWAY_API_KEY=\$(kubectl -n $ns get secret quickstart-api-keys -o jsonpath='{.data.demo}' | base64 -d)
  curl -s $GATEWAY_URL/models -H "Authorization: Bearer \$GATEWAY_API_KEY"
  curl -s '$PROMETHEUS_URL/api/v1/query?query=vllm:num_requests_waiting'   # Prometheus
  llmops dev status                                    # every process of the demo
  llmops dev down                                      # stop everything and remove the state folder
TXT
printf '\n== demo finished in %ds\n' "$SECONDS"
