"""Algorithm names, and turning a solver's result into a checked `meshcast.plan/v1`."""

from __future__ import annotations

import time

from planner.errors import RequestError
from planner.plan import Plan, SolveStatus
from planner.problem import Problem, build_problem
from planner.request import Request
from planner.simulate import simulate
from solver.alpa_order import alpa_order
from solver.auto import auto
from solver.backends import BACKENDS, MissingBackend, backend
from solver.base import Algorithm, SolveOptions, SolveResult
from solver.baselines import broadcast_lb, broadcast_naive, sendrecv, sendrecv_allgather
from solver.greedy import greedy
from solver.search import search


def _imported_when_asked(name: str) -> Algorithm:
    def solve(problem: Problem, options: SolveOptions) -> SolveResult:
        result: SolveResult = backend(name)(problem, options)
        return result

    return solve


ALGORITHMS: dict[str, tuple[Algorithm, str]] = {
    "sendrecv": (sendrecv, "one p2p send per receiver, least-loaded replica (paper baseline)"),
    "sendrecv-allgather": (
        sendrecv_allgather,
        "scatter one slice per receiving GPU, then intra-host all-gather (Megatron-style)",
    ),
    "broadcast-naive": (broadcast_naive, "one broadcast per tile from its first replica"),
    "broadcast-lb": (broadcast_lb, "one broadcast per tile, least-loaded replica host"),
    "alpa-order": (alpa_order, "the paper's randomized rounds of host-disjoint broadcasts"),
    "search": (search, "depth-first search over order and sender, under the time limit"),
    "greedy": (greedy, "topology-aware: local first, rails, splits, relays, list-scheduled"),
    "milp": (
        _imported_when_asked("milp"),
        "MILP (PuLP with HiGHS, CBC fallback): route fractions minimising the busiest port, "
        "with the MIP dual bound",
    ),
    "auto": (auto, "best of greedy and, per independent component, cpsat or milp"),
    "cpsat": (
        _imported_when_asked("cpsat"),
        "CP-SAT interval model over routes, hinted by the greedy, with a proven bound",
    ),
}


def resolve(name: str) -> str:
    """`name` itself when it names an algorithm; `RequestError` (field `options.algorithm`)
    when not."""
    if name not in ALGORITHMS:
        known = ", ".join(ALGORITHMS)
        raise RequestError("options.algorithm", f"unknown algorithm {name!r} (one of {known})")
    if name in BACKENDS:  # its package must be importable here
        try:
            backend(name)
        except MissingBackend as missing:
            raise RequestError("options.algorithm", str(missing)) from None
    return name


def make_plan(problem: Problem, algorithm: str, options: SolveOptions) -> Plan:
    """Run `algorithm` and return its plan with port-v1 times from the simulator."""
    name = resolve(algorithm)
    solve, _ = ALGORITHMS[name]
    started = time.perf_counter()
    result = solve(problem, options)
    transfers = tuple(result.moves[i].to_transfer() for i in result.order)
    sim = simulate(problem, transfers)
    solve_time = time.perf_counter() - started
    if not sim.valid:
        raise RuntimeError(f"{name} produced an invalid plan: {sim.errors[0]}")
    status, best_bound = result.status, result.best_bound_s
    if sim.makespan_s <= problem.lower_bound_s * (1 + 1e-9):  # the universal bound proves it
        status, best_bound = SolveStatus.OPTIMAL, problem.lower_bound_s
    elif best_bound is not None and sim.makespan_s <= best_bound * (1 + 1e-7):
        status = SolveStatus.OPTIMAL  # the solver's own proven bound is met
    if best_bound is not None:  # float noise in unit conversions must not exceed the plan
        best_bound = min(best_bound, sim.makespan_s)
    plan = Plan(
        request_id=problem.request.request_id,
        algorithm=name,
        transfers=transfers,
        lower_bound_s=problem.lower_bound_s,
        solve_time_s=solve_time,
        status=status,
        best_bound_s=best_bound,
        wire_bytes=sim.wire_bytes,
        port_busy_s=tuple(sim.port_busy_s),
    )
    return plan.with_times(sim.times, sim.makespan_s)


def plan_request(request: Request) -> Plan:
    """Plan `request` with the algorithm, time limit and seed its options name."""
    options = SolveOptions(request.options.time_limit_s, request.options.seed)
    return make_plan(build_problem(request), request.options.algorithm, options)
