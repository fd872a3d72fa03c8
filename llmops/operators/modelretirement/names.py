"""Names a ModelRetirement uses: where its archive and report go, its field manager, its queries. Pure."""

from __future__ import annotations

from llmops.api.common import ObjectStorageLocation
from llmops.operators.modeldeployment import monitoring

# The field manager of the drain's patches to ModelDeployments (spec.model, spec.suspend), apart from
# the operator's own "llmops", so `kubectl get --show-managed-fields` says who pointed them away.
FIELD_MANAGER = "llmops-retirement"


def archive_location(archive: ObjectStorageLocation, model: str, version: str) -> ObjectStorageLocation:
    """<archive>/<model>/<version>: one folder per retired version."""
    return archive.child(f"{model}/{version}")


def report_location(
    destination: ObjectStorageLocation | None, archive: ObjectStorageLocation, model: str, versions: list[str]
) -> ObjectStorageLocation:
    """spec.report.destination, or <archive>/<model>/<version>/postmortem (<model>/all/... for a model)."""
    if destination is not None:
        return destination
    folder = versions[0] if len(versions) == 1 else "all"
    return archive.child(f"{model}/{folder}/postmortem")


def inflight_query(namespace: str, deployment: str, version: str) -> str:
    """Requests at the replicas of `version`, summed over the deployment's gateway pods."""
    selector = monitoring.selector(namespace, deployment, f'version="{version}"')
    return f"sum(llmops_gateway_inflight_requests{selector})"
