"""Identical tensors planned as one: real models repeat a few layouts thousands of times.

Tensors with the same shape, dtype and source and destination layouts (every layer of one
pipeline stage, every expert on one rank) have the same tiles, holders and needers. Stacked
along a new leading dim they become one tensor of the same bytes, whose tiles coalesce into
the same items, so a solver plans the stack once instead of every member. A plan of the stacked
request is kept in its terms (`planner.compact.CompactTransfers`) and expanded into the request's
own tensors when written or run (`Stacking.expand_pieces`): a piece covering rows `[a, b)` of the
stack is the pieces of members `a..b-1`, with the same box. Sources,
destinations and bytes of every transfer are unchanged, so port-v1 times are too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from meshcast.planner.mesh import Placement, Strided
from meshcast.planner.plan import Piece
from meshcast.planner.request import Layout, Request, TensorSpec


@dataclass(frozen=True)
class Stacking:
    """The stacked request and, per stacked tensor, the request tensors it holds."""

    request: Request
    #: request tensor indices per stacked tensor (one index: not stacked, same box)
    members: tuple[tuple[int, ...], ...]

    def expand_pieces(self, pieces: Sequence[Piece]) -> tuple[Piece, ...]:
        """Pieces of the stacked request as pieces of the original one: a piece covering rows
        `[a, b)` of a stack is the same box of members `a..b-1`."""
        out: list[Piece] = []
        for piece in pieces:
            members = self.members[piece.tensor]
            if len(members) == 1:
                out.append(Piece(members[0], piece.box))
                continue
            (lo, hi), rest = piece.box[0], piece.box[1:]
            out.extend(Piece(members[i], rest) for i in range(lo, hi))
        return tuple(out)


def _shifted(layout: Layout, count: int) -> Layout:
    """`layout` of a stack of `count` tensors: a new leading dim, whole on every device."""
    if layout.blocks is not None:
        blocks = tuple(tuple(((0, count), *box) for box in boxes) for boxes in layout.blocks)
        return Layout(layout.mesh, (), blocks)
    return Layout(layout.mesh, tuple(_shifted_placement(p) for p in layout.placements))


def _shifted_placement(p: Placement) -> Placement:
    if p is None:
        return None
    if isinstance(p, Strided):
        return Strided(p.dim + 1, p.split_factor)
    return p + 1


def stack_identical(request: Request) -> Stacking | None:
    """The request with identical tensors stacked, or None when no two tensors are alike."""
    classes: dict[tuple[object, ...], list[int]] = {}
    for i, t in enumerate(request.tensors):
        classes.setdefault((t.shape, t.dtype, t.dst_dtype, t.src, t.dst), []).append(i)
    if len(classes) == len(request.tensors):
        return None
    tensors: list[TensorSpec] = []
    for members in classes.values():
        first = request.tensors[members[0]]
        if len(members) == 1:
            tensors.append(first)
            continue
        tensors.append(
            TensorSpec(
                f"{first.name} (+{len(members) - 1} alike)",
                (len(members), *first.shape),
                first.dtype,
                _shifted(first.src, len(members)),
                _shifted(first.dst, len(members)),
                first.dst_dtype,
            )
        )
    stacked = replace(request, tensors=tuple(tensors))
    return Stacking(stacked, tuple(tuple(m) for m in classes.values()))
