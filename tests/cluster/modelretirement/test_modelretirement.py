"""ModelRetirement on the real control plane: a version served through an alias is drained to its
replacement by a real ModelDeployment reconcile (kwok pods), archived into a real Object-Lock bucket
in MinIO and read back by sha256, deleted behind a tombstone, its payload samples, feedback and work
folder disposed of, and its post-mortem written; a retirement without a drain plan for a served
version is refused, and one that asks for approval waits for a second person.

No Prometheus runs here: the drain's in-flight check and the post-mortem say Prometheus does not
answer (tests/serving/test_serving_postmortem.py reads a real one).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from llmops import registry as reg
from llmops.api import API_VERSION
from llmops.dev.cluster import LocalCluster
from llmops.operators import modelretirement
from llmops.operators.modeldeployment import make_kind
from llmops.operators.modeldeployment.plan import ServingSettings
from llmops.operators.modelretirement.reconcile import Reconciler, Settings
from llmops.storage import LocalStore
from tests.cluster.modeldeployment.support import apply, condition, deployment, get
from tests.helpers import LOCAL_REGISTRY_POD_SECURITY, eventually, operator_in_thread

pytestmark = [pytest.mark.usefixtures("llmops_crds", "kubeconfig_env"), LOCAL_REGISTRY_POD_SECURITY]

NO_PROMETHEUS = "http://127.0.0.1:9"  # the discard port: nothing answers


def samples(root: Path) -> LocalStore:
    """Payload samples and feedback as the gateway's sampler names them, of versions 3 and 4."""
    store = LocalStore(root)
    for kind, n in (("payload", 1), ("feedback", 2)):
        lines = [
            {"version": v, "user": f"u{i}", "text": "hello"} for i, v in enumerate(["3", "4", "4", "3", "4"])
        ]
        body = "".join(json.dumps(r) + "\n" for r in lines).encode()
        store.put_bytes(f"2026-11-30/120000-gw-{kind}-{n:06d}.jsonl", body)
    store.put_bytes("2026-11-30/120500-gw-payload-000003.jsonl", b'{"version": "4"}\n')
    return store


def trained(registry: Path, namespace: str, tmp_path: Path) -> str:
    """Version 4 as a TrainingJob registers it (lineage names the job), with its work folder, and the
    work folder of another run of the same job that registered version 3."""
    store = LocalStore(registry)
    model = tmp_path / "model-4"
    model.mkdir()
    (model / "config.json").write_text('{"version": 4}')
    gates = [reg.GateVerdict(metric="accuracy", operator=">=", threshold=0.5, value=0.93, passed=True)]
    lineage = reg.Lineage(parent_job=f"{namespace}/train", method="lora")
    version = reg.register(
        store, "support-bot", model, metrics={"accuracy": 0.93}, gates=gates, lineage=lineage
    )
    for uid, produced in (("uid-4", version.version), ("uid-3", "3")):
        report = {"phase": "Succeeded", "model_version": {"name": "support-bot", "version": produced}}
        store.put_bytes(f"jobs/{namespace}/train/{uid}/report.json", json.dumps(report).encode())
        store.put_bytes(f"jobs/{namespace}/train/{uid}/checkpoints/step-10/weights.bin", b"w" * 4096)
    return version.version


def retirement(name: str, registry: Path, archive: dict, **spec: object) -> dict:
    return {
        "apiVersion": API_VERSION,
        "kind": "ModelRetirement",
        "metadata": {"name": name},
        "spec": {
            "model": {"name": "support-bot", "version": "4"},
            "registry": {"local": {"path": str(registry)}},
            "reason": "fails the new toxicity suite",
            "archive": {"location": archive["location"], "retention": {"mode": "Governance", "days": 1}},
            **spec,
        },
    }


def kinds() -> list:
    settings = ServingSettings(resync_seconds=600, alias_poll_seconds=1)
    retirements = modelretirement.make_kind(Reconciler(Settings(prometheus_url=NO_PROMETHEUS)))
    return [make_kind(settings, None), retirements]


