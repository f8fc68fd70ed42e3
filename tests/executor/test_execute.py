"""The executor across real processes (gloo on CPU): bit-exact against slicing the tensors."""

from __future__ import annotations

import copy
import json
import os
import socket
import traceback
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

from executor import PlanMismatchError, execute  # noqa: E402
from executor.packing import TORCH_DTYPES  # noqa: E402
from planner import build_problem, parse_request  # noqa: E402
from planner.plan import Plan  # noqa: E402
from solver import SolveOptions, make_plan  # noqa: E402

pytestmark = pytest.mark.torch

BASE: dict[str, Any] = {
    "tensors": [
        {
            "name": "act",
            "shape": [37, 10, 6],
            "dtype": "float32",
            "src": {"mesh": "a", "placements": ["S(0)", "R"]},
            "dst": {"mesh": "b", "placements": ["R", "S(1)"]},
        },
        {
            "name": "w",
            "shape": [9, 13],
            "dtype": "bfloat16",
            "src": {"mesh": "a", "placements": ["S(1)", "S(1)"]},
            "dst": {"mesh": "b", "placements": ["S(0)", "R"]},
        },
        {
            "name": "mask",
            "shape": [5, 7],
            "dtype": "bool",
            "src": {"mesh": "a", "placements": ["R", "R"]},
            "dst": {"mesh": "b", "placements": ["S(1)", "S(0)"]},
        },
    ],
    "meshes": {
        "a": {"shape": [2, 2], "devices": [0, 1, 2, 3]},
        "b": {"shape": [2, 2], "devices": [4, 5, 6, 7]},
    },
    "cluster": {
        "hosts": [[0, 1], [2, 3], [4, 5], [6, 7]],
        "nic_gbps": 10,
        "nics_per_host": 2,
        "intra_gbps": 100,
        "latency_us": 5,
    },
}


def global_tensor(name: str, shape: list[int], dtype: str) -> torch.Tensor:
    generator = torch.Generator().manual_seed(sum(map(ord, name)))
    values = torch.randn(shape, generator=generator)
    return (values > 0) if dtype == "bool" else values.to(TORCH_DTYPES[dtype])


def _worker(
    rank: int, world: int, port: int, request: dict[str, Any], plans: list[dict[str, Any]], out: str
) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=60))
    try:
        parsed = parse_request(request)
        problem = build_problem(parsed)
        shards = {}
        for i, spec in enumerate(parsed.tensors):
            box = problem.src_boxes(i).get(rank)
            if box is not None:
                full = global_tensor(spec.name, list(spec.shape), spec.dtype)
                shards[spec.name] = full[tuple(slice(lo, hi) for lo, hi in box)].clone()
        report = {}
        for k, plan_json in enumerate(plans):
            plan = Plan.from_json(plan_json)
            try:
                got = execute(plan, parsed, shards)
            except PlanMismatchError as err:
                report[k] = f"mismatch: {err}"
                continue
            exact = True
            for i, spec in enumerate(parsed.tensors):
                box = problem.dst_boxes(i).get(rank)
                if box is None:
                    continue
                full = global_tensor(spec.name, list(spec.shape), spec.dtype)
                exact &= bool(
                    torch.equal(got[spec.name], full[tuple(slice(lo, hi) for lo, hi in box)])
                )
            report[k] = "exact" if exact else "WRONG"
        Path(out, f"{rank}.json").write_text(json.dumps(report))
    except Exception:
        Path(out, f"{rank}.json").write_text(json.dumps({"error": traceback.format_exc()}))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_world(
    request: dict[str, Any], plans: list[dict[str, Any]] | list[list[dict[str, Any]]], tmp: Path
) -> list[dict[str, Any]]:
    world = 1 + max(d for h in request["cluster"]["hosts"] for d in h)
    per_rank = plans if plans and isinstance(plans[0], list) else [plans] * world
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(
            target=_worker, args=(r, world, _free_port_cached[0], request, per_rank[r], str(tmp))
        )
        for r in range(world)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=180)
        assert p.exitcode == 0, f"worker exit code {p.exitcode}"
    reports = [json.loads(Path(tmp, f"{r}.json").read_text()) for r in range(world)]
    for r, report in enumerate(reports):
        assert "error" not in report, f"rank {r}: {report.get('error')}"
    return reports


