"""Recipes (`solver/recipes.py`) and the greedy's choices among them, one family at a time.

For every family of recipes a small hand-made request where the greedy plan meets the lower
bound, and only that family can: the plan shows the family's transfers, and with the family
taken out of the enumeration (monkeypatched) the greedy misses the bound by a clear margin.
Most requests add a pacer: an independent host pair (or a message back the other way) moving
one message W whose time alone is the bound T, so the family's part only has to finish within
T, which lets relay tails and latencies stay off the bound and still decide the plan.

Units: 8 Gbit/s NICs move a megabyte (`MB` float32 elements) per millisecond; NVLink is 32
Gbit/s (4 MB per ms) unless a request says otherwise; latency is 0 unless it says otherwise.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from types import ModuleType
from typing import Any

import pytest

import meshcast.solver.greedy as greedy_module
import meshcast.solver.recipes as recipes
from meshcast.planner.boxes import contains, intersect, volume
from meshcast.planner.plan import Piece, Plan, Transfer
from meshcast.planner.problem import Problem
from meshcast.solver import SolveOptions, make_plan
from meshcast.solver.greedy import BUNDLE_LATENCIES, GREEDY, PER_HOST, route_all
from meshcast.solver.items import Item, bundle, coalesce
from meshcast.solver.moves import MoveList
from meshcast.solver.recipes import REMOTE, Breadth, Job, Recipe, item_jobs
from meshcast.solver.routing import realize
from tests.conftest import problem_of

#: float32 elements in a megabyte: 1 ms on an 8 Gbit/s NIC
MB = 250_000
#: a plan at the bound: its ratio within this of 1
AT_BOUND = 1e-9

#: (tensor name, float32 elements, holders, needers): one 1-D tensor, replicated on its
#: holders, needed whole by every needer
Spec = tuple[str, int, Sequence[int], Sequence[int]]


def make_request(
    specs: Sequence[Spec],
    hosts: Sequence[Sequence[int]],
    *,
    nics_per_host: int = 1,
    intra_gbps: float = 32.0,
    latency_us: float = 0.0,
) -> dict[str, Any]:
    """A request of one tensor per spec (each tile is then one item), on 8 Gbit/s NICs."""
    meshes: dict[str, dict[str, Any]] = {}

    def mesh(devices: Sequence[int]) -> str:
        name = "m" + "-".join(map(str, devices))
        meshes[name] = {"shape": [len(devices)], "devices": list(devices)}
        return name

    tensors = [
        {
            "name": name,
            "shape": [num_elements],
            "dtype": "float32",
            "src": {"mesh": mesh(holders), "placements": ["R"]},
            "dst": {"mesh": mesh(needers), "placements": ["R"]},
        }
        for name, num_elements, holders, needers in specs
    ]
    cluster = {
        "hosts": [list(h) for h in hosts],
        "nic_gbps": 8.0,
        "nics_per_host": nics_per_host,
        "intra_gbps": intra_gbps,
        "latency_us": latency_us,
        "duplex": "full",
    }
    return {"tensors": tensors, "meshes": meshes, "cluster": cluster}


def tensor_index(request: dict[str, Any], name: str) -> int:
    return next(i for i, t in enumerate(request["tensors"]) if t["name"] == name)


def greedy_plan(request: dict[str, Any]) -> Plan:
    return make_plan(problem_of(request), "greedy", SolveOptions())


def plan_at_bound(request: dict[str, Any], plancheck: ModuleType) -> Plan:
    """The greedy plan, asserted valid and at the bound (here and by the reference checker)."""
    plan = greedy_plan(request)
    assert plan.ratio == pytest.approx(1.0, abs=AT_BOUND), plan.ratio
    verdict = plancheck.check(request, plan.to_json())
    assert verdict["valid"], verdict["errors"]
    assert verdict["makespan_s"] == pytest.approx(verdict["lower_bound_s"], rel=AT_BOUND)
    return plan


def carrying(plan: Plan, tensor: int) -> list[Transfer]:
    """The plan's transfers with a piece of `tensor`, in plan order."""
    return [t for t in plan.transfers if any(p.tensor == tensor for p in t.pieces)]


