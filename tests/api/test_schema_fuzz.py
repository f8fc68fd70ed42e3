"""schemathesis against the service's own OpenAPI schema, over HTTP to a real server: whatever
the generated input (valid, invalid, stateful sequences), never a 5xx."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

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
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    counts = re.search(r"(\d+) generated, (\d+) passed", done.stdout)
    assert counts is not None, done.stdout[-2000:]
    generated, passed = map(int, counts.groups())
    assert generated == passed and generated >= 100
