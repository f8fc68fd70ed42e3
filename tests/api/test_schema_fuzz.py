"""schemathesis against the service's own OpenAPI schema, over HTTP to a real server: whatever
the generated input (valid, invalid, stateful sequences), never a 5xx. The typed schema lets it
build requests that pass validation and reach a solver; how many did is counted from the
service's own metrics and printed."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.api.server import running_server


def test_no_generated_input_gets_a_server_error(tmp_path: Path) -> None:
    binary = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    if binary is None:
        pytest.skip("schemathesis is not installed (pip install 'meshcast[dev]')")
    with running_server(
        "--cache", str(tmp_path / "plans.sqlite3"), "--solver-processes", "1"
    ) as url:
        done = subprocess.run(
            [
                binary,
                "run",
                f"{url}/openapi.json",
                "--checks",
                "not_a_server_error",
                "--max-examples",
                "40",
                "--seed",
                "1",
                "--request-timeout",
                "60",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,  # schemathesis keeps its example database in the working folder
        )
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
    solved = sum(
        float(value)
        for value in re.findall(r"^meshcast_plans_solved_total\{[^}]*\} (\S+)$", metrics, re.M)
    )
    hits = sum(float(v) for v in re.findall(r"^meshcast_cache_hits_total (\S+)$", metrics, re.M))
    print(f"schemathesis: {solved:.0f} generated requests were solved, {hits:.0f} cache hits")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    counts = re.search(r"(\d+) generated, (\d+) passed", done.stdout)
    assert counts is not None, done.stdout[-2000:]
    generated, passed = map(int, counts.groups())
    assert generated == passed and generated >= 100
    assert solved >= 1, metrics[-2000:]
