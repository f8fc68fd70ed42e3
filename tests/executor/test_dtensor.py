"""`reshard` on real DTensors across processes: disjoint, overlapping and equal meshes; checked
against torch's own shard arithmetic, not meshcast's."""

from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402
from torch.distributed.device_mesh import DeviceMesh  # noqa: E402
from torch.distributed.tensor import (  # noqa: E402
    DTensor,
    Partial,
    Replicate,
    Shard,
    distribute_tensor,
)
from torch.distributed.tensor.placement_types import _StridedShard  # noqa: E402

from meshcast.executor import dtensor  # noqa: E402
from meshcast.executor.local_world import LocalWorld, RankFailure  # noqa: E402
from meshcast.executor.reference import reference_box, same_bytes  # noqa: E402

pytestmark = pytest.mark.torch

CLUSTER = {
    "hosts": [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    + [[d] for d in range(12, 20)],  # the rest of the world, one rank per host
    "nic_gbps": 10,
    "nics_per_host": 2,
    "intra_gbps": 200,
    "latency_us": 5,
}


def _placement(name: str) -> Any:
    if name == "R":
        return Replicate()
    if name.startswith("_S("):
        dim, factor = name[3:-1].split(",")
        return _StridedShard(int(dim), split_factor=int(factor))
    return Shard(int(name[2:-1]))


def _placements(names: list[str]) -> list[Any]:
    return [_placement(n) for n in names]


def _local_slice(full: Any, mesh: DeviceMesh, placements: list[Any]) -> Any:
    """This rank's local tensor, as torch's `distribute_tensor` makes it (no source rank:
    every rank splits `full` itself)."""
    return distribute_tensor(full, mesh, placements, src_data_rank=None).to_local()


def _reshard_job(
    shape: list[int],
    dtype: str,
    src: tuple[list[int], list[int], list[str]],
    dst: tuple[list[int], list[int], list[str]],
) -> dict[str, Any]:
    (src_shape, src_devices, src_names), (dst_shape, dst_devices, dst_names) = src, dst
    src_mesh = DeviceMesh("cpu", torch.tensor(src_devices).reshape(src_shape))
    dst_mesh = DeviceMesh("cpu", torch.tensor(dst_devices).reshape(dst_shape))
    full = reference_box("tensor", tuple(shape), dtype, tuple((0, n) for n in shape))
    src_placements, dst_placements = _placements(src_names), _placements(dst_names)
    rank = dist.get_rank()
    local = (
        _local_slice(full, src_mesh, src_placements).contiguous()
        if rank in src_devices
        else torch.empty(0, dtype=full.dtype)
    )
    x = DTensor.from_local(
        local, src_mesh, src_placements, run_check=False, shape=full.shape, stride=full.stride()
    )
    y = dtensor.reshard(x, dst_mesh, dst_placements, cluster=CLUSTER, time_limit_s=0.3)
    prepared = dict(dtensor._executors)
    again = dtensor.reshard(x, dst_mesh, dst_placements, cluster=CLUSTER, time_limit_s=0.3)
    expected = (
        _local_slice(full, dst_mesh, dst_placements)
        if rank in dst_devices
        else torch.empty(0, dtype=full.dtype)
    )
    return {
        "exact": same_bytes(y.to_local(), expected) and same_bytes(again.to_local(), expected),
        "mesh": y.device_mesh is dst_mesh,
        "placements": list(y.placements) == dst_placements,
        "shape": list(y.shape) == shape,
        "reused": dtensor._executors == prepared,
    }


CASES = {
    # pipeline boundary: 2x2 stage with (S(0), R) to a 1-D stage of 4 sharding dim 1
    "disjoint": (
        [37, 10],
        "float32",
        ([2, 2], [0, 1, 2, 3], ["S(0)", "R"]),
        ([4], [4, 5, 6, 7], ["S(1)"]),
    ),
    # meshes share two ranks; uneven chunks and an empty shard (dim 0 of 3 over 4)
    "overlapping": (
        [3, 9],
        "bfloat16",
        ([2, 2], [0, 1, 2, 3], ["R", "S(1)"]),
        ([4], [2, 3, 4, 5], ["S(0)"]),
    ),
    # in place: the same mesh, transposed sharding, three ranks per host boundary
    "same": (
        [12, 6, 5],
        "int8",
        ([2, 3], [4, 5, 6, 7, 8, 9], ["S(0)", "S(2)"]),
        ([2, 3], [4, 5, 6, 7, 8, 9], ["S(1)", "R"]),
    ),
    # training to inference: 8-way FSDP-like to TP 2 on other hosts, bool mask
    "refit": ([16, 7], "bool", ([8], list(range(8)), ["S(0)"]), ([2], [10, 11], ["S(1)"])),
    # torchtitan's FSDP2 over TP: (dp=2, tp=2) with (_S(0, 2), S(0)), to TP 2 elsewhere
    "fsdp2-tp": (
        [16, 6],
        "float32",
        ([2, 2], [0, 1, 2, 3], ["_S(0,2)", "S(0)"]),
        ([2], [4, 5], ["S(1)"]),
    ),
    # the same with uneven rows (13 over 2 x 2), to 4-way row shards
    "fsdp2-tp-uneven": (
        [13, 5],
        "bfloat16",
        ([2, 2], [0, 1, 2, 3], ["_S(0,2)", "S(0)"]),
        ([4], [4, 5, 6, 7], ["S(0)"]),
    ),
    # a strided destination: column shards into an FSDP2+TP layout on another host
    "to-strided": (
        [12, 4],
        "int32",
        ([4], [0, 1, 2, 3], ["S(1)"]),
        ([2, 2], [4, 5, 6, 7], ["_S(0,2)", "S(0)"]),
    ),
    # the same mesh: row-and-column shards into FSDP2+TP
    "strided-same-mesh": (
        [10, 6],
        "float16",
        ([2, 2], [4, 5, 6, 7], ["S(0)", "S(1)"]),
        ([2, 2], [4, 5, 6, 7], ["_S(0,2)", "S(0)"]),
    ),
    # 1-D strided shards whose local rows are not contiguous, overlapping meshes
    "strided-1d": ([9, 3], "int64", ([3], [0, 1, 2], ["_S(0,2)"]), ([2], [2, 3], ["_S(0,3)"])),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_reshard_moves_dtensors_across_meshes(world: LocalWorld, case: str) -> None:
    results = world.run(_reshard_job, *CASES[case])
    for rank, result in enumerate(results):
        assert all(result.values()), (
            rank,
            result,
        )


def _into_live_weights_job(wrong_rank: int | None) -> dict[str, Any]:
    """Refit a (S(0)) training weight on ranks 0-3 into an engine's (R, S(1)) weight on 4-7."""
    shape = (16, 12)
    train = DeviceMesh("cpu", torch.arange(4))
    engine = DeviceMesh("cpu", torch.arange(4, 8).reshape(2, 2))
    full = reference_box("tensor", shape, "bfloat16", ((0, 16), (0, 12)))
    rank = dist.get_rank()
    src_placements, dst_placements = [Shard(0)], [Replicate(), Shard(1)]
    local = (
        _local_slice(full, train, src_placements) if rank < 4 else torch.empty(0, dtype=full.dtype)
    )
    x = DTensor.from_local(
        local, train, src_placements, run_check=False, shape=full.shape, stride=full.stride()
    )
    live = (
        torch.zeros(_local_slice(full, engine, dst_placements).shape, dtype=full.dtype)
        if 4 <= rank < 8
        else torch.empty(0, dtype=full.dtype)
    )
    placements = [Replicate(), Replicate()] if rank == wrong_rank else dst_placements
    weight = DTensor.from_local(
        live, engine, placements, run_check=False, shape=full.shape, stride=full.stride()
    )
    try:
        y = dtensor.reshard(
            x, engine, dst_placements, out=weight, cluster=CLUSTER, time_limit_s=0.3
        )
    except ValueError as err:
        return {"error": str(err)}
    expected = _local_slice(full, engine, dst_placements) if 4 <= rank < 8 else live
    return {"same": y is weight, "in place": same_bytes(live, expected)}


def test_reshard_into_an_existing_dtensor_writes_its_storage(world: LocalWorld) -> None:
    for rank, result in enumerate(world.run(_into_live_weights_job, None)):
        assert result == {"same": True, "in place": True}, (rank, result)


def test_a_mismatched_out_on_one_rank_is_an_error_on_every_rank(world: LocalWorld) -> None:
    results = world.run(_into_live_weights_job, 6)
    assert all("error" in r for r in results), results
    assert all(r["error"].startswith("rank 6: out.placements: expected") for r in results)


def _partial_job() -> str:
    mesh = DeviceMesh("cpu", torch.tensor([0, 1]))
    other = DeviceMesh("cpu", torch.tensor([2, 3]))
    x = DTensor.from_local(
        torch.zeros(4), mesh, [Partial()], run_check=False, shape=torch.Size([4]), stride=(1,)
    )
    try:
        dtensor.reshard(x, other, [Replicate()], cluster=CLUSTER)
    except ValueError as err:
        return str(err)
    return "accepted"


def test_partial_placements_are_refused_clearly_on_every_rank(world: LocalWorld) -> None:
    messages = world.run(_partial_job)
    assert all(m.startswith("x.placements[0]: Partial(") for m in messages), messages[0]
    assert "not supported" in messages[0]


def _cluster_job() -> dict[str, Any]:
    return dtensor.local_cluster(nic_gbps=25)


def test_local_cluster_groups_ranks_by_hostname(world: LocalWorld) -> None:
    clusters = world.run(_cluster_job)
    assert all(c == clusters[0] for c in clusters)
    assert clusters[0]["hosts"] == [list(range(world.num_ranks))]  # one machine here
    assert clusters[0]["nic_gbps"] == 25


def test_failures_inside_reshard_surface_as_rank_failures(world: LocalWorld) -> None:
    # a mesh naming a rank the cluster does not place: a clear error, not a hang
    cluster = dict(CLUSTER, hosts=[[0, 1, 2, 3]])
    with pytest.raises(RankFailure, match="device 4"):
        world.run(_mismatched_cluster_job, cluster)


def _mismatched_cluster_job(cluster: dict[str, Any]) -> None:
    src = DeviceMesh("cpu", torch.tensor([0, 1]))
    dst = DeviceMesh("cpu", torch.tensor([4, 5]))
    x = DTensor.from_local(
        torch.zeros(2) if dist.get_rank() < 2 else torch.empty(0),
        src,
        [Shard(0)],
        run_check=False,
        shape=torch.Size([4]),
        stride=(1,),
    )
    dtensor.reshard(x, dst, [Replicate()], cluster=cluster)
