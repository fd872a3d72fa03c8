"""The cluster-DNS stand-in (tests/cluster_dns.py) with the real clients the operator and the training
workload use: in-cluster names (`minio.llmops-system:9000`, `shared-raycluster-head-svc.ray:8265`)
reach the local MinIO and Ray head through the standard proxy environment, nothing global on the
machine changes, loopback stays direct, and a name it does not stand in for gets a 502 naming it.
This is what lets a test run examples/trainingjob-full.yaml's runtime.rayJobsAPI address and S3
endpoints as written (issue 12)."""

from __future__ import annotations

import asyncio
import urllib.parse

import pytest
import requests

from llmops.api.common import ObjectStorageLocation
from llmops.storage import Credentials, open_store
from tests.cluster_dns import cluster_dns_proxy, proxy_environment
from tests.helpers import s3_client

MINIO_IN_CLUSTER = "minio.llmops-system:9000"
RAY_IN_CLUSTER = "shared-raycluster-head-svc.ray:8265"


def test_in_cluster_names_reach_the_local_minio_and_ray_head(
    minio: dict[str, str], ray_dashboard: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ray.job_submission import JobSubmissionClient

    local_minio = urllib.parse.urlsplit(minio["endpoint"]).netloc
    s3_client(minio).create_bucket(Bucket="cluster-dns")
    dashboard = urllib.parse.urlsplit(ray_dashboard).netloc
    names = {MINIO_IN_CLUSTER: local_minio, RAY_IN_CLUSTER: dashboard}
    with cluster_dns_proxy(names) as proxy:
        for key, value in proxy_environment(proxy).items():
            monkeypatch.setenv(key, value)
        # The operator's and the workload's S3 client (botocore), at the endpoint the examples name.
        location = ObjectStorageLocation.model_validate(
            {"s3": {"bucket": "cluster-dns", "prefix": "t", "endpoint": f"http://{MINIO_IN_CLUSTER}"}}
        )
        store = open_store(location, Credentials(minio["access_key"], minio["secret_key"]))
        store.put_bytes("hello.txt", b"through the stand-in")
        assert store.get_bytes("hello.txt") == b"through the stand-in"
        # Ray's Jobs API client (requests), at the runtime.rayJobsAPI address the example names.
        client = JobSubmissionClient(f"http://{RAY_IN_CLUSTER}")
        submitted = client.submit_job(entrypoint="true", metadata={"test": "cluster-dns"})
        assert client.get_job_info(submitted).metadata == {"test": "cluster-dns"}

        # aiohttp with trust_env (Ray's own async clients) takes the same way.
        async def version() -> int:
            import aiohttp

            async with (
                aiohttp.ClientSession(trust_env=True) as session,
                session.get(f"http://{RAY_IN_CLUSTER}/api/version") as response,
            ):
                return response.status

        assert asyncio.run(version()) == 200
        # Loopback stays direct (NO_PROXY): the test's own clients and the apiserver never pass it.
        before = len(proxy.forwarded)
        assert s3_client(minio).get_object(Bucket="cluster-dns", Key="t/hello.txt")["Body"].read()
        assert len(proxy.forwarded) == before
        # A name it does not stand in for is refused, named.
        refused = requests.get("http://registry.elsewhere.svc:9000/", timeout=30)
        assert refused.status_code == 502 and "registry.elsewhere.svc:9000" in refused.text
    hosts = sorted({host for _, host, _ in proxy.forwarded})
    print(f"forwarded {len(proxy.forwarded)} requests for {hosts}")
    assert hosts == sorted(names)
