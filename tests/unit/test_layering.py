"""Dependencies point down only: checked on every import statement of the tree (function-level ones too).

Everything ships in one import package, `llmops`, on three floors, top to bottom:
- tools: `llmops.cli` (the `llmops` command, which composes the sub-commands of every program),
  `llmops.dev` (the local control plane), `llmops.watch`, `llmops.erasure` (it renders training
  documents as ingest did, with llmops.training's pure chat and traffic modules) and
  `llmops.audit_cli` (`llmops audit` and `llmops report`, which read erasure receipts); they may
  import anything;
- programs: `llmops.operators`, `llmops.serving`, `llmops.training`: each imports the contract, never
  another program and never a tool;
- the contract: the rest of `llmops` (API types, CRD generation, storage, registry, names, gateway
  config, run contract); it imports no program and no tool.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROGRAMS = ("llmops.operators", "llmops.serving", "llmops.training")
TOOLS = ("llmops.cli", "llmops.dev", "llmops.watch", "llmops.erasure", "llmops.audit_cli")


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _floor(module: str) -> str:
    if _under(module, TOOLS):
        return "tool"
    for program in PROGRAMS:
        if _under(module, (program,)):
            return program
    return "contract"


def test_dependencies_point_down_only():
    wrong = []
    for path in sorted((ROOT / "llmops").rglob("*.py")):
        module = _module(path)
        floor = _floor(module)
        for name in sorted(_imports(path)):
            if not _under(name, ("llmops",)):
                continue  # a third-party or standard module
            target = _floor(name)
            if floor == "tool" or target == "contract" or target == floor:
                continue
            wrong.append(f"{module} ({floor}) imports {name} ({target})")
    assert not wrong, "\n".join(wrong)


def test_the_check_sees_function_level_imports(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from llmops.operators import cli\n    import llmops.serving.gateway\n")
    assert _imports(path) == {"llmops.operators.cli", "llmops.serving.gateway"}
    assert _floor("llmops.operators.cli") == "llmops.operators" and _floor("llmops.api.common") == "contract"


def test_every_resource_has_an_operator_and_can_hold_the_runtimes_phases():
    """A kind added to RESOURCES is reconciled (its KIND is in default_kinds), and its status accepts the
    phases the shared runtime writes on its own (Pending while it retries, Failed when it stalls)."""
    from llmops.api import RESOURCES
    from llmops.operators.main import default_kinds

    assert {kind.resource.kind for kind in default_kinds()} == {r.kind for r in RESOURCES}
    for resource in RESOURCES:
        for phase in ("Pending", "Failed"):
            assert resource.status.model_validate({"phase": phase}).phase == phase, resource.kind
