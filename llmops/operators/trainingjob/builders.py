"""Pure builders for the TrainingJob operator: spec in, the run and its RayJob out (names, ids: names.py).

Nothing here talks to the cluster, to Ray or to storage, so every decision is unit-tested and the
RayJob manifests have golden files (tests/unit/golden/trainingjob/).

The run and its lifecycle. A `TrainingRun` (llmops.workload) is what the workload trains: it goes
into the Ray entrypoint and is fixed once the run has started. The fields that only steer the job's
lifecycle (`suspend`, `ttlSecondsAfterFinished`, `runtime.activeDeadlineSeconds`,
`runtime.backoffLimit`) are taken out of the run (`run_spec`) and applied to the RayJob directly, so
suspending or extending a deadline never changes the entrypoint of a running job.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

from llmops.api.common import Resources
from llmops.api.trainingjob import Reason, TrainingJobSpec
from llmops.operators.manifests import (
    ca_bundle_mounts,
    container_security,
    credentials_env,
    node_placement,
    pod_security,
    requests_limits,
    resource_amounts,
)
from llmops.operators.trainingjob import names
from llmops.workload import (
    DATA_CREDENTIALS_PREFIX,
    JobIdentity,
    TrainingRun,
    data_credentials_prefix,
    traffic_credentials_prefix,
    work_dir_for,
)

RAY_API_VERSION = "ray.io/v1"
RAYJOB_KIND = "RayJob"
ENTRYPOINT = ("python", "-m", "llmops.training.run", "--config")
SHM_VOLUME = "dshm"


@dataclass(frozen=True)
class Lifecycle:
    """The fields of a TrainingJob that steer its RayJob but not what is trained."""

    suspend: bool | None  # None: leave the field to someone else (Kueue admits queued jobs)
    ttl_seconds_after_finished: int
    active_deadline_seconds: int | None
    backoff_limit: int


def identity(body: dict) -> JobIdentity:
    meta = body["metadata"]
    return JobIdentity(
        namespace=meta["namespace"],
        name=meta["name"],
        uid=meta["uid"],
        generation=meta.get("generation") or 1,
    )


def problems(spec: TrainingJobSpec) -> tuple[str, str] | None:
    """(reason, message) when the spec cannot run as written, before anything is started."""
    if spec.method.type == "qlora" and spec.resources.per_worker.gpus == 0:
        return (
            Reason.GPU_REQUIRED,
            "spec.method.type is qlora, which quantises the base model to 4 bits with bitsandbytes "
            "and needs GPUs, but spec.resources.perWorker.gpus is 0: request GPUs "
            "(spec.resources.perWorker.gpus >= 1) or use spec.method.type lora on CPUs",
        )
    return None


def run_spec(spec: TrainingJobSpec) -> TrainingJobSpec:
    """The spec as the workload sees it: lifecycle fields removed (see the module docstring)."""
    runtime = spec.runtime.model_copy(update={"active_deadline_seconds": None, "backoff_limit": 0})
    return spec.model_copy(update={"suspend": False, "ttl_seconds_after_finished": None, "runtime": runtime})


def training_run(spec: TrainingJobSpec, job: JobIdentity, code_version: str) -> TrainingRun:
    """What the workload runs; `spec.model.base` should already name a version (see pin_base)."""
    return TrainingRun(
        job=job,
        spec=run_spec(spec),
        work_dir=work_dir_for(spec.output.registry, job),
        code_version=code_version,
    )


def pin_base(spec: TrainingJobSpec, version: str) -> TrainingJobSpec:
    """`spec.model.base` pinned to `version`: an alias moves, a run must not."""
    assert spec.model.base is not None
    base = spec.model.base.model_copy(update={"version": version, "alias": None})
    return spec.model_copy(update={"model": spec.model.model_copy(update={"base": base})})


def pin_baseline(spec: TrainingJobSpec, version: str) -> TrainingJobSpec:
    """`spec.evaluation.baseline` pinned to `version`, as `pin_base` pins the base."""
    assert spec.evaluation is not None and spec.evaluation.baseline is not None
    baseline = spec.evaluation.baseline.model_copy(update={"version": version, "alias": None})
    return spec.model_copy(update={"evaluation": spec.evaluation.model_copy(update={"baseline": baseline})})


def pin_teacher(spec: TrainingJobSpec, version: str) -> TrainingJobSpec:
    """`spec.method.distillation.teacher` pinned to `version`, as `pin_base` pins the base."""
    distillation = spec.method.distillation
    assert distillation is not None
    teacher = distillation.teacher.model_copy(update={"version": version, "alias": None})
    method = spec.method.model_copy(
        update={"distillation": distillation.model_copy(update={"teacher": teacher})}
    )
    return spec.model_copy(update={"method": method})


def same_training(a: TrainingJobSpec, b: TrainingJobSpec) -> bool:
    """Whether two specs train the same thing (the base model, the evaluation baseline and the teacher
    compared by name: one may be pinned)."""
    a, b = run_spec(a), run_spec(b)
    if a.model.base and b.model.base and a.model.base.name == b.model.base.name:
        b = b.model_copy(update={"model": a.model})
    baseline_a = a.evaluation.baseline if a.evaluation else None
    baseline_b = b.evaluation.baseline if b.evaluation else None
    if baseline_a and baseline_b and baseline_a.name == baseline_b.name:
        assert b.evaluation is not None
        b = b.model_copy(update={"evaluation": b.evaluation.model_copy(update={"baseline": baseline_a})})
    teacher_a = a.method.distillation.teacher if a.method.distillation else None
    teacher_b = b.method.distillation.teacher if b.method.distillation else None
    if teacher_a and teacher_b and teacher_a.name == teacher_b.name:
        assert b.method.distillation is not None
        distillation = b.method.distillation.model_copy(update={"teacher": teacher_a})
        b = b.model_copy(update={"method": b.method.model_copy(update={"distillation": distillation})})
    return a == b


def entrypoint(run: TrainingRun) -> str:
    return shlex.join([*ENTRYPOINT, run.encode()])


def run_from_entrypoint(command: str | None) -> TrainingRun | None:
    """The run an entrypoint carries, or None when it is not one of ours (or unreadable)."""
    try:
        words = shlex.split(command or "")
        if tuple(words[: len(ENTRYPOINT)]) != ENTRYPOINT or len(words) != len(ENTRYPOINT) + 1:
            return None
        return TrainingRun.decode(words[-1])
    except ValueError:
        return None


def default_image(code_version: str) -> str:
    return f"ghcr.io/llmops/trainer:{code_version if code_version != 'unknown' else 'latest'}"


def pod_env(spec: TrainingJobSpec) -> list[dict[str, Any]]:
    """Environment of every Ray pod: storage credentials by reference, never by value, under the one
    convention of every pod (llmops/workload.py: the registry's as AWS_*, spec.data.s3's as DATA_AWS_*
    when its Secret is another, a servedTraffic location's as TRAFFIC<i>_AWS_* when its Secret is
    neither)."""
    env: list[dict[str, Any]] = [{"name": "PYTHONUNBUFFERED", "value": "1"}]
    registry = spec.output.registry.s3
    env += credentials_env(registry.credentials_secret_ref if registry else None)
    if data_credentials_prefix(spec):
        assert spec.data.s3 is not None
        env += credentials_env(spec.data.s3.credentials_secret_ref, DATA_CREDENTIALS_PREFIX)
    for index, source in enumerate(spec.data.sources):
        prefix = traffic_credentials_prefix(spec, index)
        if prefix and prefix != DATA_CREDENTIALS_PREFIX:
            assert source.served_traffic is not None and source.served_traffic.location.s3 is not None
            env += credentials_env(source.served_traffic.location.s3.credentials_secret_ref, prefix)
    return env


def _pod_template(
    container: str,
    image: str,
    resources: Resources,
    spec: TrainingJobSpec,
    labels: dict[str, str],
) -> dict[str, Any]:
    """A Ray pod: our image, sized from `resources`, non-root, /dev/shm for Ray's object store, and
    the CA bundles its storage locations name (the registry, spec.data.s3, served-traffic sources)."""
    traffic = [s.served_traffic.location for s in spec.data.sources if s.served_traffic is not None]
    ca_volumes, ca_mounts = ca_bundle_mounts(spec.output.registry, spec.data.s3, *traffic)
    body: dict[str, Any] = {
        "name": container,
        "image": image,
        "env": pod_env(spec),
        "securityContext": container_security(read_only_root=False),
        "volumeMounts": [{"name": SHM_VOLUME, "mountPath": "/dev/shm"}, *ca_mounts],
    }
    if spec.runtime.env_from_secrets:
        body["envFrom"] = [{"secretRef": {"name": name}} for name in spec.runtime.env_from_secrets]
    # Quantities as strings here (the golden RayJobs hold them so); requests equal limits.
    sized = requests_limits({key: str(value) for key, value in resource_amounts(resources).items()})
    if sized:
        body["resources"] = sized
    pod: dict[str, Any] = {
        "containers": [body],
        "securityContext": pod_security(),
        # Ray's head and workers never call the Kubernetes API (KubeRay's autoscaler sidecar would; the
        # builders never enable it): no token. A cloud identity (IRSA, workload identity) needs none.
        "automountServiceAccountToken": False,
        "volumes": [{"name": SHM_VOLUME, "emptyDir": {"medium": "Memory"}}, *ca_volumes],
        **node_placement(resources),
    }
    if spec.runtime.service_account_name:
        pod["serviceAccountName"] = spec.runtime.service_account_name
    return {"metadata": {"labels": dict(labels)}, "spec": pod}


def _submitter_template(image: str, spec: TrainingJobSpec, labels: dict[str, str]) -> dict[str, Any]:
    """The pod that runs `ray job submit` (KubeRay fills in its command): small and non-root."""
    container = {
        "name": "ray-job-submitter",
        "image": image,
        "securityContext": container_security(read_only_root=False),
        "resources": {
            "requests": {"cpu": "500m", "memory": "256Mi"},
            "limits": {"cpu": "1", "memory": "1Gi"},
        },
    }
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [container],
        "securityContext": pod_security(),
        # `ray job submit` talks to the head's dashboard, never to the Kubernetes API: no token.
        "automountServiceAccountToken": False,
    }
    if spec.runtime.service_account_name:
        pod["serviceAccountName"] = spec.runtime.service_account_name
    return {"metadata": {"labels": dict(labels)}, "spec": pod}


def rayjob(
    run: TrainingRun,
    lifecycle: Lifecycle,
    *,
    name: str,
    image: str,
) -> dict[str, Any]:
    """The KubeRay RayJob of a run: a cluster sized from spec.resources, deleted when the job ends.

    Labels, namespace and the owner reference are added by `llmops.operators.manifests.adopt`.
    """
    spec, job = run.spec, run.job
    pod_labels, labels = names.pod_labels(job), names.rayjob_labels(spec)
    workers = spec.resources.workers
    job_spec: dict[str, Any] = {
        "entrypoint": entrypoint(run),
        "metadata": names.submission_metadata(job),
        "shutdownAfterJobFinishes": True,
        "ttlSecondsAfterFinished": lifecycle.ttl_seconds_after_finished,
        "backoffLimit": lifecycle.backoff_limit,
        "submissionMode": "K8sJobMode",
        "submitterPodTemplate": _submitter_template(image, spec, pod_labels),
        "rayClusterSpec": {
            "headGroupSpec": {
                "rayStartParams": {},
                "template": _pod_template("ray-head", image, spec.resources.head, spec, pod_labels),
            },
            "workerGroupSpecs": [
                {
                    "groupName": "workers",
                    "replicas": workers,
                    "minReplicas": workers,
                    "maxReplicas": workers,
                    "rayStartParams": {},
                    "template": _pod_template(
                        "ray-worker", image, spec.resources.per_worker, spec, pod_labels
                    ),
                }
            ],
        },
    }
    if lifecycle.suspend is not None:
        job_spec["suspend"] = lifecycle.suspend
    if lifecycle.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = lifecycle.active_deadline_seconds
    return {
        "apiVersion": RAY_API_VERSION,
        "kind": RAYJOB_KIND,
        "metadata": {"name": name, "labels": labels},
        "spec": job_spec,
    }


def lifecycle(spec: TrainingJobSpec, *, creating: bool) -> Lifecycle:
    """The RayJob's lifecycle fields for the current spec.

    With a Kueue queue, Kueue decides when the job runs by flipping `suspend`: the RayJob is created
    suspended and, afterwards, we only claim `suspend` while the user asks for it.
    """
    suspend: bool | None = spec.suspend
    if spec.runtime.queue_name is not None:
        suspend = True if creating or spec.suspend else None
    return Lifecycle(
        suspend=suspend,
        ttl_seconds_after_finished=spec.ttl_seconds_after_finished or 0,
        active_deadline_seconds=spec.runtime.active_deadline_seconds,
        backoff_limit=spec.runtime.backoff_limit,
    )


def queue_hold(name: str, namespace: str) -> dict[str, Any]:
    """`suspend: true` alone, applied at creation by a second field manager (`QUEUE_FIELD_MANAGER`).

    Server-side apply removes a field its owner stops sending. Were the operator's own manager the
    only owner of `suspend: true`, its next apply (which leaves `suspend` to Kueue) would reset it to
    false and start the job before Kueue admitted it. This second owner keeps it true until Kueue
    takes it over by admitting the job.
    """
    return {
        "apiVersion": RAY_API_VERSION,
        "kind": RAYJOB_KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"suspend": True},
    }


QUEUE_FIELD_MANAGER = "llmops-queue-hold"
