"""Run a `meshcast.plan/v1` inside a torch.distributed job (DESIGN §5).

Every rank of the world builds one `Executor` for a plan (a collective call: it creates the
executor's process groups and checks that all ranks hold the same plan), then calls `run` with
its source shards as often as it likes and gets its destination shards back, bit-exact with
slicing the global tensors. Ranks are device ids; a rank in neither mesh takes part in set-up
only. The same code runs on gloo (CPU tensors) and NCCL (CUDA tensors).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

import torch
import torch.distributed as dist

from executor import transport
from executor.holdings import Holdings
from executor.packing import TORCH_DTYPES, pack, unpack
from executor.steps import Step, broadcast_groups, rank_steps
from planner.mesh import Box
from planner.plan import Plan
from planner.problem import build_problem
from planner.request import Request
from planner.simulate import simulate

Mode = Literal["chain", "broadcast"]
MODES: tuple[Mode, ...] = ("chain", "broadcast")


class PlanMismatchError(RuntimeError):
    """Ranks were given different plans, requests or modes (running would hang or corrupt)."""


class InvalidPlanError(ValueError):
    """The plan does not deliver the request (DESIGN §2 validity); refused before any data
    moves, on every rank alike, instead of failing half-way with peers left waiting."""


@dataclass(frozen=True)
class StepTiming:
    """When this rank worked on one transfer, in seconds since `run` started."""

    index: int
    start_s: float
    end_s: float


def plan_fingerprint(plan: Plan, request_id: str = "", mode: str = "") -> int:
    """63-bit digest of what every rank must agree on: the transfers, the request and mode."""
    body = [
        request_id,
        mode,
        [
            [t.src, list(t.dst), [[p.tensor, [list(iv) for iv in p.box]] for p in t.pieces]]
            for t in plan.transfers
        ],
    ]
    digest = hashlib.sha256(json.dumps(body, separators=(",", ":")).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def _use_device(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.set_device(device)


def default_device() -> torch.device:
    """The current CUDA device under NCCL, the CPU otherwise."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


