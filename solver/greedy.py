"""meshcast's topology-aware greedy (DESIGN §4).

1. Coalesce: tiles with the same holders and needers travel as one item (one message); small
   items with the same holders and receiving hosts are also tried as one bundle.
2. Route, largest item first, against the seconds of work already booked on every port:
   - needers on a host that holds the item get it over NVLink from the least-busy local
     holder (or from all local holders, needers shared round-robin, when that finishes first);
   - the other hosts get it by one pipelined chain from the holder whose send rail and whose
     entry rails finish it first; on multi-rail hosts with several needers the chain stops at
     one entry device per host, which relays inside the host (store and forward, NVLink only);
   - an item that alone would keep a rail busy for a large share of the bound is also tried
     split across senders and entry rails, each part all-gathered inside every receiving host;
     the split is kept when it finishes the item at least 1% sooner; on small components the
     whole routing is also tried with splits sent through one entry (`variants`).
3. Order: non-delay list schedules under port-v1 with a few priority rules, the best kept.
4. Independent components (no shared host) are planned apart; identical ones (a pipeline
   boundary's host pairs) once, the others returned as its copies (`SolveResult.copies`).
5. Never worse than `broadcast-lb` or `sendrecv`: a shorter one of those is returned instead
   (tried on one component of each kind when components repeat, on all only when shorter).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from meshcast.planner.bulk import collection_paused
from meshcast.planner.plan import SolveStatus
from meshcast.planner.problem import Problem
from meshcast.solver.base import SolveOptions, SolveResult
from meshcast.solver.baselines import broadcast_lb, sendrecv
from meshcast.solver.budget import moves_per_kind
from meshcast.solver.components import Component, assemble, components, first_of_kind
from meshcast.solver.items import Item, bundle, coalesce
from meshcast.solver.recipes import Breadth, Job, MoveSpec, Ranking, Recipe, item_jobs, rail_filling
from meshcast.solver.routing import Routing, to_result

#: a split must finish the item this much sooner than the best unsplit route
SPLIT_GAIN = 0.99
#: the greedy tries splits only for items that keep a rail busy this share of the lower bound
#: (the solvers, which can afford more recipes, from `recipes.SPLIT_SHARE`)
GREEDY_SPLIT_SHARE = 0.5
#: routing passes after the first, and the item count above which they are skipped
REROUTE_PASSES = 2
REROUTE_MAX_ITEMS = 2000
#: the baselines the greedy must not lose to are planned up to this many tiles (beyond, a
#: message per tile costs more to plan and simulate than the greedy itself)
BASELINE_MAX_TILES = 20_000
#: items shorter than this many latencies on a NIC are also tried bundled (see `bundle`)
BUNDLE_LATENCIES = 40.0
#: the greedy router's breadth, and with a move per remote host
GREEDY = Breadth(narrow=True, per_host=False, split_share=GREEDY_SPLIT_SHARE, through=True)
PER_HOST = replace(GREEDY, per_host=True)
#: without splits: the fewest moves, for plans that must be built within a time limit
UNSPLIT = replace(GREEDY, split_parts=())
#: components of at most this many items also try splits through one entry, in these parts
PIPELINE_MAX_ITEMS = 64
PIPELINE_PARTS = (4, 8)


class Router:
    """Chooses one recipe per job of every item, booking its work on the ports.

    The recipes are `solver.recipes.item_jobs`'s, enumerated narrowly with the router's
    ranking (least-loaded send and receive rails first); the router's heuristics are scores
    over them (`best`, and `SPLIT_GAIN` for splits)."""

    def __init__(self, problem: Problem, breadth: Breadth = GREEDY) -> None:
        self.problem = problem
        self.topo = problem.topology
        self.load = np.zeros(self.topo.num_ports)
        self.breadth = breadth
        self.ranking = Ranking(self._sender_load, self._entry_load)

    def _sender_load(self, device: int) -> float:
        topo = self.topo
        return float(self.load[topo.send_port(topo.host_of[device], topo.rail_of[device])])

    def _entry_load(self, host: int, device: int) -> float:
        return float(self.load[self.topo.recv_port(host, self.topo.rail_of[device])])

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

    def book(self, recipe: Recipe, sign: float = 1.0) -> Recipe:
        """Add (or with `sign=-1`, take back) the recipe's work on its ports."""
        for spec in recipe.moves:
            for p in spec.ports:
                self.load[p] += sign * spec.duration_s
        return recipe

    def best(self, recipes: Sequence[Recipe]) -> Recipe:
        """The recipe with fewest moves among those that finish within what the plan must take
        anyway (the lower bound, or the busiest port so far); else the one finishing first."""
        if len(recipes) == 1:
            return recipes[0]
        target = max(self.problem.lower_bound_s, float(self.load.max())) * (1 + 1e-9)

        def key(recipe: Recipe) -> tuple[int, float, float]:
            finish = self.finish_s(recipe.moves)
            return (0, len(recipe.moves), finish) if finish <= target else (1, finish, 0.0)

        return min(recipes, key=key)

    def choose(self, job: Job) -> Recipe:
        """The best unsplit relayed recipe; a split one, or a chain through every needer, only
        when it finishes the item `SPLIT_GAIN` sooner."""
        unsplit = [r for r in job.recipes if r.num_parts == 1 and not r.through]
        chosen = self.best(unsplit)
        splits = [r for r in job.recipes if r.num_parts > 1 or r.through]
        if splits:
            split = self.best([chosen, *splits])
            if self.finish_s(split.moves) < self.finish_s(chosen.moves) * SPLIT_GAIN:
                return split
        return chosen

    def route(self, index: int, item: Item) -> list[tuple[Job, Recipe]]:
        """Each job of the item (local hosts in order, then the remote hosts) with the recipe
        chosen for it, booked."""
        jobs = item_jobs(self.problem, index, item, self.ranking, self.breadth)
        return [(job, self.book(self.choose(job))) for job in jobs]


