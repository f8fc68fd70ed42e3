"""Cross-mesh `reshard` for DTensors: what `DTensor.redistribute` refuses across meshes.

`reshard(x, dst_mesh, dst_placements, cluster=...)` is a collective over the default world:
every rank calls it with the same arguments (ranks in neither mesh too). Rank 0 plans (locally,
or with `plan_with`, for example `MeshcastClient(url).plan_request`, which asks the planning
service and plans locally when it is unreachable) and broadcasts the plan; every rank then runs
it with the executor.
Plans and prepared executors are cached per request, so a pipeline boundary that reshards every
step plans and sets up once.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor, Placement, Replicate, Shard
from torch.distributed.tensor.placement_types import _StridedShard

from meshcast.executor.arguments import agree
from meshcast.executor.calibrate import world_hosts
from meshcast.executor.dtypes import DTYPE_NAMES
from meshcast.executor.executor import Executor, Mode
from meshcast.planner.plan import Plan
from meshcast.planner.request import Request, parse_request
from meshcast.solver import plan_request

#: prepared executors kept per (request, mode); each holds process groups and buffers
CACHE_SIZE = 16
_executors: OrderedDict[tuple[str, str], Executor] = OrderedDict()


def placement_names(placements: Sequence[Placement], where: str) -> list[str]:
    """DTensor placements in request spelling (`_StridedShard` as `_S(k,f)`); a Partial is
    refused."""
    names = []
    for axis, p in enumerate(placements):
        if isinstance(p, _StridedShard):
            names.append(f"_S({p.dim},{int(p.split_factor)})")
        elif isinstance(p, Shard):
            names.append(f"S({p.dim})")
        elif isinstance(p, Replicate):
            names.append("R")
        else:
            raise ValueError(
                f"{where}[{axis}]: {p!r} is not supported (only Shard(dim), "
                "_StridedShard(dim, split_factor) and Replicate(); reduce a Partial first)"
            )
    return names


def mesh_json(mesh: DeviceMesh) -> dict[str, Any]:
    return {"shape": list(mesh.shape), "devices": mesh.mesh.flatten().tolist()}


def local_cluster(
    nic_gbps: float = 100.0,
    nics_per_host: int = 1,
    intra_gbps: float = 800.0,
    latency_us: float = 10.0,
) -> dict[str, Any]:
    """This world's hosts, found by gathering every rank's host name (a collective), with the
    given link figures (`meshcast calibrate` measures them)."""
    return {
        "hosts": world_hosts(),
        "nic_gbps": nic_gbps,
        "nics_per_host": nics_per_host,
        "intra_gbps": intra_gbps,
        "latency_us": latency_us,
    }


def reshard_request(
    x: DTensor,
    dst_mesh: DeviceMesh,
    dst_placements: Sequence[Placement],
    cluster: Mapping[str, Any],
    algorithm: str = "auto",
    time_limit_s: float = 2.0,
) -> Request:
    """The `meshcast.request/v1` that moves `x` to `dst_placements` on `dst_mesh`."""
    src_json, dst_json = mesh_json(x.device_mesh), mesh_json(dst_mesh)
    meshes = {"src": src_json} if src_json == dst_json else {"src": src_json, "dst": dst_json}
    if x.dtype not in DTYPE_NAMES:
        raise ValueError(f"x.dtype: {x.dtype} is not supported")
    return parse_request(
        {
            "tensors": [
                {
                    "name": "tensor",
                    "shape": list(x.shape),
                    "dtype": DTYPE_NAMES[x.dtype],
                    "src": {
                        "mesh": "src",
                        "placements": placement_names(x.placements, "x.placements"),
                    },
                    "dst": {
                        "mesh": "dst" if "dst" in meshes else "src",
                        "placements": placement_names(dst_placements, "dst_placements"),
                    },
                }
            ],
            "meshes": meshes,
            "cluster": dict(cluster),
            "options": {"algorithm": algorithm, "time_limit_s": time_limit_s},
        }
    )


PlanFunction = Callable[[Request], Plan]


def plan_on_rank0(request: Request, plan_with: PlanFunction) -> Plan:
    """Rank 0 plans, every rank receives the same plan (timed solvers differ run to run), as
    it was planned: a compact plan travels and stays compact."""
    box: list[Any] = [None]
    if dist.get_rank() == 0:
        box[0] = plan_with(request)
    dist.broadcast_object_list(box, src=0)
    plan = box[0]
    assert isinstance(plan, Plan)
    return plan


def _executor(request: Request, mode: Mode, plan_with: PlanFunction) -> Executor:
    key = (request.request_id, mode)
    if key in _executors:
        _executors.move_to_end(key)
        return _executors[key]
    executor = Executor(plan_on_rank0(request, plan_with), request, mode=mode)
    _executors[key] = executor
    if len(_executors) > CACHE_SIZE:
        _executors.popitem(last=False)[1].close()
    return executor


def _out_problem(
    out: DTensor, x: DTensor, dst_mesh: DeviceMesh, dst_placements: Sequence[Placement]
) -> str | None:
    """What makes `out` unfit to receive `x` laid out as `dst_placements` over `dst_mesh`."""
    if not isinstance(out, DTensor):
        return f"out: expected a DTensor, got {type(out).__name__}"
    if mesh_json(out.device_mesh) != mesh_json(dst_mesh):
        return f"out.device_mesh: expected {mesh_json(dst_mesh)}, got {mesh_json(out.device_mesh)}"
    if list(out.placements) != list(dst_placements):
        return f"out.placements: expected {list(dst_placements)}, got {list(out.placements)}"
    if out.shape != x.shape or out.dtype != x.dtype:
        return f"out: expected shape {tuple(x.shape)} {x.dtype}, got {tuple(out.shape)} {out.dtype}"
    return None


def reshard(
    x: DTensor,
    dst_mesh: DeviceMesh,
    dst_placements: Sequence[Placement],
    *,
    out: DTensor | None = None,
    cluster: Mapping[str, Any] | None = None,
    algorithm: str = "auto",
    time_limit_s: float = 2.0,
    mode: Mode = "chain",
    plan_with: PlanFunction = plan_request,
) -> DTensor:
    """`x` laid out as `dst_placements` over `dst_mesh`, which may be disjoint from, overlap or
    equal `x.device_mesh`. A collective over the default world. `cluster` is the request's
    cluster object (default: `local_cluster()`).

    With `out` (a DTensor on `dst_mesh` with `dst_placements`, such as an inference engine's
    live weight), the bytes land in its local tensor and `out` is returned; a mismatched `out`
    on any rank is a `ValueError` on every rank."""
    cluster = cluster if cluster is not None else local_cluster()
    request = reshard_request(x, dst_mesh, dst_placements, cluster, algorithm, time_limit_s)
    executor = _executor(request, mode, plan_with)
    if out is not None:
        world = list(range(dist.get_world_size()))
        group = dist.group.WORLD
        assert group is not None
        problem = _out_problem(out, x, dst_mesh, dst_placements)
        agree(problem, dist.get_rank(), world, group, executor.device)
    shards = {"tensor": x.to_local()} if executor.source_tensors else {}
    targets = {"tensor": out.to_local()} if out is not None and executor.destination_tensors else {}
    received = executor.run(shards, targets)
    if out is not None:
        return out
    local = received.get("tensor")
    if local is None:  # this rank is not in the destination mesh
        local = torch.empty(0, dtype=x.dtype, device=executor.device)
    assert isinstance(local, torch.Tensor)  # placements: one local tensor
    return DTensor.from_local(
        local,
        dst_mesh,
        list(dst_placements),
        run_check=False,
        shape=x.shape,
        stride=torch.empty(0).new_empty(x.shape, device="meta").stride(),
    )
