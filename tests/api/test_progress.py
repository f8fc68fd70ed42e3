"""Long commands draw a progress bar on a terminal, and nothing else when standard error is a
pipe or the output is JSON: the real console script, with a pseudo-terminal as its stderr."""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import CASES_DIR

CASE = str(CASES_DIR / "dgx-boundary-2x8-to-2x8.json")
COMPARE = ["compare", CASE, "--algorithms", "greedy,sendrecv,auto", "--time-limit", "0.5"]


def _meshcast() -> str:
    binary = shutil.which("meshcast", path=str(Path(sys.executable).parent))
    if binary is None:
        pytest.skip("the meshcast console script is not installed (pip install -e .)")
    return binary


def _run_with_terminal_stderr(args: list[str]) -> tuple[int, str, str]:
    """Exit status, stdout and what was drawn on the terminal that stderr was."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [_meshcast(), *args],
        stdout=subprocess.PIPE,
        stderr=terminal,
        env={**os.environ, "COLUMNS": "120", "TERM": "xterm"},
    )
    os.close(terminal)
    drawn, deadline = b"", time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the terminal's last writer is gone
                break
            if not chunk:
                break
            drawn += chunk
        elif process.poll() is not None:
            break
    os.close(controller)
    assert process.stdout is not None
    out = process.stdout.read().decode()
    return process.wait(timeout=30), out, drawn.decode(errors="replace")


def test_compare_draws_a_bar_on_a_terminal() -> None:
    code, out, drawn = _run_with_terminal_stderr(COMPARE)
    assert code == 0
    assert "comparing" in drawn and "/3" in drawn, drawn[:500]
    assert any(name in drawn for name in ("greedy", "sendrecv", "auto"))
    assert out.count("\n") == 3 + 3  # the table is on stdout, whole
    assert "comparing" not in out


def test_compare_is_quiet_with_json_or_without_a_terminal() -> None:
    code, out, drawn = _run_with_terminal_stderr([*COMPARE, "--json"])
    assert code == 0 and drawn == ""
    answer = json.loads(out)
    assert [row["algorithm"] for row in answer["rows"]] == ["greedy", "sendrecv", "auto"]
    piped = subprocess.run(
        [_meshcast(), *COMPARE], capture_output=True, text=True, timeout=120, check=True
    )
    assert piped.stderr == ""
    assert piped.stdout.splitlines()[3].startswith("greedy")


def test_cache_warm_draws_a_bar_and_json_lines(tmp_path: Path) -> None:
    folder = tmp_path / "requests"
    folder.mkdir()
    for name in ("dgx-boundary-2x8-to-2x8.json", "inplace-2x4.json"):
        shutil.copy(CASES_DIR / name, folder / name)
    (folder / "broken.json").write_text("{")
    cache = str(tmp_path / "plans.sqlite3")
    warm = ["cache", "warm", str(folder), "--cache", cache, "--time-limit", "0.5"]
    code, out, drawn = _run_with_terminal_stderr(warm)
    assert code == 1  # the broken file
    assert "warming the cache" in drawn and "/3" in drawn
    assert "broken.json: skipped" in drawn  # skips go to stderr, above the bar
    code, out, drawn = _run_with_terminal_stderr([*warm, "--json"])
    assert code == 1 and drawn == ""
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(line["file"], line["outcome"]) for line in lines] == [
        ("broken.json", "skipped"),
        ("dgx-boundary-2x8-to-2x8.json", "cached"),
        ("inplace-2x4.json", "cached"),
    ]