def test_a_served_version_is_drained_archived_locked_deleted_disposed_and_reported(
    cluster: LocalCluster, namespace: str, registry: Path, archive: dict, tmp_path: Path
) -> None:
    version = trained(registry, namespace, tmp_path)
    assert version == "4"
    store = LocalStore(registry)
    reg.move_alias(store, "support-bot", "champion", "4", by="user:test", reason="the release")
    payloads = samples(tmp_path / "payloads")
    served = deployment(
        "bot",
        registry,
        gateway={
            "payloadSampling": {"rate": 1, "destination": {"local": {"path": str(tmp_path / "payloads")}}}
        },
    )
    served["spec"]["model"] = {"name": "support-bot", "alias": "champion"}
    registry_objects = sorted(store.list(reg.version_prefix("support-bot", "4")))

    with operator_in_thread(namespace, kinds()):
        apply(cluster, namespace, served)

        def serving(v: str) -> dict | None:
            md = get(cluster, "md", "bot", namespace) or {}
            versions = (md.get("status") or {}).get("versions", [])
            ready = condition(md, "Ready").get("status") == "True"
            return md if ready and [x["version"] for x in versions] == [v] else None

        eventually(lambda: serving("4"), 90)

        # Without a drain plan, a served version is refused with the deployment's name.
        apply(cluster, namespace, retirement("retire-4", registry, archive))
        stalled = eventually(
            lambda: (
                (mr := get(cluster, "mr", "retire-4", namespace))
                and condition(mr, "Stalled").get("reason") == "StillServed"
                and mr
            ),
            60,
        )
        assert "ModelDeployment bot (4 as stable)" in condition(stalled, "Stalled")["message"]
        assert (
            sorted(store.list(reg.version_prefix("support-bot", "4"))) == registry_objects
        )  # nothing touched

        # With one, the champion alias moves to 3 and the deployment follows it.
        drain = {
            "mode": "Replace",
            "replacement": {"name": "support-bot", "version": "3"},
            "gracePeriodSeconds": 30,
        }
        apply(cluster, namespace, retirement("retire-4", registry, archive, drain=drain))
        done = eventually(
            lambda: (
                (mr := get(cluster, "mr", "retire-4", namespace))
                and (mr.get("status") or {}).get("phase") == "Retired"
                and mr
            ),
            180,
        )
        eventually(lambda: serving("3"), 30)

    status = done["status"]
    assert condition(done, "Ready")["reason"] == "Retired"
    steps = ["Drain", "Archive", "Delete", "Dispose", "Report"]
    assert [(s["name"], s["state"]) for s in status["steps"]] == [(n, "Succeeded") for n in steps]
    assert status["drainedDeployments"] == ["bot"] and status["producedBy"] == [f"{namespace}/train"]
    move = reg.read_alias(store, "support-bot", "champion")
    assert move is not None and (move.version, move.previous) == ("3", "4")
    assert move.by == f"modelretirement/{namespace}/retire-4"

    # The archive: every registry object, locked in GOVERNANCE mode, with the receipt.
    s3, bucket = archive["s3"], archive["bucket"]
    prefix = reg.version_prefix("support-bot", "4")
    archived = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix + "/")["Contents"]}
    assert {k for k in registry_objects} <= archived and f"{prefix}/ARCHIVE.json" in archived
    manifest_key = f"{prefix}/manifest.json"
    head = s3.head_object(Bucket=bucket, Key=manifest_key)
    assert head["ObjectLockMode"] == "GOVERNANCE" and status["retainUntil"]
    with pytest.raises(ClientError):  # WORM: the locked version cannot be deleted without bypass
        s3.delete_object(Bucket=bucket, Key=manifest_key, VersionId=head["VersionId"])
    assert status["archiveLocation"] == f"s3://{bucket}/{prefix}"

    # The registry: a tombstone, no artifact, the number never reused.
    with pytest.raises(reg.VersionRetired, match=f"s3://{bucket}"):
        reg.read_version(store, "support-bot", "4")
    tombstone = reg.read_tombstone(store, "support-bot", "4")
    assert tombstone is not None and tombstone.reason == "fails the new toxicity suite"
    assert not list(store.list(f"{prefix}/model/"))

    # Disposal: version 4's records and work folder went; version 3's stayed.
    left = [json.loads(line) for k in payloads.list("") for line in payloads.get_bytes(k).splitlines()]
    assert sorted(r["version"] for r in left) == ["3", "3", "3", "3"]
    assert not payloads.exists("2026-11-30/120500-gw-payload-000003.jsonl")
    assert not list(store.list(f"jobs/{namespace}/train/uid-4/"))
    assert store.exists(f"jobs/{namespace}/train/uid-3/checkpoints/step-10/weights.bin")
    dispose = next(s for s in status["steps"] if s["name"] == "Dispose")
    assert "7 records removed" in dispose["message"], dispose

    # The post-mortem beside the archive.
    report = f"{prefix}/postmortem/postmortem.md"
    text = s3.get_object(Bucket=bucket, Key=report)["Body"].read().decode()
    assert "# Post-mortem: support-bot version 4" in text and "fails the new toxicity suite" in text
    assert status["reportLocation"] == f"s3://{bucket}/{report}"
    assert "retired: fails the new toxicity suite" in status["summary"]

    events = json.loads(
        cluster.kubectl(
            "get", "events", "-n", namespace, "--field-selector", "involvedObject.name=retire-4", "-o", "json"
        ).stdout
    )["items"]
    assert {"DrainStarted", "Drained", "Archived", "Deleted", "Disposed", "Reported"} <= {
        e["reason"] for e in events
    }


