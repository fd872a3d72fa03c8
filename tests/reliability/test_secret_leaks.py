"""Issue 17, point 8: no secret ever leaves its Secret, at every log level.

Unique marker values are planted in every Secret the chain uses: the object storage keys (MinIO runs
with them as its root credentials, so they are the real keys of every S3 call), the gateway's API key,
and the completion-id key the operator makes itself (read back from its Secret). Then the chain runs
for real:

1. the operator (`llmops operator --webhook`) at `--verbose`, then again at its default level, each
   time reconciling the ModelDeployment (examples/modeldeployment-single.yaml, with payload sampling
   to S3): it reads the registry's Secret, resolves the version in MinIO, applies the children;
2. the model fetcher (`python -m llmops.fetch`, the vLLM pod's init container) with the command and
   the Secret-backed environment the operator gave that container, as the kubelet would start it;
3. an upstream (the `vllm` variant, under `long`: real vLLM on the CPU serving what was fetched; the
   CI variant: tests/serving/fake_upstream.py, since vLLM takes minutes to start here) and the
   gateway (`--log-level debug`) with the config the operator wrote into its ConfigMap, its API keys
   and completion-id key as the mounted Secrets, and the sampling credentials from the Secret:
   requests with the marker API key (and a wrong one), feedback on a completion (with vLLM: the fake
   upstream's ids are not the gateway's), payload samples written to MinIO.

kwok stands in for the kubelet, so the three programs run here as processes, with what their pods
would get. Then every surface is scanned for every marker in every form an encoder would give it
(plain, base64 standard and URL-safe with and without padding, URL-encoded: llmops.logsafe.forms):
each object in the namespace but the Secrets themselves (statuses, annotations, ConfigMaps,
Deployments), every Event, the operator's logs at both levels, the fetcher's, vLLM's and the
gateway's logs, and every object stored in MinIO. 0 hits is the result; the figures are printed. The
Secrets themselves are scanned too, as the control: the scanner must find the markers there.

4. the drift monitor (`python -m llmops.serving.drift --once --log-level debug`), with the command
   and Secret-backed environment of the operator's drift Deployment: it reads the reference data (a
   Secret of its own) and the prompts the gateway sampled, and runs one test.

The workloads of a TrainingJob (Ray) are scanned by `test_no_marker_leaks_from_a_training_run`.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmops import logsafe
from llmops.api.common import ObjectStorageLocation
from llmops.dev.cluster import LocalCluster, free_port, wait_for
from llmops.dev.services import MinioServer
from llmops.dev.tools import ensure_tools
from llmops.registry import GateVerdict, Lineage, register
from llmops.storage import Credentials, open_store
from tests.helpers import eventually, operator_process, stop_spawned

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("llmops_crds")]

ROOT = Path(__file__).parents[2]
CORPUS = ROOT / "tests" / "serving" / "data" / "corpus.txt"
FAKE_UPSTREAM = ROOT / "tests" / "serving" / "fake_upstream.py"
TAG = uuid.uuid4().hex[:10]
DRIFT_PROMPTS = 24  # the drift monitor tests at least 20 prompts
MARKERS = {
    "s3 access key id": f"LEAKID{TAG}",
    "s3 secret access key": f"leak-s3-secret-{TAG}",
    "gateway api key": f"leak-api-key-{TAG}",
}


def _kubectl_json(cluster: LocalCluster, *args: str) -> dict:
    return json.loads(cluster.kubectl(*args, "-o", "json").stdout)


@contextlib.contextmanager
def _minio(tmp_path: Path):
    """MinIO whose root credentials are the markers: every S3 call of the chain signs with them."""
    server = MinioServer.on_loopback(ensure_tools("minio") / "minio", tmp_path / "minio-data")
    key_id, secret = MARKERS["s3 access key id"], MARKERS["s3 secret access key"]
    server = dataclasses.replace(
        server,
        user=key_id,
        password=secret,
        env={**server.env, "MINIO_ROOT_USER": key_id, "MINIO_ROOT_PASSWORD": secret},
    )
    (tmp_path / "minio-data").mkdir()
    log = tmp_path / "minio.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(server.argv, env={**os.environ, **server.env}, stdout=out, stderr=out)
    try:
        wait_for("MinIO", server.ready, 60, log)
        yield server
    finally:
        proc.terminate()
        proc.wait(30)


def _model_deployment(endpoint: str) -> dict:
    """examples/modeldeployment-single.yaml on this MinIO, on the CPU, with payload sampling to S3."""
    body = yaml.safe_load((ROOT / "examples" / "modeldeployment-single.yaml").read_text())
    spec = body["spec"]
    spec["registry"]["s3"]["endpoint"] = endpoint
    spec["resources"] = {"cpu": 1, "memory": "2Gi"}
    spec["engine"] = {"maxModelLen": 256, "dtype": "float32"}
    # The drift monitor: reference data with a Secret of its own; the gateway samples every prompt for
    # it beside the payload samples (drift-prompts/).
    reference = {"endpoint": endpoint, "bucket": "datasets", "prefix": "reference/"}
    reference["credentialsSecretRef"] = {"name": "dataset-credentials"}
    spec["monitoring"] = {"drift": {"referenceData": {"s3": reference}, "sampleRate": 1.0}}
    spec["gateway"]["payloadSampling"] = {
        "rate": 1.0,
        "destination": {
            "s3": {
                "endpoint": endpoint,
                "bucket": "payloads",
                "credentialsSecretRef": {"name": "payload-credentials"},
            }
        },
    }
    return body


def _env_of(cluster: LocalCluster, namespace: str, container: dict) -> dict[str, str]:
    """The container's environment as the kubelet gives it: values, and secretKeyRefs resolved."""
    env = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        elif ref := var.get("valueFrom", {}).get("secretKeyRef"):
            secret = _kubectl_json(cluster, "get", "secret", ref["name"], "-n", namespace)
            env[var["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
    return env


def _mount_secret(cluster: LocalCluster, namespace: str, name: str, into: Path) -> Path:
    """A Secret volume: one file per key."""
    into.mkdir(parents=True)
    for key, value in _kubectl_json(cluster, "get", "secret", name, "-n", namespace)["data"].items():
        (into / key).write_bytes(base64.b64decode(value))
    return into


def _reconciled(cluster: LocalCluster, namespace: str) -> dict | None:
    md = _kubectl_json(cluster, "get", "md", "support-bot", "-n", namespace)
    status = md.get("status") or {}
    ready = {c["type"]: c["status"] for c in status.get("conditions", [])}
    if status.get("observedGeneration") == md["metadata"]["generation"] and ready.get("Ready") == "True":
        return md
    return None


def _scan(surfaces: dict[str, bytes], markers: dict[str, str]) -> dict[str, list[str]]:
    """surface -> the markers (by name and form) found in it."""
    patterns = {(name, f): f.encode() for name, value in markers.items() for f in logsafe.forms(value)}
    hits: dict[str, list[str]] = {}
    for surface, data in surfaces.items():
        found = [f"{name} as {form!r}" for (name, form), pattern in patterns.items() if pattern in data]
        if found:
            hits[surface] = found
    return hits


@pytest.mark.parametrize(
    "upstream", ["fake", pytest.param("vllm", marks=pytest.mark.long)], ids=["ci", "vllm"]
)
def test_no_marker_reaches_any_log_status_event_or_stored_object(
    cluster: LocalCluster, namespace: str, tmp_path: Path, upstream: str
) -> None:
    """`ci`: the gateway in front of tests/serving/fake_upstream.py (vLLM takes minutes to start here);
    `vllm` (long): in front of real vLLM on the CPU, serving the tiny model the fetcher fetched."""
    from llmops.serving.local import make_tiny_llama, start_vllm, stop, wait_healthy

    surfaces: dict[str, bytes] = {}
    with _minio(tmp_path) as minio:
        credentials = Credentials(minio.user, minio.password)
        import boto3

        s3 = boto3.client(
            "s3", endpoint_url=minio.endpoint, region_name="us-east-1",
            aws_access_key_id=minio.user, aws_secret_access_key=minio.password,
        )  # fmt: skip
        for bucket in ("models", "payloads", "datasets"):
            s3.create_bucket(Bucket=bucket)
        reference = "".join(
            json.dumps({"text": f"where is my order {n}?"}) + "\n" for n in range(DRIFT_PROMPTS)
        )
        s3.put_object(Bucket="datasets", Key="reference/prompts.jsonl", Body=reference.encode())
        # The registry: a real tiny model, registered as versions 1 to 3 (the example serves 3).
        if upstream == "vllm":
            model = make_tiny_llama(tmp_path / "tiny", CORPUS)
        else:  # what the fetcher fetches and nothing serves
            model = tmp_path / "tiny"
            model.mkdir()
            (model / "config.json").write_text("{}")
        location = ObjectStorageLocation.model_validate(
            {"s3": {"endpoint": minio.endpoint, "bucket": "models", "prefix": "support/"}}
        )
        store = open_store(location, credentials)
        gates = [GateVerdict(metric="accuracy", operator=">=", threshold=0.5, value=0.9, passed=True)]
        for _ in range(3):
            register(store, "support-bot", model, metrics={"accuracy": 0.9}, gates=gates, lineage=Lineage())

        # The Secrets, as the docs say to create them.
        cluster.kubectl(
            "create", "secret", "generic", "registry-credentials", "-n", namespace,
            f"--from-literal=rootUser={minio.user}", f"--from-literal=rootPassword={minio.password}",
        )  # fmt: skip
        cluster.kubectl(
            "create", "secret", "generic", "payload-credentials", "-n", namespace,
            f"--from-literal=AWS_ACCESS_KEY_ID={minio.user}",
            f"--from-literal=AWS_SECRET_ACCESS_KEY={minio.password}",
        )  # fmt: skip
        cluster.kubectl(
            "create", "secret", "generic", "dataset-credentials", "-n", namespace,
            f"--from-literal=AWS_ACCESS_KEY_ID={minio.user}",
            f"--from-literal=AWS_SECRET_ACCESS_KEY={minio.password}",
        )  # fmt: skip
        cluster.kubectl(
            "create", "secret", "generic", "support-bot-api-keys", "-n", namespace,
            f"--from-literal=team-a={MARKERS['gateway api key']}",
        )  # fmt: skip

        # 1. The operator, verbose, then at its default level; each reconciles a new generation.
        body = _model_deployment(minio.endpoint)
        for level, extra in (("verbose", ["--verbose"]), ("default", [])):
            with operator_process(cluster, namespace, "--webhook", *extra) as operator:
                cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(body))
                md = eventually(lambda: _reconciled(cluster, namespace), 180)
                generation = md["metadata"]["generation"]
                print(f"secret leaks: operator ({level}) reconciled generation {generation}")
            surfaces[f"operator log ({level})"] = Path(operator["log"]).read_bytes()
            body["spec"]["gateway"]["rateLimit"]["burst"] += 1  # a new generation for the next run

        # The completion-id key the operator made is a secret too.
        feedback = _kubectl_json(cluster, "get", "secret", "support-bot-feedback-key", "-n", namespace)
        markers = {
            **MARKERS,
            "completion-id key": base64.b64decode(next(iter(feedback["data"].values()))).decode(),
        }

        # 2. The model fetcher, as the vLLM pod's init container.
        deployments = _kubectl_json(cluster, "get", "deployments", "-n", namespace)["items"]
        (vllm,) = [d for d in deployments if d["metadata"]["name"].endswith("-vllm")]
        (gateway,) = [d for d in deployments if d["metadata"]["name"].endswith("-gateway")]
        (fetch,) = vllm["spec"]["template"]["spec"]["initContainers"]
        argv = list(fetch["command"])
        models = tmp_path / "models"
        argv[argv.index("--into") + 1] = str(models)
        assert argv[:3] == ["python", "-m", "llmops.fetch"], argv
        out = subprocess.run(
            [sys.executable, *argv[1:]], env={**os.environ, **_env_of(cluster, namespace, fetch)},
            capture_output=True, timeout=300,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr.decode()
        surfaces["fetcher log"] = out.stdout + out.stderr

        # 3. vLLM on what was fetched, and the gateway at debug with what its pod would get.
        config = json.loads(
            _kubectl_json(cluster, "get", "configmap", gateway["metadata"]["name"], "-n", namespace)["data"][
                "config.json"
            ]
        )
        port = free_port()
        upstream_log = tmp_path / f"{upstream} upstream.log"
        if upstream == "vllm":
            proc = start_vllm(
                models / "model", port=port, served_model_name=config["servedModelName"], log=upstream_log,
                tie_to_parent=True,
            )  # fmt: skip
        else:
            with open(upstream_log, "w") as out:
                proc = subprocess.Popen(
                    [sys.executable, str(FAKE_UPSTREAM), "--port", str(port), "--mode", "pii"],
                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                )  # fmt: skip
        try:
            wait_healthy(f"http://127.0.0.1:{port}", proc, timeout=400, log=upstream_log)
            _gateway_traffic(cluster, namespace, gateway, config, port, tmp_path, surfaces, upstream)
        finally:
            stop(proc)
        surfaces[f"{upstream} upstream log"] = upstream_log.read_bytes()

        # 4. The drift monitor, at debug, with what its pod would get: one test over what the gateway
        # sampled, against the reference data (each read with its own Secret's keys).
        (drift,) = [d for d in deployments if d["metadata"]["name"].endswith("-drift")]
        (monitor,) = drift["spec"]["template"]["spec"]["containers"]
        argv = list(monitor["command"])
        assert argv[:3] == ["python", "-m", "llmops.serving.drift"], argv
        argv[argv.index("--port") + 1] = str(free_port())
        out = subprocess.run(
            [sys.executable, *argv[1:], "--once", "--log-level", "debug"],
            env={**os.environ, **_env_of(cluster, namespace, monitor)}, capture_output=True, timeout=600,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr.decode()
        result = json.loads(out.stdout.decode().strip().splitlines()[-1])
        assert result and result["n_current"] >= DRIFT_PROMPTS, result  # it read the gateway's samples
        print(f"secret leaks: the drift monitor tested {result['n_current']} sampled prompts")
        surfaces["drift monitor log (debug)"] = out.stdout + out.stderr

        # Everything stored in MinIO: the registry and the payload and feedback samples.
        stored = 0
        for bucket in ("models", "payloads", "datasets"):
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                for item in page.get("Contents", []):
                    data = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
                    surfaces[f"s3://{bucket}/{item['Key']}"] = data
                    stored += 1
        samples = [k for k in surfaces if k.startswith("s3://payloads/")]
        assert samples, "the gateway stored no payload sample: nothing of that surface was scanned"

    # Every object in the namespace but the Secrets, and every Event.
    kinds = cluster.kubectl("api-resources", "--verbs=list", "--namespaced", "-o", "name").stdout.split()
    secrets = b""
    for kind in kinds:
        items = _kubectl_json(cluster, "get", kind, "-n", namespace)["items"]
        for item in items:
            text = json.dumps(item).encode()
            if kind == "secrets":
                secrets += text
            else:  # events and events.k8s.io list the same Events: one surface each
                surfaces[f"{item['kind']}/{item['metadata']['name']}"] = text

    hits = _scan(surfaces, markers)
    control = _scan({"the Secrets": secrets}, markers)
    total = sum(len(data) for data in surfaces.values())
    objects = sum(1 for k in surfaces if " log" not in k and not k.startswith("s3://"))
    logs = [k for k in surfaces if " log" in k]
    forms = set().union(*(logsafe.forms(v) for v in markers.values()))
    print(
        f"secret leaks: {len(markers)} markers in {len(forms)} forms; scanned {len(surfaces)} surfaces,"
        f" {total} bytes: {objects} API objects (statuses,"
        f" annotations, ConfigMaps, Events), {len(logs)} logs ({', '.join(logs)}), {stored} stored objects"
        f" ({len(samples)} payload/feedback samples); hits: {sum(len(v) for v in hits.values())}"
    )
    found = sum(len(v) for v in control.values())
    print(f"secret leaks: control: the Secrets themselves hold {found} marker forms")
    assert control, "the scanner finds nothing even in the Secrets: it proves nothing"
    assert not hits, json.dumps(hits, indent=1)


def _gateway_traffic(
    cluster: LocalCluster,
    namespace: str,
    gateway: dict,
    config: dict,
    vllm_port: int,
    tmp_path: Path,
    surfaces: dict[str, bytes],
    upstream: str,
) -> None:
    """The gateway at debug: completions with the marker key (plain and streamed), a wrong key, and
    feedback; stopped with SIGTERM so its samplers flush to MinIO."""
    import openai

    pod = gateway["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    mounts = {v["name"]: v for v in pod["volumes"]}
    for mount in container["volumeMounts"]:
        volume = mounts[mount["name"]]
        if "secret" in volume:
            name = volume["secret"]["secretName"]
            folder = _mount_secret(cluster, namespace, name, tmp_path / mount["name"])
            for field, path in (("apiKeysPath", config.get("apiKeysPath")),):
                if path and path.startswith(mount["mountPath"]):
                    config[field] = str(folder) + path[len(mount["mountPath"]) :]
            feedback = config.get("feedback") or {}
            if feedback.get("keyPath", "").startswith(mount["mountPath"]):
                feedback["keyPath"] = str(folder) + feedback["keyPath"][len(mount["mountPath"]) :]
    config["upstreams"] = [
        {k: v for k, v in u.items() if k != "service"} | {"replicas": [f"http://127.0.0.1:{vllm_port}"]}
        for u in config["upstreams"]
    ]
    path = tmp_path / "gateway.json"
    path.write_text(json.dumps(config))
    port = free_port()
    log = tmp_path / "gateway.log"
    argv = [sys.executable, "-m", "llmops.serving.gateway", "--config", str(path), "--port", str(port)]
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [*argv, "--host", "127.0.0.1", "--log-level", "debug"],
            env={**os.environ, **_env_of(cluster, namespace, container)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        eventually(lambda: _up(url, proc), 60)
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=MARKERS["gateway api key"], max_retries=0)
        model = config["servedModelName"]
        answer = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hello"}], max_tokens=8
        )
        stream = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "again"}], max_tokens=8, stream=True
        )
        assert [chunk for chunk in stream]
        for n in range(DRIFT_PROMPTS):  # enough sampled prompts for one drift test
            client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": f"where is parcel {n}?"}], max_tokens=4
            )
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{url}/v1", api_key=f"wrong-{TAG}", max_retries=0).models.list()
        if upstream == "vllm":  # an id the gateway signed (the fake upstream answers with its own)
            response = client.post(
                "/feedback", body={"completion_id": answer.id, "value": True}, cast_to=object
            )
            print(f"secret leaks: the gateway took feedback: {response}")
        print(f"secret leaks: the gateway answered {answer.id} and a stream; refused a wrong key")
    finally:
        proc.terminate()
        proc.wait(60)
    surfaces["gateway log (debug)"] = log.read_bytes()


