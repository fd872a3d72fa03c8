"""Bad input against the real apiserver: hundreds of generated invalid objects and every sample in
examples/invalid are refused at admission, each with a message that names the field at fault; the valid
samples in examples/ apply as users apply them.

The generated objects come from tests/invalid_objects.py: a valid example with exactly one thing wrong,
read from the CRDs' schemas and CEL rules. They go through the Python client as server-side dry runs with
strict field validation, which is what `kubectl create --validate=strict --dry-run=server` sends.
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from kubernetes import client

from llmops.api import BY_KIND
from llmops.dev.cluster import LocalCluster
from tests.helpers import create_namespace
from tests.invalid_objects import (
    CEL_CASES,
    CRDS,
    EXAMPLES,
    FAMILY_NAMES,
    CelCase,
    Invalid,
    cel_rules,
    cel_violations,
    invalid_objects,
    render,
    set_at,
)

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("llmops_crds")]

EXAMPLES_DIR = Path(__file__).parents[2] / "examples"
INVALID = sorted((EXAMPLES_DIR / "invalid").glob("*.yaml"))
GENERATED = 250  # objects generated per run
REFUSED_AT_LEAST = 200  # distinct ones of them that must have been refused
CEL_EXAMPLES = 6  # objects per CEL rule, on top of those among the 250


@pytest.fixture(scope="module")
def custom(api_client: Any) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api_client)


@pytest.fixture(scope="module")
def nothing_stored(cluster: LocalCluster) -> Iterator[str]:
    """One namespace for the requests that must store nothing (dry runs, refused objects): one is enough."""
    name = f"t-bad-{uuid.uuid4().hex[:8]}"
    create_namespace(cluster, name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def submit(custom: client.CustomObjectsApi, namespace: str, kind: str, body: dict) -> tuple[int, str]:
    """Create `body` as a dry run with strict field validation: (HTTP status, the apiserver's message)."""
    crd = CRDS[kind]
    try:
        custom.create_namespaced_custom_object(
            crd.group, crd.version, namespace, crd.plural, body, dry_run="All", field_validation="Strict"
        )
    except client.ApiException as e:
        return e.status, json.loads(e.body).get("message", e.body)
    return 201, ""


def header(path: Path) -> dict[str, str]:
    """The `# field:`, `# apiserver:` and `# apiserver-ssa:` lines of an invalid sample's leading comment."""
    found = {}
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        key, sep, value = line.removeprefix("#").strip().partition(": ")
        if sep and key in ("field", "apiserver", "apiserver-ssa"):
            found[key] = value
    return found


def ssa_answers(promised: dict[str, str]) -> list[tuple[str, str]]:
    """(message, field it names) that `kubectl apply --server-side` may answer for a sample.

    Server-side apply names only the first unknown field it meets, and Go's map order decides which: with
    several unknown fields (listed by the `# apiserver:` line), the `# apiserver-ssa:` line holds for any
    one of them.
    """
    answer = promised.get("apiserver-ssa", promised["apiserver"])
    unknown = re.findall(r'unknown field "([^"]+)"', promised["apiserver"])
    named = [field for field in unknown if f".{field}:" in answer]
    if not named:
        return [(answer, promised["field"])]
    return [(answer.replace(f".{named[0]}:", f".{field}:"), field) for field in unknown]


# -- the valid samples -------------------------------------------------------------------------------


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.name)
def test_each_example_alone_is_accepted(
    custom: client.CustomObjectsApi, nothing_stored: str, example
) -> None:
    """The starting points of the generated objects are valid, so each mutation is the only fault."""
    status, message = submit(custom, nothing_stored, example.crd.kind, example.body)
    assert status == 201, f"{example.name} refused: {message}"


def test_kubectl_apply_examples_succeeds(cluster: LocalCluster, namespace: str) -> None:
    """`kubectl apply -f examples/` as the README says, into a fresh namespace: every object is stored."""
    result = cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES_DIR), check=False)
    assert result.returncode == 0, result.stderr
    wanted = {(e.crd.kind, e.body["metadata"]["name"]) for e in EXAMPLES}
    stored = json.loads(
        cluster.kubectl(
            "get", ",".join(c.plural for c in CRDS.values()), "-n", namespace, "-o", "json"
        ).stdout
    )["items"]
    assert {(o["kind"], o["metadata"]["name"]) for o in stored} == wanted


