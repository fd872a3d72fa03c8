"""The documentation site: the generated API reference is current and complete, the site builds
with `mkdocs build --strict`, and the pages agree with the code they describe (examples validate,
every chart value, operator setting and operator metric is documented, the quickstart follows
hack/demo.sh, the example alerts pass promtool), and what the pages name exists: repository paths and
modules, condition reasons, metrics, CRD fields, `llmops` commands and their options."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from llmops.dev.tools import binary

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_api_reference", DOCS / "gen_api_reference.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


GEN = _generator()


def _sections(page: str) -> dict[str, str]:
    """Anchor -> text of each `## ... { #anchor }` section of a generated page."""
    out: dict[str, str] = {}
    parts = re.split(r"^#{2,3} .*\{ #([\w-]+) \}\s*$", page, flags=re.M)
    for anchor, body in zip(parts[1::2], parts[2::2], strict=True):
        out[anchor] = body
    return out


def _objects(path: str, schema: dict) -> list[tuple[str, dict]]:
    """Every object with properties in a schema, with its path in the generator's notation."""
    found = []
    if schema.get("properties"):
        found.append((path, schema))
        for name, prop in schema["properties"].items():
            found += _objects(f"{path}.{name}" if path else name, prop)
    elif isinstance(schema.get("items"), dict):
        found += _objects(f"{path}[]", schema["items"])
    elif isinstance(schema.get("additionalProperties"), dict):
        found += _objects(f"{path}.*", schema["additionalProperties"])
    return found


def _rules(schema: Any) -> list[str]:
    if isinstance(schema, dict):
        own = [r["rule"] for r in schema.get("x-kubernetes-validations", [])]
        return own + [r for k, v in schema.items() if k != "x-kubernetes-validations" for r in _rules(v)]
    if isinstance(schema, list):
        return [r for v in schema for r in _rules(v)]
    return []


def _yaml_blocks(path: Path) -> list[Any]:
    docs = []
    for block in re.findall(r"^ *```ya?ml\n(.*?)^ *```", path.read_text(), re.M | re.S):
        docs += [d for d in yaml.safe_load_all(block) if d is not None]
    return docs


def _nav_files(nav: Any) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [f for item in nav for f in _nav_files(item)]
    if isinstance(nav, dict):
        return [f for v in nav.values() for f in _nav_files(v)]
    return []


# ------------------------------------------------------------------------------------------------


def test_api_reference_is_current() -> None:
    problems = GEN.stale(GEN.generate())
    assert not problems, "stale API reference; run `python docs/gen_api_reference.py`:\n" + "\n".join(
        problems
    )


@pytest.mark.parametrize("crd_file", sorted(p.name for p in (ROOT / "crds").glob("*.yaml")))
def test_api_reference_has_every_field_and_rule(crd_file: str) -> None:
    crd = yaml.safe_load((ROOT / "crds" / crd_file).read_text())
    page = GEN.generate()[GEN.OUT / GEN.page_name(crd)]
    sections = _sections(page)
    for version in crd["spec"]["versions"]:
        schema = version["schema"]["openAPIV3Schema"]
        for path, obj in _objects("", schema):
            anchor = GEN.anchor(path)
            if len(crd["spec"]["versions"]) > 1:
                anchor = f"{version['name']}-{anchor}"
            assert anchor in sections, f"no section for {path or 'the top level'}"
            for name, prop in obj["properties"].items():
                row = f"| `{name}` |"
                assert row in sections[anchor], f"{path}.{name} is missing"
                for key in ("minimum", "maximum", "maxLength", "maxItems", "pattern"):
                    if key in prop:
                        line = next(x for x in sections[anchor].splitlines() if x.startswith(row))
                        assert str(prop[key]) in line, f"{path}.{name}: {key} {prop[key]} is not shown"
        for rule in _rules(schema):
            assert GEN.code(rule) in page, f"CEL rule not listed: {rule}"
        for column in version.get("additionalPrinterColumns", []):
            assert GEN.code(column["jsonPath"]) in page


