"""skaffold.yaml against its schema version, and against the repository.

Skaffold reads its config into the Go types of `pkg/skaffold/schema/<version>/config.go`, strictly:
an unknown key is an error, `yamltags:"required"` fields must be set, and at most one field of a
`yamltags:"oneOf=<group>"` group may be. The test reads those types from skaffold's source in the Go
module cache when it is there (`go mod download github.com/GoogleContainerTools/skaffold/v2@v2.16.1`,
whose `latest` is v4beta13) and otherwise from FALLBACK below, a copy of the types this config uses
(checked against the source whenever the source is there). Then it checks what skaffold would only
find out at run time: every artifact's context and Dockerfile exist, the chart path holds a chart,
the Helm values set exist in the chart's values.yaml (its schema refuses unknown keys), the image
templates name artifacts that are built, and the profiles do what their names say.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SKAFFOLD = ROOT / "skaffold.yaml"
SCHEMA_VERSION = "v4beta13"
SKAFFOLD_MODULE = "github.com/GoogleContainerTools/skaffold/v2"
SKAFFOLD_RELEASE = "v2.16.1"  # the newest release the module proxy served here; its `latest` is v4beta13

# The Go types of skaffold/v4beta13 that skaffold.yaml uses, with inline (embedded) structs flattened
# into their parent: yaml key -> "GoType [required] [oneOf=group]". Copied from config.go of
# github.com/GoogleContainerTools/skaffold/v2@v2.16.1 (pkg/skaffold/schema/latest/config.go);
# test_fallback_matches_skaffold_source keeps it equal to that file when the module is cached.
FALLBACK: dict[str, dict[str, str]] = {
    "SkaffoldConfig": {
        "apiVersion": "string required",
        "kind": "string required",
        "metadata": "Metadata",
        "requires": "[]ConfigDependency",
        "build": "BuildConfig",
        "test": "[]*TestCase",
        "manifests": "RenderConfig",
        "deploy": "DeployConfig",
        "portForward": "[]*PortForwardResource",
        "resourceSelector": "ResourceSelectorConfig",
        "verify": "[]*VerifyTestCase",
        "customActions": "[]Action",
        "profiles": "[]Profile",
    },
    "Metadata": {
        "name": "string",
        "labels": "map[string]string",
        "annotations": "map[string]string",
    },
    "BuildConfig": {
        "hooks": "BuildHooks",
        "artifacts": "[]*Artifact",
        "insecureRegistries": "[]string",
        "tagPolicy": "TagPolicy",
        "platforms": "[]string",
        "local": "*LocalBuild oneOf=build",
        "googleCloudBuild": "*GoogleCloudBuild oneOf=build",
        "cluster": "*ClusterDetails oneOf=build",
    },
    "TagPolicy": {
        "gitCommit": "*GitTagger oneOf=tag",
        "sha256": "*ShaTagger oneOf=tag",
        "envTemplate": "*EnvTemplateTagger oneOf=tag",
        "dateTime": "*DateTimeTagger oneOf=tag",
        "customTemplate": "*CustomTemplateTagger oneOf=tag",
        "inputDigest": "*InputDigest oneOf=tag",
    },
    "GitTagger": {
        "variant": "string",
        "prefix": "string",
        "ignoreChanges": "bool",
    },
    "InputDigest": {},
    "LocalBuild": {
        "push": "*bool",
        "tryImportMissing": "bool",
        "useDockerCLI": "bool",
        "useBuildkit": "*bool",
        "concurrency": "*int",
    },
    "Artifact": {
        "image": "string required",
        "context": "string",
        "sync": "*Sync",
        "docker": "*DockerArtifact oneOf=artifact",
        "bazel": "*BazelArtifact oneOf=artifact",
        "ko": "*KoArtifact oneOf=artifact",
        "jib": "*JibArtifact oneOf=artifact",
        "kaniko": "*KanikoArtifact oneOf=artifact",
        "buildpacks": "*BuildpackArtifact oneOf=artifact",
        "custom": "*CustomArtifact oneOf=artifact",
        "requires": "[]*ArtifactDependency",
        "hooks": "BuildHooks",
        "platforms": "[]string",
        "runtimeType": "string",
    },
    "DockerArtifact": {
        "dockerfile": "string",
        "target": "string",
        "buildArgs": "map[string]*string",
        "network": "string",
        "addHost": "[]string",
        "cacheFrom": "[]string",
        "cliFlags": "[]string",
        "pullParent": "bool",
        "noCache": "bool",
        "squash": "bool",
        "secrets": "[]*DockerSecret",
        "ssh": "string",
    },
    "DeployConfig": {
        "docker": "*DockerDeploy",
        "helm": "*LegacyHelmDeploy",
        "kpt": "*KptDeploy",
        "kubectl": "*KubectlDeploy",
        "cloudrun": "*CloudRunDeploy",
        "statusCheck": "*bool",
        "statusCheckDeadlineSeconds": "int",
        "tolerateFailuresUntilDeadline": "bool",
        "kubeContext": "string",
        "logs": "LogsConfig",
    },
    "LegacyHelmDeploy": {
        "concurrency": "*int",
        "releases": "[]HelmRelease",
        "flags": "HelmDeployFlags",
        "hooks": "DeployHooks",
    },
    "DeployHooks": {
        "before": "[]DeployHookItem",
        "after": "[]DeployHookItem",
    },
    "DeployHookItem": {
        "host": "*HostHook oneOf=deploy_hook",
        "container": "*NamedContainerHook oneOf=deploy_hook",
    },
    "HostHook": {
        "command": "[]string required",
        "os": "[]string",
        "dir": "string",
    },
    "HelmRelease": {
        "name": "string required",
        "chartPath": "string oneOf=chartSource",
        "remoteChart": "string oneOf=chartSource",
        "valuesFiles": "[]string",
        "namespace": "string",
        "version": "string",
        "setValues": "util.FlatMap",
        "setValueTemplates": "util.FlatMap",
        "setFiles": "map[string]string",
        "createNamespace": "*bool",
        "wait": "bool",
        "recreatePods": "bool",
        "skipBuildDependencies": "bool",
        "skipTests": "bool",
        "useHelmSecrets": "bool",
        "repo": "string",
        "upgradeOnChange": "*bool",
        "overrides": "util.HelmOverrides",
        "packaged": "*HelmPackaged",
        "dependsOn": "[]string",
    },
    "Profile": {
        "name": "string required",
        "activation": "[]Activation",
        "requiresAllActivations": "bool",
        "patches": "[]JSONPatch",
        "build": "BuildConfig",
        "test": "[]*TestCase",
        "manifests": "RenderConfig",
        "deploy": "DeployConfig",
        "portForward": "[]*PortForwardResource",
        "resourceSelector": "ResourceSelectorConfig",
        "verify": "[]*VerifyTestCase",
        "customActions": "[]Action",
    },
    "Activation": {
        "env": "string",
        "kubeContext": "string",
        "command": "string",
    },
    "JSONPatch": {
        "op": "string",
        "path": "string required",
        "from": "string",
        "value": "*util.YamlpatchNode",
    },
}


# ------------------------------------------------------------------------------------------------
# The schema: Go struct types, read from config.go.


@dataclass(frozen=True)
class GoField:
    gotype: str
    required: bool = False
    one_of: str | None = None

    def text(self) -> str:
        return " ".join(
            [
                self.gotype,
                *(["required"] if self.required else []),
                *([f"oneOf={self.one_of}"] if self.one_of else []),
            ]
        )

    @classmethod
    def parse(cls, text: str) -> GoField:
        gotype, *flags = text.split()
        group = next((f.partition("=")[2] for f in flags if f.startswith("oneOf=")), None)
        return cls(gotype, "required" in flags, group)


@dataclass
class Schema:
    version: str
    structs: dict[str, dict[str, GoField]]  # inline structs flattened
    scalars: set[str]  # named non-struct types (type X string)
    source: str

    def kind(self, gotype: str) -> tuple[str, str]:
        """("list"|"map"|"struct"|"scalar"|"opaque", element or struct type) of a Go type."""
        t = gotype.lstrip("*")
        if t.startswith("[]"):
            return "list", t[2:]
        if t.startswith("map["):
            return "map", t[t.index("]") + 1 :]
        if t in self.structs:
            return "struct", t
        if t in GO_SCALARS or t in self.scalars:
            return "scalar", t
        return "opaque", t


GO_SCALARS = {"string", "bool", "int", "int32", "int64", "float32", "float64", "uint", "uint32", "uint64"}
_FIELD = re.compile(r"^(?:(?P<name>\w+)\s+)?(?P<type>[\w.\[\]*]+)\s*(?:`(?P<tags>[^`]*)`)?$")


def parse_config_go(text: str) -> Schema:
    version = re.search(r'const Version string = "skaffold/(\w+)"', text)
    assert version, "no `const Version` in config.go"
    # Types with their own YAML unmarshalling accept other shapes: check them no further.
    custom = set(re.findall(r"^func \(\w+ \*?(\w+)\) UnmarshalYAML", text, re.M))
    raw: dict[str, list[tuple[str | None, str, dict[str, str]]]] = {}
    for m in re.finditer(r"^type (\w+) struct\s*\{(?:\}|\n(.*?)^\})", text, re.M | re.S):
        name, body = m.group(1), m.group(2) or ""
        fields = []
        for line in body.splitlines():
            line = line.split("//", 1)[0].strip() if not line.strip().startswith("//") else ""
            if not line:
                continue
            f = _FIELD.match(line)
            assert f, f"{name}: cannot read field {line!r}"
            tags = dict(re.findall(r'(\w+):"([^"]*)"', f.group("tags") or ""))
            fields.append((f.group("name"), f.group("type"), tags))
        raw[name] = fields
    scalars = set(re.findall(r"^type (\w+) (?:string|bool|int|int64|float64)\s*$", text, re.M))

    def flatten(struct: str) -> dict[str, GoField]:
        out: dict[str, GoField] = {}
        for field_name, gotype, tags in raw[struct]:
            key, _, options = tags.get("yaml", "").partition(",")
            if key == "-":
                continue
            yamltags = tags.get("yamltags", "")
            if field_name is None or (not key and "inline" in options):
                assert "inline" in options, f"{struct}: embedded {gotype} without yaml inline"
                out.update(flatten(gotype.lstrip("*")))
                continue
            assert key, f"{struct}.{field_name}: no yaml name"
            group = re.search(r"oneOf=(\w+)", yamltags)
            out[key] = GoField(gotype, "required" in yamltags.split(","), group.group(1) if group else None)
        return out

    structs = {name: flatten(name) for name in raw if name not in custom}
    return Schema(version.group(1), structs, scalars, "config.go")


def fallback_schema() -> Schema:
    structs = {name: {k: GoField.parse(v) for k, v in fields.items()} for name, fields in FALLBACK.items()}
    return Schema(SCHEMA_VERSION, structs, set(), "FALLBACK")


def find_config_go() -> Path | None:
    """config.go of SCHEMA_VERSION in a skaffold module in the Go module cache, if any."""
    roots = [os.environ.get("GOMODCACHE")]
    if shutil.which("go"):
        out = subprocess.run(["go", "env", "GOMODCACHE"], capture_output=True, text=True, timeout=60)
        roots.append(out.stdout.strip())
    roots.append(str(Path.home() / "go" / "pkg" / "mod"))
    escaped = re.sub(r"[A-Z]", lambda m: "!" + m.group(0).lower(), SKAFFOLD_MODULE)
    for root in filter(None, roots):
        for module in sorted(Path(root).glob(f"{escaped}@*"), reverse=True):
            for rel in (
                f"pkg/skaffold/schema/{SCHEMA_VERSION}/config.go",
                "pkg/skaffold/schema/latest/config.go",
            ):
                path = module / rel
                if path.is_file() and f'"skaffold/{SCHEMA_VERSION}"' in path.read_text():
                    return path
    return None


CONFIG_GO = find_config_go()
SCHEMA = parse_config_go(CONFIG_GO.read_text()) if CONFIG_GO else fallback_schema()


# ------------------------------------------------------------------------------------------------
# Validation the way skaffold's strict YAML decoding and yamltags checks see the file.


def validate(value: Any, gotype: str, path: str, schema: Schema, errors: list[str]) -> None:
    kind, inner = schema.kind(gotype)
    if value is None:
        return  # an empty value is the zero value
    if kind == "list":
        if not isinstance(value, list):
            errors.append(f"{path}: expected a list ({gotype})")
            return
        for i, item in enumerate(value):
            validate(item, inner, f"{path}[{i}]", schema, errors)
    elif kind == "map":
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a mapping ({gotype})")
            return
        for k, v in value.items():
            validate(v, inner, f"{path}.{k}", schema, errors)
    elif kind == "struct":
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a mapping ({inner})")
            return
        fields = schema.structs[inner]
        for key in value:
            if key not in fields:
                errors.append(f"{path}: unknown field {key!r} in {inner}")
        for key, f in fields.items():
            if f.required and value.get(key) in (None, "", [], {}):
                errors.append(f"{path}: {key} is required in {inner}")
            if key in value:
                validate(value[key], f.gotype, f"{path}.{key}", schema, errors)
        groups: dict[str, list[str]] = {}
        for key, f in fields.items():
            if f.one_of and value.get(key) is not None:
                groups.setdefault(f.one_of, []).append(key)
        for group, keys in groups.items():
            if len(keys) > 1:
                errors.append(f"{path}: only one of {keys} (oneOf={group})")
    elif kind == "scalar":
        if inner == "bool" and not isinstance(value, bool):
            errors.append(f"{path}: expected a boolean")
        elif inner.startswith(("int", "uint")) and (isinstance(value, bool) or not isinstance(value, int)):
            errors.append(f"{path}: expected an integer")
        elif inner == "string" and not isinstance(value, str | int | float):
            errors.append(f"{path}: expected a string")
    elif kind == "opaque" and schema.source == "FALLBACK" and inner[:1].isupper() and "." not in inner:
        errors.append(f"{path}: {inner} is not in FALLBACK; copy it from skaffold's config.go")


def struct_type(schema: Schema, gotype: str) -> str:
    kind, inner = schema.kind(gotype)
    assert kind == "struct", gotype
    return inner


def overlay(base: Any, over: Any, gotype: str, schema: Schema) -> Any:
    """Skaffold's profile overlay (schema/profiles.go): structs merge field by field, setting one
    field of a oneOf group replaces the group, set pointers and non-empty lists and maps replace,
    zero values keep what the base has."""
    kind, inner = schema.kind(gotype)
    if over is None:
        return base
    if gotype.startswith("*") or kind in ("list", "map", "opaque"):
        return copy.deepcopy(over) if gotype.startswith("*") or over not in ([], {}) else base
    if kind == "scalar":
        return base if over in ("", 0, False) else over
    fields = schema.structs[inner]
    out = dict(base or {})
    for key, value in over.items():
        f = fields[key]
        if f.one_of and value is not None:
            for other, g in fields.items():
                if g.one_of == f.one_of:
                    out.pop(other, None)
        out[key] = overlay(out.get(key), value, f.gotype, schema)
    return out


def json_patch(doc: Any, patches: list[dict]) -> Any:
    doc = copy.deepcopy(doc)
    for p in patches:
        parts = [s.replace("~1", "/").replace("~0", "~") for s in p["path"].lstrip("/").split("/")]
        parent = doc
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent[part]
        last = parts[-1]
        op = p.get("op", "replace")
        if isinstance(parent, list):
            index = len(parent) if last == "-" else int(last)
            if op == "add":
                parent.insert(index, p["value"])
            elif op == "remove":
                parent.pop(index)
            else:
                parent[index] = p["value"]
        elif op == "remove":
            del parent[last]
        else:
            assert op == "add" or last in parent, f"replace of a missing {p['path']}"
            parent[last] = p["value"]
    return doc


def effective(config: dict, profile: str, schema: Schema) -> dict:
    """The config skaffold runs with `-p profile`: overlay, then the profile's JSON patches."""
    prof = next(p for p in config.get("profiles", []) if p["name"] == profile)
    pipeline = {
        k: v for k, v in prof.items() if k not in ("name", "activation", "requiresAllActivations", "patches")
    }
    out = {k: v for k, v in config.items() if k != "profiles"}
    for key, value in pipeline.items():
        out[key] = overlay(out.get(key), value, schema.structs["SkaffoldConfig"][key].gotype, schema)
    return json_patch(out, prof.get("patches", []))


