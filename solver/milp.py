"""`milp`: route assignment as a mixed-integer program (PuLP with HiGHS; CBC as a fallback).

For every job (see `solver.recipes`), a fraction `x[j, r]` of the item travels by recipe `r`
(unsplit recipes only: splitting is what the fractions do), with `use[j, r]` binary,
`x <= use`. A move holding port `p` costs it `x * bandwidth_time + use * latency_time`. The
program minimises the busiest port's load `T`. The solver's dual bound on `T` (HiGHS's MIP
bound, or with CBC the LP relaxation, every `use` fractional) bounds the makespan of any plan
over these routes and is reported as the plan's proven bound (never below the universal one).
The integer solution is cut into slices by its fractions, the slices materialised, and the
moves list-scheduled.
"""

from __future__ import annotations

import math
import time
import warnings
from collections import defaultdict
from collections.abc import Sequence

import pulp

from meshcast.planner.plan import SolveStatus
from meshcast.planner.problem import Problem
from meshcast.solver.base import SolveOptions
from meshcast.solver.items import Item
from meshcast.solver.recipes import Job
from meshcast.solver.routing import Routing, Share

_HIGHS = "HiGHS" in pulp.listSolvers(onlyAvailable=True)

#: fractions below this are dropped (and the rest rescaled): a sliver is not worth a latency
MIN_FRACTION = 0.02
#: the shortest time limit worth handing to the solver (s)
MIN_SOLVE_S = 0.05


def _latency_part_s(problem: Problem, duration_s: float, dst_hops: int) -> float:
    return min(duration_s, problem.topology.latency_s * max(1, dst_hops))


def _solver(time_limit_s: float, seed: int, mip: bool) -> pulp.LpSolver:
    """HiGHS in-process (the `pulp[highs]` dependency), else the CBC that PuLP still bundles
    (whole seconds, at least one)."""
    if _HIGHS:
        return pulp.HiGHS(
            mip=mip, msg=False, timeLimit=max(0.05, time_limit_s), random_seed=seed, threads=1
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        seconds = max(1, int(time_limit_s))
        return pulp.PULP_CBC_CMD(msg=False, mip=mip, timeLimit=seconds, options=[f"randomS {seed}"])


def _model(
    problem: Problem, jobs: Sequence[Job]
) -> tuple[pulp.LpProblem, pulp.LpVariable, dict[tuple[int, int], pulp.LpVariable]]:
    lp = pulp.LpProblem("meshcast_routes", pulp.LpMinimize)
    busiest = lp.add_variable("busiest_port_s", lowBound=0)
    lp += busiest
    fraction: dict[tuple[int, int], pulp.LpVariable] = {}
    load: dict[int, dict[pulp.LpVariable, float]] = defaultdict(lambda: defaultdict(float))
    for j, job in enumerate(jobs):
        candidates = [r for r, recipe in enumerate(job.recipes) if recipe.num_parts == 1]
        for r in candidates:
            x = fraction[(j, r)] = lp.add_variable(f"x_j{j}_r{r}", 0, 1)
            use = lp.add_variable(f"use_j{j}_r{r}", cat="Binary")
            lp += pulp.LpAffineExpression({x: 1.0, use: -1.0}) <= 0, f"use_j{j}_r{r}"
            for spec in job.recipes[r].moves:
                fixed = _latency_part_s(problem, spec.duration_s, len(spec.dst))
                for p in spec.ports:
                    load[p][x] += spec.duration_s - fixed
                    load[p][use] += fixed
        whole = pulp.LpAffineExpression({fraction[(j, r)]: 1.0 for r in candidates})
        lp += whole == 1, f"whole_j{j}"
    for p, coefficients in load.items():
        lp += pulp.LpAffineExpression({**coefficients, busiest: -1.0}) <= 0, f"port_{p}"
    return lp, busiest, fraction


def _highs_dual_bound(lp: pulp.LpProblem) -> float | None:
    """The MIP dual bound HiGHS proved (never weaker than the LP relaxation), if it has one."""
    model = getattr(lp, "solverModel", None)
    if model is None or not hasattr(model, "getInfo"):
        return None
    bound = float(model.getInfo().mip_dual_bound)
    return bound if math.isfinite(bound) and bound > 0 else None


def milp_routing(
    problem: Problem, items: Sequence[Item], jobs: Sequence[Job], options: SolveOptions
) -> Routing:
    """Route fractions from the MILP. With HiGHS the bound is its MIP dual bound; with CBC the
    LP relaxation is solved first for it."""
    if options.seconds_left() <= 0:
        note = "milp: no time left for the model; greedy routes"
        return Routing([[(job.recipes[0], 1.0)] for job in jobs], notes=(note,))
    started = time.perf_counter()
    lp, busiest, fraction = _model(problem, jobs)
    # handing the model to the solver takes about as long again, outside its time limit
    # (measured: 0.9 s to build and 1.0 s to pass a DeepSeek-V3-sized refit's model)
    handover_s = time.perf_counter() - started
    if options.seconds_left() - handover_s < MIN_SOLVE_S:
        note = "milp: no time left to solve the model; greedy routes"
        return Routing([[(job.recipes[0], 1.0)] for job in jobs], notes=(note,))
    bound = None
    if not _HIGHS:
        lp.solve(_solver((options.seconds_left() - handover_s) / 3, options.seed, mip=False))
        bound = pulp.value(busiest) if pulp.LpStatus[lp.status] == "Optimal" else None
    limit_s = max(MIN_SOLVE_S, options.seconds_left() - handover_s)
    lp.solve(_solver(limit_s, options.seed, mip=True))
    if _HIGHS:
        bound = _highs_dual_bound(lp)
    shares: list[list[Share]] = []
    for j, job in enumerate(jobs):
        kept = []
        for r, recipe in enumerate(job.recipes):
            value = pulp.value(fraction[(j, r)]) if (j, r) in fraction else None
            if value is not None and value >= MIN_FRACTION:
                kept.append((recipe, float(value)))
        shares.append(kept or [(job.recipes[0], 1.0)])  # no usable value: the hint recipe
    best_bound = None if bound is None else max(problem.lower_bound_s, float(bound))
    notes = (f"milp: {pulp.LpStatus[lp.status]}",)
    return Routing(shares, status=SolveStatus.FEASIBLE, best_bound_s=best_bound, notes=notes)
