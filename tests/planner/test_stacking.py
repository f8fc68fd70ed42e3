"""Identical tensors planned as one stack: grouping, expansion, and plans of the request itself."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from meshcast.planner.plan import Piece
from meshcast.planner.request import parse_request
from meshcast.planner.simulate import check_plan, simulate
from meshcast.planner.stacking import stack_identical
from meshcast.planner.synthetic import moe_refit_request
from meshcast.planner.synthetic_scale import moe_refit_at_scale
from meshcast.solver import SolveOptions, make_plan
from meshcast.solver.greedy import greedy
from tests.conftest import load_case, problem_of


def test_identical_tensors_become_one_stacked_tensor() -> None:
    request = parse_request(moe_refit_request(num_layers=4, num_stages=2))
    stacking = stack_identical(request)
    assert stacking is not None
    # embed and lm_head differ in stage; each stage's 2 layers x 6 kinds stack in pairs
    assert len(stacking.request.tensors) == 2 + 2 * 6
    for spec, members in zip(stacking.request.tensors, stacking.members, strict=True):
        first = request.tensors[members[0]]
        if len(members) == 1:
            assert spec == first
            continue
        assert spec.shape == (len(members), *first.shape)
        assert all(request.tensors[m].src == first.src for m in members)
        shifted = tuple(None if p is None else p + 1 for p in first.src.placements)
        assert spec.src.placements == shifted
    assert sorted(m for ms in stacking.members for m in ms) == list(range(len(request.tensors)))


def test_no_two_tensors_alike_means_no_stacking() -> None:
    assert stack_identical(parse_request(load_case("paper-n2m-case1"))) is None


def test_expansion_gives_each_member_its_rows() -> None:
    stacking = stack_identical(parse_request(moe_refit_request(num_layers=4, num_stages=2)))
    assert stacking is not None
    stacked = next(i for i, m in enumerate(stacking.members) if len(m) == 2)
    box = ((1, 2), *((0, n) for n in stacking.request.tensors[stacked].shape[1:]))
    single = next(i for i, m in enumerate(stacking.members) if len(m) == 1)
    whole = tuple((0, n) for n in stacking.request.tensors[single].shape)
    pieces = stacking.expand_pieces((Piece(stacked, box), Piece(single, whole)))
    assert pieces == (
        Piece(stacking.members[stacked][1], box[1:]),
        Piece(stacking.members[single][0], whole),
    )


@pytest.mark.parametrize("algorithm", ["greedy", "auto"])
def test_stacked_plans_are_valid_plans_of_the_request(algorithm: str, plancheck: Any) -> None:
    raw = moe_refit_at_scale(
        num_layers=3, hidden=256, q_dim=256, kv_dim=64, ffn=128, num_experts=16,
        vocab=1024, num_stages=2, stage_dp=1, num_engines=2,
    )  # fmt: skip
    problem = problem_of(raw)
    assert problem.stacked is not None
    plan = make_plan(problem, algorithm, SolveOptions(time_limit_s=1.0))
    checked = check_plan(problem, plan)  # simulated again on the request as given
    assert checked.valid, checked.errors[:3]
    assert checked.makespan_s == pytest.approx(plan.makespan_s, rel=1e-9)
    assert plan.lower_bound_s == pytest.approx(problem.lower_bound_s, rel=1e-9)
    verdict = plancheck.check(copy.deepcopy(raw), plan.to_json())
    assert verdict["valid"], verdict["errors"]
    # as good as planning every tensor apart
    apart = greedy(problem, SolveOptions())
    transfers = apart.transfers()
    assert plan.makespan_s <= simulate(problem, transfers).makespan_s * 1.01
