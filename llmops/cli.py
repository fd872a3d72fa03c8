"""The `llmops` command: developer cluster, CRD generation, the operator process, the model registry,
the audit trail and reports."""

from __future__ import annotations

import importlib

import click

from llmops import logsafe

# Sub-commands live beside the code they drive, as "module:attribute"; each module is imported only
# when its command runs (or `--help` lists it), so `llmops operator` loads none of the others (the
# developer cluster's, the registry's, the reports'; with the webhook's certificates made lazily, the
# operator's imports went from 86 to 77 MiB of resident memory, issue 17).
COMMANDS = {
    "crds": "llmops.crdgen:crds",
    "dev": "llmops.dev.cli:dev",
    "watch": "llmops.watch:watch",
    "models": "llmops.registry_cli:models_group",
    "operator": "llmops.operators.cli:operator",
    "audit": "llmops.audit_cli:audit_group",
    "report": "llmops.audit_cli:report_group",
    "erasure": "llmops.erasure:erasure_group",
}


class LazyGroup(click.Group):
    """A click group whose sub-commands (COMMANDS) are imported when one is looked up."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return super().get_command(ctx, name)
        module, attribute = COMMANDS[name].split(":")
        return getattr(importlib.import_module(module), attribute)


@click.group(cls=LazyGroup)
def main() -> None:
    """llmops: the whole life of a large language model on Kubernetes."""
    logsafe.install()  # every sub-command: no credential in a log line (llmops/logsafe.py)


if __name__ == "__main__":
    main()
