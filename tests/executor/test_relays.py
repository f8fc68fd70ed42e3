"""Folding store-and-forward relays into cut-through: same bytes delivered, no relay buffers."""

from __future__ import annotations

import copy
import random
from dataclasses import replace
from typing import Any

import pytest

from meshcast.executor.program import numbered, rank_program
from meshcast.executor.relays import fold_relays, folded_plan
from meshcast.planner import build_problem, parse_request
from meshcast.planner.compact import CompactTransfers
from meshcast.planner.plan import Piece, Plan, Transfer
from meshcast.planner.simulate import simulate
from meshcast.planner.synthetic import random_request
from meshcast.solver import SolveOptions, make_plan
from tests.solver.test_auto import side_by_side

SPLIT = {
    # device 2 needs the top half and enters host 1 for both halves; device 3 needs the bottom
    "tensors": [
        {
            "name": "w",
            "shape": [4, 6],
            "dtype": "bfloat16",
            "src": {"mesh": "a", "placements": ["R"]},
            "dst": {"mesh": "b", "placements": ["S(0)", "R"]},
        }
    ],
    "meshes": {
        "a": {"shape": [1], "devices": [0]},
        "b": {"shape": [3, 1], "devices": [2, 3, 4]},
    },
    "cluster": {"hosts": [[0], [1, 2, 3, 4]], "nic_gbps": 10, "latency_us": 1},
}
ROW = [Piece(0, ((2 * k, 2 * k + 2), (0, 6))) for k in range(2)]


def _peak_relay_bytes(problem, order) -> int:  # type: ignore[no-untyped-def]
    devices = sorted(problem.src_devices | problem.dst_devices)
    return max(rank_program(problem, order, d, 1 << 20).peak_relay_bytes for d in devices)


def test_a_relay_through_a_device_that_keeps_nothing_joins_the_carrier() -> None:
    problem = build_problem(parse_request(SPLIT))
    keeps_nothing = Piece(0, ((2, 4), (0, 6)))  # device 2 holds rows 0-1 (its first chunk)
    plan = Plan(
        "",
        "test",
        (
            Transfer(0, (2,), (ROW[0], keeps_nothing)),
            Transfer(2, (3,), (keeps_nothing,)),
        ),
    )
    order, folded = fold_relays(problem, plan)
    assert folded == {1: 0}
    assert order == [(0, Transfer(0, (2, 3), (ROW[0], keeps_nothing)))]
    assert not simulate(problem, [t for _, t in order]).errors
    assert _peak_relay_bytes(problem, numbered(plan)) == 2 * 6 * 2
    assert _peak_relay_bytes(problem, order) == 0


def test_a_relay_the_entry_also_needs_is_left_alone() -> None:
    problem = build_problem(parse_request(SPLIT))
    plan = Plan("", "test", (Transfer(0, (2,), (ROW[0],)), Transfer(2, (3,), (ROW[0],))))
    order, folded = fold_relays(problem, plan)
    assert folded == {} and order == numbered(plan)


@pytest.mark.parametrize("seed", range(3))
def test_folded_plans_stay_valid_and_need_fewer_relay_bytes(seed: int) -> None:
    rng = random.Random(seed)
    num_folded = 0
    for _ in range(20):
        request = parse_request(random_request(rng))
        problem = build_problem(request)
        plan = make_plan(problem, "greedy", SolveOptions())
        order, folded = fold_relays(problem, plan)
        num_folded += len(folded)
        assert not simulate(problem, [t for _, t in order]).errors
        assert len(order) + len(folded) == len(plan.transfers)
        assert _peak_relay_bytes(problem, order) <= _peak_relay_bytes(problem, numbered(plan))
    assert num_folded > 0  # the draws do exercise folding


def _doubled(raw: dict[str, Any]) -> dict[str, Any]:
    """`raw` with every tensor twice (a stack of two), side by side with two copies of itself
    on other devices (three identical components)."""
    alike = copy.deepcopy(raw)
    alike["tensors"] += [dict(copy.deepcopy(t), name=t["name"] + "'") for t in raw["tensors"]]
    return side_by_side(alike, alike, alike)


def test_a_compact_plan_folds_as_its_expansion_does() -> None:
    """Folding a compact plan (its own transfers; each copy as its template) gives the plan
    that folding every transfer of its expansion gives, with the same carriers and indices."""
    rng = random.Random(7)
    compact_folds = 0
    for _ in range(40):
        request = parse_request(_doubled(random_request(rng, max_hosts=4)))
        problem = build_problem(request)
        plan = make_plan(problem, "greedy", SolveOptions())
        if not (isinstance(plan.transfers, CompactTransfers) and plan.transfers.replicas):
            continue
        folding = folded_plan(problem, plan)
        flat = folded_plan(problem, replace(plan, transfers=tuple(plan.transfers)))
        assert isinstance(folding.plan.transfers, CompactTransfers)
        assert list(folding.plan.transfers) == list(flat.plan.transfers)
        assert folding.plan.makespan_s == pytest.approx(flat.plan.makespan_s, rel=1e-12)
        assert folding.carrier_of == flat.carrier_of
        num = len(folding.plan.transfers)
        assert [folding.original(i) for i in range(num)] == [flat.original(i) for i in range(num)]
        for device in sorted(problem.src_devices | problem.dst_devices):
            assert folding.device_transfers(device) == flat.device_transfers(device)
        compact_folds += bool(folding.carrier_of)
    assert compact_folds >= 2  # the draws do fold relays inside copies
