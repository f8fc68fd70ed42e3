"""Run a plan on a local world and verify every destination shard bit for bit.

Each rank fills its source shards from the reference tensors (`executor.reference`), prepares
one `Executor`, runs it `repeats` times between barriers, and compares what it received with
the same reference. Used by `meshcast run`, the tests and the benchmarks.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from executor.executor import Executor, Mode
from executor.local_world import LocalWorld
from executor.reference import reference_box, same_bytes
from executor.transport import CHUNK_BYTES
from planner.boxes import volume
from planner.plan import Plan
from planner.problem import Problem, build_problem
from planner.request import Request, parse_request


@dataclass(frozen=True)
class TransferTiming:
    """One transfer of the last run: first participant starting to last one finishing."""

    index: int
    src: int
    num_receivers: int
    num_bytes: int
    start_s: float
    end_s: float


@dataclass(frozen=True)
class RunReport:
    """What `run_plan` measured: every run's wall time, the last run's transfers, mismatches."""

    verified: bool
    runs_s: list[float]
    transfers: list[TransferTiming]
    mismatches: list[dict[str, Any]] = field(default_factory=list)

    @property
    def wall_s(self) -> float:
        """Median wall time of the runs, barrier to barrier."""
        return statistics.median(self.runs_s)

    def summary_json(self) -> dict[str, Any]:
        return {
            "verified": self.verified,
            "wall_s": self.wall_s,
            "runs_s": self.runs_s,
            "transfers": len(self.transfers),
            "mismatches": self.mismatches,
        }


def reference_sources(request: Request) -> dict[str, torch.Tensor]:
    """This rank's source shards of the reference tensors."""
    problem, rank = build_problem(request), dist.get_rank()
    return {
        spec.name: reference_box(spec.name, spec.shape, spec.dtype, problem.src_boxes(i)[rank])
        for i, spec in enumerate(request.tensors)
        if rank in problem.src_boxes(i)
    }


def verify_received(request: Request, received: Mapping[str, torch.Tensor]) -> list[dict[str, Any]]:
    """This rank's destination shards that differ from the reference tensors (by any bit)."""
    problem, rank = build_problem(request), dist.get_rank()
    mismatches = []
    for i, spec in enumerate(request.tensors):
        box = problem.dst_boxes(i).get(rank)
        if box is None:
            continue
        got = received.get(spec.name)
        if got is None or not same_bytes(
            got, reference_box(spec.name, spec.shape, spec.dtype, box)
        ):
            mismatches.append({"rank": rank, "tensor": spec.name, "box": [list(b) for b in box]})
    return mismatches


def rank_job(
    request_json: dict[str, Any],
    plan_json: dict[str, Any],
    mode: Mode,
    repeats: int,
    timeout_s: float,
    chunk_bytes: int,
) -> dict[str, Any]:
    request, plan = parse_request(request_json), Plan.from_json(plan_json)
    shards = reference_sources(request)
    runs_s: list[float] = []
    mismatches: list[dict[str, Any]] = []
    timeout = timedelta(seconds=timeout_s)
    with Executor(plan, request, mode=mode, timeout=timeout, chunk_bytes=chunk_bytes) as executor:
        for run in range(repeats):
            dist.barrier()
            start = time.perf_counter()
            received = executor.run(shards)
            dist.barrier()
            runs_s.append(time.perf_counter() - start)
            mismatches += [dict(m, run=run) for m in verify_received(request, received)]
        timings = [asdict(t) for t in executor.last_timings]
    return {"runs_s": runs_s, "timings": timings, "mismatches": mismatches}


#: resident memory of one rank process (torch and gloo loaded, reference temporaries), on CPU
RANK_BASE_BYTES = 500 << 20


def estimate_memory_bytes(request: Request, plan: Plan | None = None) -> int:
    """Peak memory of `run_plan_locally` over all ranks, roughly: source shards, receive
    buffers, results and the reference shards they are compared with. Without a plan, every
    destination shard is taken to arrive once."""
    problem = build_problem(request)
    per_rank = {d: RANK_BASE_BYTES for d in range(1 + max(problem.topology.host_of))}
    for i, spec in enumerate(request.tensors):
        received = 0 if plan is not None else 1
        for side, copies in ((problem.src_boxes(i), 1), (problem.dst_boxes(i), 2 + received)):
            for device, box in side.items():
                per_rank[device] += copies * volume(box) * spec.itemsize_bytes
    for transfer in plan.transfers if plan is not None else ():
        num_bytes = sum(problem.piece_bytes(p) for p in transfer.pieces)
        for device in transfer.dst:
            per_rank[device] += num_bytes
    return sum(per_rank.values())


def run_plan(
    world: LocalWorld,
    request: Request,
    plan: Plan,
    *,
    mode: Mode = "chain",
    repeats: int = 1,
    chunk_bytes: int = CHUNK_BYTES,
) -> RunReport:
    """Run `plan` on `world` (at least as many ranks as the highest device id + 1)."""
    problem = build_problem(request)
    needed = 1 + max(problem.topology.host_of)
    if world.num_ranks < needed:
        raise ValueError(
            f"world: the request uses device {needed - 1}, the world has {world.num_ranks} ranks"
        )
    if repeats < 1:
        raise ValueError(f"repeats: must be at least 1, got {repeats}")
    answers = world.run(
        rank_job, request.to_json(), plan.to_json(), mode, repeats, world.timeout_s, chunk_bytes
    )
    return summarize(problem, plan, answers)


def summarize(problem: Problem, plan: Plan, answers: list[dict[str, Any]]) -> RunReport:
    """One report from every rank's `rank_job` answer."""
    repeats = len(answers[0]["runs_s"])
    runs_s = [max(a["runs_s"][k] for a in answers) for k in range(repeats)]
    spans: dict[int, tuple[float, float]] = {}
    for answer in answers:
        for t in answer["timings"]:
            lo, hi = spans.get(t["index"], (t["start_s"], t["end_s"]))
            spans[t["index"]] = (min(lo, t["start_s"]), max(hi, t["end_s"]))
    transfers = [
        TransferTiming(
            index=i,
            src=t.src,
            num_receivers=len(t.dst),
            num_bytes=sum(problem.piece_bytes(p) for p in t.pieces),
            start_s=spans[i][0],
            end_s=spans[i][1],
        )
        for i, t in enumerate(plan.transfers)
    ]
    mismatches = [m for a in answers for m in a["mismatches"]]
    return RunReport(not mismatches, runs_s, transfers, mismatches)


def run_plan_locally(
    request: Request,
    plan: Plan,
    *,
    mode: Mode = "chain",
    repeats: int = 1,
    timeout_s: float = 120.0,
) -> RunReport:
    """Start a world of one process per device id, run `plan` there, stop the world."""
    num_ranks = 1 + max(build_problem(request).topology.host_of)
    with LocalWorld(num_ranks, timeout_s=timeout_s) as world:
        return run_plan(world, request, plan, mode=mode, repeats=repeats)
