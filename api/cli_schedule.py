"""`meshcast schedule simulate`: one pipeline iteration under GPipe, 1F1B or eager-1F1B."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from meshcast.api.cli_common import UsageError, load_problem
from meshcast.pipeline.boundaries import boundary_timing, plan_boundaries
from meshcast.pipeline.render import write_gantt, write_trace
from meshcast.pipeline.schedules import SCHEDULES, ScheduleError, check_size, generate
from meshcast.pipeline.simulate import Timing, simulate
from meshcast.solver import plan_request


def cmd_simulate(args: argparse.Namespace) -> int:
    for flag in ("forward_ms", "backward_ms", "comm_ms"):
        value = getattr(args, flag)
        if not 0 <= value < 1e9:
            raise UsageError(f"--{flag.replace('_', '-')}: expected a time >= 0, got {value}")
    n = args.stages
    try:
        check_size(n, args.microbatches)
    except ScheduleError as err:
        raise UsageError(f"--{err}") from None
    if args.boundary:
        if len(args.boundary) != n - 1:
            raise UsageError(
                f"--boundary: {n} stages need {n - 1} boundary requests, got {len(args.boundary)}"
            )
        requests = [load_problem(path).request for path in args.boundary]
        print(f"planning {2 * len(requests)} boundary transfers", file=sys.stderr)
        plans = plan_boundaries(requests, plan_request)
        timing, _ = boundary_timing(
            [args.forward_ms / 1e3] * n, [args.backward_ms / 1e3] * n, plans
        )
    else:
        timing = Timing.uniform(
            n, args.forward_ms / 1e3, args.backward_ms / 1e3, args.comm_ms / 1e3
        )
    try:
        result = simulate(generate(args.schedule, n, args.microbatches), timing)
    except ScheduleError as err:
        raise UsageError(str(err)) from None
    title = f"{args.schedule}, {n} stages, {args.microbatches} micro-batches"
    print(
        f"{title}: iteration {result.iteration_s * 1e3:.2f} ms, bubble "
        f"{result.bubble_fraction:.1%}, peak in flight {result.peak_inflight}",
        file=sys.stderr if args.json else sys.stdout,
    )
    if args.trace:
        write_trace(result, title, Path(args.trace))
        print(f"trace written to {args.trace}", file=sys.stderr)
    if args.gantt:
        write_gantt(result, title, Path(args.gantt))
        print(f"gantt chart written to {args.gantt}", file=sys.stderr)
    if args.json:
        print(json.dumps(result.summary()))
    return 0


def add_schedule_parsers(sub: Any) -> None:
    schedule = sub.add_parser("schedule", help="pipeline schedules (GPipe, 1F1B, eager-1F1B)")
    actions = schedule.add_subparsers(dest="action", required=True)
    sim = actions.add_parser("simulate", help="simulate one iteration")
    sim.add_argument("--stages", type=_positive, required=True)
    sim.add_argument("--microbatches", type=_positive, required=True)
    sim.add_argument("--schedule", choices=SCHEDULES, default="eager-1f1b")
    sim.add_argument("--forward-ms", type=float, required=True, help="per stage and micro-batch")
    sim.add_argument("--backward-ms", type=float, required=True)
    sim.add_argument("--comm-ms", type=float, default=0.0, help="every transfer between stages")
    sim.add_argument(
        "--boundary",
        action="append",
        help="a boundary's request file (repeat, stage order): plan makespans replace --comm-ms",
    )
    sim.add_argument("--json", action="store_true", help="last line: one JSON object")
    sim.add_argument("--trace", help="write a Chrome/Perfetto trace here")
    sim.add_argument("--gantt", help="write a PNG Gantt chart here")
    sim.set_defaults(func=cmd_simulate)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value
