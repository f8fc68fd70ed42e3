"""Whole-model refit: a trainer's state dict into live inference-engine parameters, planned once.

`Refit(rules, trainer_state=..., engine_params=..., engine_mesh=...)` is a collective over the
default world. Trainer ranks pass their state dict (name -> DTensor, any placements meshcast
takes, each on its own mesh or sub-mesh); each engine rank passes its live parameters (name ->
local tensor) and its engine's tensor-parallel mesh; ranks in neither pass nothing. The rules
(`planner.refit_map`) say which trainer tensors each engine parameter is made of and what each
engine rank keeps. Set-up costs a bounded number of collectives, not one per tensor: one
gather of every rank's description (and of host names when no cluster is given), one
broadcast of the plan rank 0 makes for the whole model, and the executor's own set-up.

`sync()` then moves the trainer's current values straight into the engine's parameters (views
of them: the same tensor objects, in place), bit-exact, through the executor's fixed staging
pool; it plans nothing and allocates nothing new after the first. A `sync` that fails (a
trainer tensor that changed shape or dtype on one rank is a `ValueError` on every trainer and
engine rank, before any data moves) leaves `current` false: the engine's weights must not be
taken as the trainer's. Ranks in neither role take part in set-up only.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor

from meshcast.executor.dtensor import (
    PlanFunction,
    local_cluster,
    mesh_json,
    placement_names,
    plan_on_rank0,
)
from meshcast.executor.dtypes import DTYPE_NAMES
from meshcast.executor.executor import STAGING_BYTES, Executor
from meshcast.executor.refit_verify import RefitChecksums
from meshcast.planner import build_problem
from meshcast.planner.dtypes import FLOAT_DTYPES
from meshcast.planner.holdings import Holding, holding_of
from meshcast.planner.refit_map import Rule, check_engine_shapes, refit_blocks
from meshcast.planner.request import Layout, MeshSpec, Request, parse_placement, parse_request
from meshcast.solver import plan_request


@dataclass(frozen=True)
class _Described:
    """What one rank tells the others at set-up."""

    rank: int
    #: trainer: name -> (shape, dtype, its mesh, its placements)
    tensors: dict[str, tuple[tuple[int, ...], str, dict[str, Any], tuple[str, ...]]] | None
    #: engine: its engine's ranks in tensor-parallel order, and its parameters' local shapes
    #: and dtypes
    engine: tuple[tuple[int, ...], dict[str, tuple[tuple[int, ...], str]]] | None
    #: what is wrong with this rank's arguments
    problem: str | None = None


def _describe(
    trainer_state: Mapping[str, Any] | None,
    engine_params: Mapping[str, Any] | None,
    engine_mesh: DeviceMesh | None,
) -> _Described:
    rank = dist.get_rank()
    try:
        if trainer_state is not None and engine_params is not None:
            raise ValueError("a rank is either a trainer or an engine rank, not both")
        tensors = None
        if trainer_state is not None:
            tensors = {}
            for name, t in trainer_state.items():
                if not isinstance(t, DTensor):
                    raise ValueError(
                        f"trainer_state[{name!r}]: expected a DTensor, got {type(t).__name__}"
                    )
                if t.dtype not in DTYPE_NAMES:
                    raise ValueError(f"trainer_state[{name!r}]: dtype {t.dtype} is not supported")
                names = placement_names(t.placements, f"trainer_state[{name!r}].placements")
                tensors[name] = (
                    tuple(t.shape),
                    DTYPE_NAMES[t.dtype],
                    mesh_json(t.device_mesh),
                    tuple(names),
                )
        engine = None
        if engine_params is not None:
            if engine_mesh is None or engine_mesh.ndim != 1:
                raise ValueError(
                    "engine_mesh: an engine rank passes its engine's 1-D tensor-parallel mesh"
                )
            devices = tuple(engine_mesh.mesh.flatten().tolist())
            for name, t in engine_params.items():
                if not isinstance(t, torch.Tensor) or isinstance(t, DTensor):
                    raise ValueError(f"engine_params[{name!r}]: expected a local torch.Tensor")
                if t.dtype not in DTYPE_NAMES:
                    raise ValueError(f"engine_params[{name!r}]: dtype {t.dtype} is not supported")
            engine = (
                devices,
                {name: (tuple(t.shape), DTYPE_NAMES[t.dtype]) for name, t in engine_params.items()},
            )
        return _Described(rank, tensors, engine)
    except ValueError as err:
        return _Described(rank, None, None, str(err))


def _agreed(everyone: list[_Described]) -> None:
    """Raise on every rank what any rank found wrong with its own arguments."""
    problems = [(d.rank, d.problem) for d in everyone if d.problem]
    if problems:
        rank, problem = problems[0]
        raise ValueError(f"rank {rank}: {problem}")


def refit_request(
    rules: Mapping[str, Rule],
    everyone: list[_Described],
    cluster: Mapping[str, Any],
    algorithm: str,
    time_limit_s: float,
) -> tuple[Request, tuple[tuple[int, ...], ...]]:
    """The one request of the whole model, and the engines (their ranks in TP order), from
    every rank's description. The same on every rank: its errors are raised everywhere."""
    trainers = [d for d in everyone if d.tensors is not None]
    if not trainers:
        raise ValueError("trainer_state: no rank passed one")
    # every trainer rank holds the same tensors; a tensor's mesh may differ per rank (FSDP2
    # keeps some tensors on a sub-mesh containing the rank): then its layout is blocks
    first = trainers[0].tensors
    assert first is not None
    for d in trainers[1:]:
        assert d.tensors is not None
        if set(d.tensors) != set(first):
            odd = sorted(set(d.tensors) ^ set(first))[0]
            raise ValueError(
                f"{odd}: in the state dict of some trainer ranks, not of rank {d.rank}"
            )
    engines = sorted({d.engine[0] for d in everyone if d.engine is not None})
    if not engines:
        raise ValueError("engine_params: no rank passed any")
    num_ranks = len(engines[0])
    if any(len(e) != num_ranks for e in engines):
        raise ValueError(f"engine_mesh: engines of different sizes {[len(e) for e in engines]}")
    shapes = {name: spec[0] for name, spec in first.items()}
    engine_dtypes: dict[str, str] = {}
    for d in everyone:
        if d.engine is not None:
            params = d.engine[1]
            local = {name: shape for name, (shape, _) in params.items()}
            check_engine_shapes(rules, shapes, local, d.engine[0].index(d.rank), num_ranks)
            for name, (_, dtype) in params.items():
                if engine_dtypes.setdefault(name, dtype) != dtype:
                    raise ValueError(
                        f"{name}: {engine_dtypes[name]} on some engine ranks, {dtype} on "
                        f"rank {d.rank}"
                    )
    destination_dtypes = _destination_dtypes(rules, first, engine_dtypes)
    blocks = refit_blocks(rules, shapes, num_ranks, len(engines))
    meshes: dict[str, dict[str, Any]] = {
        "engines": {"shape": [len(engines), num_ranks], "devices": [r for e in engines for r in e]}
    }
    tensors = []
    for name, (shape, dtype, mesh, placements) in first.items():
        held = {
            (tuple(d.tensors[name][2]["devices"]), d.tensors[name][3])
            for d in trainers
            if d.tensors
        }
        if len(held) == 1:  # one mesh: DTensor placements as they are
            key = next((k for k, spec in meshes.items() if spec == mesh), f"trainer{len(meshes)}")
            meshes[key] = mesh
            src: dict[str, Any] = {"mesh": key, "placements": list(placements)}
        else:  # each rank on its own sub-mesh: what each holds, as blocks
            meshes["trainers"] = {"shape": [len(trainers)], "devices": [d.rank for d in trainers]}
            src = {"mesh": "trainers", "blocks": [_held_boxes(d, name) for d in trainers]}
        tensors.append(
            {
                "name": name,
                "shape": list(shape),
                "dtype": dtype,
                "src": src,
                "dst": {
                    "mesh": "engines",
                    "blocks": [
                        [[list(iv) for iv in box] for box in boxes] for boxes in blocks[name]
                    ],
                    "dtype": destination_dtypes[name],
                },
            }
        )
    raw = {
        "tensors": tensors,
        "meshes": meshes,
        "cluster": dict(cluster),
        "options": {"algorithm": algorithm, "time_limit_s": time_limit_s},
    }
    return parse_request(raw), tuple(engines)


