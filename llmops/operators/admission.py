"""Admission: checks that span objects (everything else is schema and CEL in the CRDs), and who asked.

- Validating: every Secret a spec refers to exists in the object's namespace, so a typo in a
  credentials reference is refused at `kubectl apply`, not discovered by a failing pod.
- Validating, on DELETE: a person's deletion becomes an audit record (actor: that user), since no
  reconcile sees who asked; it never refuses, and with failurePolicy Ignore an operator that is away
  blocks no deletion.
- Mutating: the requesting user is stamped on the object as `llmops.io/requested-by` when a person
  creates it or changes what they ask of it (`person_asks`): the actor the operator's audit records
  name for what it does next (llmops/operators/auditing.py). The webhook always overwrites the value,
  so a user cannot name someone else; requests by the operator itself are not stamped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import kopf

from llmops.api import GROUP, RESOURCES, VERSION
from llmops.operators.auditing import REQUESTED_BY
from llmops.operators.kube import Kube, NotFound


def secret_references(spec: Any, path: str = "spec") -> Iterator[tuple[str, str]]:
    """(field path, Secret name) for every `...SecretRef` object and `envFromSecrets` entry."""
    if isinstance(spec, dict):
        for key, value in spec.items():
            here = f"{path}.{key}"
            if key.endswith("SecretRef") and isinstance(value, dict) and value.get("name"):
                yield f"{here}.name", value["name"]
            elif key == "envFromSecrets" and isinstance(value, list):
                for i, name in enumerate(value):
                    if isinstance(name, str):
                        yield f"{here}[{i}]", name
            else:
                yield from secret_references(value, here)
    elif isinstance(spec, list):
        for i, item in enumerate(spec):
            yield from secret_references(item, f"{path}[{i}]")


def missing_secrets(spec: Any, namespace: str, kube: Kube) -> list[str]:
    missing = []
    for path, name in secret_references(spec):
        try:
            kube.get("v1", "Secret", name, namespace)
        except NotFound:
            missing.append(f"{path}: Secret {name!r} does not exist in namespace {namespace!r}")
    return missing


def _llmops_annotations(body: Mapping[str, Any] | None) -> dict[str, str]:
    """Annotations under an llmops.io domain (`*.llmops.io/...`, `llmops.io/requested-by`) other than
    kopf's own bookkeeping (`llmops.io/...` but the stamp)."""
    annotations = ((body or {}).get("metadata") or {}).get("annotations") or {}
    return {
        k: v for k, v in annotations.items() if k.split("/", 1)[0].endswith(".llmops.io") or k == REQUESTED_BY
    }