_free_port_cached = [0]


@pytest.fixture(autouse=True)
def fresh_port() -> None:
    _free_port_cached[0] = _free_port()


@pytest.mark.parametrize("layout", ["disjoint", "overlapping"])
def test_every_algorithm_is_bit_exact(layout: str, tmp_path: Path) -> None:
    request = copy.deepcopy(BASE)
    if layout == "overlapping":  # destination mesh shares two devices with the source mesh
        request["meshes"]["b"]["devices"] = [2, 3, 4, 5]
    problem = build_problem(parse_request(request))
    names = ["sendrecv", "sendrecv-allgather", "broadcast-lb", "greedy", "milp", "auto"]
    plans = [make_plan(problem, name, SolveOptions(time_limit_s=0.5)).to_json() for name in names]
    reports = run_world(request, plans, tmp_path)
    for rank, report in enumerate(reports):
        assert set(report.values()) == {"exact"}, (rank, report)


def test_relays_and_splits_are_bit_exact(tmp_path: Path) -> None:
    # one replicated source host and one destination host of 4 GPUs on 4 rails: the greedy
    # splits the tensor over the rails and all-gathers it inside the destination host
    request = {
        "tensors": [
            {
                "name": "x",
                "shape": [4096, 64],
                "dtype": "float32",
                "src": {"mesh": "a", "placements": ["R"]},
                "dst": {"mesh": "b", "placements": ["R"]},
            }
        ],
        "meshes": {
            "a": {"shape": [4], "devices": [0, 1, 2, 3]},
            "b": {"shape": [4], "devices": [4, 5, 6, 7]},
        },
        "cluster": {
            "hosts": [[0, 1, 2, 3], [4, 5, 6, 7]],
            "nic_gbps": 100,
            "nics_per_host": 4,
            "intra_gbps": 2400,
            "latency_us": 1,
        },
    }
    problem = build_problem(parse_request(request))
    plan = make_plan(problem, "greedy", SolveOptions())
    assert any(t.src >= 4 for t in plan.transfers), "expected relays inside the destination host"
    reports = run_world(request, [plan.to_json()], tmp_path)
    assert all(report == {"0": "exact"} for report in reports)


def test_different_plans_fail_clearly(tmp_path: Path) -> None:
    request = copy.deepcopy(BASE)
    problem = build_problem(parse_request(request))
    a = make_plan(problem, "greedy", SolveOptions()).to_json()
    b = make_plan(problem, "sendrecv", SolveOptions()).to_json()
    world = 8
    per_rank = [[a] if r != 5 else [b] for r in range(world)]
    reports = run_world(request, per_rank, tmp_path)
    assert all(report["0"].startswith("mismatch: ranks hold different plans") for report in reports)
    assert "ranks [5] differ" in reports[0]["0"]


def test_bundled_plan_is_bit_exact(tmp_path: Path) -> None:
    # every item bundled: one message per sender and receiving hosts, each device its own pieces
    from solver.greedy import greedy_routing
    from solver.items import bundle, coalesce
    from solver.routing import to_result

    request = copy.deepcopy(BASE)
    problem = build_problem(parse_request(request))
    items = bundle(problem, coalesce(problem), max_latencies=1e9)
    assert any(item.piece_needers for item in items)
    result = to_result(problem, items, greedy_routing(problem, items))
    transfers = tuple(result.moves[i].to_transfer() for i in result.order)
    plan = Plan("bundled", "greedy", transfers)
    reports = run_world(request, [plan.to_json()], tmp_path)
    assert all(report == {"0": "exact"} for report in reports)
