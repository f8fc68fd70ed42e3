"""`alpa-order`: the paper's randomized load-balance-and-order greedy (DESIGN §4).

Each tile is one broadcast from one replica host. The plan is built in rounds; a round is a
set of broadcasts whose hosts (sender and receivers) are pairwise disjoint, so they can all run
at once. For each round 100 random draws are made: a random scan of the remaining tiles takes
every tile whose hosts are still free, choosing its sender host at random, weighted towards the
least-loaded replica. The draw with most broadcasts (then the lowest spread of host loads) wins.

The number of draws drops to one per round once `time_limit_s` is spent (noted in the result):
the algorithm is quadratic in the number of tiles.
"""

from __future__ import annotations

import random
import statistics
import time

from meshcast.planner.problem import Problem
from meshcast.solver.base import SolveOptions, SolveResult
from meshcast.solver.moves import MoveList, tile_pieces

DRAWS_PER_ROUND = 100


def alpa_order(problem: Problem, options: SolveOptions) -> SolveResult:
    tiles, topo = problem.tiles, problem.topology
    rng = random.Random(options.seed)
    items = []
    for i in range(len(tiles)):
        holders = tiles.device_sets[int(tiles.holders[i])]
        needers = tiles.device_sets[int(tiles.needers[i])]
        need_mask = 0
        for d in needers:
            need_mask |= 1 << topo.host_of[d]
        items.append((i, sorted({topo.host_of[s] for s in holders}), need_mask))
    load = [0.0] * topo.num_hosts
    moves = MoveList(problem)
    remaining = list(range(len(items)))
    deadline = time.perf_counter() + options.time_limit_s
    notes: list[str] = []
    while remaining:
        draws = DRAWS_PER_ROUND
        if time.perf_counter() > deadline:
            draws = 1
            if not notes:
                notes.append("time limit reached: one draw per round from here on")
        best_key, best_round = None, []
        for _ in range(draws):
            chosen = _draw(items, remaining, load, rng)
            trial = list(load)
            for k, h in chosen:
                trial[h] += int(tiles.num_bytes[items[k][0]])
            key = (-len(chosen), statistics.pstdev(trial))
            if best_key is None or key < best_key:
                best_key, best_round = key, chosen
        for k, h in best_round:
            i = items[k][0]
            pieces, num_bytes = tile_pieces(problem, [i])
            load[h] += num_bytes
            holders = tiles.device_sets[int(tiles.holders[i])]
            src = min(s for s in holders if topo.host_of[s] == h)
            moves.add(src, tiles.device_sets[int(tiles.needers[i])], pieces, num_bytes)
        taken = {k for k, _ in best_round}
        remaining = [k for k in remaining if k not in taken]
    return SolveResult.listed(problem, moves.moves, notes=notes)


def _draw(
    items: list[tuple[int, list[int], int]],
    remaining: list[int],
    load: list[float],
    rng: random.Random,
) -> list[tuple[int, int]]:
    """One random round: (item, sender host) pairs with pairwise disjoint hosts."""
    order = remaining[:]
    rng.shuffle(order)
    used = 0
    chosen = []
    for k in order:
        _, holder_hosts, need_mask = items[k]
        if need_mask & used:
            continue
        free = [h for h in holder_hosts if not used >> h & 1]
        if not free:
            continue
        top = max(load[h] for h in free)
        host = rng.choices(free, weights=[top - load[h] + 1 for h in free])[0]
        used |= need_mask | 1 << host
        chosen.append((k, host))
    return chosen
