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

from planner.problem import Problem
from solver.items import Item
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
