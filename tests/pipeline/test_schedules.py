"""Pipeline schedules and their simulation (DESIGN §6)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meshcast.api.cli import main
from meshcast.pipeline.boundaries import boundary_timing, plan_boundaries, reversed_request
from meshcast.pipeline.schedules import (
    Op,
    ScheduleError,
    generate,
    peak_inflight,
    stage_ops,
    validate,
)
from meshcast.pipeline.simulate import Timing, simulate
from meshcast.planner import parse_request
from meshcast.solver import plan_request
from tests.conftest import load_case


def _iteration(schedule: str, comm_ms: float, stages: int = 4, microbatches: int = 16) -> float:
    timing = Timing.uniform(stages, 0.010, 0.020, comm_ms / 1e3)
    return simulate(generate(schedule, stages, microbatches), timing).iteration_s


def test_the_issue_targets() -> None:
    # 4 stages, 16 micro-batches, forward 10 ms, backward 20 ms, transfers 5 ms
    one_f_one_b, eager = _iteration("1f1b", 5), _iteration("eager-1f1b", 5)
    assert eager <= 0.9 * one_f_one_b
    assert _iteration("1f1b", 0) == pytest.approx(_iteration("eager-1f1b", 0))
    assert [peak_inflight(s) for s in generate("eager-1f1b", 4, 16)] == [7, 5, 3, 1]
    assert [peak_inflight(s) for s in generate("1f1b", 4, 16)] == [4, 3, 2, 1]


def test_without_transfers_the_pipeline_bubble_is_the_textbook_one() -> None:
    # (n - 1) (F + B) of idle time per stage: iteration = (B + n - 1) (F + B)
    for schedule in ("gpipe", "1f1b", "eager-1f1b"):
        result = simulate(generate(schedule, 4, 8), Timing.uniform(4, 0.010, 0.020, 0.0))
        assert result.iteration_s == pytest.approx((8 + 3) * 0.030)
        assert result.bubble_fraction == pytest.approx(3 / 11)


def test_op_orders() -> None:
    assert [str(op) for op in stage_ops("1f1b", 3, 1, 4)] == [
        "F0",
        "F1",
        "B0",
        "F2",
        "B1",
        "F3",
        "B2",
        "B3",
    ]
    assert [str(op) for op in stage_ops("eager-1f1b", 3, 0, 4)] == [
        "F0",
        "F1",
        "F2",
        "F3",
        "B0",
        "B1",
        "B2",
        "B3",
    ]
    assert [str(op) for op in stage_ops("gpipe", 2, 1, 2)] == ["F0", "F1", "B0", "B1"]
    # few micro-batches: the warm-up is capped by B
    assert peak_inflight(stage_ops("eager-1f1b", 8, 0, 3)) == 3


@pytest.mark.parametrize(
    ("ops", "message"),
    [
        ([[Op("F", 0), Op("B", 0), Op("B", 0)]], "stage 0: expected F and B"),  # a repeat
        ([[Op("B", 0), Op("F", 0)]], "stage 0: B0 runs before F0"),  # backward first
    ],
)
def test_invalid_op_lists_are_refused(ops: list[list[Op]], message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        validate(ops, 1)


def test_a_cross_stage_deadlock_is_refused() -> None:
    # stage 0 waits for B1's gradient before running F1, which stage 1 needs for B1
    ops = [
        [Op("F", 0), Op("B", 1), Op("F", 1), Op("B", 0)],
        [Op("F", 0), Op("F", 1), Op("B", 1), Op("B", 0)],
    ]
    validate([[Op("F", 0), Op("F", 1), Op("B", 1), Op("B", 0)]], 2)
    with pytest.raises(ScheduleError, match="deadlocks: waiting forever at stage 0: B1"):
        simulate(ops, Timing.uniform(2, 1, 1, 1))


def test_bad_timing_and_sizes() -> None:
    with pytest.raises(ScheduleError, match="activation_s: expected 3 values"):
        simulate(generate("1f1b", 4, 4), Timing([1] * 4, [1] * 4, [1], [1] * 3))
    with pytest.raises(ScheduleError, match="microbatches: must be at least 1"):
        generate("1f1b", 4, 0)
    with pytest.raises(ScheduleError, match="schedule: expected one of"):
        generate("zero-bubble", 4, 4)
    assert len(generate("gpipe", 16, 4096)) == 16  # the largest size simulated
    with pytest.raises(ScheduleError, match="16 stages x 4097 micro-batches is over 65,536"):
        generate("gpipe", 16, 4097)


def test_cli_refuses_a_pipeline_too_large_before_planning(
    capsys: pytest.CaptureFixture[str],
) -> None:
    sizes = ["schedule", "simulate", "--stages", "4", "--microbatches", "100000000"]
    times = ["--forward-ms", "1", "--backward-ms", "1", "--boundary", "never-read.json"]
    assert main([*sizes, *times, "--boundary", "b.json", "--boundary", "c.json"]) == 2
    assert "--microbatches: 4 stages x 100000000 micro-batches" in capsys.readouterr().err


def test_boundaries_are_priced_by_their_plans() -> None:
    request = parse_request(load_case("paper-n2m-case1"))
    back = reversed_request(request)
    assert (
        back.tensors[0].src == request.tensors[0].dst
        and back.tensors[0].dst == request.tensors[0].src
    )
    plans = plan_boundaries([request], plan_request)
    timing, summary = boundary_timing([0.01] * 2, [0.02] * 2, plans)
    assert timing.activation_s[0] == pytest.approx(plan_request(request).makespan_s)
    assert timing.gradient_s[0] == pytest.approx(plan_request(back).makespan_s)
    assert summary[0]["activation_request_id"] == request.request_id


def test_cli_simulate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace, gantt = tmp_path / "t.json", tmp_path / "g.png"
    args = [
        "schedule",
        "simulate",
        "--stages",
        "4",
        "--microbatches",
        "16",
        "--schedule",
        "eager-1f1b",
        "--forward-ms",
        "10",
        "--backward-ms",
        "20",
        "--comm-ms",
        "5",
        "--json",
        "--trace",
        str(trace),
        "--gantt",
        str(gantt),
    ]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["iteration_s"] == pytest.approx(_iteration("eager-1f1b", 5))
    assert summary["peak_inflight"] == [7, 5, 3, 1] and 0 < summary["bubble_fraction"] < 1
    events = json.loads(trace.read_text())["traceEvents"]
    assert sum(1 for e in events if e["ph"] == "X" and e["name"].startswith("F")) == 4 * 16
    assert gantt.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(SystemExit):
        main(
            [
                "schedule",
                "simulate",
                "--stages",
                "0",
                "--microbatches",
                "4",
                "--forward-ms",
                "1",
                "--backward-ms",
                "1",
            ]
        )
    assert (
        main(
            [
                "schedule",
                "simulate",
                "--stages",
                "2",
                "--microbatches",
                "4",
                "--forward-ms",
                "-1",
                "--backward-ms",
                "1",
            ]
        )
        == 2
    )
