"""DTensor shard boxes (DESIGN §1), strided shards included.

Along each tensor dim a device holds an ordered list of index intervals: the whole extent to
begin with; then for each mesh axis `m` from left to right that shards the dim, with the
device's coordinate `i` on it and `n = mesh_shape[m]`:
  - `S(k)`: positions `torch.chunk` gives chunk `i` of `n` of the list's concatenation;
  - `_S(k,f)` (DTensor's `_StridedShard(k, split_factor=f)`): the concatenation cut in `f`
    pieces by `torch.chunk`, each piece cut in `n`, and chunk `i` of every piece, in order.
The device's local tensor is the concatenation of its intervals along each dim (DTensor's local
tensor); its global boxes are the products of its intervals over the dims
(`planner.holdings`). Plain `S(k)` keeps one interval per dim, so one box.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Box = tuple[tuple[int, int], ...]
Interval = tuple[int, int]


@dataclass(frozen=True)
class Strided:
    """`_S(k,f)`: DTensor's `_StridedShard(dim=k, split_factor=f)`."""

    dim: int
    split_factor: int


#: a mesh axis's placement: None (replicate), k (`S(k)`) or `Strided`
Placement = int | Strided | None


def placement_dim(p: Placement) -> int | None:
    """The tensor dim a placement shards (None for replicate)."""
    return p.dim if isinstance(p, Strided) else p


def _chunk(length: int, num_chunks: int, i: int) -> Interval:
    """Positions of chunk `i` of `torch.chunk(length, num_chunks)` (trailing ones short or
    empty)."""
    size = -(-length // num_chunks)
    return min(i * size, length), min((i + 1) * size, length)


def _take(intervals: Sequence[Interval], lo: int, hi: int) -> list[Interval]:
    """Positions `[lo, hi)` of the concatenation of `intervals`, as intervals."""
    out, at = [], 0
    for a, b in intervals:
        start, stop = max(lo, at), min(hi, at + b - a)
        if start < stop:
            out.append((a + start - at, a + stop - at))
        at += b - a
        if at >= hi:
            break
    return out


def dim_intervals(
    length: int,
    mesh_shape: Sequence[int],
    placements: Sequence[Placement],
    dim: int,
    coord: Sequence[int],
) -> tuple[Interval, ...]:
    """The intervals of tensor dim `dim` held by the device at `coord`, in local order
    (increasing), adjacent ones merged, empty ones dropped."""
    seq: list[Interval] = [(0, length)] if length else []
    for axis, p in enumerate(placements):
        if placement_dim(p) != dim:
            continue
        factor = p.split_factor if isinstance(p, Strided) else 1
        total = sum(b - a for a, b in seq)
        picked: list[Interval] = []
        for j in range(factor):
            a, b = _chunk(total, factor, j)
            c, d = _chunk(b - a, mesh_shape[axis], int(coord[axis]))
            picked += _take(seq, a + c, a + d)
        seq = picked
    merged: list[Interval] = []
    for a, b in seq:
        if merged and merged[-1][1] == a:
            merged[-1] = (merged[-1][0], b)
        else:
            merged.append((a, b))
    return tuple(merged)


def shard_intervals(
    shape: Sequence[int],
    mesh_shape: Sequence[int],
    placements: Sequence[Placement],
    coord: Sequence[int],
) -> tuple[tuple[Interval, ...], ...]:
    """Per tensor dim, the intervals the device at `coord` holds (`dim_intervals`)."""
    return tuple(
        dim_intervals(n, mesh_shape, placements, dim, coord) for dim, n in enumerate(shape)
    )


def axes_sharding(placements: Sequence[Placement], dim: int) -> tuple[int, ...]:
    """Mesh axes that shard tensor dim `dim`, left to right."""
    return tuple(axis for axis, p in enumerate(placements) if placement_dim(p) == dim)


def dim_chunks(
    length: int, mesh_shape: Sequence[int], placements: Sequence[Placement], dim: int
) -> list[tuple[int, int, tuple[int, ...]]]:
    """Every non-empty interval of tensor dim `dim` with the coordinates, on the axes that
    shard it (`axes_sharding`), of the devices holding it; in increasing `lo`.

    The intervals partition `[0, length)`; with strided shards one coordinate tuple holds
    several of them."""
    axes = axes_sharding(placements, dim)
    coord = [0] * len(mesh_shape)
    out: list[tuple[int, int, tuple[int, ...]]] = []
    for coords in itertools.product(*(range(mesh_shape[a]) for a in axes)):
        for a, i in zip(axes, coords, strict=True):
            coord[a] = i
        out += [
            (lo, hi, coords) for lo, hi in dim_intervals(length, mesh_shape, placements, dim, coord)
        ]
    out.sort()
    return out


def mesh_coords(mesh_shape: Sequence[int]) -> np.ndarray:
    """Coordinates of every mesh position, row-major: shape `(num_devices, num_axes)`."""
    grids = np.indices(tuple(mesh_shape)).reshape(len(mesh_shape), -1)
    return grids.T.copy()
