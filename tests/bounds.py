"""Valid llmops objects at their CRDs' size bounds: every string as long (in the widest characters its
pattern allows) and every list and map as full as the schema allows, every optional field that can be
set at once set.

Grown greedily from an example: each field of the schema (from crds/) in turn is filled to its bound
and kept only if the object still passes the API's own checks (the pydantic models, which hold the same
lengths, patterns and CEL rules as the CRDs), so the result is one valid object near the worst case the
schema admits. Pure: nothing here talks to a cluster.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from typing import Any

import pydantic

from llmops.api import BY_KIND

Schema = dict[str, Any]


# The widest character: 4 bytes in UTF-8 and 12 as JSON's \\ud83d\\ude00 escape, while schemas count
# characters (maxLength counts code points, in the apiserver as in pydantic).
WIDE = "\U0001f600"


def _strings(schema: Schema, length: int, seed: str = "") -> list[str]:
    """Candidates of `length` characters for a string node: the widest first, then the seed's shape."""
    pad = "a" * length
    out = [WIDE * length]
    if seed:
        out += [(seed + WIDE * length)[:length], (seed + pad)[:length], (seed + "0" * length)[:length]]
    out += [pad, "/" + pad[1:], "s3://" + pad[5:], "1" * length, "A" * length]
    pattern = schema.get("pattern")
    return [c for c in out if len(c) == length and (pattern is None or re.search(pattern, c))]


def _value(schema: Schema, seed: Any, index: int) -> Any:
    """A value for `schema` at its bounds (None: none found). `index` varies list items."""
    if "enum" in schema:
        return schema["enum"][-1]
    if schema.get("x-kubernetes-int-or-string"):
        return seed if seed is not None else 1
    kind = schema.get("type")
    if kind == "string":
        length = schema.get("maxLength", 64)
        base = seed if isinstance(seed, str) else ""
        for candidate in _strings(schema, length, base):
            if index:  # distinct items of a set or map: vary the tail
                tail = str(index)  # digits: never the padding itself
                varied = candidate[: length - len(tail)] + tail
                if schema.get("pattern") is None or re.search(schema["pattern"], varied):
                    return varied
                continue
            return candidate
        return seed
    if kind == "integer":
        return seed if seed is not None else schema.get("minimum", 1) + index
    if kind == "number":
        return seed if seed is not None else schema.get("minimum", 0.5)
    if kind == "boolean":
        return seed if seed is not None else False
    if kind == "array":
        return copy.deepcopy(seed) if seed is not None else []
    if kind == "object":
        if seed is not None:
            return copy.deepcopy(seed)
        properties = schema.get("properties") or {}
        return {name: _value(properties[name], None, 0) for name in schema.get("required", [])}
    return seed


class Grower:
    """Fills one object towards its bounds, keeping each step only while `valid(spec)` holds."""

    def __init__(self, schema: Schema, valid: Callable[[dict], bool]) -> None:
        self.schema = schema
        self.valid = valid

    def grow(self, spec: dict) -> dict:
        spec = copy.deepcopy(spec)
        self._object(spec, spec, self.schema)
        return spec

    def _try(self, root: dict, container: Any, key: Any, value: Any, schema: Schema | None = None) -> bool:
        """Set container[key] = value if the object stays valid; a new object `value` that is not valid
        with its required fields alone may become so with one optional field more (`schema`)."""
        had = key in container if isinstance(container, dict) else True
        before = container.get(key) if isinstance(container, dict) else container[key]
        container[key] = value
        if self.valid(root) or (schema is not None and self._repair(root, value, schema)):
            return True
        if had:
            container[key] = before
        else:
            del container[key]
        return False

    def _repair(self, root: dict, value: Any, schema: Schema) -> bool:
        """Add one optional field somewhere in `value` that makes the object valid."""
        if not isinstance(value, dict):
            return False
        for name, prop in (schema.get("properties") or {}).items():
            if name in value:
                if self._repair(root, value[name], prop):
                    return True
                continue
            value[name] = _value(prop, None, 0)
            if self.valid(root):
                return True
            del value[name]
        return False

    def _object(self, root: dict, body: dict, schema: Schema) -> None:
        for name, prop in (schema.get("properties") or {}).items():
            if name not in body:
                self._try(root, body, name, _value(prop, None, 0), prop)
            if name in body:
                self._node(root, body, name, prop)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict) and "maxProperties" in schema:
            key_schema = {
                "type": "string",
                "maxLength": 63,
                "pattern": r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$",
            }
            for i in range(len(body), schema["maxProperties"]):
                key = _value(key_schema, "k", i + 1)
                value = _value(extra, None, i + 1)
                if not self._try(root, body, key, value):
                    break

    def _node(self, root: dict, container: Any, key: Any, schema: Schema, index: int = 0) -> None:
        value = container[key]
        kind = schema.get("type")
        if kind == "string" and "enum" not in schema and isinstance(value, str):
            grown = _value(schema, value, index)
            if grown != value:
                self._try(root, container, key, grown)
        elif kind == "object" and isinstance(value, dict):
            self._object(root, value, schema)
        elif kind == "array" and isinstance(value, list):
            self._array(root, value, schema)

    def _array(self, root: dict, value: list, schema: Schema) -> None:
        items = schema.get("items", {})
        list_type = schema.get("x-kubernetes-list-type")
        keys = schema.get("x-kubernetes-list-map-keys", [])

        def identity(item: Any) -> Any:  # what must be unique in a set or a map list
            if list_type == "map" and isinstance(item, dict):
                return tuple(json.dumps(item.get(k)) for k in keys)
            return json.dumps(item, sort_keys=True) if list_type == "set" else object()

        for i in range(len(value)):
            self._node(root, value, i, items, i if list_type else 0)
        for i in range(len(value), schema.get("maxItems", len(value))):
            template = value[-1] if value else None
            if "enum" in items:
                unused = [e for e in items["enum"] if e not in value]
                if not unused:
                    break
                item = unused[0]
            else:
                item = _value(items, copy.deepcopy(template), i if list_type else 0)
            if list_type == "map" and isinstance(item, dict):
                for key in keys:
                    if key in item:
                        item[key] = _value(items["properties"][key], item[key], i)
            if identity(item) in {identity(x) for x in value}:
                break
            value.append(item)
            if not (self.valid(root) or (template is None and self._repair(root, item, items))):
                value.pop()
                break
            if template is None:
                self._node(root, value, i, items, i if list_type else 0)


def at_bounds(kind: str, body: dict, schema: Schema) -> dict:
    """`body` (a valid object of `kind`) grown to its bounds; `schema` is the CRD's openAPIV3Schema."""
    model = BY_KIND[kind].spec

    def valid(spec: dict) -> bool:
        try:
            model.model_validate(spec)
        except (pydantic.ValidationError, ValueError, TypeError):
            return False
        return True

    out = copy.deepcopy(body)
    out["spec"] = Grower(schema["properties"]["spec"], valid).grow(body["spec"])
    return out


def size(body: dict) -> int:
    """Bytes of the object as the apiserver stores it (JSON, UTF-8)."""
    return len(json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode())
