"""What each device holds of a tensor on one side of a reshard, and where in its local data.

A device's data of a tensor is one local tensor for placements (DTensor's local tensor, strided
shards included) or, for `blocks`, a list of local tensors, one per block. Either way it holds
a few global boxes, each at an offset in one of its local tensors.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from meshcast.planner.boxes import volume
from meshcast.planner.mesh import Box, Interval, axes_sharding, dim_intervals, mesh_coords
from meshcast.planner.request import Layout, MeshSpec


@dataclass(frozen=True)
class Holding:
    """One device's data of one tensor on one side."""

    #: shapes of its local tensors: one for placements, one per block for blocks
    shapes: tuple[tuple[int, ...], ...]
    #: the non-empty global boxes it holds
    boxes: tuple[Box, ...]
    #: per box, the local tensor it lives in and its offset there
    places: tuple[tuple[int, tuple[int, ...]], ...]
    #: the data is a list of tensors (`blocks`), not one tensor
    listed: bool = False


def _placement_holding(per_dim: tuple[tuple[Interval, ...], ...]) -> Holding:
    if all(len(ivs) == 1 for ivs in per_dim):  # one box (no strided shard): the common case
        box = tuple(ivs[0] for ivs in per_dim)
        return Holding((tuple(hi - lo for lo, hi in box),), (box,), ((0, (0,) * len(box)),))
    local_shape = tuple(sum(hi - lo for lo, hi in ivs) for ivs in per_dim)
    offsets = [
        list(itertools.accumulate((hi - lo for lo, hi in ivs), initial=0)) for ivs in per_dim
    ]
    boxes, places = [], []
    for picks in itertools.product(*(range(len(ivs)) for ivs in per_dim)):
        boxes.append(tuple(per_dim[d][k] for d, k in enumerate(picks)))
        places.append((0, tuple(offsets[d][k] for d, k in enumerate(picks))))
    return Holding((local_shape,), tuple(boxes), tuple(places))


def _block_holding(blocks: tuple[Box, ...]) -> Holding:
    shapes = tuple(tuple(hi - lo for lo, hi in box) for box in blocks)
    kept = [(k, box) for k, box in enumerate(blocks) if volume(box)]
    return Holding(
        shapes,
        tuple(box for _, box in kept),
        tuple((k, (0,) * len(box)) for k, box in kept),
        listed=True,
    )


def holdings(shape: tuple[int, ...], mesh: MeshSpec, layout: Layout) -> dict[int, Holding]:
    """The holding of every device of `layout`'s mesh."""
    if layout.blocks is not None:
        return {d: _block_holding(b) for d, b in zip(mesh.devices, layout.blocks, strict=True)}
    coords = mesh_coords(mesh.shape).tolist()
    # a dim's intervals depend only on the coordinates along the axes that shard it
    axes = [axes_sharding(layout.placements, dim) for dim in range(len(shape))]
    known: list[dict[tuple[int, ...], tuple[Interval, ...]]] = [{} for _ in shape]
    out = {}
    for d, coord in zip(mesh.devices, coords, strict=True):
        per_dim = []
        for dim, n in enumerate(shape):
            key = tuple(coord[a] for a in axes[dim])
            intervals = known[dim].get(key)
            if intervals is None:
                intervals = dim_intervals(n, mesh.shape, layout.placements, dim, coord)
                known[dim][key] = intervals
            per_dim.append(intervals)
        out[d] = _placement_holding(tuple(per_dim))
    return out


def holding_of(shape: tuple[int, ...], mesh: MeshSpec, layout: Layout, index: int) -> Holding:
    """The holding of the device at position `index` of `layout`'s mesh (what `holdings` gives
    it, without the others': a rank of a large mesh needs only its own)."""
    if layout.blocks is not None:
        return _block_holding(layout.blocks[index])
    coord = [int(c) for c in np.unravel_index(index, tuple(mesh.shape))]
    return _placement_holding(
        tuple(
            dim_intervals(n, mesh.shape, layout.placements, dim, coord)
            for dim, n in enumerate(shape)
        )
    )
