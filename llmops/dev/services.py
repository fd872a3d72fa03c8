"""Services beside the local cluster for the end-to-end run: MinIO (S3), a Ray head, Prometheus.

Each runs as a process of the cluster's state folder (`LocalCluster.spawn`), so `llmops dev
status` lists it and `llmops dev down` stops it with everything else. Their addresses and the
MinIO credentials are recorded in the state, under "services".
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from llmops.dev.cluster import ClusterError, LocalCluster, free_port, free_ports, wait_for
from llmops.dev.tools import binary, ensure_tools


def _record(cluster: LocalCluster, name: str, info: dict) -> dict:
    state = cluster.state()
    state.setdefault("services", {})[name] = info
    cluster.save_state(state)
    return info


def service(cluster: LocalCluster, name: str) -> dict | None:
    """The recorded address (and credentials) of a running service."""
    info = cluster.state().get("services", {}).get(name)
    running = cluster.processes().get(name, (0, False))[1]
    return info if info and running else None


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as r:
        return r.status == 200


@dataclass(frozen=True)
class MinioServer:
    """How to start a MinIO server on loopback with fresh root credentials."""

    argv: list[str]
    env: dict[str, str] = field(repr=False)  # to add to the environment; holds the password
    endpoint: str
    user: str
    password: str = field(repr=False)

    @classmethod
    def on_loopback(cls, binary: Path, data_dir: Path, user: str = "llmops") -> MinioServer:
        port, console = free_ports(2)
        password = secrets.token_urlsafe(18)
        argv = [
            str(binary), "server", str(data_dir), "--quiet",
            "--address", f"127.0.0.1:{port}", "--console-address", f"127.0.0.1:{console}",
        ]  # fmt: skip
        env = {
            "MINIO_ROOT_USER": user,
            "MINIO_ROOT_PASSWORD": password,
            "MINIO_BROWSER": "off",
            "MINIO_UPDATE": "off",
        }
        return cls(argv, env, f"http://127.0.0.1:{port}", user, password)

    def ready(self) -> bool:
        try:
            return _http_ok(f"{self.endpoint}/minio/health/ready")
        except OSError:  # not listening yet
            return False


def start_minio(cluster: LocalCluster, buckets: tuple[str, ...] = ("llmops",)) -> dict:
    """An S3 endpoint with fresh root credentials and the given buckets."""
    if info := service(cluster, "minio"):
        return info
    data = cluster.state_dir / "minio"
    data.mkdir(parents=True, exist_ok=True)
    server = MinioServer.on_loopback(ensure_tools("minio") / "minio", data)
    cluster.spawn("minio", server.argv, env={**os.environ, **server.env})
    endpoint, user, password = server.endpoint, server.user, server.password
    wait_for("MinIO", server.ready, 60, cluster.logs / "minio.log")
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=user,
        aws_secret_access_key=password,
        region_name="us-east-1",
    )
    for bucket in buckets:
        s3.create_bucket(Bucket=bucket)
    info = {"endpoint": endpoint, "accessKeyId": user, "secretAccessKey": password, "buckets": list(buckets)}
    return _record(cluster, "minio", info)


@dataclass(frozen=True)
class RayHead:
    """How to start a local Ray head (`ray start --head --block`) that shares the machine safely."""

    argv: list[str]
    env: dict[str, str]  # to add to the environment
    gcs: str  # host:port, what RAY_ADDRESS and ray.init take
    dashboard: str  # http://host:port, the Jobs API

    @classmethod
    def on_loopback(cls, temp_dir: Path, num_cpus: int = 2) -> RayHead:
        """Every port on loopback and free: two heads on one machine never collide (Ray's defaults,
        e.g. the dashboard agent's 52365, are fixed numbers). `temp_dir` must be short: Ray's unix
        sockets live there. Through this interpreter, so workers run this environment and checkout."""
        names = (
            "node-manager-port", "object-manager-port", "runtime-env-agent-port", "ray-client-server-port",
            "dashboard-agent-grpc-port", "dashboard-agent-listen-port", "metrics-export-port",
        )  # fmt: skip
        port, dashboard, *others = free_ports(2 + len(names))
        argv = [
            sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
            f"--port={port}", f"--num-cpus={num_cpus}", "--num-gpus=0", "--node-ip-address=127.0.0.1",
            "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
            *(f"--{name}={p}" for name, p in zip(names, others, strict=True)),
            f"--temp-dir={temp_dir}", "--disable-usage-stats",
        ]  # fmt: skip
        gcs = f"127.0.0.1:{port}"
        env = {
            "RAY_ADDRESS": gcs,  # Ray's own helpers inside the cluster find this head, not a neighbour's
            "RAY_USAGE_STATS_ENABLED": "0",
            # A development head on loopback only: no token auth, whatever ~/.ray holds from other runs.
            "RAY_AUTH_MODE": "disabled",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",  # `python`
        }
        return cls(argv, env, gcs, f"http://127.0.0.1:{dashboard}")


def ray_temp_dir(state_dir: Path) -> Path:
    """The Ray head's temp dir (its unix sockets and sessions) for the cluster in `state_dir`: short,
    as Ray's socket paths must be, and one per state folder's full path: two state folders of one
    name (two test sessions' `cluster0`) on one machine once shared `/tmp/ray-cluster0`, and the
    second head took the first one's GCS away."""
    digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:8]
    return Path("/tmp") / f"ray-{state_dir.name[:16]}-{digest}"


def start_ray(cluster: LocalCluster, num_cpus: int = 2) -> dict:
    """A local Ray head (`ray start --head --block`), with its dashboard serving the Jobs API."""
    if info := service(cluster, "ray"):
        return info
    try:
        import ray  # noqa: F401
    except ImportError as e:
        raise ClusterError("ray is missing: install the training extra (hack/venv.sh)") from e
    head = RayHead.on_loopback(ray_temp_dir(cluster.state_dir), num_cpus)
    env = {**os.environ, **head.env}
    if minio := service(cluster, "minio"):
        # Like a real shared Ray cluster, it brings its own storage access (the operator never hands
        # secret values to a Ray cluster it does not own).
        env |= {"AWS_ACCESS_KEY_ID": minio["accessKeyId"], "AWS_SECRET_ACCESS_KEY": minio["secretAccessKey"]}
    optimize = Path(__file__).resolve().parents[2] / ".venv-optimize" / "bin" / "python"
    if not env.get("LLMOPS_OPTIMIZE_PYTHON") and optimize.exists():
        # method quantize runs llm-compressor there: this venv holds vLLM, whose pins it cannot share
        # (hack/venv.sh optimize, llmops/training/compress.py).
        env["LLMOPS_OPTIMIZE_PYTHON"] = str(optimize)
    cluster.spawn("ray", head.argv, env=env)
    address = head.dashboard
    log = cluster.logs / "ray.log"
    wait_for("the Ray dashboard", lambda: _http_ok(f"{address}/api/version"), 120, log)

    # The Jobs API answers only once the head's job agent has registered; a no-op job proves it.
    def agent_ready() -> bool:
        from ray.job_submission import JobSubmissionClient

        client = JobSubmissionClient(address)
        if "llmops-dev-ready" not in {j.submission_id for j in client.list_jobs()}:
            client.submit_job(entrypoint="true", submission_id="llmops-dev-ready")
        return True

    wait_for("the Ray head's job agent", agent_ready, 120, log)
    return _record(cluster, "ray", {"address": address, "gcs": head.gcs})


def start_prometheus(cluster: LocalCluster, scrape_interval: str = "2s") -> dict:
    """Prometheus scraping whatever `set_scrape_targets` lists (file-based discovery, reloaded live)."""
    if info := service(cluster, "prometheus"):
        return info
    prometheus = binary("prometheus")
    root = cluster.state_dir / "prometheus"
    (root / "data").mkdir(parents=True, exist_ok=True)
    targets = root / "targets.json"
    if not targets.exists():
        targets.write_text("[]")
    config = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "scrape_configs": [
            {"job_name": "llmops", "file_sd_configs": [{"files": [str(targets)], "refresh_interval": "1s"}]}
        ],
    }
    (root / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    cluster.spawn(
        "prometheus",
        [
            prometheus,
            f"--config.file={root / 'prometheus.yml'}",
            f"--storage.tsdb.path={root / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
    )
    url = f"http://127.0.0.1:{port}"
    wait_for("Prometheus", lambda: _http_ok(f"{url}/-/ready"), 60, cluster.logs / "prometheus.log")
    return _record(cluster, "prometheus", {"url": url, "targets": str(targets)})


def set_scrape_targets(cluster: LocalCluster, groups: list[dict]) -> None:
    """Point Prometheus at file-discovery groups (`[{"targets": ["host:port"], "labels": {...}}]`);
    it picks the change up within a second (see `llmops.dev.scrape` for groups from monitors)."""
    info = service(cluster, "prometheus")
    if not info:
        raise ClusterError("Prometheus is not running: start it first")
    tmp = Path(info["targets"]).with_suffix(".tmp")
    tmp.write_text(json.dumps(groups))
    tmp.replace(info["targets"])
