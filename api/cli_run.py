"""`meshcast run`: execute a plan on a local world of processes and verify it bit for bit.

One process per device id joins a gloo world on 127.0.0.1; every source shard is filled from a
deterministic reference tensor, the plan runs, and every destination shard is compared byte for
byte with the same reference. Exit status 0 when verified, 1 when not, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from meshcast.api.cli_common import (
    UsageError,
    chosen_algorithm,
    load_problem,
    read_json,
    solve_options,
)
from meshcast.planner import PlanFormatError, build_problem, parse_request
from meshcast.planner.plan import Plan
from meshcast.planner.problem import Problem
from meshcast.planner.request import Request
from meshcast.planner.synthetic import scaled_request
from meshcast.solver import make_plan

_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
}


#: share of the available memory a local run may plan to use
MEMORY_SHARE = 0.7


def parse_size(text: str) -> int:
    """`64MiB`, `1GB`, `4096` -> bytes."""
    number = text.rstrip("BbKkMmGgIi")
    unit = text[len(number) :].upper()
    try:
        value = float(number)
    except ValueError:
        value = -1.0
    if unit not in _UNITS or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a size like 64MiB or 1GB, got {text!r}")
    return int(value * _UNITS[unit])


def _available_memory_bytes() -> int | None:
    try:
        meminfo = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    for line in meminfo.splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return None


def _plan(problem: Problem, args: argparse.Namespace) -> Plan:
    if args.plan:
        try:
            plan = Plan.from_json(read_json(args.plan, "plan"))
        except PlanFormatError as err:
            raise UsageError(f"invalid plan {args.plan!r}: {err}") from None
        if plan.request_id != problem.request.request_id:
            raise UsageError(f"plan {args.plan!r} was made for another request")
        return plan
    algorithm = chosen_algorithm(problem, args)
    options = solve_options(problem, args)
    print(f"planning with {algorithm} (limit {options.time_limit_s:g} s)", file=sys.stderr)
    return make_plan(problem, algorithm, options)


def _transfer_table(report: Any) -> list[str]:
    header = f"{'#':>5} {'src':>5} {'recv':>5} {'MiB':>9} {'start ms':>10} {'end ms':>10} {'ms':>9}"
    lines = [header, "-" * len(header)]
    for t in report.transfers:
        lines.append(
            f"{t.index:>5} {t.src:>5} {t.num_receivers:>5} {t.num_bytes / 2**20:>9.3f} "
            f"{t.start_s * 1e3:>10.2f} {t.end_s * 1e3:>10.2f} {(t.end_s - t.start_s) * 1e3:>9.2f}"
        )
    return lines


def _mib(num_bytes: int | None) -> str:
    return "-" if num_bytes is None else f"{num_bytes / 2**20:.1f}"


def _memory_table(memory: list[dict[str, Any]]) -> list[str]:
    header = (
        f"{'rank':>5} {'peak growth MiB':>16} {'dst MiB':>9} {'staging MiB':>12} {'relay MiB':>10}"
    )
    lines = [header, "-" * len(header)]
    for m in memory:
        lines.append(
            f"{m['rank']:>5} {_mib(m['peak_growth_bytes']):>16} {_mib(m['destination_bytes']):>9} "
            f"{_mib(m['staging_bytes']):>12} {_mib(m['peak_relay_bytes']):>10}"
        )
    return lines


def _tensor_bytes(request: Request) -> int:
    return sum(math.prod(t.shape) * t.itemsize_bytes for t in request.tensors)


def _scaled(problem: Problem, max_bytes: int) -> Problem:
    try:
        request = scaled_request(problem.request.to_json(), max_bytes)
    except ValueError as err:
        raise UsageError(f"--max-bytes: {err}") from None
    return build_problem(parse_request(request))


def _fitting_problem(args: argparse.Namespace, estimate: Callable[[Request], int]) -> Problem:
    """The request, scaled down by --max-bytes, or by halves until a local run fits memory."""
    problem = load_problem(args.request)
    if args.max_bytes is not None:
        return _scaled(problem, args.max_bytes)
    available = _available_memory_bytes()
    if available is None or estimate(problem.request) <= MEMORY_SHARE * available:
        return problem
    total = _tensor_bytes(problem.request)
    max_bytes = total
    while max_bytes > (1 << 20) and estimate(problem.request) > MEMORY_SHARE * available:
        max_bytes //= 2
        problem = _scaled(problem, max_bytes)
    print(
        f"the tensors ({total / 2**20:,.1f} MiB) do not fit this machine's memory once per "
        f"rank; running them scaled to {_tensor_bytes(problem.request) / 2**20:,.1f} MiB, same "
        "layouts (choose with --max-bytes)",
        file=sys.stderr,
    )
    return problem


def cmd_run(args: argparse.Namespace) -> int:
    try:
        from meshcast.executor.executor import MIN_STAGING_BYTES
        from meshcast.executor.local_run import RunSettings, estimate_memory_bytes, run_plan_locally
        from meshcast.executor.local_world import RankFailure
    except ImportError as err:
        raise UsageError(
            f"meshcast run needs PyTorch ({err}): pip install 'meshcast[executor]'"
        ) from None
    problem = _fitting_problem(args, estimate_memory_bytes)
    num_ranks = 1 + max(problem.topology.host_of)
    if num_ranks > args.max_ranks:
        raise UsageError(
            f"request: {num_ranks} ranks (devices 0..{num_ranks - 1}) exceed --max-ranks "
            f"{args.max_ranks}; one process per device would overload this machine"
        )
    if args.repeats < 1:
        raise UsageError(f"--repeats: must be at least 1, got {args.repeats}")
    if args.staging < MIN_STAGING_BYTES:
        raise UsageError(
            f"--staging: must be at least {MIN_STAGING_BYTES} bytes, got {args.staging}"
        )
    if args.timeout <= 0:
        raise UsageError(f"--timeout: must be positive, got {args.timeout}")
    plan = _plan(problem, args)
    needed, available = estimate_memory_bytes(problem.request, plan), _available_memory_bytes()
    if available is not None and needed > MEMORY_SHARE * available:
        raise UsageError(
            f"request: running it locally needs about {needed / 2**30:.1f} GiB, this machine has "
            f"{available / 2**30:.1f} GiB available; scale it down with --max-bytes"
        )
    print(
        f"running {len(plan.transfers)} transfers of {plan.algorithm} on {num_ranks} local "
        f"ranks (gloo, {args.mode} mode, {args.repeats} run(s))",
        file=sys.stderr,
    )
    try:
        settings = RunSettings(
            mode=args.mode,
            repeats=args.repeats,
            timeout_s=args.timeout,
            staging_bytes=args.staging,
            use_out=args.out,
            strided=args.strided,
        )
        report = run_plan_locally(problem.request, plan, settings)
    except RankFailure as err:
        print(f"meshcast: run failed: {err}", file=sys.stderr)
        if args.json:
            print(json.dumps({"verified": False, "error": str(err)}))
        return 1
    if not args.json or args.verbose:
        print("\n".join(_transfer_table(report)))
        print("\n".join(_memory_table(report.memory)))
    runs = ", ".join(f"{s * 1e3:.2f}" for s in report.runs_s)
    print(
        f"wall {report.wall_s * 1e3:.2f} ms (median of runs: {runs} ms); "
        f"predicted {report.predicted_s * 1e3:.2f} ms; "
        f"{'verified' if report.verified else f'{len(report.mismatches)} MISMATCHED shards'}",
        file=sys.stderr if args.json else sys.stdout,
    )
    if args.json:
        print(json.dumps(report.summary_json()))
    return 0 if report.verified else 1


def add_run_parser(sub: Any, solver_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    run = sub.add_parser(
        "run", help="execute a plan on local processes (gloo) and verify it bit for bit"
    )
    run.add_argument("request", help="meshcast.request/v1 JSON file")
    run.add_argument("--algorithm", help="plan with this algorithm (default: request's)")
    run.add_argument("--plan", help="run this plan file instead of planning")
    solver_flags(run)
    run.add_argument(
        "--mode",
        choices=["chain", "broadcast"],
        default="chain",
        help="p2p chains (default) or dist.broadcast on sub-groups",
    )
    run.add_argument("--repeats", type=int, default=1, help="runs to time (median reported)")
    run.add_argument("--timeout", type=float, default=120.0, help="seconds per collective")
    run.add_argument(
        "--max-bytes",
        type=parse_size,
        help="scale the tensors down to this total first (e.g. 64MiB)",
    )
    run.add_argument("--max-ranks", type=int, default=64, help="refuse larger worlds")
    run.add_argument(
        "--staging",
        type=parse_size,
        default=64 << 20,
        help="staging budget per rank (default 64MiB): chunks move through slots of it",
    )
    run.add_argument(
        "--out",
        action="store_true",
        help="land the bytes in caller-owned destination tensors (run(out=...))",
    )
    run.add_argument(
        "--strided",
        action="store_true",
        help="source shards and out tensors as strided (non-contiguous) views",
    )
    run.add_argument("--json", action="store_true", help="last line: one JSON summary")
    run.add_argument("--verbose", "-v", action="store_true", help="per-transfer table with --json")
    run.set_defaults(func=cmd_run)
