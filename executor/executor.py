"""Run a `meshcast.plan/v1` inside a torch.distributed job (DESIGN §5).

Every rank of the world builds one `Executor` for a plan (a collective call: it creates the
executor's process groups and checks that all ranks hold the same plan), then calls `run` with
its source shards as often as it likes. The destination bytes land in the caller's tensors
(`out=`, any strided views, such as a slice of a fused parameter) or in one tensor allocated per
destination shard, bit-exact with slicing the global tensors. Bytes move in chunks through a
fixed pool of staging slots (`staging_bytes` per rank): a run's memory does not grow with the
data beyond the relay buffers the plan needs (`memory`). Ranks are device ids; a rank in neither
mesh takes part in set-up only. The same code runs on gloo (CPU tensors) and NCCL (CUDA tensors,
communication on the executor's own stream).
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Literal

import torch
import torch.distributed as dist

from meshcast.executor import transport
from meshcast.executor.agreement import (
    BAD_ARGUMENT,
    INVALID_PLAN,
    OK,
    InvalidPlanError,
    PlanMismatchError,
    agree_on_plan,
)
from meshcast.executor.arguments import Expected, agree, check_arguments
from meshcast.executor.chunks import LocalTensors
from meshcast.executor.dtypes import TORCH_DTYPES
from meshcast.executor.heartbeat import Heartbeats, default_store
from meshcast.executor.local_data import LocalData, Shards, as_local_data, region_views
from meshcast.executor.preparation import prepare
from meshcast.executor.program import RankProgram, RankStep, rank_program
from meshcast.executor.relays import folded_plan
from meshcast.executor.wire import ALIGN_BYTES
from meshcast.planner.compact import member_sets
from meshcast.planner.plan import Plan
from meshcast.planner.request import Request

Mode = Literal["chain", "broadcast"]
MODES: tuple[Mode, ...] = ("chain", "broadcast")
#: default staging budget per rank
STAGING_BYTES = 64 << 20
#: the smallest staging budget: `MIN_SLOTS` chunks of `ALIGN_BYTES`
MIN_STAGING_BYTES = transport.MIN_SLOTS * ALIGN_BYTES


class TransferError(RuntimeError):
    """A transfer failed on this rank: it timed out or lost its peer. Names the transfer (its
    index in `Executor.plan`), the peer rank waited on, the tensors, the bytes moved so far,
    and what the job's store says about which rank stopped (`heartbeat`). `transfer` is None
    when the collective check of a run's arguments, before any transfer, failed."""

    def __init__(
        self, rank: int, transfer: int | None, peer: int | None, tensors: list[str], message: str
    ) -> None:
        self.rank, self.transfer, self.peer, self.tensors = rank, transfer, peer, tensors
        super().__init__(message)


@dataclass(frozen=True)
class StepTiming:
    """When this rank worked on one transfer, in seconds since `run` started."""

    index: int
    start_s: float
    end_s: float


@dataclass(frozen=True)
class MemoryPlan:
    """What a run allocates on this rank beyond the caller's tensors."""

    #: the staging pool, allocated at set-up
    staging_bytes: int
    #: most bytes of relay buffers alive at once during a run
    peak_relay_bytes: int
    #: this rank's destination shards, allocated by `run` for those not given in `out`
    destination_bytes: int


def _check_settings(mode: str, chunk_bytes: int, staging_bytes: int) -> None:
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {', '.join(MODES)}, got {mode!r}")
    if chunk_bytes < ALIGN_BYTES:
        raise ValueError(f"chunk_bytes: must be at least {ALIGN_BYTES}, got {chunk_bytes}")
    if staging_bytes < MIN_STAGING_BYTES:
        raise ValueError(
            f"staging_bytes: must be at least {MIN_STAGING_BYTES}, got {staging_bytes}"
        )


