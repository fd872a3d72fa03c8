"""The write-ahead rule of a parent's inventory (llmops/operators/apply.py `write_ahead`): a child is
recorded before it is first applied, so a crash between the apply and the status write leaves none
unlisted. The kill at exactly that moment on the real control plane:
tests/reliability/test_operator_kill.py::test_a_child_applied_before_a_kill_and_unwanted_after_is_deleted."""

from __future__ import annotations

from llmops.operators.apply import Applied, manifest_digest, write_ahead


def child(kind: str, name: str, api_version: str = "apps/v1") -> dict:
    return {"apiVersion": api_version, "kind": kind, "metadata": {"name": name}}


def test_nothing_new_writes_nothing() -> None:
    recorded = ["apps/v1/Deployment/bot-1-vllm", "v1/Service/bot-1-vllm"]
    manifests = [child("Deployment", "bot-1-vllm"), child("Service", "bot-1-vllm", "v1")]
    assert write_ahead(recorded, manifests) is None
    assert write_ahead(recorded, []) is None


def test_a_new_child_is_recorded_with_everything_recorded_before() -> None:
    recorded = ["apps/v1/Deployment/bot-1-vllm", "v1/Service/bot-1-vllm"]
    grown = write_ahead(recorded, [child("Deployment", "bot-1-vllm"), child("Deployment", "bot-2-vllm")])
    # The union, not what this batch applies: the old version keeps its entry until it is pruned.
    assert grown == [
        "apps/v1/Deployment/bot-1-vllm",
        "apps/v1/Deployment/bot-2-vllm",
        "v1/Service/bot-1-vllm",
    ]


def test_the_first_reconcile_records_every_child() -> None:
    grown = write_ahead([], [child("Deployment", "b"), child("Deployment", "a"), child("Deployment", "a")])
    assert grown == ["apps/v1/Deployment/a", "apps/v1/Deployment/b"]  # sorted, each once


# -- the ModelDeployment reconcile follows it ------------------------------------------------------


class RecordingApplier:
    """The edge a unit test cannot run (the apiserver): records every write in order; reads find
    nothing (no child is Ready). The real chain: tests/reliability/test_operator_kill.py."""

    kube = None

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def apply(self, manifest: dict, *, dry_run: bool = False) -> dict:
        from llmops.operators.apply import ref

        self.calls.append(("apply", ref(manifest)))
        return manifest

    def patch_status(self, api_version: str, kind: str, name: str, namespace: str, status: dict) -> dict:
        self.calls.append(("status", tuple(status["inventory"])))
        return {}

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> bool:
        self.calls.append(("delete", f"{api_version}/{kind}/{name}"))
        return False

    def get(self, *args: object, **kwargs: object) -> None:
        return None

    def create(self, manifest: dict) -> bool:
        return True


def reconcile(tmp_path, spec: dict, inventory: list[str]) -> tuple[RecordingApplier, list[str]]:
    """One ModelDeployment reconcile of `spec` whose status lists `inventory`; the writes it made and
    the inventory it would write last."""
    import logging

    from llmops.api.modeldeployment import ModelDeploymentSpec, ModelDeploymentStatus
    from llmops.operators.modeldeployment.plan import ServingSettings
    from llmops.operators.modeldeployment.reconcile import Reconciler
    from llmops.operators.runtime import Context

    body = {
        "apiVersion": "llmops.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "bot", "namespace": "demo", "uid": "uid-1", "generation": 1},
        "spec": spec,
    }
    applier = RecordingApplier()
    ctx = Context(
        body=body,
        applier=applier,  # type: ignore[arg-type]
        logger=logging.getLogger("test"),
        status=ModelDeploymentStatus(inventory=inventory),
    )
    settings = ServingSettings(
        serving_image="ghcr.io/llmops/serving:test", prometheus_url="http://127.0.0.1:9"
    )
    outcome = Reconciler(settings=settings)(ModelDeploymentSpec.model_validate(spec), ctx)
    return applier, outcome.status["inventory"]


