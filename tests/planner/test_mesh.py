"""Shard boxes agree with PyTorch DTensor's own placement arithmetic."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planner.mesh import dim_chunks, shard_box

torch_utils = pytest.importorskip("torch.distributed.tensor._utils")
placement_types = pytest.importorskip("torch.distributed.tensor")


@st.composite
def layouts(draw: st.DrawFn) -> tuple[list[int], list[int], list[int | None]]:
    ndim = draw(st.integers(1, 3))
    shape = draw(st.lists(st.integers(0, 40), min_size=ndim, max_size=ndim))
    mesh_shape = draw(st.lists(st.integers(1, 5), min_size=1, max_size=3))
    placements = draw(
        st.lists(
            st.one_of(st.none(), st.integers(0, ndim - 1)),
            min_size=len(mesh_shape),
            max_size=len(mesh_shape),
        )
    )
    return shape, mesh_shape, placements


def torch_placements(placements: list[int | None]) -> list[object]:
    return [
        placement_types.Replicate() if p is None else placement_types.Shard(p) for p in placements
    ]


@settings(max_examples=300, deadline=None)
@given(layouts())
def test_shard_box_matches_dtensor(layout: tuple[list[int], list[int], list[int | None]]) -> None:
    shape, mesh_shape, placements = layout
    for coord in itertools.product(*(range(n) for n in mesh_shape)):
        local_shape, offset = torch_utils._compute_local_shape_and_global_offset(
            shape, mesh_shape, list(coord), torch_placements(placements)
        )
        box = shard_box(shape, mesh_shape, placements, coord)
        assert tuple(hi - lo for lo, hi in box) == tuple(local_shape)
        for (lo, hi), off in zip(box, offset, strict=True):
            if hi > lo:  # DTensor's offset of an empty shard is a convention, not an index
                assert lo == off


@settings(max_examples=200, deadline=None)
@given(layouts(), st.integers(0, 2))
def test_dim_chunks_partition_each_dim(
    layout: tuple[list[int], list[int], list[int | None]], dim: int
) -> None:
    shape, mesh_shape, placements = layout
    dim = min(dim, len(shape) - 1)
    axes = tuple(a for a, p in enumerate(placements) if p == dim)
    chunks = dim_chunks(shape[dim], mesh_shape, axes)
    assert sum(hi - lo for lo, hi, _ in chunks) == shape[dim]
    assert all(a[1] == b[0] for a, b in itertools.pairwise(chunks))
    for lo, hi, coords in chunks:
        coord = [0] * len(mesh_shape)
        for a, c in zip(axes, coords, strict=True):
            coord[a] = c
        assert shard_box(shape, mesh_shape, placements, coord)[dim] == (lo, hi)
    assert len(chunks) <= math.prod(mesh_shape[a] for a in axes)