def load() -> dict:
    return yaml.safe_load(SKAFFOLD.read_text())


def sanitize(image: str) -> str:
    """skaffold's SanitizeHelmTemplateValue: the suffix of IMAGE_REPO_<name> and friends."""
    return re.sub(r"[./:-]", "_", image)


# ------------------------------------------------------------------------------------------------
# The tests.


def test_schema_source() -> None:
    """Say which schema the run used; the parsed source, when present, has the expected version."""
    assert SCHEMA.version == SCHEMA_VERSION
    if CONFIG_GO is None:
        pytest.skip(f"{SKAFFOLD_MODULE}@{SKAFFOLD_RELEASE} is not in the Go module cache; FALLBACK used")
    assert {"SkaffoldConfig", "Artifact", "HelmRelease", "Profile"} <= set(SCHEMA.structs)


def test_fallback_matches_skaffold_source() -> None:
    if CONFIG_GO is None:
        pytest.skip(f"{SKAFFOLD_MODULE}@{SKAFFOLD_RELEASE} is not in the Go module cache")
    parsed = {name: {k: f.text() for k, f in SCHEMA.structs[name].items()} for name in FALLBACK}
    assert parsed == FALLBACK


def test_validator_catches_schema_errors() -> None:
    bad = {
        "apiVersion": f"skaffold/{SCHEMA_VERSION}",
        "kind": "Config",
        "build": {
            "artifacts": [{"context": ".", "docker": {}}, {"image": "x", "dockerfile": "D"}],
            "tagPolicy": {"gitCommit": {}, "inputDigest": {}},
            "local": {"push": "yes"},
        },
        "profiles": [{"activation": [{"kubeContext": "kind-.*"}]}],
    }
    errors: list[str] = []
    validate(bad, "SkaffoldConfig", "", fallback_schema(), errors)
    assert errors == [
        ".build.artifacts[0]: image is required in Artifact",
        ".build.artifacts[1]: unknown field 'dockerfile' in Artifact",
        ".build.tagPolicy: only one of ['gitCommit', 'inputDigest'] (oneOf=tag)",
        ".build.local.push: expected a boolean",
        ".profiles[0]: name is required in Profile",
    ]


