"""llmops/operators/secrets.py: a Secret becomes Credentials, or one SecretProblem that names the field and
the Secret, never a value."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from llmops.api.common import ObjectStorageLocation
from llmops.operators import secrets
from llmops.operators.kube import ApiError, NotFound

VALUE = "s3cr3t-value-never-shown"


def s3(**ref: Any) -> ObjectStorageLocation:
    s3: dict[str, Any] = {"bucket": "models"}
    if ref:
        s3["credentialsSecretRef"] = ref
    return ObjectStorageLocation.model_validate({"s3": s3})


class FakeKube:
    """Kube.get of Secrets over a dict (their data base64, as the API has it): the apiserver is the edge
    a unit test cannot run (the real chain: tests/cluster)."""

    def __init__(self) -> None:
        self.secrets: dict[tuple[str, str], dict[str, str]] = {}

    def get(self, api_version: str, kind: str, name: str, namespace: str) -> dict:
        assert (api_version, kind) == ("v1", "Secret")
        data = self.secrets.get((namespace, name))
        if data is None:
            raise NotFound(404, "NotFound", f'secrets "{name}" not found')
        return {"data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


KUBE = FakeKube()


@pytest.fixture(autouse=True)
def core() -> FakeKube:
    KUBE.secrets = {}
    return KUBE


def test_no_secret_named_is_the_ambient_identity() -> None:
    assert secrets.credentials(None, "ml", s3(), "spec.registry") is None
    local = ObjectStorageLocation.model_validate({"local": {"path": "/registry"}})
    assert secrets.credentials(None, "ml", local, "spec.registry") is None


def test_a_secret_becomes_credentials(core: FakeKube) -> None:
    core.secrets[("ml", "registry")] = {"id": "AKIA", "key": VALUE}
    location = s3(name="registry", accessKeyIdKey="id", secretAccessKeyKey="key")
    found = secrets.credentials(KUBE, "ml", location, "spec.registry")
    assert found is not None and (found.access_key_id, found.secret_access_key) == ("AKIA", VALUE)
    assert VALUE not in repr(found)


def test_a_missing_secret_names_the_field_and_the_namespace() -> None:
    with pytest.raises(secrets.SecretProblem) as e:
        secrets.credentials(KUBE, "ml", s3(name="registry"), "spec.output.registry")
    assert str(e.value) == (
        "spec.output.registry.s3.credentialsSecretRef: Secret 'registry' does not exist in namespace 'ml';"
        " create it"
    )


@pytest.mark.parametrize(
    "data", [{}, {"AWS_ACCESS_KEY_ID": "AKIA"}, {"AWS_ACCESS_KEY_ID": "AKIA", "AWS_SECRET_ACCESS_KEY": ""}]
)
def test_a_missing_or_empty_key_is_a_problem(core: FakeKube, data: dict[str, str]) -> None:
    core.secrets[("ml", "registry")] = data
    with pytest.raises(
        secrets.SecretProblem, match=r"^spec.registry.s3.credentialsSecretRef: Secret 'registry' has no key"
    ) as e:
        secrets.credentials(KUBE, "ml", s3(name="registry"), "spec.registry")
    assert "AWS_SECRET_ACCESS_KEY" in str(e.value) and "AKIA" not in str(e.value)


def test_other_api_errors_propagate(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*_: Any) -> Any:
        raise ApiError(403, "Forbidden", "secrets is forbidden")

    monkeypatch.setattr(KUBE, "get", forbidden)
    with pytest.raises(ApiError):
        secrets.credentials(KUBE, "ml", s3(name="registry"), "spec.registry")
