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
    assert "lastHandledConfiguration" in patch["status"]  # and the annotation kept (next test)
    moved = kopf.Body({**old, "status": patch["status"]})
    assert storage.fetch(body=moved) == essence
    patch = kopf.Patch()
    storage.store(body=moved, patch=patch, essence=essence)  # the status holds it: the annotation goes
    assert patch["metadata"] == {"annotations": {f"{PREFIX}/last-handled-configuration": None}}
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


def test_the_record_stays_in_the_annotation_until_the_status_holds_it() -> None:
    """While an object's status has no record (its first store after an upgrade), the annotation is
    written too, so that a status the apiserver dropped (an old CRD) loses nothing; once the status holds
    it, the annotation goes. With `in_status=False` (CRDs older than the operator) only the annotation
    is written, as before."""
    storage = DigestDiffBaseStorage(prefix=PREFIX)
    essence = storage.build(body=body())
    legacy = f"{PREFIX}/last-handled-configuration"
    old = body(**{legacy: json.dumps({"sha256": "0" * 64})})
    patch = kopf.Patch()
    storage.store(body=old, patch=patch, essence=essence)
    assert json.loads(patch["metadata"]["annotations"][legacy]) == essence  # both, for now
    assert json.loads(patch["status"]["lastHandledConfiguration"]) == essence
    pruned = kopf.Body(
        {**old, "metadata": {**old["metadata"], "annotations": patch["metadata"]["annotations"]}}
    )
    assert storage.fetch(body=pruned) == essence  # the status dropped it: the annotation still says

    annotated = DigestDiffBaseStorage(prefix=PREFIX, in_status=False)
    patch = kopf.Patch()
    annotated.store(body=body(), patch=patch, essence=essence)
    assert "status" not in patch and json.loads(patch["metadata"]["annotations"][legacy]) == essence
    recorded = kopf.Body(
        {**body(), "status": {"lastHandledConfiguration": "stale"}, "metadata": patch["metadata"]}
    )
    assert annotated.fetch(body=recorded) == essence  # the status is not read


def test_crds_older_than_the_operator_are_found() -> None:
    """stale_crds: a kind whose installed CRD's status schema has no lastHandledConfiguration (or that
    is not installed) is named, and the operator then keeps its record in the annotation; an apiserver
    that does not answer retries the operator's start-up instead of settling on the annotation."""
    import pytest

    from llmops.crdgen import crd
    from llmops.operators.main import default_kinds, stale_crds

    kinds = default_kinds()
    installed = {f"{k.resource.plural}.llmops.io": crd(k.resource) for k in kinds}
    away: list[str] = []

    class Kube:
        def list(self, api_version: str, kind: str, field_selector: str = "", **_: object) -> list[dict]:
            name = field_selector.removeprefix("metadata.name=")
            if name in away:
                raise RuntimeError("connection refused")
            return [installed[name]] if name in installed else []

    assert stale_crds(Kube(), kinds) == []  # type: ignore[arg-type]
    schema = installed["modeldeployments.llmops.io"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    del schema["properties"]["status"]["properties"]["lastHandledConfiguration"]
    del installed["retrainpolicies.llmops.io"]
    assert set(stale_crds(Kube(), kinds)) == {  # type: ignore[arg-type]
        "modeldeployments.llmops.io",
        "retrainpolicies.llmops.io",
    }
    away.append("trainingjobs.llmops.io")
    with pytest.raises(kopf.TemporaryError, match=r"could not read the CRD trainingjobs\.llmops\.io"):
        stale_crds(Kube(), kinds)  # type: ignore[arg-type]
