"""Run a ModelDeployment here, on the CPU, from exactly what the operator deployed.

kwok only pretends to run the pods, so this reads the operator's own objects back from the
cluster (the vLLM Deployments' init and serving commands, the gateway's command and ConfigMap)
and runs them as local processes of the dev cluster. Only what cannot hold on one machine is
rewritten: the model volume's path, ports and hosts, and Service addresses become loopback
addresses. No command is written here by hand, so the answer comes from what was deployed.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import urllib.request

from llmops.dev import services
from llmops.dev.cluster import ClusterError, LocalCluster, free_port, wait_for
from llmops.dev.scrape import LocalPod, local_pod, scrape_groups
from llmops.engine import localize_argv
from llmops.gateway_config import GatewayConfig

# What a CPU needs that a GPU pod does not (vLLM otherwise reserves most of the RAM for its cache).
CPU_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_TARGET_DEVICE": "cpu", "TOKENIZERS_PARALLELISM": "false"}


def _get(cluster: LocalCluster, *args: str) -> dict:
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


def _secret(cluster: LocalCluster, namespace: str, name: str) -> dict[str, str]:
    data = _get(cluster, "secret", name, "-n", namespace).get("data") or {}
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def _env(cluster: LocalCluster, namespace: str, container: dict) -> dict[str, str]:
    """The container's env with Secret references resolved (values stay in this process's memory)."""
    env = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        elif ref := var.get("valueFrom", {}).get("secretKeyRef"):
            env[var["name"]] = _secret(cluster, namespace, ref["name"])[ref["key"]]
    return env


def _healthy(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as r:
        return r.status == 200


def serve(cluster: LocalCluster, name: str, namespace: str) -> dict[str, str]:
    """Start every served version and the gateway of ModelDeployment `name`; return their addresses."""
    items = _get(cluster, "deployments", "-n", namespace, "-l", f"llmops.io/modeldeployment={name}")["items"]
    by_name = {d["metadata"]["name"]: d for d in items}
    pods = {n: d["spec"]["template"]["spec"] for n, d in by_name.items()}
    vllm = {n: p for n, p in pods.items() if any(c["name"] == "vllm" for c in p["containers"])}
    gateways = {n: p for n, p in pods.items() if any(c["name"] == "gateway" for c in p["containers"])}
    if not vllm or not gateways:
        raise ClusterError(f"modeldeployment {name} has no vLLM or gateway Deployment yet; is it Ready?")
    work = cluster.state_dir / "serve" / name
    upstream: dict[str, str] = {}  # vLLM Service host -> local address
    local_pods: list[LocalPod] = []
    for deployment, pod in vllm.items():
        root = work / deployment
        root.mkdir(parents=True, exist_ok=True)
        for init in pod.get("initContainers", []):  # fetch the version from the registry, checksums verified
            argv = localize_argv(init["command"] + init.get("args", []), root, {})
            env = {**os.environ, **_env(cluster, namespace, init)}
            log = cluster.logs / f"{deployment}-{init['name']}.log"
            with open(log, "w") as out:
                if subprocess.run(argv, env=env, stdout=out, stderr=subprocess.STDOUT).returncode != 0:
                    raise ClusterError(f"init container {init['name']} of {deployment} failed; see {log}")
        container = next(c for c in pod["containers"] if c["name"] == "vllm")
        port = free_port()
        argv = localize_argv(
            container["command"] + container.get("args", []),
            root,
            {"--port": str(port), "--host": "127.0.0.1"},
        )
        env = {**os.environ, **_env(cluster, namespace, container), **CPU_ENV, "HOME": str(root)}
        env.pop("VLLM_CACHE_ROOT", None)
        env["HF_HOME"] = str(root / "huggingface")
        cluster.spawn(deployment, argv, env=env)
        upstream[deployment] = f"127.0.0.1:{port}"
        local_pods.append(local_pod(namespace, by_name[deployment], "vllm", f"127.0.0.1:{port}"))
    for deployment in vllm:
        wait_for(
            f"vLLM {deployment}",
            lambda d=deployment: _healthy(f"http://{upstream[d]}/health"),
            600,
            cluster.logs / f"{deployment}.log",
        )

    ((gateway, pod),) = gateways.items()
    container = next(c for c in pod["containers"] if c["name"] == "gateway")
    configmap = next(v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v)
    config = GatewayConfig.model_validate_json(
        _get(cluster, "configmap", configmap, "-n", namespace)["data"]["config.json"]
    )
    # The cluster's Services are not reachable here: each version's group points at its local vLLM.
    groups = []
    for group in config.upstreams:
        host = group.service.host.split(".")[0] if group.service else None
        local = upstream.get(host or "") or next(iter(upstream.values()))
        groups.append(group.model_copy(update={"service": None, "replicas": [f"http://{local}"]}))
    keys = None
    secret_volume = next((v for v in pod["volumes"] if "secret" in v), None)
    if config.api_keys_path and secret_volume:
        keys = work / "api-keys"
        keys.mkdir(parents=True, exist_ok=True)
        for key_name, value in _secret(cluster, namespace, secret_volume["secret"]["secretName"]).items():
            (keys / key_name).write_text(value)
    local = config.model_copy(update={"upstreams": groups, "api_keys_path": str(keys) if keys else None})
    config_file = work / "gateway.json"
    config_file.write_text(local.model_dump_json(by_alias=True, exclude_none=True))
    port = free_port()
    argv = localize_argv(
        container["command"] + container.get("args", []),
        work,
        {"--config": str(config_file), "--port": str(port)},
    )
    cluster.spawn(
        gateway, [*argv, "--host", "127.0.0.1"], env={**os.environ, **_env(cluster, namespace, container)}
    )
    wait_for(
        "the gateway",
        lambda: _healthy(f"http://127.0.0.1:{port}/healthz"),
        120,
        cluster.logs / f"{gateway}.log",
    )
    local_pods.append(local_pod(namespace, by_name[gateway], "gateway", f"127.0.0.1:{port}"))
    if services.service(cluster, "prometheus"):
        # Scrape what the operator's monitors select, with their labels, as a cluster's Prometheus would.
        selector = f"llmops.io/modeldeployment={name}"
        monitors = []
        for kind in ("podmonitors", "servicemonitors"):
            got = cluster.kubectl("get", kind, "-n", namespace, "-l", selector, "-o", "json", check=False)
            monitors += json.loads(got.stdout)["items"] if got.returncode == 0 else []
        svcs = _get(cluster, "services", "-n", namespace, "-l", selector)["items"]
        services.set_scrape_targets(cluster, scrape_groups(monitors, svcs, local_pods))

    served = config.served_model_name
    first_key = next((p.read_text().strip() for p in sorted(keys.iterdir())), "") if keys else "none"
    return {
        "GATEWAY_URL": f"http://127.0.0.1:{port}/v1",
        "GATEWAY_API_KEY": first_key,
        "SERVED_MODEL": served,
    }
