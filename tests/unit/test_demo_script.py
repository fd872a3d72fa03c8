"""hack/demo.sh names the cache folder it really uses: $LLMOPS_CACHE when set (as hack/venv.sh and
hack/tools/build.sh read it), never a fixed ~/.cache/llmops."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = "cache=${LLMOPS_CACHE:-$HOME/.cache/llmops}"


def test_every_script_reads_the_cache_folder_the_same_way():
    for script in ("hack/demo.sh", "hack/venv.sh", "hack/tools/build.sh"):
        text = (ROOT / script).read_text()
        assert CACHE in text.splitlines(), script
        assert "~/.cache/llmops" not in text, script


def test_the_demo_step_lines_print_the_cache_folder_in_use(tmp_path):
    """The demo's `cache=` line and its steps that name the cache, run with a stand-in `step`."""
    text = (ROOT / "hack" / "demo.sh").read_text()
    statements = re.findall(r'^step "[^"]+" "[^"]*"(?: \\\n\s+"[^"]*")?$', text, re.M)
    steps = [s for s in statements if "$cache" in s]
    assert len(steps) >= 2, statements
    script = "\n".join(['step() { printf "%s | %s | %s\\n" "$@"; }', CACHE, *steps])
    elsewhere = tmp_path / "cache"
    out = subprocess.run(
        ["bash", "-c", script], env={"LLMOPS_CACHE": str(elsewhere), "HOME": "/home/x"}, capture_output=True,
        text=True, check=True,
    ).stdout  # fmt: skip
    assert f"cached in {elsewhere})" in out and f"{elsewhere}/logs/venv.log" in out
    assert "/home/x" not in out
