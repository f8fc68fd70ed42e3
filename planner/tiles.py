"""Tiles: the disjoint boxes a reshard moves, with who holds and who needs each one.

A tile is the intersection of one source shard box and one destination shard box. Along each
tensor dim the source chunks and the destination chunks both partition the extent, so the tiles
are the product over dims of the per-dim chunk intersections; everything is computed with numpy
on those products, never per device pair.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from planner.mesh import axes_sharding, dim_chunks, mesh_coords
from planner.request import Layout, MeshSpec, Request, TensorSpec


@dataclass(frozen=True)
class Tiles:
    """Every tile that some device needs and does not hold, as parallel arrays.

    `lo`/`hi` are padded to the largest tensor rank with `[0, 1)` so volumes stay right;
    `holders`/`needers` index `device_sets` (sorted device-id tuples). Needers exclude holders.
    """

    tensor: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    num_bytes: np.ndarray
    holders: np.ndarray
    needers: np.ndarray
    #: position of the tile in the natural order of the paper's baselines: tensor, then the
    #: first destination device (mesh order) holding it, then the first source device
    natural_key: np.ndarray
    device_sets: tuple[tuple[int, ...], ...]
    ndims: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.tensor)

    def box(self, i: int) -> tuple[tuple[int, int], ...]:
        """The global index box of tile `i`, `[lo, hi)` per dim of its tensor."""
        n = self.ndims[int(self.tensor[i])]
        return tuple((int(a), int(b)) for a, b in zip(self.lo[i, :n], self.hi[i, :n], strict=True))


@dataclass
class _Layout:
    """Per-dim chunk tables of one layout and the shard of every mesh position."""

    chunks: list[list[tuple[int, int, tuple[int, ...]]]]
    shard_of_position: np.ndarray  # flat shard id per mesh position, -1 when empty
    devices: np.ndarray


def _layout_tables(t: TensorSpec, layout: Layout, mesh: MeshSpec) -> _Layout:
    coords = mesh_coords(mesh.shape)
    chunk_tables, per_dim_index = [], []
    for dim, length in enumerate(t.shape):
        axes = axes_sharding(layout.placements, dim)
        chunks = dim_chunks(length, mesh.shape, axes)
        lookup = {c: j for j, (_, _, c) in enumerate(chunks)}
        index = np.array([lookup.get(tuple(int(x) for x in row[list(axes)]), -1) for row in coords])
        chunk_tables.append(chunks)
        per_dim_index.append(index)
    if t.shape:
        stacked = np.stack(per_dim_index)
        empty = (stacked < 0).any(axis=0)
        dims = tuple(max(1, len(c)) for c in chunk_tables)
        flat = np.asarray(np.ravel_multi_index(tuple(np.where(empty, 0, stacked)), dims))
        shard: np.ndarray = np.where(empty, -1, flat)
    else:
        shard = np.zeros(len(mesh.devices), dtype=np.int64)
    return _Layout(chunk_tables, shard, np.asarray(mesh.devices, dtype=np.int64))


def _dim_pieces(
    src: list[tuple[int, int, tuple[int, ...]]], dst: list[tuple[int, int, tuple[int, ...]]]
) -> np.ndarray:
    """Intersections of two partitions of one dim: rows `(lo, hi, src_chunk, dst_chunk)`."""
    out, i, j = [], 0, 0
    while i < len(src) and j < len(dst):
        lo, hi = max(src[i][0], dst[j][0]), min(src[i][1], dst[j][1])
        if lo < hi:
            out.append((lo, hi, i, j))
        if src[i][1] <= dst[j][1]:
            i += 1
        else:
            j += 1
    return np.array(out, dtype=np.int64).reshape(-1, 4)


class _DeviceSets:
    """Interning table of device sets shared by all tensors."""

    def __init__(self) -> None:
        self.sets: list[tuple[int, ...]] = []
        self._ids: dict[tuple[int, ...], int] = {}

    def intern(self, devices: np.ndarray) -> int:
        key = tuple(sorted(int(d) for d in devices))
        if key not in self._ids:
            self._ids[key] = len(self.sets)
            self.sets.append(key)
        return self._ids[key]


def _shard_members(table: _Layout) -> dict[int, np.ndarray]:
    order = np.argsort(table.shard_of_position, kind="stable")
    shards = table.shard_of_position[order]
    keys, starts = np.unique(shards, return_index=True)
    bounds = [*starts[1:].tolist(), len(order)]
    return {
        int(k): table.devices[order[s:e]]
        for k, s, e in zip(keys, starts, bounds, strict=True)
        if k >= 0
    }


def _tensor_tiles(
    t: TensorSpec, request: Request, sets: _DeviceSets, max_ndim: int
) -> dict[str, np.ndarray]:
    """Tiles of tensor `t`, as if it were tensor 0 (`build_tiles` sets the index)."""
    src = _layout_tables(t, t.src, request.meshes[t.src.mesh])
    dst = _layout_tables(t, t.dst, request.meshes[t.dst.mesh])
    pieces = [_dim_pieces(s, d) for s, d in zip(src.chunks, dst.chunks, strict=True)]
    if any(len(p) == 0 for p in pieces):
        return {}
    grid = np.indices(tuple(len(p) for p in pieces)).reshape(len(pieces), -1) if pieces else None
    num_tiles = grid.shape[1] if grid is not None else 1
    lo = np.zeros((num_tiles, max_ndim), dtype=np.int64)
    hi = np.ones((num_tiles, max_ndim), dtype=np.int64)
    src_chunk = np.zeros((len(pieces), num_tiles), dtype=np.int64)
    dst_chunk = np.zeros((len(pieces), num_tiles), dtype=np.int64)
    for dim, p in enumerate(pieces):
        assert grid is not None
        rows = p[grid[dim]]
        lo[:, dim], hi[:, dim] = rows[:, 0], rows[:, 1]
        src_chunk[dim], dst_chunk[dim] = rows[:, 2], rows[:, 3]
    src_shard: np.ndarray
    dst_shard: np.ndarray
    if pieces:
        src_dims = tuple(len(c) for c in src.chunks)
        dst_dims = tuple(len(c) for c in dst.chunks)
        src_shard = np.asarray(np.ravel_multi_index(tuple(src_chunk), src_dims))
        dst_shard = np.asarray(np.ravel_multi_index(tuple(dst_chunk), dst_dims))
    else:
        src_shard = dst_shard = np.zeros(1, dtype=np.int64)
    src_members, dst_members = _shard_members(src), _shard_members(dst)
    overlap = bool(np.intersect1d(src.devices, dst.devices).size)
    pairs, inverse = np.unique(np.stack([src_shard, dst_shard]), axis=1, return_inverse=True)
    # per shard first (a pair of shards repeats its shards' answers)
    src_pos = {int(d): i for i, d in enumerate(src.devices)}
    dst_pos = {int(d): i for i, d in enumerate(dst.devices)}
    holder_of = {s: sets.intern(m) for s, m in src_members.items()}
    first_src_of = {s: min(src_pos[int(x)] for x in m) for s, m in src_members.items()}
    first_dst_of = {d: min(dst_pos[int(x)] for x in m) for d, m in dst_members.items()}
    src_ids, dst_ids = pairs[0].tolist(), pairs[1].tolist()
    holder_ids = np.array([holder_of[s] for s in src_ids], dtype=np.int64)
    first_src = np.array([first_src_of[s] for s in src_ids], dtype=np.int64)
    first_dst = np.array([first_dst_of[d] for d in dst_ids], dtype=np.int64)
    if overlap:
        needer_ids = np.full(pairs.shape[1], -1, dtype=np.int64)
        for j, (s, d) in enumerate(zip(src_ids, dst_ids, strict=True)):
            needers = np.setdiff1d(dst_members[d], src_members[s])
            if len(needers):
                needer_ids[j] = sets.intern(needers)
    else:
        needer_of = {d: sets.intern(m) for d, m in dst_members.items()}
        needer_ids = np.array([needer_of[d] for d in dst_ids], dtype=np.int64)
    inverse = inverse.ravel()
    keep = needer_ids[inverse] >= 0
    inv = inverse[keep]
    lo, hi = lo[keep], hi[keep]
    volume = np.prod(hi - lo, axis=1)
    natural = np.stack([np.zeros(len(inv), dtype=np.int64), first_dst[inv], first_src[inv]], axis=1)
    return {
        "lo": lo,
        "hi": hi,
        "num_bytes": volume * t.itemsize_bytes,
        "holders": holder_ids[inv],
        "needers": needer_ids[inv],
        "natural": natural,
    }


def build_tiles(request: Request) -> Tiles:
    """All tiles of all tensors of `request`, sorted in the baselines' natural order."""
    max_ndim = max(1, *(len(t.shape) for t in request.tensors))
    sets = _DeviceSets()
    by_layout: dict[tuple[object, ...], dict[str, np.ndarray]] = {}
    parts = []
    for i, t in enumerate(request.tensors):
        # identical layers and experts share their tiling; only the tensor index differs
        key = (t.shape, t.itemsize_bytes, t.src, t.dst)
        if key not in by_layout:
            by_layout[key] = _tensor_tiles(t, request, sets, max_ndim)
        template = by_layout[key]
        if template:
            natural = template["natural"].copy()
            natural[:, 0] = i
            count = len(natural)
            parts.append(
                {**template, "tensor": np.full(count, i, dtype=np.int64), "natural": natural}
            )
    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        return Tiles(
            empty,
            np.zeros((0, max_ndim), dtype=np.int64),
            np.zeros((0, max_ndim), dtype=np.int64),
            empty,
            empty,
            empty,
            np.zeros((0, 3), dtype=np.int64),
            tuple(sets.sets),
            tuple(len(t.shape) for t in request.tensors),
        )
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    order = np.lexsort(tuple(cat["natural"][:, c] for c in (2, 1, 0)))
    return Tiles(
        tensor=cat["tensor"][order],
        lo=cat["lo"][order],
        hi=cat["hi"][order],
        num_bytes=cat["num_bytes"][order],
        holders=cat["holders"][order],
        needers=cat["needers"][order],
        natural_key=cat["natural"][order],
        device_sets=tuple(sets.sets),
        ndims=tuple(len(t.shape) for t in request.tensors),
    )
