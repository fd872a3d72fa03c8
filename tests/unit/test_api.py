"""The pydantic API: examples parse, invalid objects fail naming the field, the rules hold in Python too."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from llmops.api import API_VERSION, BY_KIND, RESOURCES
from llmops.api.common import ApiModel, ModelReference, Resources, Rule
from llmops.api.modeldeployment import ModelDeploymentSpec
from llmops.api.trainingjob import TrainingJobSpec, TrainingJobStatus

EXAMPLES = Path(__file__).parents[2] / "examples"
VALID = sorted(EXAMPLES.glob("*.yaml"))
INVALID = sorted((EXAMPLES / "invalid").glob("*.yaml"))

MINIMAL_JOB = {
    "model": {"baseModel": "s3://models/checkpoints/tiny"},
    "data": {"sources": [{"uri": "s3://data/corpus.jsonl"}]},
    "method": {"type": "full"},
    "output": {"registry": {"s3": {"bucket": "models"}}, "modelName": "tiny"},
}


def _header(path: Path) -> dict[str, str]:
    """The `# key: value` lines of an example's leading comment."""
    header: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if not line.startswith("# "):
            break
        key, _, value = line[2:].partition(": ")
        if key in ("field", "apiserver", "apiserver-ssa"):
            header[key] = value
    return header


