"""kopf's record of what it handled (llmops/operators/main.py `DigestDiffBaseStorage`): a digest in
`status.lastHandledConfiguration`, written with the reconcile's status in one request. The same on the
real control plane: tests/cluster/test_operator.py::test_objects_at_their_schema_bounds_get_a_status."""

from __future__ import annotations

import json

import kopf

from llmops.api import MODEL_DEPLOYMENT
from llmops.operators.main import PREFIX, DigestDiffBaseStorage


def body(**annotations: str) -> kopf.Body:
    meta = {"name": "md", "namespace": "ns", "generation": 2, "annotations": annotations}
    return kopf.Body({"metadata": meta, "spec": {"model": {"name": "bot"}}, "status": {"phase": "Ready"}})


def test_the_record_is_a_digest_in_the_status_and_ignores_our_own_annotations() -> None:
    storage = DigestDiffBaseStorage(prefix=PREFIX)
    essence = storage.build(body=body())
    assert set(essence) == {"sha256"} and len(essence["sha256"]) == 64
    assert storage.build(body=body(**{f"{PREFIX}/progress": "x"})) == essence  # our bookkeeping
    assert storage.build(body=body(team="a")) != essence  # the user's annotation is a change
    patch = kopf.Patch()
    storage.store(body=body(), patch=patch, essence=essence)
    assert dict(patch) == {"status": {"lastHandledConfiguration": json.dumps(essence, separators=(",", ":"))}}
    stored = kopf.Body({**body(), "status": patch["status"]})
    assert storage.fetch(body=stored) == essence
    # Every kind's status schema holds it (else the apiserver would prune it, and every status write
    # would look like a new object to kopf).
    status = MODEL_DEPLOYMENT.status.model_validate(patch["status"])
    assert status.last_handled_configuration == patch["status"]["lastHandledConfiguration"]


def test_an_earlier_versions_annotation_is_read_then_moved() -> None:
    """Objects handled before the record moved keep being seen as handled (not as new objects): their
    annotation is read while the status has no record, and the first store deletes it."""
    storage = DigestDiffBaseStorage(prefix=PREFIX)
    essence = storage.build(body=body())
    old = body(**{f"{PREFIX}/last-handled-configuration": json.dumps(essence)})
    assert storage.fetch(body=old) == essence
    patch = kopf.Patch()
    storage.store(body=old, patch=patch, essence=essence)
    assert patch["metadata"] == {"annotations": {f"{PREFIX}/last-handled-configuration": None}}
    assert "lastHandledConfiguration" in patch["status"]
    assert storage.fetch(body=body()) is None  # never handled


def test_kopfs_progress_records_carry_no_marker() -> None:
    """A handler's progress (kopf's retries) is stored in our annotations, without kopf's `kopf-managed`
    marker: that marker was a PATCH of the object of its own for every new object."""
    from llmops.operators.main import UnmarkedProgressStorage

    storage = UnmarkedProgressStorage(prefix=PREFIX)
    patch = kopf.Patch()
    record = {"started": "2026-12-04T00:00:00", "retries": 1, "success": False, "failure": False}
    storage.store(key=kopf.HandlerId("reconcile"), record=record, body=body(), patch=patch)  # type: ignore[arg-type]
    annotations = patch["metadata"]["annotations"]
    assert set(annotations) == {f"{PREFIX}/reconcile"}
    assert storage.fetch(key=kopf.HandlerId("reconcile"), body=kopf.Body({"metadata": patch["metadata"]}))
    touched = kopf.Patch()
    storage.touch(body=body(), patch=touched, value="now")
    assert set(touched["metadata"]["annotations"]) == {f"{PREFIX}/touch-dummy"}