def _use_device(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.set_device(device)


def default_device() -> torch.device:
    """The current CUDA device under NCCL, the CPU otherwise."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


class Executor:
    """A plan prepared on this rank: process groups, its program, a staging pool.

    `Executor(plan, request)` must be called by every rank of the default world, in the same
    order relative to other collectives. `mode="chain"` forwards chunks along the plan's
    routes with p2p; `mode="broadcast"` uses `dist.broadcast` per chunk on one cached group per
    distinct set of participants (created at set-up, the same order on every rank).
    `staging_bytes` bounds the staging pool; `chunk_bytes` the chunk size (both must be the
    same on every rank). Operations time out after `timeout`.
    """

    def __init__(
        self,
        plan: Plan,
        request: Request,
        *,
        mode: Mode = "chain",
        staging_bytes: int = STAGING_BYTES,
        device: torch.device | None = None,
        timeout: timedelta = timedelta(minutes=5),
        chunk_bytes: int = transport.CHUNK_BYTES,
    ) -> None:
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.mode = mode
        self.device = device if device is not None else default_device()
        self.request = request
        # every rank prepares on its own, then all agree: a failure anywhere raises everywhere
        prepared, code, problem_text = None, OK, None
        try:
            _check_settings(mode, chunk_bytes, staging_bytes)
            prepared = prepare(
                plan,
                request,
                self.rank,
                self.world_size,
                mode=mode,
                chunk_bytes=chunk_bytes,
                staging_bytes=staging_bytes,
            )
        except InvalidPlanError as err:
            code, problem_text = INVALID_PLAN, str(err)
        except ValueError as err:
            code, problem_text = BAD_ARGUMENT, str(err)
        except Exception as err:  # a plan too damaged to walk is still refused everywhere
            code, problem_text = (
                INVALID_PLAN,
                f"plan: cannot be prepared ({type(err).__name__}: {err})",
            )
        self._group = dist.new_group(list(range(self.world_size)), timeout=timeout)
        try:
            most_relay_bytes = agree_on_plan(
                code,
                problem_text,
                prepared.fingerprint if prepared is not None else 0,
                prepared.program.peak_relay_bytes if prepared is not None else 0,
                self.rank,
                list(range(self.world_size)),
                self._group,
                self.device,
            )
        except (PlanMismatchError, ValueError):
            dist.destroy_process_group(self._group)
            raise
        assert prepared is not None  # every rank agreed that every rank prepared
        problem, program = prepared.problem, prepared.program
        self.chunk_bytes = prepared.chunk_bytes
        #: the plan this executor runs: the one given, or it with relays folded (below)
        self.plan = plan
        #: transfers that travel with another one (index -> its carrier), see `relays`
        self.folded: dict[int, int] = {}
        groups = prepared.broadcast_groups
        if most_relay_bytes > staging_bytes - transport.MIN_SLOTS * self.chunk_bytes:
            # every rank folds the same plan the same way: no agreement needed again
            folding = folded_plan(problem, plan)
            self.plan, self.folded = folding.plan, folding.carrier_of
            mine = folding.device_transfers(self.rank)
            program = rank_program(problem, mine, self.rank, self.chunk_bytes)
            groups = tuple(member_sets(self.plan.transfers)) if mode == "broadcast" else ()
        self.program: RankProgram = program
        self.members = sorted(problem.src_devices | problem.dst_devices)
        self._members_group = self._group
        if len(self.members) < self.world_size:  # collective: every rank creates it
            self._members_group = dist.new_group(self.members, timeout=timeout)
        self._groups: dict[tuple[int, ...], dist.ProcessGroup] = {}
        if mode == "broadcast":
            for members in groups:  # collective: every rank, same order
                group = dist.new_group(list(members), timeout=timeout)
                if self.rank in members:
                    self._groups[members] = group
        #: per side, every tensor's torch dtype (the destination's travels: senders convert)
        self._dtypes = {
            "src": [TORCH_DTYPES[t.dtype] for t in request.tensors],
            "dst": [TORCH_DTYPES[t.wire_dtype] for t in request.tensors],
        }
        #: per side, the local data of every tensor this rank holds or receives
        self._holdings = {
            side: {
                i: holding
                for i in range(len(request.tensors))
                if (holding := problem.holding_of(i, side, self.rank)) is not None
            }
            for side in ("src", "dst")
        }
        # relay buffers come out of the staging budget; at least two slots keep chunks moving
        room = (staging_bytes - program.peak_relay_bytes) // self.chunk_bytes
        num_slots = min(max(room, 2), program.max_chunks)
        self._pool = (
            transport.StagingPool(num_slots, self.chunk_bytes, self.device) if num_slots else None
        )
        self._stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        self._lock = threading.Lock()
        self._heartbeats = Heartbeats(
            default_store(), f"meshcast/heartbeat/{self._group.group_name}", self.rank, self.members
        )
        if self.rank in self.members:
            self._heartbeats.start()  # until close: a rank computing between runs is alive
        self._channel: ThreadPoolExecutor | None = None
        self.last_timings: list[StepTiming] = []

    @property
    def steps(self) -> tuple[RankStep, ...]:
        """The transfers this rank takes part in, in plan order."""
        return self.program.steps

    @property
    def memory(self) -> MemoryPlan:
        """What a run allocates on this rank, beyond the caller's tensors."""
        return MemoryPlan(
            staging_bytes=self._pool.num_bytes if self._pool is not None else 0,
            peak_relay_bytes=self.program.peak_relay_bytes,
            destination_bytes=sum(
                math.prod(shape) * self.request.tensors[i].itemsize_bytes
                for i, h in self._holdings["dst"].items()
                for shape in h.shapes
            ),
        )

    @property
    def predicted_s(self) -> float:
        """The port-v1 makespan of the plan this executor runs (`self.plan`)."""
        return self.plan.makespan_s

    def _name(self, tensor: int) -> str:
        return self.request.tensors[tensor].name

    def _expected(self, side: str) -> dict[str, Expected]:
        """Per tensor this rank holds (`side="src"`) or receives: its local data's form."""
        return {
            self._name(i): Expected(h.shapes, self._dtypes[side][i], h.listed)
            for i, h in self._holdings[side].items()
        }

    @property
    def source_tensors(self) -> list[str]:
        """Names of the tensors this rank must pass to `run`."""
        return list(self._expected("src"))

    @property
    def destination_tensors(self) -> list[str]:
        """Names of the tensors `run` returns on this rank (and that `out` may give)."""
        return list(self._expected("dst"))

    def _arguments(self, source_shards: Shards, out: Shards) -> None:
        problem = check_arguments(
            source_shards, out, self._expected("src"), self._expected("dst"), self.device
        )
        try:
            agree(problem, self.rank, self.members, self._members_group, self.device)
        except RuntimeError as err:  # the collective itself failed: a rank stopped or died
            what = f"the check of this run's arguments (a collective over ranks {self.members})"
            raise self.collective_failure(what, err) from err

    @contextlib.contextmanager
    def _on_stream(self) -> Iterator[None]:
        """Communication and copies on the executor's own CUDA stream, after the caller's work
        on its tensors; the run ends when they are done."""
        if self._stream is None:
            yield
            return
        self._stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self._stream):
            yield
        self._stream.synchronize()

    def _move(self, step: RankStep, tensors: LocalTensors) -> None:
        message = step.message
        lengths = [message.chunk_length(k) for k in range(message.num_chunks)]
        assert self._pool is not None
        fill = partial(tensors.copy_chunk, step, to_wire=True) if step.is_sender else None
        keeps = not step.is_sender and any(step.segments)
        drain = partial(tensors.copy_chunk, step, to_wire=False) if keeps else None
        chunks = transport.Chunks(self._pool, lengths, partial(tensors.direct, step), fill, drain)
        if self.mode == "broadcast" and step.participants in self._groups:
            transport.broadcast(chunks, step.src, self._groups[step.participants])
        else:
            transport.chain(chunks, step.parent, step.children, self._group)

    def run(self, source_shards: Shards, out: Shards | None = None) -> dict[str, LocalData]:
        """Move the data; return this rank's destination data of every tensor whose
        destination mesh contains it, keyed by tensor name (empty on other ranks): a tensor
        (DTensor's local tensor for placements), or a list of tensors, one per block, for
        block layouts. Source shards come in the same forms.

        `out` maps tensor names to data the bytes land in (any strided views, not sharing
        memory with the sources); it is returned as it is. Data not in `out` is allocated
        once. A bad argument on any rank is a `ValueError` on every rank of the run, raised
        before any data moves."""
        out = {} if out is None else out
        if not self._lock.acquire(blocking=False):
            raise RuntimeError("this Executor is already running; wait for the previous run")
        try:
            if self.rank not in self.members:
                if source_shards or out:
                    raise ValueError(
                        f"rank {self.rank} is in neither mesh: expected no source_shards and no "
                        f"out, got {sorted([*source_shards, *out])}"
                    )
                return {}
            self._arguments(source_shards, out)
            destinations = self._destinations(out)
            with torch.no_grad(), self._on_stream():
                self._run(source_shards, destinations)
            return destinations
        finally:
            self._lock.release()

    def _destinations(self, out: Shards) -> dict[str, LocalData]:
        """The caller's `out` data, and data allocated for the other destinations (on the
        caller's stream, which owns them)."""
        made: dict[str, LocalData] = {}
        for name, want in self._expected("dst").items():
            if name in out:
                made[name] = out[name]
                continue
            tensors = [torch.empty(s, dtype=want.dtype, device=self.device) for s in want.shapes]
            made[name] = as_local_data(tensors, want.listed)
        return made

    def _run(self, source_shards: Shards, destinations: Mapping[str, LocalData]) -> None:
        program = self.program
        sources = region_views(program.sources, source_shards, self._name)
        targets = region_views(program.destinations, destinations, self._name)
        tensors = LocalTensors(program, self._dtypes["dst"], sources, targets, self.device)
        start, timings = time.perf_counter(), []
        tensors.local_copies()
        for done, step in enumerate(program.steps):
            began = time.perf_counter() - start
            tensors.make_relays(step)
            try:
                self._move(step, tensors)
            except transport.PeerFailure as failure:
                raise self._failed(step, done, failure) from failure
            tensors.release_relays(step)
            timings.append(StepTiming(step.index, began, time.perf_counter() - start))
        self.last_timings = timings

    def who_stopped(self) -> str:
        """Which rank stopped making progress, in words, as the job's store tells (after a
        failed wait: a rank that was stopped or died)."""
        return self._heartbeats.silent()

    def collective_failure(self, what: str, err: BaseException) -> TransferError:
        """The error of a collective among this run's ranks (`what`) that failed with `err`."""
        text = f"rank {self.rank}: {what} failed: {err}; {self.who_stopped()}"
        return TransferError(self.rank, None, None, [], text)

    def _failed(self, step: RankStep, done: int, failure: transport.PeerFailure) -> TransferError:
        """The error of a transfer whose wait failed, in words a person can act on."""
        message = step.message
        names = sorted({self._name(p.tensor) for p in message.pieces})
        moved = sum(message.chunk_length(k) for k in range(failure.chunk))
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        text = (
            f"rank {self.rank}: transfer {step.index} ({shown}; {moved:,} of "
            f"{message.num_bytes:,} bytes moved, after {done} of this rank's "
            f"{len(self.program.steps)} transfers): {failure}; {self.who_stopped()}"
        )
        return TransferError(self.rank, step.index, failure.peer, names, text)

    def run_async(
        self, source_shards: Shards, out: Shards | None = None
    ) -> Future[dict[str, LocalData]]:
        """Queue a `run` on this executor's background thread and return at once;
        `.result(timeout)` gives the destination shards (or raises what `run` raised). Queued
        runs go one after another in call order, like messages on a channel, so a stage can
        queue the receives of several micro-batches ahead; compute on the caller's thread (or
        CUDA stream) overlaps them."""
        channel = self._queue()
        if self._stream is not None:  # the caller's pending work on the sources comes first
            ready = torch.cuda.Event()
            ready.record(torch.cuda.current_stream(self.device))
            return channel.submit(self._run_after, ready, source_shards, out)
        return channel.submit(self.run, source_shards, out)

    def fail_async(self, problem: str) -> Future[None]:
        """Queue, in place of this rank's next run, a run that fails: its argument check
        carries `problem`, so every member's run at that place raises `ValueError` naming this
        rank and `problem` (a rank that cannot take part tells the others at once, instead of
        leaving them to wait for its data until the timeout)."""
        return self._queue().submit(self._fail, problem)

    def _fail(self, problem: str) -> None:
        if self.rank in self.members:
            agree(problem, self.rank, self.members, self._members_group, self.device)

    def _queue(self) -> ThreadPoolExecutor:
        if self._channel is None:
            self._channel = ThreadPoolExecutor(
                max_workers=1,
                thread_name_prefix=f"meshcast-executor-{self.rank}",
                initializer=_use_device,
                initargs=(self.device,),
            )
        return self._channel

    def _run_after(
        self, ready: torch.cuda.Event, source_shards: Shards, out: Shards | None
    ) -> dict[str, LocalData]:
        torch.cuda.current_stream(self.device).wait_event(ready)
        return self.run(source_shards, out)

    def close(self) -> None:
        """Wait for queued runs, then destroy the executor's process groups (a collective
        call, like set-up) and release the staging pool."""
        if self._channel is not None:
            self._channel.shutdown(wait=True)
            self._channel = None
        self._heartbeats.stop()
        groups = [*self._groups.values(), self._group]
        if self._members_group is not self._group:
            groups.append(self._members_group)
        for group in groups:
            dist.destroy_process_group(group)
        self._groups.clear()
        self._pool = None

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def execute(
    plan: Plan,
    request: Request,
    source_shards: Shards,
    *,
    out: Shards | None = None,
    mode: Mode = "chain",
    staging_bytes: int = STAGING_BYTES,
    device: torch.device | None = None,
) -> dict[str, LocalData]:
    """Prepare, run once and close: `Executor(plan, request, ...).run(source_shards, out)`."""
    with Executor(plan, request, mode=mode, staging_bytes=staging_bytes, device=device) as executor:
        return executor.run(source_shards, out)
