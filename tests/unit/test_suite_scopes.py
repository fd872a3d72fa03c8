"""`make test`'s split of the suite (tests/conftest.py): every test file that starts Ray, a training
run or vLLM of its own (the serving tests share one vLLM per worker, in a fixture, except
`test_embeddings`'s own, which is not yet in the scope) is in the
`cpu-bound` scope, which one worker runs in turn, so that two of them never crowd each other out on
the 2 cores."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import CPU_BOUND_FILES, LONGEST_FIRST, cpu_bound

ROOT = Path(__file__).parents[2]
# What starts a Ray head, a training run or vLLM: the workloads' fixtures, the dev services, the demo.
STARTS_CPU_WORK = re.compile(
    r"\b(ray_head|ray_dashboard|RayHead|start_ray|start_vllm|run_version)\b|llmops\.training\.run|make.?demo"
)


def test_every_file_that_starts_ray_training_or_vllm_is_in_the_cpu_bound_scope() -> None:
    files = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "tests").rglob("test_*.py"))
    heavy = [
        f for f in files if not f.startswith("tests/unit/") and STARTS_CPU_WORK.search((ROOT / f).read_text())
    ]
    assert heavy, "the pattern matches no test file: it has gone stale"
    assert [f for f in heavy if not cpu_bound(f)] == []


def test_the_listed_files_exist() -> None:
    missing = [f for f in (*CPU_BOUND_FILES, *LONGEST_FIRST) if not (ROOT / f).is_file()]
    assert missing == []
