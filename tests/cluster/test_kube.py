"""The operator's client (llmops/operators/kube.py) against the real apiserver: server-side apply with
our field manager, forced and not, dry runs, status merge patches, lists by label, deletes, and the
errors the reconcile code catches (NotFound, Conflict, KindNotServed, ApiError with the status)."""

from __future__ import annotations

import pytest

from llmops.operators.kube import ApiError, Conflict, KindNotServed, Kube, NotFound


def configmap(name: str, namespace: str, **data: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": "kube-test"}},
        "data": data,
    }


def test_apply_get_list_patch_delete_and_errors(kube: Kube, namespace: str, llmops_crds: list[str]) -> None:
    stored = kube.apply(configmap("a", namespace, x="1"), field_manager="llmops")
    assert stored["data"] == {"x": "1"} and stored["metadata"]["uid"]
    managers = {(m["manager"], m["operation"]) for m in stored["metadata"]["managedFields"]}
    assert managers == {("llmops", "Apply")}

    # Another manager's apply of the same field conflicts unless forced; a dry run changes nothing.
    with pytest.raises(Conflict):
        kube.apply(configmap("a", namespace, x="2"), field_manager="other", force=False)
    dry = kube.apply(configmap("a", namespace, x="3"), field_manager="llmops", dry_run=True)
    assert dry["data"] == {"x": "3"} and kube.get("v1", "ConfigMap", "a", namespace)["data"] == {"x": "1"}
    assert kube.apply(configmap("a", namespace, x="2"), field_manager="other")["data"] == {"x": "2"}

    with pytest.raises(Conflict):
        kube.create(configmap("a", namespace))
    kube.create(configmap("b", namespace, y="1"))
    listed = kube.list("v1", "ConfigMap", namespace, label_selector="app=kube-test")
    assert sorted(c["metadata"]["name"] for c in listed) == ["a", "b"]
    assert kube.list("v1", "ConfigMap", namespace, label_selector="app=none") == []

    patched = kube.merge_patch("v1", "ConfigMap", "b", namespace, {"metadata": {"annotations": {"k": "v"}}})
    assert patched["metadata"]["annotations"] == {"k": "v"}

    # A custom resource and its status subresource.
    md = {
        "apiVersion": "llmops.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "m", "namespace": namespace},
        "spec": {"registry": {"local": {"path": "/r"}}, "model": {"name": "x", "version": "1"}},
    }
    with pytest.raises(ApiError) as refused:
        kube.apply({**md, "spec": {**md["spec"], "model": {"name": "x"}}}, field_manager="llmops")
    assert refused.value.status == 422 and "spec.model" in refused.value.message, refused.value
    kube.apply(md, field_manager="llmops")
    after = kube.merge_patch(
        md["apiVersion"], md["kind"], "m", namespace, {"status": {"phase": "Pending"}}, status=True
    )
    assert after["status"]["phase"] == "Pending"

    kube.delete("v1", "ConfigMap", "b", namespace)
    with pytest.raises(NotFound):
        kube.delete("v1", "ConfigMap", "b", namespace)
    with pytest.raises(NotFound):
        kube.get("v1", "ConfigMap", "b", namespace)
    with pytest.raises(KindNotServed):
        kube.get("widgets.example.com/v1", "Widget", "s", namespace)
    with pytest.raises(KindNotServed):
        kube.get("v1", "NoSuchKind", "s", namespace)
    assert kube.version().startswith("v1.")
    print("kube: 9 kinds of request and 5 kinds of error checked on the real apiserver")
