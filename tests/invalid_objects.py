"""Invalid llmops objects for admission tests: a valid example from examples/ with exactly one thing wrong.

What the schema refuses (types, bounds, lengths, patterns, enums, required fields, list limits, unknown
fields) is read from the generated CRDs in crds/, so the objects keep up with the API. Only the
cross-field (CEL) violations are written by hand, because a rule's meaning cannot be read from its text;
their messages and field paths still come from the CRDs.

Each object carries the field path the apiserver must name and a regular expression for its message, in
the forms the apiserver writes: `spec.x.y: ...`, `spec.x[0].y: ...` and `unknown field "spec.x.y"`.
Pure: nothing here talks to a cluster.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from hypothesis import reject
from hypothesis import strategies as st
from hypothesis.strategies import DrawFn

ROOT = Path(__file__).parents[1]
EXAMPLES_DIR = ROOT / "examples"
CRDS_DIR = ROOT / "crds"

FieldPath = tuple[str | int, ...]
Schema = dict[str, Any]

# Printable ASCII only, without newlines: Go's RE2 and Python's re then agree on every pattern in the CRDs
# (Python's `$` would match before a trailing newline, and its \s knows \v, Go's does not).
ALPHABET = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
JSON_TYPES = ("string", "integer", "number", "boolean", "object", "array")
# The JSON types each schema type takes; int-or-string is Kubernetes' quantity type.
ACCEPTS = {
    "string": {"string"},
    "integer": {"integer"},
    "number": {"number", "integer"},
    "boolean": {"boolean"},
    "object": {"object"},
    "array": {"array"},
    "int-or-string": {"integer", "string"},
}
VALUES = {
    "string": st.text(ALPHABET, max_size=12),
    "integer": st.integers(-(10**9), 10**9),
    # Non-integral: the apiserver reads 3.0 as the integer 3.
    "number": st.floats(-1e6, 1e6, allow_nan=False).filter(lambda x: not x.is_integer()),
    "boolean": st.booleans(),
    # Empty: keys inside would be refused as unknown fields before the type is checked.
    "object": st.just({}),
    "array": st.lists(st.integers(0, 9) | st.text(ALPHABET, max_size=4), max_size=3),
}


# -- the API and the examples ----------------------------------------------------------------------


@dataclass(frozen=True)
class Crd:
    kind: str
    group: str
    version: str
    plural: str
    schema: Schema


@dataclass(frozen=True)
class Example:
    name: str
    crd: Crd
    body: dict[str, Any]


def load_crds() -> dict[str, Crd]:
    crds = {}
    for path in sorted(CRDS_DIR.glob("*.yaml")):
        spec = yaml.safe_load(path.read_text())["spec"]
        (version,) = [v for v in spec["versions"] if v.get("storage")]
        names = spec["names"]
        schema = version["schema"]["openAPIV3Schema"]
        crds[names["kind"]] = Crd(names["kind"], spec["group"], version["name"], names["plural"], schema)
    return crds


CRDS = load_crds()
EXAMPLES = [
    Example(path.name, CRDS[doc["kind"]], doc)
    for path in sorted(EXAMPLES_DIR.glob("*.yaml"))
    for doc in [yaml.safe_load(path.read_text())]
]


def render(path: FieldPath) -> str:
    """A field path as the apiserver writes it: spec.data.sources[0].uri."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else part
    return out


def schema_type(schema: Schema) -> str | None:
    return "int-or-string" if schema.get("x-kubernetes-int-or-string") else schema.get("type")


def schema_at(crd: Crd, path: FieldPath) -> Schema:
    node = crd.schema
    for part in path:
        node = node["items"] if isinstance(part, int) else node["properties"][part]
    return node


def get_at(body: Any, path: FieldPath) -> Any:
    for part in path:
        body = body[part]
    return body


def set_at(body: dict, path: FieldPath, value: Any) -> None:
    get_at(body, path[:-1])[path[-1]] = value


def delete_at(body: dict, path: FieldPath) -> None:
    del get_at(body, path[:-1])[path[-1]]


@dataclass(frozen=True)
class Site:
    """A place in an example that the schema describes: a field that is there, or one that could be."""

    example: Example
    path: FieldPath
    schema: Schema
    present: bool

    @property
    def value(self) -> Any:
        return get_at(self.example.body, self.path)


def sites(example: Example) -> Iterator[Site]:
    """Every schema node under spec that the example has, and every optional field it leaves out.

    apiVersion, kind and metadata are the apiserver's own; status is dropped on create.
    """

    def walk(schema: Schema, value: Any, path: FieldPath) -> Iterator[Site]:
        yield Site(example, path, schema, True)
        if "properties" in schema and isinstance(value, dict):
            for name, sub in schema["properties"].items():
                if not path and name != "spec":
                    continue
                if name in value:
                    yield from walk(sub, value[name], (*path, name))
                else:
                    yield Site(example, (*path, name), sub, False)
        elif isinstance(schema.get("additionalProperties"), dict) and isinstance(value, dict):
            for key, item in value.items():
                yield from walk(schema["additionalProperties"], item, (*path, key))
        elif "items" in schema and isinstance(value, list):
            for index, item in enumerate(value):
                yield from walk(schema["items"], item, (*path, index))

    yield from walk(example.crd.schema, example.body, ())


SITES = [site for example in EXAMPLES for site in sites(example)]


# -- what the apiserver must answer --------------------------------------------------------------


def said(path: str) -> str:
    """Regex: an error about exactly this field (not a longer path that ends with it)."""
    return rf"(?<![\w.]){re.escape(path)}: "


@dataclass(frozen=True, eq=False, repr=False)
class Invalid:
    """One object the apiserver must refuse."""

    family: str
    example: str
    crd: Crd
    body: dict[str, Any]
    path: str  # the field the message must name
    expect: str  # regex the message must match
    status: int  # 422 Invalid, or 400 BadRequest for strict decoding (unknown fields)
    change: str  # what was done to the example, for failure messages

    @property
    def key(self) -> str:
        return json.dumps(self.body, sort_keys=True)

    def named_in(self, message: str) -> bool:
        return re.search(self.expect, message) is not None

    def __str__(self) -> str:
        return f"[{self.family}] {self.example}: {self.change}"

    __repr__ = __str__


def _mutated(
    site: Site,
    family: str,
    change: Callable[[dict], None],
    path: FieldPath,
    expect: str,
    what: str,
    status: int = 422,
) -> Invalid:
    body = copy.deepcopy(site.example.body)
    change(body)
    return Invalid(family, site.example.name, site.example.crd, body, render(path), expect, status, what)


def _set(site: Site, family: str, value: Any, expect: str, what: str = "") -> Invalid:
    path = render(site.path)
    return _mutated(
        site,
        family,
        lambda body: set_at(body, site.path, value),
        site.path,
        expect,
        f"{path} = {json.dumps(value)[:80]}{' (' + what + ')' if what else ''}",
    )


# -- families of mutations, read from the schema ---------------------------------------------------


@dataclass(frozen=True)
class Family:
    name: str
    applies: Callable[[Site], bool]
    build: Callable[[Site, DrawFn], Invalid]

    @property
    def points(self) -> list[Site]:
        return [site for site in SITES if self.applies(site)]


