"""Moves: the transfers a solver builds before it fixes their order.

A move knows its port-v1 cost and which earlier moves must deliver its data first (relays), so
the schedulers can order moves without touching geometry again.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

from meshcast.planner.cost import transfer_cost
from meshcast.planner.mesh import Box
from meshcast.planner.plan import Piece, Transfer
from meshcast.planner.problem import Problem


@dataclass
class Move:
    """One transfer to be scheduled: `src -> dst` carrying `pieces`, after moves `deps`."""

    src: int
    dst: tuple[int, ...]
    pieces: tuple[Piece, ...]
    num_bytes: int
    duration_s: float
    ports: tuple[int, ...]
    deps: tuple[int, ...] = field(default=())

    def to_transfer(self, start_s: float = 0.0, end_s: float = 0.0) -> Transfer:
        return Transfer(self.src, self.dst, self.pieces, start_s, end_s)


class MoveList:
    """Moves of one plan under construction, with their port-v1 costs."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        self.moves: list[Move] = []

    def add(
        self,
        src: int,
        dst: Sequence[int],
        pieces: Sequence[Piece],
        num_bytes: int,
        deps: Sequence[int] = (),
    ) -> int:
        """Append a move and return its index."""
        duration, ports = transfer_cost(self.problem.topology, num_bytes, src, dst)
        self.moves.append(
            Move(src, tuple(dst), tuple(pieces), num_bytes, duration, ports, tuple(deps))
        )
        return len(self.moves) - 1

    def __len__(self) -> int:
        return len(self.moves)


def tile_pieces(problem: Problem, tile_ids: Sequence[int]) -> tuple[tuple[Piece, ...], int]:
    """Pieces and byte count of a group of whole tiles."""
    tiles = problem.tiles
    pieces = tuple(Piece(int(tiles.tensor[i]), tiles.box(int(i))) for i in tile_ids)
    return pieces, int(sum(int(tiles.num_bytes[i]) for i in tile_ids))


def split_piece(piece: Piece, fractions: Sequence[float]) -> list[Piece | None]:
    """Cut `piece` along its longest dim into contiguous parts of about `fractions` of it.

    A part that rounds to nothing is None; the parts that exist cover the piece exactly.
    """
    box = piece.box
    if not box:
        return [piece] + [None] * (len(fractions) - 1)
    extents = [hi - lo for lo, hi in box]
    dim = extents.index(max(extents))  # the first longest, as numpy's argmax
    lo, hi = box[dim]
    total = sum(fractions)
    cuts = [lo]
    acc = 0.0
    for f in fractions[:-1]:
        acc += f
        cuts.append(max(cuts[-1], min(hi, lo + round((hi - lo) * acc / total))))
    cuts.append(hi)
    out: list[Piece | None] = []
    for a, b in itertools.pairwise(cuts):
        if b > a:
            part: Box = (*box[:dim], (a, b), *box[dim + 1 :])
            out.append(Piece(piece.tensor, part))
        else:
            out.append(None)
    return out
