"""The one interface every algorithm implements, and the result it returns."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from planner.plan import SolveStatus
from planner.problem import Problem
from solver.moves import Move

#: the share of a time limit `make_plan` gives a time-limited algorithm (the rest is for
#: building and checking its plan)
PLAN_SOLVER_SHARE = 0.8


@dataclass(frozen=True)
class SolveOptions:
    """Knobs shared by all algorithms; each uses what applies to it."""

    time_limit_s: float = 2.0
    seed: int = 0
    #: CP-SAT workers; 1 keeps runs deterministic for a given seed
    num_workers: int = 1
    #: `time.perf_counter()` by which a time-limited algorithm returns (`make_plan` sets it
    #: from `time_limit_s`, keeping time to build and check the plan); None: no deadline
    deadline: float | None = None
    #: the most transfers a plan may have for it to be built and checked in time (the greedy
    #: then prefers a plan with fewer parts); None: no such limit
    max_moves: int | None = None

    def seconds_left(self) -> float:
        """Seconds until the deadline (the whole time limit when there is none)."""
        if self.deadline is None:
            return self.time_limit_s
        return max(0.0, self.deadline - time.perf_counter())


@dataclass
class SolveResult:
    """Moves in execution order, with what the algorithm proved about them.

    `status` is optimal or feasible for the optimizing solvers, heuristic otherwise;
    `best_bound_s` is a proven lower bound on the best makespan when the solver has one.
    """

    moves: Sequence[Move]
    order: Sequence[int]
    status: SolveStatus = SolveStatus.HEURISTIC
    best_bound_s: float | None = None
    notes: list[str] = field(default_factory=list)
    #: the port-v1 makespan of the moves in this order, once worked out
    makespan_s: float | None = None


Algorithm = Callable[[Problem, SolveOptions], SolveResult]