def test_approval_waits_for_a_second_person_and_dry_run_changes_nothing(
    cluster: LocalCluster, namespace: str, registry: Path, archive: dict
) -> None:
    store = LocalStore(registry)
    before = sorted(store.list(""))
    with operator_in_thread(namespace, kinds()):
        apply(
            cluster,
            namespace,
            retirement("plan", registry, archive, model={"name": "support-bot", "version": "2"}, dryRun=True),
        )
        planned = eventually(
            lambda: (
                (mr := get(cluster, "mr", "plan", namespace))
                and (mr.get("status") or {}).get("phase") == "DryRun"
                and mr
            ),
            60,
        )
        actions = [(a["step"], a["action"]) for a in planned["status"]["plan"]]
        assert ("Drain", "nothing serves the retired versions") in actions
        assert any(
            step == "Archive" and "objects of 2" in action and "Governance 1 days" in action
            for step, action in actions
        )
        assert condition(planned, "Ready")["status"] == "True"

        apply(
            cluster,
            namespace,
            retirement(
                "approve",
                registry,
                archive,
                model={"name": "support-bot", "version": "1"},
                requireApproval=True,
            ),
        )
        waiting = eventually(
            lambda: (
                (mr := get(cluster, "mr", "approve", namespace))
                and (mr.get("status") or {}).get("phase") == "AwaitingApproval"
                and mr
            ),
            60,
        )
        assert "retire.llmops.io/approve" in condition(waiting, "Reconciling")["message"]
    assert sorted(store.list("")) == before  # neither touched the registry
    assert "Contents" not in archive["s3"].list_objects_v2(Bucket=archive["bucket"])


def test_admission_refuses_retiring_a_served_version_without_a_drain_plan(
    cluster: LocalCluster, namespace: str, registry: Path, archive: dict
) -> None:
    """The webhook's check (llmops/operators/admission.py) against the real apiserver: the deployments
    of the namespace as it lists them, their status as the operator would have written it."""
    from llmops.operators.admission import unplanned_drain
    from llmops.operators.kube import Kube

    apply(cluster, namespace, deployment("bot", registry))
    status = {
        "versions": [{"name": "support-bot", "version": "2", "role": "stable", "weight": 100, "replicas": 1}]
    }
    cluster.kubectl(
        "patch", "md", "bot", "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": status}),
    )  # fmt: skip
    api = Kube.from_environment(cluster.kubeconfig)
    try:
        spec = retirement("r", registry, archive, model={"name": "support-bot", "version": "2"})["spec"]
        problem = unplanned_drain(spec, namespace, api)
        assert problem is not None and problem.startswith("spec.drain: still served by ModelDeployment bot")
        whole = retirement("r", registry, archive, model={"name": "support-bot"})["spec"]
        assert "bot (2 as stable)" in (unplanned_drain(whole, namespace, api) or "")
        other = retirement("r", registry, archive, model={"name": "support-bot", "version": "1"})["spec"]
        assert unplanned_drain(other, namespace, api) is None  # nothing serves 1
        planned = {**spec, "drain": {"mode": "Suspend"}}
        assert unplanned_drain(planned, namespace, api) is None
    finally:
        api.close()