def route_all(
    problem: Problem,
    items: Sequence[Item],
    breadth: Breadth = GREEDY,
    deadline: float | None = None,
) -> list[list[tuple[Job, Recipe]]]:
    """The greedy's recipe for every job of every item.

    After the first pass every item is routed again against the load of all the others (its
    own taken off), so early items that grabbed idle rails give them back when later items need
    them more; this stops when a pass changes nothing, or at the `deadline` (perf_counter).
    """
    router = Router(problem, breadth)
    chosen = [router.route(i, item) for i, item in enumerate(items)]
    passes = REROUTE_PASSES if len(items) <= REROUTE_MAX_ITEMS else 0
    for _ in range(passes):
        if _past(deadline):
            break
        changed = False
        for i, item in enumerate(items):
            for _, recipe in chosen[i]:
                router.book(recipe, sign=-1.0)
            again = router.route(i, item)
            changed |= [r for _, r in again] != [r for _, r in chosen[i]]
            chosen[i] = again
        if not changed:
            break
    return chosen


def greedy_routing(
    problem: Problem,
    items: Sequence[Item],
    breadth: Breadth = GREEDY,
    deadline: float | None = None,
) -> Routing:
    """The router's recipes as a routing (each item whole on its recipe)."""
    routed = route_all(problem, items, breadth, deadline)
    return Routing([[(r, 1.0)] for per_item in routed for _, r in per_item])


def _past(deadline: float | None) -> bool:
    return deadline is not None and time.perf_counter() > deadline


@dataclass(frozen=True)
class _Solved:
    """A component's best greedy routing (with its schedule's order) and which items it routes."""

    routing: Routing
    bundled: bool
    makespan_s: float
    num_moves: int

    def better_than(self, other: _Solved | None, max_moves: int | None) -> bool:
        """Shorter, among routings of at most `max_moves` moves; fewer moves, beyond."""
        if other is None:
            return True
        if max_moves is not None and max(self.num_moves, other.num_moves) > max_moves:
            return self.num_moves < other.num_moves
        return self.makespan_s < other.makespan_s


def _component_items(problem: Problem, items: list[Item], bundled: bool) -> list[Item]:
    return bundle(problem, items, BUNDLE_LATENCIES) if bundled else items


def variants(problem: Problem, items: Sequence[Item]) -> list[Breadth]:
    """The router's breadths worth trying on a component: the greedy's; on components of at
    most `REROUTE_MAX_ITEMS` items also a move per remote host; on components of at most
    `PIPELINE_MAX_ITEMS` items with items that keep a rail busy, also splits in each of
    `PIPELINE_PARTS` parts through one entry (when every host gathers such items, the relay
    tail after the NIC shrinks with the part size, which a router scoring one item at a time
    does not see)."""
    found = [GREEDY]
    if len(items) <= REROUTE_MAX_ITEMS:
        found.append(PER_HOST)
    if len(items) <= PIPELINE_MAX_ITEMS and any(
        rail_filling(problem, item, GREEDY.split_share) for item in items
    ):
        found += [replace(GREEDY, split_parts=(n,), one_entry=True) for n in PIPELINE_PARTS]
    return found


