"""The one interface every algorithm implements, and the result it returns."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from meshcast.planner.compact import CompactTransfers
from meshcast.planner.plan import SolveStatus, Transfer
from meshcast.planner.problem import Problem
from meshcast.planner.replicas import Replicas, num_copied
from meshcast.solver.moves import Move
from meshcast.solver.order import in_order


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


@dataclass(frozen=True)
class SolveResult:
    """Moves in execution order, their port-v1 makespan, and what the algorithm proved.

    Built once, complete: `status` is optimal or feasible for the optimizing solvers,
    heuristic otherwise; `best_bound_s` is a proven lower bound on the best makespan when the
    solver has one. A result with more to say is a new one (`noted`, `dataclasses.replace`).
    """

    moves: Sequence[Move]
    order: Sequence[int]
    #: the port-v1 makespan of the moves in this order
    makespan_s: float
    status: SolveStatus = SolveStatus.HEURISTIC
    best_bound_s: float | None = None
    notes: tuple[str, ...] = ()
    #: identical components as copies of some of the moves (`Replicas.template` are move
    #: indices); their transfers follow the moves' in the plan, with the same times
    copies: Sequence[Replicas] = ()

    @classmethod
    def listed(
        cls,
        problem: Problem,
        moves: Sequence[Move],
        order: Sequence[int] | None = None,
        notes: Sequence[str] = (),
    ) -> SolveResult:
        """`moves` in `order` (default: as listed), their makespan from the list schedule."""
        schedule = in_order(moves, problem.topology.num_ports, order)
        return cls(moves, schedule.order, schedule.makespan_s, notes=tuple(notes))

    def noted(self, *notes: str) -> SolveResult:
        """The same result with `notes` added."""
        return replace(self, notes=(*self.notes, *notes))

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