def test_the_operator_killed_mid_copy_and_mid_delete_deletes_nothing_early_and_finishes(
    cluster: LocalCluster, namespace: str, archive: dict, tmp_path: Path
) -> None:
    """`llmops operator` as users run it, killed with SIGKILL while the archive is half copied (some
    objects in the archive, no receipt yet), started again, killed again while the delete is half done
    (the tombstone written, some artifacts still there), started again: at each kill the registry
    holds every object of the version unless its tombstone is written and its archive verifies; in
    the end the version is retired and its archive verifies. The registry is in MinIO too, so each
    copy and each delete is a request, and the moments are seen in storage, not guessed by time."""
    import signal

    from llmops import archive as arch
    from llmops.api.common import ObjectStorageLocation
    from llmops.storage import open_store
    from tests.helpers import operator_process

    minio_store = open_store(
        ObjectStorageLocation.model_validate(archive["location"]), archive["credentials"]
    )
    registry_location = {
        "s3": {**archive["location"]["s3"], "bucket": "llmops", "prefix": f"{namespace}/registry"}
    }
    store = open_store(ObjectStorageLocation.model_validate(registry_location), archive["credentials"])
    model = tmp_path / "big"
    (model / "shards").mkdir(parents=True)
    (model / "config.json").write_text("{}")
    for i in range(160):  # many objects: the copy and the delete take many requests
        (model / "shards" / f"{i:04d}.bin").write_bytes(bytes([i % 251]) * 2048)
    gates = [reg.GateVerdict(metric="accuracy", operator=">=", threshold=0.5, value=0.9, passed=True)]
    version = reg.register(
        store, "support-bot", model, metrics={}, gates=gates, lineage=reg.Lineage()
    ).version
    prefix = reg.version_prefix("support-bot", version)
    objects = sorted(store.list(prefix + "/"))

    def safe() -> str:
        """The invariant: nothing deleted unless the tombstone is there and the archive verifies."""
        left = sorted(store.list(prefix + "/"))
        if reg.read_tombstone(store, "support-bot", version) is None:
            assert left == objects, "objects deleted before the tombstone"
            return f"registry intact ({len(left)} objects)"
        receipt = arch.ArchiveReceipt.model_validate_json(minio_store.get_bytes(f"{prefix}/{arch.RECEIPT}"))
        assert arch.verify_archive(minio_store, receipt) == []
        return f"tombstoned, archive verified, {len(left)} objects left"

    def copying() -> int | None:
        copied = [k for k in minio_store.list(prefix + "/")]
        return len(copied) if copied and f"{prefix}/{arch.RECEIPT}" not in copied else None

    def deleting() -> int | None:
        if reg.read_tombstone(store, "support-bot", version) is None:
            return None
        left = len(list(store.list(f"{prefix}/model/")))
        return left if 0 < left < len(objects) - 2 else None

    body = retirement(
        "retire-big", Path("/unused"), archive, model={"name": "support-bot", "version": version}
    )
    body["spec"]["registry"] = registry_location
    apply(cluster, namespace, body)
    seen = []
    for name, moment in (("the copy", copying), ("the delete", deleting)):
        with operator_process(cluster, namespace) as op:
            at = eventually(moment, 180, 0.02)
            op["proc"].send_signal(signal.SIGKILL)
            op["proc"].wait(30)
        seen.append(f"killed in {name} at {at} objects: {safe()}")
    with operator_process(cluster, namespace):
        done = eventually(
            lambda: (
                (mr := get(cluster, "mr", "retire-big", namespace))
                and (mr.get("status") or {}).get("phase") == "Retired"
                and mr
            ),
            180,
        )
    print("; ".join(seen))
    assert seen[0].endswith(f"registry intact ({len(objects)} objects)"), seen
    assert "tombstoned, archive verified" in seen[1], seen
    assert safe().startswith("tombstoned, archive verified") and not list(store.list(f"{prefix}/model/"))
    archived = next(s for s in done["status"]["steps"] if s["name"] == "Archive")
    assert archived["objects"] == len(objects), archived
