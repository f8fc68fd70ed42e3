"""`meshcast calibrate` inside a torch.distributed world started by torchrun."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from meshcast.api.cli import main
from tests.api.server import free_port

pytest.importorskip("torch")
pytestmark = pytest.mark.torch


def test_calibrate_under_torchrun() -> None:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun is not installed")
    done = subprocess.run(
        [
            torchrun,
            "--nproc-per-node",
            "2",
            "--master-port",
            str(free_port()),
            "-m",
            "meshcast.api.cli",
            "calibrate",
            "--bytes",
            "4MiB",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["measured"]["hosts"] == [[0, 1]]  # one machine: no inter-host figures
    assert figures["nic_gbps"] is None and figures["intra_gbps"] > 0


def test_calibrate_outside_a_world_says_how(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert main(["calibrate"]) == 2
    assert "torchrun" in capsys.readouterr().err
