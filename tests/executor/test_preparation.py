"""A rank's set-up from a compact plan equals its set-up from the same plan spelled out."""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

import pytest

pytest.importorskip("torch")

from meshcast.executor.preparation import (
    longest_compact_message_bytes,
    longest_message_bytes,
    prepare,
)
from meshcast.executor.program import RankProgram
from meshcast.planner import build_problem, parse_request
from meshcast.planner.compact import CompactTransfers
from meshcast.planner.synthetic import moe_refit_request
from meshcast.planner.synthetic_scale import boundary_request
from meshcast.solver import SolveOptions, make_plan


def _alike(raw: dict[str, Any], count: int) -> dict[str, Any]:
    out = copy.deepcopy(raw)
    (tensor,) = out["tensors"]
    out["tensors"] = [dict(copy.deepcopy(tensor), name=f"t{i}") for i in range(count)]
    return out


def _comparable(program: RankProgram) -> RankProgram:
    """`program` with each step's message as its layout (messages compare by identity)."""
    steps = tuple(
        replace(s, message=(s.message.pieces, s.message.num_bytes, s.message.chunk_bytes))
        for s in program.steps
    )
    return replace(program, steps=steps)


REQUESTS = {
    "stacks inside copies": _alike(boundary_request(4, batch=64, seq=16, hidden=32), 3),
    "gathering hosts, copies": boundary_request(3, batch=48, seq=8, hidden=16),
    "refit stacks": moe_refit_request(num_layers=4, num_stages=2),
}


@pytest.mark.parametrize("name", list(REQUESTS))
@pytest.mark.parametrize("mode", ["chain", "broadcast"])
def test_compact_and_spelled_out_plans_prepare_the_same(name: str, mode: str) -> None:
    request = parse_request(REQUESTS[name])
    problem = build_problem(request)
    plan = make_plan(problem, "greedy", SolveOptions())
    assert isinstance(plan.transfers, CompactTransfers)
    flat = replace(plan, transfers=tuple(plan.transfers))
    assert longest_compact_message_bytes(problem, plan.transfers) == longest_message_bytes(
        problem, flat.transfers
    )
    world = 1 + max(problem.topology.host_of)
    settings: dict[str, Any] = {"mode": mode, "chunk_bytes": 1 << 12, "staging_bytes": 1 << 16}
    for rank in sorted(problem.src_devices | problem.dst_devices):
        mine = prepare(plan, request, rank, world, **settings)
        theirs = prepare(flat, request, rank, world, **settings)
        assert mine.chunk_bytes == theirs.chunk_bytes
        assert _comparable(mine.program) == _comparable(theirs.program), rank
        assert mine.broadcast_groups == theirs.broadcast_groups
    assert "_built" not in vars(plan.transfers)  # set-up never spelled the plan out