def test_config_is_valid_for_its_schema_version() -> None:
    config = load()
    assert config["apiVersion"] == f"skaffold/{SCHEMA_VERSION}"
    assert config["kind"] == "Config"
    errors: list[str] = []
    validate(config, "SkaffoldConfig", "", SCHEMA, errors)
    assert not errors, f"against {SCHEMA.source}:\n" + "\n".join(errors)


@pytest.mark.parametrize("profile", ["kind", "remote"])
def test_profiles_are_valid_after_overlay_and_patches(profile: str) -> None:
    config = effective(load(), profile, SCHEMA)
    errors: list[str] = []
    validate(config, "SkaffoldConfig", f"-p {profile}", SCHEMA, errors)
    assert not errors, "\n".join(errors)
    assert len(config["build"]["artifacts"]) == len(load()["build"]["artifacts"]), (
        "the profile drops artifacts"
    )
    assert config["deploy"]["helm"]["releases"], "the profile drops the Helm release"


def test_kind_profile_builds_locally_without_pushing() -> None:
    config = load()
    kind = next(p for p in config["profiles"] if p["name"] == "kind")
    assert any(re.fullmatch(a["kubeContext"], "kind-llmops") for a in kind.get("activation", []))
    assert effective(config, "kind", SCHEMA)["build"]["local"]["push"] is False


