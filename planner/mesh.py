"""DTensor shard boxes (DESIGN §1).

For the device at mesh coordinate `c`: start from the full index box; for each mesh axis `m`
from left to right with placement `S(k)`, split the current extent of tensor dim `k` into
`mesh_shape[m]` chunks with `torch.chunk` semantics (chunk size `ceil(len / n)`, trailing chunks
short or empty) and keep chunk `c[m]`.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

Box = tuple[tuple[int, int], ...]


def shard_box(
    shape: Sequence[int],
    mesh_shape: Sequence[int],
    placements: Sequence[int | None],
    coord: Sequence[int],
) -> Box:
    """Global index box `[lo, hi)` per tensor dim held by the device at `coord`."""
    box = [(0, n) for n in shape]
    for axis, dim in enumerate(placements):
        if dim is None:
            continue
        lo, hi = box[dim]
        length, num_chunks = hi - lo, mesh_shape[axis]
        chunk = -(-length // num_chunks)
        i = int(coord[axis])
        box[dim] = (lo + min(i * chunk, length), lo + min((i + 1) * chunk, length))
    return tuple(box)


def axes_sharding(placements: Sequence[int | None], dim: int) -> tuple[int, ...]:
    """Mesh axes that shard tensor dim `dim`, left to right."""
    return tuple(axis for axis, p in enumerate(placements) if p == dim)


def dim_chunks(
    length: int, mesh_shape: Sequence[int], axes: Sequence[int]
) -> list[tuple[int, int, tuple[int, ...]]]:
    """Every non-empty chunk of one tensor dim split by `axes` in order.

    Returns `(lo, hi, coords)` with `coords` the coordinates on `axes`, in increasing `lo`.
    The chunks partition `[0, length)`.
    """
    out: list[tuple[int, int, tuple[int, ...]]] = []
    for coords in itertools.product(*(range(mesh_shape[a]) for a in axes)):
        lo, hi = 0, length
        for a, i in zip(axes, coords, strict=True):
            n = hi - lo
            chunk = -(-n // mesh_shape[a])
            lo, hi = lo + min(i * chunk, n), lo + min((i + 1) * chunk, n)
        if hi > lo:
            out.append((lo, hi, coords))
    out.sort()
    return out


def mesh_coords(mesh_shape: Sequence[int]) -> np.ndarray:
    """Coordinates of every mesh position, row-major: shape `(num_devices, num_axes)`."""
    grids = np.indices(tuple(mesh_shape)).reshape(len(mesh_shape), -1)
    return grids.T.copy()
