"""Routings: which recipes (and what share of each item) deliver every job, and in what order.

Every routing algorithm (greedy, cpsat, milp) returns a `Routing`; `realize` turns it into
moves with pieces and `to_result` list-schedules them. The moves realised for one component
are copied onto identical ones (`solver.components.assemble`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from meshcast.planner.plan import Piece, SolveStatus
from meshcast.planner.problem import Problem
from meshcast.solver.base import SolveResult
from meshcast.solver.items import Item
from meshcast.solver.moves import MoveList, split_piece
from meshcast.solver.order import best_schedule, in_order, is_valid_order
from meshcast.solver.recipes import Recipe

#: (recipe, fraction of the item it carries)
Share = tuple[Recipe, float]


@dataclass(frozen=True)
class Routing:
    """Shares per job, and optionally an execution order of the realised moves."""

    shares: Sequence[Sequence[Share]]
    order: Sequence[int] | None = None
    status: SolveStatus = SolveStatus.HEURISTIC
    best_bound_s: float | None = None
    notes: tuple[str, ...] = ()


def _slices(item: Item, fractions: Sequence[float]) -> list[Item]:
    """The item cut by `fractions` (each slice keeps which devices need its pieces)."""
    owners = item.piece_needers or tuple(item.needers for _ in item.pieces)
    if len(fractions) == 1:  # the whole item: nothing to cut
        return [Item(item.pieces, 0, item.holders, item.needers, owners)]
    pieces: list[list[Piece]] = [[] for _ in fractions]
    needers: list[list[tuple[int, ...]]] = [[] for _ in fractions]
    for piece, who in zip(item.pieces, owners, strict=True):
        for k, cut in enumerate(split_piece(piece, fractions)):
            if cut is not None:
                pieces[k].append(cut)
                needers[k].append(who)
    return [
        Item(tuple(p), 0, item.holders, item.needers, tuple(n))
        for p, n in zip(pieces, needers, strict=True)
    ]


def realize(
    problem: Problem, items: Sequence[Item], shares: Sequence[Sequence[Share]], moves: MoveList
) -> list[list[list[int]]]:
    """Add the moves of every share of every job to `moves`.

    The item is cut by the shares' fractions, each share's slice into its recipe's parts.
    Returns, per job and share, the move index of each recipe move (-1 where the slice is
    empty and no move is added).
    """
    out: list[list[list[int]]] = []
    for job_shares in shares:
        if not job_shares:
            out.append([])
            continue
        item = items[job_shares[0][0].item]
        per_share = []
        for (recipe, _), share in zip(
            job_shares, _slices(item, [f for _, f in job_shares]), strict=True
        ):
            parts = _slices(share, [1.0] * recipe.num_parts)
            indices: list[int] = []
            for spec in recipe.moves:
                owners = parts[spec.part].piece_needers or ()
                part = [
                    p
                    for p, who in zip(parts[spec.part].pieces, owners, strict=True)
                    if spec.only_for is None or spec.only_for in who
                ]
                if not part:
                    indices.append(-1)
                    continue
                num_bytes = sum(problem.piece_bytes(p) for p in part)
                deps = [indices[d] for d in spec.deps if indices[d] >= 0]
                indices.append(moves.add(spec.src, spec.dst, part, num_bytes, deps))
            per_share.append(indices)
        out.append(per_share)
    return out


def to_result(problem: Problem, items: Sequence[Item], routing: Routing) -> SolveResult:
    """Realise the routing and keep the shorter of its own order and the list schedulers'."""
    moves = MoveList(problem)
    realize(problem, items, routing.shares, moves)
    num_ports = problem.topology.num_ports
    schedule = best_schedule(moves.moves, num_ports)
    if routing.order is not None and is_valid_order(moves.moves, routing.order):
        given = in_order(moves.moves, num_ports, routing.order)
        if given.makespan_s <= schedule.makespan_s:
            schedule = given
    return SolveResult(
        moves.moves,
        schedule.order,
        schedule.makespan_s,
        routing.status,
        routing.best_bound_s,
        routing.notes,
    )


def scheduled(problem: Problem, items: Sequence[Item], routing: Routing) -> tuple[float, Routing]:
    """The makespan of the routing's best list schedule, and the routing with that order."""
    result = to_result(problem, items, routing)
    return result.makespan_s, replace(routing, order=tuple(result.order))
