"""Strided shards and block layouts (several boxes per device, on either side) through every
algorithm: each plan is checked by the project's simulator and, independently, element by
element (a boolean mask per device and tensor, the transfers applied in order)."""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
import pytest

from meshcast.planner.plan import Transfer
from meshcast.planner.problem import Problem
from meshcast.planner.simulate import simulate
from meshcast.planner.synthetic import random_multibox_request
from meshcast.solver import ALGORITHMS, SolveOptions, make_plan
from tests.conftest import problem_of

FAST = SolveOptions(time_limit_s=0.3, seed=0)


def _slices(box: tuple[tuple[int, int], ...]) -> tuple[slice, ...]:
    return tuple(slice(lo, hi) for lo, hi in box)


def element_errors(problem: Problem, transfers: Sequence[Transfer]) -> list[str]:
    """What the plan fails to deliver, found on element masks (no boxes arithmetic)."""
    tensors = problem.request.tensors
    held: dict[tuple[int, int], np.ndarray] = {}

    def mask(t: int, d: int) -> np.ndarray:
        if (t, d) not in held:
            m = np.zeros(tensors[t].shape, dtype=bool)
            for box in problem.src_boxes(t).get(d, ()):
                m[_slices(box)] = True
            held[(t, d)] = m
        return held[(t, d)]

    errors = []
    for k, tr in enumerate(transfers):
        for p in tr.pieces:
            if not mask(p.tensor, tr.src)[_slices(p.box)].all():
                errors.append(f"transfer {k}: {tr.src} lacks {p.box} of tensor {p.tensor}")
        for p in tr.pieces:
            for d in tr.dst:
                mask(p.tensor, d)[_slices(p.box)] = True
    for t in range(len(tensors)):
        for d, boxes in problem.dst_boxes(t).items():
            for box in boxes:
                if not mask(t, d)[_slices(box)].all():
                    errors.append(f"device {d} misses part of {box} of tensor {t}")
    return errors


@pytest.mark.parametrize("seed", range(20))
def test_every_algorithm_delivers_multibox_layouts(seed: int) -> None:
    request = random_multibox_request(random.Random(3000 + seed), max_hosts=4)
    problem = problem_of(request)
    for algorithm in ALGORITHMS:
        plan = make_plan(problem, algorithm, FAST)
        assert simulate(problem, plan.transfers).valid, algorithm
        assert element_errors(problem, plan.transfers) == [], algorithm
        assert plan.makespan_s >= plan.lower_bound_s * (1 - 1e-9), algorithm


def test_the_simulator_and_the_masks_agree_on_a_broken_plan() -> None:
    request = random_multibox_request(random.Random(7), max_hosts=4)
    problem = problem_of(request)
    plan = make_plan(problem, "greedy", FAST)
    assert plan.transfers
    broken = plan.transfers[1:]
    assert not simulate(problem, broken).valid
    assert element_errors(problem, broken)
