"""Reading child Deployments (llmops/operators/modeldeployment/observe.py)."""

from __future__ import annotations

from llmops.operators.modeldeployment.observe import (
    available_replicas,
    deployment_fingerprint,
    desired_replicas,
    ready_replicas,
    rolled_out,
)


def test_rolled_out_needs_the_current_template_with_every_replica_available() -> None:
    done = {
        "metadata": {"generation": 3},
        "spec": {"replicas": 2},
        "status": {"observedGeneration": 3, "updatedReplicas": 2, "availableReplicas": 2, "readyReplicas": 2},
    }
    assert rolled_out(done)
    assert not rolled_out({**done, "metadata": {"generation": 4}})  # a new template, not seen yet
    assert not rolled_out({**done, "status": {**done["status"], "availableReplicas": 1}})
    assert not rolled_out({**done, "status": {**done["status"], "updatedReplicas": 1}})
    assert not rolled_out(None) and not rolled_out({})
    assert (desired_replicas(done), available_replicas(done), ready_replicas(done)) == (2, 2, 2)
    assert desired_replicas({"spec": {}}) == 1  # the apiserver's default
    assert available_replicas(None) == ready_replicas(None) == 0


def test_fingerprint_changes_only_with_what_the_status_reads() -> None:
    base = {"metadata": {"generation": 1}, "spec": {"replicas": 1}, "status": {"readyReplicas": 0}}
    relabelled = {**base, "metadata": {"generation": 1, "labels": {"x": "y"}}}
    assert deployment_fingerprint(base) == deployment_fingerprint(relabelled)
    ready = {**base, "status": {"readyReplicas": 1, "availableReplicas": 1}}
    assert deployment_fingerprint(base) != deployment_fingerprint(ready)
    assert deployment_fingerprint({"spec": {}})[-1] is False  # no status yet: not rolled out
