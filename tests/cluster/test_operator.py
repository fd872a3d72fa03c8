"""The operator process against the real apiserver: status conventions, Events, the validating
webhook, metrics and probes, graceful shutdown, and survival of objects it did not expect."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
import yaml

from llmops.api import MODEL_DEPLOYMENT
from llmops.dev.cluster import LocalCluster
from llmops.operators.kube import UPDATE_MANAGER
from llmops.operators.main import BOOKKEEPING_BUDGET, LIST_PAGE_SIZE, PREFIX
from llmops.operators.outcome import Outcome
from llmops.operators.runtime import Kind
from tests.bounds import at_bounds, size
from tests.helpers import eventually, http_get, operator_in_thread, operator_process, when_webhooks_answer
from tests.invalid_objects import CRDS
from tests.invalid_objects import EXAMPLES as SAMPLES

pytestmark = pytest.mark.usefixtures("llmops_crds")

EXAMPLES = Path(__file__).parents[2] / "examples"
SECRETS = [
    "dataset-credentials",
    "payload-credentials",
    "registry-credentials",
    "archive-credentials",
    "support-bot-api-keys",
    "hf-token",
]


def get(cluster: LocalCluster, kind: str, name: str, namespace: str) -> dict:
    return json.loads(
        cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json", "--show-managed-fields").stdout
    )


def with_status(cluster: LocalCluster, kind: str, name: str, namespace: str, timeout: float = 60) -> dict:
    """The object once the operator has written its status (`status.observedGeneration` set)."""
    return eventually(
        lambda: (o := get(cluster, kind, name, namespace)).get("status", {}).get("observedGeneration") and o,
        timeout=timeout,
    )


def create_secrets(cluster: LocalCluster, namespace: str) -> None:
    for name in SECRETS:
        cluster.kubectl("create", "secret", "generic", name, "-n", namespace, "--from-literal=key=value")


def test_operator_writes_full_status_and_serves_probes_and_metrics(
    cluster: LocalCluster, namespace: str
) -> None:
    create_secrets(cluster, namespace)
    with operator_process(cluster, namespace) as op:
        for example in sorted(EXAMPLES.glob("*.yaml")):
            cluster.kubectl("apply", "-n", namespace, "-f", str(example))
        names = {
            (d["kind"], d["metadata"]["name"])
            for d in map(yaml.safe_load, map(Path.read_text, EXAMPLES.glob("*.yaml")))
        }

        def observed() -> list[dict]:
            objs = [get(cluster, kind, name, namespace) for kind, name in names]
            done = [
                o
                for o in objs
                if o.get("status", {}).get("observedGeneration") == o["metadata"]["generation"]
            ]
            return objs if len(done) == len(objs) else []

        for obj in eventually(observed):
            every = {c["type"]: c for c in obj["status"]["conditions"]}
            assert all(c["observedGeneration"] == obj["metadata"]["generation"] for c in every.values())
            # The kinds' own conditions beside the three (a ModelDeployment's Suspended, always there).
            own = {"ModelDeployment": {"Suspended"}}.get(obj["kind"], set())
            assert set(every) == {"Ready", "Reconciling", "Stalled"} | own, every
            conditions = {t: c for t, c in every.items() if t in ("Ready", "Reconciling", "Stalled")}
            # One state at a time, as kstatus reads it: Ready, Reconciling or Stalled is True.
            assert [c["status"] for c in conditions.values()].count("True") == 1
            # The examples name registries and Ray clusters that do not exist here: nobody is Ready.
            assert conditions["Ready"]["status"] != "True" and obj["status"]["phase"]
            assert conditions["Ready"]["message"]
            # Every write of the operator to the object (kopf's patches, our status and requeue patches)
            # under one field manager: one managedFields entry for the object, one for its status.
            ours = {
                (m["manager"], m.get("subresource", ""))
                for m in obj["metadata"]["managedFields"]
                if not m["manager"].startswith("kubectl")
            }
            assert ours <= {(UPDATE_MANAGER, ""), (UPDATE_MANAGER, "status")}, ours

        # `kubectl get llmops` lists both kinds through the category.
        listed = cluster.kubectl("get", "llmops", "-n", namespace).stdout
        assert "trainingjob.llmops.io/" in listed or "support-bot" in listed

        status, body = http_get(f"http://127.0.0.1:{op['health']}/healthz")
        assert status == 200 and "v1.37" in body
        _, metrics = http_get(f"http://127.0.0.1:{op['metrics']}/metrics")
        assert 'llmops_operator_reconciles_total{kind="ModelDeployment",outcome=' in metrics
        assert 'llmops_operator_reconciles_total{kind="TrainingJob",outcome=' in metrics
        assert "llmops_operator_reconcile_duration_seconds_bucket" in metrics
        op["proc"].send_signal(signal.SIGTERM)
        assert op["proc"].wait(60) == 0  # graceful shutdown
    logs = [json.loads(line) for line in op["log"].read_text().splitlines() if line.startswith("{")]
    assert logs, "the operator logs JSON lines"
    assert "key=value" not in op["log"].read_text() and "dmFsdWU" not in op["log"].read_text()


ANNOTATIONS_LIMIT = 256 * 1024  # the apiserver's bound on all of an object's annotations together


def test_objects_at_their_schema_bounds_get_a_status(cluster: LocalCluster, namespace: str) -> None:
    """Every kind at its CRD's size bounds (strings in 4-byte characters, which kopf's JSON would write
    as 12) is accepted, reconciled and gets its status: our bookkeeping in `metadata.annotations` stays
    within BOOKKEEPING_BUDGET whatever the size of the spec, and kopf's record of what it handled is a
    digest in `status.lastHandledConfiguration`. (Before, kopf kept a copy of the spec in an
    annotation, and the apiserver refused every write once the copy passed 256 KiB.)"""
    create_secrets(cluster, namespace)
    objects = []
    for kind in sorted(CRDS):
        body = max((at_bounds(kind, e.body, e.crd.schema) for e in SAMPLES if e.crd.kind == kind), key=size)
        body["metadata"] = {"name": f"{kind.lower()}-at-bounds"}
        # What a copy in JSON would take; a ModelRetirement's spec stays under the limit at its bounds
        # (no long lists), and still gets its status here.
        assert len(json.dumps(body["spec"])) > ANNOTATIONS_LIMIT or kind == "ModelRetirement", kind
        objects.append(body)
    with operator_process(cluster, namespace):
        for body in objects:
            # Server-side: a client-side apply keeps its own copy in an annotation (kubectl's limit).
            cluster.kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input=json.dumps(body))
        for body in objects:
            kind, name = body["kind"].lower(), body["metadata"]["name"]
            obj = eventually(
                lambda kind=kind, name=name: (
                    (o := get(cluster, kind, name, namespace)).get("status", {}).get("observedGeneration")
                    == o["metadata"]["generation"]
                    and o
                ),
                timeout=120,
            )
            assert obj["status"]["conditions"] and obj["status"]["phase"]
            annotations = obj["metadata"].get("annotations") or {}
            ours = {k: v for k, v in annotations.items() if k.startswith(f"{PREFIX}/")}
            assert f"{PREFIX}/last-handled-configuration" not in ours
            assert set(json.loads(obj["status"]["lastHandledConfiguration"])) == {"sha256"}
            assert sum(len(k) + len(v) for k, v in ours.items()) <= BOOKKEEPING_BUDGET, ours


def test_webhook_refuses_references_to_missing_secrets(cluster: LocalCluster, namespace: str) -> None:
    example = (EXAMPLES / "modeldeployment-single.yaml").read_text()
    with operator_process(cluster, namespace, "--webhook"):
        config = "validatingwebhookconfiguration/validate.llmops.io"
        when_webhooks_answer(cluster, namespace, example, lambda r: r.returncode)
        refused = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=example, check=False)
        assert refused.returncode, refused.stdout
        assert "spec.gateway.apiKeysSecretRef.name" in refused.stderr
        assert "support-bot-api-keys" in refused.stderr and "does not exist" in refused.stderr
        assert "spec.registry.s3.credentialsSecretRef.name" in refused.stderr  # every missing one is named
        for secret in ("support-bot-api-keys", "registry-credentials"):
            cluster.kubectl("create", "secret", "generic", secret, "-n", namespace, "--from-literal=k=v")
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=example)
    # On shutdown the operator removes its webhook configuration, so nothing is refused while it is away.
    assert cluster.kubectl("get", config, check=False).returncode != 0


def test_operator_survives_objects_it_did_not_expect(cluster: LocalCluster, namespace: str) -> None:
    """A looser CRD (as during an upgrade) lets through an object our models reject."""
    crd = get(cluster, "crd", MODEL_DEPLOYMENT.crd_name, "")
    loose = json.loads(json.dumps(crd))
    for key in ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields"):
        loose["metadata"].pop(key, None)
    loose.pop("status", None)
    schema = loose["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    schema["spec"] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    cluster.kubectl("replace", "-f", "-", input=json.dumps(loose))
    try:
        strange = {
            "apiVersion": "llmops.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "strange"},
            "spec": {"model": {"name": 42, "version": ["x"]}, "engine": "vllm", "surprise": {"a": 1}},
        }
        with operator_process(cluster, namespace) as op:
            cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(strange))
            obj = with_status(cluster, "md", "strange", namespace)
            stalled = next(c for c in obj["status"]["conditions"] if c["type"] == "Stalled")
            assert stalled["status"] == "True" and stalled["reason"] == "InvalidSpec"
            assert "spec.model.name" in stalled["message"] and "spec.surprise" in stalled["message"]
            events = eventually(
                lambda: json.loads(
                    cluster.kubectl(
                        "get",
                        "events",
                        "-n",
                        namespace,
                        "--field-selector",
                        "involvedObject.name=strange",
                        "-o",
                        "json",
                    ).stdout
                )["items"]
            )
            assert events[0]["reason"] == "InvalidSpec" and events[0]["type"] == "Warning"
            assert op["proc"].poll() is None  # still running
            # and it keeps reconciling well-formed objects
            good = yaml.safe_load((EXAMPLES / "modeldeployment-scale-to-zero.yaml").read_text())
            cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(good))
            eventually(lambda: get(cluster, "md", good["metadata"]["name"], namespace).get("status"))
    finally:
        cluster.kubectl("delete", "md", "strange", "-n", namespace, "--wait=false", check=False)
        crd_again = get(cluster, "crd", MODEL_DEPLOYMENT.crd_name, "")
        crd["metadata"]["resourceVersion"] = crd_again["metadata"]["resourceVersion"]
        crd.pop("status", None)
        cluster.kubectl("replace", "-f", "-", input=json.dumps(crd))


@pytest.fixture
def in_process_operator(cluster: LocalCluster, namespace: str, monkeypatch: pytest.MonkeyPatch):
    """The real runtime with a test kind whose reconcile we control, in a thread of this process."""
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    answers: dict[str, Outcome] = {}

    def reconcile(spec, ctx) -> Outcome:
        return answers.get(ctx.name, Outcome("reconciling", "Pending", "Working", "working on it"))

    with operator_in_thread(namespace, [Kind(MODEL_DEPLOYMENT, reconcile)]):
        yield answers


def test_kubectl_wait_for_ready_and_transition_times(
    cluster: LocalCluster, namespace: str, in_process_operator: dict
) -> None:
    answers = in_process_operator
    example = yaml.safe_load((EXAMPLES / "modeldeployment-scale-to-zero.yaml").read_text())
    name = example["metadata"]["name"]
    answers[name] = Outcome("ready", "Ready", "Serving", "all replicas ready")
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(example))
    waited = cluster.kubectl("wait", f"md/{name}", "-n", namespace, "--for=condition=Ready", "--timeout=60s")
    assert "condition met" in waited.stdout
    first = get(cluster, "md", name, namespace)["status"]["conditions"]

    # A spec change with the same outcome: observedGeneration moves, lastTransitionTime does not.
    cluster.kubectl(
        "patch",
        "md",
        name,
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"autoscaling": {"maxReplicas": 5}}}),
    )
    obj = eventually(
        lambda: (o := get(cluster, "md", name, namespace))["status"]["observedGeneration"] == 2 and o
    )
    again = {c["type"]: c for c in obj["status"]["conditions"]}
    assert all(again[c["type"]]["lastTransitionTime"] == c["lastTransitionTime"] for c in first)
    assert again["Ready"]["observedGeneration"] == 2

    # A real transition moves it, and kstatus' reading follows: Stalled=True, Ready=False.
    answers[name] = Outcome("stalled", "Failed", "VersionNotFound", "model version 9 is not in the registry")
    cluster.kubectl("annotate", "md", name, "-n", namespace, "touch=1")
    cluster.kubectl("wait", f"md/{name}", "-n", namespace, "--for=condition=Stalled", "--timeout=60s")
    final = {c["type"]: c for c in get(cluster, "md", name, namespace)["status"]["conditions"]}
    assert final["Ready"]["status"] == "False" and final["Ready"]["reason"] == "VersionNotFound"


def test_a_start_lists_in_pages_and_reconciles_every_object(
    cluster: LocalCluster, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A (re)start with more objects than one page (LIST_PAGE_SIZE) lists them in pages, so no whole
    list of a resource is held at once (docs/operations.md, "Sizing the operator"), and every object
    on every page is reconciled. The list requests are counted where kopf sends them (its `api.get`,
    wrapped in this process): the apiserver's own request counter has no client label, and the
    namespace controller lists every kind while earlier tests' namespaces go away. With 20 places
    (main.WORKER_LIMIT) the objects beyond them wait outside kopf (operators.backlog), and still every
    one is reconciled, through kopf's patches and its waits for them to come back by the watch."""
    count = 2 * LIST_PAGE_SIZE + 1
    spec = {
        "model": {"name": "paged", "version": "1"},
        "registry": {"local": {"path": "/models"}},
        "resources": {"cpu": "100m", "memory": "128Mi"},
    }
    items = [
        {
            "apiVersion": "llmops.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": f"paged-{i:04d}"},
            "spec": spec,
        }
        for i in range(count)
    ]
    cluster.kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}),
    )
    from kopf._cogs.clients import api

    sent = api.get
    pages: list[tuple[str, int]] = []  # (url, objects on the page) of each list of our kind

    async def counted(url: str, **kwargs: object) -> object:
        answer = await sent(url, **kwargs)
        if f"/{MODEL_DEPLOYMENT.plural}?" in url and "watch=" not in url:
            pages.append((url, len(answer.get("items", []))))
        return answer

    monkeypatch.setattr(api, "get", counted)
    from llmops.operators import backlog, main

    monkeypatch.setattr(main, "WORKER_LIMIT", 20)
    admit = backlog.Backlog.admit
    most_held = [0]

    def counted_admit(self: backlog.Backlog, event: object) -> object:
        passed = admit(self, event)
        most_held[0] = max(most_held[0], len(self))
        return passed

    monkeypatch.setattr(backlog.Backlog, "admit", counted_admit)

    def observed() -> int:
        listed = json.loads(cluster.kubectl("get", "md", "-n", namespace, "-o", "json").stdout)["items"]
        return sum(o.get("status", {}).get("observedGeneration") == 1 for o in listed)

    reconcile = lambda spec, ctx: Outcome("ready", "Ready", "Serving", "ok")  # noqa: E731
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    with operator_in_thread(namespace, [Kind(MODEL_DEPLOYMENT, reconcile)]):
        eventually(lambda: observed() == count, timeout=240)
    # pages of LIST_PAGE_SIZE: 100, 100, 1, each after the first continuing the one before
    assert [n for _, n in pages] == [LIST_PAGE_SIZE, LIST_PAGE_SIZE, 1]
    assert all(f"limit={LIST_PAGE_SIZE}" in url for url, _ in pages)
    assert ["continue=" in url for url, _ in pages] == [False, True, True]
    assert most_held[0] >= count - 2 * 20  # all but about the places waited outside kopf


