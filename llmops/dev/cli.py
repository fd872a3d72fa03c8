"""`llmops dev up|status|down`: one local cluster per user, found again by its state folder."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import click

from llmops.command_group import Group, storage_errors
from llmops.dev.cluster import ClusterError, LocalCluster, free_ports

REPO_CRDS = Path(__file__).resolve().parents[2] / "crds"
OPERATOR = "llmops-operator"


def start_operator(cluster: LocalCluster) -> None:
    """Install our CRDs and run the operator beside the cluster; `llmops dev down` stops it too."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO_CRDS))
    cluster.wait_established("crd", "-l", "app.kubernetes.io/part-of=llmops")
    ports = free_ports(2)  # metrics, health
    cluster.spawn(
        OPERATOR,
        [
            sys.executable,
            "-m",
            "llmops.cli",
            "operator",
            "--all-namespaces",
            "--log-format",
            "text",
            "--metrics-port",
            str(ports[0]),
            "--health-port",
            str(ports[1]),
        ],
        # The audit trail in the state folder unless LLMOPS_AUDIT names one (`llmops audit show`).
        env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "LLMOPS_AUDIT": audit_location(cluster)},
    )


def audit_location(cluster: LocalCluster) -> str:
    return os.environ.get("LLMOPS_AUDIT") or str(cluster.state_dir / "audit")


def default_state_dir() -> Path:
    return Path(os.environ.get("LLMOPS_DEV_DIR", Path(tempfile.gettempdir()) / f"llmops-dev-{os.getuid()}"))


state_dir_option = click.option(
    "--state-dir",
    type=click.Path(path_type=Path),
    default=default_state_dir,
    show_default="$LLMOPS_DEV_DIR, else $TMPDIR/llmops-dev-$UID; /tmp when TMPDIR is unset",
    help="Folder holding the cluster's certificates, data, logs and kubeconfig.",
)


@click.group(cls=Group)
def dev() -> None:
    """A local Kubernetes control plane for development and tests."""


@dev.command()
@state_dir_option
@click.option("--kubeconfig", type=click.Path(path_type=Path), help="Also write the kubeconfig here.")
@click.option("--operator", is_flag=True, help="Also install the llmops CRDs and run the operator.")
@click.option("--services", is_flag=True, help="Also run MinIO (S3), a Ray head and Prometheus beside it.")
def up(state_dir: Path, kubeconfig: Path | None, operator: bool, services: bool) -> None:
    """Start the cluster (or find the one already running) and print how to use it.

    What it needs is checked first (`llmops.dev.preflight`): each missing thing is one line that
    says how to get it, and nothing starts. A component that fails to start stops the rest.
    """
    from llmops.dev import preflight

    cluster = LocalCluster(state_dir)
    if not cluster.running() and (problems := preflight.check("cluster", state_dir)):
        for problem in problems:
            click.echo(str(problem), err=True)
        raise click.ClickException("llmops dev up needs the above first; nothing was started")
    try:
        cluster.start(progress=lambda msg: click.echo(f"  {msg}", err=True))
        if operator and OPERATOR not in cluster.processes():
            start_operator(cluster)
            click.echo(f"  operator running (log: {cluster.logs / (OPERATOR + '.log')})", err=True)
            click.echo(f"  audit trail: export LLMOPS_AUDIT={audit_location(cluster)}", err=True)
        if services:
            from llmops.dev import services as svc

            click.echo(f"  MinIO at {svc.start_minio(cluster)['endpoint']}", err=True)
            click.echo(f"  Ray head at {svc.start_ray(cluster)['address']}", err=True)
            click.echo(f"  Prometheus at {svc.start_prometheus(cluster)['url']}", err=True)
    except ClusterError as e:
        cluster.stop()  # no process left behind; the logs stay in the state folder
        raise click.ClickException(f"{e} (every component was stopped; logs in {cluster.logs})") from e
    path = cluster.kubeconfig
    if kubeconfig:
        kubeconfig.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(cluster.kubeconfig, kubeconfig)
        kubeconfig.chmod(0o600)
        path = kubeconfig
    click.echo(f"export KUBECONFIG={path}")