def delivered_after(relay: Transfer, earlier: Transfer) -> bool:
    """`relay` sends on bytes its sender got from `earlier`, after they arrived."""
    return (
        relay.src in earlier.dst
        and set(relay.pieces) <= set(earlier.pieces)
        and relay.start_s >= earlier.end_s
    )


# -- how families are recognised and taken away ------------------------------------------------


def families(problem: Problem, recipe: Recipe) -> set[str]:
    """The families a recipe belongs to, read off its moves (a recipe may be in several)."""
    host_of = problem.topology.host_of
    tags = set()
    if recipe.through:
        tags.add("through")
    if any(m.only_for is not None for m in recipe.moves):
        tags.add("bundle")
    if recipe.num_parts > 1:
        tags.add("split")
    relays = [m for m in recipe.moves if m.deps]
    if relays:
        tags.add("relay")
    if len({(m.src, m.deps) for m in relays}) < len(relays):
        tags.add("fanout")  # one entry, several moves after the same arrival
    firsts = [m for m in recipe.moves if not m.deps]
    remote = any(host_of[d] != host_of[m.src] for m in firsts for d in m.dst)
    if recipe.num_parts > 1 and len({m.dst for m in firsts}) == 1:
        tags.add("one_entry")
    if remote and recipe.num_parts == 1 and len({m.src for m in firsts}) > 1:
        tags.add("per_host")
    if not remote and len(firsts) > 1 and any(len(m.dst) > 1 for m in firsts):
        tags.add("shared")
    return tags


def force_breadth(monkeypatch: pytest.MonkeyPatch, **flags: Any) -> None:
    """Every remote enumeration runs with `flags` set on its `Breadth` (`through=False`...)."""
    enumerate_remote = recipes.remote_recipes

    def forced(
        problem: Problem,
        index: int,
        item: Item,
        remote: dict[int, list[int]],
        ranking: recipes.Ranking | None = None,
        breadth: Breadth | None = None,
    ) -> list[Recipe]:
        breadth = replace(breadth or Breadth(), **flags)
        return enumerate_remote(problem, index, item, remote, ranking, breadth)

    monkeypatch.setattr(recipes, "remote_recipes", forced)


def drop_styles(
    monkeypatch: pytest.MonkeyPatch,
    styles: Callable[[list[tuple[bool, bool]]], list[tuple[bool, bool]]],
) -> None:
    """`recipes.relay_styles` rewritten by `styles` for items that are not bundles."""
    relay_styles = recipes.relay_styles

    def patched(
        problem: Problem, remote: dict[int, list[int]], item: Item | None = None
    ) -> list[tuple[bool, bool]]:
        found = relay_styles(problem, remote, item)
        return found if item is not None and item.piece_needers is not None else styles(found)

    monkeypatch.setattr(recipes, "relay_styles", patched)


def without_relays(monkeypatch: pytest.MonkeyPatch) -> None:
    """Entries never relay: every host takes the whole chain, as single-rail hosts do."""
    drop_styles(monkeypatch, lambda _: [(False, False)])


