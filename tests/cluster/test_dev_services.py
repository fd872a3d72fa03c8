"""The services beside the dev cluster are real and are stopped with it: MinIO, Ray, Prometheus."""

from __future__ import annotations

import json
import sys
import urllib.parse
import urllib.request

import pytest

from llmops.api.common import ObjectStorageLocation
from llmops.dev import services
from llmops.dev.cluster import LocalCluster, process_alive
from llmops.storage import Credentials, ObjectExists, open_store
from tests.helpers import eventually


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    """A cluster-less state folder: the services do not need the control plane."""
    cluster = LocalCluster(tmp_path_factory.mktemp("stack"), tie_to_parent=True)
    cluster.logs.mkdir(parents=True, exist_ok=True)
    cluster.save_state({"ports": {}, "pids": {}})
    yield cluster
    procs = cluster.processes()
    cluster.stop(remove=True)
    exes = {"ray": "ray", "minio": "minio", "prometheus": "prometheus"}
    assert not [n for n, (pid, _) in procs.items() if process_alive(pid, exes.get(n, n))]


def test_minio_is_an_s3_endpoint_with_create_only_writes(stack: LocalCluster) -> None:
    info = services.start_minio(stack, buckets=("registry",))
    assert services.start_minio(stack) == info  # idempotent
    location = ObjectStorageLocation.model_validate(
        {"s3": {"endpoint": info["endpoint"], "bucket": "registry", "prefix": "team-a"}}
    )
    store = open_store(location, Credentials(info["accessKeyId"], info["secretAccessKey"]))
    store.put_bytes("a/b.txt", b"hello")
    assert store.get_bytes("a/b.txt") == b"hello"
    assert list(store.list("a/")) == ["a/b.txt"]
    with pytest.raises(ObjectExists):
        store.put_bytes("a/b.txt", b"other", overwrite=False)
    assert store.get_bytes("a/b.txt") == b"hello"


def test_ray_head_runs_a_job_through_the_jobs_api(stack: LocalCluster) -> None:
    from ray.job_submission import JobStatus, JobSubmissionClient

    info = services.start_ray(stack)
    client = JobSubmissionClient(info["address"])
    job = client.submit_job(entrypoint=f"{sys.executable} -c \"print('ran on ray')\"")
    status = eventually(
        lambda: (s := client.get_job_status(job)) in {JobStatus.SUCCEEDED, JobStatus.FAILED} and s,
        timeout=120,
    )
    assert status == JobStatus.SUCCEEDED
    assert "ran on ray" in client.get_job_logs(job)


def test_prometheus_scrapes_the_targets_it_is_given(stack: LocalCluster) -> None:
    info = services.start_prometheus(stack)
    own = info["url"].removeprefix("http://")
    services.set_scrape_targets(stack, [{"targets": [own], "labels": {"service": "prometheus"}}])

    def up() -> list:
        query = urllib.parse.urlencode({"query": 'up{service="prometheus"}'})
        with urllib.request.urlopen(f"{info['url']}/api/v1/query?{query}", timeout=5) as r:
            return [s for s in json.load(r)["data"]["result"] if s["value"][1] == "1"]

    assert eventually(up, timeout=60)
