"""Write the API reference (docs/reference/*.md) from the CRDs in crds/.

    python docs/gen_api_reference.py            # rewrite the pages
    python docs/gen_api_reference.py --check    # exit 1 if a page is stale (tests/unit/test_docs.py)

Every field of every served version's openAPIV3Schema gets a row: its type, whether it is required,
its default, its bounds (numbers, lengths, items, entries), enum, pattern and list type, and its
description. Every CEL rule (`x-kubernetes-validations`) is listed under the object it applies to.
A schema keyword this script does not know is still shown, as `keyword: value`, so nothing in the
CRD is left out of the reference. The CRDs are themselves generated from llmops/api (`llmops crds`).
"""

from __future__ import annotations

import argparse
import html
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
CRDS = ROOT / "crds"
OUT = ROOT / "docs" / "reference"
OBJECT_META = "https://kubernetes.io/docs/reference/kubernetes-api/common-definitions/object-meta/"

# Keywords rendered in their own way; anything else goes to the generic "other" list.
HANDLED = {
    "type", "description", "properties", "required", "items", "additionalProperties", "nullable",
    "default", "enum", "pattern", "format", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties",
    "x-kubernetes-validations", "x-kubernetes-list-type", "x-kubernetes-list-map-keys",
    "x-kubernetes-int-or-string", "x-kubernetes-preserve-unknown-fields", "x-kubernetes-map-type",
    "x-kubernetes-embedded-resource", "uniqueItems",
}  # fmt: skip
INT_OR_STRING_ANYOF = [{"type": "integer"}, {"type": "string"}]


def code(text: Any) -> str:
    """An inline code span that survives backticks (Python-Markdown's tables skip pipes inside it)."""
    s = text if isinstance(text, str) else json.dumps(text, sort_keys=True)
    fence = "`"
    while fence in s:
        fence += "`"
    pad = " " if s.startswith("`") or s.endswith("`") else ""
    return f"{fence}{pad}{s}{pad}{fence}"


def prose(text: str | None) -> str:
    """A description as one table-safe line: HTML escaped, pipes and newlines neutralised."""
    if not text:
        return ""
    return html.escape(" ".join(text.split()), quote=False).replace("|", "&#124;")


def anchor(path: str) -> str:
    return path.replace("[]", "").replace(".*", "-values").replace(".", "-").lower() or "root"


@dataclass
class Section:
    """One object of the schema: a heading, a table of its fields, the rules that apply to it."""

    path: str
    schema: dict
    rows: list[str] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)