# -- the invalid samples -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_sample_is_refused_as_its_header_says(
    cluster: LocalCluster, nothing_stored: str, path: Path
) -> None:
    promised = header(path)
    assert {"field", "apiserver"} <= promised.keys(), f"{path.name} needs '# field:' and '# apiserver:' lines"
    for verb in (["create"], ["apply"], ["apply", "--server-side"]):
        how = " ".join(verb)
        result = cluster.kubectl(
            *verb, "--validate=strict", "-n", nothing_stored, "-f", str(path), check=False
        )
        assert result.returncode != 0, f"kubectl {how} accepted {path.name}: {result.stdout}"
        answers = (
            ssa_answers(promised) if "--server-side" in verb else [(promised["apiserver"], promised["field"])]
        )
        named = [message for message, field in answers if message in result.stderr and field in result.stderr]
        assert named, f"kubectl {how} {path.name}: expected {answers[0][0]!r} in {result.stderr!r}"
    doc = yaml.safe_load(path.read_text())
    got = cluster.kubectl(
        "get", CRDS[doc["kind"]].plural, doc["metadata"]["name"], "-n", nothing_stored, check=False
    )
    assert "NotFound" in got.stderr, f"refused, yet stored: {got.stdout}"


# -- generated invalid objects -----------------------------------------------------------------------

