"""Dependencies point down only: checked on every import statement of the tree (function-level ones too).

Floors, top to bottom:
- tools: `llmops/cli.py` (the `llmops` command, which composes the sub-commands of every program),
  `llmops/dev/` (the local control plane) and `llmops/watch.py`; they may import anything;
- programs: `operators/`, `serving/`, `training/`: each imports the contract, never another program;
- the contract: the rest of `llmops/` (API types, CRD generation, storage, registry, names, gateway
  config, run contract); it imports no program and no tool.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROGRAMS = ("operators", "serving", "training")
TOOLS = ("llmops.cli", "llmops.dev", "llmops.watch")


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _floor(module: str) -> str:
    if _under(module, TOOLS):
        return "tool"
    if _under(module, PROGRAMS):
        return module.split(".")[0]
    return "contract"


def test_dependencies_point_down_only():
    wrong = []
    for package in ("llmops", *PROGRAMS):
        for path in sorted((ROOT / package).rglob("*.py")):
            module = _module(path)
            floor = _floor(module)
            for name in sorted(_imports(path)):
                if not _under(name, ("llmops", *PROGRAMS)):
                    continue  # a third-party or standard module
                target = _floor(name)
                if floor == "tool" or target == "contract" or target == floor:
                    continue
                wrong.append(f"{module} ({floor}) imports {name} ({target})")
    assert not wrong, "\n".join(wrong)


def test_the_check_sees_function_level_imports(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from operators.cli import operator\n    import serving.gateway\n")
    assert _imports(path) == {"operators.cli", "serving.gateway"}
