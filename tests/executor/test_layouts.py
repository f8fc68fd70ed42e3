"""Many layouts through the executor: hypothesis-drawn requests and the paper's cases scaled
down, every destination shard compared byte for byte with the reference tensors."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("torch")

from meshcast.executor.executor import Mode
from meshcast.executor.local_run import RunSettings, run_plan
from meshcast.executor.local_world import LocalWorld
from meshcast.planner import build_problem, parse_request
from meshcast.planner.dtypes import ITEMSIZE_BYTES
from meshcast.planner.synthetic import scaled_request, with_multibox_layouts
from meshcast.solver import SolveOptions, make_plan
from tests.conftest import load_case

pytestmark = pytest.mark.torch

MAX_RANKS = 12


@st.composite
def mesh_shapes(draw: st.DrawFn, num_devices: int) -> list[int]:
    """A 1-D to 3-D factorisation of `num_devices`."""
    shape, left = [], num_devices
    for _ in range(draw(st.integers(0, 2))):
        divisors = [d for d in range(1, left + 1) if left % d == 0]
        axis = draw(st.sampled_from(divisors))
        shape.append(axis)
        left //= axis
    return [*shape, left]


@st.composite
def layouts(draw: st.DrawFn) -> dict[str, Any]:
    """Requests over at most 12 ranks: 1-D to 3-D meshes, uneven shapes, disjoint, overlapping
    or equal meshes, one to three tensors of any dtype."""
    num_src = draw(st.integers(1, 6))
    relation = draw(st.sampled_from(["disjoint", "overlapping", "same"]))
    src_devices = list(range(num_src))
    if relation == "same":
        dst_devices = src_devices
    else:
        num_dst = draw(st.integers(1, 6))
        first = num_src if relation == "disjoint" else draw(st.integers(0, num_src - 1))
        dst_devices = list(range(first, first + num_dst))
    devices = sorted(set(src_devices) | set(dst_devices))
    meshes = {"a": {"shape": draw(mesh_shapes(num_src)), "devices": src_devices}}
    if relation != "same":
        meshes["b"] = {"shape": draw(mesh_shapes(len(dst_devices))), "devices": dst_devices}
    tensors = []
    for t in range(draw(st.integers(1, 3))):
        shape = draw(st.lists(st.integers(1, 13), min_size=1, max_size=3))

        def placements(mesh: str, dims: int = len(shape)) -> list[str]:
            choices = ["R", *(f"S({d})" for d in range(dims))]
            axes = len(meshes[mesh]["shape"])
            return draw(st.lists(st.sampled_from(choices), min_size=axes, max_size=axes))

        tensors.append(
            {
                "name": f"t{t}",
                "shape": shape,
                "dtype": draw(st.sampled_from(sorted(ITEMSIZE_BYTES))),
                "src": {"mesh": "a", "placements": placements("a")},
                "dst": {
                    "mesh": "b" if "b" in meshes else "a",
                    "placements": placements("b" if "b" in meshes else "a"),
                },
            }
        )
    per_host = draw(st.integers(1, 4))
    return {
        "tensors": tensors,
        "meshes": meshes,
        "cluster": {
            "hosts": [devices[i : i + per_host] for i in range(0, len(devices), per_host)],
            "nic_gbps": draw(st.sampled_from([1, 10, 100])),
            "nics_per_host": draw(st.integers(1, 2)),
            "intra_gbps": 400,
            "latency_us": 5,
            "duplex": draw(st.sampled_from(["full", "half"])),
        },
    }


@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(request=layouts(), mode=st.sampled_from(["chain", "broadcast"]))
def test_drawn_layouts_are_bit_exact(world: LocalWorld, request: dict[str, Any], mode: str) -> None:
    parsed = parse_request(request)
    problem = build_problem(parsed)
    assert 1 + max(problem.topology.host_of) <= MAX_RANKS
    for algorithm in ["greedy", "broadcast-lb", "auto"]:
        plan = make_plan(problem, algorithm, SolveOptions(time_limit_s=0.3))
        report = run_plan(world, parsed, plan, RunSettings(mode=mode, chunk_bytes=64))
        assert report.verified, (algorithm, report.mismatches)


@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    request=layouts(),
    seed=st.integers(0, 2**16),
    mode=st.sampled_from(["chain", "broadcast"]),
    caller_tensors=st.booleans(),
)
def test_drawn_strided_and_block_layouts_are_bit_exact(
    world: LocalWorld, request: dict[str, Any], seed: int, mode: Mode, caller_tensors: bool
) -> None:
    """Several boxes per rank on either side: DTensor local tensors of strided shards, lists
    of block tensors; with `caller_tensors`, sources and `out` as strided views."""
    parsed = parse_request(with_multibox_layouts(request, random.Random(seed)))
    problem = build_problem(parsed)
    settings = RunSettings(
        mode=mode, chunk_bytes=64, use_out=caller_tensors, strided=caller_tensors
    )
    for algorithm in ["greedy", "auto"]:
        plan = make_plan(problem, algorithm, SolveOptions(time_limit_s=0.3))
        report = run_plan(world, parsed, plan, settings)
        assert report.verified, (algorithm, report.mismatches)


PAPER_CASES = [
    "paper-1tom-1x1",
    "paper-1tom-1x4",
    "paper-1tom-4x2",
    "paper-n2m-case1",
    "paper-n2m-case3",
    "paper-n2m-case4",
    "paper-n2m-case6",
    "paper-n2m-case7",
    "paper-n2m-case9",
]


@pytest.mark.parametrize("case", PAPER_CASES)
def test_paper_layouts_scaled_down_are_bit_exact(world: LocalWorld, case: str) -> None:
    request = scaled_request(load_case(case), max_bytes=1 << 20)
    total = sum(math.prod(t["shape"]) * ITEMSIZE_BYTES[t["dtype"]] for t in request["tensors"])
    assert (1 << 19) < total <= (1 << 20)
    parsed = parse_request(request)
    problem = build_problem(parsed)
    for algorithm, mode in [("sendrecv", "chain"), ("auto", "chain"), ("auto", "broadcast")]:
        plan = make_plan(problem, algorithm, SolveOptions(time_limit_s=0.5))
        report = run_plan(world, parsed, plan, RunSettings(mode=mode, chunk_bytes=64 << 10))
        assert report.verified, (algorithm, mode, report.mismatches)
