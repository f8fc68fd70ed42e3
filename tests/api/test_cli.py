"""The `meshcast` command line, run in-process and as a real console script."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from meshcast.api.cli import main
from tests.conftest import CASES_DIR

CASE6 = str(CASES_DIR / "paper-n2m-case6.json")


def test_plan_writes_plan_gantt_and_trace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, png, trace = tmp_path / "plan.json", tmp_path / "plan.png", tmp_path / "trace.json"
    code = main(
        [
            "plan",
            CASE6,
            "--algorithm",
            "greedy",
            "-o",
            str(out),
            "--gantt",
            str(png),
            "--trace",
            str(trace),
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    for label in ("transfers", "bytes on wire", "makespan", "lower bound", "ratio", "solve time"):
        assert label in text
    plan = json.loads(out.read_text())
    assert plan["format"] == "meshcast.plan/v1" and plan["algorithm"] == "greedy"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    events = json.loads(trace.read_text())["traceEvents"]
    spans = [e for e in events if e["ph"] == "X"]
    assert len(spans) >= len(plan["transfers"])
    assert max(e["ts"] + e["dur"] for e in spans) == pytest.approx(plan["makespan_s"] * 1e6)


def test_check_accepts_own_plan_and_rejects_a_broken_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "plan.json"
    assert main(["plan", CASE6, "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["check", CASE6, str(out)]) == 0
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["valid"] and verdict["ratio"] >= 1.0
    plan = json.loads(out.read_text())
    plan["transfers"] = plan["transfers"][1:]
    out.write_text(json.dumps(plan))
    assert main(["check", CASE6, str(out)]) == 1
    verdict = json.loads(capsys.readouterr().out)
    assert not verdict["valid"] and any("misses" in e for e in verdict["errors"])


def test_compare_lists_every_algorithm(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", CASE6, "--time-limit", "0.5"]) == 0
    text = capsys.readouterr().out
    for name in ("sendrecv", "broadcast-lb", "alpa-order", "search", "greedy"):
        assert f"\n{name} " in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["plan", "missing.json"], "cannot read request 'missing.json'"),
        (["plan", CASE6, "--algorithm", "magic"], "--algorithm: unknown algorithm 'magic'"),
        (["plan", CASE6, "--time-limit", "-1"], "--time-limit: must be in (0, 3600]"),
        (["compare", CASE6, "--algorithms", "greedy,nope"], "unknown algorithm 'nope'"),
        (["check", CASE6, CASE6], "invalid plan"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_invalid_request_and_non_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    request = json.loads(Path(CASE6).read_text())
    request["tensors"][0]["src"]["placements"] = ["P", "R"]
    bad.write_text(json.dumps(request))
    assert main(["plan", str(bad)]) == 2
    assert "tensors[0].src.placements[0]: partial placement 'P'" in capsys.readouterr().err
    bad.write_text("{not json")
    assert main(["plan", str(bad)]) == 2
    assert "is not JSON" in capsys.readouterr().err


def test_unwritable_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "missing" / "plan.json"
    assert main(["plan", CASE6, "-o", str(target)]) == 2
    assert f"cannot write '{target}'" in capsys.readouterr().err


def test_console_script_runs() -> None:
    exe = shutil.which("meshcast") or str(
        Path(__file__).resolve().parents[2] / ".venv" / "bin" / "meshcast"
    )
    if not Path(exe).exists():
        pytest.fail("meshcast console script is not installed (run make install)")
    result = subprocess.run(
        [exe, "bound", CASE6], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["lower_bound_s"] > 0
    result = subprocess.run(
        [exe, "plan", "nope.json"], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