def test_every_page_is_in_the_nav() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    nav = set(_nav_files(config["nav"]))
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert pages - nav == set(), "add these pages to mkdocs.yml's nav"
    assert nav - pages == set(), "mkdocs.yml's nav names missing pages"
    assert "gitops.md" in nav


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None:
        pytest.fail("mkdocs and mkdocs-material are in the dev extra: re-create the venv (hack/venv.sh)")
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
         "--site-dir", str(site)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},  # material's end-of-life banner
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    for page in ("index.html", "reference/trainingjob/index.html", "gitops/index.html"):
        assert (site / page).is_file(), page
    assert not list(site.rglob("*.py")), "the generator script must not be published"


@pytest.mark.parametrize("page", sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")))
def test_examples_in_the_docs_are_valid(page: str) -> None:
    """Every llmops object shown in a page passes the same models the CRDs are generated from."""
    from llmops.api import API_VERSION, BY_KIND

    for doc in _yaml_blocks(DOCS / page):
        if isinstance(doc, dict) and doc.get("apiVersion") == API_VERSION:
            assert doc.get("kind") in BY_KIND, f"{page}: unknown kind {doc.get('kind')}"
            BY_KIND[doc["kind"]].spec.model_validate(doc["spec"])


def test_operations_lists_every_operator_metric() -> None:
    names = re.findall(r'"(llmops_operator_\w+)"', (ROOT / "llmops" / "operators" / "metrics.py").read_text())
    assert names
    text = (DOCS / "operations.md").read_text()
    missing = [n for n in names if f"`{n}`" not in text]
    assert not missing, f"docs/operations.md does not describe {missing}"


def test_example_alerts_pass_promtool(tmp_path: Path) -> None:
    promtool = binary("promtool")
    rules = [
        d
        for d in _yaml_blocks(DOCS / "operations.md")
        if isinstance(d, dict) and d.get("kind") == "PrometheusRule"
    ]
    assert rules, "docs/operations.md shows no PrometheusRule"
    metrics = set(
        re.findall(r'"(llmops_operator_\w+)"', (ROOT / "llmops" / "operators" / "metrics.py").read_text())
    )
    for i, rule in enumerate(rules):
        path = tmp_path / f"rules-{i}.yaml"
        path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
        result = subprocess.run(
            [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stdout + result.stderr
        for group in rule["spec"]["groups"]:
            for r in group["rules"]:
                for used in re.findall(r"llmops_operator_\w+", r["expr"]):
                    base = re.sub(r"_(bucket|count|sum)$", "", used)
                    assert base in metrics, (
                        f"{r['alert']}: {used} is no metric of llmops/operators/metrics.py"
                    )


def _schema_leaves(schema: dict, prefix: str = "") -> list[str]:
    out = []
    for key, sub in schema.get("properties", {}).items():
        path = f"{prefix}.{key}" if prefix else key
        out += _schema_leaves(sub, path) if sub.get("properties") else [path]
    return out


def test_install_lists_every_chart_value() -> None:
    schema = json.loads((ROOT / "charts" / "llmops" / "values.schema.json").read_text())
    text = (DOCS / "install.md").read_text()
    leaves = [p for p in _schema_leaves(schema) if p != "global"]
    missing = [p for p in leaves if f"`{p}`" not in text]
    assert not missing, f"docs/install.md does not describe the chart values {missing}"


def test_install_lists_every_operator_setting() -> None:
    names = set()
    for path in (ROOT / "llmops" / "operators").rglob("*.py"):
        names |= set(
            re.findall(r"""(?:environ|env)(?:\.get\(|\[)\s*["'](LLMOPS_\w+)["']""", path.read_text())
        )
    text = (DOCS / "install.md").read_text()
    missing = sorted(n for n in names if f"`{n}`" not in text)
    assert not missing, f"docs/install.md does not describe the operator settings {missing}"


def test_quickstart_follows_the_demo_and_readme() -> None:
    text = (DOCS / "quickstart.md").read_text().lower()
    steps = re.findall(r'^step "([^"]+)"', (ROOT / "hack" / "demo.sh").read_text(), re.M)
    assert steps, "hack/demo.sh names no steps"
    missing = [s for s in steps if f"**{s.lower()}**" not in text]
    assert not missing, f"docs/quickstart.md does not describe the demo steps {missing}"
    readme = (ROOT / "README.md").read_text()
    for command in re.findall(r"^(make \w+)$", readme, re.M):
        assert command in text, f"the README's `{command}` is not in the quickstart"


def test_generator_renders_bounds_rules_and_unknown_keywords() -> None:
    cross_rule = {"rule": "self.size > 1 || self.name == 'a|b'", "message": "m"}
    tags = {
        "type": "array",
        "maxItems": 3,
        "items": {"type": "string", "x-kubernetes-validations": [{"rule": "self != ''"}]},
    }
    extra = {
        "type": "object",
        "additionalProperties": {"type": "object", "properties": {"on": {"type": "boolean"}}},
    }
    spec = {
        "type": "object",
        "required": ["size"],
        "x-kubernetes-validations": [cross_rule],
        "properties": {
            "size": {"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 1},
            "name": {"type": "string", "maxLength": 8, "x-custom": "kept"},
            "tags": tags,
            "extra": extra,
        },
    }
    crd = {
        "metadata": {"name": "things.example.io"},
        "spec": {
            "group": "example.io",
            "scope": "Namespaced",
            "names": {"kind": "Thing", "plural": "things", "singular": "thing"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": spec}}},
                }
            ],
        },
    }
    page = GEN.Page(crd, "crds/things.yaml").render()
    assert "| `size` | number | **Required.** Range 0 < x ≤ 1. |" in page
    assert "At most 8 characters." in page and "`x-custom`: `kept`." in page
    assert "- `self.size > 1 || self.name == 'a|b'`: m" in page
    assert "- `self != ''` (on `spec.tags[]`)" in page
    assert "| `extra` | map[string][object](#spec-extra-values) |" in page
    assert "## `spec.extra.*` { #spec-extra-values }" in page


# -- claims the pages make about the code --------------------------------------------------------

PROSE = sorted([ROOT / "README.md", *DOCS.glob("*.md"), *(ROOT / "examples").rglob("*.yaml"),
                *(ROOT / "examples").rglob("*.md")])  # fmt: skip
TOP = ("llmops", "tests", "hack", "bench", "deploy", "charts", "examples", "images", "crds", "docs")


@pytest.mark.parametrize("page", [p.relative_to(ROOT).as_posix() for p in PROSE])
def test_every_path_named_exists(page: str) -> None:
    """A file or folder of this repository named in prose (`llmops/serving/openai.py`, `hack/demo.sh`)
    exists; so does every module named by its dotted path in backticks or after `-m`
    (`llmops.training.run`), and an attribute after it (`llmops.engine.vllm_argv`) is defined in it."""
    text = (ROOT / page).read_text()
    missing = []
    # Not an image name (`llmops/operator:dev`, `ghcr.io/llmops/trainer`) nor an s3:// or ~/ path.
    for path in re.findall(rf"(?<![\w/.~-])((?:{'|'.join(TOP)})/[\w./-]*\w)(?![\w./-]*:)", text):
        if not (ROOT / path).exists():
            missing.append(path)
    for dotted in re.findall(r"(?:`|-m )(llmops(?:\.[a-z_]\w*)+)", text):
        parts = dotted.split(".")
        if parts[1] == "io":  # the API group llmops.io
            continue
        for i in range(len(parts), 0, -1):
            base = ROOT.joinpath(*parts[:i])
            module = base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
            if module.is_file():
                rest = parts[i:]
                if (
                    rest
                    and not re.search(
                        rf"^(?:def|class|async def) {rest[0]}\b|^{rest[0]}\b.*=", module.read_text(), re.M
                    )
                ) or len(rest) > 1:
                    missing.append(dotted)
                break
        else:
            missing.append(dotted)
    assert not missing, f"{page} names what does not exist: {sorted(set(missing))}"


def _reasons() -> set[str]:
    import importlib

    from llmops.api import RESOURCES, common

    kinds = [importlib.import_module(f"llmops.api.{r.singular}").Reason for r in RESOURCES]
    return {
        v
        for cls in (common.CommonReason, *kinds)
        for k, v in vars(cls).items()
        if k.isupper() and isinstance(v, str)
    }


def test_operations_lists_every_condition_reason_and_no_other() -> None:
    text = (DOCS / "operations.md").read_text()
    section = text[text.index("### An object is Stalled") : text.index("### Stuck finalizers")]
    reasons = _reasons()
    missing = sorted(r for r in reasons if f"`{r}`" not in section)
    assert not missing, f"docs/operations.md does not describe the condition reasons {missing}"
    rows = re.findall(r"^\| ([^|]+) \| (?:Ready|Reconciling|Stalled) \|", section, re.M)
    named = {n for row in rows for n in re.findall(r"`(\w+)`", row)}
    assert named, "no reason table found in docs/operations.md"
    unknown = sorted(named - reasons)
    assert not unknown, f"docs/operations.md names reasons no Reason class declares: {unknown}"


def test_every_metric_named_exists_and_every_serving_metric_is_named() -> None:
    code = "".join(p.read_text() for p in (ROOT / "llmops").rglob("*.py"))
    declared = set(re.findall(r"""["'](llmops_\w+)["']""", code))
    for page in PROSE:
        for name in set(
            re.findall(r"\b(llmops_(?:operator|gateway|drift)_[a-z0-9_]*[a-z0-9])\b", page.read_text())
        ):
            base = re.sub(r"_(total|bucket|count|sum|created)$", "", name)
            assert name in declared or base in declared, f"{page.name}: {name} is no metric of llmops/"
    text = (DOCS / "operations.md").read_text()
    for name in sorted(n for n in declared if n.startswith(("llmops_gateway_", "llmops_drift_"))):
        short = name.split("_", 2)[2]
        assert f"`{short}`" in text or f"`{short}_total`" in text or f"`{name}`" in text, (
            f"docs/operations.md does not describe the metric {name}"
        )


def _has_path(schema: dict, parts: list[str]) -> bool:
    for part in parts:
        part = part.removesuffix("[]")
        items = schema.get("items") or {}
        if part in schema.get("properties", {}):
            schema = schema["properties"][part]
        elif part in items.get("properties", {}):
            schema = items["properties"][part]
        elif isinstance(schema.get("additionalProperties"), dict):
            schema = schema["additionalProperties"]
        else:
            return False
    return True


@pytest.mark.parametrize("page", [p.relative_to(ROOT).as_posix() for p in PROSE if "invalid" not in p.parts])
def test_every_field_named_exists(page: str) -> None:
    """A field path in prose (`spec.monitoring.serviceMonitor`, `status.canary.windowSeconds`, or one
    relative to the spec such as `autoscaling.minReplicas`) is a field of a CRD (of either kind: the
    pages name both). examples/invalid/ is left out: a wrong field is what those files show."""
    schemas = [
        yaml.safe_load(p.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for p in sorted((ROOT / "crds").glob("*.yaml"))
    ]
    specs = [s["properties"]["spec"] for s in schemas]
    tops = {name for spec in specs for name in spec["properties"]}
    chart = json.loads((ROOT / "charts" / "llmops" / "values.schema.json").read_text())
    text = (ROOT / page).read_text()
    field = r"[a-zA-Z][a-zA-Z0-9]*(?:\[\])?"
    wrong = [
        path
        for path in re.findall(rf"(?<![\w.])((?:spec|status)(?:\.{field})+)", text)
        if not any(_has_path(s, path.split(".")) for s in schemas)
    ]
    for path in re.findall(rf"`([a-z][a-zA-Z0-9]*(?:\[\])?(?:\.{field})+)`", text):
        parts = path.split(".")
        if parts[0].removesuffix("[]") not in tops or path.endswith(".py") or _has_path(chart, parts):
            continue
        if not any(_has_path(s, parts) for s in specs):
            wrong.append(path)
    assert not wrong, f"{page} names fields no CRD has: {sorted(set(wrong))}"


@pytest.mark.parametrize(
    "page", ["README.md", *sorted(p.relative_to(ROOT).as_posix() for p in DOCS.glob("*.md"))]
)
def test_every_llmops_command_shown_exists(page: str) -> None:
    """`llmops dev up --operator --services`, `llmops watch trainingjob NAME -n NS`: each command a page
    shows (in code, after `llmops `) is a command of the `llmops` CLI, and each option it passes is one
    of that command's options."""
    import click

    from llmops.cli import main

    text = (ROOT / page).read_text()
    wrong = []
    for line in re.findall(
        r"(?:^|[`$(]|\s{2})llmops ((?:[a-z][\w-]* ?|-[-\w]+ ?|[A-Z$\"{][^ `)]* ?)+)", text, re.M
    ):
        words = line.split()
        command: click.Command = main
        ctx = click.Context(main)
        while isinstance(command, click.Group) and words and not words[0].startswith("-"):
            sub = command.get_command(ctx, words[0])
            if sub is None:
                if command is not main:
                    wrong.append(f"llmops {line.strip()}: no command {words[0]}")
                break
            command, words = sub, words[1:]
        if command is main:
            continue  # prose ("llmops objects", "llmops operator is not running") is not a command
        options = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
        wrong += [
            f"llmops {line.strip()}: {w}"
            for w in words
            if w.startswith("-") and w.split("=")[0] not in options
        ]
    assert not wrong, f"{page} shows options the CLI does not have: {wrong}"


def test_every_make_target_named_exists() -> None:
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
    for page in PROSE:
        named = set(re.findall(r"`make (\w[\w-]*)", page.read_text())) | set(
            re.findall(r"^\s*make (\w[\w-]*)", page.read_text(), re.M)
        )
        assert named <= targets, f"{page.name} names make targets the Makefile lacks: {named - targets}"


def test_install_gives_each_chart_values_default() -> None:
    """A default written as a literal in docs/install.md's chart table is values.yaml's (defaults the
    templates compute, such as `ghcr.io/llmops/trainer:<appVersion>`, are left to test_chart.py)."""
    values = yaml.safe_load((ROOT / "charts" / "llmops" / "values.yaml").read_text())
    text = (DOCS / "install.md").read_text()
    table = text[text.index("## Chart values") : text.index("## Operator settings")]
    checked = 0
    for names, default in re.findall(r"^\| (`[^|]+) \| ([^|]+) \|", table, re.M):
        literal = re.match(r"`([^`<]*)`", default.strip())
        if not literal:
            continue
        for name in re.findall(r"`([\w.]+)`", names):
            value = values
            for part in name.split("."):
                value = value[part]
            assert value == (yaml.safe_load(literal.group(1)) if literal.group(1) else ""), (
                f"docs/install.md gives {name} the default {literal.group(1)!r}; values.yaml has {value!r}"
            )
            checked += 1
    assert checked > 20


def test_operations_lists_every_slo_alert_with_its_duration() -> None:
    from llmops.api.modeldeployment import Alerts
    from llmops.operators.modeldeployment.monitoring import alert_rules

    every = Alerts.model_validate(
        {"p95LatencyMs": 1, "maxErrorRate": 0.1, "maxQueueDepth": 1, "maxDriftScore": 0.9}
    )
    rules = {r["alert"]: r["for"] for r in alert_rules(every, "ns", "md")}
    text = (DOCS / "operations.md").read_text()
    rows = dict(re.findall(r"^\| `(LLMOps\w+)` \| (.+) \|$", text, re.M))
    for alert, duration in rules.items():
        assert alert in rows, f"docs/operations.md does not list the alert {alert}"
        minutes = int(duration.removesuffix("m"))
        assert f"for {minutes} minutes" in rows[alert], f"{alert} fires after {duration}: {rows[alert]}"


# -- the Secrets and ServiceAccounts the examples name, created in the docs ---------------------------


def _named_objects(node: Any, path: str = "") -> list[tuple[str, str, str, frozenset[str] | None]]:
    """(field path, kind, name, the keys the code reads; None: any key, one at least) of every Secret
    and ServiceAccount a manifest names. The keys: a `credentialsSecretRef` is read at
    `accessKeyIdKey`/`secretAccessKeyKey` (their defaults from the API model, llmops/api/common.py),
    a `SecretKeyRef` at its `key`, `gateway.tls.secretName` at cert-manager's `tls.crt`/`tls.key`;
    `apiKeysSecretRef` (every value is a key) and `envFromSecrets` (every key an environment
    variable) take any keys."""
    from llmops.api.common import SecretKeysRef

    defaults = SecretKeysRef.model_fields
    found: list[tuple[str, str, str, frozenset[str] | None]] = []
    if isinstance(node, list):
        for i, item in enumerate(node):
            found += _named_objects(item, f"{path}[{i}]")
        return found
    if not isinstance(node, dict):
        return found
    for key, value in node.items():
        here = f"{path}.{key}" if path else key
        if key == "credentialsSecretRef":
            keys = (
                value.get("accessKeyIdKey", defaults["access_key_id_key"].default),
                value.get("secretAccessKeyKey", defaults["secret_access_key_key"].default),
            )
            found.append((here, "Secret", value["name"], frozenset(keys)))
        elif key.endswith("SecretRef") and isinstance(value, dict):
            keys = frozenset([value["key"]]) if "key" in value else None
            found.append((here, "Secret", value["name"], keys))
        elif key == "secretName" and path.endswith("tls"):
            found.append((here, "Secret", value, frozenset({"tls.crt", "tls.key"})))
        elif key == "envFromSecrets":
            found += [(f"{here}[{i}]", "Secret", name, None) for i, name in enumerate(value)]
        elif key == "serviceAccountName":
            found.append((here, "ServiceAccount", value, None))
        else:
            found += _named_objects(value, here)
    return found


def _created_in_docs() -> dict[tuple[str, str], list[tuple[str, set[str]]]]:
    """(kind, name) -> [(page, keys)] of every Secret and ServiceAccount a page creates: `kubectl create
    secret generic|tls`, `kubectl create serviceaccount|sa` (in a shell block or inline code), or a
    YAML block of kind Secret (its data/stringData keys) or ServiceAccount."""
    created: dict[tuple[str, str], list[tuple[str, set[str]]]] = {}
    for page in sorted([*DOCS.rglob("*.md"), ROOT / "README.md"]):
        text = page.read_text().replace("\\\n", " ")
        name = str(page.relative_to(ROOT))
        for match in re.finditer(
            r"kubectl\b[^`\n]*? create secret (generic|tls) ([a-z0-9.-]+)([^`\n]*)", text
        ):
            kind, secret, rest = match.groups()
            keys = set(re.findall(r"--from-(?:literal|file)=([-._a-zA-Z0-9]+)=", rest))
            if kind == "tls":
                keys |= {"tls.crt", "tls.key"}
            created.setdefault(("Secret", secret), []).append((name, keys))
        for match in re.finditer(r"kubectl\b[^`\n]*? create (?:serviceaccount|sa) ([a-z0-9.-]+)", text):
            created.setdefault(("ServiceAccount", match.group(1)), []).append((name, set()))
        for block in _yaml_blocks(page):
            for doc in block if isinstance(block, list) else [block]:
                if isinstance(doc, dict) and doc.get("kind") in ("Secret", "ServiceAccount"):
                    keys = {*(doc.get("data") or {}), *(doc.get("stringData") or {})}
                    created.setdefault((doc["kind"], doc["metadata"]["name"]), []).append((name, keys))
    return created


def test_the_docs_create_every_secret_and_service_account_the_examples_name() -> None:
    """Every Secret and ServiceAccount a file under examples/ names (examples/invalid aside) is created
    somewhere in the docs, a Secret with every key the code reads from it (issue 12)."""
    created = _created_in_docs()
    examples = sorted(p for p in (ROOT / "examples").rglob("*.yaml") if "invalid" not in p.parts)
    missing, named = [], set()
    for example in examples:
        for doc in yaml.safe_load_all(example.read_text()):
            for field, kind, name, keys in _named_objects(doc or {}):
                named.add((kind, name))
                where = f"{example.relative_to(ROOT)}: {field} names {kind} {name!r}"
                pages = created.get((kind, name), [])
                if not pages:
                    missing.append(f"{where}, which no page of the docs creates")
                elif keys is not None and not any(keys <= have for _, have in pages):
                    missing.append(f"{where}, read at keys {sorted(keys)}; the docs create it with {pages}")
                elif keys is None and kind == "Secret" and not any(have for _, have in pages):
                    missing.append(f"{where}, whose keys are read; the docs create it with none: {pages}")
    print(f"{len(examples)} examples name {len(named)} Secrets and ServiceAccounts: {sorted(named)}")
    assert not missing, "\n".join(missing)


def test_every_bench_option_says_what_it_is() -> None:
    """`python bench/X.py --help` explains each option (argparse's `help`, or SUPPRESS for internal ones)."""
    import ast

    bare = []
    for path in sorted((ROOT / "bench").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            called = isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument"
            if called and not any(k.arg == "help" for k in node.keywords):
                bare.append(f"{path.name}: {ast.literal_eval(node.args[0])}")
    assert not bare