def without_fanout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Entries relay by one NVLink chain only."""
    drop_styles(monkeypatch, lambda found: [s for s in found if s != (True, True)])


def without_shared(monkeypatch: pytest.MonkeyPatch) -> None:
    """Local jobs lose the recipe that shares the needers among the holders."""
    enumerate_local = recipes.local_recipes

    def patched(problem: Problem, index: int, item: Item, host: int) -> list[Recipe]:
        found = enumerate_local(problem, index, item, host)
        return [r for r in found if "shared" not in families(problem, r)]

    monkeypatch.setattr(recipes, "local_recipes", patched)


def without_bundles(monkeypatch: pytest.MonkeyPatch) -> None:
    """The greedy never tries its small items bundled."""
    monkeypatch.setattr(greedy_module, "bundle", lambda problem, items, max_latencies: items)


# -- the requests, one per family: what each holds and why only the family meets the bound -------


def relay_request() -> dict[str, Any]:
    """A (3 MB) from device 0 to devices 2 and 3 on a two-rail host whose NVLink inputs are
    busy for 6 ms (local E into 3, F into 2); 0's rail also sends D; pacer W: T = 8 ms.

    A over the NIC into one needer (3 ms), copied to the other when its input frees (6.75 ms)
    fits; a second NIC copy (9 ms on 0's rail with D) or a chain through both needers (a busy
    NVLink input held 3 ms more: 9 ms) does not, and A is too small (< T/2) to be split."""
    specs: list[Spec] = [
        ("A", 3 * MB, [0], [2, 3]),
        ("D", 3 * MB + 1, [0], [2]),
        ("E", 24 * MB, [4], [3]),
        ("F", 24 * MB + 1, [5], [2]),
        ("W", 8 * MB, [6], [7]),
    ]
    return make_request(specs, [[0], [2, 3, 4, 5], [6], [7]], nics_per_host=2)


def fanout_request() -> dict[str, Any]:
    """A (3 MB) from device 0 to devices 2, 3 and 4 on a two-rail host where 3 sends E over
    NVLink for 7.5 ms (NVLink 16 Gbit/s: 2 MB per ms); pacer W: T = 8 ms.

    A enters 2 at 3 ms; a relay chain 2 -> 3 -> 4 needs 3's NVLink output, busy with E
    (9 ms), while one move from 2 to each of 3 and 4 leaves it alone (6 ms); A is too small to
    split and three NIC copies take 9 ms."""
    specs: list[Spec] = [
        ("A", 3 * MB, [0], [2, 3, 4]),
        ("E", 15 * MB, [3], [6]),
        ("W", 8 * MB, [7], [8]),
    ]
    return make_request(specs, [[0], [2, 3, 4, 6], [7], [8]], nics_per_host=2, intra_gbps=16)


def split_request() -> dict[str, Any]:
    """A (8 MB) held by devices 0 and 1 (two rails of one host), needed by devices 2 and 3
    (two rails of another); pacer W: T = 6 ms.

    Whole, A takes 8 ms on one rail; in halves from 0 and 1 over both rails into 2 and 3
    (4 ms), then swapped over NVLink (1 ms), it is done at 5 ms."""
    specs: list[Spec] = [("A", 8 * MB, [0, 1], [2, 3]), ("W", 6 * MB, [4], [5])]
    return make_request(specs, [[0, 1], [2, 3], [4], [5]], nics_per_host=2)


def through_request() -> dict[str, Any]:
    """A (4 MB) from device 0 and B from device 1 (two rails of one host) to devices 2 and 3
    (two rails of another), 16 Gbit/s NVLink, 10 us latency; no pacer: the bound is 4 ms plus
    a latency.

    A entering 2 and B entering 3, each running on through the other needer, pipeline the
    NVLink hop behind the NIC on disjoint ports and meet it; any relay adds an NVLink copy
    after the last NIC byte (1.08 at best, with eight parts through one entry)."""
    specs: list[Spec] = [("A", 4 * MB, [0], [2, 3]), ("B", 4 * MB + 1, [1], [2, 3])]
    return make_request(specs, [[0, 1], [2, 3]], nics_per_host=2, intra_gbps=16, latency_us=10)


def bundle_request() -> dict[str, Any]:
    """Small X (50 kB: half a latency on a NIC) to devices 2 and 4 and Y to 3 and 5, all from
    device 0, on three single-rail hosts with 100 us latency and 80 Gbit/s NVLink; pacer W from
    the last host back to the first: T = 0.45 ms.

    X and Y each as a chain over two hosts pay two latencies on 0's one rail (0.5 ms); bundled
    they share one message (0.3 ms) and each entry hands Y on (0.405 ms)."""
    small = 50_000 // 4
    specs: list[Spec] = [
        ("X", small, [0], [2, 4]),
        ("Y", small + 1, [0], [3, 5]),
        ("W", 350_000 // 4, [6], [1]),
    ]
    return make_request(specs, [[0, 1], [2, 3], [4, 5, 6]], intra_gbps=80, latency_us=100)


def per_host_request() -> dict[str, Any]:
    """A (1 MB) held by device 0 and device 1 (two single-rail hosts), needed by 2, 3 on a
    third host and 4, 5 on a fourth; 100 us latency; no pacer: the bound is 1.1 ms.

    One chain from either holder through both needer hosts pays two latencies (1.2 ms) and a
    split's parts queue on each host's one rail; 0 serving one host and 1 the other meets it."""
    specs: list[Spec] = [("A", MB, [0, 1], [2, 3, 4, 5])]
    return make_request(specs, [[0], [1], [2, 3], [4, 5]], latency_us=100)


def one_entry_request() -> dict[str, Any]:
    """A (8 MB) from device 0 to devices 2, 3 and 4 on a two-rail host where E (2 ms) goes
    into 3 over NVLink (16 Gbit/s: 2 MB per ms); pacer W: T = 8.75 ms.

    A's relay tail after its last NIC byte is 4 ms unsplit, 2 ms in halves over both rails,
    1 ms in four parts and 0.5 ms in eight parts through one entry (8.5 ms); a chain through
    all needers waits for E (10 ms)."""
    specs: list[Spec] = [
        ("A", 8 * MB, [0], [2, 3, 4]),
        ("E", 4 * MB, [5], [3]),
        ("W", 35 * MB // 4, [6], [7]),
    ]
    return make_request(specs, [[0], [2, 3, 4, 5], [6], [7]], nics_per_host=2, intra_gbps=16)


def shared_request() -> dict[str, Any]:
    """A (4 MB) held by devices 0 and 1, needed by 2, 3, 4 and 5 on the same host (one local
    job), 200 us latency; pacer W on another host pair: T = 1.5 ms.

    A chain from one holder through four needers pays four hops' latencies (1.8 ms), a move
    per needer queues on the holders (2.4 ms); 0 and 1 each chaining through two take 1.4 ms."""
    specs: list[Spec] = [("A", 4 * MB, [0, 1], [2, 3, 4, 5]), ("W", 13 * MB // 10, [6], [7])]
    return make_request(specs, [[0, 1, 2, 3, 4, 5], [6], [7]], latency_us=200)


# -- each family alone reaches the bound ---------------------------------------------------------


def test_relay(monkeypatch: pytest.MonkeyPatch, plancheck: ModuleType) -> None:
    """relay_request: both NVLink inputs are busy, so only NIC-then-relay fits T."""
    request = relay_request()
    plan = plan_at_bound(request, plancheck)
    over_nic, relayed = carrying(plan, tensor_index(request, "A"))
    assert (over_nic.src, len(over_nic.dst)) == (0, 1)
    assert delivered_after(relayed, over_nic)
    assert {*over_nic.dst, *relayed.dst} == {2, 3}
    without_relays(monkeypatch)
    assert greedy_plan(request).ratio > 1.1  # 9/8: the chain waits for E or F


def test_fanout(monkeypatch: pytest.MonkeyPatch, plancheck: ModuleType) -> None:
    """fanout_request: a relay chain passes 3's busy NVLink output; one move per needer does not."""
    request = fanout_request()
    plan = plan_at_bound(request, plancheck)
    over_nic, *relays = carrying(plan, tensor_index(request, "A"))
    assert over_nic.src == 0 and len(over_nic.dst) == 1
    assert len(relays) == 2 and all(len(t.dst) == 1 for t in relays)
    assert all(delivered_after(t, over_nic) for t in relays)
    assert {*over_nic.dst, *(d for t in relays for d in t.dst)} == {2, 3, 4}
    without_fanout(monkeypatch)
    assert greedy_plan(request).ratio > 1.1  # 9/8: the chain waits for E


