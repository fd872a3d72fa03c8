"""Storage failures named by their real cause in every kind's status (issue 17, point 8, second half).

A real MinIO and the real control plane: a ModelDeployment, a RetrainPolicy (through that
deployment's registry), a TrainingJob (resolving its base model) and a ModelRetirement, each once
with credentials MinIO refuses, once with a bucket that does not exist, and once with valid
credentials whose policy does not allow the bucket (a MinIO user made through its admin API, with a
policy that grants another bucket only). Every one goes Stalled with reason StorageRefused and a
message that names the cause ("refused the credentials", "bucket does not exist", "denied access"),
instead of "the registry did not answer; retrying" forever or "has no version"; no message holds a
planted key id or secret.
"""

from __future__ import annotations

import json
import uuid

import pytest

from llmops.api import API_VERSION
from llmops.api.common import CommonReason
from llmops.dev import services
from llmops.dev.cluster import LocalCluster
from llmops.operators import modelretirement, retrainpolicy, trainingjob
from llmops.operators.modeldeployment import make_kind
from llmops.operators.modeldeployment.plan import ServingSettings
from llmops.operators.modelretirement.reconcile import Reconciler, Settings
from tests.cluster.modeldeployment.conftest import kubeconfig_env
from tests.helpers import eventually, operator_in_thread

__all__ = ["kubeconfig_env"]

pytestmark = [pytest.mark.usefixtures("llmops_crds", "kubeconfig_env")]

PLURALS = {
    "ModelDeployment": "modeldeployments",
    "RetrainPolicy": "retrainpolicies",
    "TrainingJob": "trainingjobs",
    "ModelRetirement": "modelretirements",
}
CAUSES = {
    "keys": "refused the credentials",
    "bucket": "bucket does not exist",
    "denied": "denied access",
}


