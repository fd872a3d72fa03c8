"""A mixed fleet of llmops objects for the operator-kill test (test_operator_kill.py): what it creates,
changes and deletes, what each object must end as, and the counts of what must never happen
(duplicate children, orphans, duplicate Ray submissions, duplicate model versions).

What is real and what is played, per kind (no kubelet and no Ray run here):
- ModelDeployment: the real operator on the real apiserver; kwok makes the pods Ready; the registry
  is a local directory of tiny versions (never served); canary analysis reads a real Prometheus that
  scrapes a gateway-shaped exporter (tests/cluster/modeldeployment/support.py GatewayMetrics) under
  each canary deployment's labels, so canaries step and promote on real samples.
- TrainingJob (runtime kuberay): the operator creates the real RayJob (the real KubeRay CRD); this
  module plays KubeRay (the RayJob's status) and the workload (report.json in the work folder, in a
  real MinIO bucket), as tests/cluster/test_trainingjob.py does. Ray Jobs API submissions are not
  exercised here (no Ray head): a Ray submission is a RayJob, counted per TrainingJob.
- RetrainPolicy: real, on a ModelDeployment whose registry is that MinIO bucket; runs are asked for
  with the manual-trigger annotation; its TrainingJobs are children that run as above.
- ModelRetirement: real, retiring versions no deployment serves from the local registry into a real
  Object-Lock bucket in MinIO (tests/cluster/modelretirement/conftest.py `archive`).
No model version is registered by an operator (the workload registers, and it does not run here), so
"duplicate model versions" is counted in the registries (a version number listed twice, a version
registered by the run) and in the archive (one receipt per retired version).
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import dynamic
from kubernetes.dynamic.exceptions import ConflictError, NotFoundError

from llmops import registry as reg
from llmops.api import API_VERSION
from llmops.api.common import ObjectStorageLocation
from llmops.api.retrainpolicy import MANUAL_TRIGGER_ANNOTATION
from llmops.api.trainingjob import GateResult, ModelVersionRef
from llmops.operators.trainingjob import builders as tj_builders
from llmops.storage import Credentials, LocalStore, open_store
from llmops.workload import REPORT, RunReport

MODEL = "support-bot"
S3_MODEL = "tiny"
OWNER_KINDS = ("ModelDeployment", "TrainingJob", "RetrainPolicy")
# Every kind an llmops object owns here (ScaledObject, ServiceMonitor: their CRDs are not installed,
# and no spec here asks for them).
CHILD_KINDS = (
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("policy/v1", "PodDisruptionBudget"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("ray.io/v1", "RayJob"),
    (API_VERSION, "TrainingJob"),
)
CANARY = {
    "model": {"name": MODEL, "version": "2"},
    "weight": 20,
    "steps": [60],
    "analysis": {"intervalSeconds": 10, "maxErrorRate": 0.05, "maxLatencyRatio": 2.0},
}


@dataclass(frozen=True)
class Sizes:
    """How many objects of each kind; `kills`: SIGKILLs of the operator during the churn."""

    deployments: int
    canaries: int  # of the deployments, those that get a canary (promoted in the end)
    bumps: int  # of the deployments, those whose version changes (1 -> 3)
    autoscaled: int  # of the deployments, those that get an autoscaler (a new child)
    deleted_deployments: int
    training_jobs: int
    deleted_training_jobs: int
    policies: int
    deleted_policies: int
    retirements: int
    kills: int

    @property
    def objects(self) -> int:
        """Objects the test makes (the policies' runs come on top), the policies' target included."""
        return self.deployments + 1 + self.training_jobs + self.policies + self.retirements


@dataclass
class Fleet:
    """The objects of one run and what each must end as. `seed` draws the order of the changes and the
    kill times; the same seed replays the same run (the machine's timing aside)."""

    sizes: Sizes
    seed: int
    namespace: str
    api: Any  # kubernetes ApiClient
    local_registry: Path
    s3_registry: dict  # an ObjectStorageLocation as a dict (s3 with credentialsSecretRef)
    credentials: Credentials
    archive: dict  # tests/cluster/modelretirement/conftest.py `archive`
    rng: random.Random = field(init=False)
    client: dynamic.DynamicClient = field(init=False)
    expected_md: dict[str, str] = field(default_factory=dict)  # name -> the version it serves at the end
    canaries: list[str] = field(default_factory=list)
    deleted: dict[str, set[str]] = field(default_factory=lambda: {k: set() for k in OWNER_KINDS})
    training_jobs: list[str] = field(default_factory=list)
    policies: dict[str, str] = field(default_factory=dict)  # name -> its manual request
    retired: list[str] = field(default_factory=list)
    versions_before: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.client = dynamic.DynamicClient(self.api)

    # -- writing ------------------------------------------------------------------------------

    def resource(self, api_version: str, kind: str) -> Any:
        return self.client.resources.get(api_version=api_version, kind=kind)

    def apply(self, body: dict) -> None:
        body = {**body, "metadata": {**body["metadata"], "namespace": self.namespace}}
        self.client.server_side_apply(
            self.resource(body["apiVersion"], body["kind"]),
            body=body,
            namespace=self.namespace,
            field_manager="kill-test",
            force_conflicts=True,
        )

    def delete(self, kind: str, name: str) -> None:
        with contextlib.suppress(NotFoundError):
            self.resource(API_VERSION, kind).delete(name=name, namespace=self.namespace)
        self.deleted[kind].add(name)

    def deployment(
        self, name: str, version: str = "1", autoscaled: bool = False, canary: bool = False
    ) -> dict:
        spec: dict = {
            "model": {"name": MODEL, "version": version},
            "registry": {"local": {"path": str(self.local_registry)}},
            "resources": {"cpu": "100m", "memory": "128Mi"},
            "gateway": {"replicas": 1},
        }
        if autoscaled:  # a new child: a HorizontalPodAutoscaler
            spec["autoscaling"] = {"engine": "hpa", "minReplicas": 1, "maxReplicas": 3, "targetQueueDepth": 4}
        if canary:
            spec["rollout"] = {"canary": CANARY}
        return {
            "apiVersion": API_VERSION,
            "kind": "ModelDeployment",
            "metadata": {"name": name},
            "spec": spec,
        }

    def training_job(self, name: str) -> dict:
        """A small pre-training job (tests/cluster/test_trainingjob.py's) into the MinIO registry."""
        return {
            "apiVersion": API_VERSION,
            "kind": "TrainingJob",
            "metadata": {"name": name},
            "spec": training_spec(self.s3_registry),
        }

    def policy(self, name: str) -> dict:
        return {
            "apiVersion": API_VERSION,
            "kind": "RetrainPolicy",
            "metadata": {"name": name, "annotations": {MANUAL_TRIGGER_ANNOTATION: f"run-of-{name}"}},
            "spec": {
                "modelDeployment": "rp-target",
                "trainingJobTemplate": {"spec": training_spec(self.s3_registry)},
                "promotion": {
                    "enabled": False,
                    "metrics": [
                        {"metric": "perplexity", "greaterIsBetter": False, "minRelativeChange": 0.05}
                    ],
                },
            },
        }

    def retirement(self, name: str, version: str) -> dict:
        return {
            "apiVersion": API_VERSION,
            "kind": "ModelRetirement",
            "metadata": {"name": name},
            "spec": {
                "model": {"name": MODEL, "version": version},
                "registry": {"local": {"path": str(self.local_registry)}},
                "reason": "superseded",
                "archive": {
                    "location": self.archive["location"],
                    "retention": {"mode": "Governance", "days": 1},
                },
            },
        }

    # -- the churn ----------------------------------------------------------------------------

    def waves(self) -> list[list[tuple[str, Any]]]:
        """The changes in three waves (create; update; delete and update again), each a shuffled list
        of (what, callable), drawn from the seed."""
        s = self.sizes
        mds = [f"md-{i:03d}" for i in range(s.deployments)]
        order = self.rng.sample(mds, len(mds))
        canaries = self.canaries = order[: s.canaries]
        bumps = order[s.canaries : s.canaries + s.bumps]
        autoscaled = order[s.canaries + s.bumps : s.canaries + s.bumps + s.autoscaled]
        doomed = order[len(order) - s.deleted_deployments :]
        tjs = [f"tj-{i:03d}" for i in range(s.training_jobs)]
        doomed_tjs = self.rng.sample(tjs, s.deleted_training_jobs)
        rps = [f"rp-{i:03d}" for i in range(s.policies)]
        doomed_rps = self.rng.sample(rps, s.deleted_policies)
        first_retired = 4  # versions 1-3 are served; 4.. are registered for the retirements
        create: list[tuple[str, Any]] = []
        for name in mds:
            self.expected_md[name] = "1"
            create.append((f"create md {name}", lambda n=name: self.apply(self.deployment(n))))
        create.append(("create md rp-target", lambda: self.apply(self.target())))
        for name in tjs:
            self.training_jobs.append(name)
            create.append((f"create tj {name}", lambda n=name: self.apply(self.training_job(n))))
        for i in range(s.retirements):
            version = str(first_retired + i)
            self.retired.append(version)
            create.append(
                (
                    f"create mr mr-{i:03d}",
                    lambda i=i, v=version: self.apply(self.retirement(f"mr-{i:03d}", v)),
                )
            )
        update: list[tuple[str, Any]] = []
        for name in canaries:
            self.expected_md[name] = "2"  # promoted
            update.append((f"canary md {name}", lambda n=name: self.apply(self.deployment(n, canary=True))))
        for name in bumps:
            self.expected_md[name] = "3"
            update.append((f"version md {name}", lambda n=name: self.apply(self.deployment(n, "3"))))
        for name in autoscaled:
            update.append(
                (f"autoscale md {name}", lambda n=name: self.apply(self.deployment(n, autoscaled=True)))
            )
        for name in rps:
            self.policies[name] = f"run-of-{name}"
            update.append((f"create rp {name}", lambda n=name: self.apply(self.policy(n))))
        last: list[tuple[str, Any]] = []
        for name in doomed:
            self.expected_md.pop(name, None)
            last.append((f"delete md {name}", lambda n=name: self.delete("ModelDeployment", n)))
        for name in doomed_tjs:
            self.training_jobs.remove(name)
            last.append((f"delete tj {name}", lambda n=name: self.delete("TrainingJob", n)))
        for name in doomed_rps:
            self.policies.pop(name)
            last.append((f"delete rp {name}", lambda n=name: self.delete("RetrainPolicy", n)))
        # A canary changed again before it settled: its spec bumps the stable version under it.
        for name in canaries[: max(1, len(canaries) // 3)]:
            if name in self.expected_md:
                self.expected_md[name] = "3"
                last.append((f"drop canary md {name}", lambda n=name: self.apply(self.deployment(n, "3"))))
        for wave in (create, update, last):
            self.rng.shuffle(wave)
        return [create, update, last]

    def target(self) -> dict:
        """The RetrainPolicies' ModelDeployment: model `tiny` from the MinIO registry they train into."""
        body = self.deployment("rp-target")
        body["spec"]["model"] = {"name": S3_MODEL, "version": "1"}
        body["spec"]["registry"] = self.s3_registry
        return body

    def kill_times(self, span: float) -> list[float]:
        """`sizes.kills` moments in (2 s, span) after the churn starts, from the seed."""
        return sorted(self.rng.uniform(2.0, span) for _ in range(self.sizes.kills))

    # -- reading ------------------------------------------------------------------------------

    def items(self, api_version: str, kind: str) -> list[dict]:
        try:
            return [i.to_dict() for i in self.resource(api_version, kind).get(namespace=self.namespace).items]
        except NotFoundError:
            return []

    def pending(self) -> list[str]:
        """What has not reached its end state yet (empty when everything has)."""
        out: list[str] = []
        mds = {m["metadata"]["name"]: m for m in self.items(API_VERSION, "ModelDeployment")}
        for name, version in {**self.expected_md, "rp-target": "1"}.items():
            md = mds.get(name)
            if md is None:
                out.append(f"md {name}: missing")
                continue
            status = md.get("status") or {}
            ready = condition(md, "Ready").get("status") == "True"
            served = [(v["version"], v["weight"]) for v in status.get("versions", [])]
            observed = status.get("observedGeneration") == md["metadata"]["generation"]
            if not (ready and observed and served == [(version, 100)]):
                out.append(f"md {name}: ready={ready} observed={observed} serves {served}, wants {version}")
        for name in self.deleted["ModelDeployment"]:
            if name in mds:
                out.append(f"md {name}: not deleted yet")
        tjs = {t["metadata"]["name"]: t for t in self.items(API_VERSION, "TrainingJob")}
        for name in self.training_jobs:
            phase = ((tjs.get(name) or {}).get("status") or {}).get("phase")
            if phase != "Succeeded":
                out.append(f"tj {name}: {phase}")
        rps = {r["metadata"]["name"]: r for r in self.items(API_VERSION, "RetrainPolicy")}
        for name in self.policies:
            status = (rps.get(name) or {}).get("status") or {}
            runs = [r for r in status.get("runs", []) if r.get("phase") == "Succeeded"]
            if status.get("phase") != "Watching" or len(runs) != 1:
                why = condition(rps.get(name), "Ready")
                out.append(
                    f"rp {name}: {status.get('phase')} with {len(runs)} finished runs"
                    f" ({why.get('reason')}: {why.get('message')})"
                )
        mrs = {r["metadata"]["name"]: r for r in self.items(API_VERSION, "ModelRetirement")}
        for i in range(len(self.retired)):
            phase = ((mrs.get(f"mr-{i:03d}") or {}).get("status") or {}).get("phase")
            if phase != "Retired":
                out.append(f"mr mr-{i:03d}: {phase}")
        out += [f"orphan {o}" for o in self.orphans()]
        return out

    def owners(self) -> dict[str, dict]:
        """uid -> live owner object, of every owner kind."""
        return {o["metadata"]["uid"]: o for kind in OWNER_KINDS for o in self.items(API_VERSION, kind)}

    def children(self) -> list[dict]:
        """Every object here whose owner is one of ours (an llmops kind)."""
        out = []
        for api_version, kind in CHILD_KINDS:
            for item in self.items(api_version, kind):
                refs = item["metadata"].get("ownerReferences") or []
                if any(r["kind"] in OWNER_KINDS and r["apiVersion"] == API_VERSION for r in refs):
                    out.append(item)
        return out

    def orphans(self) -> list[str]:
        """Children whose owner is gone, or that their owner no longer wants: a ModelDeployment's
        child not in its status.inventory (its feedback-key Secret is kept by design, and none is made
        here), a RetrainPolicy's TrainingJob not among its recorded runs."""
        owners = self.owners()
        out = []
        for child in self.children():
            meta = child["metadata"]
            ref = f"{child['apiVersion']}/{child['kind']}/{meta['name']}"
            (owner_ref,) = [r for r in meta["ownerReferences"] if r["kind"] in OWNER_KINDS]
            owner = owners.get(owner_ref["uid"])
            if owner is None:
                out.append(f"{ref} (owner {owner_ref['kind']} {owner_ref['name']} is gone)")
                continue
            status = owner.get("status") or {}
            if owner_ref["kind"] == "ModelDeployment" and ref not in status.get("inventory", []):
                out.append(f"{ref} (not in {owner_ref['name']}'s inventory)")
            if owner_ref["kind"] == "RetrainPolicy" and meta["name"] not in {
                r["trainingJob"] for r in status.get("runs", [])
            }:
                out.append(f"{ref} (not among {owner_ref['name']}'s runs)")
        return out

    def duplicates(self) -> dict[str, list[str]]:
        """What exists more than once: vLLM or gateway Deployments of one deployment and version, RayJobs
        of one TrainingJob (Ray submissions), runs of one request of a policy, model versions."""
        servers: Counter = Counter()
        rayjobs: Counter = Counter()
        runs: Counter = Counter()
        for child in self.children():
            meta = child["metadata"]
            labels = meta.get("labels") or {}
            owner = next(r for r in meta["ownerReferences"] if r["kind"] in OWNER_KINDS)
            if child["kind"] == "Deployment":
                key = (
                    owner["name"],
                    labels.get("app.kubernetes.io/component"),
                    labels.get("llmops.io/model"),
                    labels.get("llmops.io/model-version"),
                )
                servers[key] += 1
            elif child["kind"] == "RayJob":
                rayjobs[owner["uid"]] += 1
            elif child["kind"] == "TrainingJob":
                request = (meta.get("annotations") or {}).get("retrain.llmops.io/manual")
                runs[(owner["uid"], request)] += 1
        versions: list[str] = []
        local = LocalStore(self.local_registry)
        listed = reg.versions(local, MODEL)
        versions += [f"{MODEL} {v} listed {n}x" for v, n in Counter(listed).items() if n > 1]
        grown = sorted(set(listed) - set(self.versions_before.get("local", [])))
        versions += [f"{MODEL} {v} registered during the run" for v in grown]
        s3 = open_store(ObjectStorageLocation.model_validate(self.s3_registry), self.credentials)
        s3_listed = reg.versions(s3, S3_MODEL)
        versions += [f"{S3_MODEL} {v} registered during the run" for v in s3_listed if v != "1"]
        archive = open_store(
            ObjectStorageLocation.model_validate(self.archive["location"]), self.archive["credentials"]
        )
        archived = sorted(k for k in archive.list("") if k.endswith("/ARCHIVE.json"))
        if len(archived) > len(self.retired):  # one archive (its receipt) per retired version
            versions += [f"{len(archived)} archives for {len(self.retired)} retired versions: {archived}"]
        return {
            "children": [f"{k}: {n}" for k, n in servers.items() if n > 1],
            "ray submissions": [f"{k}: {n}" for k, n in rayjobs.items() if n > 1],
            "runs": [f"{k}: {n}" for k, n in runs.items() if n > 1],
            "model versions": versions,
        }


def training_spec(registry: dict) -> dict:
    """tests/cluster's small pre-training job, registering S3_MODEL."""
    from tests.cluster.test_trainingjob import training_job

    output = {"registry": registry, "modelName": S3_MODEL}
    return training_job("unused", registry, output=output)["spec"]


def condition(obj: dict | None, type: str) -> dict:
    return next((c for c in ((obj or {}).get("status") or {}).get("conditions", []) if c["type"] == type), {})


class KubeRay:
    """Plays KubeRay and the workload for every RayJob the operator creates (no Ray here): the run's
    report.json (Succeeded, its gates passed) into its work folder, then the RayJob's status as KubeRay
    writes it when a job has finished. Runs in a thread until stopped; counts the RayJobs it finished."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.finished: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> KubeRay:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            with contextlib.suppress(Exception):  # an apiserver hiccup: the next round tries again
                for rayjob in self.fleet.items(tj_builders.RAY_API_VERSION, tj_builders.RAYJOB_KIND):
                    if (rayjob.get("status") or {}).get("jobDeploymentStatus") != "Complete":
                        self.finish(rayjob)

    def finish(self, rayjob: dict) -> None:
        name = rayjob["metadata"]["name"]
        run = tj_builders.run_from_entrypoint(rayjob["spec"]["entrypoint"])
        assert run is not None and run.work_dir.s3 is not None
        version = ModelVersionRef(name=S3_MODEL, version="1", uri=f"s3://played/{name}")
        gates = [GateResult(metric="perplexity", operator="<=", threshold=1000, value=210.5, passed=True)]
        report = RunReport(
            phase="Succeeded", metrics={"perplexity": 210.5}, gates=gates, model_version=version
        )
        store = open_store(run.work_dir, self.fleet.credentials)
        store.put_bytes(REPORT, report.model_dump_json(by_alias=True).encode())
        status = {
            "jobDeploymentStatus": "Complete",
            "jobStatus": "SUCCEEDED",
            "jobId": name,
            "startTime": "2026-11-30T10:00:00Z",
            "endTime": "2026-11-30T10:05:00Z",
        }
        resource = self.fleet.resource(tj_builders.RAY_API_VERSION, tj_builders.RAYJOB_KIND)
        try:
            self.fleet.client.patch(
                resource.subresources["status"],
                body={"status": status},
                name=name,
                namespace=self.fleet.namespace,
                content_type="application/merge-patch+json",
            )
            self.finished.add(name)
        except (NotFoundError, ConflictError):
            pass


def wait_for(check: Any, timeout: float, interval: float = 2.0) -> list[str]:
    """Poll `check()` (a list of what is not done yet) until it is empty; return the last list (empty
    on success). A readiness wait, not a timed assertion: the caller asserts on what is left."""
    deadline = time.monotonic() + timeout
    left = check()
    while left and time.monotonic() < deadline:
        time.sleep(interval)
        left = check()
    return left


def prometheus_config(path: Path, namespace: str, exporter_port: int, deployments: list[str]) -> None:
    """One scrape target per canary deployment, all on the one exporter, labelled as the operator's
    ServiceMonitor labels a gateway's series (monitoring.selector)."""
    import yaml

    path.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "scrape_configs": [
                    {
                        "job_name": "gateway",
                        "static_configs": [
                            {
                                "targets": [f"127.0.0.1:{exporter_port}"],
                                "labels": {"namespace": namespace, "model_deployment": md},
                            }
                            for md in deployments
                        ],
                    }
                ],
            }
        )
    )


def dump(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str)