class Page:
    def __init__(self, crd: dict, source: str) -> None:
        self.crd = crd
        self.source = source
        self.sections: list[Section] = []

    # -- types and constraints ---------------------------------------------------------------------

    def type_of(self, schema: dict, path: str) -> str:
        if schema.get("x-kubernetes-int-or-string"):
            return "int or string"
        t = schema.get("type")
        if t == "array":
            return "[]" + self.type_of(schema.get("items", {}), f"{path}[]")
        if t == "object" or (t is None and ("properties" in schema or "additionalProperties" in schema)):
            if schema.get("properties"):
                return f"[object](#{anchor(path)})"
            extra = schema.get("additionalProperties")
            if isinstance(extra, dict):
                return "map[string]" + self.type_of(extra, f"{path}.*")
            if schema.get("x-kubernetes-preserve-unknown-fields"):
                return "object (free-form)"
            return "object"
        if t is None:
            return "any"
        fmt = schema.get("format")
        return f"{t} ({fmt})" if fmt else t

    @staticmethod
    def bounds(schema: dict) -> list[str]:
        """Numeric range, length, item and entry counts, as lower-case phrases."""
        out = []
        lo, hi = schema.get("minimum"), schema.get("maximum")
        lo_op = "<" if schema.get("exclusiveMinimum") else "≤"
        hi_op = "<" if schema.get("exclusiveMaximum") else "≤"
        if lo is not None and hi is not None:
            out.append(f"range {lo} {lo_op} x {hi_op} {hi}")
        elif lo is not None:
            out.append(f"{'greater than' if lo_op == '<' else 'at least'} {lo}")
        elif hi is not None:
            out.append(f"{'less than' if hi_op == '<' else 'at most'} {hi}")
        for unit, lo_key, hi_key in (
            ("characters", "minLength", "maxLength"),
            ("items", "minItems", "maxItems"),
            ("entries", "minProperties", "maxProperties"),
        ):
            lo, hi = schema.get(lo_key), schema.get(hi_key)
            if lo is not None and hi is not None:
                out.append(f"{lo} to {hi} {unit}")
            elif lo is not None:
                out.append(f"at least {lo} {unit}")
            elif hi is not None:
                out.append(f"at most {hi} {unit}")
        return out

    def details(self, schema: dict, required: bool) -> str:
        parts = []
        if schema.get("description"):
            parts.append(prose(schema["description"]))
        facts = []
        if required:
            facts.append("**Required.**")
        if "default" in schema:
            facts.append(f"Default: {code(schema['default'])}.")
        if "enum" in schema:
            facts.append("One of " + ", ".join(code(v) for v in schema["enum"]) + ".")
        facts += [f"{b[0].upper()}{b[1:]}." for b in self.bounds(schema)]
        if "pattern" in schema:
            facts.append(f"Pattern: {code(schema['pattern'])}.")
        if schema.get("uniqueItems"):
            facts.append("Items are unique.")
        list_type = schema.get("x-kubernetes-list-type")
        if list_type:
            keys = schema.get("x-kubernetes-list-map-keys")
            facts.append(
                f"List type: {list_type}"
                + (f" (keys: {', '.join(code(k) for k in keys)})" if keys else "")
                + "."
            )
        if schema.get("x-kubernetes-map-type"):
            facts.append(f"Map type: {schema['x-kubernetes-map-type']}.")
        if schema.get("x-kubernetes-embedded-resource"):
            facts.append("An embedded Kubernetes object.")
        items = schema.get("items")
        if isinstance(items, dict) and items.get("type") not in ("object", None):
            item_facts = self.bounds(items)
            if "enum" in items:
                item_facts.append("one of " + ", ".join(code(v) for v in items["enum"]))
            if "pattern" in items:
                item_facts.append(f"pattern {code(items['pattern'])}")
            if item_facts:
                facts.append("Each item: " + "; ".join(item_facts) + ".")
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict) and not extra.get("properties"):
            value_facts = self.bounds(extra)
            if "pattern" in extra:
                value_facts.append(f"pattern {code(extra['pattern'])}")
            if "enum" in extra:
                value_facts.append("one of " + ", ".join(code(v) for v in extra["enum"]))
            if value_facts:
                facts.append("Each value: " + "; ".join(value_facts) + ".")
        for key in sorted(schema):
            if key in HANDLED or (key == "anyOf" and schema[key] == INT_OR_STRING_ANYOF):
                continue
            facts.append(f"{code(key)}: {code(schema[key])}.")
        if facts:
            parts.append(" ".join(facts))
        return "<br>".join(parts)

    # -- rules -------------------------------------------------------------------------------------

    @staticmethod
    def rule_lines(schema: dict, where: str | None) -> list[str]:
        lines = []
        for rule in schema.get("x-kubernetes-validations", []):
            text = rule.get("message") or (
                f"message from {code(rule['messageExpression'])}" if "messageExpression" in rule else ""
            )
            extra = []
            if where:
                extra.append(f"on {code(where)}")
            if "oldSelf" in rule["rule"]:
                extra.append("checked on updates (transition rule)")
            if rule.get("fieldPath"):
                extra.append(f"reported at {code(rule['fieldPath'])}")
            if rule.get("reason"):
                extra.append(f"reason {rule['reason']}")
            for key in sorted(set(rule) - {"rule", "message", "messageExpression", "fieldPath", "reason"}):
                extra.append(f"{key}: {code(rule[key])}")
            note = f" ({'; '.join(extra)})" if extra else ""
            lines.append(f"- {code(rule['rule'])}" + (f": {prose(text)}" if text else "") + note)
        return lines

    # -- walking -----------------------------------------------------------------------------------

    def walk(self, path: str, schema: dict) -> None:
        """Add a section for the object at `path`, then one for each object below it."""
        section = Section(path, schema)
        self.sections.append(section)
        section.rules += self.rule_lines(schema, None)
        required = set(schema.get("required", []))
        children: list[tuple[str, dict]] = []
        for name, prop in schema.get("properties", {}).items():
            child = f"{path}.{name}" if path else name
            section.rows.append(
                f"| {code(name)} | {self.type_of(prop, child)} | {self.details(prop, name in required)} |"
            )
            children += self.nested(child, prop)
            # Rules of a field without its own section are listed with its parent.
            if not self.has_section(prop):
                section.rules += self.rule_lines(prop, child)
        for child, prop in children:
            self.walk(child, prop)

    @staticmethod
    def has_section(schema: dict) -> bool:
        return bool(schema.get("properties"))

    def nested(self, path: str, schema: dict) -> list[tuple[str, dict]]:
        """Objects with properties at `path`, or inside its items or map values (CEL rules on
        scalar items or values are kept for the enclosing object's section)."""
        if schema.get("properties"):
            return [(path, schema)]
        for sub_path, sub in (
            (f"{path}[]", schema.get("items")),
            (f"{path}.*", schema.get("additionalProperties")),
        ):
            if isinstance(sub, dict):
                if not sub.get("properties") and sub.get("x-kubernetes-validations"):
                    self.pending_rules.append((sub_path, sub))
                return self.nested(sub_path, sub)
        return []

    pending_rules: list[tuple[str, dict]]

    # -- output ------------------------------------------------------------------------------------

    def render(self) -> str:
        spec = self.crd["spec"]
        names = spec["names"]
        group = spec["group"]
        served = [v for v in spec["versions"] if v.get("served", True)]
        out = [
            f"<!-- Generated by docs/gen_api_reference.py from {self.source}. Do not edit:",
            "     change llmops/api, run `llmops crds`, then `python docs/gen_api_reference.py`. -->",
            f"# {names['kind']}",
            "",
        ]
        first_schema = served[0]["schema"]["openAPIV3Schema"] if served else {}
        if first_schema.get("description"):
            out += [prose(first_schema["description"]), ""]
        subresources = sorted({k for v in served for k in (v.get("subresources") or {})})
        out += [
            "| | |",
            "|---|---|",
            f"| API group | {code(group)} |",
            f"| Versions | {', '.join(self.version_label(v) for v in served)} |",
            f"| Kind | {code(names['kind'])} (list: {code(names.get('listKind', names['kind'] + 'List'))}) |",
            f"| Scope | {spec['scope']} |",
            f"| Resource | {code(names['plural'])} (singular {code(names.get('singular', ''))}) |",
            f"| Short names | {', '.join(code(s) for s in names.get('shortNames', [])) or '—'} |",
            f"| Categories | {', '.join(code(c) for c in names.get('categories', [])) or '—'} |",
            f"| Subresources | {', '.join(subresources) or '—'} |",
            f"| CRD | {code(self.crd['metadata']['name'])}, from {code(self.source)} |",
            "",
            "Fields not marked **Required** may be left out. Each object's CEL rules are checked by the",
            "API server when an object is created or updated; a rule that reads `oldSelf` only on updates.",
            "",
        ]
        for version in served:
            if len(served) > 1:
                out += [f"## {version['name']}", ""]
            out += self.render_version(version, len(served) > 1)
        return "\n".join(out).rstrip() + "\n"

    @staticmethod
    def version_label(version: dict) -> str:
        return code(version["name"]) + (" (storage)" if version.get("storage") else "")

    def render_version(self, version: dict, prefixed: bool) -> list[str]:
        self.sections = []
        self.pending_rules = []
        schema = version["schema"]["openAPIV3Schema"]
        head = "###" if prefixed else "##"
        out: list[str] = []
        columns = version.get("additionalPrinterColumns") or []
        if columns:
            out += [
                f"{head} `kubectl get` columns",
                "",
                "| Column | Type | JSONPath | Description |",
                "|---|---|---|---|",
            ]
            for c in columns:
                wide = " (only with `-o wide`)" if c.get("priority", 0) > 0 else ""
                desc = prose(c.get("description")) + wide
                out.append(f"| {c['name']} | {c['type']} | {code(c['jsonPath'])} | {desc} |")
            out.append("")
        self.walk("", schema)
        for path, items in self.pending_rules:
            enclosing = [
                s for s in self.sections if not s.path or path.startswith((s.path + ".", s.path + "["))
            ]
            max(enclosing, key=lambda s: len(s.path)).rules += self.rule_lines(items, path)
        prefix = f"{version['name']}-" if prefixed else ""
        for section in self.sections:
            title = section.path or "Top level"
            out += [
                f"{head} {code(title) if section.path else title} {{ #{prefix}{anchor(section.path)} }}",
                "",
            ]
            if section.path and section.schema.get("description"):
                out += [prose(section.schema["description"]), ""]
            out += ["| Field | Type | Description |", "|---|---|---|"]
            rows = section.rows
            if not section.path:
                rows = [self.root_row(r) for r in rows]
            out += rows
            out.append("")
            if section.rules:
                out += ["Validation rules:", "", *section.rules, ""]
        if prefixed:
            out = [line.replace("](#", f"](#{prefix}") for line in out]
        return out

    def root_row(self, row: str) -> str:
        """Top-level rows: say what apiVersion and kind must be, and link metadata to ObjectMeta."""
        group, kind = self.crd["spec"]["group"], self.crd["spec"]["names"]["kind"]
        if row.startswith("| `apiVersion` |"):
            versions = [v["name"] for v in self.crd["spec"]["versions"] if v.get("served", True)]
            return row[:-2] + f"<br>{' or '.join(code(f'{group}/{v}') for v in versions)}. |"
        if row.startswith("| `kind` |"):
            return row[:-2] + f"<br>{code(kind)}. |"
        if row.startswith("| `metadata` |"):
            return f"| `metadata` | [ObjectMeta]({OBJECT_META}) | Name, namespace, labels, annotations. |"
        return row


