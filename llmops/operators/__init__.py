"""The control plane: one kopf module per resource, thin handlers over pure builders.

kopf and httpx (lightkube's client) are imported here first, with modules the operator never uses
hidden from them (each raises ImportError meanwhile, which both libraries expect of an optional part):
- `kubernetes`: kopf's `_cogs.helpers.thirdparty` imports `kubernetes.client` when it can (for
  isinstance checks on that library's models, which the operator never hands it), and that import
  alone loads 865 modules, about 67 MiB of the operator's memory (issue 17). The operator talks to
  the apiserver through llmops/operators/kube.py instead.
- `httpx._main`: httpx's command-line client, which httpx imports when it can and which loads `rich`
  and `pygments` (82 modules, about 4 MiB).
In a process that imported `kubernetes` already (the tests, the CLI tools) nothing is hidden and
nothing changes. Where kopf is not installed (the images of the other extras, which import pure
modules of this package such as builders) nothing is imported.
"""

import sys

HIDDEN = ("kubernetes", "httpx._main")

if "kopf" not in sys.modules and "kubernetes" not in sys.modules:
    _hidden = [name for name in HIDDEN if name not in sys.modules]
    for _name in _hidden:
        sys.modules[_name] = None  # type: ignore[assignment]  # `import NAME` raises ImportError
    try:
        import httpx  # noqa: F401
        import kopf  # noqa: F401
    except ImportError:
        pass  # no kopf here (another image's extra); the modules that need it say so themselves
    finally:
        for _name in _hidden:
            del sys.modules[_name]
