"""Run a plan on a local world and verify every destination shard bit for bit.

Each rank fills its source shards from the reference tensors (`executor.reference`), prepares
one `Executor`, runs it `repeats` times between barriers, and compares what it received with
the same reference. Used by `meshcast run`, the tests and the benchmarks.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from meshcast.executor.dtypes import TORCH_DTYPES
from meshcast.executor.executor import STAGING_BYTES, Executor, Mode
from meshcast.executor.local_data import LocalData, as_local_data, region_view
from meshcast.executor.local_world import LocalWorld
from meshcast.executor.memory import PeakMemory
from meshcast.executor.program import Region
from meshcast.executor.reference import reference_box, same_bytes, same_converted
from meshcast.executor.transport import CHUNK_BYTES
from meshcast.planner.boxes import volume
from meshcast.planner.holdings import Holding
from meshcast.planner.plan import Plan
from meshcast.planner.problem import Problem, build_problem
from meshcast.planner.request import Request, TensorSpec, parse_request


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
    #: per rank of the meshes: peak memory growth from before set-up, and the executor's
    #: staging, relay and destination bytes
    memory: list[dict[str, Any]] = field(default_factory=list)
    #: the port-v1 makespan of the plan the executor ran (relays folded, when it folded them)
    predicted_s: float = 0.0

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
            "memory": self.memory,
            "predicted_s": self.predicted_s,
        }


def strided_copy(t: torch.Tensor) -> torch.Tensor:
    """The same values in memory laid out otherwise (dims reversed, or every other element of
    a buffer twice as long for 1-D): a strided view, as a caller's shards often are."""
    if t.dim() >= 2:
        order = tuple(reversed(range(t.dim())))
        return t.permute(order).contiguous().permute(order)
    if t.dim() == 1:
        buffer = torch.empty(2 * t.numel(), dtype=t.dtype, device=t.device)
        buffer[::2] = t
        return buffer[::2]
    return t.clone()