def test_split(monkeypatch: pytest.MonkeyPatch, plancheck: ModuleType) -> None:
    """split_request: one rail is too slow for A; parts over both, then all-gathered, fit T."""
    request = split_request()
    plan = plan_at_bound(request, plancheck)
    sent = carrying(plan, tensor_index(request, "A"))
    scatter = [t for t in sent if t.src in (0, 1)]
    gather = [t for t in sent if t.src in (2, 3)]
    assert {t.src for t in scatter} == {0, 1} and {t.dst for t in scatter} == {(2,), (3,)}
    parts = [p for t in scatter for p in t.pieces]
    assert len(set(parts)) == len(parts) >= 2  # parts of A, not copies
    assert len(gather) == len(scatter)  # each part passed on to the other needer
    assert all(any(delivered_after(g, s) for s in scatter) for g in gather)
    force_breadth(monkeypatch, split_parts=())
    assert greedy_plan(request).ratio > 1.3  # 8/6: one rail carries all of A


def test_through(monkeypatch: pytest.MonkeyPatch, plancheck: ModuleType) -> None:
    """through_request: only chains through both needers hide the NVLink hop behind the NIC."""
    request = through_request()
    plan = plan_at_bound(request, plancheck)
    for name in "AB":
        (chain,) = carrying(plan, tensor_index(request, name))
        assert sorted(chain.dst) == [2, 3]  # the host's entry, then the other needer
    assert [t.dst for t in plan.transfers] in ([(2, 3), (3, 2)], [(3, 2), (2, 3)])
    force_breadth(monkeypatch, through=False)
    assert greedy_plan(request).ratio > 1.05  # 1.08: 8 parts pipelined through one entry