def _destination_dtypes(
    rules: Mapping[str, Rule],
    trainer: Mapping[str, tuple[tuple[int, ...], str, Any, Any]],
    engine_dtypes: Mapping[str, str],
) -> dict[str, str]:
    """Per trainer tensor, the dtype of the engine parameters it lands in: the sender converts
    (fp32 trainer weights into a bf16 engine); only a float goes into another float."""
    out: dict[str, str] = {}
    for engine_name, rule in rules.items():
        dtype = engine_dtypes[engine_name]
        for name in rule.sources:
            source = trainer[name][1]
            if dtype != source and not (source in FLOAT_DTYPES and dtype in FLOAT_DTYPES):
                raise ValueError(
                    f"{engine_name}: the engine's {dtype} parameter cannot hold the trainer's "
                    f"{source} {name!r} (only a float converts to another float)"
                )
            if out.setdefault(name, dtype) != dtype:
                raise ValueError(
                    f"{name}: lands in engine parameters of two dtypes ({out[name]}, {dtype})"
                )
    return out


def _holding(
    shape: tuple[int, ...], mesh: Mapping[str, Any], placements: tuple[str, ...], rank: int
) -> Holding:
    """What `rank` holds of a tensor of `shape` laid out by `placements` over `mesh`."""
    spec = MeshSpec(tuple(mesh["shape"]), tuple(mesh["devices"]))
    parsed = tuple(parse_placement("placements", p, len(shape)) for p in placements)
    return holding_of(shape, spec, Layout("mesh", parsed), spec.devices.index(rank))