def strided_empty(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised tensor of `shape` laid out like `strided_copy` lays out its values."""
    if len(shape) >= 2:
        order = tuple(reversed(range(len(shape))))
        return torch.empty(tuple(reversed(shape)), dtype=dtype).permute(order)
    if len(shape) == 1:
        return torch.empty(2 * shape[0], dtype=dtype)[::2]
    return torch.empty(shape, dtype=dtype)


def reference_local(spec: TensorSpec, holding: Holding, dtype_name: str) -> list[torch.Tensor]:
    """A rank's local tensors of the reference tensor `spec` as `holding` lays them out,
    converted to `dtype_name` (the destination's, for a destination)."""
    dtype = TORCH_DTYPES[dtype_name]
    tensors = [torch.empty(shape, dtype=dtype) for shape in holding.shapes]
    for box, (k, offset) in zip(holding.boxes, holding.places, strict=True):
        view = region_view(tensors, Region(0, box, k, offset))
        view.copy_(reference_box(spec.name, spec.shape, spec.dtype, box))
    return tensors


def reference_sources(request: Request, strided: bool = False) -> dict[str, LocalData]:
    """This rank's source data of the reference tensors (as strided views with `strided`)."""
    problem, rank = build_problem(request), dist.get_rank()
    made: dict[str, LocalData] = {}
    for i, spec in enumerate(request.tensors):
        holding = problem.holdings(i, "src").get(rank)
        if holding is not None:
            tensors = reference_local(spec, holding, spec.dtype)
            made[spec.name] = as_local_data(
                [strided_copy(t) for t in tensors] if strided else tensors, holding.listed
            )
    return made


def destination_tensors(request: Request, strided: bool = False) -> dict[str, LocalData]:
    """Zeroed data for this rank's destinations: an `out` a caller would own (and have
    touched: an engine's live weights are resident before a refit)."""
    problem, rank = build_problem(request), dist.get_rank()
    made: dict[str, LocalData] = {}
    for i, spec in enumerate(request.tensors):
        holding = problem.holdings(i, "dst").get(rank)
        if holding is not None:
            dtype = TORCH_DTYPES[spec.wire_dtype]
            tensors = [
                (strided_empty(s, dtype) if strided else torch.empty(s, dtype=dtype)).zero_()
                for s in holding.shapes
            ]
            made[spec.name] = as_local_data(tensors, holding.listed)
    return made


def verify_received(request: Request, received: Mapping[str, LocalData]) -> list[dict[str, Any]]:
    """This rank's destination data that differs from the reference tensors (by any bit)."""
    problem, rank = build_problem(request), dist.get_rank()
    mismatches = []
    for i, spec in enumerate(request.tensors):
        holding = problem.holdings(i, "dst").get(rank)
        if holding is None:
            continue
        got = received.get(spec.name)
        expected = reference_local(spec, holding, spec.wire_dtype)
        tensors = [got] if isinstance(got, torch.Tensor) else list(got or ())
        same = same_converted if spec.dst_dtype is not None else same_bytes
        if len(tensors) != len(expected) or not all(
            same(a, b) for a, b in zip(tensors, expected, strict=True)
        ):
            boxes = [[list(b) for b in box] for box in holding.boxes]
            mismatches.append({"rank": rank, "tensor": spec.name, "boxes": boxes})
    return mismatches


@dataclass(frozen=True)
class RunSettings:
    """How `rank_job` runs a plan: executor settings, repeats, and the caller's tensors."""

    mode: Mode = "chain"
    repeats: int = 1
    timeout_s: float = 120.0
    chunk_bytes: int = CHUNK_BYTES
    staging_bytes: int = STAGING_BYTES
    #: land the bytes in caller-owned tensors (`out=`) instead of tensors `run` allocates
    use_out: bool = False
    #: source shards and `out` tensors as strided (non-contiguous) views
    strided: bool = False


def rank_job(
    request_json: dict[str, Any], plan: Plan | dict[str, Any], settings: dict[str, Any]
) -> dict[str, Any]:
    """One rank's part of `run_plan`: set up, run `repeats` times between barriers, verify
    every run, and measure this rank's peak memory growth from before set-up to the end of
    the first run. `plan` comes as it was planned (a compact plan stays compact) or as its
    JSON document."""
    request = parse_request(request_json)
    plan = plan if isinstance(plan, Plan) else Plan.from_json(plan)
    options = RunSettings(**settings)
    shards = reference_sources(request, options.strided)
    out = destination_tensors(request, options.strided) if options.use_out else None
    runs_s: list[float] = []
    mismatches: list[dict[str, Any]] = []
    timeout = timedelta(seconds=options.timeout_s)
    device = torch.device("cpu")
    with PeakMemory(device) as setup:
        executor = Executor(
            plan,
            request,
            mode=options.mode,
            timeout=timeout,
            chunk_bytes=options.chunk_bytes,
            staging_bytes=options.staging_bytes,
        )
    growth = [setup.growth_bytes]
    with executor:
        for run in range(options.repeats):
            # the first run's memory is measured (with set-up: the peak a caller sees); the
            # others run as they would in a loop, unmeasured, and give the wall times
            measured = PeakMemory(device, setup.baseline_bytes) if run == 0 else None
            with measured or contextlib.nullcontext():
                dist.barrier()  # after the measurement's set-up, so every rank starts together
                start = time.perf_counter()
                received = executor.run(shards, out)
                dist.barrier()
                runs_s.append(time.perf_counter() - start)
            if measured is not None:
                growth.append(measured.growth_bytes)
            mismatches += [dict(m, run=run) for m in verify_received(request, received)]
            del received
        timings = [asdict(t) for t in executor.last_timings]
        memory = {
            "rank": dist.get_rank(),
            "peak_growth_bytes": None if None in growth else max(g or 0 for g in growth),
            **asdict(executor.memory),
            "folded_transfers": len(executor.folded),
        }
    return {
        "runs_s": runs_s,
        "timings": timings,
        "mismatches": mismatches,
        "memory": memory,
        "folded": sorted(executor.folded.items()),
        "predicted_s": executor.predicted_s,
    }


#: resident memory of one rank process (torch and gloo loaded, reference temporaries), on CPU
RANK_BASE_BYTES = 500 << 20


def estimate_memory_bytes(request: Request, plan: Plan | None = None) -> int:
    """Peak memory of `run_plan_locally` over all ranks, roughly: source shards, destination
    tensors and the reference shards they are compared with, staging and relay buffers (taken
    as one more copy of what a rank receives)."""
    problem = build_problem(request)
    total = RANK_BASE_BYTES * (1 + max(problem.topology.host_of))  # one process per rank
    for i, spec in enumerate(request.tensors):
        for side, copies in ((problem.src_boxes(i), 2), (problem.dst_boxes(i), 3)):
            for boxes in side.values():
                total += copies * sum(map(volume, boxes)) * spec.itemsize_bytes
    return total + STAGING_BYTES * len(problem.dst_devices)


def run_plan(
    world: LocalWorld,
    request: Request,
    plan: Plan,
    settings: RunSettings | None = None,
) -> RunReport:
    """Run `plan` on `world` (at least as many ranks as the highest device id + 1)."""
    settings = settings or RunSettings()
    problem = build_problem(request)
    needed = 1 + max(problem.topology.host_of)
    if world.num_ranks < needed:
        raise ValueError(
            f"world: the request uses device {needed - 1}, the world has {world.num_ranks} ranks"
        )
    if settings.repeats < 1:
        raise ValueError(f"repeats: must be at least 1, got {settings.repeats}")
    settings = replace(settings, timeout_s=world.timeout_s)
    answers = world.run(rank_job, request.to_json(), plan, asdict(settings))
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
    for folded, carrier in answers[0]["folded"]:  # it moved with its carrier
        spans[folded] = spans[carrier]
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
    members = problem.src_devices | problem.dst_devices
    memory = [a["memory"] for a in answers if a["memory"]["rank"] in members]
    predicted = answers[0].get("predicted_s", plan.makespan_s)
    return RunReport(not mismatches, runs_s, transfers, mismatches, memory, predicted)


def run_plan_locally(
    request: Request, plan: Plan, settings: RunSettings | None = None
) -> RunReport:
    """Start a world of one process per device id, run `plan` there, stop the world."""
    settings = settings or RunSettings()
    num_ranks = 1 + max(build_problem(request).topology.host_of)
    with LocalWorld(num_ranks, timeout_s=settings.timeout_s) as world:
        return run_plan(world, request, plan, settings)
