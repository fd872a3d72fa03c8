"""Fixtures of the ModelRetirement operator's tests on the real control plane: the ModelDeployment
tests' local registry (support-bot versions 1-3) and kubeconfig, reused as they are, and an
Object-Lock bucket in the session's MinIO for the archive."""

from __future__ import annotations

import uuid

import pytest

from llmops.dev import services
from llmops.dev.cluster import LocalCluster
from llmops.storage import Credentials
from tests.cluster.modeldeployment.conftest import kubeconfig_env, registry
from tests.helpers import s3_client

__all__ = ["archive", "kubeconfig_env", "registry"]


@pytest.fixture
def archive(cluster: LocalCluster, namespace: str) -> dict:
    """A fresh bucket created with Object Lock on (as `mc mb --with-lock` does), its credentials in
    the Secret `archive-credentials` of the test's namespace; returns the location and a boto3 client."""

    minio = services.start_minio(cluster)
    bucket = f"archive-{uuid.uuid4().hex[:10]}"
    s3 = s3_client(minio)
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    cluster.kubectl(
        "create", "secret", "generic", "archive-credentials", "-n", namespace,
        f"--from-literal=AWS_ACCESS_KEY_ID={minio['accessKeyId']}",
        f"--from-literal=AWS_SECRET_ACCESS_KEY={minio['secretAccessKey']}",
    )  # fmt: skip
    location = {
        "s3": {
            "endpoint": minio["endpoint"],
            "bucket": bucket,
            "credentialsSecretRef": {"name": "archive-credentials"},
        }
    }
    credentials = Credentials(minio["accessKeyId"], minio["secretAccessKey"])
    return {"location": location, "s3": s3, "bucket": bucket, "credentials": credentials}