def _solve(
    problem: Problem, items: list[Item], deadline: float | None, max_moves: int | None = None
) -> _Solved:
    """Route and list-schedule one component's items with each of its `variants`, also with
    its small items bundled; the shortest wins. Past the `deadline` only the first of these is
    made, in one routing pass. With `max_moves`, routings with more moves lose to those with
    fewer, and when the best still has too many, one without splits is made, even past the
    deadline (the cheaper construction)."""
    sets = [(False, items)]
    bundled_items = _component_items(problem, items, True)
    if len(bundled_items) < len(items):
        sets.append((True, bundled_items))
    best: _Solved | None = None
    for bundled, its in sets:
        for breadth in variants(problem, its):
            if best is not None and _past(deadline):
                break
            found = _routed(problem, its, bundled, breadth, deadline)
            if found.better_than(best, max_moves):
                best = found
    assert best is not None
    if max_moves is not None and best.num_moves > max_moves:
        found = _routed(problem, items, False, UNSPLIT, deadline)
        if found.better_than(best, max_moves):
            best = found
    return best


def _routed(
    problem: Problem, items: list[Item], bundled: bool, breadth: Breadth, deadline: float | None
) -> _Solved:
    routing = greedy_routing(problem, items, breadth, deadline)
    result = to_result(problem, items, routing)
    ordered = replace(routing, order=tuple(result.order))
    return _Solved(ordered, bundled, result.makespan_s, len(result.moves))


def greedy(problem: Problem, options: SolveOptions) -> SolveResult:
    """The greedy plan of every independent component (identical components are solved once
    and its moves copied), unless `broadcast-lb` or `sendrecv` is shorter.

    With a deadline in `options` (as `auto` gives it), the variants, routing passes and
    baselines not started by then are skipped: the first routing pass is the cheap plan."""
    with collection_paused():
        return _greedy(problem, options)


def _greedy(problem: Problem, options: SolveOptions) -> SolveResult:
    deadline = options.deadline
    items = coalesce(problem)
    comps = components(problem, items)
    solved: dict[tuple[object, ...], _Solved] = {}
    copies = Counter(comp.signature for comp in comps)

    def routed(comp: Component) -> tuple[list[Item], Routing]:
        comp_items = [items[i] for i in comp.items]
        if comp.signature not in solved:
            # each kind of component gets an equal share of the budget: its moves are checked
            # once, and written again for each copy
            most = None
            if options.max_moves is not None:
                most = moves_per_kind(options.max_moves, len(copies), copies[comp.signature])
            solved[comp.signature] = _solve(problem, comp_items, deadline, most)
        found = solved[comp.signature]
        return _component_items(problem, comp_items, found.bundled), found.routing

    plan = assemble(problem, comps, routed)
    # components share no port: the plan takes as long as its longest component
    makespan = max((found.makespan_s for found in solved.values()), default=0.0)
    notes = (f"{len(comps)} component(s), {len(solved)} distinct",) if len(comps) > 1 else ()
    best = SolveResult(
        plan.moves, plan.order, makespan, SolveStatus.HEURISTIC, None, notes, plan.copies
    )
    # identical components get the same baseline plan too: one of each kind tells
    tile_ids = _first_of_kind_tiles(problem, comps) if len(solved) < len(comps) else None
    if len(problem.tiles if tile_ids is None else tile_ids) > BASELINE_MAX_TILES:
        return best
    for name, baseline in (("broadcast-lb", broadcast_lb), ("sendrecv", sendrecv)):
        if _past(deadline):
            break
        result = baseline(problem, options, tile_ids)
        if result.makespan_s < makespan and tile_ids is not None:
            result = baseline(problem, options)
        if result.makespan_s < makespan:
            best, makespan = result.noted(f"{name} was shorter"), result.makespan_s
    return best


def _first_of_kind_tiles(problem: Problem, comps: Sequence[Component]) -> list[int]:
    """The tiles of the first component of each kind (by their first holder's host)."""
    hosts = [h for comp in first_of_kind(comps).values() for h in comp.hosts]
    tiles, host_of = problem.tiles, problem.topology.host_of
    set_host = np.array([host_of[ds[0]] if ds else -1 for ds in tiles.device_sets], dtype=np.int64)
    return np.flatnonzero(np.isin(set_host[tiles.holders], hosts)).tolist()