def _held_boxes(d: _Described, name: str) -> list[list[list[int]]]:
    assert d.tensors is not None
    shape, _, mesh, placements = d.tensors[name]
    return [[list(iv) for iv in box] for box in _holding(shape, mesh, placements, d.rank).boxes]


def _block_views(t: DTensor, rank: int) -> list[torch.Tensor]:
    """A DTensor's local tensor as views, one per box it holds (a blocks source layout)."""
    names = tuple(placement_names(t.placements, "placements"))
    holding = _holding(tuple(t.shape), mesh_json(t.device_mesh), names, rank)
    local, views = t.to_local(), []
    for box, (_, offsets) in zip(holding.boxes, holding.places, strict=True):
        view = local
        for dim, ((lo, hi), at) in enumerate(zip(box, offsets, strict=True)):
            view = view.narrow(dim, at, hi - lo)
        views.append(view)
    return views


class Refit:
    """A whole-model refit prepared once on every rank; `sync()` every step."""

    def __init__(
        self,
        rules: Mapping[str, Rule],
        *,
        trainer_state: Mapping[str, DTensor] | None = None,
        engine_params: Mapping[str, torch.Tensor] | None = None,
        engine_mesh: DeviceMesh | None = None,
        cluster: Mapping[str, Any] | None = None,
        algorithm: str = "greedy",
        time_limit_s: float = 2.0,
        plan_with: PlanFunction = plan_request,
        staging_bytes: int = STAGING_BYTES,
        timeout: timedelta = timedelta(minutes=5),
    ) -> None:
        self.rules = dict(rules)
        self.trainer_state = trainer_state
        self.engine_params = engine_params
        mine = _describe(trainer_state, engine_params, engine_mesh)
        everyone: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(everyone, mine)
        _agreed(everyone)
        cluster = cluster if cluster is not None else local_cluster()
        #: the one request of the whole model, and its plan
        self.request, engines = refit_request(
            self.rules, everyone, cluster, algorithm, time_limit_s
        )
        self.plan = plan_on_rank0(self.request, plan_with)
        self._executor = Executor(
            self.plan, self.request, staging_bytes=staging_bytes, timeout=timeout
        )
        self._out = self._engine_views(engines) if engine_params is not None else {}
        self.members = sorted(
            d.rank for d in everyone if d.tensors is not None or d.engine is not None
        )
        self._members_group = dist.new_group(self.members, timeout=timeout)  # collective
        self._checksums: RefitChecksums | None = None
        self._checker_thread: ThreadPoolExecutor | None = None
        #: the engine's parameters hold the trainer's values of the last `sync`
        self.current = False
        self.num_syncs = 0

    def _engine_views(self, engines: tuple[tuple[int, ...], ...]) -> dict[str, list[torch.Tensor]]:
        """Per trainer tensor, views of this engine rank's parameters its blocks land in, in
        the order of its destination blocks (rules in order, parts in order)."""
        assert self.engine_params is not None
        rank = dist.get_rank()
        engine = next(e for e in engines if rank in e)
        shapes = {t.name: t.shape for t in self.request.tensors}
        out: dict[str, list[torch.Tensor]] = {}
        for name, rule in self.rules.items():
            local = rule.local(shapes, engine.index(rank), len(engine))
            param = self.engine_params[name]
            for tensor, places in local.views().items():
                views = out.setdefault(tensor, [])
                views += [param.narrow(local.dim, at, length) for at, length, _ in places]
        return out

    def sync(self, verify: bool = False) -> None:
        """Move the trainer's current values into the engine's parameters (a collective of
        the trainer and engine ranks). With `verify` on any of them, every engine box is then
        checked against the trainer's values (`refit_verify`): a mismatch is a
        `RefitMismatchError` on every rank, naming the tensor, the engine rank and the box."""
        self.current = False
        if dist.get_rank() in self.members:  # ranks in neither role take no part
            self._sync(verify)
        self.current = True
        self.num_syncs += 1

    def _sync(self, verify: bool) -> None:
        sources: dict[str, Any] = {}
        if self.trainer_state is not None:
            rank = dist.get_rank()
            for spec in self.request.tensors:
                t = self.trainer_state[spec.name]
                sources[spec.name] = (
                    _block_views(t, rank) if spec.src.blocks is not None else t.to_local()
                )
        # a trainer rank that will verify sums what it sends while it sends (the values do not
        # change during a sync; a sender mostly waits on the network)
        expected = None
        if verify and sources:
            expected = self._checker().submit(self._checks().expected, sources)
        self._executor.run(sources, self._out)
        # every rank finished its part; and whether any asked for a check
        wanted = torch.tensor([int(verify)], device=self._executor.device)
        self._collective("the sync's completion", dist.all_reduce, wanted, dist.ReduceOp.MAX)
        if int(wanted.item()):
            checks = self._checks()
            mine = expected.result() if expected is not None else checks.expected(sources)
            shares = checks.shares(mine, checks.measured(self._out))
            self._collective("the verification's all-reduce", dist.all_reduce, shares)
            checks.compare(shares)

    def _checks(self) -> RefitChecksums:
        if self._checksums is None:  # worked out once, on the first verified sync
            self._checksums = RefitChecksums(build_problem(self.request), dist.get_rank())
        return self._checksums

    def _checker(self) -> ThreadPoolExecutor:
        if self._checker_thread is None:
            self._checker_thread = ThreadPoolExecutor(1, thread_name_prefix="meshcast-verify")
        return self._checker_thread

    def _collective(self, what: str, op: Any, tensor: torch.Tensor, *args: Any) -> None:
        """`op(tensor, *args)` over the trainer and engine ranks; a rank that stopped or died
        is a `TransferError` naming it, as the executor's are."""
        try:
            op(tensor, *args, group=self._members_group)
        except RuntimeError as err:
            raise self._executor.collective_failure(what, err) from err

    def close(self) -> None:
        """Release the executor's process groups (a collective)."""
        if self._checker_thread is not None:
            self._checker_thread.shutdown(wait=True)
            self._checker_thread = None
        self._executor.close()
        dist.destroy_process_group(self._members_group)