def denied_user(minio: dict) -> tuple[str, str]:
    """A MinIO user whose policy grants every S3 action on another bucket and nothing on ours, made
    through MinIO's admin API (the `minio` package's MinioAdmin, as `mc admin` would)."""
    from minio import MinioAdmin
    from minio.credentials import StaticProvider

    endpoint = minio["endpoint"].split("://", 1)[1]
    admin = MinioAdmin(
        endpoint=endpoint,
        credentials=StaticProvider(minio["accessKeyId"], minio["secretAccessKey"]),
        secure=False,
    )
    user, password = f"llmopsdenied{uuid.uuid4().hex[:8]}", f"marker-{uuid.uuid4().hex}"
    admin.user_add(user, password)
    elsewhere = "arn:aws:s3:::some-other-bucket"
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": ["s3:*"], "Resource": [elsewhere, f"{elsewhere}/*"]}],
    }
    admin.policy_add(f"{user}-policy", policy=policy)
    admin.attach_policy([f"{user}-policy"], user=user)
    return user, password


def _objects(case: str, registry: dict) -> list[dict]:
    """One object of every kind that reads `registry`, named after `case`."""
    meta = lambda name: {"apiVersion": API_VERSION, "metadata": {"name": f"{name}-{case}"}}  # noqa: E731
    template = {
        "model": {"base": {"name": "support-bot", "alias": "champion"}},
        "data": {"sources": [{"uri": "s3://datasets/support/"}]},
        "method": {"type": "lora"},
        "runtime": {"type": "rayJobsAPI", "address": "http://ray-head.example:8265"},
        "output": {"registry": registry, "modelName": "support-bot"},
    }
    kuberay = {k: v for k, v in template.items() if k != "runtime"}
    return [
        {
            **meta("bot"),
            "kind": "ModelDeployment",
            "spec": {
                "model": {"name": "support-bot", "alias": "champion"},
                "registry": registry,
                "resources": {"cpu": 1, "memory": "2Gi"},
                "rollout": {
                    "canary": {"model": {"name": "support-bot", "alias": "challenger"}, "weight": 50}
                },
            },
        },
        {
            **meta("policy"),
            "kind": "RetrainPolicy",
            "spec": {
                "modelDeployment": f"bot-{case}",
                "trainingJobTemplate": {"spec": template},
                "promotion": {
                    "metrics": [{"metric": "perplexity", "greaterIsBetter": False, "minRelativeChange": 0.05}]
                },
            },
        },
        # On KubeRay (the default runtime): the Jobs API runtime asks Ray first, which is not here.
        {**meta("train"), "kind": "TrainingJob", "spec": kuberay},
        {
            **meta("retire"),
            "kind": "ModelRetirement",
            "spec": {
                "model": {"name": "support-bot", "version": "4"},
                "registry": registry,
                "reason": "storage errors test",
                "archive": {"location": registry},
            },
        },
    ]


def test_refused_credentials_and_a_missing_bucket_stall_every_kind_with_the_cause(
    cluster: LocalCluster, namespace: str
) -> None:
    minio = services.start_minio(cluster)
    key_id, secret = f"LLMOPSWRONG{uuid.uuid4().hex[:8].upper()}", f"marker-{uuid.uuid4().hex}"
    denied_id, denied_secret = denied_user(minio)
    for name, (k, s) in {
        "wrong-keys": (key_id, secret),
        "good-keys": (minio["accessKeyId"], minio["secretAccessKey"]),
        "denied-keys": (denied_id, denied_secret),
    }.items():
        cluster.kubectl(
            "create", "secret", "generic", name, "-n", namespace,
            f"--from-literal=AWS_ACCESS_KEY_ID={k}", f"--from-literal=AWS_SECRET_ACCESS_KEY={s}",
        )  # fmt: skip
    location = lambda bucket, ref: {  # noqa: E731
        "s3": {"endpoint": minio["endpoint"], "bucket": bucket, "credentialsSecretRef": {"name": ref}}
    }
    cases = {
        "keys": location(minio["buckets"][0], "wrong-keys"),
        "bucket": location(f"missing-{uuid.uuid4().hex[:8]}", "good-keys"),
        "denied": location(minio["buckets"][0], "denied-keys"),
    }
    objects = [obj for case, registry in cases.items() for obj in _objects(case, registry)]
    kinds = [
        make_kind(ServingSettings(resync_seconds=600, alias_poll_seconds=600), None),
        retrainpolicy.make_kind(),
        trainingjob.KIND,
        modelretirement.make_kind(Reconciler(Settings(prometheus_url="http://127.0.0.1:9"))),
    ]
    with operator_in_thread(namespace, kinds):
        for obj in objects:
            cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(obj))

        def stalled(obj: dict) -> dict | None:
            out = cluster.kubectl(
                "get", PLURALS[obj["kind"]], obj["metadata"]["name"], "-n", namespace, "-o", "json"
            )
            conditions = json.loads(out.stdout).get("status", {}).get("conditions", [])
            found = next((c for c in conditions if c["type"] == "Stalled" and c["status"] == "True"), None)
            return found if found and found["reason"] == CommonReason.STORAGE_REFUSED else None

        seen = {}
        for obj in objects:
            name = obj["metadata"]["name"]
            try:
                seen[name] = eventually(lambda obj=obj: stalled(obj), timeout=120)
            except AssertionError:
                out = cluster.kubectl("get", PLURALS[obj["kind"]], name, "-n", namespace, "-o", "json")
                status = json.loads(out.stdout).get("status")
                raise AssertionError(f"{obj['kind']} {name}: {status}") from None
    for name, condition in seen.items():
        case = name.rsplit("-", 1)[1]
        print(f"{name}: {condition['reason']}: {condition['message']}")
        assert CAUSES[case] in condition["message"], (name, condition)
        for planted in (key_id, secret, denied_secret):
            assert planted not in condition["message"]
    print(f"objects {len(objects)}, stalled with the cause named {len(seen)}, secrets found 0")
