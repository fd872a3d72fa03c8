"""The operator's pure modules import neither kopf nor the Kubernetes client, checked (issue 13, R6).

The rule. Under `llmops/operators/`, a module is pure unless it is declared I/O here:
- in every kind's directory `operators/<kind>/`: the kind's declaration `__init__.py` (it builds the
  `Kind` from llmops/operators/runtime.py) and `reconcile.py` (the kind's only I/O) are I/O; every other
  module (builders, child modules, fold, plan, names, canary, clients that load their library
  lazily such as rayjobs_api.py) is pure;
- at the top of `llmops/operators/`: the runtime and the process (`runtime.py`, `main.py`, `cli.py`,
  `admission.py`, `metrics.py`), the audit trail's writer and Event poster (`auditing.py`), the
  applier (`apply.py`), the Kubernetes client (`kube.py`) and the Secret reader (`secrets.py`) are
  I/O; every other module (outcome.py, manifests.py, registry_access.py, ...) is pure, and only those
  may be imported by a kind's pure modules.

"Pure" is checked as: the module imports, with all it imports, while `kopf`, `kubernetes` and
`lightkube` (the operator's client, llmops/operators/kube.py) cannot be imported at all. The modules
are found by globbing, so a new kind or a new module is covered the day it is added. Each kind's
package is stood in for by an empty package while its modules are imported, so a pure module is
judged by its own imports, not by its kind's declaration; a pure module that imports its kind's
`reconcile.py` still fails, as it should.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OPERATORS = ROOT / "llmops" / "operators"
BLOCKED = ("kopf", "kubernetes", "lightkube")
IO_IN_A_KIND = {"__init__.py", "reconcile.py"}
IO_AT_THE_TOP = {
    "__init__.py",
    "admission.py",
    "apply.py",
    "auditing.py",
    "cli.py",
    "kube.py",
    "main.py",
    "metrics.py",
    "runtime.py",
    "secrets.py",
}

# Modules that are meant to be pure but are not yet. ONE list, emptied as the modules are fixed: the
# test fails when a listed module has become pure or is gone, so the list can only shrink.
NOT_YET_PURE: set[str] = set()

CHECK = """
import importlib, importlib.abc, json, sys, traceback, types

BLOCKED = {blocked!r}


class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is blocked: a pure module imported it")
        return None


sys.meta_path.insert(0, Blocked())
for name in list(sys.modules):
    if name.split(".")[0] in BLOCKED:
        del sys.modules[name]
for package, path in {packages!r}.items():  # the kinds' packages, without their declaration
    stand_in = types.ModuleType(package)
    stand_in.__path__ = [path]
    sys.modules[package] = stand_in
failures = {{}}
for module in {modules!r}:
    try:
        importlib.import_module(module)
    except Exception:
        failures[module] = traceback.format_exc(limit=-3)
try:
    import kopf  # noqa: F401
    failures["(the blocker)"] = "kopf could be imported"
except ImportError:
    pass
print(json.dumps(failures))
"""


def _module(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def pure_modules() -> list[Path]:
    """Every module under llmops/operators/ that the rule in the module docstring calls pure."""
    top = [p for p in sorted(OPERATORS.glob("*.py")) if p.name not in IO_AT_THE_TOP]
    kinds = [
        p
        for kind in sorted(d for d in OPERATORS.iterdir() if (d / "__init__.py").exists())
        for p in sorted(kind.glob("*.py"))
        if p.name not in IO_IN_A_KIND
    ]
    return top + kinds


def impure(paths: list[Path]) -> dict[str, str]:
    """{module path: why} for those of `paths` that do not import with kopf and kubernetes blocked."""
    packages = {_module(d): str(d) for d in sorted(OPERATORS.iterdir()) if (d / "__init__.py").exists()}
    code = CHECK.format(blocked=BLOCKED, packages=packages, modules=[_module(p) for p in paths])
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300, check=True
    )
    failures = json.loads(done.stdout.strip().splitlines()[-1])
    return {k if k.startswith("(") else k.replace(".", "/") + ".py": v for k, v in failures.items()}


def test_the_rule_finds_the_pure_modules_of_every_kind() -> None:
    found = {str(p.relative_to(ROOT)) for p in pure_modules()}
    for expected in (
        "llmops/operators/outcome.py",
        "llmops/operators/trainingjob/fold.py",
        "llmops/operators/trainingjob/plan.py",
        "llmops/operators/trainingjob/builders.py",
        "llmops/operators/trainingjob/names.py",
        "llmops/operators/modeldeployment/names.py",
    ):
        assert expected in found
    assert not found & {"llmops/operators/runtime.py", "llmops/operators/trainingjob/reconcile.py"}


def test_pure_modules_import_neither_kopf_nor_kubernetes() -> None:
    failures = impure(pure_modules())
    assert "(the blocker)" not in failures, "the check itself is broken: kopf stayed importable"
    unexpected = {path: why for path, why in failures.items() if path not in NOT_YET_PURE}
    assert not unexpected, "pure modules that import kopf or kubernetes:\n" + "\n".join(
        f"{path}:\n{why}" for path, why in unexpected.items()
    )
    fixed = {path for path in NOT_YET_PURE if path not in failures}
    assert not fixed, f"now pure or gone, remove from NOT_YET_PURE: {sorted(fixed)}"


def test_the_check_catches_an_impure_module() -> None:
    assert set(impure([OPERATORS / "runtime.py", OPERATORS / "outcome.py"])) == {
        "llmops/operators/runtime.py"
    }