def test_remote_profile_pushes_and_deploys_by_digest() -> None:
    config = effective(load(), "remote", SCHEMA)
    assert config["build"]["local"]["push"] is True
    assert "gitCommit" in config["build"]["tagPolicy"], "a pushed tag should say which commit it is"
    for release in config["deploy"]["helm"]["releases"]:
        templates = release.get("setValueTemplates", {})
        assert any("IMAGE_DIGEST_" in v for v in templates.values()), "pin the pushed image by digest"


def test_artifacts_build_the_dockerfiles_in_images() -> None:
    artifacts = load()["build"]["artifacts"]
    built = set()
    for a in artifacts:
        context = ROOT / a.get("context", ".")
        assert context.is_dir(), f"{a['image']}: no context {context}"
        docker = a.get("docker")
        assert docker is not None, f"{a['image']}: build with the docker builder"
        dockerfile = context / docker.get("dockerfile", "Dockerfile")
        assert dockerfile.is_file(), f"{a['image']}: no {dockerfile}"
        target = docker.get("target")
        if target:
            assert re.search(
                rf"^FROM\s+\S+\s+AS\s+{re.escape(target)}\s*$", dockerfile.read_text(), re.M | re.I
            ), f"{a['image']}: {dockerfile.relative_to(ROOT)} has no stage {target}"
        built.add(dockerfile.resolve())
    assert len({a["image"] for a in artifacts}) == len(artifacts), "image names must be unique"
    every = {p.resolve() for p in (ROOT / "images").glob("*/Dockerfile")}
    assert every and every <= built, f"not built: {sorted(str(p) for p in every - built)}"
    # The context is the repository root, so its .dockerignore applies.
    assert all(a.get("context", ".") == "." for a in artifacts) and (ROOT / ".dockerignore").is_file()


