"""`auto`, the default: the best plan meshcast can find within the time limit (DESIGN §4).

1. The greedy plan (with its `broadcast-lb` and `sendrecv` fallbacks) is the plan to beat.
2. The request is split into independent components (no shared host, so no shared port);
   identical components are solved once and the others returned as its copies.
3. Each distinct component goes to CP-SAT when its model is small enough to search in its
   share of the time limit, else to the MILP when that is small enough, else stays greedy;
   the solver's routing is kept only where it beats the greedy routing of that component.
4. The time left goes to a local search on the assembled plan's order (swaps of two transfers).
5. The assembled plan is returned unless the greedy plan is shorter: never worse than greedy.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from meshcast.planner.plan import SolveStatus
from meshcast.planner.problem import Problem
from meshcast.planner.replicas import num_copied
from meshcast.solver.backends import MissingBackend, backend
from meshcast.solver.base import SolveOptions, SolveResult
from meshcast.solver.budget import (
    CHECK_S_PER_MOVE,
    MIN_COMPONENT_S,
    MODEL_TIME_FACTOR,
    SOLVER_SHARE,
    affordable_moves,
    build_s,
    greedy_deadline,
)
from meshcast.solver.components import Component, assemble, components, first_of_kind
from meshcast.solver.greedy import GREEDY, PER_HOST, greedy, greedy_routing
from meshcast.solver.items import Item, coalesce
from meshcast.solver.jobs import jobs_with_hint
from meshcast.solver.moves import MoveList
from meshcast.solver.order import best_schedule, in_order, port_loads, randomized_search
from meshcast.solver.recipes import Job
from meshcast.solver.routing import Routing, realize, scheduled

#: largest CP-SAT model (optional intervals) and MILP (route columns) auto hands over
MAX_CP_INTERVALS = 12_000
MAX_MILP_COLUMNS = 20_000
#: plans up to this many moves spend the time left on randomized list schedules
SEARCH_MAX_MOVES = 3000


def _busiest_port_s(problem: Problem, items: Sequence[Item], jobs: Sequence[Job]) -> float:
    """Seconds of work on the busiest port when every job takes its first recipe."""
    moves = MoveList(problem)
    realize(problem, items, [[(job.recipes[0], 1.0)] for job in jobs], moves)
    return float(port_loads(moves.moves, problem.topology.num_ports).max()) * (1 + 1e-9)


@dataclass(frozen=True)
class _Found:
    """A component's routing (None: the request-wide greedy plan stands) and its provenance."""

    routing: Routing | None
    algorithm: str = "greedy"
    status: SolveStatus = SolveStatus.HEURISTIC
    bound_s: float | None = None
    notes: tuple[str, ...] = ()

    def noted(self, *notes: str) -> _Found:
        return replace(self, notes=(*self.notes, *notes))


def _solve_component(
    problem: Problem,
    items: Sequence[Item],
    time_limit_s: float,
    seed: int,
    greedy_s: float | None,
    algorithms: Sequence[str],
    model_s: float = 0.0,
) -> _Found:
    """The best routing found for one component's items within `time_limit_s` from now.

    `greedy_s` is the greedy makespan to beat when known (the component is the whole request);
    otherwise the component's own greedy routing is computed, and kept when nothing beats it.
    `model_s` is about what enumerating the component's jobs will take (a greedy routing and
    the full enumeration): with less time than that, the greedy routing stands.
    """
    ends = time.perf_counter() + time_limit_s
    found = _Found(None)
    if greedy_s is None:
        candidates = [
            (*scheduled(problem, items, greedy_routing(problem, items, b)), k)
            for k, b in enumerate((GREEDY, PER_HOST))
        ]
        greedy_s, routing, _ = min(candidates, key=lambda c: (c[0], c[2]))
        found = _Found(routing)
    if greedy_s <= problem.lower_bound_s * (1 + 1e-9) or time_limit_s <= 0.05:
        return found
    if ends - time.perf_counter() < MODEL_TIME_FACTOR * model_s:
        return found.noted(
            f"{'/'.join(algorithms)}: not started, building the model would take about "
            f"{model_s:.2f} s of the {max(0.0, ends - time.perf_counter()):.2f} s left"
        )
    jobs = jobs_with_hint(problem, items)
    if all(len(job.recipes) == 1 for job in jobs):
        busiest = _busiest_port_s(problem, items, jobs)
        if greedy_s <= busiest * (1 + 1e-9):
            # no job has an alternative route and the busiest port never idles: no schedule
            # of these routes is shorter
            return replace(found, status=SolveStatus.OPTIMAL, bound_s=busiest)
    intervals = sum(len(r.moves) for job in jobs for r in job.recipes)
    columns = sum(len(job.recipes) for job in jobs)
    fits = {"cpsat": intervals <= MAX_CP_INTERVALS, "milp": columns <= MAX_MILP_COLUMNS}
    fitting = [algorithm for algorithm in algorithms if fits[algorithm]]
    if not fitting:
        found = found.noted(
            f"{'/'.join(algorithms)}: a component of {intervals} intervals, {columns} route "
            "columns is too large for the time limit; greedy routes"
        )
    for algorithm in fitting:  # the first whose package is installed
        try:
            route = backend(f"{algorithm}_routing")
        except MissingBackend as missing:
            found = found.noted(str(missing))
            continue
        share_s = max(0.0, ends - time.perf_counter()) * SOLVER_SHARE[algorithm]
        options = SolveOptions(share_s, seed, deadline=time.perf_counter() + share_s)
        routing = route(problem, items, jobs, options)
        break
    else:
        return found
    solver_s, routing = scheduled(problem, items, routing)
    if solver_s <= greedy_s:  # a tie brings the solver's proof
        return _Found(routing, algorithm, routing.status, routing.best_bound_s)
    return found