@dev.command()
@state_dir_option
def status(state_dir: Path) -> None:
    """Show each component and whether it runs; exit 1 when the cluster is not up."""
    cluster = LocalCluster(state_dir)
    procs = cluster.processes()
    if not procs:
        raise click.ClickException(no_cluster(state_dir))
    for name, (pid, alive) in procs.items():
        click.echo(f"{name:<24} pid {pid:<8} {'running' if alive else 'stopped'}")
    running = cluster.running()
    click.echo(f"apiserver {cluster.server} {'ready' if running else 'not ready'}")
    click.echo(f"kubeconfig {cluster.kubeconfig}")
    raise SystemExit(0 if running else 1)


@dev.command()
@state_dir_option
@click.option("--keep-state", is_flag=True, help="Keep the state folder (logs, data) for a look afterwards.")
def down(state_dir: Path, keep_state: bool) -> None:
    """Stop every component and remove the state folder.

    Only a folder a dev cluster made (it holds the cluster's state.json) is removed; any other folder
    is refused, so a mistyped --state-dir or $LLMOPS_DEV_DIR deletes nothing. No folder at all: nothing
    to stop, exit 0 (down is idempotent)."""
    cluster = LocalCluster(state_dir)
    if not state_dir.exists():
        click.echo(f"no cluster in {state_dir}: nothing to stop")
        return
    if not cluster.owns_state_dir():
        raise click.ClickException(
            f"{state_dir} is not the state folder of a dev cluster (it has no state.json): nothing "
            "stopped or removed; check --state-dir and $LLMOPS_DEV_DIR"
        )
    cluster.stop(remove=not keep_state)
    click.echo(f"stopped; {'kept' if keep_state else 'removed'} {state_dir}")


@dev.command()
@state_dir_option
def env(state_dir: Path) -> None:
    """Print `export` lines for the running services, for `eval "$(llmops dev env)"`.

    KUBECONFIG; MinIO's endpoint and keys as the AWS variables every llmops command and boto3 read
    (AWS_ENDPOINT_URL_S3, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) and as S3_ENDPOINT, which the
    examples' templates and `dev upload` name; RAY_ADDRESS; Prometheus as LLMOPS_PROMETHEUS_URL (the
    operator's and `llmops report usage`'s setting) and PROMETHEUS_URL. Without a cluster here: the
    reason on stderr, exit 1, and `false` as the only line to eval, so that the eval fails too (an
    empty eval would succeed) and `eval "$(llmops dev env)" && ...` stops there."""
    from llmops.dev import services as svc

    cluster = LocalCluster(state_dir)
    if not cluster.processes():
        click.echo("false")
        raise click.ClickException(no_cluster(state_dir))
    click.echo(f"export KUBECONFIG={cluster.kubeconfig}")
    if minio := svc.service(cluster, "minio"):
        click.echo(f"export S3_ENDPOINT={minio['endpoint']}")
        click.echo(f"export AWS_ENDPOINT_URL_S3={minio['endpoint']}")
        click.echo(f"export AWS_ACCESS_KEY_ID={minio['accessKeyId']}")
        click.echo(f"export AWS_SECRET_ACCESS_KEY={minio['secretAccessKey']}")
    if ray := svc.service(cluster, "ray"):
        click.echo(f"export RAY_ADDRESS={ray['address']}")
    if prometheus := svc.service(cluster, "prometheus"):
        click.echo(f"export LLMOPS_PROMETHEUS_URL={prometheus['url']}")
        click.echo(f"export PROMETHEUS_URL={prometheus['url']}")


def no_cluster(state_dir: Path) -> str:
    """The one line for a command that needs the dev cluster of `state_dir` and finds none."""
    flag = "" if state_dir == default_state_dir() else f" --state-dir {state_dir}"
    return f"no cluster in {state_dir}: start one with `llmops dev up{flag}`"


