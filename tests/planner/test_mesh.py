"""Shard boxes agree with PyTorch DTensor: its placement arithmetic, and `distribute_tensor`
itself for strided shards (run per rank on a fake process group, which splits locally)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshcast.planner.holdings import holdings
from meshcast.planner.mesh import Box, Placement, Strided, dim_chunks, shard_intervals
from meshcast.planner.request import Layout, MeshSpec

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
torch_utils = pytest.importorskip("torch.distributed.tensor._utils")
placement_types = pytest.importorskip("torch.distributed.tensor.placement_types")
fake_pg = pytest.importorskip("torch.testing._internal.distributed.fake_pg")

Layouts = tuple[list[int], list[int], list[Placement]]


@st.composite
def layouts(draw: st.DrawFn, strided: bool = False) -> Layouts:
    ndim = draw(st.integers(1, 3))
    shape = draw(st.lists(st.integers(0, 40), min_size=ndim, max_size=ndim))
    mesh_shape = draw(st.lists(st.integers(1, 4), min_size=1, max_size=3))
    dims = st.integers(0, ndim - 1)
    options = [st.none(), dims]
    if strided:
        options.append(st.builds(Strided, dims, st.integers(1, 4)))
    placements = draw(
        st.lists(st.one_of(*options), min_size=len(mesh_shape), max_size=len(mesh_shape))
    )
    return shape, mesh_shape, placements


def shard_boxes(
    shape: list[int], mesh_shape: list[int], placements: list[Placement], coord: tuple[int, ...]
) -> list[Box]:
    """The device's boxes: products of its intervals over the dims, in local order."""
    return list(itertools.product(*shard_intervals(shape, mesh_shape, placements, coord)))


def torch_placement(p: Placement) -> object:
    if p is None:
        return placement_types.Replicate()
    if isinstance(p, Strided):
        return placement_types._StridedShard(p.dim, split_factor=p.split_factor)
    return placement_types.Shard(p)


@settings(max_examples=300, deadline=None)
@given(layouts())
def test_plain_shards_are_one_box_matching_dtensor(layout: Layouts) -> None:
    shape, mesh_shape, placements = layout
    for coord in itertools.product(*(range(n) for n in mesh_shape)):
        local_shape, offset = torch_utils._compute_local_shape_and_global_offset(
            shape, mesh_shape, list(coord), [torch_placement(p) for p in placements]
        )
        boxes = shard_boxes(shape, mesh_shape, placements, coord)
        assert len(boxes) <= 1
        if boxes:
            assert tuple(hi - lo for lo, hi in boxes[0]) == tuple(local_shape)
            assert [lo for lo, _ in boxes[0]] == list(offset)
        else:
            assert 0 in local_shape


@settings(max_examples=200, deadline=None)
@given(layouts(strided=True), st.integers(0, 2))
def test_dim_chunks_partition_each_dim(layout: Layouts, dim: int) -> None:
    shape, mesh_shape, placements = layout
    dim = min(dim, len(shape) - 1)
    chunks = dim_chunks(shape[dim], mesh_shape, placements, dim)
    assert sum(hi - lo for lo, hi, _ in chunks) == shape[dim]
    assert all(a[1] == b[0] for a, b in itertools.pairwise(chunks))
    axes = [a for a, p in enumerate(placements) if p is not None and _dim(p) == dim]
    for coord in itertools.product(*(range(n) for n in mesh_shape)):
        mine = shard_intervals(shape, mesh_shape, placements, coord)[dim]
        listed = [(lo, hi) for lo, hi, c in chunks if list(c) == [coord[a] for a in axes]]
        assert list(mine) == listed


def _dim(p: Placement) -> int:
    assert p is not None
    return p.dim if isinstance(p, Strided) else p


def _fake_ranks(num_ranks: int) -> Iterator[int]:
    """Each rank of a `num_ranks` world in turn, on a fake process group (no peers)."""
    for rank in range(num_ranks):
        store = fake_pg.FakeStore()
        dist.init_process_group("fake", store=store, rank=rank, world_size=num_ranks)
        try:
            yield rank
        finally:
            dist.destroy_process_group()


@settings(max_examples=120, deadline=None)
@given(layouts(strided=True))
def test_strided_local_tensors_are_distribute_tensors(layout: Layouts) -> None:
    """The local tensor built from our boxes is `distribute_tensor`'s, uneven sizes too."""
    shape, mesh_shape, placements = layout
    num = math.prod(mesh_shape)
    whole = torch.arange(math.prod(shape), dtype=torch.int64).reshape(shape)
    mesh = MeshSpec(tuple(mesh_shape), tuple(range(num)))
    ours = holdings(tuple(shape), mesh, Layout("m", tuple(placements)))
    for rank in _fake_ranks(num):
        device_mesh = torch.distributed.device_mesh.DeviceMesh(
            "cpu", torch.arange(num).reshape(mesh_shape)
        )
        expected = torch.distributed.tensor.distribute_tensor(
            whole, device_mesh, [torch_placement(p) for p in placements], src_data_rank=None
        ).to_local()
        holding = ours[rank]
        (local_shape,) = holding.shapes
        assert tuple(expected.shape) == local_shape
        built = torch.full(local_shape, -1, dtype=torch.int64)
        for box, (_, offset) in zip(holding.boxes, holding.places, strict=True):
            at = tuple(slice(o, o + hi - lo) for o, (lo, hi) in zip(offset, box, strict=True))
            built[at] = whole[tuple(slice(lo, hi) for lo, hi in box)]
        assert torch.equal(built, expected)


def test_fsdp2_over_tp_rows_are_not_contiguous() -> None:
    """torchtitan's FSDP2+TP weight: `(_S(0, tp), S(0))` on a (dp=2, tp=2) mesh, 8 rows."""
    placements: list[Placement] = [Strided(0, 2), 0]
    rows = {
        coord: [box[0] for box in shard_boxes([8, 3], [2, 2], placements, coord)]
        for coord in itertools.product(range(2), range(2))
    }
    assert rows == {(0, 0): [(0, 2)], (0, 1): [(4, 6)], (1, 0): [(2, 4)], (1, 1): [(6, 8)]}
    one_d = [box[0] for box in shard_boxes([8], [2], [Strided(0, 2)], (0,))]
    assert one_d == [(0, 2), (4, 6)]  # a 1-D strided shard: two intervals