class Executor:
    """A plan prepared on this rank: process groups, route of every transfer, receive buffers.

    `Executor(plan, request)` must be called by every rank of the default world, in the same
    order relative to other collectives. `mode="chain"` forwards chunks along the plan's
    chains with p2p; `mode="broadcast"` uses `dist.broadcast` on one cached group per distinct
    set of participants (created at set-up, the same order on every rank). Operations time out
    after `timeout`.
    """

    def __init__(
        self,
        plan: Plan,
        request: Request,
        *,
        mode: Mode = "chain",
        device: torch.device | None = None,
        timeout: timedelta = timedelta(minutes=5),
        chunk_bytes: int = transport.CHUNK_BYTES,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode: expected one of {', '.join(MODES)}, got {mode!r}")
        if chunk_bytes <= 0:
            raise ValueError(f"chunk_bytes: must be positive, got {chunk_bytes}")
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.mode, self.chunk_bytes = mode, chunk_bytes
        self.device = device if device is not None else default_device()
        self.request = request
        self._problem = build_problem(request)
        errors = simulate(self._problem, plan.transfers).errors
        if errors:
            raise InvalidPlanError(f"plan: {errors[0]} ({len(errors)} problem(s) in all)")
        beyond = [d for d in self._problem.topology.host_of if d >= self.world_size]
        if beyond:
            raise ValueError(
                f"request: device {min(beyond)} is not a rank of this world "
                f"(world size {self.world_size})"
            )
        self._group = dist.new_group(list(range(self.world_size)), timeout=timeout)
        try:
            self._check_fingerprints(plan)
        except PlanMismatchError:
            dist.destroy_process_group(self._group)
            raise
        self.steps = rank_steps(self._problem, plan, self.rank)
        self._groups: dict[tuple[int, ...], dist.ProcessGroup] = {}
        if mode == "broadcast":
            for members in broadcast_groups(plan):  # collective: every rank, same order
                group = dist.new_group(list(members), timeout=timeout)
                if self.rank in members:
                    self._groups[members] = group
        self._buffers = {
            s.index: torch.empty(s.num_bytes, dtype=torch.uint8, device=self.device)
            for s in self.steps
            if not s.is_sender
        }
        self._src_boxes = self._boxes("src")
        self._dst_boxes = self._boxes("dst")
        self._lock = threading.Lock()
        self._channel: ThreadPoolExecutor | None = None
        self.last_timings: list[StepTiming] = []

    def _boxes(self, side: str) -> dict[int, Box]:
        boxes = {}
        for i in range(len(self.request.tensors)):
            by_device = (self._problem.src_boxes if side == "src" else self._problem.dst_boxes)(i)
            if self.rank in by_device:
                boxes[i] = by_device[self.rank]
        return boxes

    def _check_fingerprints(self, plan: Plan) -> None:
        mine = plan_fingerprint(plan, self.request.request_id, self.mode)
        value = torch.tensor([mine], dtype=torch.int64, device=self.device)
        everyone = [torch.zeros_like(value) for _ in range(self.world_size)]
        dist.all_gather(everyone, value, group=self._group)
        values = [int(t.item()) for t in everyone]
        differing = [r for r, v in enumerate(values) if v != values[0]]
        if differing:
            raise PlanMismatchError(
                f"ranks hold different plans, requests or modes: rank 0 has fingerprint "
                f"{values[0]:#x}, ranks {differing} differ (rank {self.rank} has {mine:#x})"
            )

    @property
    def source_tensors(self) -> list[str]:
        """Names of the tensors this rank must pass to `run`."""
        return [self.request.tensors[i].name for i in self._src_boxes]

    def _holdings(self, source_shards: Mapping[str, torch.Tensor]) -> list[Holdings]:
        holdings = [Holdings(TORCH_DTYPES[t.dtype], self.device) for t in self.request.tensors]
        names = {spec.name: i for i, spec in enumerate(self.request.tensors)}
        for name in source_shards:
            if names.get(name) not in self._src_boxes:
                raise ValueError(
                    f"source_shards[{name!r}]: rank {self.rank} holds no source shard of it "
                    f"(expected {sorted(self.source_tensors)})"
                )
        for i, box in self._src_boxes.items():
            spec = self.request.tensors[i]
            if spec.name not in source_shards:
                raise ValueError(
                    f"source_shards: rank {self.rank} holds a shard of {spec.name!r}, none given"
                )
            shard = source_shards[spec.name]
            expected = tuple(hi - lo for lo, hi in box)
            if tuple(shard.shape) != expected or shard.dtype != TORCH_DTYPES[spec.dtype]:
                raise ValueError(
                    f"source_shards[{spec.name!r}]: rank {self.rank} got {tuple(shard.shape)} "
                    f"{shard.dtype}, the layout says {expected} {TORCH_DTYPES[spec.dtype]}"
                )
            holdings[i].add(box, shard.to(self.device))
        return holdings

    def _move(self, step: Step, holdings: list[Holdings]) -> None:
        if step.is_sender:
            parts = [holdings[p.tensor].extract(p.box) for p in step.pieces]
            buffer = pack(parts).to(self.device)
        else:
            buffer = self._buffers[step.index]
        if step.num_bytes:
            if self.mode == "broadcast" and step.participants in self._groups:
                transport.broadcast(buffer, step.src, self._groups[step.participants])
            else:
                transport.chain(buffer, step.parent, step.children, self._group, self.chunk_bytes)
        if not step.is_sender:
            layout = [
                (p.box, TORCH_DTYPES[self.request.tensors[p.tensor].dtype]) for p in step.pieces
            ]
            for piece, data in zip(step.pieces, unpack(buffer, layout), strict=True):
                holdings[piece.tensor].add(piece.box, data)

    def run(self, source_shards: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Move the data; return this rank's destination shard of every tensor whose
        destination mesh contains it, keyed by tensor name (empty on other ranks)."""
        if not self._lock.acquire(blocking=False):
            raise RuntimeError("this Executor is already running; wait for the previous run")
        try:
            holdings = self._holdings(source_shards)
            start, timings = time.perf_counter(), []
            for step in self.steps:
                began = time.perf_counter() - start
                self._move(step, holdings)
                timings.append(StepTiming(step.index, began, time.perf_counter() - start))
            self.last_timings = timings
            return {
                self.request.tensors[i].name: holdings[i].extract(box).clone()
                for i, box in self._dst_boxes.items()
            }
        finally:
            self._lock.release()

    def run_async(
        self, source_shards: Mapping[str, torch.Tensor]
    ) -> Future[dict[str, torch.Tensor]]:
        """Queue a `run` on this executor's background thread and return at once;
        `.result(timeout)` gives the destination shards (or raises what `run` raised). Queued
        runs go one after another in call order, like messages on a channel, so a stage can
        queue the receives of several micro-batches ahead; compute on the caller's thread
        overlaps them."""
        if self._channel is None:
            self._channel = ThreadPoolExecutor(
                max_workers=1,
                thread_name_prefix=f"meshcast-executor-{self.rank}",
                initializer=_use_device,
                initargs=(self.device,),
            )
        return self._channel.submit(self.run, source_shards)

    def close(self) -> None:
        """Wait for queued runs, then destroy the executor's process groups (a collective
        call, like set-up)."""
        if self._channel is not None:
            self._channel.shutdown(wait=True)
            self._channel = None
        for group in [*self._groups.values(), self._group]:
            dist.destroy_process_group(group)
        self._groups.clear()

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def execute(
    plan: Plan,
    request: Request,
    source_shards: Mapping[str, torch.Tensor],
    *,
    mode: Mode = "chain",
    device: torch.device | None = None,
) -> dict[str, torch.Tensor]:
    """Prepare, run once and close: `Executor(plan, request, ...).run(source_shards)`."""
    with Executor(plan, request, mode=mode, device=device) as executor:
        return executor.run(source_shards)