def registry(tmp_path) -> str:
    import json

    from llmops.registry import GateVerdict, Lineage, register
    from llmops.storage import LocalStore

    root = tmp_path / "registry"
    for i in (1, 2):
        model = tmp_path / f"model-{i}"
        model.mkdir()
        (model / "config.json").write_text(json.dumps({"version": i}))
        gates = [GateVerdict(metric="accuracy", operator=">=", threshold=0.5, value=0.9, passed=True)]
        register(LocalStore(root), "bot", model, metrics={}, gates=gates, lineage=Lineage())
    return str(root)


def md_spec(root: str, canary: bool) -> dict:
    spec: dict = {
        "model": {"name": "bot", "version": "1"},
        "registry": {"local": {"path": root}},
        "resources": {"cpu": 1, "memory": "2Gi"},
    }
    if canary:
        spec["rollout"] = {"canary": {"model": {"name": "bot", "version": "2"}, "weight": 10}}
    return spec


def test_every_child_is_recorded_before_it_is_first_applied_and_only_then(tmp_path) -> None:
    root = registry(tmp_path)
    applier, inventory = reconcile(tmp_path, md_spec(root, canary=False), [])
    recorded: set[str] = set()
    for call, what in applier.calls:
        if call == "status":
            recorded |= set(what)  # type: ignore[arg-type]
        elif call == "apply":
            assert what in recorded, f"{what} applied before the inventory listed it: {applier.calls}"
    assert sum(call == "status" for call, _ in applier.calls) == 1  # one write, the children predicted
    assert set(inventory) <= recorded

    # Steady state: everything is listed, no write ahead.
    again, _ = reconcile(tmp_path, md_spec(root, canary=False), inventory)
    assert not [c for c in again.calls if c[0] == "status"]

    # A canary grows the set: one write ahead, with the old entries kept.
    grown, with_canary = reconcile(tmp_path, md_spec(root, canary=True), inventory)
    writes = [set(w) for c, w in grown.calls if c == "status"]  # type: ignore[arg-type]
    assert len(writes) == 1 and set(inventory) < writes[0]
    assert "apps/v1/Deployment/bot-2-vllm" in writes[0] and "apps/v1/Deployment/bot-2-vllm" in with_canary


def test_a_child_recorded_ahead_then_unwanted_is_deleted(tmp_path) -> None:
    """Killed after the canary's Deployment was applied (recorded ahead), the spec then loses its canary:
    the next reconcile deletes it although the reconcile that applied it never wrote its own status."""
    root = registry(tmp_path)
    _, steady = reconcile(tmp_path, md_spec(root, canary=False), [])
    applier, _ = reconcile(tmp_path, md_spec(root, canary=True), steady)
    ahead = next(w for c, w in applier.calls if c == "status")
    after, inventory = reconcile(tmp_path, md_spec(root, canary=False), list(ahead))  # type: ignore[arg-type]
    deleted = {w for c, w in after.calls if c == "delete"}
    assert {"apps/v1/Deployment/bot-2-vllm", "v1/Service/bot-2-vllm"} <= deleted
    assert "apps/v1/Deployment/bot-2-vllm" not in inventory
    assert not deleted & set(steady)  # the stable version's children stay


# -- what was applied, remembered compactly --------------------------------------------------------


def test_applied_remembers_by_parent_and_child_and_drops_the_least_recently_applied() -> None:
    applied = Applied(size=2)
    one = manifest_digest(child("Deployment", "a"))
    assert one == manifest_digest({"metadata": {"name": "a"}, "kind": "Deployment", "apiVersion": "apps/v1"})
    assert one != manifest_digest(child("Deployment", "b")) and len(one) == 16
    applied.put("uid-1", "apps/v1/Deployment/a", one, 10.0)
    applied.put("uid-2", "apps/v1/Deployment/a", one, 11.0)
    assert applied.get("uid-1", "apps/v1/Deployment/a") == (one, 10.0)
    assert applied.get("uid-1", "apps/v1/Deployment/b") is None  # another child of the same parent
    applied.put("uid-1", "apps/v1/Deployment/a", one, 12.0)  # applied again: now the most recent
    applied.put("uid-3", "apps/v1/Deployment/a", one, 13.0)  # one too many: uid-2's goes
    assert len(applied) == 2 and applied.get("uid-2", "apps/v1/Deployment/a") is None
    assert applied.get("uid-1", "apps/v1/Deployment/a") == (one, 12.0)
    applied.pop("uid-1", "apps/v1/Deployment/a")
    applied.pop("uid-1", "apps/v1/Deployment/a")  # popping what is not there is harmless
    assert len(applied) == 1


