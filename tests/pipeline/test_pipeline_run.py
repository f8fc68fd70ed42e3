"""The real pipeline of `benchmarks/pipeline_run.py`, small: two stages of two ranks, activations
and gradients through the executor asynchronously; both schedules give the same training."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("torch")

from benchmarks.pipeline_run import boundary_request, train
from meshcast.executor.local_world import LocalWorld
from meshcast.pipeline.boundaries import reversed_request
from meshcast.planner import parse_request
from meshcast.solver import plan_request

pytestmark = pytest.mark.torch


def test_1f1b_and_eager_1f1b_train_identically() -> None:
    request = parse_request(boundary_request(batch=16, width=64, nic_gbps=10))
    plan, back = plan_request(request), plan_request(reversed_request(request))
    with LocalWorld(4, timeout_s=120) as world:
        answers = world.run(
            train,
            ["1f1b", "eager-1f1b"],
            request.to_json(),
            plan.to_json(),
            back.to_json(),
            6,
            3,
            128,
        )
    last_stage = answers[2]
    losses = last_stage["1f1b"]["first_losses"]
    assert len(losses) == 3 * 6 and all(math.isfinite(v) for v in losses)
    assert losses == last_stage["eager-1f1b"]["first_losses"]  # bit for bit
    assert [a["1f1b"]["weights"] for a in answers] == [a["eager-1f1b"]["weights"] for a in answers]
    # training works: the last iteration's loss is below the first's
    assert sum(losses[-6:]) < sum(losses[:6])