def _values_has(values: dict, dotted: str) -> bool:
    node: Any = values
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


@pytest.mark.parametrize("profile", [None, "kind", "remote"])
def test_helm_release_matches_the_chart(profile: str | None) -> None:
    config = load() if profile is None else effective(load(), profile, SCHEMA)
    images = {sanitize(a["image"]) for a in config["build"]["artifacts"]}
    for release in config["deploy"]["helm"]["releases"]:
        chart = ROOT / release["chartPath"]
        assert (chart / "Chart.yaml").is_file(), f"{release['chartPath']} is no chart"
        values = yaml.safe_load((chart / "values.yaml").read_text())
        for key in [*release.get("setValues", {}), *release.get("setValueTemplates", {})]:
            assert _values_has(values, key), f"{key} is not in {release['chartPath']}/values.yaml"
        for key, template in release.get("setValueTemplates", {}).items():
            for name in re.findall(r"\{\{\s*\.(\w+)\s*\}\}", template):
                m = re.fullmatch(
                    r"IMAGE_(?:REPO|TAG|DIGEST|DOMAIN|REPO_NO_DOMAIN|FULLY_QUALIFIED)_(\w+)", name
                )
                assert m and m.group(1) in images, f"{key}: {{{{.{name}}}}} names no built artifact"
        # The operator image the chart runs is the one built here.
        assert "image.repository" in release.get("setValueTemplates", {})
        assert "image.tag" in release.get("setValueTemplates", {})


def test_deploy_hooks_apply_the_crds_in_the_repository() -> None:
    hooks = load()["deploy"]["helm"].get("hooks", {}).get("before", [])
    commands = [h["host"]["command"] for h in hooks if "host" in h]
    applies = [c for c in commands if c[:2] == ["kubectl", "apply"]]
    assert applies, "apply crds/ before the chart: Helm never upgrades CRDs"
    for argv in applies:
        assert "--server-side" in argv
        target = argv[argv.index("-f") + 1]
        assert (ROOT / target).is_dir() and list((ROOT / target).glob("*.yaml")), f"{target} holds no CRDs"