# -- the hand-over of replicas reads the live object only when our last apply may have owned them ---


class CountingKube:
    """The apiserver's edge: records applies and reads; the live Deployment has `replicas` owned by
    `owner` (a managedFields entry as the apiserver writes it). The real chain:
    tests/cluster/modeldeployment/test_autoscaling.py::test_handing_replicas_to_an_autoscaler_keeps_the_running_replicas."""

    def __init__(self, owner: str = "llmops") -> None:
        self.owner = owner
        self.calls: list[tuple[str, str, object]] = []
        self.fail = False

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict:
        self.calls.append(("get", name, None))
        fields = {"f:spec": {"f:replicas": {}}}
        return {
            "metadata": {
                "name": name,
                "managedFields": [{"manager": self.owner, "operation": "Apply", "fieldsV1": fields}],
            },
            "spec": {"replicas": 3},
        }

    def apply(self, manifest: dict, *, field_manager: str, force: bool = True, dry_run: bool = False) -> dict:
        if self.fail and field_manager == "llmops":
            raise RuntimeError("the apiserver refused it")
        self.calls.append(("apply", field_manager, manifest.get("spec", {}).get("replicas")))
        return manifest


def vllm(replicas: int | None = None, name: str = "bot-1-vllm") -> dict:
    spec: dict = {"template": {}} if replicas is None else {"replicas": replicas, "template": {}}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "demo"},
        "spec": spec,
    }


def test_replicas_are_handed_over_once_then_applies_skip_the_read() -> None:
    from llmops.operators.apply import Applier

    kube = CountingKube()
    applier = Applier(kube)  # type: ignore[arg-type]
    applier.apply(vllm(3))  # fixed replicas: ours, nothing to hand over, no read
    assert kube.calls == [("apply", "llmops", 3)]

    kube.calls.clear()
    applier.apply(vllm())  # an autoscaler's now: the running value handed over first
    assert kube.calls == [
        ("get", "bot-1-vllm", None),
        ("apply", "llmops-handover", 3),
        ("apply", "llmops", None),
    ]

    kube.calls.clear()
    applier.apply(vllm())  # that apply released replicas: nothing of ours to hand over, no read
    applier.apply(vllm(name="bot-2-vllm"))  # another child is read once
    applier.apply(vllm(name="bot-2-vllm"))
    assert kube.calls == [
        ("apply", "llmops", None),
        ("get", "bot-2-vllm", None),
        ("apply", "llmops-handover", 3),
        ("apply", "llmops", None),
        ("apply", "llmops", None),
    ]

    kube.calls.clear()
    applier.apply(vllm(2))  # fixed again: ours again
    applier.apply(vllm())  # so the next release reads and hands over again
    assert [c[0] for c in kube.calls] == ["apply", "get", "apply", "apply"]

    kube.calls.clear()
    Applier(kube).apply(vllm())  # a restarted operator remembers nothing: it reads once
    assert kube.calls[0] == ("get", "bot-1-vllm", None)


def test_a_refused_apply_is_not_remembered_as_a_release() -> None:
    import pytest

    from llmops.operators.apply import Applier

    kube = CountingKube()
    applier = Applier(kube)  # type: ignore[arg-type]
    applier.apply(vllm(3))
    kube.fail = True
    with pytest.raises(RuntimeError):
        applier.apply(vllm())
    kube.fail = False
    kube.calls.clear()
    applier.apply(vllm())  # still ours: read and handed over
    assert [c[:2] for c in kube.calls] == [
        ("get", "bot-1-vllm"),
        ("apply", "llmops-handover"),
        ("apply", "llmops"),
    ]
    applier.apply(vllm(), dry_run=True)
    kube.calls.clear()
    applier.apply(vllm())  # a dry run changes nothing it remembers
    assert kube.calls == [("apply", "llmops", None)]