def test_bundle(monkeypatch: pytest.MonkeyPatch, plancheck: ModuleType) -> None:
    """bundle_request: only X and Y in one message pay one chain's latencies, not two."""
    request = bundle_request()
    plan = plan_at_bound(request, plancheck)
    x, y = tensor_index(request, "X"), tensor_index(request, "Y")
    (both,) = [t for t in plan.transfers if {p.tensor for p in t.pieces} == {x, y}]
    assert both.src == 0 and both.dst == (2, 4)  # one entry per host
    handed = [t for t in carrying(plan, y) if t is not both]
    assert sorted(t.dst for t in handed) == [(3,), (5,)]
    assert all(delivered_after(t, both) and {p.tensor for p in t.pieces} == {y} for t in handed)
    without_bundles(monkeypatch)
    assert greedy_plan(request).ratio > 1.1  # 0.5/0.45


def test_per_host(monkeypatch: pytest.MonkeyPatch, plancheck: ModuleType) -> None:
    """per_host_request: only one move per needer host, from either holder, pays one latency."""
    request = per_host_request()
    plan = plan_at_bound(request, plancheck)
    assert sorted((t.src, t.dst) for t in plan.transfers) == [(0, (2, 3)), (1, (4, 5))]
    force_breadth(monkeypatch, per_host=False)
    assert greedy_plan(request).ratio > 1.05  # 1.2/1.1: one chain through both hosts


def test_one_entry(monkeypatch: pytest.MonkeyPatch, plancheck: ModuleType) -> None:
    """one_entry_request: only eight parts through one entry leave a relay tail short enough."""
    request = one_entry_request()
    plan = plan_at_bound(request, plancheck)
    sent = carrying(plan, tensor_index(request, "A"))
    over_nic = [t for t in sent if t.src == 0]
    assert len(over_nic) >= 8 and len({t.dst for t in over_nic}) == 1  # all into one entry
    relays = [t for t in sent if t.src != 0]
    assert len(relays) == len(over_nic)
    assert all(any(delivered_after(r, t) for t in over_nic) for r in relays)
    force_breadth(monkeypatch, one_entry=False)
    assert greedy_plan(request).ratio > 1.1  # 10/8.75: the chain waits for E


def test_shared(monkeypatch: pytest.MonkeyPatch, plancheck: ModuleType) -> None:
    """shared_request: only both holders each chaining through half the needers fit T."""
    request = shared_request()
    plan = plan_at_bound(request, plancheck)
    chains = carrying(plan, tensor_index(request, "A"))
    assert sorted(t.src for t in chains) == [0, 1] and all(len(t.dst) == 2 for t in chains)
    without_shared(monkeypatch)
    assert greedy_plan(request).ratio > 1.1  # 1.8/1.5: one chain through all four


# -- the enumeration itself ----------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """A family's request, the tensor its item carries and the breadth it is offered in."""

    request: Callable[[], dict[str, Any]]
    tensor: str
    breadth: Breadth = GREEDY
    bundled: bool = False


