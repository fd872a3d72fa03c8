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
from collections.abc import Callable
from pathlib import Path

from llmops.dev import services
from llmops.dev.cluster import ClusterError, LocalCluster, free_port, free_ports, wait_for
from llmops.dev.scrape import LocalPod, local_pod, scrape_groups
from llmops.engine import localize_argv
from llmops.gateway_config import GatewayConfig, UpstreamGroup

MODEL_DEPLOYMENT = "llmops.io/modeldeployment"  # the label on every child of a ModelDeployment

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


def run_version(
    cluster: LocalCluster, namespace: str, deployment: dict, port: int, *, drop: tuple[str, ...] = ()
) -> LocalPod:
    """Run one vLLM Deployment's pod here: its init containers (the version fetched from the registry,
    checksums verified), then its server on 127.0.0.1:`port` (started, not yet healthy).

    `drop` names flags left out of the server's argv with their value, for what this CPU cannot run
    (a caller that drops one says why); `llmops dev serve` drops none.
    Raises ClusterError naming the log when an init container fails.
    """
    name = deployment["metadata"]["name"]
    pod = deployment["spec"]["template"]["spec"]
    root = cluster.state_dir / "serve" / deployment["metadata"]["labels"].get(MODEL_DEPLOYMENT, name) / name
    root.mkdir(parents=True, exist_ok=True)
    for init in pod.get("initContainers", []):  # fetch the version from the registry, checksums verified
        argv = localize_argv(init["command"] + init.get("args", []), root, {})
        env = {**os.environ, **_env(cluster, namespace, init)}
        log = cluster.logs / f"{name}-{init['name']}.log"
        with open(log, "w") as out:
            if subprocess.run(argv, env=env, stdout=out, stderr=subprocess.STDOUT).returncode != 0:
                raise ClusterError(f"init container {init['name']} of {name} failed; see {log}")
    container = next(c for c in pod["containers"] if c["name"] == "vllm")
    argv = localize_argv(
        container["command"] + container.get("args", []),
        root,
        {"--port": str(port), "--host": "127.0.0.1"},
    )
    for flag in drop:
        if flag in argv:
            at = argv.index(flag)
            del argv[at : at + 2]
    env = {**os.environ, **_env(cluster, namespace, container), **CPU_ENV, "HOME": str(root)}
    env.pop("VLLM_CACHE_ROOT", None)
    env["HF_HOME"] = str(root / "huggingface")
    cluster.spawn(name, argv, env=env)
    return local_pod(namespace, deployment, "vllm", f"127.0.0.1:{port}")


def wait_version(cluster: LocalCluster, name: str, address: str) -> None:
    """Wait until the vLLM server of Deployment `name` at `address` answers GET /health (10 min)."""
    wait_for(f"vLLM {name}", lambda: _healthy(f"http://{address}/health"), 600, cluster.logs / f"{name}.log")


def run_gateway(
    cluster: LocalCluster,
    namespace: str,
    deployment: dict,
    upstream: Callable[[UpstreamGroup], UpstreamGroup],
    port: int | None = None,
) -> tuple[str, LocalPod, GatewayConfig, Path | None]:
    """Run the gateway Deployment's pod here, its config read from its ConfigMap with each upstream
    group replaced by `upstream(group)` (the cluster's Services are not reachable here), on `port`
    (default: a free one); wait until it is healthy. Returns its address ("127.0.0.1:port"), the local
    pod, the config it runs with, and its API keys folder (None without keys)."""
    name = deployment["metadata"]["name"]
    pod = deployment["spec"]["template"]["spec"]
    work = cluster.state_dir / "serve" / deployment["metadata"]["labels"].get(MODEL_DEPLOYMENT, name)
    work.mkdir(parents=True, exist_ok=True)
    container = next(c for c in pod["containers"] if c["name"] == "gateway")
    configmap = next(v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v)
    config = GatewayConfig.model_validate_json(
        _get(cluster, "configmap", configmap, "-n", namespace)["data"]["config.json"]
    )
    keys = None
    secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    if config.api_keys_path and "api-keys" in secrets:
        keys = work / "api-keys"
        keys.mkdir(parents=True, exist_ok=True)
        for key_name, value in _secret(cluster, namespace, secrets["api-keys"]).items():
            (keys / key_name).write_text(value)
    feedback = config.feedback
    if feedback is not None and "feedback-key" in secrets:  # the key that signs completion ids
        key_file = work / "feedback-key"
        key_file.write_text(
            _secret(cluster, namespace, secrets["feedback-key"])[Path(feedback.key_path).name]
        )
        feedback = feedback.model_copy(update={"key_path": str(key_file)})
    local = config.model_copy(
        update={
            "upstreams": [upstream(g) for g in config.upstreams],
            "api_keys_path": str(keys) if keys else None,
            "feedback": feedback,
        }
    )
    config_file = work / "gateway.json"
    config_file.write_text(local.model_dump_json(by_alias=True, exclude_none=True))
    port = port or free_port()
    argv = localize_argv(
        container["command"] + container.get("args", []),
        work,
        {"--config": str(config_file), "--port": str(port)},
    )
    cluster.spawn(
        name, [*argv, "--host", "127.0.0.1"], env={**os.environ, **_env(cluster, namespace, container)}
    )
    wait_for(
        "the gateway", lambda: _healthy(f"http://127.0.0.1:{port}/healthz"), 120, cluster.logs / f"{name}.log"
    )
    address = f"127.0.0.1:{port}"
    return address, local_pod(namespace, deployment, "gateway", address), local, keys


