"""Compact plans: stacks inside copies kept as planned, written and walked without expanding."""

from __future__ import annotations

import copy
import json
import pickle
from dataclasses import replace
from typing import Any

import pytest

from meshcast.planner import build_problem, parse_request
from meshcast.planner.compact import (
    CompactTransfers,
    check_compact,
    device_transfers,
    member_sets,
)
from meshcast.planner.plan import Plan
from meshcast.planner.simulate import simulate
from meshcast.planner.synthetic import moe_refit_request
from meshcast.planner.synthetic_scale import boundary_request
from meshcast.solver import SolveOptions, make_plan
from tests.conftest import load_case


def _alike(raw: dict[str, Any], count: int) -> dict[str, Any]:
    """`raw` with its one tensor repeated `count` times under other names."""
    out = copy.deepcopy(raw)
    (tensor,) = out["tensors"]
    out["tensors"] = [
        dict(copy.deepcopy(tensor), name=f"{tensor['name']}{i}") for i in range(count)
    ]
    return out


def _planned(raw: dict[str, Any], algorithm: str = "greedy") -> Plan:
    return make_plan(build_problem(parse_request(raw)), algorithm, SolveOptions(2.0))


def _flat(plan: Plan) -> Plan:
    return replace(plan, transfers=tuple(plan.transfers))


CASES = {
    "boundary, 2 host pairs, 1 tensor": _alike(boundary_request(2), 1),
    "boundary, 4 host pairs, 3 identical tensors": _alike(boundary_request(4), 3),
    "boundary gathering hosts, 8 pairs, 2 tensors": _alike(boundary_request(8), 2),
    "boundary, every GPU gets the whole rows": _alike(
        boundary_request(3, dst_placements=("R", "S(2)")), 2
    ),
    "moe refit (stacks, no copies)": moe_refit_request(num_layers=4, num_stages=2),
    "refit case": load_case("refit-fsdp32-to-tp2x8"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_compact_text_is_the_expanded_plans_text(name: str) -> None:
    plan = _planned(CASES[name])
    assert isinstance(plan.transfers, CompactTransfers)
    text = plan.to_json_text()
    assert text == _flat(plan).to_json_text()
    assert text == json.dumps(json.loads(text), separators=(",", ":"))
    assert plan.to_json() == json.loads(text)


def test_a_stack_inside_repeated_components_stays_compact() -> None:
    raw = _alike(boundary_request(8), 3)
    plan = _planned(raw)
    transfers = plan.transfers
    assert isinstance(transfers, CompactTransfers)
    assert transfers.stacking is not None and transfers.replicas
    one_pair = _planned(_alike(boundary_request(1), 3))
    # one host pair spelled out, seven copies of it; one stacked tensor for the three
    assert len(transfers.own) == len(one_pair.transfers)
    assert len(transfers) == 8 * len(one_pair.transfers)
    assert [len(m) for m in transfers.stacking.members] == [3]
    problem = build_problem(parse_request(raw))
    flat = simulate(problem, tuple(transfers))
    assert flat.valid, flat.errors[:3]
    assert flat.makespan_s == pytest.approx(plan.makespan_s, rel=1e-12)
    assert "_built" not in vars(transfers)  # nothing above indexed it


def test_pickled_compact_transfers_stay_compact() -> None:
    plan = _planned(_alike(boundary_request(4), 2))
    transfers = plan.transfers
    assert isinstance(transfers, CompactTransfers)
    assert transfers[3] is not None  # indexing builds and keeps every transfer
    assert "_built" in vars(transfers)
    back = pickle.loads(pickle.dumps(plan))
    assert isinstance(back.transfers, CompactTransfers)
    assert "_built" not in vars(back.transfers)
    assert back.transfers.digest == transfers.digest
    assert back == plan and back.to_json_text() == plan.to_json_text()
    assert len(pickle.dumps(back)) < len(pickle.dumps(_flat(plan))) / 2


def test_each_device_walks_its_own_transfers_and_its_copy_only() -> None:
    plan = _planned(_alike(boundary_request(4), 2))
    transfers = plan.transfers
    assert isinstance(transfers, CompactTransfers)
    every = list(enumerate(transfers))
    for device in range(64):
        expected = [(i, t) for i, t in every if device == t.src or device in t.dst]
        assert device_transfers(transfers, device) == expected, device
        assert device_transfers(tuple(transfers), device) == expected
    assert "_built" not in vars(transfers)
    assert member_sets(transfers) == member_sets(tuple(transfers))


def test_a_compact_plan_is_checked_from_its_distinct_part() -> None:
    raw = _alike(boundary_request(4), 2)
    plan = _planned(raw)
    transfers = plan.transfers
    assert isinstance(transfers, CompactTransfers)
    problem = build_problem(parse_request(raw))
    sim = check_compact(problem, transfers)
    assert sim.valid and sim.makespan_s == pytest.approx(plan.makespan_s, rel=1e-12)
    # one row of one template transfer's piece never sent: its receivers miss it
    first = transfers.own[0]
    piece = first.pieces[0]
    short = replace(piece, box=(*piece.box[:-1], (piece.box[-1][0], piece.box[-1][1] - 1)))
    own = (replace(first, pieces=(short, *first.pieces[1:])), *transfers.own[1:])
    damaged = CompactTransfers(own, transfers.replicas, transfers.stacking)
    errors = check_compact(problem, damaged).errors
    assert errors and "does not hold box" in errors[0], errors[:1]
    # the stacks of another request
    other = build_problem(parse_request(_alike(boundary_request(4), 3)))
    (error,) = check_compact(other, transfers).errors
    assert "stacked tensors are not this request's" in error