def _up(url: str, proc: subprocess.Popen) -> Any:
    from tests.helpers import http_get

    assert proc.poll() is None, f"the gateway exited with {proc.returncode}"
    return http_get(f"{url}/readyz")[0] == 200


QUICKSTART = ROOT / "llmops" / "training" / "data" / "quickstart"


def test_no_marker_leaks_from_a_training_run(cluster: LocalCluster, namespace: str, tmp_path: Path) -> None:
    """The workloads of a TrainingJob: examples/quickstart/trainingjob.yaml through the operator at
    `--verbose`, on a real local Ray head (the Ray Jobs API) that brings its own storage access, as the
    docs say a shared Ray cluster does: MinIO's marker keys are in the head's environment and in the
    job's Secret (the operator reads it to reach the registry). Data preparation, training, evaluation
    and registration run for real; then the operator's log, every file under Ray's temp dir (the head's,
    the dashboard's and job agent's logs, the job driver's and every worker's stdout and stderr), the
    TrainingJob's status and Events and every object stored in MinIO are scanned for the markers."""
    from ray.job_submission import JobSubmissionClient

    from llmops.dev.services import RayHead
    from llmops.serving.local import make_tiny_llama

    surfaces: dict[str, bytes] = {}
    with _minio(tmp_path) as minio:
        import boto3

        s3 = boto3.client(
            "s3", endpoint_url=minio.endpoint, region_name="us-east-1",
            aws_access_key_id=minio.user, aws_secret_access_key=minio.password,
        )  # fmt: skip
        s3.create_bucket(Bucket="llmops")
        for name in ("train.jsonl", "eval.jsonl"):
            s3.upload_file(str(QUICKSTART / name), "llmops", f"datasets/quickstart/{name}")
        base = make_tiny_llama(tmp_path / "base", QUICKSTART / "train.jsonl", max_positions=256)
        for path in base.rglob("*"):
            if path.is_file():
                s3.upload_file(str(path), "llmops", f"base/tiny-llama/{path.relative_to(base)}")
        cluster.kubectl(
            "create", "secret", "generic", "minio-credentials", "-n", namespace,
            f"--from-literal=AWS_ACCESS_KEY_ID={minio.user}",
            f"--from-literal=AWS_SECRET_ACCESS_KEY={minio.password}",
        )  # fmt: skip

        temp = Path("/tmp") / f"ray-leaks-{TAG}"  # short: Ray's unix sockets live there
        head = RayHead.on_loopback(temp, num_cpus=2)
        storage = {"AWS_ACCESS_KEY_ID": minio.user, "AWS_SECRET_ACCESS_KEY": minio.password}
        cluster.spawn("ray-leaks", head.argv, env={**os.environ, **head.env, **storage})
        try:

            def jobs_api_up() -> bool:
                client = JobSubmissionClient(head.dashboard)
                if "ready" not in {j.submission_id for j in client.list_jobs()}:
                    client.submit_job(entrypoint="true", submission_id="ready")
                return True

            eventually(lambda: _quietly(jobs_api_up), 180)
            text = (ROOT / "examples" / "quickstart" / "trainingjob.yaml").read_text()
            values = {"S3_ENDPOINT": minio.endpoint, "RAY_ADDRESS": head.dashboard}
            job = yaml.safe_load(re.sub(r"\$\{(\w+)\}", lambda m: values.get(m.group(1), m.group(0)), text))
            with operator_process(cluster, namespace, "--verbose") as operator:
                cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(job))
                name = job["metadata"]["name"]

                def ended() -> dict | None:
                    tj = _kubectl_json(cluster, "get", "tj", name, "-n", namespace)
                    phase = (tj.get("status") or {}).get("phase")
                    return tj if phase in ("Succeeded", "Failed") else None

                tj = eventually(ended, 1200)
            assert tj["status"]["phase"] == "Succeeded", tj["status"]
            print(f"secret leaks: TrainingJob {name} Succeeded: {tj['status']['modelVersion']}")
            surfaces["operator log (verbose)"] = Path(operator["log"]).read_bytes()
        finally:
            stop_spawned(cluster, "ray-leaks")
        ray_files = [
            p for p in temp.rglob("*") if p.is_file() and not p.is_socket() and "sockets" not in p.parts
        ]
        for path in ray_files:
            with contextlib.suppress(OSError):
                surfaces[f"ray {path.relative_to(temp)}"] = path.read_bytes()
        surfaces["ray head log"] = (cluster.logs / "ray-leaks.log").read_bytes()
        stored = 0
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket="llmops"):
            for item in page.get("Contents", []):
                if item["Size"] <= 64 << 20:  # weights are numbers; manifests, reports and logs are text
                    surfaces[f"s3://llmops/{item['Key']}"] = s3.get_object(Bucket="llmops", Key=item["Key"])[
                        "Body"
                    ].read()
                    stored += 1

    for kind in ("trainingjobs.llmops.io", "events", "configmaps"):
        for item in _kubectl_json(cluster, "get", kind, "-n", namespace)["items"]:
            surfaces[f"{item['kind']}/{item['metadata']['name']}"] = json.dumps(item).encode()
    hits = _scan(surfaces, MARKERS)
    logs = [k for k in surfaces if k.startswith("ray ") or " log" in k]
    total = sum(len(data) for data in surfaces.values())
    print(
        f"secret leaks (training): scanned {len(surfaces)} surfaces, {total} bytes: {len(logs)} logs and"
        f" files of Ray and the operator, {stored} stored objects; hits: {sum(len(v) for v in hits.values())}"
    )
    assert len(ray_files) > 10, "Ray's temp dir holds almost nothing: the workload logs were not scanned"
    assert not hits, json.dumps(hits, indent=1)


def _quietly(check: Any) -> Any:
    """`check()`, or None while it raises (a server still starting)."""
    try:
        return check()
    except Exception:
        return None
