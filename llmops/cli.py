"""The `llmops` command: developer cluster, CRD generation, the operator process, the model registry,
the audit trail and reports."""

from __future__ import annotations

import click

from llmops import logsafe


@click.group()
def main() -> None:
    """llmops: the whole life of a large language model on Kubernetes."""
    logsafe.install()  # every sub-command: no credential in a log line (llmops/logsafe.py)


def _register() -> None:
    # Sub-commands live beside the code they drive; importing them here keeps `llmops --help` cheap.
    from llmops.audit_cli import audit_group, report_group
    from llmops.crdgen import crds
    from llmops.dev.cli import dev
    from llmops.erasure import erasure_group
    from llmops.operators.cli import (
        operator,  # the operator ships in this distribution; imported lazily inside
    )
    from llmops.registry_cli import models_group
    from llmops.watch import watch

    main.add_command(crds)
    main.add_command(dev)
    main.add_command(watch)
    main.add_command(models_group)
    main.add_command(operator)
    main.add_command(audit_group)
    main.add_command(report_group)
    main.add_command(erasure_group)


_register()


if __name__ == "__main__":
    main()
