# Everything a person or CI runs starts here; the scripts under hack/ do the work.
.PHONY: test tools venv venv-optimize lint crds demo

demo:  ## the whole loop here: control plane, operator, train, register, serve with vLLM, chat, metrics
	hack/demo.sh

test:  ## set up the venv and the control-plane tools, then run every test
	hack/test.sh

tools:  ## build (or reuse from the cache) kube-apiserver, etcd, kwok, helm, minio, prometheus, promtool, toxiproxy
	hack/tools/build.sh

venv:  ## create (or reuse) the virtual environment and print its path
	hack/venv.sh

venv-optimize:  ## create (or reuse) llm-compressor's environment (no vLLM: .venv-optimize) and print its path
	hack/venv.sh optimize

lint:
	"$$(hack/venv.sh)/bin/ruff" check . && "$$(hack/venv.sh)/bin/ruff" format --check .

crds:  ## regenerate crds/, the chart's CRDs and the API reference from llmops/api
	"$$(hack/venv.sh)/bin/llmops" crds
	"$$(hack/venv.sh)/bin/python" docs/gen_api_reference.py