def reconciles(metrics_port: int, kind: str) -> float:
    """llmops_operator_reconciles_total of `kind`, every outcome, as the operator's /metrics says."""
    _, text = http_get(f"http://127.0.0.1:{metrics_port}/metrics")
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("llmops_operator_reconciles_total{") and f'kind="{kind}"' in line
    )


def test_crds_older_than_the_operator_keep_its_record_in_the_annotation(
    cluster: LocalCluster, namespace: str
) -> None:
    """An upgrade of the operator without its CRDs (Helm never upgrades them): the installed status
    schema has no `lastHandledConfiguration`, so the apiserver would drop kopf's record from every status
    write and each write would look like a new object. The operator says so in its log and keeps the
    record in its annotation, as before: the object is reconciled once, not again and again."""
    crd_file = Path(__file__).parents[2] / "crds" / "llmops.io_modeldeployments.yaml"
    crd = yaml.safe_load(crd_file.read_text())
    old = json.loads(json.dumps(crd))
    for version in old["spec"]["versions"]:
        del version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"][
            "lastHandledConfiguration"
        ]
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=json.dumps(old))
    try:
        md = {
            "apiVersion": "llmops.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "older-crds"},
            "spec": {
                "model": {"name": "bot", "version": "1"},
                "registry": {"local": {"path": "/nonexistent-registry"}},
                "resources": {"cpu": 1, "memory": "2Gi"},
            },
        }
        with operator_process(cluster, namespace) as op:
            cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(md))
            obj = with_status(cluster, "modeldeployment", "older-crds", namespace)
            annotations = obj["metadata"].get("annotations") or {}
            assert f"{PREFIX}/last-handled-configuration" in annotations
            assert "lastHandledConfiguration" not in obj["status"]
            time.sleep(10)
            count = reconciles(op["metrics"], "ModelDeployment")
            print(f"reconciles, 10 s after the status was first written: {count:.0f}")
            # Once: a Stalled object is looked at again only after STALLED_RETRY_SECONDS (60 s). With its
            # record lost at every status write, each write would look like a new object to kopf.
            assert count == 1
            assert "are older than this operator" in op["log"].read_text()
    finally:
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd_file))