def run_drift(
    cluster: LocalCluster, namespace: str, deployment: dict, port: int, *, interval: float | None = None
) -> LocalPod:
    """Run the drift monitor Deployment's pod here (llmops/operators/modeldeployment/drift.py): its
    command and env as deployed (Secret references resolved), metrics on 127.0.0.1:`port`, HOME in a
    local folder. `interval`: seconds between drift tests instead of the deployed `--interval` (a
    test that cannot wait minutes for the next test says so; `llmops dev serve` keeps the deployed
    one). The monitor answers /metrics once it has embedded the reference sample; wait for it with
    `wait_drift`."""
    name = deployment["metadata"]["name"]
    pod = deployment["spec"]["template"]["spec"]
    root = cluster.state_dir / "serve" / deployment["metadata"]["labels"].get(MODEL_DEPLOYMENT, name) / name
    root.mkdir(parents=True, exist_ok=True)
    container = next(c for c in pod["containers"] if c["name"] == "drift")
    replace = {"--port": str(port)} | ({"--interval": f"{interval:g}"} if interval is not None else {})
    argv = localize_argv(container["command"] + container.get("args", []), root, replace)
    env = {**os.environ, **_env(cluster, namespace, container), "HOME": str(root)}
    env["HF_HOME"] = str(root / "huggingface")
    cluster.spawn(name, argv, env=env)
    return local_pod(namespace, deployment, "drift", f"127.0.0.1:{port}")


def wait_drift(cluster: LocalCluster, name: str, address: str) -> None:
    """Wait until the drift monitor of Deployment `name` at `address` answers GET /metrics (10 min:
    it embeds the reference sample first)."""
    wait_for(
        f"drift monitor {name}",
        lambda: _healthy(f"http://{address}/metrics"),
        600,
        cluster.logs / f"{name}.log",
    )


def scrape(cluster: LocalCluster, name: str, namespace: str, pods: list[LocalPod]) -> None:
    """Point the dev Prometheus (when it runs) at `pods`, as the monitors of ModelDeployment `name`
    select them, with their labels, as a cluster's Prometheus would."""
    if not services.service(cluster, "prometheus"):
        return
    selector = f"{MODEL_DEPLOYMENT}={name}"
    monitors = []
    for kind in ("podmonitors", "servicemonitors"):
        got = cluster.kubectl("get", kind, "-n", namespace, "-l", selector, "-o", "json", check=False)
        monitors += json.loads(got.stdout)["items"] if got.returncode == 0 else []
    svcs = _get(cluster, "services", "-n", namespace, "-l", selector)["items"]
    services.set_scrape_targets(cluster, scrape_groups(monitors, svcs, pods))


def drift_deployment(cluster: LocalCluster, name: str, namespace: str) -> dict | None:
    """ModelDeployment `name`'s drift monitor Deployment, None when spec.monitoring.drift is off."""
    items = _get(cluster, "deployments", "-n", namespace, "-l", f"{MODEL_DEPLOYMENT}={name}")["items"]
    return next(
        (d for d in items if any(c["name"] == "drift" for c in d["spec"]["template"]["spec"]["containers"])),
        None,
    )


def serving_deployments(cluster: LocalCluster, name: str, namespace: str) -> tuple[dict, dict]:
    """ModelDeployment `name`'s vLLM Deployments by name, and its gateway Deployment."""
    items = _get(cluster, "deployments", "-n", namespace, "-l", f"{MODEL_DEPLOYMENT}={name}")["items"]
    by_role = {
        role: {
            d["metadata"]["name"]: d
            for d in items
            if any(c["name"] == role for c in d["spec"]["template"]["spec"]["containers"])
        }
        for role in ("vllm", "gateway")
    }
    if not by_role["vllm"] or not by_role["gateway"]:
        raise ClusterError(f"modeldeployment {name} has no vLLM or gateway Deployment yet; is it Ready?")
    ((_, gateway),) = by_role["gateway"].items()
    return by_role["vllm"], gateway


def serve(cluster: LocalCluster, name: str, namespace: str) -> dict[str, str]:
    """Start every served version, the gateway and the drift monitor (when the ModelDeployment has
    one) of ModelDeployment `name`; return their addresses."""
    vllm, gateway = serving_deployments(cluster, name, namespace)
    drift = drift_deployment(cluster, name, namespace)
    # Every pod's port chosen together (each held until all are chosen): a port chosen alone is free
    # only until then, and a vLLM that has not bound yet would leave its port free for the next pick.
    ports = iter(free_ports(len(vllm) + 1 + (drift is not None)))
    upstream: dict[str, str] = {}  # vLLM Service host -> local address
    local_pods: list[LocalPod] = []
    for deployment, body in vllm.items():
        port = next(ports)
        local_pods.append(run_version(cluster, namespace, body, port))
        upstream[deployment] = f"127.0.0.1:{port}"
    if drift is not None:
        local_pods.append(run_drift(cluster, namespace, drift, next(ports)))
    for deployment in vllm:
        wait_version(cluster, deployment, upstream[deployment])

    def local(group: UpstreamGroup) -> UpstreamGroup:
        # Each version's group points at its local vLLM.
        host = group.service.host.split(".")[0] if group.service else None
        address = upstream.get(host or "") or next(iter(upstream.values()))
        return group.model_copy(update={"service": None, "replicas": [f"http://{address}"]})

    address, gateway_pod, config, keys = run_gateway(cluster, namespace, gateway, local, next(ports))
    local_pods.append(gateway_pod)
    scrape(cluster, name, namespace, local_pods)
    first_key = next((p.read_text().strip() for p in sorted(keys.iterdir())), "") if keys else "none"
    return {
        "GATEWAY_URL": f"http://{address}/v1",
        "GATEWAY_API_KEY": first_key,
        "SERVED_MODEL": config.served_model_name,
    }
