"""Fixtures of the RetrainPolicy operator's tests on the real control plane: the ModelDeployment
tests' local registry (support-bot versions 1-3) and real Prometheus scraping a gateway-shaped
exporter (tests/cluster/modeldeployment/conftest.py), reused as they are.

No Ray runs here: a run's TrainingJob gets its status from the test, as the TrainingJob operator
would write it after training (tests/e2e/test_retrain_loop.py trains for real). kwok stands in for
the kubelet of the ModelDeployment's pods.
"""

from __future__ import annotations

from tests.cluster.modeldeployment.conftest import kubeconfig_env, prometheus, registry

__all__ = ["kubeconfig_env", "prometheus", "registry"]
