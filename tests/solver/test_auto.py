"""`auto`: independent components, identical ones solved once, never worse than greedy."""

from __future__ import annotations

import copy
import math
import random
from types import ModuleType
from typing import Any

import pytest

from meshcast.planner.plan import SolveStatus
from meshcast.planner.synthetic import random_request
from meshcast.solver import SolveOptions, make_plan
from meshcast.solver.auto import auto
from meshcast.solver.components import components
from meshcast.solver.items import bundle, coalesce
from tests.conftest import load_case, problem_of


def side_by_side(*requests: dict[str, Any]) -> dict[str, Any]:
    """Several requests as one, each on its own hosts and devices (renumbered)."""
    out: dict[str, Any] = {"tensors": [], "meshes": {}, "cluster": None}
    offset = 0
    for k, request in enumerate(requests):
        devices = sorted(d for h in request["cluster"]["hosts"] for d in h)
        remap = {d: offset + i for i, d in enumerate(devices)}
        offset += len(devices)
        for name, mesh in request["meshes"].items():
            out["meshes"][f"{name}{k}"] = {
                "shape": mesh["shape"],
                "devices": [remap[d] for d in mesh["devices"]],
            }
        for t in request["tensors"]:
            t = copy.deepcopy(t)
            t["name"] = f"{t['name']}{k}"
            t["src"]["mesh"] += str(k)
            t["dst"]["mesh"] += str(k)
            out["tensors"].append(t)
        cluster = copy.deepcopy(request["cluster"])
        cluster["hosts"] = [[remap[d] for d in h] for h in cluster["hosts"]]
        if out["cluster"] is None:
            out["cluster"] = cluster
        else:
            out["cluster"]["hosts"] += cluster["hosts"]
    return out


def test_identical_components_are_solved_once(plancheck: ModuleType) -> None:
    case = load_case("paper-n2m-case6")
    request = side_by_side(case, case, case)
    problem = problem_of(request)
    comps = components(problem, coalesce(problem))
    assert len(comps) == 3 and len({c.signature for c in comps}) == 1
    result = auto(problem, SolveOptions(time_limit_s=1.0))
    assert any("3 component(s), 1 distinct" in note for note in result.notes)
    plan = make_plan(problem, "auto", SolveOptions(time_limit_s=1.0))
    verdict = plancheck.check(request, plan.to_json())
    assert verdict["valid"], verdict["errors"]
    # three independent copies take as long as one
    single = make_plan(problem_of(case), "auto", SolveOptions(time_limit_s=1.0))
    assert math.isclose(plan.makespan_s, single.makespan_s, rel_tol=1e-9)


def test_different_components_are_each_solved(plancheck: ModuleType) -> None:
    request = side_by_side(load_case("paper-n2m-case6"), load_case("paper-n2m-case3"))
    problem = problem_of(request)
    comps = components(problem, coalesce(problem))
    assert len(comps) == 2 and comps[0].signature != comps[1].signature
    plan = make_plan(problem, "auto", SolveOptions(time_limit_s=1.0))
    assert plancheck.check(request, plan.to_json())["valid"]
    assert plan.ratio <= 1.001


@pytest.mark.parametrize("case", ["paper-n2m-case4", "inplace-2x4"])
def test_auto_proves_the_greedy_plan_optimal(case: str) -> None:
    # the greedy is above the lower bound here, so only a solver's proof makes it optimal
    problem = problem_of(load_case(case))
    greedy = make_plan(problem, "greedy", SolveOptions())
    assert greedy.makespan_s > problem.lower_bound_s * (1 + 1e-9)
    assert greedy.status == SolveStatus.HEURISTIC
    plan = make_plan(problem, "auto", SolveOptions(time_limit_s=2.0, seed=0))
    assert plan.status == SolveStatus.OPTIMAL
    assert plan.best_bound_s is not None
    assert plan.best_bound_s >= plan.makespan_s * (1 - 1e-6)
    assert plan.makespan_s <= greedy.makespan_s * (1 + 1e-9)


def test_auto_improves_on_the_greedy() -> None:
    problem = problem_of(random_request(random.Random(2000)))
    greedy = make_plan(problem, "greedy", SolveOptions())
    plan = make_plan(problem, "auto", SolveOptions(time_limit_s=2.0, seed=0))
    assert plan.makespan_s < greedy.makespan_s * 0.99, (plan.makespan_s, greedy.makespan_s)


def test_cpsat_is_deterministic_with_one_worker() -> None:
    problem = problem_of(load_case("paper-n2m-case4"))
    options = SolveOptions(time_limit_s=2.0, seed=3, num_workers=1)
    first = make_plan(problem, "cpsat", options)
    second = make_plan(problem, "cpsat", options)
    assert first.status == "optimal"
    assert first.best_bound_s is not None and first.best_bound_s <= first.makespan_s
    assert first.transfers == second.transfers


def test_milp_reports_its_lp_bound() -> None:
    problem = problem_of(load_case("paper-n2m-case6"))
    plan = make_plan(problem, "milp", SolveOptions(time_limit_s=1.0))
    assert plan.best_bound_s is not None
    assert problem.lower_bound_s <= plan.best_bound_s <= plan.makespan_s * (1 + 1e-9)


def test_bundles_cut_messages_on_refit(plancheck: ModuleType) -> None:
    request = load_case("refit-fsdp32-to-tp2x8")
    problem = problem_of(request)
    items = coalesce(problem)
    bundled = bundle(problem, items, 40.0)
    assert len(bundled) < len(items)
    bundles = [b for b in bundled if b.piece_needers is not None]
    assert bundles
    for b in bundles:
        assert b.piece_needers is not None and len(b.piece_needers) == len(b.pieces)
        assert {d for owners in b.piece_needers for d in owners} == set(b.needers)
    plan = make_plan(problem, "greedy", SolveOptions())
    verdict = plancheck.check(request, plan.to_json())
    assert verdict["valid"], verdict["errors"]
    assert plan.ratio <= 1.03  # 1.065 unbundled: 36 messages of 10 us latency per rail