def auto(problem: Problem, options: SolveOptions) -> SolveResult:
    """The greedy plan, improved per distinct component by CP-SAT, else the MILP."""
    return solve_by_components(problem, options, ("cpsat", "milp"))


def solve_by_components(
    problem: Problem, options: SolveOptions, algorithms: Sequence[str]
) -> SolveResult:
    """The greedy plan, then per distinct component the first of `algorithms` (cpsat, milp)
    that is installed and small enough for its share of the time; `cpsat` and `milp` asked for
    by name are this with one algorithm."""
    started = time.perf_counter()
    deadline = options.deadline if options.deadline is not None else started + options.time_limit_s
    greedy_ends = greedy_deadline(started, deadline)
    # what the rest of the time limit (beyond the solvers' share of it) can build and check
    affordable = affordable_moves(deadline, options.time_limit_s, greedy_ends)
    baseline = greedy(problem, replace(options, deadline=greedy_ends, max_moves=affordable))
    greedy_took_s = time.perf_counter() - started
    baseline_makespan = baseline.makespan_s
    if baseline_makespan <= problem.lower_bound_s * (1 + 1e-9):
        return baseline.noted("greedy reached the lower bound")
    # the plan still has to be built and checked after `auto` returns: about as many
    # transfers as the greedy's
    deadline -= build_s(len(baseline.moves), baseline.num_copied())
    if time.perf_counter() >= deadline:
        return baseline.noted("time limit reached after the greedy plan")
    items = coalesce(problem)
    comps = components(problem, items)
    distinct = first_of_kind(comps)
    whole = baseline_makespan if len(comps) == 1 else None
    solved: dict[tuple[object, ...], _Found] = {}
    for sig, comp in distinct.items():
        left = deadline - time.perf_counter()
        if left <= MIN_COMPONENT_S and whole is None:
            return baseline.noted("time limit reached before every component: greedy plan kept")
        pending = sum(len(c.items) for s, c in distinct.items() if s not in solved)
        share = left * len(comp.items) / pending
        comp_items = [items[i] for i in comp.items]
        model_s = greedy_took_s * len(comp.items) / max(1, pending)
        solved[sig] = _solve_component(
            problem, comp_items, share, options.seed, whole, algorithms, model_s
        )
    notes = [
        f"{len(comps)} component(s), {len(distinct)} distinct; "
        + ", ".join(sorted({f.algorithm for f in solved.values()})),
        *sorted({note for f in solved.values() for note in f.notes}),
    ]
    statuses = {f.status for f in solved.values()}
    single = next(iter(solved.values())) if len(solved) == 1 else None
    if single is not None and single.routing is None:  # the whole request, greedy kept
        if single.status == SolveStatus.OPTIMAL:
            baseline = replace(baseline, status=single.status, best_bound_s=single.bound_s)
        return baseline.noted(*notes)

    def routed(comp: Component) -> tuple[list[Item], Routing]:
        routing = solved[comp.signature].routing
        assert routing is not None
        return [items[i] for i in comp.items], routing

    plan = assemble(problem, comps, routed)
    moves = plan.moves
    copied = num_copied(plan.copies)
    if build_s(len(moves), copied) > max(
        affordable * CHECK_S_PER_MOVE, build_s(len(baseline.moves), baseline.num_copied())
    ):
        return baseline.noted(
            *notes, f"greedy plan kept: {len(moves) + copied} transfers would not be built in time"
        )
    num_ports = problem.topology.num_ports
    schedule = in_order(moves, num_ports, plan.order)
    if len(moves) <= SEARCH_MAX_MOVES:
        better = best_schedule(moves, num_ports)
        if better.makespan_s < schedule.makespan_s:
            schedule = better
        schedule = randomized_search(moves, num_ports, schedule, deadline, options.seed)
    if schedule.makespan_s > baseline_makespan:
        return baseline.noted(*notes, "greedy plan kept")
    status = (
        SolveStatus.OPTIMAL
        if statuses == {SolveStatus.OPTIMAL}
        else SolveStatus.FEASIBLE
        if SolveStatus.FEASIBLE in statuses
        else SolveStatus.HEURISTIC
    )
    bound = single.bound_s if single is not None else None
    return SolveResult(
        moves, schedule.order, schedule.makespan_s, status, bound, tuple(notes), plan.copies
    )
