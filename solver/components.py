"""Independent components of a request, and which of them are identical.

Items that share no host share no port, so they can be planned separately: a component is a
connected set of hosts (linked by the holders and needers of some item) with its items.
Two components are identical when, relabelling each one's hosts in increasing order and every
device by (host rank, position on host), they have the same hosts, the same destination-mesh
devices and the same items (bytes, holders, needers and piece shapes); the moves planned for
one are then copied onto the other (`assemble`, as `planner.replicas.Replicas`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from meshcast.planner.problem import Problem
from meshcast.planner.replicas import Copy, Replicas
from meshcast.solver.items import Item
from meshcast.solver.moves import Move, MoveList
from meshcast.solver.routing import Routing, realize

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


def first_of_kind(comps: Sequence[Component]) -> dict[tuple[object, ...], Component]:
    """The first component of each kind (signature), in order."""
    first: dict[tuple[object, ...], Component] = {}
    for comp in comps:
        first.setdefault(comp.signature, comp)
    return first


def copy_of(solved: Component, target: Component, target_items: Sequence[Item]) -> Copy:
    """The identical component `target` as a copy of `solved`: devices by label, and each
    piece of each of `solved`'s items to the corresponding piece of `target`'s."""
    by_label = target.devices_by_label()
    return Copy(
        {d: by_label[label] for d, label in solved.label_of.items()},
        tuple(piece for item in target_items for piece in item.pieces),
    )


@dataclass
class Assembled:
    """Moves of the first component of each kind, their execution order, and the other
    components as copies of them (`Replicas` over move indices)."""

    moves: list[Move]
    order: list[int]
    copies: list[Replicas]


def assemble(
    problem: Problem,
    comps: Sequence[Component],
    routed: Callable[[Component], tuple[Sequence[Item], Routing]],
) -> Assembled:
    """Every component's moves and execution order, components one after the other.

    `routed(comp)` gives the items a component's routing refers to and the routing (with its
    order). The first component of each kind is realised; the identical ones after it are its
    copies (what planning them again would give, relabelled)."""
    moves = MoveList(problem)
    order: list[int] = []
    first: dict[tuple[object, ...], tuple[Component, Sequence[Item], range]] = {}
    copies: dict[tuple[object, ...], list[Copy]] = {}
    for comp in comps:
        items, routing = routed(comp)
        assert routing.order is not None
        if comp.signature in first:
            copies[comp.signature].append(copy_of(first[comp.signature][0], comp, items))
            continue
        offset = len(moves)
        realize(problem, items, routing.shares, moves)
        first[comp.signature] = (comp, items, range(offset, len(moves)))
        copies[comp.signature] = []
        order.extend(offset + k for k in routing.order)
    replicas = [
        Replicas(
            tuple(span),
            tuple(piece for item in solved_items for piece in item.pieces),
            tuple(copies[sig]),
        )
        for sig, (_, solved_items, span) in first.items()
        if copies[sig]
    ]
    return Assembled(moves.moves, order, replicas)