@dev.command()
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.argument("target")
@click.option(
    "--endpoint",
    envvar=["S3_ENDPOINT", "AWS_ENDPOINT_URL_S3"],
    required=True,
    help='S3 endpoint [env S3_ENDPOINT, else AWS_ENDPOINT_URL_S3; both set by eval "$(llmops dev env)"].',
)
@storage_errors
def upload(source: Path, target: str, endpoint: str) -> None:
    """Copy a file or a folder to s3://BUCKET/PREFIX (keys from $AWS_ACCESS_KEY_ID/$AWS_SECRET_ACCESS_KEY)."""
    from llmops.storage import S3Store

    if not target.startswith("s3://"):
        raise click.UsageError("TARGET must be s3://bucket/prefix")
    bucket, _, prefix = target.removeprefix("s3://").partition("/")
    store = S3Store(bucket, prefix, endpoint=endpoint, region=None, credentials=None)
    store.on_retry(lambda line: click.echo(line, err=True))  # a person waits: each retry told
    files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
    for path in files:
        key = path.name if source.is_file() else path.relative_to(source).as_posix()
        store.upload_file(key, path)
    click.echo(f"uploaded {len(files)} file(s) to {store.uri}")


@dev.command("serve")
@click.argument("name")
@click.option("-n", "--namespace", default="default", show_default=True, help="Namespace of NAME.")
@state_dir_option
def serve_command(name: str, namespace: str, state_dir: Path) -> None:
    """Run ModelDeployment NAME here on the CPU from the operator's own objects; print `export` lines."""
    from llmops.dev.serve import serve

    try:
        addresses = serve(LocalCluster(state_dir), name, namespace)
    except ClusterError as e:
        raise click.ClickException(str(e)) from e
    for key, value in addresses.items():
        click.echo(f"export {key}={value}")


@dev.command()
@click.argument("name")
@click.option("-n", "--namespace", default="default", show_default=True, help="Namespace of NAME.")
@click.option("--wait", "wait_s", default=90, show_default=True, help="Seconds to wait for every figure.")
@state_dir_option
def metrics(name: str, namespace: str, wait_s: int, state_dir: Path) -> None:
    """Print the gateway's and vLLM's figures for ModelDeployment NAME, from the dev Prometheus.

    The series are selected as the product's alerts and autoscalers select them (`namespace`,
    `model_deployment`), so a figure shows only when the operator's monitors scrape it. Each is
    waited for (targets are scraped every 2 s); one still missing after --wait says which target
    is down or not scraped, and the command exits 1.
    """
    import urllib.parse
    import urllib.request

    from llmops.dev import services as svc

    prometheus = svc.service(LocalCluster(state_dir), "prometheus")
    if not prometheus:
        raise click.ClickException("Prometheus is not running: llmops dev up --services")
    sel = f'namespace="{namespace}",model_deployment="{name}"'
    queries = {
        "gateway requests by code": f"sum by (code) (llmops_gateway_requests_total{{{sel}}})",
        "gateway p50 latency (s)": (
            f"histogram_quantile(0.5, sum by (le) (llmops_gateway_request_duration_seconds_bucket{{{sel}}}))"
        ),
        "gateway completion tokens": f"sum(llmops_gateway_completion_tokens_total{{{sel}}})",
        "vLLM prompt tokens": f"sum({{__name__=~'vllm:prompt_tokens(_total)?',{sel}}})",
        "vLLM generation tokens": f"sum({{__name__=~'vllm:generation_tokens(_total)?',{sel}}})",
        "vLLM requests waiting": f"sum(vllm:num_requests_waiting{{{sel}}})",
    }

    def api(path: str, **params: str) -> dict:
        url = f"{prometheus['url']}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.load(r)["data"]

    results: dict[str, list[dict]] = {}
    deadline = time.monotonic() + wait_s
    while True:
        results = {label: api("query", query=expr)["result"] for label, expr in queries.items()}
        if all(results.values()) or time.monotonic() > deadline:
            break
        time.sleep(1)
    for label, result in results.items():
        values = ", ".join(
            (f"{s['metric'].get('code')}: " if s["metric"].get("code") else "") + f"{float(s['value'][1]):g}"
            for s in result
        )
        click.echo(f"  {label:<38} {values or f'no data after {wait_s}s'}")
    if not all(results.values()):
        targets = api("targets")["activeTargets"]
        ours = [t for t in targets if t["labels"].get("model_deployment") == name]
        for t in ours:
            error = f" ({t['lastError']})" if t.get("lastError") else ""
            click.echo(f"  target {t['labels'].get('job')} {t['scrapeUrl']}: {t['health']}{error}")
        if not ours:
            click.echo(
                f"  no target carries model_deployment={name}: "
                "are its monitors created, and did `llmops dev serve` run?"
            )
        raise SystemExit(1)
