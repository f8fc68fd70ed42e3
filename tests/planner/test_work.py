"""Work bounds from a request's numbers: never below the real tile count, and requests over
the limits refused by name before anything is tiled."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshcast.planner import RequestError, parse_request
from meshcast.planner.synthetic import random_multibox_request, random_request
from meshcast.planner.work import check_work, estimate_work
from tests.conftest import CASE_IDS, load_case, problem_of


@pytest.mark.parametrize("case", [c for c in CASE_IDS if not c.startswith("scale-")])
def test_tile_bound_holds_on_the_shared_cases(case: str) -> None:
    problem = problem_of(load_case(case))
    assert len(problem.tiles) <= estimate_work(problem.request).tiles


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.booleans())
def test_tile_bound_holds_on_random_layouts(seed: int, multibox: bool) -> None:
    make = random_multibox_request if multibox else random_request
    problem = problem_of(make(random.Random(seed), max_hosts=4))
    assert len(problem.tiles) <= estimate_work(problem.request).tiles


def test_requests_over_the_limits_are_refused_by_field() -> None:
    request = parse_request(load_case("dgx-boundary-2x8-to-2x8"))
    work = check_work(request)
    with pytest.raises(RequestError, match=r"^tensors: .* tiles, over the limit of 1") as tiles:
        check_work(request, max_tiles=1)
    assert tiles.value.field == "tensors"
    with pytest.raises(
        RequestError,
        match=r"takes up to [\d.]+ GiB \([\d,]+ tiles, [\d,]+ ports\), over the limit of",
    ):
        check_work(request, max_solve_bytes=work.solve_bytes - 1)
