"""Recipes: the ways to deliver one item, shared by the greedy router and the optimizers.

An item reaches
  - each needer host that also holds it over NVLink, from local holders (a local job);
  - the other needer hosts by a chain from one holder (the remote job), entering every host on
    one rail; on multi-rail hosts the entry relays the data to the other needers of its host.
A `Recipe` is one way to do one job: a few moves, each carrying one of `num_parts` equal slices
of the item, relays depending on the move that brought their data. Split recipes send the
parts from several holders over several rails and all-gather them inside each receiving host.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from meshcast.planner.cost import transfer_cost
from meshcast.planner.problem import Problem
from meshcast.solver.items import Item

#: most senders tried per remote job
MAX_SENDERS = 8
SPLIT_PARTS = (2, 4, 8)
#: split recipes are offered for items that alone keep one rail busy this share of the bound
SPLIT_SHARE = 0.25


@dataclass(frozen=True)
class MoveSpec:
    """A move of a recipe: slice `part` of the item from `src` to `dst`, after the recipe's
    moves `deps`."""

    src: int
    dst: tuple[int, ...]
    part: int
    deps: tuple[int, ...]
    duration_s: float
    ports: tuple[int, ...]
    #: of a bundle, only the pieces this device needs
    only_for: int | None = None


@dataclass(frozen=True)
class Recipe:
    """One way to do one job of item `item`: its moves, the item cut in `num_parts` slices."""

    item: int
    num_parts: int
    moves: tuple[MoveSpec, ...]
    #: one chain through every needer of multi-rail hosts, pipelined over NVLink behind the
    #: NIC: no relay tail, but the NVLink ports are held as long as the NIC
    through: bool = False


#: the key of an item's remote job (local jobs are keyed by their host)
REMOTE = -1


@dataclass(frozen=True)
class Job:
    """One decision: exactly one of `recipes` is used. `key`: the holder host a local job
    serves, or `REMOTE`."""

    item: int
    recipes: tuple[Recipe, ...]
    key: int = REMOTE


def move_spec(
    problem: Problem,
    item: Item,
    num_parts: int,
    src: int,
    dst: Sequence[int],
    part: int = 0,
    deps: Sequence[int] = (),
    only_for: int | None = None,
) -> MoveSpec:
    num_bytes = item.num_bytes
    if only_for is not None and item.piece_needers is not None:
        num_bytes = sum(
            problem.piece_bytes(p)
            for p, owners in zip(item.pieces, item.piece_needers, strict=True)
            if only_for in owners
        )
    duration, ports = transfer_cost(problem.topology, -(-num_bytes // num_parts), src, dst)
    return MoveSpec(src, tuple(dst), part, tuple(deps), duration, ports, only_for)


def relay_specs(
    problem: Problem,
    item: Item,
    num_parts: int,
    part: int,
    inter: int,
    entries: dict[int, int],
    remote: dict[int, list[int]],
    fanout: bool = False,
) -> list[MoveSpec]:
    """Moves from each host's entry device to the other needers of that host: one NVLink
    chain through them all, or (`fanout`) one p2p move each, which holds only the entry's
    output and one input at a time."""
    out = []
    for h, entry in entries.items():
        others = [d for d in remote[h] if d != entry]
        if item.piece_needers is not None:  # a bundle: each device only its own pieces
            for d in others:
                out.append(move_spec(problem, item, num_parts, entry, [d], part, [inter], d))
            continue
        groups = [[d] for d in others] if fanout else [others] if others else []
        for group in groups:
            out.append(move_spec(problem, item, num_parts, entry, group, part, deps=[inter]))
    return out


def needers_by_host(problem: Problem, devices: Sequence[int]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = defaultdict(list)
    for d in devices:
        out[problem.topology.host_of[d]].append(d)
    return dict(sorted(out.items()))


def local_recipes(problem: Problem, index: int, item: Item, host: int) -> list[Recipe]:
    """A chain from each local holder; the needers shared round-robin by all holders, one chain
    each; and one p2p move per needer, holders taken round-robin."""
    holders = [s for s in item.holders if problem.topology.host_of[s] == host][:MAX_SENDERS]
    needers = [d for d in item.needers if problem.topology.host_of[d] == host]
    recipes = [Recipe(index, 1, (move_spec(problem, item, 1, s, needers),)) for s in holders]
    if len(needers) > 1:
        if len(holders) > 1:
            groups = [needers[k :: len(holders)] for k in range(len(holders))]
            shared = (
                move_spec(problem, item, 1, s, g)
                for s, g in zip(holders, groups, strict=False)
                if g
            )
            recipes.append(Recipe(index, 1, tuple(shared)))
        p2p = (
            move_spec(problem, item, 1, holders[k % len(holders)], [d])
            for k, d in enumerate(needers)
        )
        recipes.append(Recipe(index, 1, tuple(p2p)))
    return recipes


def senders(problem: Problem, item: Item) -> list[int]:
    """One holder per send port (host, rail)."""
    topo = problem.topology
    by_port: dict[tuple[int, int], int] = {}
    for s in item.holders:
        by_port.setdefault((topo.host_of[s], topo.rail_of[s]), s)
    return list(by_port.values())


def entry_options(problem: Problem, host: int, needers: list[int]) -> list[int]:
    """One entry device per rail of `host`, by rail: a needer on that rail when there is one,
    else any destination-mesh device on it (which then relays)."""
    topo = problem.topology
    best: dict[int, int] = {}
    for d in needers:
        best.setdefault(topo.rail_of[d], d)
    if topo.num_rails > 1:
        for d in topo.devices_of_host[host]:
            if d in problem.dst_devices:
                best.setdefault(topo.rail_of[d], d)
    return [best[r] for r in sorted(best)]


def delivery_recipe(
    problem: Problem,
    index: int,
    item: Item,
    remote: dict[int, list[int]],
    sources: Sequence[int],
    layouts: Sequence[dict[int, int]],
    parts: int = 1,
    relay: bool = True,
    fanout: bool = False,
    per_host: bool = False,
) -> Recipe:
    """The item cut in `parts` slices; slice j goes from `sources[j]` into every remote host
    through entry `layouts[j][host]`: by one chain across the hosts, or (`per_host`) by one
    move per host, the k-th from the next source. With `relay` a move stops at the entries,
    which pass the slice on inside their hosts; without, it runs through all needers."""
    groups = [[h] for h in remote] if per_host else [list(remote)]
    moves: list[MoveSpec] = []
    for part in range(parts):
        entries = layouts[part % len(layouts)]
        for k, hosts in enumerate(groups):
            src = sources[(part + k) % len(sources)]
            if not relay:
                chain = [d for h in hosts for d in sorted(remote[h], key=lambda d: d != entries[h])]
                moves.append(move_spec(problem, item, parts, src, chain, part))
                continue
            at = len(moves)
            reached = {h: entries[h] for h in hosts}
            moves.append(move_spec(problem, item, parts, src, list(reached.values()), part))
            moves.extend(relay_specs(problem, item, parts, part, at, reached, remote, fanout))
    return Recipe(index, parts, tuple(moves))


@dataclass(frozen=True)
class Ranking:
    """An order of preference among senders and entry devices (the greedy's: least-loaded
    port first). Without one, senders come in holder order and entries by rail."""

    sender_key: Callable[[int], float]
    #: (host, device) -> key; among equal keys, needers come before relays
    entry_key: Callable[[int, int], float]


@dataclass(frozen=True)
class Breadth:
    """How many alternatives an enumeration offers.

    `narrow` (the greedy's): unsplit recipes enter every host through its first entry option;
    otherwise through every rail's. `per_host`: also one move per remote host."""

    narrow: bool = False
    per_host: bool = True
    #: split recipes for items that keep a rail busy at least this share of the lower bound
    split_share: float = SPLIT_SHARE
    #: on multi-rail hosts also chains through all needers (`Recipe.through`)
    through: bool = False
    #: the part counts split recipes are offered in
    split_parts: tuple[int, ...] = SPLIT_PARTS
    #: split parts follow one another through the same entries (the relays of each part run
    #: behind the NIC while the next part arrives) instead of spreading over the entry rails
    one_entry: bool = False


def relay_styles(
    problem: Problem, remote: dict[int, list[int]], item: Item | None = None
) -> list[tuple[bool, bool]]:
    """(relay, fanout) pairs worth trying: bundles always relay, one move per device;
    single-rail hosts take the whole chain; multi-rail hosts relay from the entry, by chain or,
    with three or more needers, also by fan-out."""
    if item is not None and item.piece_needers is not None:
        return [(True, True)]
    if problem.topology.num_rails == 1:
        return [(False, False)]
    if all(len(ds) == 1 for ds in remote.values()):
        return [(True, False)]
    if any(len(ds) > 2 for ds in remote.values()):
        return [(True, False), (True, True)]
    return [(True, False)]


def _layouts(entries: dict[int, list[int]], count: int) -> list[dict[int, int]]:
    """Layout j enters every host through its j-th entry option (its first, when it has fewer),
    without repeats."""
    layouts: list[dict[int, int]] = []
    for j in range(count):
        layout = {h: e[j] if j < len(e) else e[0] for h, e in entries.items()}
        if layout not in layouts:
            layouts.append(layout)
    return layouts


def remote_recipes(
    problem: Problem,
    index: int,
    item: Item,
    remote: dict[int, list[int]],
    ranking: Ranking | None = None,
    breadth: Breadth = Breadth(),
) -> list[Recipe]:
    """Every way to deliver `item` to the hosts `remote` (needers by host) that hold none of it.

    Senders: one per send port, at most `MAX_SENDERS`, in `ranking` order. Entry layouts:
    layout j enters each host through its j-th entry option (`ranking` order, else by rail).
    Recipes: each sender x relay style x layout (relays enter through a layout, chains through
    the first needer of every host when all hosts have one needer or the breadth is narrow);
    with `per_host`, one move per host, the senders taking turns; with `breadth.through`, a
    chain through every needer from each sender (hosts of at most two needers); for items
    that keep a rail busy `breadth.split_share` of the bound, splits in `breadth.split_parts`
    parts (at most one per sender or entry rail), part j through layout j, or with
    `breadth.one_entry` every part through the first layout."""
    topo = problem.topology
    sources = senders(problem, item)
    entries = {h: entry_options(problem, h, ds) for h, ds in remote.items()}
    if ranking is not None:
        sources.sort(key=ranking.sender_key)
        for h, options in entries.items():
            needers = set(remote[h])
            keys = {d: (ranking.entry_key(h, d), d not in needers) for d in options}
            options.sort(key=keys.__getitem__)
    sources = sources[:MAX_SENDERS]
    direct = {h: next(d for d in e if d in remote[h]) for h, e in entries.items()}
    single = all(len(ds) == 1 for ds in remote.values())
    width = max(len(e) for e in entries.values())
    relayed = [direct] if single else _layouts(entries, 1 if breadth.narrow else width)
    styles = relay_styles(problem, remote, item)
    recipes = []
    for relay, fanout in styles:
        layouts = relayed if relay else [direct] if breadth.narrow else _layouts(entries, width)
        for layout in layouts:
            recipes += [
                delivery_recipe(problem, index, item, remote, [s], [layout], 1, relay, fanout)
                for s in sources
            ]
            if breadth.per_host and len(remote) > 1:
                recipes.append(
                    delivery_recipe(
                        problem, index, item, remote, sources, [layout], 1, relay, fanout, True
                    )
                )
    # a chain through one more needer per host holds one NVLink hop as long as the NIC;
    # through more it would hold most of the host's NVLink ports
    pairs = all(len(ds) <= 2 for ds in remote.values())
    if (
        breadth.through
        and topo.num_rails > 1
        and item.piece_needers is None
        and not single
        and pairs
    ):
        recipes += [
            replace(
                delivery_recipe(problem, index, item, remote, [s], [direct], 1, False),
                through=True,
            )
            for s in sources
        ]
    if rail_filling(problem, item, breadth.split_share):
        most = max(len(sources), min(len(e) for e in entries.values()))
        for parts in breadth.split_parts:
            if parts > most and not breadth.one_entry:
                break
            layouts = [{h: e[j % len(e)] for h, e in entries.items()} for j in range(parts)]
            if breadth.one_entry:
                layouts = relayed[:1] * parts
            for _, fanout in styles:
                recipes.append(
                    delivery_recipe(
                        problem, index, item, remote, sources, layouts, parts, True, fanout
                    )
                )
    return recipes


def rail_filling(problem: Problem, item: Item, share: float) -> bool:
    """Whether `item` alone keeps a NIC rail busy `share` of the lower bound (split recipes are
    offered for those)."""
    return item.num_bytes / problem.topology.nic_bytes_per_s >= share * problem.lower_bound_s


def item_jobs(
    problem: Problem,
    index: int,
    item: Item,
    ranking: Ranking | None = None,
    breadth: Breadth = Breadth(),
) -> list[Job]:
    """Every job of `item` with its alternative recipes: local hosts (sorted), then remote."""
    needers_on = needers_by_host(problem, item.needers)
    holder_hosts = {problem.topology.host_of[s] for s in item.holders}
    jobs = [
        Job(index, tuple(local_recipes(problem, index, item, h)), h)
        for h in needers_on
        if h in holder_hosts
    ]
    remote = {h: ds for h, ds in needers_on.items() if h not in holder_hosts}
    if remote:
        recipes = remote_recipes(problem, index, item, remote, ranking, breadth)
        jobs.append(Job(index, tuple(recipes), REMOTE))
    return jobs
