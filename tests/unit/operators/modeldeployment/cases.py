"""The ModelDeployment cases the builder tests share: every example, plus variants for the branches
the examples do not reach, rendered with the same settings and owner.

Golden files: tests/unit/golden/modeldeployment/<case>.yaml hold every child of each case (checked by
test_builders.py). After an intended change, regenerate them and review the diff:

    LLMOPS_UPDATE_GOLDEN=1 pytest tests/unit/operators/modeldeployment
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from llmops.api.common import ObjectStorageLocation
from llmops.api.modeldeployment import ModelDeploymentSpec
from llmops.operators.modeldeployment.builders import build
from llmops.operators.modeldeployment.names import vllm_name
from llmops.operators.modeldeployment.plan import Adapter, Plan, ServedVersion, ServingSettings

ROOT = Path(__file__).parents[4]
EXAMPLES = ROOT / "examples"
GOLDEN = ROOT / "tests" / "unit" / "golden" / "modeldeployment"
UPDATE = os.environ.get("LLMOPS_UPDATE_GOLDEN") == "1"
SETTINGS = ServingSettings(serving_image="ghcr.io/llmops/serving:test")
UID = "00000000-0000-4000-8000-000000000000"


def owner(name: str, namespace: str = "demo") -> dict:
    return {
        "apiVersion": "llmops.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace, "uid": UID},
    }


def example(name: str) -> tuple[str, ModelDeploymentSpec]:
    doc = yaml.safe_load((EXAMPLES / f"modeldeployment-{name}.yaml").read_text())
    return doc["metadata"]["name"], ModelDeploymentSpec.model_validate(doc["spec"])


def served(
    md: str, spec: ModelDeploymentSpec, model: str, version: str, role: str, weight: int
) -> ServedVersion:
    return ServedVersion(model, version, role, weight, vllm_name(md, model, version, spec.model.name))  # type: ignore[arg-type]


def case(name: str) -> tuple[dict, ModelDeploymentSpec, Plan]:
    """The golden cases: every example, plus variants for the branches the examples do not reach."""
    base = name.split("+")[0]
    md, spec = example(base)
    if name.startswith("single+hpa"):
        spec = spec.model_copy(
            update={"autoscaling": spec.autoscaling.model_copy(update={"max_replicas": 4, "engine": "hpa"})}
        )
    if name == "single+local-registry":
        spec = spec.model_copy(
            update={"registry": ObjectStorageLocation.model_validate({"local": {"path": "/srv/registry"}})}
        )
    if name.endswith("+suspended"):
        spec = spec.model_copy(update={"suspend": True})
    adapters: tuple[Adapter, ...] = ()
    if base == "lora-adapters":
        adapters = (
            Adapter("billing", "support-bot-billing", "2"),
            Adapter("shipping", "support-bot-shipping", "5"),
        )
    stable_version = spec.model.version or "7"
    versions = [served(md, spec, spec.model.name, stable_version, "stable", 100)]
    if base == "canary":
        versions = [
            served(md, spec, spec.model.name, stable_version, "stable", 75),
            served(md, spec, "support-bot", "4", "canary", 25),
        ]
    if base == "champion-challenger":  # the aliases name 7 (champion) and 8 (challenger)
        versions = [
            served(md, spec, spec.model.name, stable_version, "stable", 90),
            served(md, spec, spec.model.name, "8", "canary", 10),
        ]
    if name == "single+replacing":
        versions = [
            served(md, spec, spec.model.name, "4", "stable", 0),
            served(md, spec, spec.model.name, "3", "previous", 100),
        ]
    return owner(md), spec, Plan(tuple(versions), adapters)


CASES = [
    "single",
    "canary",
    "scale-to-zero",
    "lora-adapters",
    "champion-challenger",
    "single+hpa",
    "single+local-registry",
    "single+replacing",
    "canary+suspended",  # KEDA: paused at 0
    "single+hpa+suspended",  # an HPA: kept, deactivated by the target's 0 replicas
]


class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data: object) -> bool:
        return True


def rendered(name: str) -> str:
    parent, spec, plan = case(name)
    docs = build(spec, parent, plan, SETTINGS)
    return yaml.dump_all(docs, Dumper=_NoAliases, sort_keys=True, width=120)


def objects(name: str) -> dict[tuple[str, str], dict]:
    """The children of case `name` by (kind, name)."""
    parent, spec, plan = case(name)
    return {(m["kind"], m["metadata"]["name"]): m for m in build(spec, parent, plan, SETTINGS)}


def pod_labels(objs: dict, deployment: str) -> dict[str, str]:
    return objs[("Deployment", deployment)]["spec"]["template"]["metadata"]["labels"]
