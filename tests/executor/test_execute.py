"""The executor across real processes (gloo on CPU): bit-exact against the reference tensors."""

from __future__ import annotations

import copy
import random
import time
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402

from meshcast.executor import MODES, Executor  # noqa: E402
from meshcast.executor.local_run import (  # noqa: E402
    RunSettings,
    destination_tensors,
    rank_job,
    reference_sources,
    run_plan,
    verify_received,
)
from meshcast.executor.local_world import LocalWorld, RankFailure  # noqa: E402
from meshcast.executor.relays import fold_relays, folded_plan  # noqa: E402
from meshcast.planner import build_problem, parse_request  # noqa: E402
from meshcast.planner.compact import CompactTransfers  # noqa: E402
from meshcast.planner.plan import Plan  # noqa: E402
from meshcast.planner.synthetic import random_request  # noqa: E402
from meshcast.solver import SolveOptions, make_plan  # noqa: E402

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

RELAY_REQUEST: dict[str, Any] = {
    # one replicated source host and one destination host of 4 GPUs on 4 rails: the greedy
    # splits the tensor over the rails and all-gathers it inside the destination host
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


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("layout", ["disjoint", "overlapping", "same"])
def test_every_algorithm_is_bit_exact(world: LocalWorld, layout: str, mode: str) -> None:
    request = copy.deepcopy(BASE)
    if layout == "overlapping":  # the destination mesh shares two devices with the source
        request["meshes"]["b"]["devices"] = [2, 3, 4, 5]
    if layout == "same":  # an in-place reshard: both layouts on mesh a
        for tensor in request["tensors"]:
            tensor["dst"]["mesh"] = "a"
        del request["meshes"]["b"]
        request["cluster"]["hosts"] = [[0, 1], [2, 3]]
    parsed = parse_request(request)
    problem = build_problem(parsed)
    for name in ["sendrecv", "sendrecv-allgather", "broadcast-lb", "greedy", "milp", "auto"]:
        plan = make_plan(problem, name, SolveOptions(time_limit_s=0.5))
        report = run_plan(world, parsed, plan, RunSettings(mode=mode))
        assert report.verified, (name, report.mismatches)
        assert len(report.transfers) == len(plan.transfers)


@pytest.mark.parametrize("mode", MODES)
def test_relays_and_pipelined_chunks_are_bit_exact(world: LocalWorld, mode: str) -> None:
    parsed = parse_request(RELAY_REQUEST)
    plan = make_plan(build_problem(parsed), "greedy", SolveOptions())
    assert any(t.src >= 4 for t in plan.transfers), "expected relays inside the destination host"
    # 1000-byte chunks: every chain runs many waves, relays forward while they receive
    report = run_plan(world, parsed, plan, RunSettings(mode=mode, chunk_bytes=1000, repeats=2))
    assert report.verified, report.mismatches
    assert len(report.runs_s) == 2


def test_long_chain_across_hosts_is_bit_exact(world: LocalWorld) -> None:
    # one sender, eight receiving hosts: a broadcast plan forms one chain through every entry
    request = {
        "tensors": [
            {
                "name": "x",
                "shape": [3001],
                "dtype": "int16",
                "src": {"mesh": "a", "placements": ["R"]},
                "dst": {"mesh": "b", "placements": ["R", "R"]},
            }
        ],
        "meshes": {
            "a": {"shape": [1], "devices": [0]},
            "b": {"shape": [8, 2], "devices": list(range(1, 17))},
        },
        "cluster": {
            "hosts": [[0]] + [[1 + 2 * h, 2 + 2 * h] for h in range(8)],
            "nic_gbps": 10,
            "nics_per_host": 1,
            "intra_gbps": 100,
            "latency_us": 5,
        },
    }
    parsed = parse_request(request)
    plan = make_plan(build_problem(parsed), "broadcast-naive", SolveOptions())
    assert len(plan.transfers) == 1 and len(plan.transfers[0].dst) == 16
    report = run_plan(world, parsed, plan, RunSettings(chunk_bytes=512))
    assert report.verified, report.mismatches


def test_bundled_plan_is_bit_exact(world: LocalWorld) -> None:
    # every item bundled: one message per sender and receiving hosts, each device its own pieces
    from meshcast.solver.greedy import greedy_routing
    from meshcast.solver.items import bundle, coalesce
    from meshcast.solver.routing import to_result

    parsed = parse_request(BASE)
    problem = build_problem(parsed)
    items = bundle(problem, coalesce(problem), max_latencies=1e9)
    assert any(item.piece_needers for item in items)
    result = to_result(problem, items, greedy_routing(problem, items))
    transfers = tuple(result.transfers())
    plan = Plan(parsed.request_id, "greedy", transfers)
    assert run_plan(world, parsed, plan).verified


def test_invalid_plan_is_refused_on_every_rank_before_data_moves(world: LocalWorld) -> None:
    parsed = parse_request(RELAY_REQUEST)
    plan = make_plan(build_problem(parsed), "broadcast-lb", SolveOptions())
    first = plan.transfers[0]
    piece = first.pieces[0]
    (lo, hi), rest = piece.box[0], piece.box[1:]
    short = replace(piece, box=((lo, hi - 1), *rest))  # one row never delivered
    broken = replace(plan, transfers=(replace(first, pieces=(short,)), *plan.transfers[1:]))
    with pytest.raises(RankFailure) as failure:
        run_plan(world, parsed, broken)
    errors = failure.value.errors
    assert sorted(errors) == list(range(world.num_ranks))
    assert all("InvalidPlanError: rank 0: plan: " in e for e in errors.values())


def test_a_damaged_plan_on_one_rank_is_refused_on_every_rank_at_once(world: LocalWorld) -> None:
    """Rank 3 alone holds a plan missing one row: every rank raises the same
    `InvalidPlanError` naming rank 3, in about the time set-up takes, not after a timeout."""
    parsed = parse_request(BASE)
    plan = make_plan(build_problem(parsed), "greedy", SolveOptions())
    data = plan.to_json()
    damaged = copy.deepcopy(data)
    box = damaged["transfers"][0]["pieces"][0]["box"]
    box[0][1] -= 1  # one row of the first piece never sent
    per_rank = [
        (parsed.to_json(), damaged if rank == 3 else data, {}) for rank in range(world.num_ranks)
    ]
    started = time.monotonic()
    with pytest.raises(RankFailure) as failure:
        world.run(rank_job, per_rank=per_rank)
    elapsed_s = time.monotonic() - started
    errors = failure.value.errors
    assert sorted(errors) == list(range(world.num_ranks))
    assert all("InvalidPlanError: rank 3: plan: " in e for e in errors.values()), errors[0]
    assert elapsed_s < 10, f"took {elapsed_s:.1f} s"
    assert run_plan(world, parsed, plan).verified  # the world is still usable afterwards


def _stacked_copies(
    shape: list[int], count: int, src: list[str], dst: list[str], dtype: str = "float32"
) -> dict[str, Any]:
    """`count` identical tensors between two identical host pairs (2 GPUs per host): the
    plan keeps one host pair and a copy of it, and one stack of the tensors."""
    return {
        "tensors": [
            {
                "name": f"layer{i}",
                "shape": shape,
                "dtype": dtype,
                "src": {"mesh": "a", "placements": src},
                "dst": {"mesh": "b", "placements": dst},
            }
            for i in range(count)
        ],
        # BASE's meshes and cluster: two hosts of two GPUs per mesh
        "meshes": copy.deepcopy(BASE["meshes"]),
        "cluster": copy.deepcopy(BASE["cluster"]),
    }


STACKED_COPIES = _stacked_copies([8, 6, 5], 2, ["S(0)", "S(1)"], ["S(0)", "R"])
#: held-out shapes and layouts: uneven shards inside hosts, a strided source, bf16, 3 members
HELD_OUT_STACKED_COPIES = [
    _stacked_copies([12, 7, 3], 3, ["S(0)", "S(1)"], ["S(0)", "S(2)"], "bfloat16"),
    _stacked_copies([10, 9], 2, ["S(0)", "_S(0,2)"], ["S(0)", "R"]),
]


@pytest.mark.parametrize("mode", MODES)
def test_a_compact_plan_runs_bit_exact_as_planned(world: LocalWorld, mode: str) -> None:
    parsed = parse_request(STACKED_COPIES)
    plan = make_plan(build_problem(parsed), "greedy", SolveOptions())
    transfers = plan.transfers
    assert isinstance(transfers, CompactTransfers)
    assert transfers.replicas and transfers.stacking is not None
    report = run_plan(world, parsed, plan, RunSettings(mode=mode))  # each rank gets it compact
    assert report.verified, report.mismatches
    assert report.predicted_s == plan.makespan_s
    # the same plan read back from its JSON document runs the same
    assert run_plan(world, parsed, Plan.from_json(plan.to_json()), RunSettings(mode=mode)).verified


@pytest.mark.parametrize("raw", HELD_OUT_STACKED_COPIES, ids=["uneven-bf16", "strided"])
def test_held_out_stacks_inside_copies_run_bit_exact(
    world: LocalWorld, raw: dict[str, Any]
) -> None:
    parsed = parse_request(raw)
    plan = make_plan(build_problem(parsed), "greedy", SolveOptions())
    transfers = plan.transfers
    assert isinstance(transfers, CompactTransfers)
    assert transfers.replicas and transfers.stacking is not None
    report = run_plan(world, parsed, plan, RunSettings(use_out=True, strided=True))
    assert report.verified, report.mismatches


def _corrupted_source_job(request_json: dict[str, Any], plan_json: dict[str, Any]) -> list[Any]:
    request, plan = parse_request(request_json), Plan.from_json(plan_json)
    shards = reference_sources(request)
    if dist.get_rank() == 0:
        flat = shards["x"].view(-1).view(torch.uint8)
        flat[12345] ^= 1  # one bit of one element
    with Executor(plan, request) as executor:
        return verify_received(request, executor.run(shards))


def test_verification_catches_a_single_flipped_bit(world: LocalWorld) -> None:
    parsed = parse_request(RELAY_REQUEST)
    plan = make_plan(build_problem(parsed), "broadcast-lb", SolveOptions())
    assert plan.transfers[0].src == 0
    reports = world.run(_corrupted_source_job, parsed.to_json(), plan.to_json())
    assert [r for r, mismatches in enumerate(reports) if mismatches] == [4, 5, 6, 7]


@pytest.mark.parametrize("what", ["plan", "mode"])
def test_ranks_disagreeing_fail_clearly_on_every_rank(world: LocalWorld, what: str) -> None:
    parsed = parse_request(BASE)
    problem = build_problem(parsed)
    greedy = make_plan(problem, "greedy", SolveOptions()).to_json()
    other = make_plan(problem, "sendrecv", SolveOptions()).to_json() if what == "plan" else greedy
    per_rank = [
        (
            parsed.to_json(),
            other if rank == 5 else greedy,
            {"mode": "broadcast" if what == "mode" and rank == 5 else "chain"},
        )
        for rank in range(world.num_ranks)
    ]
    with pytest.raises(RankFailure) as failure:
        world.run(rank_job, per_rank=per_rank)
    errors = failure.value.errors
    assert sorted(errors) == list(range(world.num_ranks))  # every rank, none left hanging
    assert all("PlanMismatchError: ranks hold different plans" in e for e in errors.values())
    assert "ranks [5] differ" in errors[0]
    # the world is still usable afterwards
    assert run_plan(world, parsed, Plan.from_json(greedy)).verified


def _async_job(request_json: dict[str, Any], plan_json: dict[str, Any]) -> bool:
    request, plan = parse_request(request_json), Plan.from_json(plan_json)
    with Executor(plan, request) as executor:
        future = executor.run_async(reference_sources(request))
        product = torch.ones(64, 64) @ torch.ones(64, 64)  # compute while the data moves
        received = future.result(timeout=60)
    return not verify_received(request, received) and float(product[0, 0]) == 64.0


def test_async_run_overlaps_compute(world: LocalWorld) -> None:
    parsed = parse_request(BASE)
    plan = make_plan(build_problem(parsed), "greedy", SolveOptions())
    assert all(world.run(_async_job, parsed.to_json(), plan.to_json()))


def _bad_argument_job(request_json: dict[str, Any], plan_json: dict[str, Any], what: str) -> str:
    request, plan = parse_request(request_json), Plan.from_json(plan_json)
    shards = reference_sources(request)
    out = destination_tensors(request)
    if dist.get_rank() == 5:
        if what == "out shape":
            out["act"] = torch.empty(3, 3)
        elif what == "out name":
            out["nothing"] = torch.empty(1)
        elif what == "source dtype":
            shards = reference_sources(request)  # rank 5 holds no source: give it one
            shards["act"] = torch.zeros(1, dtype=torch.float64)
    with Executor(plan, request, timeout=timedelta(seconds=20)) as executor:
        try:
            executor.run(shards, out)
        except ValueError as err:
            return str(err)
        return "accepted"


@pytest.mark.parametrize("what", ["out shape", "out name", "source dtype"])
def test_a_bad_argument_on_one_rank_is_an_error_on_every_rank(world: LocalWorld, what: str) -> None:
    parsed = parse_request(BASE)
    plan = make_plan(build_problem(parsed), "greedy", SolveOptions())
    messages = world.run(_bad_argument_job, parsed.to_json(), plan.to_json(), what)
    assert all(m.startswith("rank 5: ") for m in messages[:8]), messages[0]
    expected = {
        "out shape": "out['act']: expected (37, 5, 6) float32 on cpu, got (3, 3) float32 on cpu",
        "out name": "out['nothing']: this rank receives no destination shard of it",
        "source dtype": "source_shards['act']: this rank holds no source shard of it",
    }[what]
    assert expected in messages[0]
    assert messages[8:] == ["accepted"] * (world.num_ranks - 8)  # in neither mesh: nothing to do


def _out_job(request_json: dict[str, Any], plan_json: dict[str, Any], mode: str) -> dict[str, Any]:
    request, plan = parse_request(request_json), Plan.from_json(plan_json)
    shards = reference_sources(request, strided=True)
    out = destination_tensors(request, strided=True)
    with Executor(plan, request, mode=mode, staging_bytes=1 << 16, chunk_bytes=4096) as executor:  # type: ignore[arg-type]
        received = executor.run(shards, out)
        again = executor.run(shards)
        memory = executor.memory
    return {
        "same objects": all(received[name] is out[name] for name in out)
        and received.keys() == out.keys(),
        "strided": all(
            not t.is_contiguous()
            for t in [*out.values(), *shards.values()]
            if t.dim() and t.numel() > 1
        ),
        "exact": not verify_received(request, received) and not verify_received(request, again),
        "allocated": all(again[name] is not out[name] for name in out),
        "staging": memory.staging_bytes <= 1 << 16,
    }


@pytest.mark.parametrize("mode", MODES)
def test_bytes_land_in_the_callers_strided_tensors(world: LocalWorld, mode: str) -> None:
    parsed = parse_request(RELAY_REQUEST)
    for algorithm in ["greedy", "sendrecv-allgather"]:
        plan = make_plan(build_problem(parsed), algorithm, SolveOptions())
        results = world.run(_out_job, parsed.to_json(), plan.to_json(), mode)
        for rank, result in enumerate(results[:8]):
            assert all(result.values()), (algorithm, rank, result)


def _idle_rank_job(request_json: dict[str, Any], plan_json: dict[str, Any]) -> tuple[int, int]:
    request, plan = parse_request(request_json), Plan.from_json(plan_json)
    with Executor(plan, request, mode="broadcast") as executor:
        received = executor.run(reference_sources(request))
        return len(executor.steps), len(received)


def test_ranks_in_neither_mesh_only_take_part_in_set_up(world: LocalWorld) -> None:
    parsed = parse_request(BASE)  # devices 0-7; the world has more ranks
    plan = make_plan(build_problem(parsed), "auto", SolveOptions(time_limit_s=0.5))
    counts = world.run(_idle_rank_job, parsed.to_json(), plan.to_json())
    assert world.num_ranks > 8
    assert all(steps > 0 and received > 0 for steps, received in counts[4:8])
    assert all(c == (0, 0) for c in counts[8:])


def _drawn_request(seed: int, index: int) -> dict[str, Any]:
    rng = random.Random(seed)
    for _ in range(index):
        random_request(rng, max_hosts=3)
    return random_request(rng, max_hosts=3)


@pytest.mark.parametrize("mode", MODES)
def test_relays_too_large_for_the_staging_budget_are_folded_bit_exact(
    world: LocalWorld, mode: str
) -> None:
    parsed = parse_request(_drawn_request(5, 3))  # 12 ranks, greedy relays through 7 devices
    problem = build_problem(parsed)
    plan = make_plan(problem, "greedy", SolveOptions())
    assert fold_relays(problem, plan)[1], "expected relays through devices that keep nothing"
    settings = RunSettings(mode=mode, staging_bytes=1 << 15, chunk_bytes=4096, use_out=True)  # type: ignore[arg-type]
    report = run_plan(world, parsed, plan, settings)
    assert report.verified, report.mismatches
    assert all(m["folded_transfers"] > 0 for m in report.memory)
    # what ran is a plan of its own, checked, with its own port-v1 makespan
    assert report.predicted_s == folded_plan(problem, plan).plan.makespan_s
    assert all(m["peak_relay_bytes"] == 0 for m in report.memory)
    assert all(m["staging_bytes"] <= 1 << 15 for m in report.memory)


def _converting(request: dict[str, Any], dtypes: dict[str, str]) -> dict[str, Any]:
    converted = copy.deepcopy(request)
    for tensor in converted["tensors"]:
        if tensor["name"] in dtypes:
            tensor["dst"]["dtype"] = dtypes[tensor["name"]]
    return converted


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("strided", [False, True])
def test_senders_convert_to_the_destination_dtype_bit_exact(
    world: LocalWorld, mode: str, strided: bool
) -> None:
    # fp32 narrowed and bf16 widened, with local copies (overlapping meshes) and relays
    overlapping = _converting(BASE, {"act": "bfloat16", "w": "float32"})
    overlapping["meshes"]["b"]["devices"] = [2, 3, 4, 5]
    relayed = _converting(RELAY_REQUEST, {"x": "float16"})
    for request in (overlapping, relayed):
        parsed = parse_request(request)
        plan = make_plan(build_problem(parsed), "greedy", SolveOptions())
        settings = RunSettings(mode=mode, chunk_bytes=1000, use_out=True, strided=strided)  # type: ignore[arg-type]
        report = run_plan(world, parsed, plan, settings)
        assert report.verified, report.mismatches


def test_a_narrower_destination_halves_the_planned_bytes() -> None:
    same = parse_request(RELAY_REQUEST)
    narrower = parse_request(_converting(RELAY_REQUEST, {"x": "bfloat16"}))
    assert narrower.request_id != same.request_id
    planned = [make_plan(build_problem(r), "greedy", SolveOptions()) for r in (same, narrower)]
    moved = [
        sum(build_problem(r).piece_bytes(p) for t in plan.transfers for p in t.pieces)
        for r, plan in zip((same, narrower), planned, strict=True)
    ]
    assert moved[1] * 2 == moved[0]
    assert planned[1].lower_bound_s < 0.6 * planned[0].lower_bound_s
