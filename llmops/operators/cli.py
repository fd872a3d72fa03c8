"""`llmops operator`: run every operator in one process."""

from __future__ import annotations

import click


def check_ports(ports: list[tuple[str, int]], host: str = "0.0.0.0") -> None:
    """Each (flag, port) the operator will listen on (0: off) can be bound on `host`, as its servers
    bind it (SO_REUSEADDR): else one line naming the flag, before anything starts, instead of a
    traceback from inside a server. A race with another process remains possible, and is then the
    server's own error."""
    import socket

    for flag, port in ports:
        if not port:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as e:
                off = ", or 0 to turn it off" if flag != "--webhook-port" else ""
                raise click.ClickException(
                    f"{flag} {port}: cannot listen on {host}:{port} ({e.strerror}); pick another port{off}"
                ) from None


@click.command()
@click.option("--namespace", "namespaces", multiple=True, help="Watch only these namespaces (repeatable).")
@click.option(
    "--all-namespaces", is_flag=True, help="Watch every namespace (the default without --namespace)."
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=8080,
    show_default=True,
    help="Prometheus /metrics port; 0 turns it off.",
)
@click.option(
    "--health-port",
    type=click.IntRange(0, 65535),
    default=8081,
    show_default=True,
    help="Liveness/readiness /healthz port; 0: off.",
)
@click.option(
    "--webhook/--no-webhook",
    default=False,
    help="Serve the admission webhooks (validating; mutating: who asked).",
)
@click.option(
    "--webhook-port",
    type=click.IntRange(1, 65535),
    default=9443,
    show_default=True,
    help="HTTPS port of the admission webhooks.",
)
@click.option(
    "--webhook-host",
    default="127.0.0.1",
    show_default=True,
    help="Host the apiserver calls when no --webhook-service is given (local runs).",
)
@click.option(
    "--webhook-service",
    metavar="NAMESPACE/NAME",
    help="In a cluster: the Service in front of this operator that the apiserver calls.",
)
@click.option(
    "--log-format",
    type=click.Choice(["json", "text"]),
    default="json",
    show_default=True,
    help=(
        "JSON lines for a log collector (message, severity, timestamp, logger, object; docs/operations.md,"
        " Logs), or text for people."
    ),
)
@click.option(
    "-v",
    "--verbose",
    is_flag=True,
    help="Debug lines of the operator and kopf (never the HTTP clients' wire logs: LLMOPS_LOG_HTTP_DEBUG).",
)
def operator(
    namespaces: tuple[str, ...],
    all_namespaces: bool,
    metrics_port: int,
    health_port: int,
    webhook: bool,
    webhook_port: int,
    webhook_host: str,
    webhook_service: str | None,
    log_format: str,
    verbose: bool,
) -> None:
    """Reconcile TrainingJobs, ModelDeployments, RetrainPolicies and ModelRetirements until SIGTERM."""
    from llmops import kubeconfig
    from llmops.operators import retention
    from llmops.operators.main import WebhookOptions, run
    from llmops.operators.modeldeployment.plan import ServingSettings
    from llmops.operators.retrainpolicy.reconcile import Settings as RetrainSettings
    from llmops.operators.runtime import Pace

    if all_namespaces and namespaces:
        raise click.UsageError("--all-namespaces and --namespace exclude each other")
    try:  # a setting the environment gets wrong stops the start, not each reconcile (operators.settings)
        ServingSettings.from_env()
        Pace.from_env()
        RetrainSettings.from_env()
        retention.interval_seconds()
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    kubeconfig.check_for_operator()
    listening = [("--metrics-port", metrics_port), ("--health-port", health_port)]
    check_ports(listening + ([("--webhook-port", webhook_port)] if webhook else []))
    options = (
        WebhookOptions(port=webhook_port, host=webhook_host, service=webhook_service) if webhook else None
    )
    run(
        namespaces=list(namespaces),
        metrics_port=metrics_port,
        health_port=health_port,
        webhook=options,
        log_format=log_format,
        verbose=verbose,
    )