def person_asks(operation: str, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> bool:
    """Whether a request is one to stamp: a CREATE, or an UPDATE that changes the spec or an llmops
    annotation (a RetrainPolicy's `retrain.llmops.io/requested` trigger or `retrain.llmops.io/approve`,
    a reconcile request, the stamp itself). Status writes and metadata bookkeeping are not. Pure."""
    if operation == "CREATE":
        return True
    if operation != "UPDATE":
        return False
    spec_changed = (old or {}).get("spec") != (new or {}).get("spec")
    return spec_changed or _llmops_annotations(old) != _llmops_annotations(new)


def register(registry: kopf.OperatorRegistry) -> None:
    """Per resource: a validating webhook (referenced Secrets must exist) and a mutating one (who asked)."""
    for resource in RESOURCES:

        @kopf.on.mutate(
            GROUP,
            VERSION,
            resource.plural,
            id=f"{resource.plural}-requested-by",
            operations=["CREATE", "UPDATE"],
            registry=registry,
        )
        def requested_by(
            operation: str,
            userinfo: Mapping[str, Any],
            old: Any,
            new: Any,
            patch: kopf.Patch,
            memo: kopf.Memo,
            **_: Any,
        ) -> None:
            user = userinfo.get("username") or ""
            if not user or user == memo.get("identity"):
                return  # the operator's own requests (a reconcile request, a run it starts)
            if person_asks(operation, old, new):
                patch.metadata.annotations[REQUESTED_BY] = user

        @kopf.on.validate(
            GROUP,
            VERSION,
            resource.plural,
            id=f"{resource.plural}-deletion",
            operations=["DELETE"],
            # failurePolicy Ignore: an operator away never blocks a deletion (or its namespace's).
            ignore_failures=True,
            side_effects=True,  # sideEffects NoneOnDryRun: it writes a record, never on a dry run
            registry=registry,
        )
        def deletion_requested(
            userinfo: Mapping[str, Any], old: Any, dryrun: bool, memo: kopf.Memo, **_: Any
        ) -> None:
            """A person's deletion: no reconcile sees who asked, so admission records it (never refuses)."""
            user = userinfo.get("username") or ""
            auditor = memo.get("auditor")
            if dryrun or not user or user == memo.get("identity") or auditor is None or not old:
                return
            auditor.record_person(dict(old), user, "DeletionRequested", f"{user} asked to delete it")

        @kopf.on.validate(
            GROUP,
            VERSION,
            resource.plural,
            id=f"{resource.plural}-secrets",
            operations=["CREATE", "UPDATE"],
            registry=registry,
        )
        def secrets_exist(spec: Any, namespace: str, memo: kopf.Memo, **_: Any) -> None:
            missing = missing_secrets(dict(spec), namespace, memo.applier.kube)
            if missing:
                raise kopf.AdmissionError("; ".join(missing), code=422)


class ServiceWebhookServer(kopf.WebhookServer):
    """Serve webhooks locally but point the apiserver at a Service (the in-cluster setup).

    kopf's own server advertises a URL; inside a cluster the apiserver must reach the pod
    through its Service, with our CA bundle.
    """

    def __init__(self, *, service_namespace: str, service_name: str, service_port: int = 443, **kwargs: Any):
        super().__init__(**kwargs)
        self.service = {"namespace": service_namespace, "name": service_name, "port": service_port}

    async def __call__(self, fn: Any) -> AsyncIterator[Any]:
        async for config in super().__call__(fn):
            config.pop("url", None)
            config["service"] = dict(self.service)
            yield config


def unplanned_drain(spec: dict, namespace: str, kube: Kube) -> str | None:
    """Why a ModelRetirement without spec.drain is refused: a ModelDeployment of the namespace still
    serves a version it retires (its status lists the version with traffic or replicas). None if not."""
    import pydantic

    from llmops.api.modeldeployment import ModelDeploymentSpec, ModelDeploymentStatus
    from llmops.api.modelretirement import ModelRetirementSpec
    from llmops.operators.modelretirement import plan

    try:
        retirement = ModelRetirementSpec.model_validate(spec)
    except pydantic.ValidationError:
        return None  # the schema and CEL answer for a malformed spec
    if retirement.drain is not None:
        return None
    served = []
    for item in kube.list(f"{GROUP}/{VERSION}", "ModelDeployment", namespace):
        try:
            served.append(
                plan.Served(
                    item["metadata"]["name"],
                    ModelDeploymentSpec.model_validate(item.get("spec") or {}),
                    ModelDeploymentStatus.model_validate(item.get("status") or {}),
                )
            )
        except pydantic.ValidationError:
            continue
    versions = {retirement.model.version} if retirement.model.version else None
    if versions is None:  # a whole model: every version its deployments serve
        versions = {v.version for s in served for v in s.status.versions if v.name == retirement.model.name}
    decided = plan.drain(retirement, versions, served)
    return f"spec.drain: {decided.problem[1]}" if decided.problem else None


def register_retirement_check(registry: kopf.OperatorRegistry) -> None:
    """Refuse a ModelRetirement without a drain plan for a version something still serves."""

    @kopf.on.validate(
        GROUP,
        VERSION,
        "modelretirements",
        id="modelretirements-drain",
        operations=["CREATE", "UPDATE"],
        registry=registry,
    )
    def drain_planned(spec: Any, namespace: str, memo: kopf.Memo, **_: Any) -> None:
        problem = unplanned_drain(dict(spec), namespace, memo.applier.kube)
        if problem:
            raise kopf.AdmissionError(problem, code=422)
