"""Items: tiles with the same holders and needers, which always travel together."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from meshcast.planner.plan import Piece
from meshcast.planner.problem import Problem
from meshcast.solver.moves import tile_pieces


@dataclass(frozen=True)
class Item:
    """Tiles with the same holders and needers, sent as one message (or its parts).

    A bundle (see `bundle`) also lists, per piece, the devices that need it: its pieces
    travel together between hosts, then each device gets only its own.
    """

    pieces: tuple[Piece, ...]
    num_bytes: int
    holders: tuple[int, ...]
    needers: tuple[int, ...]
    piece_needers: tuple[tuple[int, ...], ...] | None = None


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


def bundle(problem: Problem, items: list[Item], max_latencies: float) -> list[Item]:
    """Merge the items that share their holders and their receiving hosts (none of which
    holds them) and that each take less than `max_latencies` latencies on a NIC: one message
    reaches an entry device per host, which hands every device its own pieces."""
    topo = problem.topology
    limit_bytes = max_latencies * topo.latency_s * topo.nic_bytes_per_s
    groups: dict[tuple[tuple[int, ...], tuple[int, ...]], list[Item]] = defaultdict(list)
    kept = []
    for item in items:
        hosts = tuple(sorted({topo.host_of[d] for d in item.needers}))
        local = {topo.host_of[s] for s in item.holders} & set(hosts)
        if item.num_bytes >= limit_bytes or local or item.piece_needers is not None:
            kept.append(item)
        else:
            groups[(item.holders, hosts)].append(item)
    for (holders, _), members in groups.items():
        if len(members) == 1:
            kept.append(members[0])
            continue
        pieces = tuple(p for m in members for p in m.pieces)
        owners = tuple(m.needers for m in members for _ in m.pieces)
        needers = tuple(sorted({d for m in members for d in m.needers}))
        total = sum(m.num_bytes for m in members)
        kept.append(Item(pieces, total, holders, needers, owners))
    kept.sort(key=lambda it: -it.num_bytes)
    return kept
