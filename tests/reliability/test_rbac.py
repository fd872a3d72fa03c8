"""Issue 17, point 9: the chart's ServiceAccount can do exactly what the operators need.

The chart is installed with helm into the real apiserver (as tests/cluster/test_chart_cluster.py
does), once as by default (every namespace) and once with `watchNamespaces` and the webhook on; then
`kubectl auth can-i --list --as=system:serviceaccount:<ns>:<sa>` says what the account may do in each
namespace scope the chart grants: a watched namespace, and one it does not watch (where only the
cluster-scoped rules are left). What every ServiceAccount may do anyway (discovery, self-reviews,
public info: a fresh ServiceAccount's own list) is taken out first. The answers are compared
with tests/reliability/rbac_expected.txt, which says why each rule is there (the operators' API
calls: llmops/operators/apply.py, kopf's watches, patches and Events, the Secret reader); a rule
added to the chart without a line there fails, and so does one taken away.

Regenerate after an intended change (and justify the new lines in the file's comments):
LLMOPS_UPDATE_GOLDEN=1 pytest tests/reliability/test_rbac.py
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from llmops.dev.cluster import LocalCluster
from tests.cluster.test_chart_cluster import CHART, helm
from tests.helpers import create_namespace

pytestmark = pytest.mark.cluster

EXPECTED = Path(__file__).with_name("rbac_expected.txt")
UPDATE = os.environ.get("LLMOPS_UPDATE_GOLDEN") == "1"


def can_i_list(cluster: LocalCluster, account: str, namespace: str) -> list[str]:
    """`kubectl auth can-i --list` as `account` in `namespace`: one line per rule, columns joined by
    ' | ' (resources, non-resource URLs, resource names, verbs), sorted; the header left out."""
    out = cluster.kubectl("auth", "can-i", "--list", "--as", account, "-n", namespace).stdout
    lines = out.strip().splitlines()
    header = lines[0]
    starts = [m.start() for m in re.finditer(r"\S+(?: \S+)*", header)]
    rows = []
    for line in lines[1:]:
        cells = [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
        rows.append(" | ".join(cells).strip())
    return sorted(set(rows))


def parse_expected(text: str) -> dict[str, list[str]]:
    """`## scope` headings, each followed by its rules; `#` lines are the reasons."""
    scopes: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("## "):
            current = scopes.setdefault(line[3:].strip(), [])
        elif line.strip() and not line.startswith("#"):
            assert current is not None, f"a rule before any scope: {line}"
            current.append(line.strip())
    return {scope: sorted(rules) for scope, rules in scopes.items()}


def test_the_operator_account_can_do_exactly_the_checked_in_list(
    cluster: LocalCluster, namespace: str, kube_env: dict
) -> None:
    got: dict[str, list[str]] = {}
    other = f"{namespace}-unwatched"
    create_namespace(cluster, other)
    # What every ServiceAccount may do (discovery, self-reviews, public info): not the chart's doing.
    cluster.kubectl("create", "serviceaccount", "nobody", "-n", namespace)
    everyone = set(can_i_list(cluster, f"system:serviceaccount:{namespace}:nobody", namespace))
    print(f"rbac: {len(everyone)} rules every ServiceAccount has, left out of the comparison")
    try:
        for config, args in {
            "default": [],
            "watchNamespaces": ["--set", f"watchNamespaces={{{namespace}}}", "--set", "webhook.enabled=true"],
        }.items():
            release = f"{namespace[:10]}-{config[:1]}"
            helm("install", release, str(CHART), "--namespace", namespace, *args, env=kube_env)
            try:
                account = f"system:serviceaccount:{namespace}:{release}-llmops"
                watched = set(can_i_list(cluster, account, namespace)) - everyone
                got[f"{config}: a namespace"] = sorted(watched)
                if config == "watchNamespaces":
                    unwatched = set(can_i_list(cluster, account, other)) - everyone
                    got[f"{config}: a namespace it does not watch"] = sorted(unwatched)
            finally:
                helm("uninstall", release, "--namespace", namespace, "--wait", env=kube_env)
    finally:
        cluster.kubectl("delete", "namespace", other, "--wait=false", check=False)
    for scope, rules in got.items():
        print(f"rbac: {scope}: {len(rules)} rules")
    if UPDATE:
        old = EXPECTED.read_text() if EXPECTED.exists() else ""
        reasons = {}
        for block in re.split(r"\n(?=## )", old):
            if block.startswith("## "):
                reasons[block.splitlines()[0][3:].strip()] = block
        print(f"rbac: rewrite {EXPECTED}: keep the reasons, check them against the new rules")
        EXPECTED.write_text(
            old.split("\n## ")[0].rstrip()
            + "\n"
            + "".join(f"\n## {scope}\n" + "\n".join(rules) + "\n" for scope, rules in got.items())
        )
    expected = parse_expected(EXPECTED.read_text())
    assert set(expected) == set(got), (sorted(expected), sorted(got))
    for scope in got:
        extra = sorted(set(got[scope]) - set(expected[scope]))
        missing = sorted(set(expected[scope]) - set(got[scope]))
        assert not extra and not missing, f"{scope}: beyond the list {extra}; listed, not granted {missing}"
