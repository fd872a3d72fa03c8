"""The control plane: one kopf module per resource, thin handlers over pure builders.

kopf is imported here first, with the `kubernetes` package hidden from it: kopf's
`_cogs.helpers.thirdparty` imports `kubernetes.client` when it can (for isinstance checks on that
library's models, which the operator never hands it), and that import alone loads 865 modules, about
67 MiB of the operator's memory (issue 17). The operator talks to the apiserver through
llmops/operators/kube.py instead. In a process that imported `kubernetes` already (the tests, the CLI
tools) nothing is hidden and nothing changes. Where kopf is not installed (the images of the other
extras, which import pure modules of this package such as builders) nothing is imported.
"""

import sys

if "kopf" not in sys.modules and "kubernetes" not in sys.modules:
    sys.modules["kubernetes"] = None  # type: ignore[assignment]  # `import kubernetes...` raises ImportError
    try:
        import kopf  # noqa: F401
    except ImportError:
        pass  # no kopf here (another image's extra); the modules that need it say so themselves
    finally:
        del sys.modules["kubernetes"]