def crd_files() -> list[Path]:
    return sorted(CRDS.glob("*.yaml"))


def page_name(crd: dict) -> str:
    return crd["spec"]["names"]["kind"].lower() + ".md"


def load(path: Path) -> dict:
    crd = yaml.safe_load(path.read_text())
    assert crd.get("kind") == "CustomResourceDefinition", f"{path} is not a CRD"
    return crd


def render_index(crds: list[dict]) -> str:
    out = [
        "<!-- Generated by docs/gen_api_reference.py from crds/. Do not edit. -->",
        "# API reference",
        "",
        "Every llmops resource is namespaced, has a status subresource and belongs to the `llmops`",
        "category (`kubectl get llmops` lists them all). These pages are generated from the",
        "CustomResourceDefinitions in `crds/`, which are generated from the pydantic models in",
        "`llmops/api`, so the reference, the API server's validation and the operator's parsing agree.",
        "",
        "| Kind | API version | Short names | What it is |",
        "|---|---|---|---|",
    ]
    for crd in crds:
        spec = crd["spec"]
        kind = spec["names"]["kind"]
        versions = [v for v in spec["versions"] if v.get("served", True)]
        api = ", ".join(code(f"{spec['group']}/{v['name']}") for v in versions)
        desc = versions[0]["schema"]["openAPIV3Schema"].get("description", "") if versions else ""
        shorts = ", ".join(code(s) for s in spec["names"].get("shortNames", [])) or "—"
        out.append(f"| [{kind}]({page_name(crd)}) | {api} | {shorts} | {prose(desc)} |")
    out += [
        "",
        "To see the same schema from a cluster: `kubectl explain trainingjob.spec --recursive`.",
    ]
    return "\n".join(out) + "\n"


