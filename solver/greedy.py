"""meshcast's topology-aware greedy (DESIGN §4).

1. Coalesce: tiles with the same holders and needers travel as one item (one message).
2. Route, largest item first, against the seconds of work already booked on every port:
   - needers on a host that holds the item get it over NVLink from the least-busy local
     holder (or from all local holders, needers shared round-robin, when that finishes first);
   - the other hosts get it by one pipelined chain from the holder whose send rail and whose
     entry rails finish it first; on multi-rail hosts with several needers the chain stops at
     one entry device per host, which relays inside the host (store and forward, NVLink only);
   - an item that alone would keep a rail busy for a large share of the bound is also tried
     split across senders and entry rails, each part all-gathered inside every receiving host;
     the split is kept when it finishes the item at least 1% sooner.
3. Order: non-delay list schedules under port-v1 with a few priority rules, the best kept.
4. Never worse than `broadcast-lb`: if its plan is shorter, it is returned instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from planner.problem import Problem
from solver.base import SolveOptions, SolveResult
from solver.baselines import broadcast_lb
from solver.items import Item, coalesce
from solver.moves import MoveList
from solver.order import best_schedule, in_order
from solver.recipes import (
    SPLIT_PARTS,
    MoveSpec,
    Recipe,
    entry_options,
    local_recipes,
    materialize,
    move_spec,
    needers_by_host,
    relay_specs,
    senders,
)

#: a split must finish the item this much sooner than the best unsplit route
SPLIT_GAIN = 0.99
#: the greedy tries splits only for items that alone keep a rail busy this share of the bound
#: (smaller items are balanced by the choice of sender and rail; their splits cost latency)
GREEDY_SPLIT_SHARE = 0.5


class Router:
    """Chooses one recipe per job of every item, booking its work on the ports."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        self.topo = problem.topology
        self.load = np.zeros(self.topo.num_ports)

    def finish_s(self, specs: Sequence[MoveSpec]) -> float:
        """When the moves would end if booked now, one after the other."""
        extra: dict[int, float] = {}
        ends: list[float] = []
        for spec in specs:
            start = max(
                [self.load[p] + extra.get(p, 0.0) for p in spec.ports]
                + [ends[d] for d in spec.deps]
                + [0.0]
            )
            ends.append(start + spec.duration_s)
            for p in spec.ports:
                extra[p] = extra.get(p, 0.0) + spec.duration_s
        return max(ends, default=0.0)

    def book(self, recipe: Recipe) -> Recipe:
        for spec in recipe.moves:
            for p in spec.ports:
                self.load[p] += spec.duration_s
        return recipe

    def best(self, recipes: Sequence[Recipe]) -> Recipe:
        return min(recipes, key=lambda r: self.finish_s(r.moves))

    def route(self, index: int, item: Item) -> list[Recipe]:
        """One recipe per job of the item (local hosts in order, then the remote hosts)."""
        holder_hosts = {self.topo.host_of[s] for s in item.holders}
        needers_on = needers_by_host(self.problem, item.needers)
        chosen = [
            self.book(self.best(local_recipes(self.problem, index, item, h)))
            for h in needers_on
            if h in holder_hosts
        ]
        remote = {h: ds for h, ds in needers_on.items() if h not in holder_hosts}
        if remote:
            chosen.append(self.book(self._remote(index, item, remote)))
        return chosen

    def _senders(self, item: Item) -> list[int]:
        topo = self.topo
        return sorted(
            senders(self.problem, item),
            key=lambda s: self.load[topo.send_port(topo.host_of[s], topo.rail_of[s])],
        )

    def _entries(self, host: int, needers: list[int]) -> list[int]:
        """Entry devices of `host`, least-loaded receive rail first (needers before relays)."""
        topo = self.topo
        options = entry_options(self.problem, host, needers)
        return sorted(
            options,
            key=lambda d: (self.load[topo.recv_port(host, topo.rail_of[d])], d not in needers),
        )

    def _remote(self, index: int, item: Item, remote: dict[int, list[int]]) -> Recipe:
        problem = self.problem
        sources = self._senders(item)
        entries = {h: self._entries(h, ds) for h, ds in remote.items()}
        relay = self.topo.num_rails > 1 and any(len(ds) > 1 for ds in remote.values())
        candidates = []
        for s in sources:
            if relay:
                layout = {h: e[0] for h, e in entries.items()}
                inter = move_spec(problem, item, 1, s, list(layout.values()))
                candidates.append(
                    Recipe(index, 1, (inter, *relay_specs(problem, item, 1, 0, 0, layout, remote)))
                )
            else:
                firsts = {h: next(d for d in entries[h] if d in remote[h]) for h in remote}
                chain = [d for h in remote for d in sorted(remote[h], key=lambda d: d != firsts[h])]
                candidates.append(Recipe(index, 1, (move_spec(problem, item, 1, s, chain),)))
        best = self.best(candidates)
        if item.num_bytes / self.topo.nic_bytes_per_s < GREEDY_SPLIT_SHARE * problem.lower_bound_s:
            return best
        best_finish = self.finish_s(best.moves)
        width = max(len(sources), min(len(e) for e in entries.values()))
        for parts in SPLIT_PARTS:
            if parts > width:
                break
            layouts = [{h: e[j % len(e)] for h, e in entries.items()} for j in range(parts)]
            moves: list[MoveSpec] = []
            for part in range(parts):
                at = len(moves)
                src = sources[part % len(sources)]
                moves.append(
                    move_spec(problem, item, parts, src, list(layouts[part].values()), part)
                )
                moves.extend(relay_specs(problem, item, parts, part, at, layouts[part], remote))
            finish = self.finish_s(moves)
            if finish < best_finish * SPLIT_GAIN:
                best, best_finish = Recipe(index, parts, tuple(moves)), finish
        return best


def route_all(problem: Problem, items: Sequence[Item]) -> list[list[Recipe]]:
    """The greedy's recipe for every job of every item."""
    router = Router(problem)
    return [router.route(i, item) for i, item in enumerate(items)]


def greedy(problem: Problem, options: SolveOptions) -> SolveResult:
    items = coalesce(problem)
    recipes = [r for per_item in route_all(problem, items) for r in per_item]
    moves = MoveList(problem)
    materialize(problem, items, recipes, moves)
    num_ports = problem.topology.num_ports
    schedule = best_schedule(moves.moves, num_ports)
    fallback = broadcast_lb(problem, options)
    fallback_makespan = in_order(fallback.moves, num_ports, fallback.order).makespan_s
    if fallback_makespan < schedule.makespan_s:
        return SolveResult(fallback.moves, fallback.order, notes=["broadcast-lb was shorter"])
    return SolveResult(moves.moves, schedule.order)
