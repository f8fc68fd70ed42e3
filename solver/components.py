"""Independent components of a request, and which of them are identical.

Items that share no host share no port, so they can be planned separately: a component is a
connected set of hosts (linked by the holders and needers of some item) with its items.
Two components are identical when, relabelling each one's hosts in increasing order and every
device by (host rank, position on host), they have the same hosts, the same destination-mesh
devices and the same items (bytes, holders, needers and piece shapes); the moves planned for
one are then copied onto the other (`replay_moves`, `assemble`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from planner.boxes import contains
from planner.plan import Piece
from planner.problem import Problem
from solver.items import Item
from solver.moves import Move, MoveList
from solver.routing import Routing, realize

Label = tuple[int, int]  # (host rank in the component, position on the host)


@dataclass(frozen=True)
class Component:
    """Item indices (into the request's items, canonically ordered) and the device relabelling."""

    items: tuple[int, ...]
    hosts: tuple[int, ...]
    label_of: dict[int, Label]
    signature: tuple[object, ...]

    def devices_by_label(self) -> dict[Label, int]:
        return {label: d for d, label in self.label_of.items()}


def _find(parent: list[int], x: int) -> int:
    while parent[x] != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x


def components(problem: Problem, items: Sequence[Item]) -> list[Component]:
    """The request's independent components, in order of their first item."""
    topo = problem.topology
    parent = list(range(topo.num_hosts))
    for item in items:
        hosts = [topo.host_of[d] for d in (*item.holders, *item.needers)]
        for h in hosts[1:]:
            a, b = _find(parent, hosts[0]), _find(parent, h)
            if a != b:
                parent[b] = a
    groups: dict[int, list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(_find(parent, topo.host_of[item.holders[0]]), []).append(i)
    hosts_of_root: dict[int, list[int]] = {}
    for h in range(topo.num_hosts):
        hosts_of_root.setdefault(_find(parent, h), []).append(h)
    out = []
    for members in groups.values():
        root = _find(parent, topo.host_of[items[members[0]].holders[0]])
        comp_hosts = tuple(hosts_of_root[root])
        label_of = {
            d: (rank, pos)
            for rank, h in enumerate(comp_hosts)
            for pos, d in enumerate(topo.devices_of_host[h])
        }

        def describe(i: int, label_of: dict[int, Label] = label_of) -> tuple[object, ...]:
            item = items[i]
            shapes = tuple(tuple(hi - lo for lo, hi in p.box) for p in item.pieces)
            return (
                item.num_bytes,
                tuple(sorted(label_of[d] for d in item.holders)),
                tuple(sorted(label_of[d] for d in item.needers)),
                shapes,
            )

        ordered = tuple(sorted(members, key=describe))
        layout = tuple(
            tuple(d in problem.dst_devices for d in topo.devices_of_host[h]) for h in comp_hosts
        )
        signature = (layout, tuple(describe(i) for i in ordered))
        out.append(Component(ordered, comp_hosts, label_of, signature))
    return out


def replay_moves(
    problem: Problem,
    moves: Sequence[Move],
    move_items: Sequence[int],
    solved_items: Sequence[Item],
    target_items: Sequence[Item],
    solved: Component,
    target: Component,
    shift: int,
) -> list[Move]:
    """`moves`, realised for `solved` (move k carries part of `solved_items[move_items[k]]`),
    as the same moves of the identical component `target`: devices and ports relabelled,
    every piece moved by the offset between the two items' corresponding pieces, and
    dependencies shifted by `shift`. Bytes and durations are the same (the components are
    identical, and so are their hosts' rails)."""
    topo = problem.topology
    by_label = target.devices_by_label()
    device = {d: by_label[label] for d, label in solved.label_of.items()}
    host = dict(zip(solved.hosts, target.hosts, strict=True))
    nic_ports, rails = topo.num_nic_ports, topo.num_rails
    devices_by_index = list(topo.device_index)
    ports: dict[int, int] = {}

    def port(p: int) -> int:
        if p not in ports:
            if p < 2 * nic_ports:
                kind, rest = divmod(p, nic_ports)
                h, rail = divmod(rest, rails)
                ports[p] = kind * nic_ports + host[h] * rails + rail
            else:
                index, side = divmod(p - 2 * nic_ports, 2)
                mapped = topo.device_index[device[devices_by_index[index]]]
                ports[p] = 2 * nic_ports + 2 * mapped + side
        return ports[p]

    out = []
    for move, k in zip(moves, move_items, strict=True):
        pairs = tuple(zip(solved_items[k].pieces, target_items[k].pieces, strict=True))
        out.append(
            Move(
                device[move.src],
                tuple(device[d] for d in move.dst),
                tuple(_moved(piece, pairs) for piece in move.pieces),
                move.num_bytes,
                move.duration_s,
                tuple(port(p) for p in move.ports),
                tuple(d + shift for d in move.deps),
            )
        )
    return out


def _moved(piece: Piece, pairs: Sequence[tuple[Piece, Piece]]) -> Piece:
    """`piece`, inside the first of its item's pieces, at the same place in the other item's
    corresponding piece."""
    for source, target in pairs:
        if source.tensor == piece.tensor and contains(source.box, piece.box):
            box = tuple(
                (lo - s_lo + t_lo, hi - s_lo + t_lo)
                for (lo, hi), (s_lo, _), (t_lo, _) in zip(
                    piece.box, source.box, target.box, strict=True
                )
            )
            return Piece(target.tensor, box)
    raise ValueError(f"piece {piece} is in none of its item's pieces")


def assemble(
    problem: Problem,
    comps: Sequence[Component],
    routed: Callable[[Component], tuple[Sequence[Item], Routing]],
) -> tuple[list[Move], list[int]]:
    """Every component's moves and execution order, components one after the other.

    `routed(comp)` gives the items a component's routing refers to and the routing (with its
    order). The first component of each kind is realised; the identical ones after it copy
    its moves (`replay_moves`), which is what planning them again would give."""
    moves = MoveList(problem)
    order: list[int] = []
    first: dict[tuple[object, ...], tuple[Component, Sequence[Item], int, list[int]]] = {}
    for comp in comps:
        items, routing = routed(comp)
        assert routing.order is not None
        offset = len(moves)
        if comp.signature not in first:
            per_job = realize(problem, items, routing.shares, moves)
            move_items = [0] * (len(moves) - offset)
            for shares, indices in zip(routing.shares, per_job, strict=True):
                for k in (k for per_share in indices for k in per_share if k >= 0):
                    move_items[k - offset] = shares[0][0].item
            first[comp.signature] = (comp, items, offset, move_items)
        else:
            solved, solved_items, start, move_items = first[comp.signature]
            copied = moves.moves[start : start + len(move_items)]
            moves.moves.extend(
                replay_moves(
                    problem, copied, move_items, solved_items, items, solved, comp, offset - start
                )
            )
        order.extend(offset + k for k in routing.order)
    return moves.moves, order
