"""One summary of a plan, the same keys wherever it is shown (CLI `check`/`compare`,
`POST /v1/check`, `POST /v1/compare`)."""

from __future__ import annotations

from typing import Any

from meshcast.planner.plan import Plan
from meshcast.planner.problem import Problem
from meshcast.planner.simulate import Simulation, check_plan

#: the keys of every summary, in order
SUMMARY_KEYS = (
    "algorithm",
    "status",
    "valid",
    "errors",
    "transfers",
    "wire_bytes",
    "makespan_s",
    "lower_bound_s",
    "ratio",
    "best_bound_s",
    "solve_time_s",
    "busiest_port",
    "busiest_port_s",
)


def summarize(
    problem: Problem, plan: Plan, check: bool = True, simulation: Simulation | None = None
) -> dict[str, Any]:
    """Validity, port-v1 times recomputed from the request, bytes on the wire, the busiest
    port and how long it is held. With `check=False`, a plan that `solver.make_plan` just
    made (and simulated) is summarised from what it carries, without simulating again; a
    `simulation` of the plan already made (`check_plan`) is used as it is."""
    if simulation is not None:
        sim = simulation
    elif check or plan.wire_bytes is None or not plan.port_busy_s:
        sim = check_plan(problem, plan)
    else:
        sim = Simulation([], plan.makespan_s, plan.wire_bytes, [], list(plan.port_busy_s))
    busy = sim.port_busy_s
    busiest = max(range(len(busy)), key=busy.__getitem__) if busy else None
    lower = problem.lower_bound_s
    ratio = sim.makespan_s / lower if lower > 0 else (1.0 if sim.makespan_s == 0 else None)
    return {
        "algorithm": plan.algorithm,
        "status": plan.status.value,
        "valid": sim.valid,
        "errors": sim.errors[:20],
        "transfers": len(plan.transfers),
        "wire_bytes": sim.wire_bytes,
        "makespan_s": sim.makespan_s,
        "lower_bound_s": lower,
        "ratio": ratio,
        "best_bound_s": plan.best_bound_s,
        "solve_time_s": plan.solve_time_s,
        "busiest_port": None if busiest is None else problem.topology.port_name(busiest),
        "busiest_port_s": None if busiest is None else busy[busiest],
    }
