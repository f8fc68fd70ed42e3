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
from collections.abc import Sequence
from dataclasses import dataclass

from planner.cost import transfer_cost
from planner.plan import Piece
from planner.problem import Problem
from solver.items import Item
from solver.moves import MoveList, split_piece

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


@dataclass(frozen=True)
class Recipe:
    """One way to do one job of item `item`: its moves, the item cut in `num_parts` slices."""

    item: int
    num_parts: int
    moves: tuple[MoveSpec, ...]


@dataclass(frozen=True)
class Job:
    """One decision: exactly one of `recipes` is used."""

    item: int
    recipes: tuple[Recipe, ...]


def move_spec(
    problem: Problem,
    item: Item,
    num_parts: int,
    src: int,
    dst: Sequence[int],
    part: int = 0,
    deps: Sequence[int] = (),
) -> MoveSpec:
    duration, ports = transfer_cost(problem.topology, -(-item.num_bytes // num_parts), src, dst)
    return MoveSpec(src, tuple(dst), part, tuple(deps), duration, ports)


def relay_specs(
    problem: Problem,
    item: Item,
    num_parts: int,
    part: int,
    inter: int,
    entries: dict[int, int],
    remote: dict[int, list[int]],
) -> list[MoveSpec]:
    """Moves from each host's entry device to the other needers of that host."""
    out = []
    for h, entry in entries.items():
        others = [d for d in remote[h] if d != entry]
        if others:
            out.append(move_spec(problem, item, num_parts, entry, others, part, deps=[inter]))
    return out


def needers_by_host(problem: Problem, devices: Sequence[int]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = defaultdict(list)
    for d in devices:
        out[problem.topology.host_of[d]].append(d)
    return dict(sorted(out.items()))


def local_recipes(problem: Problem, index: int, item: Item, host: int) -> list[Recipe]:
    """Chains from each local holder, and the needers shared round-robin by all holders."""
    holders = [s for s in item.holders if problem.topology.host_of[s] == host][:MAX_SENDERS]
    needers = [d for d in item.needers if problem.topology.host_of[d] == host]
    recipes = [Recipe(index, 1, (move_spec(problem, item, 1, s, needers),)) for s in holders]
    if len(holders) > 1 and len(needers) > 1:
        groups = [needers[k :: len(holders)] for k in range(len(holders))]
        specs = tuple(
            move_spec(problem, item, 1, s, group)
            for s, group in zip(holders, groups, strict=False)
            if group
        )
        recipes.append(Recipe(index, 1, specs))
    return recipes


def senders(problem: Problem, item: Item) -> list[int]:
    """One holder per send port (host, rail)."""
    topo = problem.topology
    by_port: dict[tuple[int, int], int] = {}
    for s in item.holders:
        by_port.setdefault((topo.host_of[s], topo.rail_of[s]), s)
    return list(by_port.values())


def entry_options(problem: Problem, host: int, needers: list[int]) -> list[int]:
    """One entry device per rail of `host`: a needer on that rail when there is one, else any
    destination-mesh device on it (which then relays)."""
    topo = problem.topology
    best: dict[int, int] = {}
    for d in needers:
        best.setdefault(topo.rail_of[d], d)
    if topo.num_rails > 1:
        for d in topo.devices_of_host[host]:
            if d in problem.dst_devices:
                best.setdefault(topo.rail_of[d], d)
    return [best[r] for r in sorted(best)]


def remote_recipes(
    problem: Problem, index: int, item: Item, remote: dict[int, list[int]]
) -> list[Recipe]:
    """Chains from every sender; on multi-rail hosts one per entry rail (the same rail index on
    every host, or the needer's own rail), with relays; split recipes for large items."""
    topo = problem.topology
    sources = senders(problem, item)[:MAX_SENDERS]
    if topo.num_rails == 1:
        chain = [d for ds in remote.values() for d in ds]
        return [Recipe(index, 1, (move_spec(problem, item, 1, s, chain),)) for s in sources]
    options = {h: entry_options(problem, h, ds) for h, ds in remote.items()}
    layouts: list[dict[int, int]] = []
    for rail in range(topo.num_rails):
        layout = {
            h: next((d for d in opts if topo.rail_of[d] == rail), opts[0])
            for h, opts in options.items()
        }
        if layout not in layouts:
            layouts.append(layout)
    recipes = []
    for s in sources:
        for entries in layouts:
            inter = move_spec(problem, item, 1, s, list(entries.values()))
            recipes.append(
                Recipe(index, 1, (inter, *relay_specs(problem, item, 1, 0, 0, entries, remote)))
            )
    if item.num_bytes / topo.nic_bytes_per_s >= SPLIT_SHARE * problem.lower_bound_s:
        for parts in SPLIT_PARTS:
            if parts > len(layouts):
                break
            recipes.append(split_recipe(problem, index, item, remote, sources, layouts, parts))
    return recipes


def split_recipe(
    problem: Problem,
    index: int,
    item: Item,
    remote: dict[int, list[int]],
    sources: Sequence[int],
    layouts: Sequence[dict[int, int]],
    parts: int,
) -> Recipe:
    """`parts` slices, slice j from sources[j] through layouts[j], all-gathered per host."""
    moves: list[MoveSpec] = []
    for part in range(parts):
        entries = layouts[part % len(layouts)]
        inter_at = len(moves)
        src = sources[part % len(sources)]
        moves.append(move_spec(problem, item, parts, src, list(entries.values()), part))
        moves.extend(relay_specs(problem, item, parts, part, inter_at, entries, remote))
    return Recipe(index, parts, tuple(moves))


def item_jobs(problem: Problem, index: int, item: Item) -> list[Job]:
    """Every job of `item` with its alternative recipes: local hosts (sorted), then remote."""
    needers_on = needers_by_host(problem, item.needers)
    holder_hosts = {problem.topology.host_of[s] for s in item.holders}
    jobs = [
        Job(index, tuple(local_recipes(problem, index, item, h)))
        for h in needers_on
        if h in holder_hosts
    ]
    remote = {h: ds for h, ds in needers_on.items() if h not in holder_hosts}
    if remote:
        jobs.append(Job(index, tuple(remote_recipes(problem, index, item, remote))))
    return jobs


def materialize(
    problem: Problem, items: Sequence[Item], chosen: Sequence[Recipe], moves: MoveList
) -> list[list[int]]:
    """Add the moves of the chosen recipes to `moves`; return each recipe's move indices,
    -1 where a slice rounds to nothing and adds no move."""
    out = []
    for recipe in chosen:
        item = items[recipe.item]
        slices: list[list[Piece]] = [[] for _ in range(recipe.num_parts)]
        for piece in item.pieces:
            for part, cut in enumerate(split_piece(piece, [1.0] * recipe.num_parts)):
                if cut is not None:
                    slices[part].append(cut)
        indices: list[int] = []
        for spec in recipe.moves:
            pieces = slices[spec.part]
            if not pieces:
                indices.append(-1)
                continue
            num_bytes = sum(problem.piece_bytes(p) for p in pieces)
            deps = [indices[d] for d in spec.deps if indices[d] >= 0]
            indices.append(moves.add(spec.src, spec.dst, pieces, num_bytes, deps))
        out.append(indices)
    return out