def test_an_apply_of_replicas_that_failed_on_our_side_is_taken_as_stored() -> None:
    """An apply that sets replicas and fails on our side (a read timeout, a dropped connection) may
    have been stored: we may own replicas again, so the next apply that leaves them out reads."""
    import pytest

    from llmops.operators.apply import Applier

    kube = CountingKube()
    applier = Applier(kube)  # type: ignore[arg-type]
    applier.apply(vllm())
    applier.apply(vllm())
    kube.fail = True
    with pytest.raises(RuntimeError):
        applier.apply(vllm(3))
    kube.fail = False
    kube.calls.clear()
    applier.apply(vllm())
    assert [c[:2] for c in kube.calls] == [
        ("get", "bot-1-vllm"),
        ("apply", "llmops-handover"),
        ("apply", "llmops"),
    ]


def test_the_released_children_are_bounded() -> None:
    from llmops.operators.apply import Applier

    kube = CountingKube(owner="kube-controller-manager")
    applier = Applier(kube, released_size=2)  # type: ignore[arg-type]
    for name in ("a", "b", "c"):
        applier.apply(vllm(name=name))
    kube.calls.clear()
    applier.apply(vllm(name="c"))
    applier.apply(vllm(name="a"))  # the least recent, forgotten: read again
    assert [c[:2] for c in kube.calls] == [("apply", "llmops"), ("get", "a"), ("apply", "llmops")]


def test_a_release_is_trusted_for_a_bounded_time_then_read_again(monkeypatch) -> None:
    """Another writer with our field manager (a second operator, a person's `kubectl apply
    --server-side --field-manager=llmops`) can own replicas again without this process knowing: a
    release is trusted for RELEASE_TRUSTED_S after the apply that made it, however often the child
    is applied meanwhile, then the live object is read again and the running value handed over."""
    from llmops.operators import apply as mod

    now = [1000.0]
    monkeypatch.setattr(mod.time, "monotonic", lambda: now[0])
    kube = CountingKube()
    applier = mod.Applier(kube)  # type: ignore[arg-type]
    applier.apply(vllm())  # read, handed over, released
    for _ in range(3):  # applied again and again within the window: no read, the window not renewed
        now[0] += mod.RELEASE_TRUSTED_S / 4
        applier.apply(vllm())
    kube.calls.clear()
    now[0] += mod.RELEASE_TRUSTED_S / 4  # the window of the first apply is over
    applier.apply(vllm())
    assert kube.calls == [
        ("get", "bot-1-vllm", None),
        ("apply", "llmops-handover", 3),
        ("apply", "llmops", None),
    ]
    kube.calls.clear()
    applier.apply(vllm())  # a new window from that apply
    assert kube.calls == [("apply", "llmops", None)]


def test_a_hand_over_refused_as_changed_at_every_read_gives_up_after_its_attempts() -> None:
    """A hand-over whose object changes between each read and apply (409 each time) reads again up to
    HANDOVER_ATTEMPTS times, then raises Conflict (the reconcile is retried), and the apply that would
    have left replicas out is not sent. The real 409: tests/cluster/modeldeployment/test_autoscaling.py
    ::test_a_scale_between_the_hand_overs_read_and_its_apply_is_kept."""
    import pytest

    from llmops.operators.apply import HANDOVER_ATTEMPTS, Applier
    from llmops.operators.kube import Conflict

    class ChangingKube(CountingKube):
        def apply(
            self, manifest: dict, *, field_manager: str, force: bool = True, dry_run: bool = False
        ) -> dict:
            if field_manager == "llmops-handover":
                self.calls.append(("apply", field_manager, None))
                raise Conflict(409, "Conflict", "the object has been modified")
            return super().apply(manifest, field_manager=field_manager, force=force, dry_run=dry_run)

    kube = ChangingKube()
    with pytest.raises(Conflict):
        Applier(kube).apply(vllm())  # type: ignore[arg-type]
    assert [c[0] for c in kube.calls] == ["get", "apply"] * HANDOVER_ATTEMPTS
