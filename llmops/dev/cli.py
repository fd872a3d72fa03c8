"""`llmops dev up|status|down`: one local cluster per user, found again by its state folder."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import click

from llmops.dev.cluster import ClusterError, LocalCluster, free_port

REPO_CRDS = Path(__file__).resolve().parents[2] / "crds"
OPERATOR = "llmops-operator"


def start_operator(cluster: LocalCluster) -> None:
    """Install our CRDs and run the operator beside the cluster; `llmops dev down` stops it too."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO_CRDS))
    cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd",
        "-l",
        "app.kubernetes.io/part-of=llmops",
    )
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
            str(free_port()),
            "--health-port",
            str(free_port()),
        ],
        env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)},
    )


def default_state_dir() -> Path:
    return Path(os.environ.get("LLMOPS_DEV_DIR", Path(tempfile.gettempdir()) / f"llmops-dev-{os.getuid()}"))


state_dir_option = click.option(
    "--state-dir",
    type=click.Path(path_type=Path),
    default=default_state_dir,
    show_default="$LLMOPS_DEV_DIR",
    help="Folder holding the cluster's certificates, data, logs and kubeconfig.",
)


@click.group()
def dev() -> None:
    """A local Kubernetes control plane for development and tests."""


@dev.command()
@state_dir_option
@click.option("--kubeconfig", type=click.Path(path_type=Path), help="Also write the kubeconfig here.")
@click.option("--operator", is_flag=True, help="Also install the llmops CRDs and run the operator.")
@click.option("--services", is_flag=True, help="Also run MinIO (S3), a Ray head and Prometheus beside it.")
def up(state_dir: Path, kubeconfig: Path | None, operator: bool, services: bool) -> None:
    """Start the cluster (or find the one already running) and print how to use it."""
    cluster = LocalCluster(state_dir)
    try:
        cluster.start(progress=lambda msg: click.echo(f"  {msg}", err=True))
        if operator and OPERATOR not in cluster.processes():
            start_operator(cluster)
            click.echo(f"  operator running (log: {cluster.logs / (OPERATOR + '.log')})", err=True)
        if services:
            from llmops.dev import services as svc

            click.echo(f"  MinIO at {svc.start_minio(cluster)['endpoint']}", err=True)
            click.echo(f"  Ray head at {svc.start_ray(cluster)['address']}", err=True)
            click.echo(f"  Prometheus at {svc.start_prometheus(cluster)['url']}", err=True)
    except ClusterError as e:
        raise click.ClickException(str(e)) from e
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
        click.echo(f"no cluster in {state_dir}")
        raise SystemExit(1)
    for name, (pid, alive) in procs.items():
        click.echo(f"{name:<24} pid {pid:<8} {'running' if alive else 'stopped'}")
    running = cluster.running()
    click.echo(f"apiserver {cluster.server} {'ready' if running else 'not ready'}")
    click.echo(f"kubeconfig {cluster.kubeconfig}")
    raise SystemExit(0 if running else 1)


@dev.command()
@state_dir_option
def down(state_dir: Path) -> None:
    """Stop every component and remove the state folder."""
    LocalCluster(state_dir).stop(remove=True)
    click.echo(f"stopped; removed {state_dir}")