def generate() -> dict[Path, str]:
    """Every page, keyed by its path."""
    crds = [(path, load(path)) for path in crd_files()]
    pages = {OUT / "index.md": render_index([c for _, c in crds])}
    for path, crd in crds:
        pages[OUT / page_name(crd)] = Page(crd, path.relative_to(ROOT).as_posix()).render()
    return pages


def stale(pages: dict[Path, str]) -> list[str]:
    """Pages that differ from what is on disk, and pages on disk that no CRD makes."""
    problems = [
        str(p.relative_to(ROOT)) for p, text in pages.items() if not p.is_file() or p.read_text() != text
    ]
    problems += [str(p.relative_to(ROOT)) + " (no CRD)" for p in OUT.glob("*.md") if p not in pages]
    return sorted(problems)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a page is stale; write nothing")
    args = parser.parse_args(argv)
    pages = generate()
    problems = stale(pages)
    if args.check:
        if problems:
            print("stale API reference (run `python docs/gen_api_reference.py`):", *problems, sep="\n  ")
            return 1
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    for path, text in pages.items():
        path.write_text(text)
    for extra in OUT.glob("*.md"):
        if extra not in pages:
            extra.unlink()
    print(
        f"wrote {len(pages)} pages to {OUT.relative_to(ROOT)}/"
        + (f" ({len(problems)} changed)" if problems else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
