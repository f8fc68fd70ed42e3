"""`cpsat`: the port-v1 schedule as an OR-Tools CP-SAT interval model (DESIGN §4).

Per job (an item's delivery to its remote hosts, or to the needers on one holder host) one
recipe is chosen (sender x rail x strategy: chain, relay, split + intra-host all-gather); every
move of every recipe is an optional interval present when its recipe is chosen; every port is a
NoOverlap resource; relays start after the move that brought their data; the makespan is
minimised. The search starts from a hint: the greedy's recipe choice, list-scheduled.

Times are integers of `unit_s` (durations rounded up), so the model's schedule is one the
list schedule can only shorten. The proven bound is converted back, less one unit per move of
the plan, so it stays a bound of the real (unrounded) model.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace

from ortools.sat.python import cp_model

from meshcast.planner.plan import SolveStatus
from meshcast.planner.problem import Problem
from meshcast.planner.simulate import PortClock
from meshcast.solver.base import SolveOptions
from meshcast.solver.items import Item
from meshcast.solver.moves import MoveList
from meshcast.solver.order import best_schedule
from meshcast.solver.recipes import Job
from meshcast.solver.routing import Routing, realize

#: time resolution: the sum of rounding over a whole plan stays below this share of the bound
ROUNDING_SHARE = 1e-7


@dataclass
class _Model:
    model: cp_model.CpModel
    chosen: list[list[cp_model.IntVar]]  # per job, per recipe
    starts: dict[tuple[int, int, int], cp_model.IntVar]  # (job, recipe, move) -> start
    makespan: cp_model.IntVar


def _units(duration_s: float, unit_s: float) -> int:
    return max(1, math.ceil(duration_s / unit_s - 1e-9))


def _build(jobs: Sequence[Job], unit_s: float, horizon: int, floor: int) -> _Model:
    model = cp_model.CpModel()
    makespan = model.new_int_var(floor, horizon, "makespan")
    chosen: list[list[cp_model.IntVar]] = []
    starts: dict[tuple[int, int, int], cp_model.IntVar] = {}
    by_port: dict[int, list[cp_model.IntervalVar]] = defaultdict(list)
    for j, job in enumerate(jobs):
        literals = [model.new_bool_var(f"use_j{j}_r{r}") for r in range(len(job.recipes))]
        model.add_exactly_one(literals)
        chosen.append(literals)
        for r, recipe in enumerate(job.recipes):
            ends = []
            for m, spec in enumerate(recipe.moves):
                size = _units(spec.duration_s, unit_s)
                start = model.new_int_var(0, horizon - size, f"start_j{j}_r{r}_m{m}")
                interval = model.new_optional_fixed_size_interval_var(
                    start, size, literals[r], f"move_j{j}_r{r}_m{m}"
                )
                starts[(j, r, m)] = start
                ends.append(start + size)
                for p in spec.ports:
                    by_port[p].append(interval)
                for d in spec.deps:
                    model.add(start >= ends[d]).only_enforce_if(literals[r])
                model.add(makespan >= start + size).only_enforce_if(literals[r])
    for intervals in by_port.values():
        if len(intervals) > 1:
            model.add_no_overlap(intervals)
    model.minimize(makespan)
    return _Model(model, chosen, starts, makespan)


def _integral_schedule(
    jobs: Sequence[Job],
    choice: list[int],
    order: list[tuple[int, int]],
    unit_s: float,
    num_ports: int,
) -> tuple[list[list[int]], int]:
    """List-schedule the chosen recipes' moves in `order` with rounded-up durations: the
    port-v1 clock in integer time units."""
    clock = PortClock(num_ports, origin=0)
    starts: list[list[int]] = [
        [0] * len(jobs[j].recipes[choice[j]].moves) for j in range(len(jobs))
    ]
    ends: dict[tuple[int, int], int] = {}
    for j, m in order:
        spec = jobs[j].recipes[choice[j]].moves[m]
        ready = max((ends[(j, d)] for d in spec.deps), default=0)
        start, end = clock.place(_units(spec.duration_s, unit_s), spec.ports, ready)
        starts[j][m], ends[(j, m)] = int(start), int(end)
    return starts, max(ends.values(), default=0)


def cpsat_routing(
    problem: Problem, items: Sequence[Item], jobs: Sequence[Job], options: SolveOptions
) -> Routing:
    """Solve the CP-SAT model over `jobs`; recipe 0 of every job is the hint. The routing's
    order follows the model's start times."""
    num_ports = problem.topology.num_ports
    hint = Routing([[(job.recipes[0], 1.0)] for job in jobs])
    hint_moves = MoveList(problem)
    hint_index = realize(problem, items, hint.shares, hint_moves)
    hint_schedule = best_schedule(hint_moves.moves, num_ports)
    move_of = {
        i: (j, m)
        for j, per_share in enumerate(hint_index)
        for m, i in enumerate(per_share[0])
        if i >= 0
    }
    most_moves = sum(max(len(r.moves) for r in job.recipes) for job in jobs)
    unit_s = max(problem.lower_bound_s, 1e-9) * ROUNDING_SHARE / max(1, most_moves)
    choice = [0] * len(jobs)
    order = [move_of[i] for i in hint_schedule.order]
    hint_starts, hint_units = _integral_schedule(jobs, choice, order, unit_s, num_ports)
    floor = min(hint_units, math.floor(problem.lower_bound_s / unit_s))
    if options.seconds_left() <= 0:
        return replace(
            hint,
            order=tuple(hint_schedule.order),
            notes=(*hint.notes, "cp-sat: no time left after the hint; the hint is returned"),
        )
    built = _build(jobs, unit_s, hint_units, floor)
    for j, literals in enumerate(built.chosen):
        for r, lit in enumerate(literals):
            built.model.add_hint(lit, r == 0)
        for m, start in enumerate(hint_starts[j]):
            built.model.add_hint(built.starts[(j, 0, m)], start)
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = max(0.01, options.seconds_left())
    solver.parameters.random_seed = options.seed
    solver.parameters.num_workers = options.num_workers
    status = solver.solve(built.model)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        note = f"cp-sat: {solver.status_name(status)}; the hint is returned"
        return replace(hint, notes=(*hint.notes, note))
    picked = [
        next(r for r, lit in enumerate(lits) if solver.boolean_value(lit)) for lits in built.chosen
    ]
    shares = [[(jobs[j].recipes[r], 1.0)] for j, r in enumerate(picked)]
    keyed = []
    for j, per_share in enumerate(realize(problem, items, shares, MoveList(problem))):
        for m, i in enumerate(per_share[0]):
            if i >= 0:
                start = solver.value(built.starts[(j, picked[j], m)])
                keyed.append((start, len(jobs[j].recipes[picked[j]].moves[m].deps), i))
    return Routing(
        shares,
        order=tuple(i for _, _, i in sorted(keyed)),
        status=SolveStatus.OPTIMAL if status == cp_model.OPTIMAL else SolveStatus.FEASIBLE,
        best_bound_s=max(
            problem.lower_bound_s, (solver.best_objective_bound - most_moves) * unit_s
        ),
    )
