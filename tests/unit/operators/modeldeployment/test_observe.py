"""Reading child Deployments (llmops/operators/modeldeployment/observe.py)."""

from __future__ import annotations

from llmops.operators.modeldeployment.observe import (
    DeploymentView,
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


def _deployments() -> list[dict]:
    """Deployments in the states the readers tell apart, as the API returns them."""
    full = {
        "metadata": {"uid": "u", "generation": 3, "labels": {"x": "y"}, "name": "d"},
        "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "c"}]}}},
        "status": {
            "observedGeneration": 3,
            "replicas": 2,
            "updatedReplicas": 2,
            "readyReplicas": 2,
            "availableReplicas": 2,
            "conditions": [{"type": "Available", "status": "True"}],
        },
    }
    return [
        full,
        {**full, "metadata": {"uid": "u", "generation": 4}},  # a new template, not seen yet
        {**full, "spec": {}},  # replicas defaulted
        {**full, "spec": {"replicas": 0}, "status": {"observedGeneration": 3}},  # at zero
        {**full, "status": {"conditions": []}},  # a status with none of the fields read
        {"metadata": {"uid": "u", "generation": 1}, "spec": {"replicas": 1}},  # no status yet
        {"metadata": {"uid": "u"}, "spec": {"replicas": 1}},  # no generation
    ]


def test_a_deployment_view_reads_as_the_whole_deployment() -> None:
    """DeploymentView keeps what the readers (and the fold's `_pods`/`_observed`) read: every reader
    gives the same answer on `body()` as on the Deployment it was kept from, whatever its state."""
    from llmops.operators.modeldeployment import fold

    readers = [
        desired_replicas,
        available_replicas,
        ready_replicas,
        rolled_out,
        deployment_fingerprint,
        fold._pods,
        fold._observed,
    ]
    for d in _deployments():
        view = DeploymentView.of(d)
        assert [r(view.body()) for r in readers] == [r(d) for r in readers], d
        again = DeploymentView.of(view.body()).body()  # kept again (as a watch event of it would be)
        assert [r(again) for r in readers] == [r(d) for r in readers], d
    assert DeploymentView.of(_deployments()[0]) == ("u", 3, 2, (3, 2, 2, 2, 2))
