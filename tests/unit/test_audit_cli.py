"""`llmops audit verify|show` and `llmops report compliance` through the real command, over a registry
that `register()` filled and an audit trail written by the real writers (the alias command, the
operator's Auditor, the registry's registration hook)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from llmops.audit import Actor, AuditLog, Entry, ObjectRef, record_key
from llmops.audit_cli import when
from llmops.cli import main
from llmops.registry import GateVerdict, Lineage, Tombstone, register, version_prefix
from llmops.storage import LocalStore


@pytest.fixture
def where(tmp_path: Path) -> dict[str, Path]:
    registry, trail = tmp_path / "registry", tmp_path / "audit"
    store, log = LocalStore(registry), AuditLog(LocalStore(trail))
    for i in range(2):
        model = tmp_path / f"model-{i}"
        model.mkdir()
        (model / "config.json").write_text(json.dumps({"i": i}))
        gates = [GateVerdict(metric="accuracy", operator=">=", threshold=0.5, value=0.9, passed=True)]
        lineage = Lineage(
            parent_job="ml/t-1",
            data=[{"uri": "s3://data/train.jsonl", "rows": 100, "sha256": "cd" * 32}],
            data_digest="sha256:" + "ef" * 32,
            preparation={"pii": {"emails_redacted": 3}},
        )
        register(store, "chat", model, metrics={"accuracy": 0.9}, gates=gates, lineage=lineage,
                 audit=log, by="user:ci")  # fmt: skip
    return {"registry": registry, "audit": trail}


def llmops(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.output


def serve(log: AuditLog, version: str, action: str, at: dt.datetime) -> None:
    log.append(
        Entry(
            actor=Actor(type="operator", name="op", on_behalf_of="alice"),
            action=f"modeldeployment.{action}",
            object=ObjectRef(kind="ModelDeployment", namespace="ml", name="chat", uid="u"),
            model="chat",
            version=version,
            reason="RolledOut",
        ),
        now=at,
    )


def test_alias_moves_and_registrations_are_audited_and_shown(where: dict[str, Path]) -> None:
    env = {"LLMOPS_AUDIT": str(where["audit"]), "LLMOPS_REGISTRY": str(where["registry"])}
    move = ["models", "alias", "set", "chat", "champion", "2", "--reason", "better", "--by", "user:bob"]
    code, _ = llmops(*move, env=env)
    assert code == 0
    code, out = llmops("audit", "show", "-o", "json", env=env)
    records = json.loads(out)
    assert [r["data"]["action"] for r in records] == ["modelversion.registered"] * 2 + ["alias.moved"]
    moved = records[-1]["data"]
    assert moved["actor"] == {"type": "cli", "name": "bob", "onBehalfOf": None}
    assert (moved["model"], moved["version"], moved["details"]["previous"]) == ("chat", "2", None)
    assert "manifest.json" in records[0]["data"]["digests"] and records[0]["data"]["actor"]["name"] == "ci"
    code, out = llmops("audit", "show", "--kind", "alias", env=env)
    lines = out.splitlines()
    assert lines[0].split() == ["SEQ", "TIME", "ACTOR", "ACTION", "OBJECT", "MODEL", "MESSAGE"]
    assert len(lines) == 2 and "alias.moved" in lines[1] and "chat:2" in lines[1] and "cli:bob" in lines[1]
    code, out = llmops("audit", "show", "--version", "1", "-o", "json", env=env)
    assert [r["data"]["sequence"] for r in json.loads(out)] == [1]


def test_verify_passes_then_fails_on_tampering(where: dict[str, Path]) -> None:
    trail = str(where["audit"])
    code, out = llmops("audit", "verify", "--audit", trail)
    assert code == 0 and "2 records, chain intact" in out
    code, out = llmops("audit", "verify", "--audit", trail, "-o", "json")
    head = json.loads(out)["head"]
    path = where["audit"] / record_key(1)
    path.write_text(path.read_text().replace('"ci"', '"mallory"'))
    code, out = llmops("audit", "verify", "--audit", trail)
    assert code == 1 and "BROKEN at record 1" in out and "edited" in out
    code, out = llmops("audit", "verify", "--audit", trail, "--expect-head", head, "-o", "json")
    assert code == 1 and json.loads(out)["brokenAt"] == 1


def test_verify_without_a_location_says_how_to_give_one() -> None:
    result = CliRunner().invoke(main, ["audit", "verify"], env={"LLMOPS_AUDIT": ""})
    assert result.exit_code == 2 and "--audit" in result.output and "LLMOPS_AUDIT" in result.output


def test_compliance_report(where: dict[str, Path]) -> None:
    log = AuditLog(LocalStore(where["audit"]))
    t0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    serve(log, "1", "rolled_out", t0)
    serve(log, "2", "rolled_out", t0 + dt.timedelta(days=2))
    serve(log, "1", "serving_stopped", t0 + dt.timedelta(days=2, minutes=5))
    # Version 1 retired (as llmops/archive.py leaves it: a tombstone, the manifest gone).
    registry = LocalStore(where["registry"])
    prefix = version_prefix("chat", "1")
    missing = f"file://{where['registry'].parent / 'no-archive'}"  # an archive that is gone
    tombstone = Tombstone(
        name="chat", version="1", artifacts={}, manifest_sha256="ab" * 32, archive_location=missing,
        receipt_key="r.json", by="ops", reason="superseded", at="2026-11-20T00:00:00+00:00",
        retain_until="2027-11-20T00:00:00+00:00", lock_mode="COMPLIANCE",
    )  # fmt: skip
    registry.put_bytes(f"{prefix}/tombstone.json", tombstone.model_dump_json(by_alias=True).encode())
    registry.delete(f"{prefix}/manifest.json")
    args = ["report", "compliance", "--model", "chat", "--registry", str(where["registry"]),
            "--audit", str(where["audit"])]  # fmt: skip
    code, out = llmops(*args, "--format", "json")
    assert code == 0
    report = json.loads(out)
    assert report["verification"]["ok"] and report["verification"]["count"] == 5
    one, two = report["versions"]
    assert two["lineage"]["data"][0]["sha256"] == "cd" * 32 and two["gates"][0]["passed"]
    assert "lineage" not in one and "manifestError" not in one  # retired: the tombstone stands for it
    assert "FileNotFoundError" in one["archiveError"]  # and the report says why there is no lineage
    assert one["served"] == [{"version": "1", "deployment": "ml/modeldeployment/chat",
                              "from": "2026-11-01T00:00:00.000000+00:00",
                              "until": "2026-11-03T00:05:00.000000+00:00", "firstRecord": 3}]  # fmt: skip
    assert two["served"][0]["until"] is None and two["tombstone"] is None
    assert one["tombstone"]["archiveLocation"] == missing and len(two["manifestSha256"]) == 64
    code, text = llmops(*args)
    assert code == 0 and text.startswith("# Compliance report: chat")
    assert "chain intact" in text and "## Version 2" in text and "| ml/modeldeployment/chat |" in text
    assert "emails_redacted" in text and "superseded" in text and "| accuracy >= | 0.9 | 0.5 | True |" in text
    # Who registered it, from the audit trail's record (the CLI's --by), and from which TrainingJob.
    assert two["registeredBy"] == "cli:ci"
    assert "by `cli:ci` (TrainingJob `ml/t-1`)" in text


def test_times() -> None:
    now = dt.datetime(2026, 11, 30, 12, tzinfo=dt.UTC)
    assert when("24h", now=now) == now - dt.timedelta(hours=24)
    assert when("2026-11-30T10:00") == dt.datetime(2026, 11, 30, 10, tzinfo=dt.UTC)
    assert when(None) is None


def test_an_erasure_enters_the_trail_and_the_report(where: dict[str, Path]) -> None:
    from llmops import erasure
    from llmops.audit import AuditConfig

    receipt = {
        "id": "20261130T120000Z-abc", "requestedBy": "dpo", "reason": "ticket 7", "action": "delete",
        "subject": {"kind": "user", "hash": "f" * 64},
        "totals": {"payloadRecords": 3, "datasetRows": 2},
        "modelVersions": [{"name": "chat", "version": "2", "trainingJob": "ml/t-1"}],
    }  # fmt: skip
    erasure.append_audit_record(receipt, AuditConfig(str(where["audit"])))
    log = AuditLog(LocalStore(where["audit"]))
    completed, affected = [r for r in log.all() if r.data.action.startswith("erasure.")]
    assert (completed.data.action, completed.data.actor.name, completed.data.details["payloadRecords"]) == (
        "erasure.completed", "dpo", 3,
    )  # fmt: skip
    assert "alice" not in completed.model_dump_json() and completed.data.details["subjectHash"] == "f" * 64
    assert (affected.data.model, affected.data.version) == ("chat", "2")
    code, out = llmops("report", "compliance", "--model", "chat", "--registry", str(where["registry"]),
                       "--audit", str(where["audit"]), "--format", "json")  # fmt: skip
    assert code == 0 and [e["action"] for e in json.loads(out)["erasureRequests"]] == [
        "erasure.version_affected"
    ]
    assert log.verify().ok
    # With the receipts, the report carries each affected version's decision, pending until made.
    receipts = LocalStore(where["audit"].parent / "receipts")
    receipts.put_bytes(
        erasure.receipt_key(receipt["id"]), json.dumps(receipt | {"state": "completed"}).encode()
    )
    args = ["report", "compliance", "--model", "chat", "--registry", str(where["registry"]),
            "--audit", str(where["audit"]), "--receipts", receipts.uri]  # fmt: skip
    code, text = llmops(*args)
    assert code == 0 and f"| {receipt['id']} |" in text and "| 2 | pending |" in text
    erasure.record_decision(receipts, receipt["id"], "chat", "2", "retrain-without", by="dpo")
    code, out = llmops(*args, "--format", "json")
    (affected,) = [e for e in json.loads(out)["erasureRequests"] if e["action"] == "erasure.version_affected"]
    assert (affected["decision"]["decision"], affected["decision"]["by"]) == ("retrain-without", "dpo")
    code, text = llmops(*args)
    assert "| 2 | retrain-without by dpo at " in text


def test_the_compliance_report_reads_a_retired_versions_lineage_from_its_archive(
    where: dict[str, Path], tmp_path: Path
) -> None:
    from llmops.archive import archive_version, delete_version

    registry, archive = LocalStore(where["registry"]), LocalStore(tmp_path / "archive")
    receipt = archive_version(registry, "chat", "1", archive)
    delete_version(
        registry, "chat", "1", target=archive, receipt=receipt, actor="user:ana", reason="superseded"
    )
    code, out = llmops("report", "compliance", "--model", "chat", "--registry", str(where["registry"]),
                       "--format", "json")  # fmt: skip
    one = json.loads(out)["versions"][0]
    assert code == 0 and one["manifestSource"] == "archive" and one["tombstone"]["by"] == "user:ana"
    assert one["lineage"]["data"][0]["sha256"] == "cd" * 32 and one["gates"][0]["passed"]
    manifest = tmp_path / "archive" / version_prefix("chat", "1") / "manifest.json"
    manifest.write_bytes(manifest.read_bytes().replace(b"ml/t-1", b"ml/t-9"))  # the archive altered
    code, out = llmops("report", "compliance", "--model", "chat", "--registry", str(where["registry"]),
                       "--format", "json")  # fmt: skip
    one = json.loads(out)["versions"][0]
    assert "lineage" not in one and "the tombstone says" in one["archiveError"]


def test_the_compliance_report_of_a_model_the_registry_lacks_is_an_error(where: dict[str, Path]) -> None:
    code, out = llmops("report", "compliance", "--model", "nope", "--registry", str(where["registry"]))
    assert code == 1 and "model 'nope' has no version, live or retired" in out


def test_reading_a_location_without_records_is_an_error(tmp_path: Path) -> None:
    """A mistyped location reads as an empty log: verify and show say so and fail, never "intact"."""
    for command in (["audit", "verify"], ["audit", "show"]):
        code, out = llmops(*command, "--audit", str(tmp_path / "no-trail"))
        assert code == 1 and "no audit records there" in out, (command, out)


def test_the_usage_report_says_in_one_line_what_is_missing(tmp_path: Path) -> None:
    """`llmops report usage`'s errors before Prometheus answers: each one line, no traceback
    (tests/serving/test_serving_usage.py runs it on a real run)."""
    manifest = tmp_path / "md.yaml"
    manifest.write_text(
        "apiVersion: llmops.io/v1alpha1\nkind: ModelDeployment\nmetadata: {name: chat, namespace: team-a}\n"
        "spec: {model: {name: tiny, version: '1'}, registry: {local: {path: /r}},"
        " autoscaling: {minReplicas: 3, maxReplicas: 1}}\n"
    )
    base = ["report", "usage", "-n", "team-a", "--prometheus", "http://127.0.0.1:1", "--file", str(manifest)]
    cases = {
        "other": "holds no ModelDeployment named 'other' (its ModelDeployments: chat)",
        "chat": "ModelDeployment team-a/chat: spec.autoscaling: minReplicas must not exceed",
        "Chat": "deployment: 'Chat' is not a Kubernetes object name",
    }
    for name, message in cases.items():
        result = CliRunner().invoke(main, [*base, "--deployment", name])
        print(f"\n{name}: {result.output.strip()}")
        assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output
    # Every problem of the spec is named, not only the first.
    two = tmp_path / "two.yaml"
    two.write_text(manifest.read_text().replace("version: '1'}", "version: '1'}, engine: {dtype: fp7}"))
    result = CliRunner().invoke(main, [*base[:-1], str(two), "--deployment", "chat"])
    assert "spec.engine.dtype: Input should be" in result.output, result.output
    assert "spec.autoscaling: minReplicas must not exceed" in result.output, result.output
    backwards = CliRunner().invoke(main, [*base, "--deployment", "chat", "--start", "1h", "--end", "2h"])
    assert backwards.exit_code == 2 and "before it starts" in backwards.output
    empty = tmp_path / "none.yaml"
    empty.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: chat}\n")
    result = CliRunner().invoke(main, [*base[:-1], str(empty), "--deployment", "chat"])
    assert result.exit_code == 2 and "holds no ModelDeployment named 'chat' (it holds none)" in result.output
    # The same name in two namespaces: the one in -n is read (team-b's is valid, team-a's is not).
    both = tmp_path / "both.yaml"
    both.write_text(
        manifest.read_text()
        + "---\n"
        + manifest.read_text()
        .replace("team-a", "team-b")
        .replace("minReplicas: 3, maxReplicas: 1", "minReplicas: 1, maxReplicas: 3")
    )
    result = CliRunner().invoke(
        main, [*base[:2], "-n", "team-b", *base[4:-1], str(both), "--deployment", "chat"]
    )
    assert "spec.autoscaling" not in result.output and "Traceback" not in result.output, result.output


def test_report_out_makes_its_folder(where: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "reports" / "2026" / "chat.md"
    args = ["report", "compliance", "--model", "chat", "--registry", str(where["registry"]),
            "--audit", str(where["audit"]), "--out", str(out)]  # fmt: skip
    code, printed = llmops(*args)
    assert code == 0 and printed == "" and out.read_text().startswith("# Compliance report: chat")


def test_bad_times_and_urls_name_their_flag(where: dict[str, Path]) -> None:
    """Each time and URL option says which flag its bad value came from (usage errors, exit 2)."""
    usage = ["report", "usage", "--deployment", "chat", "--prometheus", "http://127.0.0.1:9"]
    for args, flag in (
        ([*usage, "--since", "7x"], "--since"),
        ([*usage, "--start", "yesterday"], "--start"),
        ([*usage, "--end", "soon"], "--end"),
        (["report", "usage", "--deployment", "chat", "--prometheus", "127.0.0.1:9"], "--prometheus"),
        (["audit", "show", "--audit", str(where["audit"]), "--until", "7x"], "--until"),
    ):
        code, out = llmops(*args)
        assert code == 2 and f"Invalid value for {flag}:" in out, (args, out)