def test_examples_exist() -> None:
    kinds = {yaml.safe_load(p.read_text())["kind"] for p in VALID}
    assert kinds == set(BY_KIND) and len(VALID) >= 8 and len(INVALID) >= 8


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_valid_example_parses(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    assert doc["apiVersion"] == API_VERSION
    spec = BY_KIND[doc["kind"]].spec.model_validate(doc["spec"])
    # What the operator writes back parses to the same thing.
    assert type(spec).model_validate(spec.to_dict()) == spec


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_example_is_rejected_naming_the_field(path: Path) -> None:
    header = _header(path)
    assert {"field", "apiserver"} <= header.keys(), f"{path.name} needs '# field:' and '# apiserver:' lines"
    doc = yaml.safe_load(path.read_text())
    with pytest.raises(ValidationError) as caught:
        BY_KIND[doc["kind"]].spec.model_validate(doc["spec"])
    field = header["field"]
    errors = caught.value.errors()
    # The apiserver writes list items as [i]; pydantic's locations are dotted.
    dotted = re.sub(r"\[(\d+)\]", r".\1", field)
    named = {".".join(["spec", *map(str, e["loc"])]) for e in errors}
    # Rules on the spec root report no location; their message names the field instead.
    in_message = any(field.removeprefix("spec.") in e["msg"] for e in errors if not e["loc"])
    # A rule with a fieldPath is reported by pydantic at its model, by the apiserver at the field.
    by_rule = any(
        ".".join(["spec", *map(str, e["loc"])]) + rule.field_path == dotted
        for e in errors
        for rule in _rules_with_paths()
        if rule.message in e["msg"]
    )
    assert dotted in named or in_message or by_rule, f"{field} not in {named} / {errors}"


def _rules_with_paths() -> list[Rule]:
    models, todo = [], [ApiModel]
    while todo:
        model = todo.pop()
        models.append(model)
        todo += model.__subclasses__()
    return [r for m in models for r in m.__dict__.get("cel_rules", ()) if r.field_path]


def test_minimal_training_job_gets_defaults() -> None:
    spec = TrainingJobSpec.model_validate(MINIMAL_JOB)
    assert spec.resources.workers == 1
    assert spec.runtime.type == "kuberay"
    assert spec.method.hyperparameters.mixed_precision == "no"
    assert spec.data.preparation.tokenization.block_size == 1024
    assert spec.to_dict()["output"] == {"registry": {"s3": {"bucket": "models"}}, "modelName": "tiny"}


def test_python_names_and_camel_case_names_both_work() -> None:
    a = Resources(gpu_type="NVIDIA-L4", node_selector={"pool": "gpu"})
    b = Resources.model_validate({"gpuType": "NVIDIA-L4", "nodeSelector": {"pool": "gpu"}})
    assert a == b
    assert a.to_dict()["gpuType"] == "NVIDIA-L4"


@pytest.mark.parametrize(
    ("patch", "loc", "text"),
    [
        ({"model": {"base": {"name": "m"}}}, ("model", "base"), "exactly one of version or alias"),
        ({"model": {}}, ("model",), "exactly one of base, baseModel or architecture"),
        ({"method": {"type": "lora", "lora": {"r": 0}}}, ("method", "lora", "r"), "greater than or equal"),
        ({"method": {"type": "full", "lora": {}}}, ("method",), "only to the lora and qlora"),
        ({"method": {"type": "full", "hyperparameters": {"learningRate": 0}}}, None, "greater than 0"),
        ({"data": {"sources": []}}, ("data", "sources"), "at least 1"),
        ({"data": {"sources": [{"uri": "http://x/y"}]}}, ("data", "sources", 0, "uri"), "pattern"),
        (
            {"data": {"sources": [{"uri": "/d"}], "preparation": {"minLength": 9, "maxLength": 3}}},
            None,
            "minLength",
        ),
        ({"resources": {"perWorker": {"memory": "16GB"}}}, None, "pattern"),
        ({"runtime": {"address": "http://ray:8265"}}, ("runtime",), "address is required"),
        ({"suspend": "maybe"}, ("suspend",), "boolean"),
        ({"ttlSecondsAfterFinished": -1}, ("ttlSecondsAfterFinished",), "greater than or equal"),
        ({"method": {"type": "quantize", "quantization": {"scheme": "W8A8"}}}, None, "set model.base"),
        (
            {
                "model": {"base": {"name": "m", "version": "1"}},
                "method": {"type": "quantize", "quantization": {"scheme": "W8A8"}},
                "resources": {"workers": 2},
            },
            None,
            "method quantize runs on one worker",
        ),
        ({"method": {"type": "quantize"}}, ("method",), "needs quantization settings"),
        ({"method": {"type": "distill"}}, ("method",), "needs distillation settings"),
        (
            {"method": {"type": "full", "distillation": {"teacher": {"name": "t", "version": "1"}}}},
            ("method",),
            "applies to method distill only",
        ),
        (
            {
                "model": {"base": {"name": "m", "version": "1"}},
                "method": {
                    "type": "quantize",
                    "quantization": {"scheme": "FP8_DYNAMIC", "algorithm": "GPTQ"},
                },
            },
            ("method", "quantization"),
            "FP8_DYNAMIC takes algorithm RTN only",
        ),
        (
            {
                "model": {"base": {"name": "m", "version": "1"}},
                "method": {
                    "type": "quantize",
                    "quantization": {"scheme": "W4A16", "algorithm": "SmoothQuantGPTQ"},
                },
            },
            ("method", "quantization"),
            "SmoothQuantGPTQ applies to scheme W8A8 only",
        ),
        (
            {
                "evaluation": {
                    "gates": [{"metric": "perplexity", "compare": "ratio", "operator": "<=", "threshold": 1}]
                }
            },
            None,
            "need a baseline",
        ),
        (
            {
                "method": {
                    "type": "distill",
                    "distillation": {"teacher": {"name": "t", "version": "1"}, "alpha": 2},
                }
            },
            ("method", "distillation", "alpha"),
            "less than or equal to 1",
        ),
    ],
)
def test_invalid_training_job(patch: dict, loc: tuple | None, text: str) -> None:
    with pytest.raises(ValidationError) as caught:
        TrainingJobSpec.model_validate(MINIMAL_JOB | patch)
    errors = caught.value.errors()
    assert any(text in e["msg"] for e in errors), errors
    if loc is not None:
        assert loc in {e["loc"] for e in errors}, errors


@pytest.mark.parametrize(
    ("spec", "text"),
    [
        ({"model": {"name": "m", "alias": "prod"}, "autoscaling": {"minReplicas": 0}}, "needs scaleToZero"),
        ({"model": {"name": "m", "alias": "prod"}, "engine": {"dtype": "fp4"}}, "Input should be"),
        ({"model": {"name": "Bad_Name", "alias": "prod"}}, "pattern"),
        (
            {"model": {"name": "m", "alias": "prod"}, "gateway": {"payloadSampling": {"rate": 0.1}}},
            "Field required",
        ),
        ({"model": {"name": "m", "alias": "prod"}, "monitoring": {"drift": {}}}, "referenceData is required"),
        ({"model": {"name": "m", "alias": "prod"}, "engine": {"extraArgs": ["x"] * 33}}, "at most 32"),
    ],
)
def test_invalid_model_deployment(spec: dict, text: str) -> None:
    with pytest.raises(ValidationError, match=text):
        ModelDeploymentSpec.model_validate(spec)


def test_quantities_are_int_or_string() -> None:
    assert Resources(cpu=4, memory="16Gi").to_dict() == {
        "cpu": 4,
        "memory": "16Gi",
        "gpus": 0,
        "nodeSelector": {},
        "tolerations": [],
    }
    assert Resources(cpu="500m").cpu == "500m"


def test_model_reference_round_trip() -> None:
    ref = ModelReference(name="support-bot", version="3")
    assert ref.to_dict() == {"name": "support-bot", "version": "3"}


def test_status_parses_what_the_apiserver_returns() -> None:
    status = TrainingJobStatus.model_validate(
        {
            "observedGeneration": 2,
            "phase": "Running",
            "conditions": [
                {
                    "type": "Ready",
                    "status": "False",
                    "reason": "Training",
                    "message": "step 10 of 100",
                    "lastTransitionTime": "2025-01-02T03:04:05Z",
                }
            ],
            "progress": {"stage": "Training", "step": 10, "totalSteps": 100, "loss": 2.5},
            "evaluation": {"qa/exact_match": 0.5},
        }
    )
    assert status.conditions[0].last_transition_time.year == 2025
    with pytest.raises(ValidationError, match="phase"):
        TrainingJobStatus.model_validate({"phase": "Exploded"})


def test_training_job_spec_can_be_embedded() -> None:
    """A template (a resource embedding the spec; none exists yet) carries no transition rules."""
    assert "oldSelf" not in json.dumps(TrainingJobSpec.model_json_schema())


def test_every_resource_is_complete() -> None:
    for resource in RESOURCES:
        assert resource.spec.__doc__ and resource.status.__doc__
        assert resource.printer_columns[-1].name == "Age"


def test_example_names_are_unique_per_kind() -> None:
    """Examples are applied together (tests/cluster/test_examples_as_written.py, and by users into one
    namespace): two of one kind with one name would silently replace each other."""
    names = [(d["kind"], d["metadata"]["name"]) for d in (yaml.safe_load(p.read_text()) for p in VALID)]
    assert len(names) == len(set(names)), sorted(names)


def test_the_baseline_defaults_to_the_parent_or_the_teacher() -> None:
    """Relative gates of a quantize run compare with its parent, of a distill run with its teacher."""
    parent = {"name": "tiny", "version": "3"}
    evaluation = {
        "gates": [{"metric": "perplexity", "compare": "ratio", "operator": "<=", "threshold": 1.03}]
    }
    quantize = TrainingJobSpec.model_validate(
        MINIMAL_JOB
        | {
            "model": {"base": parent},
            "method": {"type": "quantize", "quantization": {"scheme": "W4A16", "algorithm": "GPTQ"}},
            "evaluation": evaluation,
        }
    )
    assert quantize.baseline_reference() == quantize.parent_reference() == ModelReference(**parent)
    assert quantize.method.quantization.ignore == ["lm_head"]
    assert quantize.method.quantization.calibration_samples == 256
    teacher = {"name": "big", "alias": "production"}
    distill = TrainingJobSpec.model_validate(
        MINIMAL_JOB
        | {"method": {"type": "distill", "distillation": {"teacher": teacher}}, "evaluation": evaluation}
    )
    assert distill.baseline_reference() == distill.parent_reference() == ModelReference(**teacher)
    assert (distill.method.distillation.temperature, distill.method.distillation.alpha) == (2.0, 0.5)
    champion = {"name": "big", "version": "9"}
    explicit = distill.model_copy(
        update={"evaluation": distill.evaluation.model_copy(update={"baseline": ModelReference(**champion)})}
    )
    assert explicit.baseline_reference() == ModelReference(**champion)
    assert explicit.parent_reference() == ModelReference(**teacher)  # lineage still names the teacher
    assert distill.model_copy(update={"evaluation": None}).baseline_reference() is None  # nothing scored
    plain = TrainingJobSpec.model_validate(MINIMAL_JOB)
    assert plain.baseline_reference() is None and plain.parent_reference() is None


def _s3_locations(node: object, path: str = "") -> list[tuple[str, dict]]:
    if isinstance(node, list):
        return [found for i, v in enumerate(node) for found in _s3_locations(v, f"{path}[{i}]")]
    if not isinstance(node, dict):
        return []
    here = [(path, node["s3"])] if isinstance(node.get("s3"), dict) else []
    return here + [found for k, v in node.items() for found in _s3_locations(v, f"{path}.{k}")]


def test_the_examples_share_the_in_cluster_minio() -> None:
    """Every S3 location of examples/*.yaml is the one MinIO of the install docs, with a Secret: one
    that names AWS (a region, the pod's identity) reads a registry where the others' versions
    (a quantize run's parent, a distil run's teacher) are not."""
    wrong = [
        f"{p.name}: {where}"
        for p in VALID
        for where, s3 in _s3_locations(yaml.safe_load(p.read_text()))
        if s3.get("endpoint") != "http://minio.llmops-system:9000" or "region" in s3
        or "credentialsSecretRef" not in s3
    ]  # fmt: skip
    assert not wrong
    registries = {
        p.name: (s3["bucket"], s3.get("prefix"))
        for p in VALID
        for where, s3 in _s3_locations(yaml.safe_load(p.read_text()))
        if where.endswith("registry") and "support-bot" in p.read_text()
    }
    assert set(registries.values()) == {("models", "support/")}, registries
