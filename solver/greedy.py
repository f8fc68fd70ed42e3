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
     the split is kept when it finishes the item at least 1% sooner.
3. Order: non-delay list schedules under port-v1 with a few priority rules, the best kept.
4. Independent components (no shared host) are planned apart; identical ones (a pipeline
   boundary's host pairs) once, their moves and order copied onto the others.
5. Never worse than `broadcast-lb` or `sendrecv`: a shorter one of those is returned instead.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from planner.bulk import collection_paused
from planner.plan import SolveStatus
from planner.problem import Problem
from solver.base import SolveOptions, SolveResult
from solver.baselines import broadcast_lb, sendrecv
from solver.components import Component, assemble, components
from solver.items import Item, bundle, coalesce
from solver.recipes import Breadth, Job, MoveSpec, Ranking, Recipe, item_jobs
from solver.routing import Routing, result_makespan_s, to_result

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


class Router:
    """Chooses one recipe per job of every item, booking its work on the ports.

    The recipes are `solver.recipes.item_jobs`'s, enumerated narrowly with the router's
    ranking (least-loaded send and receive rails first); the router's heuristics are scores
    over them (`best`, and `SPLIT_GAIN` for splits)."""

    def __init__(self, problem: Problem, per_host: bool = False) -> None:
        self.problem = problem
        self.topo = problem.topology
        self.load = np.zeros(self.topo.num_ports)
        self.breadth = Breadth(
            narrow=True, per_host=per_host, split_share=GREEDY_SPLIT_SHARE, through=True
        )
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
    problem: Problem, items: Sequence[Item], per_host: bool = False, deadline: float | None = None
) -> list[list[tuple[Job, Recipe]]]:
    """The greedy's recipe for every job of every item.

    After the first pass every item is routed again against the load of all the others (its
    own taken off), so early items that grabbed idle rails give them back when later items need
    them more; this stops when a pass changes nothing, or at the `deadline` (perf_counter).
    """
    router = Router(problem, per_host)
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
    problem: Problem, items: Sequence[Item], per_host: bool = False, deadline: float | None = None
) -> Routing:
    """The router's recipes as a routing (each item whole on its recipe)."""
    routed = route_all(problem, items, per_host, deadline)
    return Routing([[(r, 1.0)] for per_item in routed for _, r in per_item])


def _past(deadline: float | None) -> bool:
    return deadline is not None and time.perf_counter() > deadline


@dataclass
class _Solved:
    """A component's best greedy routing (with its schedule's order) and which items it routes."""

    routing: Routing
    bundled: bool
    makespan_s: float


def _component_items(problem: Problem, items: list[Item], bundled: bool) -> list[Item]:
    return bundle(problem, items, BUNDLE_LATENCIES) if bundled else items


def _solve(problem: Problem, items: list[Item], deadline: float | None) -> _Solved:
    """Route and list-schedule one component's items, also with its small items bundled and,
    on small components, with a move per remote host allowed; the shortest wins. Past the
    `deadline` only the first of these is made, in one routing pass."""
    sets = [(False, items)]
    bundled_items = _component_items(problem, items, True)
    if len(bundled_items) < len(items):
        sets.append((True, bundled_items))
    variants = (False, True) if len(items) <= REROUTE_MAX_ITEMS else (False,)
    best: _Solved | None = None
    for bundled, its in sets:
        for per_host in variants:
            if best is not None and _past(deadline):
                return best
            routing = greedy_routing(problem, its, per_host, deadline)
            result = to_result(problem, its, routing)
            routing.order = list(result.order)
            makespan = result_makespan_s(problem, result)
            if best is None or makespan < best.makespan_s:
                best = _Solved(routing, bundled, makespan)
    assert best is not None
    return best


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

    def routed(comp: Component) -> tuple[list[Item], Routing]:
        comp_items = [items[i] for i in comp.items]
        if comp.signature not in solved:
            solved[comp.signature] = _solve(problem, comp_items, deadline)
        found = solved[comp.signature]
        return _component_items(problem, comp_items, found.bundled), found.routing

    moves, order = assemble(problem, comps, routed)
    makespan = max((found.makespan_s for found in solved.values()), default=0.0)
    notes = [f"{len(comps)} component(s), {len(solved)} distinct"] if len(comps) > 1 else []
    best = SolveResult(moves, order, SolveStatus.HEURISTIC, None, notes)
    if len(problem.tiles) > BASELINE_MAX_TILES:
        return best
    for name, baseline in (("broadcast-lb", broadcast_lb), ("sendrecv", sendrecv)):
        if _past(deadline):
            break
        result = baseline(problem, options)
        if result_makespan_s(problem, result) < makespan:
            best, makespan = result, result_makespan_s(problem, result)
            best.notes.append(f"{name} was shorter")
    return best
