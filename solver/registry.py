"""Algorithm names, and turning a solver's result into a checked `meshcast.plan/v1`."""

from __future__ import annotations

import time

from planner.errors import RequestError
from planner.plan import Plan
from planner.problem import Problem, build_problem
from planner.request import Request
from planner.simulate import simulate
from solver.alpa_order import alpa_order
from solver.auto import auto
from solver.base import Algorithm, SolveOptions
from solver.baselines import broadcast_lb, broadcast_naive, sendrecv, sendrecv_allgather
from solver.cpsat import cpsat
from solver.greedy import greedy
from solver.milp import milp
from solver.search import search

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
    "milp": (milp, "MILP (PuLP/CBC): route fractions minimising the busiest port, LP bound"),
    "auto": (auto, "best of greedy and, per independent component, cpsat or milp"),
    "cpsat": (cpsat, "CP-SAT interval model over routes, hinted, with a proven bound"),
}


def resolve(name: str) -> str:
    """Canonical algorithm name; `RequestError` on an unknown one."""
    if name not in ALGORITHMS:
        known = ", ".join(ALGORITHMS)
        raise RequestError("options.algorithm", f"unknown algorithm {name!r} (one of {known})")
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
        status, best_bound = "optimal", problem.lower_bound_s
    elif best_bound is not None and sim.makespan_s <= best_bound * (1 + 1e-7):
        status = "optimal"  # the solver's own proven bound is met
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
    )
    return plan.with_times(sim.times, sim.makespan_s)


def plan_request(request: Request) -> Plan:
    """Plan `request` with the algorithm, time limit and seed its options name."""
    options = SolveOptions(request.options.time_limit_s, request.options.seed)
    return make_plan(build_problem(request), request.options.algorithm, options)