def _wrong_type(site: Site, draw: DrawFn) -> Invalid:
    want = schema_type(site.schema)
    got = draw(st.sampled_from([t for t in JSON_TYPES if t not in ACCEPTS[want]]))
    value = draw(VALUES[got])
    path = re.escape(render(site.path))
    wanted = "integer,string" if want == "int-or-string" else want
    expect = (
        said(render(site.path)) + rf'Invalid value: "{got}": {path} in body must be of type {wanted}: "{got}"'
    )
    return _set(site, "wrong type", value, expect, f"{got} for {want}")


def _bound(side: str) -> Callable[[Site, DrawFn], Invalid]:
    def build(site: Site, draw: DrawFn) -> Invalid:
        bound = site.schema[side]
        exclusive = site.schema.get(f"exclusive{side.capitalize()}", False)
        kind = site.schema["type"]
        sign = -1 if side == "minimum" else 1
        if kind == "integer":
            near = bound if exclusive else bound + sign
            far = bound + sign * 10**6
            value = draw(st.integers(min(near, far), max(near, far)))
        else:
            lo, hi = (bound - 1e6, bound) if sign < 0 else (bound, bound + 1e6)
            # Compared as the apiserver compares (-0.0 is not below a minimum of 0).
            outside = (
                (lambda v: v * sign >= bound * sign) if exclusive else (lambda v: v * sign > bound * sign)
            )
            value = draw(st.floats(lo, hi).filter(outside))
        relation = "greater" if side == "minimum" else "less"
        tail = "(?!or )" if exclusive else "or equal to "
        path = render(site.path)
        expect = (
            said(path) + rf"Invalid value: \S+: {re.escape(path)} in body should be {relation} than {tail}"
        )
        return _set(site, f"{'below' if sign < 0 else 'above'} {side}", value, expect)

    return build


def _is_string(site: Site) -> bool:
    return schema_type(site.schema) in ("string", "int-or-string")


