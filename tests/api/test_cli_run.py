"""`meshcast run`: a real local world end to end, and its refusals of bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from meshcast.api.cli import main
from meshcast.api.cli_run import parse_size
from tests.api.server import ROOT, descendants, survivors
from tests.conftest import CASES_DIR

pytest.importorskip("torch")

CASE = str(CASES_DIR / "paper-1tom-2x2.json")


@pytest.mark.torch
@pytest.mark.parametrize(
    ("mode", "extra"), [("chain", []), ("broadcast", []), ("chain", ["--out", "--strided"])]
)
def test_run_verifies_and_ends_with_one_json_line(
    mode: str, extra: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "run",
            CASE,
            "--max-bytes",
            "2MiB",
            "--mode",
            mode,
            "--repeats",
            "2",
            "--json",
            "--time-limit",
            "0.5",
            "--staging",
            "256KiB",
            *extra,
        ]
    )
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    summary = json.loads(out[-1])
    assert summary["verified"] is True and summary["mismatches"] == []
    assert summary["transfers"] >= 1 and len(summary["runs_s"]) == 2 and summary["wall_s"] > 0
    memory = summary["memory"]
    meshes = json.loads(Path(CASE).read_text())["meshes"].values()
    assert sorted(m["rank"] for m in memory) == sorted({d for m in meshes for d in m["devices"]})
    for m in memory:
        assert m["staging_bytes"] <= 256 << 10
        assert m["peak_growth_bytes"] is not None and m["peak_growth_bytes"] > 0


@pytest.mark.torch
def test_run_takes_a_plan_file_and_prints_every_transfer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    request = json.loads(Path(CASE).read_text())
    request["tensors"][0]["shape"] = [64, 64]  # small enough to run, same layout
    request_path = tmp_path / "request.json"
    request_path.write_text(json.dumps(request))
    plan_path = tmp_path / "plan.json"
    assert main(["plan", str(request_path), "--algorithm", "sendrecv", "-o", str(plan_path)]) == 0
    capsys.readouterr()
    assert main(["run", str(request_path), "--plan", str(plan_path)]) == 0
    out = capsys.readouterr().out
    num_transfers = len(json.loads(plan_path.read_text())["transfers"])
    assert num_transfers == 4  # one send per receiver
    transfers, memory = out.split("peak growth MiB")

    def rows(table: str) -> list[str]:
        return [line for line in table.splitlines() if line.split() and line.split()[0].isdigit()]

    assert len(rows(transfers)) == num_transfers
    devices = {d for mesh in request["meshes"].values() for d in mesh["devices"]}
    assert len(rows(memory)) == len(devices)
    assert "verified" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        # far more ranks than the machine should host
        (["--max-ranks", "4"], "6 ranks (devices 0..5) exceed --max-ranks 4"),
        # 1 GiB to four receivers, kept full size by the user, on a machine with 4 GiB free
        (["--max-bytes", "2GiB"], "scale it down with --max-bytes"),
        # nonsense repeat count
        (["--repeats", "0", "--max-bytes", "1MiB"], "--repeats: must be at least 1"),
        # a staging budget too small for four aligned chunks
        (["--staging", "16", "--max-bytes", "1MiB"], "--staging: must be at least 32 bytes"),
        # unknown algorithm
        (["--algorithm", "fastest", "--max-bytes", "1MiB"], "--algorithm"),
        # a plan made for another request
        (["--plan", str(CASES_DIR.parent / "missing.json")], "cannot read plan"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    args: list[str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr("meshcast.api.cli_run._available_memory_bytes", lambda: 4 << 30)
    assert main(["run", CASE, *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1], err
    assert err[-1].startswith("meshcast: error: ")


def test_a_size_that_is_no_size_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["run", CASE, "--max-bytes", "lots"])
    assert exit_.value.code == 2
    assert "expected a size like 64MiB or 1GB, got 'lots'" in capsys.readouterr().err


@pytest.mark.torch
def test_a_request_too_large_for_memory_is_scaled_down_and_said_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("meshcast.api.cli_run._available_memory_bytes", lambda: 6 << 30)
    assert main(["run", CASE, "--json", "--time-limit", "0.5"]) == 0
    captured = capsys.readouterr()
    assert "do not fit this machine's memory" in captured.err
    assert "running them scaled to" in captured.err
    assert json.loads(captured.out.strip().splitlines()[-1])["verified"] is True


def test_plan_for_another_request_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan_path = tmp_path / "plan.json"
    other = str(CASES_DIR / "paper-1tom-1x2.json")
    assert main(["plan", other, "--algorithm", "greedy", "-o", str(plan_path)]) == 0
    capsys.readouterr()
    assert main(["run", CASE, "--plan", str(plan_path), "--max-bytes", "1MiB"]) == 2
    assert "was made for another request" in capsys.readouterr().err


def test_parse_size() -> None:
    assert parse_size("64MiB") == 64 << 20
    assert parse_size("1GB") == 10**9
    assert parse_size("4096") == 4096
    assert parse_size("0.5KiB") == 512


@pytest.mark.torch
@pytest.mark.parametrize("after_s", [0.5, 8.0])  # ranks starting (importing torch); running
def test_ctrl_c_stops_every_rank_quietly(after_s: float) -> None:
    command = [sys.executable, "-m", "meshcast.api.cli", "run", CASE, "--max-bytes", "64MiB"]
    process = subprocess.Popen(
        [*command, "--repeats", "10000", "--time-limit", "0.5"],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    assert process.stderr is not None
    lines = [process.stderr.readline(), process.stderr.readline()]
    assert "local ranks" in lines[-1], lines
    time.sleep(after_s)
    ranks = descendants(process.pid)
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C does
    rest = process.communicate(timeout=60)[1]
    assert process.returncode == 130, rest
    assert rest.strip().splitlines()[-1] == "meshcast: interrupted"
    assert "Traceback" not in rest and "leaked" not in rest, rest
    assert not survivors(ranks), "ranks outlived meshcast run"


@pytest.mark.torch
def test_block_layouts_run_verified(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A fused QKV weight from Megatron's order into vLLM's: each rank's blocks filled from
    the reference tensor and compared after the run."""
    from examples.fused_qkv_refit import main as example

    assert (
        example(
            [
                "--heads",
                "8",
                "--kv-heads",
                "4",
                "--head-dim",
                "16",
                "--hidden",
                "32",
                "--write-requests",
                str(tmp_path),
            ]
        )
        == 0
    )
    capsys.readouterr()
    request = tmp_path / "fused-qkv-megatron-to-vllm.json"
    assert main(["run", str(request), "--algorithm", "auto", "--json", "--out"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["verified"] is True