HYPOTHESIS = settings(
    deadline=None,
    derandomize=True,  # the same objects on every run: a failure reproduces
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def check_refused(custom: client.CustomObjectsApi, namespace: str, bad: Invalid) -> None:
    status, message = submit(custom, namespace, bad.crd.kind, bad.body)
    assert status != 201, f"ACCEPTED {bad}"
    assert status == bad.status, f"{bad}: expected HTTP {bad.status}, got {status}: {message}"
    assert bad.named_in(message), f"{bad}: the message does not name {bad.path} as expected:\n{message}"


def test_generated_invalid_objects_are_refused_naming_the_field(
    custom: client.CustomObjectsApi, nothing_stored: str
) -> None:
    refused: dict[str, Invalid] = {}

    # @given on an inner function, so the fixtures are made once for all the examples.
    @settings(HYPOTHESIS, max_examples=GENERATED)
    @given(invalid_objects())
    def refused_naming_the_field(bad: Invalid) -> None:
        check_refused(custom, nothing_stored, bad)
        refused[bad.key] = bad

    refused_naming_the_field()
    families = Counter(bad.family for bad in refused.values())
    assert len(refused) >= REFUSED_AT_LEAST, f"only {len(refused)} distinct objects refused: {families}"
    assert set(families) == set(FAMILY_NAMES), (
        f"families never generated: {set(FAMILY_NAMES) - set(families)}"
    )


def test_every_cel_rule_has_a_case() -> None:
    """A new CEL rule in the API needs a case in tests/invalid_objects.py that breaks it."""
    rules = {(kind, node, message) for kind, crd in CRDS.items() for node, message in cel_rules(crd)}
    covered = {(case.kind, case.node, case.message) for case in CEL_CASES}
    assert rules <= covered, f"CEL rules no case breaks: {sorted(rules - covered)}"


@pytest.mark.parametrize("kind", sorted(CRDS))
def test_names_longer_than_a_label_value_are_refused(
    custom: client.CustomObjectsApi, nothing_stored: str, kind: str
) -> None:
    """Every child carries its parent's name as a label value; those stop at 63 characters (52 for a
    RetrainPolicy, whose runs are named `<name>-<minute>`)."""
    example = next(e for e in EXAMPLES if e.crd.kind == kind)
    longest = BY_KIND[kind].max_name_length
    assert longest == (52 if kind == "RetrainPolicy" else 63)
    body = copy.deepcopy(example.body)
    body["metadata"]["name"] = "a" * (longest + 1)
    status, message = submit(custom, nothing_stored, kind, body)
    assert status == 422 and f"metadata.name must be at most {longest} characters" in message, message
    body["metadata"]["name"] = "a" * longest
    assert submit(custom, nothing_stored, kind, body)[0] == 201


@pytest.mark.parametrize("case", CEL_CASES, ids=lambda c: c.label)
def test_each_cel_rule_is_enforced(
    custom: client.CustomObjectsApi, nothing_stored: str, case: CelCase
) -> None:
    """Every cross-field rule, broken from several examples, is refused with the rule's own message."""

    @settings(HYPOTHESIS, max_examples=CEL_EXAMPLES)
    @given(cel_violations(case))
    def refused_naming_the_field(bad: Invalid) -> None:
        check_refused(custom, nothing_stored, bad)

    refused_naming_the_field()


# -- core/v1's own checks, mirrored at admission --------------------------------------------------


@dataclass(frozen=True)
class Gap:
    """A fault core/v1 refuses in a Pod; our CRDs must refuse it at admission, not when a Pod is made."""

    example: str
    field: tuple[str | int, ...]
    value: Any
    pod: dict[str, Any]  # the same fault in a Pod spec (merged over one plain container)
    core_says: str

    def body(self) -> tuple[str, dict]:
        (found,) = [e for e in EXAMPLES if e.name == self.example]
        body = copy.deepcopy(found.body)
        set_at(body, self.field, self.value)
        return found.crd.kind, body


# The fields promise core/v1 meaning ("CPU request and limit", "Node labels the pod requires", "A Pod
# toleration, as in core/v1"), so they carry core/v1's checks too (found by this suite, then fixed).
_TOLERATION = ("spec", "resources", "perWorker", "tolerations", 0)
_EXISTS = {"key": "nvidia.com/gpu", "operator": "Exists"}
GAPS = {
    "negative-cpu": Gap(
        "modeldeployment-single.yaml",
        ("spec", "resources", "cpu"),
        -4,
        {"containers": [{"resources": {"requests": {"cpu": "-4"}}}]},
        "must be greater than or equal to 0",
    ),
    "negative-memory": Gap(
        "trainingjob-full.yaml",
        ("spec", "resources", "perWorker", "memory"),
        "-128Gi",
        {"containers": [{"resources": {"requests": {"memory": "-128Gi"}}}]},
        "must be greater than or equal to 0",
    ),
    "node-selector-key": Gap(
        "trainingjob-qlora.yaml",
        ("spec", "resources", "perWorker", "nodeSelector"),
        {"gpu pool!": "spot"},
        {"nodeSelector": {"gpu pool!": "spot"}},
        "name part must consist of alphanumeric characters",
    ),
    "toleration-exists-with-value": Gap(
        "trainingjob-qlora.yaml",
        _TOLERATION,
        {**_EXISTS, "value": "present"},
        {"tolerations": [{**_EXISTS, "value": "present"}]},
        "value must be empty when `operator` is 'Exists'",
    ),
    "toleration-seconds-without-noexecute": Gap(
        "trainingjob-qlora.yaml",
        _TOLERATION,
        {**_EXISTS, "effect": "NoSchedule", "tolerationSeconds": 30},
        {"tolerations": [{**_EXISTS, "effect": "NoSchedule", "tolerationSeconds": 30}]},
        "effect must be 'NoExecute' when `tolerationSeconds` is set",
    ),
}


@pytest.mark.parametrize("gap", GAPS.values(), ids=GAPS.keys())
def test_core_refuses_the_pod_a_gap_lets_through(api_client: Any, nothing_stored: str, gap: Gap) -> None:
    """Each fault is real: core/v1 refuses a Pod with it."""
    container = {"name": "c", "image": "i", **gap.pod.get("containers", [{}])[0]}
    pod = {"metadata": {"name": "probe"}, "spec": {**gap.pod, "containers": [container]}}
    with pytest.raises(client.ApiException) as refused:
        client.CoreV1Api(api_client).create_namespaced_pod(nothing_stored, pod, dry_run="All")
    assert refused.value.status == 422
    assert gap.core_says in json.loads(refused.value.body)["message"]


@pytest.mark.parametrize("gap", GAPS.values(), ids=GAPS.keys())
def test_gap_is_refused_at_admission(custom: client.CustomObjectsApi, nothing_stored: str, gap: Gap) -> None:
    kind, body = gap.body()
    status, message = submit(custom, nothing_stored, kind, body)
    assert status == 422, f"{gap.example} with {render(gap.field)} = {gap.value!r} was accepted"
    assert render(gap.field) in message
