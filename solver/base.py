"""The one interface every algorithm implements, and the result it returns."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from meshcast.planner.compact import CompactTransfers
from meshcast.planner.plan import SolveStatus, Transfer
from meshcast.planner.problem import Problem
from meshcast.planner.replicas import Replicas, num_copied
from meshcast.solver.moves import Move

#: the share of a time limit `make_plan` gives a time-limited algorithm (the rest is for
#: building and checking its plan)
PLAN_SOLVER_SHARE = 0.8
#: seconds `make_plan` takes per move to build and check a plan (measured with
#: `benchmarks/solver_scaling.py`: 35-41 us on gather boundaries of 6.5 x 10^4-1.3 x 10^5
#: transfers, up to 60 us on a first plan of 16,384 GPUs)
CHECK_S_PER_MOVE = 45e-6
#: seconds per transfer of a copied component (built from its template's without a check,
#: written from arrays: 1.3-1.9 us measured on the 16,384-GPU gather boundary, rounded up)
COPY_S_PER_MOVE = 3e-6


def build_s(num_moves: int, num_copied: int = 0) -> float:
    """About how long `make_plan` takes to build, check and write a plan of `num_moves`
    moves and `num_copied` copied transfers."""
    return num_moves * CHECK_S_PER_MOVE + num_copied * COPY_S_PER_MOVE


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
    #: identical components as copies of some of the moves (`Replicas.template` are move
    #: indices); their transfers follow the moves' in the plan, with the same times
    copies: Sequence[Replicas] = ()

    def own_transfers(self) -> tuple[list[Transfer], list[Replicas]]:
        """The moves as transfers in execution order (untimed), and the copies with their
        templates as positions in that order."""
        own = [self.moves[i].to_transfer() for i in self.order]
        position = {move: k for k, move in enumerate(self.order)}
        return own, [r.remapped(position) for r in self.copies]

    def transfers(self) -> Sequence[Transfer]:
        """Every transfer of the plan in execution order, untimed (the copies' built)."""
        own, replicas = self.own_transfers()
        return tuple(CompactTransfers(own, replicas)) if replicas else own

    def num_copied(self) -> int:
        """Transfers the copies add to the plan."""
        return num_copied(self.copies)


Algorithm = Callable[[Problem, SolveOptions], SolveResult]
