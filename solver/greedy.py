"""meshcast's topology-aware greedy (DESIGN §4).

1. Coalesce: tiles with the same holders and needers travel as one item (one message).
2. Route, largest item first, against the port loads booked so far:
   - needers on a host that holds the item get it over NVLink from a local holder;
   - the other hosts get it by one pipelined chain from the holder whose send rail and whose
     entry rails are least loaded; on multi-rail hosts the chain stops at one entry device per
     host and the entry relays inside the host (store and forward, NVLink only);
   - a large item is split across several senders and entry rails when that lowers its
     finish, each part relayed (all-gathered) inside every receiving host.
3. Order: non-delay list schedules under port-v1 with a few priority rules, best kept.
4. Never worse than `broadcast-lb`: if its plan is shorter, it is returned instead.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from planner.cost import transfer_cost
from planner.plan import Piece
from planner.problem import Problem
from solver.base import SolveOptions, SolveResult
from solver.baselines import broadcast_lb
from solver.moves import MoveList, split_piece, tile_pieces
from solver.order import best_schedule, in_order

MAX_PARTS = 8
#: an item is considered for splitting only when it alone would keep a rail busy this long,
#: as a share of the lower bound
SPLIT_SHARE = 0.5


@dataclass
class Item:
    """Tiles with the same holders and needers, sent together."""

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


class Router:
    """Books items onto routes, keeping the seconds of work booked on every port."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        self.topo = problem.topology
        self.moves = MoveList(problem)
        self.load = np.zeros(self.topo.num_ports)
        self.dst_by_host_rail: dict[tuple[int, int], list[int]] = defaultdict(list)
        for d in sorted(problem.dst_devices):
            self.dst_by_host_rail[(self.topo.host_of[d], self.topo.rail_of[d])].append(d)

    def _book(self, src: int, dst: list[int], pieces: list[Piece], num_bytes: int, deps=()) -> int:
        index = self.moves.add(src, dst, pieces, num_bytes, deps)
        move = self.moves.moves[index]
        for p in move.ports:
            self.load[p] += move.duration_s
        return index

    def _finish(self, src: int, dst: list[int], num_bytes: int) -> float:
        duration, ports = transfer_cost(self.topo, num_bytes, src, dst)
        return max((self.load[p] for p in ports), default=0.0) + duration

    def route(self, item: Item) -> None:
        topo = self.topo
        needers_on: dict[int, list[int]] = defaultdict(list)
        for d in item.needers:
            needers_on[topo.host_of[d]].append(d)
        holder_hosts = {topo.host_of[s] for s in item.holders}
        for h in sorted(needers_on.keys() & holder_hosts):
            local = [s for s in item.holders if topo.host_of[s] == h]
            src = min(local, key=lambda s: self.load[topo.link_out_port(s)])
            self._book(src, needers_on[h], list(item.pieces), item.num_bytes)
        remote = {h: ds for h, ds in needers_on.items() if h not in holder_hosts}
        if remote:
            self._route_remote(item, remote)

    def _senders(self, item: Item) -> list[int]:
        """One holder per send port, least-loaded first."""
        by_port: dict[int, int] = {}
        for s in item.holders:
            port = self.topo.send_port(self.topo.host_of[s], self.topo.rail_of[s])
            if port not in by_port:
                by_port[port] = s
        return sorted(
            by_port.values(),
            key=lambda s: self.load[
                self.topo.send_port(self.topo.host_of[s], self.topo.rail_of[s])
            ],
        )

    def _entries(self, host: int, needers: list[int]) -> list[int]:
        """Entry device per rail of `host`, least-loaded rail first (a needer when possible)."""
        topo = self.topo
        best: dict[int, int] = {}
        for d in needers:
            best.setdefault(topo.rail_of[d], d)
        if topo.num_rails > 1:
            for rail in range(topo.num_rails):
                devices = self.dst_by_host_rail.get((host, rail))
                if devices and rail not in best:
                    best[rail] = devices[0]
        return sorted(best.values(), key=lambda d: self.load[topo.recv_port(host, topo.rail_of[d])])

    def _route_remote(self, item: Item, remote: dict[int, list[int]]) -> None:
        senders = self._senders(item)
        entries = {h: self._entries(h, ds) for h, ds in remote.items()}
        hosts = sorted(remote)
        relay = self.topo.num_rails > 1 and any(len(ds) > 1 for ds in remote.values())
        best_parts, best_finish = (
            1,
            self._plan_parts(item, remote, hosts, senders, entries, 1, relay, dry=True),
        )
        max_parts = min(MAX_PARTS, max(len(senders), min(len(e) for e in entries.values())))
        alone_s = item.num_bytes / self.topo.nic_bytes_per_s
        if alone_s < SPLIT_SHARE * self.problem.lower_bound_s:
            max_parts = 1
        parts = 2
        while parts <= max_parts:
            finish = self._plan_parts(item, remote, hosts, senders, entries, parts, True, dry=True)
            if finish < best_finish * 0.99:
                best_parts, best_finish = parts, finish
            parts *= 2
        self._plan_parts(
            item, remote, hosts, senders, entries, best_parts, relay or best_parts > 1, dry=False
        )

    def _plan_parts(
        self,
        item: Item,
        remote: dict[int, list[int]],
        hosts: list[int],
        senders: list[int],
        entries: dict[int, list[int]],
        num_parts: int,
        relay: bool,
        dry: bool,
    ) -> float:
        """Route the item as `num_parts` equal parts; return the estimated finish time.

        With `dry`, loads are restored afterwards and no move is kept."""
        saved_load, saved_len = self.load.copy(), len(self.moves)
        part_pieces: list[list[Piece]] = [[] for _ in range(num_parts)]
        for piece in item.pieces:
            for j, part in enumerate(split_piece(piece, [1.0] * num_parts)):
                if part is not None:
                    part_pieces[j].append(part)
        finish = 0.0
        for j, pieces in enumerate(part_pieces):
            if not pieces:
                continue
            num_bytes = sum(self.problem.piece_bytes(p) for p in pieces)
            src = senders[j % len(senders)]
            if relay:
                chain = [entries[h][j % len(entries[h])] for h in hosts]
            else:
                chain = [d for h in hosts for d in remote[h]]
            if len(senders) > 1 and num_parts == 1:
                src = min(senders, key=lambda s: self._finish(s, chain, num_bytes))
            finish = max(finish, self._finish(src, chain, num_bytes))
            inter = self._book(src, chain, pieces, num_bytes)
            if relay:
                for h, entry in zip(hosts, chain, strict=True):
                    others = [d for d in remote[h] if d != entry]
                    if others:
                        finish = max(finish, self._finish(entry, others, num_bytes))
                        self._book(entry, others, pieces, num_bytes, deps=[inter])
        if dry:
            self.load = saved_load
            del self.moves.moves[saved_len:]
        return finish


def greedy(problem: Problem, options: SolveOptions) -> SolveResult:
    router = Router(problem)
    for item in coalesce(problem):
        router.route(item)
    moves = router.moves.moves
    num_ports = problem.topology.num_ports
    schedule = best_schedule(moves, num_ports)
    fallback = broadcast_lb(problem, options)
    fallback_makespan = in_order(fallback.moves, num_ports, fallback.order).makespan_s
    if fallback_makespan < schedule.makespan_s:
        return SolveResult(fallback.moves, fallback.order, notes=["broadcast-lb was shorter"])
    return SolveResult(moves, schedule.order)
