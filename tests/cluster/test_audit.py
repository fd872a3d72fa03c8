"""The audit trail against the real control plane: the operator process as users run it (`llmops
operator --webhook`, audit records to a directory), people acting through the apiserver with
impersonation (`kubectl --as`, the admin may impersonate; their group system:masters lets them act),
and a lifecycle action that yields both an audit record and a Kubernetes Event.

KubeRay's part is played by patching the RayJob's status, as in tests/cluster/test_trainingjob.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from llmops.audit import AuditLog
from llmops.cli import main
from llmops.dev.cluster import LocalCluster
from llmops.operators.auditing import REQUESTED_BY
from llmops.storage import LocalStore
from llmops.workload import RunReport
from tests.cluster.test_trainingjob import (  # noqa: F401 - fixtures
    events_of,
    get,
    minio,
    phase_is,
    play_kuberay,
    rayjob_of,
    registry,
    training_job,
    until,
    write_report,
)
from tests.helpers import eventually, operator_process, when_webhooks_answer

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("llmops_crds")]


def as_person(cluster: LocalCluster, user: str, *args: str, input: str | None = None):
    return cluster.kubectl(*args, f"--as={user}", "--as-group=system:masters", input=input)


def requested_by(cluster: LocalCluster, namespace: str) -> str | None:
    return (get(cluster, "tj", "audited", namespace)["metadata"].get("annotations") or {}).get(REQUESTED_BY)


def test_a_persons_action_is_audited_with_the_right_actor(
    cluster: LocalCluster,
    namespace: str,
    registry: dict,  # noqa: F811
    minio: dict,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    trail = tmp_path / "audit"
    monkeypatch.setenv("LLMOPS_AUDIT", str(trail))
    with operator_process(cluster, namespace, "--webhook") as op:
        # alice creates it, and tries to name mallory as the requester: the webhook overwrites it.
        job = training_job("audited", registry)
        job["metadata"]["annotations"] = {REQUESTED_BY: "mallory"}
        stamped = "jsonpath={.metadata.annotations." + REQUESTED_BY.replace(".", "\\.") + "}"
        when_webhooks_answer(
            cluster, namespace, json.dumps(job), lambda r: r.stdout == "alice",
            "--as=alice", "--as-group=system:masters", "-o", stamped,
        )  # fmt: skip
        as_person(cluster, "alice", "apply", "-n", namespace, "-f", "-", input=json.dumps(job))
        assert eventually(lambda: requested_by(cluster, namespace) == "alice", timeout=30)

        # The operator's lifecycle action on her object: its Event and its audit record, one path.
        tj = until(cluster, "audited", namespace, phase_is("Pending"))
        rayjob = rayjob_of(cluster, namespace, tj)
        write_report(rayjob, RunReport(phase="Running"), minio)
        play_kuberay(cluster, namespace, rayjob, {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"})
        until(cluster, "audited", namespace, phase_is("Running"), timeout=120)  # a loaded machine
        started = eventually(
            lambda: [e for e in events_of(cluster, "audited", namespace) if e["reason"] == "Started"],
            timeout=30,
        )[0]
        log = AuditLog(LocalStore(trail))
        (record,) = [r for r in log.all() if r.data.action == "trainingjob.started"]
        d = record.data
        assert started["message"].endswith(f"[audit {d.sequence} {d.hash[:12]}]")
        assert (d.actor.type, d.actor.on_behalf_of) == ("operator", "alice")
        assert d.actor.name not in ("", "alice", "llmops-operator")  # the operator's own user name
        assert (d.object.kind, d.object.namespace, d.object.name) == ("TrainingJob", namespace, "audited")
        assert d.object.uid == tj["metadata"]["uid"] and d.model == "tiny"

        # bob asks for something through an llmops annotation: he is the requester now.
        as_person(
            cluster, "bob", "annotate", "tj", "audited", "-n", namespace, "retrain.llmops.io/requested=1"
        )
        assert eventually(lambda: requested_by(cluster, namespace) == "bob", timeout=30)
        # carol only labels it, and cannot set the annotation by hand either.
        as_person(cluster, "carol", "label", "tj", "audited", "-n", namespace, "team=a")
        assert requested_by(cluster, namespace) == "bob"
        as_person(cluster, "carol", "annotate", "tj", "audited", "-n", namespace, f"{REQUESTED_BY}=dave",
                  "--overwrite")  # fmt: skip
        assert requested_by(cluster, namespace) == "carol"
        # The operator's own writes since (status, its bookkeeping) stamped nothing.
        assert op["proc"].poll() is None
        # A person's deletion: admission records who asked (no reconcile could tell).
        as_person(cluster, "erin", "delete", "tj", "audited", "-n", namespace, "--wait=false")
        deleted = eventually(
            lambda: [
                r
                for r in AuditLog(LocalStore(trail)).all()
                if r.data.action == "trainingjob.deletion_requested"
            ]
        )
        assert [(r.data.actor.type, r.data.actor.name, r.data.object.uid) for r in deleted] == [
            ("user", "erin", tj["metadata"]["uid"])
        ]

    result = CliRunner().invoke(main, ["audit", "verify", "--audit", str(trail), "-o", "json"])
    assert result.exit_code == 0 and json.loads(result.output)["ok"]
    # The mutating configuration went with the operator, as the validating one does.
    gone = cluster.kubectl("get", "mutatingwebhookconfiguration", "validate.llmops.io", check=False)
    assert gone.returncode != 0