CASES = {
    "relay": Case(relay_request, "A"),
    "fanout": Case(fanout_request, "A"),
    "split": Case(split_request, "A"),
    "through": Case(through_request, "A"),
    "bundle": Case(bundle_request, "X", bundled=True),
    "per_host": Case(per_host_request, "A", PER_HOST),
    "one_entry": Case(one_entry_request, "A", replace(GREEDY, split_parts=(8,), one_entry=True)),
    "shared": Case(shared_request, "A"),
}


def case_items(case: Case) -> tuple[dict[str, Any], Problem, list[Item], int]:
    """The case's request, problem, items (bundled when the case says) and its item's index."""
    request = case.request()
    problem = problem_of(request)
    items = coalesce(problem)
    if case.bundled:
        items = bundle(problem, items, BUNDLE_LATENCIES)
    tensor = tensor_index(request, case.tensor)
    index = next(i for i, it in enumerate(items) if any(p.tensor == tensor for p in it.pieces))
    return request, problem, items, index


def needed(problem: Problem, item: Item, device: int) -> list[Piece]:
    owners = item.piece_needers or tuple(item.needers for _ in item.pieces)
    return [p for p, who in zip(item.pieces, owners, strict=True) if device in who]


def assert_delivers(problem: Problem, items: Sequence[Item], job: Job, recipe: Recipe) -> None:
    """The recipe's moves, realised, hand every needer of the job exactly the pieces of the
    item it needs (others only to pass on: a bundle's entry), each move sent by a holder or
    by a device that a move it follows reached."""
    item = items[job.item]
    host_of = problem.topology.host_of
    holder_hosts = {host_of[s] for s in item.holders}
    served = [
        d
        for d in item.needers
        if (host_of[d] == job.key if job.key != REMOTE else host_of[d] not in holder_hosts)
    ]
    moves = MoveList(problem)
    ((indices,),) = realize(problem, items, [[(recipe, 1.0)]], moves)
    got: dict[int, list[Piece]] = defaultdict(list)
    passed_on: dict[int, set[Piece]] = defaultdict(set)
    for k in indices:
        if k < 0:
            continue
        move = moves.moves[k]
        if move.src not in item.holders:
            reached = [moves.moves[d] for d in move.deps if move.src in moves.moves[d].dst]
            assert set(move.pieces) <= {p for m in reached for p in m.pieces}, move
        assert all(d in problem.dst_devices for d in move.dst)
        passed_on[move.src].update(move.pieces)
        for d in move.dst:
            got[d].extend(move.pieces)
    for d in served:
        wanted = needed(problem, item, d)

        def kept(p: Piece, wanted: list[Piece] = wanted) -> bool:
            return any(w.tensor == p.tensor and contains(w.box, p.box) for w in wanted)

        pieces = [p for p in got[d] if kept(p)]
        assert all(p in passed_on[d] for p in got[d] if not kept(p)), d
        for i, p in enumerate(pieces):  # no byte twice
            assert all(q.tensor != p.tensor or intersect(p.box, q.box) is None for q in pieces[:i])
        assert sum(volume(p.box) for p in pieces) == sum(volume(w.box) for w in wanted), d


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_enumeration_offers_the_family_and_every_recipe_delivers(name: str) -> None:
    """Each family's request: `item_jobs` offers the family; every recipe delivers exactly."""
    case = CASES[name]
    _, problem, items, index = case_items(case)
    offered = {
        tag
        for job in item_jobs(problem, index, items[index], breadth=case.breadth)
        for recipe in job.recipes
        for tag in families(problem, recipe)
    }
    assert name in offered, offered
    for breadth in (Breadth(), case.breadth):
        for i, item in enumerate(items):
            for job in item_jobs(problem, i, item, breadth=breadth):
                assert job.recipes
                for recipe in job.recipes:
                    assert_delivers(problem, items, job, recipe)


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_router_chooses_the_family(name: str) -> None:
    """Each family's request: the router, in the family's breadth, picks the family's recipe."""
    case = CASES[name]
    _, problem, items, index = case_items(case)
    chosen = route_all(problem, items, case.breadth)[index]
    tags = set().union(*(families(problem, recipe) for _, recipe in chosen))
    assert name in tags, tags
