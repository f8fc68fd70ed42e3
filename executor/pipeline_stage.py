"""Pipeline stages on meshes of their own, inside `torch.distributed.pipelining` (DESIGN §6).

torch's `PipelineStage` sends each rank's local tensor to the same rank index of the next
stage, so every stage must have the same mesh. `MeshStage` is a stage torch's schedules run
(`ScheduleGPipe`, `Schedule1F1B`, and meshcast's `ScheduleEager1F1B`) whose boundary tensors are
DTensors on its own mesh, of any placements meshcast takes: the activations go to the next
stage's mesh and layout by a meshcast plan, the gradients come back by the plan of the
reversed request.

`MeshStage(module, stage_index, num_stages, mesh, inputs=..., outputs=...)` is a collective over
the default world: every rank builds its stage at once. Set-up gathers every rank's description
(one `all_gather_object`), checks that neighbouring stages agree (the tensors one stage sends
are the ones the next expects: count, shapes, dtypes), plans every boundary on rank 0 (plans
cached in the process by request, so a rebuilt stage does not plan again; `plan_with` may ask
the service) and broadcasts the plans in one message, then prepares two executors per
boundary, activations and gradients, on every rank in the same order.

While a schedule runs, a stage's first receive of a step queues the receives of every
micro-batch of the step, activations and gradients (`Executor.run_async`: runs go one after
another, like messages on a channel), and each send is queued as soon as the schedule asks for
it, so transfers overlap the stage's compute on both ends and no sender waits for a receiver
to reach its op. The schedule's own p2p lists stay empty; the stage waits for
a micro-batch's data when the schedule computes it, and for its sends at the end of the step.

This reaches into torch's private stage base and schedule helpers; `TORCH_VERSIONS` is the
range they were read from (see `check_torch_version`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.pipelining.stage import _PipelineStageBase
from torch.distributed.tensor import DTensor, Placement, Replicate

from meshcast.executor.dtensor import (
    PlanFunction,
    local_cluster,
    mesh_json,
    placement_names,
)
from meshcast.executor.dtypes import DTYPE_NAMES
from meshcast.executor.executor import Executor, default_device
from meshcast.executor.local_data import LocalData
from meshcast.pipeline.boundaries import reversed_request
from meshcast.planner.plan import Plan
from meshcast.planner.request import Request, parse_request
from meshcast.solver import plan_request

#: torch versions (first two numbers, inclusive) whose pipelining internals this was read from
TORCH_VERSIONS = ((2, 13), (2, 13))
#: plans made in this process, by request id (rank 0 plans; the others receive them)
_plans: dict[str, Plan] = {}


def check_torch_version(version: str = torch.__version__) -> None:
    """`RuntimeError` when `version` is outside `TORCH_VERSIONS`: the stage overrides private
    methods of `torch.distributed.pipelining` that change between releases."""
    numbers = tuple(int(part) for part in version.split("+")[0].split(".")[:2])
    low, high = TORCH_VERSIONS
    if not low <= numbers <= high:
        raise RuntimeError(
            f"torch {version}: meshcast's pipeline stage was written against torch "
            f"{low[0]}.{low[1]}-{high[0]}.{high[1]} (it overrides private methods of "
            "torch.distributed.pipelining); use a torch in that range"
        )


@dataclass(frozen=True)
class StageTensor:
    """A boundary tensor as a stage sees it: global shape, dtype and placements on the stage's
    mesh (what one micro-batch's DTensor looks like)."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    placements: tuple[Placement, ...]

    @classmethod
    def like(cls, x: StageTensor | torch.Tensor, mesh: DeviceMesh) -> StageTensor:
        """The layout of example `x`: a DTensor as it is; a plain tensor replicated."""
        if isinstance(x, StageTensor):
            return x
        if isinstance(x, DTensor):
            return cls(tuple(x.shape), x.dtype, tuple(x.placements))
        return cls(tuple(x.shape), x.dtype, (Replicate(),) * mesh.ndim)


@dataclass(frozen=True)
class _Described:
    """What one rank tells the others at set-up."""

    rank: int
    stage: int
    mesh: dict[str, Any]
    #: per input and output: shape, dtype name, placements in request spelling
    inputs: tuple[tuple[tuple[int, ...], str, tuple[str, ...]], ...]
    outputs: tuple[tuple[tuple[int, ...], str, tuple[str, ...]], ...]
    problem: str | None = None


def _spelled(
    tensors: Sequence[StageTensor], where: str
) -> tuple[tuple[tuple[int, ...], str, tuple[str, ...]], ...]:
    spelled = []
    for k, t in enumerate(tensors):
        if t.dtype not in DTYPE_NAMES:
            raise ValueError(f"{where}[{k}].dtype: {t.dtype} is not supported")
        names = placement_names(t.placements, f"{where}[{k}].placements")
        spelled.append((tuple(t.shape), DTYPE_NAMES[t.dtype], tuple(names)))
    return tuple(spelled)


def _describe(
    stage: int,
    num_stages: int,
    mesh: DeviceMesh,
    inputs: Sequence[StageTensor],
    outputs: Sequence[StageTensor],
) -> _Described:
    rank = dist.get_rank()
    mesh_spec = mesh_json(mesh)
    try:
        if not 0 <= stage < num_stages:
            raise ValueError(f"stage_index: expected 0 .. {num_stages - 1}, got {stage}")
        if rank not in mesh_spec["devices"]:
            raise ValueError(f"mesh: rank {rank} is not in its stage's mesh {mesh_spec}")
        if stage > 0 and not inputs:
            raise ValueError(f"inputs: stage {stage} receives its inputs, give their layouts")
        if stage < num_stages - 1 and not outputs:
            raise ValueError(f"outputs: stage {stage} sends its outputs, give their layouts")
        return _Described(
            rank,
            stage,
            mesh_spec,
            _spelled(inputs, "inputs") if stage > 0 else (),
            _spelled(outputs, "outputs") if stage < num_stages - 1 else (),
        )
    except ValueError as err:
        return _Described(rank, stage, mesh_spec, (), (), str(err))


def _stages(everyone: list[_Described], num_stages: int) -> list[_Described]:
    """One description per stage, checked: every rank of a stage said the same, every stage
    has ranks, neighbours agree. The same on every rank, so its errors are raised everywhere."""
    problems = [d for d in everyone if d.problem]
    if problems:
        raise ValueError(f"rank {problems[0].rank}: {problems[0].problem}")
    by_stage: dict[int, _Described] = {}
    for d in everyone:
        first = by_stage.setdefault(d.stage, d)
        if (first.mesh, first.inputs, first.outputs) != (d.mesh, d.inputs, d.outputs):
            raise ValueError(
                f"stage {d.stage}: rank {d.rank} describes it differently from rank {first.rank} "
                f"(mesh {d.mesh} against {first.mesh}, or its inputs or outputs)"
            )
    missing = [s for s in range(num_stages) if s not in by_stage]
    if missing:
        raise ValueError(f"stage_index: no rank builds stage(s) {missing} of {num_stages}")
    for d in by_stage.values():  # every rank is in its own stage's mesh (`_describe`)
        outsiders = [r for r in d.mesh["devices"] if everyone[r].stage != d.stage]
        if outsiders:
            raise ValueError(
                f"stage {d.stage}: its mesh holds rank {outsiders[0]}, which builds stage "
                f"{everyone[outsiders[0]].stage}"
            )
    stages = [by_stage[s] for s in range(num_stages)]
    for k in range(num_stages - 1):
        sent, expected = stages[k].outputs, stages[k + 1].inputs
        if len(sent) != len(expected):
            raise ValueError(
                f"stage {k} sends {len(sent)} tensor(s), stage {k + 1} expects {len(expected)}"
            )
        for j, (a, b) in enumerate(zip(sent, expected, strict=True)):
            if a[:2] != b[:2]:
                raise ValueError(
                    f"stage {k} output {j} is {a[0]} {a[1]}, stage {k + 1} input {j} expects "
                    f"{b[0]} {b[1]}"
                )
    return stages


def boundary_request(
    sender: _Described,
    receiver: _Described,
    cluster: Mapping[str, Any],
    algorithm: str,
    time_limit_s: float,
) -> Request:
    """The request of the activations from `sender`'s stage to `receiver`'s."""
    stage = sender.stage
    tensors = [
        {
            "name": f"stage{stage}.out{j}",
            "shape": list(shape),
            "dtype": dtype,
            "src": {"mesh": f"stage{stage}", "placements": list(src)},
            "dst": {"mesh": f"stage{stage + 1}", "placements": list(dst)},
        }
        for j, ((shape, dtype, src), (_, _, dst)) in enumerate(
            zip(sender.outputs, receiver.inputs, strict=True)
        )
    ]
    return parse_request(
        {
            "tensors": tensors,
            "meshes": {f"stage{stage}": sender.mesh, f"stage{stage + 1}": receiver.mesh},
            "cluster": dict(cluster),
            "options": {"algorithm": algorithm, "time_limit_s": time_limit_s},
        }
    )


def _plans_on_rank0(requests: list[Request], plan_with: PlanFunction) -> list[Plan]:
    """Rank 0 plans every request not planned before in this process; every rank receives
    all of them in one broadcast."""
    box: list[Any] = [None]
    if dist.get_rank() == 0:
        for request in requests:
            if request.request_id not in _plans:
                _plans[request.request_id] = plan_with(request)
        box[0] = [_plans[r.request_id] for r in requests]
    dist.broadcast_object_list(box, src=0)
    return list(box[0])


class _Boundary:
    """The two executors of a boundary: activations (`requests[0]`) and gradients (the
    reversed request, `requests[1]`)."""

    def __init__(
        self, requests: tuple[Request, Request], plans: tuple[Plan, Plan], timeout: timedelta
    ) -> None:
        self.names = [t.name for t in requests[0].tensors]
        self.activations = Executor(plans[0], requests[0], timeout=timeout)
        self.gradients = Executor(plans[1], requests[1], timeout=timeout)

    def close(self) -> None:
        self.activations.close()
        self.gradients.close()


class MeshStage(_PipelineStageBase):
    """A stage of `torch.distributed.pipelining` on its own mesh (see the module's docstring).

    `inputs` and `outputs` are the layouts of the micro-batch tensors the stage receives from
    the previous stage and sends to the next (`StageTensor`, or example tensors: a DTensor on
    `mesh`, a plain tensor meaning replicated over it); the first stage's inputs come from the
    schedule's `step` and the last one's outputs go to the loss, so they are not given. The
    module takes the received DTensors and returns DTensors on `mesh` (a plain tensor is taken
    as replicated); a gradient that comes out in other placements (such as `Partial`) is
    redistributed to the input's layout before it is sent. `cluster` is the requests' cluster
    object (default: `local_cluster()`, a collective). Call `close()` on every rank at the end
    (a collective)."""

    def __init__(
        self,
        submodule: torch.nn.Module,
        stage_index: int,
        num_stages: int,
        mesh: DeviceMesh,
        *,
        inputs: Sequence[StageTensor | torch.Tensor] = (),
        outputs: Sequence[StageTensor | torch.Tensor] = (),
        device: torch.device | None = None,
        cluster: Mapping[str, Any] | None = None,
        algorithm: str = "auto",
        time_limit_s: float = 2.0,
        plan_with: PlanFunction = plan_request,
        timeout: timedelta = timedelta(minutes=5),
    ) -> None:
        check_torch_version()
        rank = dist.get_rank()
        # torch's base wants a process group no larger than the pipeline; the stage sends
        # nothing through it, so this rank's own group will do
        own = dist.new_group([rank], use_local_synchronization=True)
        device = device if device is not None else default_device()
        super().__init__(submodule, stage_index, num_stages, device, group=own)
        self.mesh = mesh
        self.inputs = [StageTensor.like(t, mesh) for t in inputs]
        self.outputs = [StageTensor.like(t, mesh) for t in outputs]
        everyone: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(
            everyone, _describe(stage_index, num_stages, mesh, self.inputs, self.outputs)
        )
        stages = _stages(everyone, num_stages)
        cluster = cluster if cluster is not None else local_cluster()
        pairs = [
            (request, reversed_request(request))
            for request in (
                boundary_request(stages[k], stages[k + 1], cluster, algorithm, time_limit_s)
                for k in range(num_stages - 1)
            )
        ]
        plans = _plans_on_rank0([r for pair in pairs for r in pair], plan_with)
        #: boundary k moves stage k's outputs to stage k + 1 (every rank prepares every one)
        self.boundaries = [
            _Boundary(pair, (plans[2 * k], plans[2 * k + 1]), timeout)
            for k, pair in enumerate(pairs)
        ]
        self._received: dict[str, dict[int, Future[dict[str, LocalData]]]] = {"F": {}, "B": {}}
        self._posted = False
        self._sends: list[Future[dict[str, LocalData]]] = []
        self._aborted = False

    @property
    def before(self) -> _Boundary | None:
        """The boundary this stage receives activations from (and sends gradients into)."""
        return None if self.is_first else self.boundaries[self.stage_index - 1]

    @property
    def after(self) -> _Boundary | None:
        """The boundary this stage sends activations into (and receives gradients from)."""
        return None if self.is_last else self.boundaries[self.stage_index]

    # -- set-up the schedule asks for --------------------------------------------------------

    def _prepare_forward_infra(
        self,
        num_microbatches: int,
        args: Any,
        kwargs: dict[str, Any] | None = None,
        has_backward: bool = False,
    ) -> None:
        self.chunks = num_microbatches
        count = len(args) if self.is_first and isinstance(args, tuple) else len(self.inputs)
        # torch's backward keeps this many input gradients per micro-batch
        self._stage_meta.inputs = (None,) * max(count, 1)  # type: ignore[assignment]
        return None

    def _prepare_backward_infra(
        self,
        num_microbatches: int,
        loss_fn: Any = None,
        target: torch.Tensor | None = None,
        received_grad_meta: Any = None,
        loss_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.chunks = num_microbatches
        return None

    def _create_grad_recv_info(self, act_send_info: dict) -> tuple[Any, ...]:
        return ()  # gradients arrive through the boundary's executor

    def _get_init_p2p_neighbors_ops(self) -> list[dist.P2POp]:
        return []  # the executors' process groups were made at set-up

    # -- receives ----------------------------------------------------------------------------

    def _post_receives(self) -> None:
        """Queue the step's receives of every micro-batch, activations and gradients both, at
        the step's first call: a sender never waits for this stage to reach its op."""
        if self._posted:
            return
        assert self.chunks is not None
        if self.before is not None:
            executor = self.before.activations
            self._received["F"] = {m: executor.run_async({}) for m in range(self.chunks)}
        if self.after is not None and self.has_backward:
            executor = self.after.gradients
            self._received["B"] = {m: executor.run_async({}) for m in range(self.chunks)}
        self._posted = True

    def get_fwd_recv_ops(self, fwd_chunk_id: int) -> list[dist.P2POp]:
        self._post_receives()
        return []

    def get_bwd_recv_ops(self, bwd_chunk_id: int) -> list[dist.P2POp]:
        self._post_receives()
        return []

    def _arrived(self, kind: str, chunk: int) -> dict[str, LocalData]:
        self._post_receives()
        future = self._received[kind].pop(chunk, None)
        if future is None:
            raise RuntimeError(f"{self.log_prefix} micro-batch {chunk}: received twice")
        return future.result()

    # -- failures ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _telling_neighbours(self, what: str) -> Iterator[None]:
        """On an error in `what`, tell the neighbouring stages before raising it."""
        try:
            yield
        except Exception as err:
            cause = err.__cause__ or err  # torch wraps a module's error in its own
            self._abort(f"{what}: {type(cause).__name__}: {cause}")
            raise

    def _abort(self, problem: str) -> None:
        """This stage cannot go on: the runs its neighbours wait for from it (activations to
        the next stage, gradients to the previous one) fail instead, so that their ranks raise
        a `ValueError` naming this rank at once and tell theirs in turn; this rank's queued
        receives that have not started are dropped."""
        if self._aborted:
            return
        self._aborted = True
        text = f"stage {self.stage_index} stopped ({problem})"
        if self.after is not None:
            self.after.activations.fail_async(text)
        if self.before is not None and self.has_backward:
            self.before.gradients.fail_async(text)
        for pending in self._received.values():
            for future in pending.values():
                future.cancel()

    def forward_one_chunk(
        self,
        fwd_chunk_id: int,
        args: tuple[Any, ...],
        kwargs: dict[str, Any] | None = None,
        save_forward_output: bool = True,
    ) -> Any:
        with self._telling_neighbours(f"the forward of micro-batch {fwd_chunk_id}"):
            return super().forward_one_chunk(fwd_chunk_id, args, kwargs, save_forward_output)

    def backward_one_chunk(
        self,
        bwd_chunk_id: int,
        loss: torch.Tensor | None = None,
        full_backward: bool = True,
        last_backward: bool = False,
    ) -> None:
        with self._telling_neighbours(f"the backward of micro-batch {bwd_chunk_id}"):
            super().backward_one_chunk(bwd_chunk_id, loss, full_backward, last_backward)

    def _as_dtensors(
        self, data: dict[str, LocalData], names: list[str], layouts: list[StageTensor]
    ) -> list[DTensor]:
        out = []
        for name, layout in zip(names, layouts, strict=True):
            local = data[name]
            assert isinstance(local, torch.Tensor)  # placements: one local tensor
            out.append(
                DTensor.from_local(
                    local,
                    self.mesh,
                    list(layout.placements),
                    run_check=False,
                    shape=torch.Size(layout.shape),
                    stride=torch.empty(layout.shape, device="meta").stride(),
                )
            )
        return out

    def _retrieve_recv_activations(self, fwd_chunk_id: int) -> tuple[torch.Tensor, ...]:
        assert self.before is not None
        data = self._arrived("F", fwd_chunk_id)
        needs_grad = self.has_backward and torch.is_grad_enabled()
        return tuple(
            x.requires_grad_(needs_grad)
            for x in self._as_dtensors(data, self.before.names, self.inputs)
        )

    def _retrieve_recv_grads(self, bwd_chunk_id: int) -> tuple[DTensor, ...]:
        assert self.after is not None
        data = self._arrived("B", bwd_chunk_id)
        return tuple(self._as_dtensors(data, self.after.names, self.outputs))

    # -- sends -------------------------------------------------------------------------------

    def _local(self, x: torch.Tensor | None, layout: StageTensor) -> torch.Tensor:
        """This rank's part of `x` laid out as `layout` (a missing gradient is zeros). Its
        shape and dtype are checked by the executor, on every rank of the boundary."""
        if x is None:
            x = torch.zeros(layout.shape, dtype=layout.dtype, device=self.device)
        if not isinstance(x, DTensor):
            x = DTensor.from_local(x.detach(), self.mesh, [Replicate()] * self.mesh.ndim)
        if tuple(x.placements) != layout.placements:
            x = x.redistribute(self.mesh, list(layout.placements))
        return x.to_local().detach()

    def get_fwd_send_ops(self, fwd_chunk_id: int) -> list[dist.P2POp]:
        if self.after is None:
            return []
        outputs, _ = self.fwd_cache[fwd_chunk_id]
        shards = {
            name: self._local(out, layout)
            for name, out, layout in zip(self.after.names, outputs, self.outputs, strict=True)
        }
        self._sends.append(self.after.activations.run_async(shards))
        return []

    def get_bwd_send_ops(self, bwd_chunk_id: int) -> list[dist.P2POp]:
        if not self.has_backward or self.before is None:
            return []
        grads = self.bwd_cache.pop(bwd_chunk_id)
        shards = {
            name: self._local(grad, layout)
            for name, grad, layout in zip(self.before.names, grads, self.inputs, strict=True)
        }
        self._sends.append(self.before.gradients.run_async(shards))
        return []

    def wait_sends(self) -> None:
        """Wait for every queued send; raise the first one's error."""
        sends, self._sends = self._sends, []
        with self._telling_neighbours("a send"):
            for future in sends:
                future.result()

    # -- per step ----------------------------------------------------------------------------

    def perform_reduce_grad(self, grad_scale_factor: int) -> None:
        self.wait_sends()  # the step's last call: its data has left
        super().perform_reduce_grad(grad_scale_factor)

    def clear_runtime_states(self) -> None:
        self.wait_sends()
        left = sorted(m for kind in "FB" for m in self._received[kind])
        # a step that stopped half-way: its queued receives would take the next step's data
        if left or self._aborted:
            raise RuntimeError(
                f"{self.log_prefix} the last step stopped half-way (micro-batches {left} were "
                "never consumed); the pipeline cannot go on: rebuild the stages"
            )
        self._posted = False
        super().clear_runtime_states()

    def close(self) -> None:
        """Wait for the sends, then release every boundary's executors (a collective)."""
        self.wait_sends()
        for boundary in self.boundaries:
            boundary.close()
