"""The operator's settings from its environment (operators.settings): unset or blank is the default,
anything else that is not what the setting takes is refused naming the variable."""

from __future__ import annotations

import pytest

from llmops.operators import settings
from llmops.operators.modeldeployment.plan import ServingSettings
from llmops.operators.runtime import Pace

NUMERIC = (
    "LLMOPS_RESYNC_SECONDS",
    "LLMOPS_RESYNC_RATE",
    "LLMOPS_ALIAS_POLL_SECONDS",
    "LLMOPS_ALIAS_POLL_RATE",
    "LLMOPS_SUSPEND_DRAIN_SECONDS",
    "LLMOPS_RETRY_RATE",
    "LLMOPS_POLL_RATE",
)


def test_unset_blank_and_null_are_the_default() -> None:
    """A value an older release did not have comes out blank from `helm upgrade --reuse-values` (or
    null from an empty `value:`): the operator's default, for every setting."""
    for blank in ("", "  ", None):
        env = {name: blank for name in (*NUMERIC, "LLMOPS_SCRAPE_INTERVAL", "LLMOPS_SERVING_IMAGE")}
        env |= {"LLMOPS_PROMETHEUS_URL": blank, "LLMOPS_PROMETHEUS_NAMESPACE_SELECTOR": blank}
        env |= {"LLMOPS_MONITOR_LABELS": blank}
        assert ServingSettings.from_env(env) == ServingSettings()
        assert Pace.from_env(env) == Pace()
        assert settings.text(env, "LLMOPS_SERVING_IMAGE", "x") == "x"
    assert ServingSettings.from_env({}) == ServingSettings() and Pace.from_env({}) == Pace()


def test_values_are_read_and_stripped() -> None:
    env = {
        "LLMOPS_RESYNC_SECONDS": " 60 ",
        "LLMOPS_RESYNC_RATE": "0.5",
        "LLMOPS_SUSPEND_DRAIN_SECONDS": "0",  # 0: at once
        "LLMOPS_SCRAPE_INTERVAL": "30s",
        "LLMOPS_PROMETHEUS_URL": "http://prometheus.obs.svc:9090 ",
        "LLMOPS_MONITOR_LABELS": "release=kube-prometheus",
    }
    chosen = ServingSettings.from_env(env)
    assert (chosen.resync_seconds, chosen.resync_rate, chosen.suspend_drain_seconds) == (60, 0.5, 0)
    assert chosen.scrape_seconds == 30 and chosen.prometheus_url == "http://prometheus.obs.svc:9090"
    assert chosen.monitor_labels == {"release": "kube-prometheus"}
    assert settings.rate({"R": "inf"}, "R", 1.0, "x") == float("inf")  # paces nothing


@pytest.mark.parametrize(
    ("name", "value", "complaint"),
    [
        (
            "LLMOPS_RESYNC_SECONDS",
            "5m",
            "LLMOPS_RESYNC_SECONDS='5m': the resync period, in seconds, a number above 0",
        ),
        ("LLMOPS_RESYNC_SECONDS", "0", "LLMOPS_RESYNC_SECONDS='0': the resync period, in seconds"),
        ("LLMOPS_ALIAS_POLL_SECONDS", "nan", "LLMOPS_ALIAS_POLL_SECONDS='nan': the alias poll period"),
        ("LLMOPS_ALIAS_POLL_SECONDS", "inf", "LLMOPS_ALIAS_POLL_SECONDS='inf': the alias poll period"),
        (
            "LLMOPS_SUSPEND_DRAIN_SECONDS",
            "-1",
            "LLMOPS_SUSPEND_DRAIN_SECONDS='-1': the longest a suspend waits for the gateway to drain, in"
            " seconds, a number 0 or more",
        ),
        ("LLMOPS_RESYNC_RATE", "0", "LLMOPS_RESYNC_RATE='0': resyncs a second, a number above 0"),
        ("LLMOPS_ALIAS_POLL_RATE", "-2", "LLMOPS_ALIAS_POLL_RATE='-2': alias polls a second"),
        ("LLMOPS_SCRAPE_INTERVAL", "fast", "LLMOPS_SCRAPE_INTERVAL='fast': the monitors' scrape interval"),
        ("LLMOPS_SCRAPE_INTERVAL", "1.5m", "LLMOPS_SCRAPE_INTERVAL='1.5m': the monitors' scrape interval"),
        ("LLMOPS_SCRAPE_INTERVAL", "0s", "LLMOPS_SCRAPE_INTERVAL='0s': the monitors' scrape interval"),
    ],
)
def test_a_wrong_value_is_refused_naming_the_variable(name: str, value: str, complaint: str) -> None:
    with pytest.raises(ValueError) as refused:
        ServingSettings.from_env({name: value})
    assert str(refused.value).startswith(complaint), str(refused.value)


def test_the_retrain_and_retention_periods(monkeypatch: pytest.MonkeyPatch) -> None:
    from llmops.operators import retention
    from llmops.operators.retrainpolicy.reconcile import Settings

    for blank in ("", " "):
        monkeypatch.setenv("LLMOPS_RETRAIN_EVALUATION_SECONDS", blank)
        monkeypatch.setenv("LLMOPS_RETENTION_SWEEP_SECONDS", blank)
        assert Settings.from_env().evaluate_every == 60 and retention.interval_seconds() == 3600
    monkeypatch.setenv("LLMOPS_RETRAIN_EVALUATION_SECONDS", "120")
    monkeypatch.setenv("LLMOPS_RETENTION_SWEEP_SECONDS", "600")
    assert Settings.from_env().evaluate_every == 120 and retention.interval_seconds() == 600
    monkeypatch.setenv("LLMOPS_RETRAIN_EVALUATION_SECONDS", "1h")
    with pytest.raises(ValueError, match=r"^LLMOPS_RETRAIN_EVALUATION_SECONDS='1h': the triggers'"):
        Settings.from_env()
    monkeypatch.setenv("LLMOPS_RETENTION_SWEEP_SECONDS", "-60")
    with pytest.raises(ValueError, match=r"^LLMOPS_RETENTION_SWEEP_SECONDS='-60': the retention sweep"):
        retention.interval_seconds()
