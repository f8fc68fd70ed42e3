"""The paper's simple baselines (DESIGN §4): one move per tile or per receiver, natural order.

- `sendrecv`: one p2p send per receiver from the least-loaded replica (device bytes);
- `sendrecv-allgather`: Megatron-style, each receiving host gets one slice of the tile per
  receiving device, then the slices are all-gathered inside the host;
- `broadcast-naive`: one broadcast per tile from its first replica;
- `broadcast-lb`: one broadcast per tile from the least-loaded replica host (bytes).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from meshcast.planner.problem import Problem
from meshcast.solver.base import SolveOptions, SolveResult
from meshcast.solver.moves import MoveList, split_piece, tile_pieces


def _natural(moves: MoveList) -> SolveResult:
    return SolveResult.listed(moves.problem, moves.moves)


def _tile_ids(problem: Problem, tile_ids: Sequence[int] | None) -> Sequence[int]:
    return range(len(problem.tiles)) if tile_ids is None else tile_ids


def sendrecv(
    problem: Problem, options: SolveOptions, tile_ids: Sequence[int] | None = None
) -> SolveResult:
    """The baseline of `tile_ids` only (default: every tile), in their order."""
    tiles, moves = problem.tiles, MoveList(problem)
    sent: dict[int, int] = defaultdict(int)
    for i in _tile_ids(problem, tile_ids):
        pieces, num_bytes = tile_pieces(problem, [i])
        holders = tiles.device_sets[int(tiles.holders[i])]
        for d in tiles.device_sets[int(tiles.needers[i])]:
            src = min(holders, key=lambda s: (sent[s], s))
            sent[src] += num_bytes
            moves.add(src, [d], pieces, num_bytes)
    return _natural(moves)


def broadcast_naive(problem: Problem, options: SolveOptions) -> SolveResult:
    tiles, moves = problem.tiles, MoveList(problem)
    for i in range(len(tiles)):
        pieces, num_bytes = tile_pieces(problem, [i])
        src = tiles.device_sets[int(tiles.holders[i])][0]
        moves.add(src, tiles.device_sets[int(tiles.needers[i])], pieces, num_bytes)
    return _natural(moves)


def broadcast_lb(
    problem: Problem, options: SolveOptions, tile_ids: Sequence[int] | None = None
) -> SolveResult:
    """The baseline of `tile_ids` only (default: every tile), in their order."""
    tiles, topo, moves = problem.tiles, problem.topology, MoveList(problem)
    sent: dict[int, int] = defaultdict(int)
    for i in _tile_ids(problem, tile_ids):
        pieces, num_bytes = tile_pieces(problem, [i])
        holders = tiles.device_sets[int(tiles.holders[i])]
        host = min({topo.host_of[s] for s in holders}, key=lambda h: (sent[h], h))
        sent[host] += num_bytes
        src = min(s for s in holders if topo.host_of[s] == host)
        moves.add(src, tiles.device_sets[int(tiles.needers[i])], pieces, num_bytes)
    return _natural(moves)


def sendrecv_allgather(problem: Problem, options: SolveOptions) -> SolveResult:
    tiles, topo, moves = problem.tiles, problem.topology, MoveList(problem)
    sent: dict[int, int] = defaultdict(int)
    for i in range(len(tiles)):
        (piece,), _ = tile_pieces(problem, [i])
        holders = tiles.device_sets[int(tiles.holders[i])]
        by_host: dict[int, list[int]] = defaultdict(list)
        for d in tiles.device_sets[int(tiles.needers[i])]:
            by_host[topo.host_of[d]].append(d)
        for devices in by_host.values():
            slices = split_piece(piece, [1.0] * len(devices))
            for d, part in zip(devices, slices, strict=True):
                if part is None:
                    continue
                num_bytes = problem.piece_bytes(part)
                src = min(holders, key=lambda s: (sent[s], s))
                sent[src] += num_bytes
                scattered = moves.add(src, [d], [part], num_bytes)
                others = [x for x in devices if x != d]
                if others:
                    moves.add(d, others, [part], num_bytes, deps=[scattered])
    return _natural(moves)
