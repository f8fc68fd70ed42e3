"""`search`: the paper's depth-first search over broadcast order and sender (DESIGN §4).

Every tile is one broadcast to all its needers; the search picks, tile after tile, which tile
goes next and from which replica host, list-scheduling as it goes. Children are tried earliest
finish first, so the first dive is a greedy plan; a branch is cut when its port-v1 time plus the
work still waiting on any receive port cannot beat the best plan found. It stops at
`time_limit_s` with the best plan so far.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

from meshcast.planner.cost import transfer_cost
from meshcast.planner.problem import Problem
from meshcast.solver.base import SolveOptions, SolveResult
from meshcast.solver.baselines import broadcast_lb
from meshcast.solver.moves import MoveList, tile_pieces

#: deeper searches than this only make the first (greedy) dive
MAX_DEPTH = 400


@dataclass
class _Option:
    tile: int
    src: int
    duration_s: float
    ports: tuple[int, ...]


class _Search:
    def __init__(self, problem: Problem, deadline: float) -> None:
        self.problem = problem
        self.deadline = deadline
        topo, tiles = problem.topology, problem.tiles
        self.options: list[list[_Option]] = []
        for i in range(len(tiles)):
            holders = tiles.device_sets[int(tiles.holders[i])]
            needers = tiles.device_sets[int(tiles.needers[i])]
            senders: dict[int, int] = {}
            for s in holders:
                senders.setdefault(topo.host_of[s], s)
            opts = []
            for src in senders.values():
                duration, ports = transfer_cost(topo, int(tiles.num_bytes[i]), src, needers)
                opts.append(_Option(i, src, duration, ports))
            self.options.append(opts)
        # ports every option of a tile holds (the receive side): work that cannot be avoided
        self.fixed_work = [0.0] * topo.num_ports
        self.fixed_ports: list[set[int]] = []
        for opts in self.options:
            common = set(opts[0].ports).intersection(*(o.ports for o in opts[1:]))
            least = min(o.duration_s for o in opts)
            for p in common:
                self.fixed_work[p] += least
            self.fixed_ports.append(common)
        self.ready = [0.0] * topo.num_ports
        self.best_makespan = float("inf")
        self.best_path: list[_Option] = []
        self.complete = True

    def bound(self, makespan: float) -> float:
        return max(makespan, max(r + w for r, w in zip(self.ready, self.fixed_work, strict=True)))

    def run(self, remaining: list[int], path: list[_Option], makespan: float) -> None:
        if not remaining:
            if makespan < self.best_makespan:
                self.best_makespan, self.best_path = makespan, list(path)
            return
        if time.perf_counter() > self.deadline:
            self.complete = False
            return
        children = []
        for k, tile in enumerate(remaining):
            for opt in self.options[tile]:
                start = max(self.ready[p] for p in opt.ports)
                children.append((start + opt.duration_s, k, opt))
        children.sort(key=lambda c: c[0])
        if len(path) >= MAX_DEPTH:
            children = children[:1]
            self.complete = False
        for end, k, opt in children:
            if end >= self.best_makespan:
                continue
            saved = [(p, self.ready[p]) for p in opt.ports]
            for p in opt.ports:
                self.ready[p] = end
            least = min(o.duration_s for o in self.options[opt.tile])
            for p in self.fixed_ports[opt.tile]:
                self.fixed_work[p] -= least
            if self.bound(max(makespan, end)) < self.best_makespan:
                path.append(opt)
                self.run(remaining[:k] + remaining[k + 1 :], path, max(makespan, end))
                path.pop()
            for p in self.fixed_ports[opt.tile]:
                self.fixed_work[p] += least
            for p, r in saved:
                self.ready[p] = r
            if time.perf_counter() > self.deadline:
                self.complete = False
                return


def search(problem: Problem, options: SolveOptions) -> SolveResult:
    incumbent = broadcast_lb(problem, options)
    dfs = _Search(problem, time.perf_counter() + options.seconds_left())
    dfs.best_makespan = incumbent.makespan_s * (1 + 1e-12)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 3 * len(problem.tiles) + 1000))
    try:
        dfs.run(list(range(len(problem.tiles))), [], 0.0)
    finally:
        sys.setrecursionlimit(limit)
    if not dfs.best_path:
        return incumbent.noted("no plan beat broadcast-lb")
    moves = MoveList(problem)
    for opt in dfs.best_path:
        pieces, num_bytes = tile_pieces(problem, [opt.tile])
        needers = problem.tiles.device_sets[int(problem.tiles.needers[opt.tile])]
        moves.add(opt.src, needers, pieces, num_bytes)
    notes = ["searched every order and sender"] if dfs.complete else []
    return SolveResult.listed(problem, moves.moves, notes=notes)
