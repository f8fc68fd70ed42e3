"""The lower bound agrees with the reference checker and holds for hand-made plans."""

from __future__ import annotations

import math
import random
from types import ModuleType

import pytest

from meshcast.planner.bound import send_bound_bytes
from meshcast.planner.synthetic import random_request
from tests.conftest import CASE_IDS, load_case, problem_of


@pytest.mark.parametrize("case", CASE_IDS)
def test_bound_matches_reference_on_shared_cases(case: str, plancheck: ModuleType) -> None:
    request = load_case(case)
    expected = plancheck.lower_bound(plancheck.load_problem(request))
    assert math.isclose(problem_of(request).lower_bound_s, expected, rel_tol=1e-9)


@pytest.mark.parametrize("seed", range(40))
def test_bound_matches_reference_on_random_requests(seed: int, plancheck: ModuleType) -> None:
    request = random_request(random.Random(seed))
    expected = plancheck.lower_bound(plancheck.load_problem(request))
    assert math.isclose(problem_of(request).lower_bound_s, expected, rel_tol=1e-9, abs_tol=1e-15)


def test_send_bound_is_exact_on_a_small_transport_problem() -> None:
    # 10 bytes that only port a can send, 2 that a or b can send: b takes the 2, a the 10
    groups = {frozenset({(0, 0)}): 10.0, frozenset({(0, 0), (1, 0)}): 2.0}
    assert send_bound_bytes(groups) == pytest.approx(10.0)
    # 6 + 6 bytes over two shared ports: 6 each
    groups = {frozenset({(0, 0), (1, 0)}): 6.0, frozenset({(0, 0), (1, 0), (2, 0)}): 6.0}
    assert send_bound_bytes(groups) == pytest.approx(4.0)


def test_one_to_many_bound_is_one_transfer() -> None:
    problem = problem_of(load_case("paper-1tom-4x2"))
    nbytes = 268435456 * 4
    assert problem.lower_bound_s == pytest.approx(nbytes / 1.25e9 + 10e-6)
