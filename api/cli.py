"""The `meshcast` command line: plan, compare, check, bound, run, serve, cache, testbed,
calibrate and schedule.

Bad input (unreadable file, invalid request or plan, unknown algorithm) prints one line naming
the problem and exits with status 2; an invalid plan under `check` exits with status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from meshcast.api.cli_common import (
    UsageError,
    chosen_algorithm,
    load_problem,
    read_json,
    solve_options,
)
from meshcast.api.cli_run import add_run_parser
from meshcast.api.cli_schedule import add_schedule_parsers
from meshcast.api.cli_serve import add_serve_parsers
from meshcast.api.cli_testbed import add_testbed_parsers
from meshcast.api.progress import progress
from meshcast.planner import PlanFormatError, RequestError
from meshcast.planner.bulk import collection_paused
from meshcast.planner.plan import Plan
from meshcast.planner.problem import Problem
from meshcast.planner.simulate import simulate
from meshcast.planner.summary import summarize
from meshcast.solver import ALGORITHMS, SolveOptions, make_plan, resolve


def _summary(plan: Plan) -> str:
    lines = [
        f"algorithm     {plan.algorithm} ({plan.status.value})",
        f"transfers     {len(plan.transfers)}",
        f"bytes on wire {(plan.wire_bytes or 0) / 2**20:,.1f} MiB",
        f"makespan      {plan.makespan_s * 1e3:.4f} ms",
        f"lower bound   {plan.lower_bound_s * 1e3:.4f} ms",
        f"ratio         {plan.ratio:.4f}",
        f"solve time    {plan.solve_time_s:.3f} s",
    ]
    if plan.best_bound_s is not None:
        lines.append(f"proven bound  {plan.best_bound_s * 1e3:.4f} ms (gap {plan.gap or 0:.2%})")
    return "\n".join(lines)


def _plan_maybe_remote(
    problem: Problem, algorithm: str, options: SolveOptions, server: str | None
) -> Plan:
    if server is None:
        return make_plan(problem, algorithm, options)
    from meshcast.api.client import MeshcastClient, ServiceError, ServiceUnavailable

    request = problem.request.to_json()
    request["options"] = {
        "algorithm": algorithm,
        "time_limit_s": options.time_limit_s,
        "seed": options.seed,
    }
    try:
        client = MeshcastClient(server, retries=2)
    except ValueError as err:
        raise UsageError(f"--server: {err}") from None
    with client:
        try:
            return client.plan(request)
        except ServiceError as err:
            raise UsageError(f"--server: the service refused the request: {err}") from None
        except ServiceUnavailable as err:
            print(f"service unreachable ({err}); planning locally", file=sys.stderr)
            return make_plan(problem, algorithm, options)


def cmd_plan(args: argparse.Namespace) -> int:
    problem = load_problem(args.request)
    algorithm = chosen_algorithm(problem, args)
    options = solve_options(problem, args)
    print(
        f"planning {len(problem.request.tensors)} tensors with {algorithm} "
        f"(limit {options.time_limit_s:g} s)",
        file=sys.stderr,
    )
    plan = _plan_maybe_remote(problem, algorithm, options, args.server)
    if plan.wire_bytes is None:  # a service's plan from before plans carried it
        plan = replace(plan, wire_bytes=simulate(problem, plan.transfers).wire_bytes)
    print(_summary(plan))
    if args.output:
        with collection_paused(), Path(args.output).open("w") as stream:
            plan.write_json(stream)
        print(f"plan written to {args.output}")
    if args.trace:
        from meshcast.api.render import write_trace

        write_trace(problem, plan, Path(args.trace))
        print(f"trace written to {args.trace} (open in ui.perfetto.dev or chrome://tracing)")
    if args.html:
        from meshcast.api.viewer import plan_page

        Path(args.html).write_text(plan_page(problem, plan))
        print(f"plan page written to {args.html} (open it in a browser)")
    if args.gantt:
        from meshcast.api.render import write_gantt

        write_gantt(problem, plan, Path(args.gantt))
        print(f"gantt chart written to {args.gantt}")
    return 0


def _comparison_header(problem: Problem) -> str:
    header = (
        f"{'algorithm':<20} {'transfers':>9} {'wire MiB':>10} {'makespan ms':>12} "
        f"{'ratio':>7} {'solve s':>8}"
    )
    return "\n".join(
        [
            f"lower bound {problem.lower_bound_s * 1e3:.4f} ms, {len(problem.tiles)} tiles",
            header,
            "-" * len(header),
        ]
    )


def _comparison_row(row: dict[str, Any]) -> str:
    return (
        f"{row['algorithm']:<20} {row['transfers']:>9} {row['wire_bytes'] / 2**20:>10,.1f} "
        f"{row['makespan_s'] * 1e3:>12.4f} {row['ratio']:>7.3f} {row['solve_time_s']:>8.3f}"
    )


def cmd_compare(args: argparse.Namespace) -> int:
    problem = load_problem(args.request)
    options = solve_options(problem, args)
    names = args.algorithms.split(",") if args.algorithms else list(ALGORITHMS)
    for name in names:
        try:
            resolve(name)
        except RequestError as err:
            raise UsageError(f"--algorithms: {err.message}") from None
    rows = []
    if not args.json:
        print(_comparison_header(problem), flush=True)
    with progress(len(names), "comparing", quiet=args.json) as steps:
        for name in names:
            steps.begin(name)
            rows.append(summarize(problem, make_plan(problem, name, options), check=False))
            if not args.json:
                print(_comparison_row(rows[-1]), flush=True)
    if args.json:
        print(json.dumps({"lower_bound_s": problem.lower_bound_s, "rows": rows}))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    problem = load_problem(args.request)
    try:
        plan = Plan.from_json(read_json(args.plan, "plan"))
    except PlanFormatError as err:
        raise UsageError(f"invalid plan {args.plan!r}: {err}") from None
    verdict = summarize(problem, plan)
    print(json.dumps(verdict, indent=1))
    return 0 if verdict["valid"] else 1


def cmd_bound(args: argparse.Namespace) -> int:
    problem = load_problem(args.request)
    print(json.dumps({"lower_bound_s": problem.lower_bound_s, "tiles": len(problem.tiles)}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meshcast", description="Plan and check cross-mesh resharding transfers."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def solver_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--time-limit", type=float, help="seconds per solver (default: request's)")
        p.add_argument("--seed", type=int, help="random seed (default: request's)")

    plan = sub.add_parser("plan", help="plan a request and print a summary")
    plan.add_argument("request", help="meshcast.request/v1 JSON file")
    plan.add_argument("--algorithm", help="algorithm name (default: request's, else auto)")
    solver_flags(plan)
    plan.add_argument(
        "--server", help="ask this planning service (local fallback), e.g. http://127.0.0.1:8000"
    )
    plan.add_argument("--output", "-o", help="write the plan JSON here")
    plan.add_argument("--gantt", help="write a per-port Gantt chart (PNG) here")
    plan.add_argument("--html", help="write the plan as a self-contained HTML page here")
    plan.add_argument("--trace", help="write a Chrome/Perfetto trace (JSON) here")
    plan.set_defaults(func=cmd_plan)

    compare = sub.add_parser("compare", help="every algorithm side by side")
    compare.add_argument("request")
    compare.add_argument("--algorithms", help="comma-separated subset (default: all)")
    compare.add_argument(
        "--json", action="store_true", help="last line: the rows as one JSON object"
    )
    solver_flags(compare)
    compare.set_defaults(func=cmd_compare)

    check = sub.add_parser("check", help="validate a plan and recompute its port-v1 times")
    check.add_argument("request")
    check.add_argument("plan")
    check.set_defaults(func=cmd_check)

    bound = sub.add_parser("bound", help="print the lower bound of a request")
    bound.add_argument("request")
    bound.set_defaults(func=cmd_bound)

    add_run_parser(sub, solver_flags)
    add_serve_parsers(sub)
    add_testbed_parsers(sub)
    add_schedule_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except UsageError as err:
        print(f"meshcast: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"meshcast: error: cannot write {err.filename!r}: {err.strerror}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("meshcast: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print(
            "meshcast: error: out of memory (the request's work is beyond this machine)",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