def _repeat(draw: DrawFn, length: int) -> str:
    seed = draw(st.text(ALPHABET, min_size=1, max_size=6))
    return (seed * (length // len(seed) + 1))[:length]


def _too_long(site: Site, draw: DrawFn) -> Invalid:
    limit = site.schema["maxLength"]
    value = _repeat(draw, draw(st.integers(limit + 1, limit + 16)))
    expect = said(render(site.path)) + rf"Too long: may not be (?:more|longer) than {limit}\b"
    return _set(site, "over maxLength", value, expect, f"{len(value)} > maxLength {limit}")


def _too_short(site: Site, draw: DrawFn) -> Invalid:
    limit = site.schema["minLength"]
    value = draw(st.text(ALPHABET, max_size=limit - 1))
    path = render(site.path)
    expect = (
        said(path) + rf'Invalid value: ".*?": {re.escape(path)} in body should be at least {limit} chars long'
    )
    return _set(site, "under minLength", value, expect)


def _matches(pattern: str, value: str) -> bool:
    return re.search(pattern, value, re.ASCII) is not None


def _no_match(site: Site, draw: DrawFn) -> Invalid:
    pattern = site.schema["pattern"]
    low, high = site.schema.get("minLength", 0), site.schema.get("maxLength", 64)
    seed = draw(st.text(ALPHABET, max_size=min(high, 24)))
    # Near misses of a valid-looking value first, so that permissive patterns still give misses.
    tries = [seed, f" {seed}", f"{seed} ", f"/{seed}", f"-{seed}", seed.upper() + "_", f"{seed}/ x"]
    value = next((t for t in tries if low <= len(t) <= high and not _matches(pattern, t)), None)
    if value is None:
        reject()
    path = render(site.path)
    expect = (
        said(path) + rf'Invalid value: ".*?": {re.escape(path)} in body should match \'{re.escape(pattern)}\''
    )
    return _set(site, "pattern mismatch", value, expect)


def _not_in_enum(site: Site, draw: DrawFn) -> Invalid:
    allowed = site.schema["enum"]
    near_miss = st.tuples(st.sampled_from(allowed), st.sampled_from(["", "x", " "]))
    value = draw(
        near_miss.map(lambda t: f"{t[0]}".upper() + t[1]) | st.text(ALPHABET, min_size=1, max_size=12)
    )
    if value in allowed:
        reject()
    return _set(
        site, "not in enum", value, said(render(site.path)) + r'Unsupported value: ".*?": supported values: '
    )


def _too_many(site: Site, draw: DrawFn) -> Invalid:
    limit = site.schema["maxItems"]
    pool = site.value if site.present and site.value else site.schema["items"]["enum"]
    count = draw(st.integers(limit + 1, limit + 3))
    value = [copy.deepcopy(pool[i % len(pool)]) for i in range(count)]
    expect = said(render(site.path)) + rf"Too many: {count}: must have at most {limit} items"
    return _set(site, "over maxItems", value, expect, f"{count} items > maxItems {limit}")


def _too_few(site: Site, draw: DrawFn) -> Invalid:
    limit = site.schema["minItems"]
    value = site.value[: draw(st.integers(0, limit - 1))] if site.present else []
    path = render(site.path)
    expect = (
        said(path)
        + rf"Invalid value: {len(value)}: {re.escape(path)} in body should have at least {limit} items"
    )
    return _set(site, "under minItems", value, expect)


def _missing_required(site: Site, draw: DrawFn) -> Invalid:
    name = draw(st.sampled_from([r for r in site.schema["required"] if r in site.value]))
    path = (*site.path, name)
    # null is pruned from non-nullable fields before validation, so it reads as missing too.
    as_null = draw(st.booleans())
    if as_null:
        change, what = (lambda body: set_at(body, path, None)), f"{render(path)} = null"
    else:
        change, what = (lambda body: delete_at(body, path)), f"{render(path)} removed"
    return _mutated(site, "missing required", change, path, said(render(path)) + "Required value", what)


def _camel_to_snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def _unknown_field(site: Site, draw: DrawFn) -> Invalid:
    known = site.schema["properties"]
    near = [v for n in known for v in (_camel_to_snake(n), n[:1].upper() + n[1:], n + "s") if v not in known]
    name = draw(st.sampled_from(near) | st.from_regex(r"[a-zA-Z][a-zA-Z0-9_]{0,15}", fullmatch=True))
    if name in known:
        reject()
    value = draw(VALUES["integer"] | VALUES["string"] | VALUES["boolean"])
    path = (*site.path, name)
    return _mutated(
        site,
        "unknown field",
        lambda body: set_at(body, path, value),
        path,
        rf'unknown field "{re.escape(render(path))}"',
        f"{render(path)} = {json.dumps(value)} (not in the schema)",
        status=400,
    )


def _duplicate(site: Site, draw: DrawFn) -> Invalid:
    items = site.value
    copied = draw(st.integers(0, len(items) - 1))
    path = (*site.path, len(items))
    return _set(
        site,
        "duplicate in list",
        [*items, copy.deepcopy(items[copied])],
        said(render(path)) + "Duplicate value: ",
        f"item {copied} repeated ({site.schema['x-kubernetes-list-type']} list)",
    )


def _under_spec(site: Site) -> bool:
    return len(site.path) >= 1


def _number(site: Site) -> bool:
    return site.schema.get("type") in ("integer", "number")


FAMILIES = [
    Family("wrong type", lambda s: _under_spec(s) and schema_type(s.schema) in ACCEPTS, _wrong_type),
    Family("below minimum", lambda s: _number(s) and "minimum" in s.schema, _bound("minimum")),
    Family("above maximum", lambda s: _number(s) and "maximum" in s.schema, _bound("maximum")),
    Family("over maxLength", lambda s: _is_string(s) and "maxLength" in s.schema, _too_long),
    Family("under minLength", lambda s: _is_string(s) and s.schema.get("minLength", 0) > 0, _too_short),
    Family("pattern mismatch", lambda s: _is_string(s) and "pattern" in s.schema, _no_match),
    Family("not in enum", lambda s: "enum" in s.schema, _not_in_enum),
    Family(
        "over maxItems",
        lambda s: "maxItems" in s.schema and ((s.present and bool(s.value)) or "enum" in s.schema["items"]),
        _too_many,
    ),
    Family("under minItems", lambda s: s.schema.get("minItems", 0) > 0, _too_few),
    Family(
        "missing required",
        lambda s: (
            s.present
            and isinstance(s.value, dict)
            and any(r in s.value for r in s.schema.get("required", ()))
        ),
        _missing_required,
    ),
    Family(
        "unknown field",
        lambda s: s.present and isinstance(s.value, dict) and "properties" in s.schema,
        _unknown_field,
    ),
    Family(
        "duplicate in list",
        lambda s: (
            s.present
            and s.schema.get("x-kubernetes-list-type") in ("set", "map")
            and 0 < len(s.value) < s.schema.get("maxItems", 1 << 30)
        ),
        _duplicate,
    ),
]


# -- cross-field rules (CEL) -----------------------------------------------------------------------

Spec = dict[str, Any]


def cel_rules(crd: Crd) -> set[tuple[str, str]]:
    """(node, message) of every rule the CRD checks on create; nodes in lists read `x[*].y`.

    Transition rules (those that read oldSelf) run on updates only and are left out.
    """
    found = set()

    def walk(schema: Schema, path: str) -> None:
        for rule in schema.get("x-kubernetes-validations", []):
            if "oldSelf" not in rule["rule"]:
                found.add((path, rule["message"]))
        for name, sub in schema.get("properties", {}).items():
            walk(sub, f"{path}.{name}")
        if "items" in schema:
            walk(schema["items"], f"{path}[*]")

    walk(crd.schema["properties"]["spec"], "spec")
    return found


@dataclass(frozen=True)
class CelCase:
    """How to break one CEL rule of one kind, with every other field left valid."""

    kind: str
    node: str  # where the rule sits, as cel_rules() names it
    message: str
    # Breaks the rule in a copy of an example's spec; returns the path of the node that was broken.
    mutate: Callable[[Spec, DrawFn], FieldPath]

    @property
    def label(self) -> str:
        return f"{self.kind} {self.node}: {self.message}"


MD, TJ, RP, MR = "ModelDeployment", "TrainingJob", "RetrainPolicy", "ModelRetirement"
VERSIONS = st.sampled_from(["1", "2", "7", "v2.1"])
ALIASES = st.sampled_from(["production", "staging", "shadow"])
VERSION_XOR_ALIAS = "set exactly one of version or alias"
S3_XOR_LOCAL = "set exactly one of s3 or local"


def _dig(spec: Spec, *keys: str) -> dict:
    for key in keys:
        spec = spec.setdefault(key, {})
    return spec


def _break_reference(ref: dict, draw: DrawFn) -> None:
    """A model reference with both a version and an alias, or neither."""
    if draw(st.booleans()):
        ref.pop("version", None)
        ref.pop("alias", None)
    else:
        ref["version"] = ref.get("version") or draw(VERSIONS)
        ref["alias"] = ref.get("alias") or draw(ALIASES)


def _canary(spec: Spec) -> dict:
    """The example's canary, or a new one for a model of another name (so it differs from stable)."""
    rollout = _dig(spec, "rollout")
    if "canary" not in rollout:
        rollout["canary"] = {"model": {"name": f"{spec['model']['name'][:50]}-next", "version": "1"}}
    return rollout["canary"]


def _architecture(spec: Spec) -> dict:
    """The example's architecture, or a switch to pre-training one (the other fields stay valid)."""
    if "architecture" not in spec["model"]:
        spec["model"] = {"architecture": copy.deepcopy(_valid_architecture())}
        spec["method"]["type"] = "pretrain"
        spec["method"].pop("lora", None)
    return spec["model"]["architecture"]


def _valid_architecture() -> dict:
    for example in EXAMPLES:
        arch = example.body["spec"].get("model", {}).get("architecture")
        if arch is not None:
            return arch
    raise AssertionError("no example trains from an architecture")


def _bound_of(kind: str, path: FieldPath, side: str) -> int:
    return schema_at(CRDS[kind], path)[side]


def md_min_over_max(spec: Spec, draw: DrawFn) -> FieldPath:
    scaling = _dig(spec, "autoscaling")
    limit = _bound_of(MD, ("spec", "autoscaling", "minReplicas"), "maximum")
    scaling["maxReplicas"] = top = min(scaling.get("maxReplicas", 1), limit - 1)
    scaling["minReplicas"] = draw(st.integers(top + 1, limit))
    return ("spec", "autoscaling")


def md_zero_without_scale_to_zero(spec: Spec, draw: DrawFn) -> FieldPath:
    scaling = _dig(spec, "autoscaling")
    scaling["minReplicas"] = 0
    if draw(st.booleans()):
        scaling["scaleToZero"] = False
    else:
        scaling.pop("scaleToZero", None)
    return ("spec", "autoscaling")


def md_scale_to_zero_with_hpa(spec: Spec, draw: DrawFn) -> FieldPath:
    scaling = _dig(spec, "autoscaling")
    scaling.update(scaleToZero=True, engine="hpa")
    scaling["minReplicas"] = max(scaling.get("minReplicas", 1), 1)
    return ("spec", "autoscaling")


def md_model_reference(spec: Spec, draw: DrawFn) -> FieldPath:
    _break_reference(spec["model"], draw)
    return ("spec", "model")


def md_canary_reference(spec: Spec, draw: DrawFn) -> FieldPath:
    _break_reference(_canary(spec)["model"], draw)
    return ("spec", "rollout", "canary", "model")


def md_adapter_reference(spec: Spec, draw: DrawFn) -> FieldPath:
    adapters = _dig(spec, "engine").setdefault("loraAdapters", [])
    if not adapters:
        adapters.append({"name": "extra", "model": {"name": "extra-adapter", "version": "1"}})
    index = draw(st.integers(0, len(adapters) - 1))
    _break_reference(adapters[index]["model"], draw)
    return ("spec", "engine", "loraAdapters", index, "model")


def md_canary_is_stable(spec: Spec, draw: DrawFn) -> FieldPath:
    _canary(spec)["model"] = copy.deepcopy(spec["model"])
    return ("spec",)


def md_steps_descending(spec: Spec, draw: DrawFn) -> FieldPath:
    steps = draw(st.lists(st.integers(0, 100), min_size=2, max_size=20).filter(lambda s: s != sorted(s)))
    _canary(spec)["steps"] = steps
    return ("spec", "rollout", "canary")


def md_drift_without_reference(spec: Spec, draw: DrawFn) -> FieldPath:
    drift = _dig(spec, "monitoring", "drift")
    drift.pop("referenceData", None)
    if draw(st.booleans()):
        drift["enabled"] = True
    return ("spec", "monitoring", "drift")


def _drift_on(spec: Spec, draw: DrawFn) -> dict:
    drift = _dig(spec, "monitoring", "drift")
    drift.setdefault("referenceData", {"s3": {"bucket": "datasets", "prefix": "reference/"}})
    if draw(st.booleans()):
        drift["enabled"] = True
    return drift


def md_drift_without_prompts(spec: Spec, draw: DrawFn) -> FieldPath:
    _drift_on(spec, draw).pop("prompts", None)
    _dig(spec, "gateway").pop("payloadSampling", None)
    return ("spec",)


def md_drift_prompts_with_the_registrys_secret(spec: Spec, draw: DrawFn) -> FieldPath:
    name = draw(st.sampled_from(["registry-credentials", "models"]))
    spec["registry"].pop("local", None)
    _dig(spec, "registry", "s3").setdefault("bucket", "models")
    spec["registry"]["s3"]["credentialsSecretRef"] = {"name": name}
    bucket = draw(st.sampled_from(["models", "drift"]))
    _drift_on(spec, draw)["prompts"] = {"s3": {"bucket": bucket, "credentialsSecretRef": {"name": name}}}
    return ("spec",)


def md_feedback_without_payload_sampling(spec: Spec, draw: DrawFn) -> FieldPath:
    gateway = _dig(spec, "gateway")
    gateway.pop("payloadSampling", None)
    gateway["feedback"] = draw(st.sampled_from([{}, {"enabled": True}, {"idTtlSeconds": 3600}]))
    drift = _dig(spec, "monitoring").get("drift")
    if drift is not None:  # keep the drift rule's prompts, which payload sampling may have stood for
        drift.setdefault("prompts", {"s3": {"bucket": "drift"}})
    return ("spec", "gateway")


def md_payload_with_the_registrys_secret(spec: Spec, draw: DrawFn) -> FieldPath:
    """Payload samples written with the registry's own Secret (the gateway would then hold it)."""
    registry = spec["registry"].setdefault("s3", {"bucket": "models"})
    spec["registry"].pop("local", None)
    secret = registry.setdefault(
        "credentialsSecretRef", {"name": draw(st.sampled_from(["registry", "s3-keys"]))}
    )
    destination = {"s3": {"bucket": "payloads", "credentialsSecretRef": {"name": secret["name"]}}}
    _dig(spec, "gateway")["payloadSampling"] = {
        "rate": draw(st.sampled_from([0, 0.01, 1])),
        "destination": destination,
    }
    return ("spec",)


def md_tensor_parallel_over_gpus(spec: Spec, draw: DrawFn) -> FieldPath:
    gpus = draw(st.integers(0, 63))
    resources = _dig(spec, "resources")
    if gpus == 0 and draw(st.booleans()):
        resources.pop("gpus", None)  # the default, 0
    else:
        resources["gpus"] = gpus
    _dig(spec, "engine")["tensorParallelSize"] = draw(st.integers(max(gpus + 1, 2), 64))
    return ("spec",)


def tj_min_length_over_max(spec: Spec, draw: DrawFn) -> FieldPath:
    preparation = _dig(spec, "data", "preparation")
    preparation["maxLength"] = draw(st.integers(1, 10**6))
    preparation["minLength"] = preparation["maxLength"] + draw(st.integers(1, 1000))
    return ("spec", "data", "preparation")


def tj_lora_settings_elsewhere(spec: Spec, draw: DrawFn) -> FieldPath:
    method = spec["method"]
    if method["type"] in ("lora", "qlora"):
        # Another method this model may use: pretrain starts from anything, full needs a base.
        has_base = "base" in spec["model"] or "baseModel" in spec["model"]
        method["type"] = draw(st.sampled_from(["pretrain", "full"] if has_base else ["pretrain"]))
    method.setdefault("lora", draw(st.sampled_from([{}, {"r": 8}, {"alpha": 16, "dropout": 0.1}])))
    return ("spec", "method")


def tj_hidden_size_not_multiple(spec: Spec, draw: DrawFn) -> FieldPath:
    arch = _architecture(spec)
    kv = arch.get("kvHeads", 1)
    arch["heads"] = heads = kv * draw(st.integers(-(-2 // kv), 16))
    arch["hiddenSize"] = heads * draw(st.integers(8, 64)) + draw(st.integers(1, heads - 1))
    return ("spec", "model", "architecture")


def tj_heads_not_multiple_of_kv(spec: Spec, draw: DrawFn) -> FieldPath:
    arch = _architecture(spec)
    arch["kvHeads"] = kv = draw(st.integers(2, 16))
    arch["heads"] = heads = kv * draw(st.integers(1, 16)) + draw(st.integers(1, kv - 1))
    arch["hiddenSize"] = heads * draw(st.integers(8, 16))
    return ("spec", "model", "architecture")


def tj_base_reference(spec: Spec, draw: DrawFn) -> FieldPath:
    if "base" not in spec["model"]:
        spec["model"] = {"base": {"name": "support-bot", "version": "3"}}
    _break_reference(spec["model"]["base"], draw)
    return ("spec", "model", "base")


def tj_baseline_reference(spec: Spec, draw: DrawFn) -> FieldPath:
    evaluation = spec.setdefault("evaluation", {})
    evaluation.setdefault("baseline", {"name": "support-bot", "alias": "champion"})
    _break_reference(evaluation["baseline"], draw)
    return ("spec", "evaluation", "baseline")


def tj_teacher_reference(spec: Spec, draw: DrawFn) -> FieldPath:
    spec["method"] = {"type": "distill", "distillation": {"teacher": {"name": "teacher", "version": "2"}}}
    _break_reference(spec["method"]["distillation"]["teacher"], draw)
    return ("spec", "method", "distillation", "teacher")


SAMPLES = {"s3": {"bucket": "gateway-samples", "prefix": "support-bot"}}


def tj_source_uri_and_traffic(spec: Spec, draw: DrawFn) -> FieldPath:
    """A data source with both a uri and servedTraffic, or neither."""
    sources = spec["data"]["sources"]
    index = draw(st.integers(0, len(sources) - 1))
    both = draw(st.booleans())
    if "uri" in sources[index]:
        if both:
            sources[index]["servedTraffic"] = {"location": copy.deepcopy(SAMPLES)}
        else:
            sources[index].pop("uri")
    elif both:
        sources[index]["uri"] = "s3://datasets/corpus.jsonl"
    else:
        sources[index].pop("servedTraffic")
    return ("spec", "data", "sources", index)


def tj_traffic_without_pii(spec: Spec, draw: DrawFn) -> FieldPath:
    """Served traffic as a source without (enabled) PII scrubbing."""
    spec["data"]["sources"].append({"servedTraffic": {"location": copy.deepcopy(SAMPLES)}})
    preparation = spec["data"].setdefault("preparation", {})
    if draw(st.booleans()):
        preparation.pop("pii", None)
    else:
        preparation["pii"] = {"enabled": False}
    return ("spec", "data")


def tj_traffic_location(spec: Spec, draw: DrawFn) -> FieldPath:
    """A servedTraffic location with both s3 and local, or neither."""
    location: dict = {}
    if draw(st.booleans()):
        location.update(s3={"bucket": "gateway-samples"}, local={"path": "/samples"})
    spec["data"]["sources"].append({"servedTraffic": {"location": location}})
    spec["data"].setdefault("preparation", {})["pii"] = {}
    return ("spec", "data", "sources", len(spec["data"]["sources"]) - 1, "servedTraffic", "location")


def tj_model_sources(spec: Spec, draw: DrawFn) -> FieldPath:
    sources = {
        "base": {"name": "support-bot", "version": "3"},
        "baseModel": "s3://checkpoints/base/",
        "architecture": copy.deepcopy(_valid_architecture()),
    }
    chosen = draw(st.sets(st.sampled_from(sorted(sources))).filter(lambda s: len(s) != 1))
    spec["model"] = {name: sources[name] for name in sorted(chosen)}
    return ("spec", "model")


def tj_runtime_address(spec: Spec, draw: DrawFn) -> FieldPath:
    runtime = _dig(spec, "runtime")
    if draw(st.booleans()):
        runtime["type"] = "rayJobsAPI"
        runtime.pop("address", None)
    else:
        if draw(st.booleans()):
            runtime["type"] = "kuberay"
        else:
            runtime.pop("type", None)
        runtime["address"] = "http://raycluster-head-svc:8265"
    return ("spec", "runtime")


def tj_rayjobsapi_env_from_secrets(spec: Spec, draw: DrawFn) -> FieldPath:
    """A shared Ray cluster asked to take Secrets into its environment."""
    runtime = spec.setdefault("runtime", {})
    runtime.update(type="rayJobsAPI", address="http://raycluster-head-svc:8265")
    runtime["envFromSecrets"] = draw(
        st.lists(st.sampled_from(["hf-token", "s3-keys"]), min_size=1, unique=True)
    )
    return ("spec", "runtime")


def tj_kuberay_local_path(spec: Spec, draw: DrawFn) -> FieldPath:
    """Runtime kuberay (by default or by name) with one location a local path."""
    runtime = spec.setdefault("runtime", {})
    runtime.pop("address", None)
    if draw(st.booleans()):
        runtime["type"] = "kuberay"
    else:
        runtime.pop("type", None)
    where = draw(st.sampled_from(["registry", "source", "traffic", "baseModel", "evaluation"]))
    if where == "registry":
        spec["output"]["registry"] = {"local": {"path": "/models"}}
    elif where == "source":
        spec["data"]["sources"][0]["uri"] = "/data/corpus.jsonl"
    elif where == "traffic":
        spec["data"]["sources"].append({"servedTraffic": {"location": {"local": {"path": "/samples"}}}})
        spec["data"].setdefault("preparation", {})["pii"] = {}
    elif where == "baseModel" and "baseModel" in spec["model"]:
        spec["model"]["baseModel"] = "/checkpoints/tiny"
    elif spec.get("evaluation", {}).get("datasets"):
        spec["evaluation"]["datasets"][0]["uri"] = "/data/eval.jsonl"
    else:
        spec["output"]["registry"] = {"local": {"path": "/models"}}
    return ("spec",)


def tj_fine_tune_from_scratch(spec: Spec, draw: DrawFn) -> FieldPath:
    if "architecture" in spec["model"]:
        spec["method"]["type"] = draw(st.sampled_from(["full", "lora", "qlora"]))
    else:
        spec["model"] = {"architecture": copy.deepcopy(_valid_architecture())}
        if spec["method"]["type"] == "pretrain":
            spec["method"]["type"] = "full"
    return ("spec",)


def _quantize(spec: Spec, quantization: dict | None) -> dict:
    """Make `spec` a quantize run of a registered version; return its method."""
    spec["model"] = {"base": {"name": "parent", "version": "1"}}
    spec["method"] = {"type": "quantize"} | ({"quantization": quantization} if quantization else {})
    return spec["method"]


def tj_quantize_without_base(spec: Spec, draw: DrawFn) -> FieldPath:
    _quantize(spec, {"scheme": "W8A8"})
    spec["model"] = {"baseModel": draw(st.sampled_from(["s3://models/llama", "hf://org/model"]))}
    return ("spec",)


def tj_quantize_workers(spec: Spec, draw: DrawFn) -> FieldPath:
    _quantize(spec, {"scheme": "W8A8"})
    spec.setdefault("resources", {})["workers"] = draw(st.integers(2, 16))
    return ("spec",)


def tj_quantize_settings(spec: Spec, draw: DrawFn) -> FieldPath:
    if draw(st.booleans()):
        _quantize(spec, None)  # quantize without its settings
    else:  # settings on another method
        spec["model"] = {"architecture": copy.deepcopy(_valid_architecture())}
        spec["method"] = {
            "type": "pretrain",
            "quantization": {"scheme": draw(st.sampled_from(["W8A8", "W4A16"]))},
        }
    return ("spec", "method")


def tj_quantize_checkpoints(spec: Spec, draw: DrawFn) -> FieldPath:
    method = _quantize(spec, {"scheme": "W8A8"})
    method["checkpointEverySteps"] = draw(st.integers(1, 1000))
    return ("spec", "method")


def tj_quantize_augmentation(spec: Spec, draw: DrawFn) -> FieldPath:
    _quantize(spec, {"scheme": "W4A16"})
    kind = draw(st.sampled_from(["randomDeletion", "randomSwap", "randomInsertion"]))
    _dig(spec, "data", "preparation")["augmentation"] = [{"type": kind}]
    return ("spec",)


def tj_quantize_leakage_gate(spec: Spec, draw: DrawFn) -> FieldPath:
    _quantize(spec, {"scheme": "W8A8"})
    gate = {"metric": "security/leakage", "operator": "<=", "threshold": draw(st.sampled_from([0, 0.1]))}
    _dig(spec, "evaluation").setdefault("gates", []).append(gate)
    return ("spec",)


def tj_distill_settings(spec: Spec, draw: DrawFn) -> FieldPath:
    if draw(st.booleans()):
        spec["method"] = {"type": "distill"}  # distill without its settings
    else:  # settings on another method
        spec["model"] = {"architecture": copy.deepcopy(_valid_architecture())}
        spec["method"] = {
            "type": "pretrain",
            "distillation": {"teacher": {"name": "teacher", "version": "2"}},
        }
    return ("spec", "method")


def tj_fp8_with_calibration(spec: Spec, draw: DrawFn) -> FieldPath:
    algorithm = draw(st.sampled_from(["GPTQ", "SmoothQuantGPTQ"]))
    _quantize(spec, {"scheme": "FP8_DYNAMIC", "algorithm": algorithm})
    return ("spec", "method", "quantization")


def tj_smoothquant_without_w8a8(spec: Spec, draw: DrawFn) -> FieldPath:
    scheme = draw(st.sampled_from(["W4A16", "FP8_DYNAMIC"]))
    _quantize(spec, {"scheme": scheme, "algorithm": "SmoothQuantGPTQ"})
    return ("spec", "method", "quantization")


def tj_smoothing_without_smoothquant(spec: Spec, draw: DrawFn) -> FieldPath:
    algorithm = draw(st.sampled_from([None, "RTN", "GPTQ"]))
    quantization = {"scheme": "W8A8", "smoothingStrength": 0.5} | (
        {"algorithm": algorithm} if algorithm else {}
    )
    _quantize(spec, quantization)
    return ("spec", "method", "quantization")


def tj_relative_gate_without_baseline(spec: Spec, draw: DrawFn) -> FieldPath:
    if spec["method"]["type"] in ("quantize", "distill"):
        spec["model"] = {"baseModel": "s3://models/llama"}
        spec["method"] = {"type": "full"}
    evaluation = spec.setdefault("evaluation", {})
    evaluation.pop("baseline", None)
    gate = {"metric": "perplexity", "compare": draw(st.sampled_from(["ratio", "difference"]))}
    evaluation.setdefault("gates", []).append(gate | {"operator": "<=", "threshold": 1.03})
    return ("spec",)


def _storage_location(node: str) -> Callable[[Spec, DrawFn], FieldPath]:
    """Break an s3-or-local location: both, or neither. Read from the CRDs, one case per such node."""
    keys = node.split(".")[1:]

    def mutate(spec: Spec, draw: DrawFn) -> FieldPath:
        location = _dig(spec, *keys)
        location.clear()
        if draw(st.booleans()):
            location.update(s3={"bucket": "models"}, local={"path": "/data"})
        return ("spec", *keys)

    return mutate


def _node_selector(node: str) -> Callable[[Spec, DrawFn], FieldPath]:
    """A nodeSelector key that is no label key (core/v1 refuses it in a Pod)."""
    keys = node.split(".")[1:]

    def mutate(spec: Spec, draw: DrawFn) -> FieldPath:
        bad = draw(st.sampled_from(["gpu pool!", "-leading", "a/b/c", "trailing.", "x" * 64]))
        _dig(spec, *keys).setdefault("nodeSelector", {})[bad] = "spot"
        return ("spec", *keys)

    return mutate


def _toleration(node: str, fault: str) -> Callable[[Spec, DrawFn], FieldPath]:
    """A toleration core/v1 refuses: a value with operator Exists, or tolerationSeconds without NoExecute."""
    keys = node.removesuffix(".tolerations[*]").split(".")[1:]

    def mutate(spec: Spec, draw: DrawFn) -> FieldPath:
        toleration = {"key": "nvidia.com/gpu", "operator": "Exists"}
        if fault == "value":
            toleration["value"] = draw(st.sampled_from(["present", "true"]))
        else:
            toleration["effect"] = draw(st.sampled_from(["NoSchedule", "PreferNoSchedule"]))
            toleration["tolerationSeconds"] = draw(st.integers(0, 3600))
        _dig(spec, *keys)["tolerations"] = [toleration]
        return ("spec", *keys, "tolerations", 0)

    return mutate


def rp_same_aliases(spec: Spec, draw: DrawFn) -> FieldPath:
    promotion = _dig(spec, "promotion")
    promotion["championAlias"] = promotion["challengerAlias"] = draw(ALIASES)
    return ("spec", "promotion")


def _quality(fault: str) -> Callable[[Spec, DrawFn], FieldPath]:
    """A quality trigger with no bound, or a range that is empty."""

    def mutate(spec: Spec, draw: DrawFn) -> FieldPath:
        trigger = {"name": "errors", "query": "vector(0)"}
        if fault == "range":
            trigger["max"] = high = draw(st.floats(-100, 100, allow_nan=False))
            trigger["min"] = high + draw(st.floats(0.5, 100, allow_nan=False))
        _dig(spec, "triggers")["quality"] = [trigger]
        return ("spec", "triggers", "quality", 0)

    return mutate


def rp_threshold_without_bound(spec: Spec, draw: DrawFn) -> FieldPath:
    metric = {
        "metric": draw(st.sampled_from(["perplexity", "qa/rouge_l"])),
        "greaterIsBetter": draw(st.booleans()),
    }
    _dig(spec, "promotion")["metrics"] = [metric]
    return ("spec", "promotion", "metrics", 0)


def _cron(fault: str) -> Callable[[Spec, DrawFn], FieldPath]:
    """A cron expression with a time zone inside it, or without five fields."""

    def mutate(spec: Spec, draw: DrawFn) -> FieldPath:
        if fault == "tz":
            cron = f"{draw(st.sampled_from(['TZ', 'CRON_TZ']))}=Europe/Berlin 0 3 * *"
        else:
            cron = draw(st.sampled_from(["0 3 * *", "* * * * * *", "daily", "0 3"]))
        _dig(spec, "triggers", "schedule")["cron"] = cron
        return ("spec", "triggers", "schedule")

    return mutate


def rp_traffic_without_pii(spec: Spec, draw: DrawFn) -> FieldPath:
    """Served traffic added to runs whose preparation does not scrub personal data."""
    spec["servedTraffic"] = draw(st.sampled_from([{}, {"feedback": {"name": "thumbs", "minValue": 1}}]))
    preparation = _dig(spec, "trainingJobTemplate", "spec", "data", "preparation")
    if draw(st.booleans()):
        preparation.pop("pii", None)
    else:
        preparation["pii"] = {"enabled": False}
    return ("spec",)


def _in_template(case: CelCase) -> CelCase:
    """A TrainingJob rule as the RetrainPolicy's embedded template carries it."""

    def mutate(spec: Spec, draw: DrawFn) -> FieldPath:
        path = case.mutate(spec["trainingJobTemplate"]["spec"], draw)
        return ("spec", "trainingJobTemplate", *path)

    return CelCase(RP, f"spec.trainingJobTemplate.{case.node}", case.message, mutate)


KUBERAY_LOCAL = (
    "runtime kuberay cannot use local paths (output.registry.local, data.sources[].uri,"
    " data.sources[].servedTraffic.location.local, model.baseModel,"
    " evaluation.datasets[].uri): its Ray pods mount no volume, so each would see its own empty folder;"
    " use s3:// locations, or runtime rayJobsAPI on a cluster that shares the filesystem"
)
NODE_SELECTOR_KEYS = "nodeSelector keys must be label keys: [prefix/]name, name up to 63 characters"
RESOURCES = {
    MD: ["spec.resources"],
    TJ: ["spec.resources.perWorker", "spec.resources.head"],
    RP: ["spec.trainingJobTemplate.spec.resources.perWorker", "spec.trainingJobTemplate.spec.resources.head"],
}

CEL_CASES = [
    CelCase(MD, "spec.autoscaling", "minReplicas must not exceed maxReplicas", md_min_over_max),
    CelCase(MD, "spec.autoscaling", "minReplicas 0 needs scaleToZero: true", md_zero_without_scale_to_zero),
    CelCase(
        MD,
        "spec.autoscaling",
        "scaleToZero needs engine keda: a HorizontalPodAutoscaler cannot scale to zero",
        md_scale_to_zero_with_hpa,
    ),
    CelCase(MD, "spec.model", VERSION_XOR_ALIAS, md_model_reference),
    CelCase(MD, "spec.rollout.canary.model", VERSION_XOR_ALIAS, md_canary_reference),
    CelCase(MD, "spec.engine.loraAdapters[*].model", VERSION_XOR_ALIAS, md_adapter_reference),
    CelCase(MD, "spec", "rollout.canary.model must differ from model", md_canary_is_stable),
    CelCase(MD, "spec.rollout.canary", "steps must be in ascending order", md_steps_descending),
    CelCase(
        MD,
        "spec",
        "engine.tensorParallelSize must not exceed resources.gpus: vLLM shards each replica over that"
        " many GPUs of its pod",
        md_tensor_parallel_over_gpus,
    ),
    CelCase(
        MD,
        "spec.monitoring.drift",
        "referenceData is required when drift detection is enabled",
        md_drift_without_reference,
    ),
    CelCase(
        MD,
        "spec",
        "monitoring.drift.prompts is required when gateway.payloadSampling is off: the gateway writes the"
        " sampled prompts there (it never gets the registry's credentials)",
        md_drift_without_prompts,
    ),
    CelCase(
        MD,
        "spec.gateway",
        "gateway.feedback needs gateway.payloadSampling: feedback is stored beside the payload samples"
        " (payloadSampling.rate 0 stores feedback only); or set feedback.enabled false",
        md_feedback_without_payload_sampling,
    ),
    CelCase(
        MD,
        "spec",
        "monitoring.drift.prompts must not use the registry's Secret: the internet-facing gateway"
        " writes there",
        md_drift_prompts_with_the_registrys_secret,
    ),
    CelCase(
        MD,
        "spec",
        "gateway.payloadSampling.destination must not use the registry's Secret: the internet-facing"
        " gateway writes there (payloads, ratings)",
        md_payload_with_the_registrys_secret,
    ),
    CelCase(TJ, "spec.data.preparation", "minLength must not exceed maxLength", tj_min_length_over_max),
    CelCase(
        TJ,
        "spec.method",
        "lora settings apply only to the lora and qlora methods",
        tj_lora_settings_elsewhere,
    ),
    CelCase(
        TJ, "spec.model.architecture", "hiddenSize must be a multiple of heads", tj_hidden_size_not_multiple
    ),
    CelCase(
        TJ, "spec.model.architecture", "heads must be a multiple of kvHeads", tj_heads_not_multiple_of_kv
    ),
    CelCase(TJ, "spec.model.base", VERSION_XOR_ALIAS, tj_base_reference),
    CelCase(TJ, "spec.evaluation.baseline", VERSION_XOR_ALIAS, tj_baseline_reference),
    CelCase(TJ, "spec.data.sources[*]", "set exactly one of uri or servedTraffic", tj_source_uri_and_traffic),
    CelCase(
        TJ,
        "spec.data",
        "sources with servedTraffic need preparation.pii (enabled): served traffic is what users typed",
        tj_traffic_without_pii,
    ),
    CelCase(TJ, "spec.data.sources[*].servedTraffic.location", S3_XOR_LOCAL, tj_traffic_location),
    CelCase(TJ, "spec.model", "set exactly one of base, baseModel or architecture", tj_model_sources),
    CelCase(
        TJ,
        "spec.runtime",
        "address is required for type rayJobsAPI and not allowed for kuberay",
        tj_runtime_address,
    ),
    CelCase(
        TJ,
        "spec",
        "methods full, lora and qlora fine-tune an existing model: set model.base or model.baseModel",
        tj_fine_tune_from_scratch,
    ),
    CelCase(
        TJ,
        "spec",
        "method quantize compresses a registered version: set model.base (the parent the new version is"
        " gated against and recorded with)",
        tj_quantize_without_base,
    ),
    CelCase(
        TJ,
        "spec.method",
        "method quantize needs quantization settings, and quantization applies to method quantize only",
        tj_quantize_settings,
    ),
    CelCase(
        TJ,
        "spec.method",
        "method quantize trains nothing: remove checkpointEverySteps",
        tj_quantize_checkpoints,
    ),
    CelCase(
        TJ,
        "spec",
        "method quantize trains nothing: augmentation would only alter its calibration data; remove it",
        tj_quantize_augmentation,
    ),
    CelCase(
        TJ,
        "spec",
        "method quantize trains nothing, so it plants no canary: a gate on security/leakage would measure"
        " nothing; remove it (the security probes still run)",
        tj_quantize_leakage_gate,
    ),
    CelCase(
        TJ,
        "spec.method",
        "method distill needs distillation settings, and distillation applies to method distill only",
        tj_distill_settings,
    ),
    CelCase(
        TJ,
        "spec.method.quantization",
        "scheme FP8_DYNAMIC takes algorithm RTN only (it needs no calibration)",
        tj_fp8_with_calibration,
    ),
    CelCase(
        TJ,
        "spec.method.quantization",
        "algorithm SmoothQuantGPTQ applies to scheme W8A8 only (SmoothQuant moves activation outliers into"
        " the weights, which only helps when activations are quantized too)",
        tj_smoothquant_without_w8a8,
    ),
    CelCase(
        TJ,
        "spec.method.quantization",
        "smoothingStrength applies to algorithm SmoothQuantGPTQ only",
        tj_smoothing_without_smoothquant,
    ),
    CelCase(
        TJ,
        "spec",
        "gates with compare ratio or difference need a baseline: set evaluation.baseline (methods quantize"
        " and distill default it to the parent or the teacher)",
        tj_relative_gate_without_baseline,
    ),
    CelCase(TJ, "spec.method.distillation.teacher", VERSION_XOR_ALIAS, tj_teacher_reference),
    CelCase(
        TJ,
        "spec",
        "method quantize runs on one worker (llm-compressor quantizes in one process, on one GPU or the"
        " CPUs): set resources.workers to 1",
        tj_quantize_workers,
    ),
    CelCase(TJ, "spec", KUBERAY_LOCAL, tj_kuberay_local_path),
    CelCase(
        TJ,
        "spec.runtime",
        "envFromSecrets applies to type kuberay only: a shared Ray cluster (rayJobsAPI) brings its own"
        " environment and storage access, and the operator never sends Secret values to it",
        tj_rayjobsapi_env_from_secrets,
    ),
    *(
        CelCase(kind, node, S3_XOR_LOCAL, _storage_location(node))
        for kind, crd in CRDS.items()
        for node, message in sorted(cel_rules(crd))
        if message == S3_XOR_LOCAL and "[*]" not in node
    ),
]


CEL_CASES += [
    CelCase(RP, "spec.promotion", "championAlias and challengerAlias must differ", rp_same_aliases),
    CelCase(
        RP,
        "spec",
        "servedTraffic needs trainingJobTemplate.spec.data.preparation.pii (enabled): served traffic is"
        " what users typed",
        rp_traffic_without_pii,
    ),
    CelCase(RP, "spec.triggers.quality[*]", "set min, max or both", _quality("none")),
    CelCase(RP, "spec.triggers.quality[*]", "min must not exceed max", _quality("range")),
    CelCase(
        RP,
        "spec.promotion.metrics[*]",
        "set threshold, minAbsoluteChange or minRelativeChange",
        rp_threshold_without_bound,
    ),
    CelCase(
        RP, "spec.triggers.schedule", "TZ= and CRON_TZ= are not supported in cron: set timeZone", _cron("tz")
    ),
    CelCase(
        RP,
        "spec.triggers.schedule",
        "cron must have five fields (minute hour day-of-month month day-of-week) or be a macro such"
        " as @daily",
        _cron("shape"),
    ),
    # Every TrainingJob case, in the template; the s3-or-local cases outside lists are generated per
    # CRD already (above), so the RetrainPolicy has its own.
    *(
        _in_template(case)
        for case in CEL_CASES
        if case.kind == TJ and (case.message != S3_XOR_LOCAL or "[*]" in case.node)
    ),
]


def cel_path(crd: Crd, node: FieldPath, message: str) -> FieldPath:
    """Where the apiserver reports a rule: the node that carries it, moved by its fieldPath."""
    rules = schema_at(crd, node).get("x-kubernetes-validations", [])
    matching = [r for r in rules if r["message"] == message]
    assert matching, f"no rule {message!r} at {render(node)} in the {crd.kind} CRD"
    field_path = matching[0].get("fieldPath", "")
    return (*node, *[part for part in field_path.split(".") if part])


def cel_violation(draw: DrawFn, case: CelCase) -> Invalid:
    example = draw(st.sampled_from([e for e in EXAMPLES if e.crd.kind == case.kind]))
    body = copy.deepcopy(example.body)
    node = case.mutate(body["spec"], draw)
    path = render(cel_path(example.crd, node, case.message))
    expect = said(path) + rf'Invalid value: (?:"object": )?{re.escape(case.message)}'
    return Invalid("CEL rule", example.name, example.crd, body, path, expect, 422, case.label)


# -- the strategies ------------------------------------------------------------------------------------

POINTS = {family.name: family.points for family in FAMILIES}
FAMILY_NAMES = [*POINTS, "CEL rule"]


@st.composite
def invalid_objects(draw: DrawFn) -> Invalid:
    """A valid example with exactly one thing wrong that the apiserver must refuse, naming the field."""
    # Families are drawn evenly, and cross-field rules twice as often: they are the hand-written part.
    family = draw(st.sampled_from([*FAMILY_NAMES, "CEL rule"]))
    if family == "CEL rule":
        return cel_violation(draw, draw(st.sampled_from(CEL_CASES)))
    builder = next(f for f in FAMILIES if f.name == family)
    return builder.build(draw(st.sampled_from(POINTS[family])), draw)


def cel_violations(case: CelCase) -> st.SearchStrategy[Invalid]:
    """Objects that break one given CEL rule."""
    return st.composite(lambda draw: cel_violation(draw, case))()


CEL_CASES += [
    case
    for kind, nodes in RESOURCES.items()
    for node in nodes
    for case in (
        CelCase(kind, node, NODE_SELECTOR_KEYS, _node_selector(node)),
        CelCase(
            kind,
            f"{node}.tolerations[*]",
            "value must be empty when operator is Exists",
            _toleration(f"{node}.tolerations[*]", "value"),
        ),
        CelCase(
            kind,
            f"{node}.tolerations[*]",
            "tolerationSeconds needs effect NoExecute",
            _toleration(f"{node}.tolerations[*]", "seconds"),
        ),
    )
]


# -- ModelRetirement ---------------------------------------------------------------------------------


def mr_replace_without_replacement(spec: Spec, draw: DrawFn) -> FieldPath:
    drain = _dig(spec, "drain")
    drain["mode"] = "Replace"
    drain.pop("replacement", None)
    return ("spec", "drain")


def mr_suspend_with_replacement(spec: Spec, draw: DrawFn) -> FieldPath:
    drain = _dig(spec, "drain")
    drain["mode"] = "Suspend"
    drain["replacement"] = {"name": spec["model"]["name"], "version": draw(VERSIONS)}
    return ("spec", "drain")


def mr_replacement_reference(spec: Spec, draw: DrawFn) -> FieldPath:
    drain = _dig(spec, "drain")
    drain["mode"] = "Replace"
    drain.setdefault("replacement", {"name": spec["model"]["name"], "alias": draw(ALIASES)})
    _break_reference(drain["replacement"], draw)
    return ("spec", "drain", "replacement")


def mr_lock_on_a_volume(spec: Spec, draw: DrawFn) -> FieldPath:
    archive = spec["archive"]
    archive["location"] = {"local": {"path": "/archive"}}
    if draw(st.booleans()):
        archive["retention"] = {"mode": draw(st.sampled_from(["Governance", "Compliance"])), "days": 30}
    else:
        archive.pop("retention", None)
        archive["legalHold"] = True
    return ("spec", "archive")


CEL_CASES += [
    CelCase(
        MR, "spec.drain", "drain.replacement is required when mode is Replace", mr_replace_without_replacement
    ),
    CelCase(MR, "spec.drain", "drain.replacement is only for mode Replace", mr_suspend_with_replacement),
    CelCase(MR, "spec.drain.replacement", VERSION_XOR_ALIAS, mr_replacement_reference),
    CelCase(
        MR,
        "spec.archive",
        "archive.retention and archive.legalHold need an S3 location (Object Lock is an S3 feature)",
        mr_lock_on_a_volume,
    ),
]

# -- server-side encryption of every S3 location ------------------------------------------------------

SSE_KMS_ONLY = "kmsKeyId is for mode SSE-KMS only"
SSE_C_KEY = "mode SSE-C needs customerKeySecretRef, and only SSE-C takes one"
_CUSTOMER_KEY = {"name": "archive-key", "key": "key"}


def _broken_encryption(message: str, draw: DrawFn) -> dict:
    """An `encryption` that breaks `message`'s rule and no other."""
    if message == SSE_KMS_ONLY:
        mode = draw(st.sampled_from(["SSE-S3", "SSE-C"]))
        return {"mode": mode, "kmsKeyId": "key-1"} | (
            {"customerKeySecretRef": _CUSTOMER_KEY} if mode == "SSE-C" else {}
        )
    if draw(st.booleans()):
        return {"mode": "SSE-C"}
    return {"mode": draw(st.sampled_from(["SSE-S3", "SSE-KMS"])), "customerKeySecretRef": _CUSTOMER_KEY}


def _encryption(node: str, message: str) -> Callable[[Spec, DrawFn], FieldPath]:
    """Break one encryption rule of the S3 location at `node` (…​.s3.encryption): the location made an
    S3 one (its bucket kept where it had one)."""
    keys = node.split(".")[1:]
    if "[*]" in node:  # a served-traffic source, appended as tj_traffic_location does

        def in_a_source(spec: Spec, draw: DrawFn) -> FieldPath:
            encryption = _broken_encryption(message, draw)
            location = {"s3": {"bucket": "gateway-samples", "encryption": encryption}}
            spec["data"]["sources"].append({"servedTraffic": {"location": location}})
            spec["data"].setdefault("preparation", {})["pii"] = {}
            index = len(spec["data"]["sources"]) - 1
            return ("spec", "data", "sources", index, "servedTraffic", "location", "s3", "encryption")

        return in_a_source

    def mutate(spec: Spec, draw: DrawFn) -> FieldPath:
        location = _dig(spec, *keys[:-2])
        s3 = location.get("s3") or {"bucket": "models"}
        location.clear()
        location["s3"] = {**s3, "encryption": _broken_encryption(message, draw)}
        return ("spec", *keys)

    return mutate


_ENCRYPTION_RULES = [
    (kind, node, message)
    for kind, crd in CRDS.items()
    for node, message in sorted(cel_rules(crd))
    if message in (SSE_KMS_ONLY, SSE_C_KEY)
]
CEL_CASES += [
    CelCase(kind, node, message, _encryption(node, message))
    for kind, node, message in _ENCRYPTION_RULES
    if not node.startswith("spec.trainingJobTemplate.")
]
CEL_CASES += [  # the TrainingJob template inside a RetrainPolicy
    _in_template(CelCase(TJ, node.removeprefix("spec.trainingJobTemplate."), message, _encryption(
        node.removeprefix("spec.trainingJobTemplate."), message)))
    for kind, node, message in _ENCRYPTION_RULES
    if node.startswith("spec.trainingJobTemplate.")
]  # fmt: skip
