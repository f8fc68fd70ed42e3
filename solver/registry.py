"""Algorithm names, and turning a solver's result into a checked `meshcast.plan/v1`."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace

from meshcast.planner.bulk import collection_paused
from meshcast.planner.compact import CompactTransfers
from meshcast.planner.errors import RequestError
from meshcast.planner.plan import Plan, SolveStatus, Transfer
from meshcast.planner.problem import Problem, build_problem
from meshcast.planner.replicas import copied_devices, with_copies
from meshcast.planner.request import Request
from meshcast.planner.simulate import simulate
from meshcast.solver.alpa_order import alpa_order
from meshcast.solver.auto import auto, solve_by_components
from meshcast.solver.backends import BACKENDS, MissingBackend, backend
from meshcast.solver.base import Algorithm, SolveOptions, SolveResult
from meshcast.solver.baselines import broadcast_lb, broadcast_naive, sendrecv, sendrecv_allgather
from meshcast.solver.budget import solver_deadline
from meshcast.solver.greedy import greedy
from meshcast.solver.search import search


def _by_components(name: str) -> Algorithm:
    """`name` (cpsat or milp) on every distinct component, from the greedy plan; its package
    is imported when it first runs."""

    def solve(problem: Problem, options: SolveOptions) -> SolveResult:
        return solve_by_components(problem, options, (name,))

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
        _by_components("milp"),
        "MILP (PuLP with HiGHS, CBC fallback): route fractions minimising the busiest port, "
        "with the MIP dual bound",
    ),
    "auto": (auto, "best of greedy and, per independent component, cpsat or milp"),
    "cpsat": (
        _by_components("cpsat"),
        "CP-SAT interval model over routes, hinted by the greedy, with a proven bound",
    ),
}


#: the algorithms that return by the time limit (with `budget.PLAN_SOLVER_SHARE` of it)
TIME_LIMITED = frozenset({"auto", "cpsat", "milp", "search"})
#: the algorithms that plan identical tensors as one stack
PLAN_STACKED = frozenset({"greedy", "auto", "cpsat", "milp", "search"})


def resolve(name: str) -> str:
    """`name` itself when it names an algorithm; `RequestError` (field `options.algorithm`)
    when not."""
    if name not in ALGORITHMS:
        known = ", ".join(ALGORITHMS)
        raise RequestError("options.algorithm", f"unknown algorithm {name!r} (one of {known})")
    if f"{name}_routing" in BACKENDS:  # its package must be importable here
        try:
            backend(f"{name}_routing")
        except MissingBackend as missing:
            raise RequestError("options.algorithm", str(missing)) from None
    return name


def make_plan(problem: Problem, algorithm: str, options: SolveOptions) -> Plan:
    """Run `algorithm` and return its plan with port-v1 times from the simulator.

    meshcast's own algorithms plan identical tensors once (`Problem.stacked`); the paper's
    baselines keep their one-message-per-tile semantics on the request as given."""
    name = resolve(algorithm)
    solve, _ = ALGORITHMS[name]
    started = time.perf_counter()
    if name in TIME_LIMITED:
        # building the plan takes time per tensor too (pieces of every stacked tensor)
        deadline = solver_deadline(started, options.time_limit_s, len(problem.request.tensors))
        options = replace(options, deadline=deadline)
    stacked = problem.stacked if name in PLAN_STACKED else None
    work = stacked[0] if stacked is not None else problem
    result = solve(work, options)
    solved = time.perf_counter()
    with collection_paused():
        transfers: Sequence[Transfer]
        transfers, replicas = result.own_transfers()
        # copies are valid and timed as their templates: only the templates are simulated
        sim = simulate(work, transfers, copied_devices(replicas))
        transfers = [
            Transfer(t.src, t.dst, t.pieces, start, end)
            for t, (start, end) in zip(transfers, sim.times, strict=True)
        ]
        wire_bytes, port_busy_s = sim.wire_bytes, sim.port_busy_s
        if replicas:
            wire_bytes, port_busy_s = with_copies(
                work.topology, replicas, wire_bytes, sim.transfer_wire_bytes, port_busy_s
            )
        if replicas or stacked is not None:  # kept compact: copies and stacks as planned
            stacking = None if stacked is None else stacked[1]
            transfers = CompactTransfers(transfers, replicas, stacking)
    finished = time.perf_counter()
    solve_time = finished - started
    if not sim.valid:
        raise RuntimeError(f"{name} produced an invalid plan: {sim.errors[0]}")
    status, best_bound = result.status, result.best_bound_s
    lower_bound = work.lower_bound_s
    if sim.makespan_s <= lower_bound * (1 + 1e-9):  # the universal bound proves it
        status, best_bound = SolveStatus.OPTIMAL, lower_bound
    elif best_bound is not None and sim.makespan_s <= best_bound * (1 + 1e-7):
        status = SolveStatus.OPTIMAL  # the solver's own proven bound is met
    if best_bound is not None:  # float noise in unit conversions must not exceed the plan
        best_bound = min(best_bound, sim.makespan_s)
    return Plan(
        request_id=problem.request.request_id,
        algorithm=name,
        transfers=transfers if isinstance(transfers, CompactTransfers) else tuple(transfers),
        makespan_s=sim.makespan_s,
        lower_bound_s=lower_bound,
        solve_time_s=solve_time,
        status=status,
        best_bound_s=best_bound,
        wire_bytes=wire_bytes,
        port_busy_s=tuple(port_busy_s),
        check_s=finished - solved,
    )


def plan_request(request: Request) -> Plan:
    """Plan `request` with the algorithm, time limit and seed its options name."""
    options = SolveOptions(request.options.time_limit_s, request.options.seed)
    return make_plan(build_problem(request), request.options.algorithm, options)
