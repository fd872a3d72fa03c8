"""Names a ModelRetirement uses: where its archive and report go, its field manager, its queries. Pure."""

from __future__ import annotations

from llmops.api.common import ObjectStorageLocation
from llmops.operators.modeldeployment import monitoring

# The field manager of the drain's patches to ModelDeployments (spec.model, spec.suspend), apart from
# the operator's own "llmops", so `kubectl get --show-managed-fields` says who pointed them away.
FIELD_MANAGER = "llmops-retirement"


def report_location(
    destination: ObjectStorageLocation | None, archive: ObjectStorageLocation, model: str, versions: list[str]
) -> ObjectStorageLocation:
    """spec.report.destination, else beside the archive: models/<model>/versions/<version>/postmortem
    (models/<model>/postmortem for several versions)."""
    if destination is not None:
        return destination
    folder = f"versions/{versions[0]}/postmortem" if len(versions) == 1 else "postmortem"
    return archive.child(f"models/{model}/{folder}")


def inflight_query(namespace: str, deployment: str, version: str) -> str:
    """Requests at the replicas of `version`, summed over the deployment's gateway pods."""
    selector = monitoring.selector(namespace, deployment, f'version="{version}"')
    return f"sum(llmops_gateway_inflight_requests{selector})"
