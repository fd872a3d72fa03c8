"""Retention on the real control plane: a ModelDeployment's payload samples expire by its spec, its
feedback by the namespace's ConfigMap llmops-retention; the counts land in status.retention. The
decisions are tests/unit/operators/test_retention.py; S3 deletion tests/workloads/test_retention_storage.py.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest

from llmops.dev.cluster import LocalCluster
from llmops.operators.modeldeployment.plan import ServingSettings
from tests.cluster.modeldeployment.support import apply, deployment, get, running_operator
from tests.helpers import LOCAL_REGISTRY_POD_SECURITY, eventually

pytestmark = [pytest.mark.usefixtures("llmops_crds"), LOCAL_REGISTRY_POD_SECURITY]


def _file(root: Path, days_old: float, kind: str, seq: int) -> Path:
    at = dt.datetime.now(dt.UTC) - dt.timedelta(days=days_old)
    path = root / f"{at:%Y-%m-%d}/{at:%H%M%S}-gw-1-{kind}-{seq:06d}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"id": "x"}\n')
    os.utime(path, (at.timestamp(), at.timestamp()))
    return path


@pytest.mark.usefixtures("kubeconfig_env")
def test_samples_and_feedback_expire_by_spec_and_namespace(
    cluster: LocalCluster, namespace: str, registry: Path, tmp_path: Path
) -> None:
    samples = tmp_path / "samples"
    old_payload, new_payload = _file(samples, 40, "payload", 1), _file(samples, 1, "payload", 2)
    old_feedback, new_feedback = _file(samples, 20, "feedback", 3), _file(samples, 5, "feedback", 4)
    foreign = samples / "exports" / "2020-01-01.jsonl"  # not the gateway's: never the sweep's
    foreign.parent.mkdir(parents=True)
    foreign.write_text("{}\n")
    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "llmops-retention"}}
    apply(cluster, namespace, {**configmap, "data": {"feedbackDays": "10"}})
    destination = {"local": {"path": str(samples)}}
    sampling = {"rate": 0, "destination": destination, "retentionDays": 30}
    body = deployment("bot", registry, gateway={"replicas": 1, "payloadSampling": sampling})
    with running_operator(namespace, ServingSettings(resync_seconds=1)):
        apply(cluster, namespace, body)

        def swept() -> dict:
            found = (
                (get(cluster, "modeldeployment", "bot", namespace) or {}).get("status", {}).get("retention")
            )
            return {r["store"]: r for r in found or []}

        eventually(lambda: set(swept()) == {"payloadSamples", "feedback"}, timeout=90)
        by = swept()
        assert (by["payloadSamples"]["deletedObjects"], by["payloadSamples"]["keptObjects"]) == (1, 1)
        assert (by["payloadSamples"]["retentionDays"], by["payloadSamples"]["source"]) == (30, "spec")
        assert (by["feedback"]["deletedObjects"], by["feedback"]["keptObjects"]) == (1, 1)
        assert (by["feedback"]["retentionDays"], by["feedback"]["source"]) == (10, "namespace")
        assert by["payloadSamples"]["complete"] and json.dumps(by).count("message") == 0
    assert not old_payload.exists() and not old_feedback.exists()
    assert new_payload.exists() and new_feedback.exists() and foreign.exists()
