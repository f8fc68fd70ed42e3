"""Items: tiles with the same holders and needers, which always travel together."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from planner.plan import Piece
from planner.problem import Problem
from solver.moves import tile_pieces


@dataclass(frozen=True)
class Item:
    """Tiles with the same holders and needers, sent as one message (or its parts)."""

    pieces: tuple[Piece, ...]
    num_bytes: int
    holders: tuple[int, ...]
    needers: tuple[int, ...]


def coalesce(problem: Problem) -> list[Item]:
    """Group tiles by (holders, needers); largest groups first."""
    tiles = problem.tiles
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, key in enumerate(zip(tiles.holders.tolist(), tiles.needers.tolist(), strict=True)):
        groups[key].append(i)
    items = []
    for (holders, needers), ids in groups.items():
        pieces, num_bytes = tile_pieces(problem, ids)
        items.append(
            Item(pieces, num_bytes, tiles.device_sets[holders], tiles.device_sets[needers])
        )
    items.sort(key=lambda it: -it.num_bytes)
    return items
