"""The time budget: how a request's time limit is shared between solving and building the plan.

A time limit covers the whole `make_plan`: the algorithm, then building the plan from its moves
and checking it under port-v1 (and, for the service, writing it). The algorithm gets
`PLAN_SOLVER_SHARE` of the limit, less what its tensors cost to expand; `auto` gives the greedy
start `GREEDY_SHARE` of its own share, then CP-SAT or the MILP `SOLVER_SHARE` of what is left per
component, and keeps the rest for ordering. Building is priced per checked move and per copied
transfer, from measurements named beside each constant; every deadline and move budget the
solvers use is derived here.
"""

from __future__ import annotations

#: the share of a time limit `make_plan` gives a time-limited algorithm (the rest is for
#: building and checking its plan)
PLAN_SOLVER_SHARE = 0.8
#: seconds `make_plan` takes per move to build and check a plan (measured with
#: `benchmarks/solver_scaling.py`: 35-41 us on gather boundaries of 6.5 x 10^4-1.3 x 10^5
#: transfers, up to 60 us on a first plan of 16,384 GPUs; an upper estimate since checks run
#: per distinct component)
CHECK_S_PER_MOVE = 45e-6
#: seconds per transfer of a copied component (built from its template's without a check,
#: written from arrays: 1.3-1.9 us measured on the 16,384-GPU gather boundary, rounded up)
COPY_S_PER_MOVE = 3e-6
#: seconds per request tensor that building and checking a plan takes beyond the solver's
#: moves (measured: 4-10 us on refits of 25,000-100,000 tensors)
PLAN_S_PER_TENSOR = 10e-6
#: share of `auto`'s time the greedy start may take (its optional variants stop there)
GREEDY_SHARE = 0.4
#: share of a component's time the solver gets in `auto`; the rest goes to the randomized
#: order search of the assembled plan (more useful after CP-SAT, which orders, than after the
#: MILP, which only routes and needs its time to converge)
SOLVER_SHARE = {"cpsat": 0.5, "milp": 0.85}
#: a component is not started with less time left than this
MIN_COMPONENT_S = 0.05
#: a solver is started only with this many times the expected model-building time left:
#: building its jobs (the hint's greedy routing and the full enumeration) takes about as long
#: as the greedy start did (dsv3-sized refit, cProfile: 2.5 s against 2.0 s)
MODEL_TIME_FACTOR = 1.5


def build_s(num_moves: int, num_copied: int = 0) -> float:
    """About how long `make_plan` takes to build, check and write a plan of `num_moves`
    moves and `num_copied` copied transfers."""
    return num_moves * CHECK_S_PER_MOVE + num_copied * COPY_S_PER_MOVE


def solver_deadline(started: float, time_limit_s: float, num_tensors: int) -> float:
    """When a time-limited algorithm started at `started` must return: its share of the
    limit, less the per-tensor cost of building the plan."""
    reserve_s = num_tensors * PLAN_S_PER_TENSOR
    return started + max(0.0, time_limit_s * PLAN_SOLVER_SHARE - reserve_s)


def greedy_deadline(started: float, deadline: float) -> float:
    """When `auto`'s greedy start must stop trying variants."""
    return started + (deadline - started) * GREEDY_SHARE


def affordable_moves(deadline: float, time_limit_s: float, checks_from: float) -> int:
    """Moves a plan may have to be built and checked from `checks_from` until the end of the
    whole time limit (the solver's `deadline` plus the share kept for building)."""
    limit_ends = deadline + time_limit_s * (1 - PLAN_SOLVER_SHARE)
    return int((limit_ends - checks_from) / CHECK_S_PER_MOVE)


def moves_per_kind(max_moves: int, num_kinds: int, num_copies: int) -> int:
    """The moves one kind of component may have when `max_moves` are shared equally among
    `num_kinds` kinds and this one is written `num_copies` times (checked once)."""
    per_move = build_s(1, num_copies - 1) / build_s(1)
    return int(max_moves / num_kinds / per_move)
