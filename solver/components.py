"""Independent components of a request, and which of them are identical.

Items that share no host share no port, so they can be planned separately: a component is a
connected set of hosts (linked by the holders and needers of some item) with its items.
Two components are identical when, relabelling each one's hosts in increasing order and every
device by (host rank, position on host), they have the same hosts, the same destination-mesh
devices and the same items (bytes, holders, needers and piece shapes); a routing found for one
is then replayed on the other (`replay`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from planner.boxes import contains
from planner.plan import Piece
from planner.problem import Problem
from solver.items import Item
from solver.moves import Move
from solver.recipes import MoveSpec, Recipe, move_spec
from solver.routing import Routing, Share

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


def replay(
    problem: Problem,
    items: Sequence[Item],
    routing: Routing,
    solved: Component,
    target: Component,
) -> Routing:
    """`routing`, found for `solved`, mapped onto the identical component `target`.

    Recipes index items by position in their component, so `items` is `target`'s own list
    (`target.items` in order), which pairs position by position with `solved`'s."""
    devices = target.devices_by_label()

    def device(d: int) -> int:
        return devices[solved.label_of[d]]

    def spec(s: MoveSpec, item: Item, parts: int) -> MoveSpec:
        only_for = None if s.only_for is None else device(s.only_for)
        dst = [device(d) for d in s.dst]
        return move_spec(problem, item, parts, device(s.src), dst, s.part, s.deps, only_for)

    shares: list[list[Share]] = []
    for job in routing.shares:
        mapped = []
        for recipe, fraction in job:
            item = items[recipe.item]
            moves = tuple(spec(s, item, recipe.num_parts) for s in recipe.moves)
            mapped.append((Recipe(recipe.item, recipe.num_parts, moves), fraction))
        shares.append(mapped)
    return Routing(
        shares, list(routing.order) if routing.order is not None else None, routing.status
    )


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
