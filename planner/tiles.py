"""Tiles: the disjoint boxes a reshard moves, with who holds and who needs each one.

Placement layouts (strided shards included): along each tensor dim the source intervals and
the destination intervals both partition the extent, each interval held by the devices of one
group of mesh coordinates, so the tiles are the product over dims of the per-dim interval
intersections; everything is computed with numpy on those products, never per device pair.
Block layouts (either side): the boxes' edges cut every dim into elementary intervals, and a
tile is a cell of that grid, held by every device one of whose source boxes contains it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from meshcast.planner.boxes import grid_cuts
from meshcast.planner.holdings import holdings
from meshcast.planner.mesh import axes_sharding, dim_chunks, mesh_coords
from meshcast.planner.request import Layout, MeshSpec, Request, TensorSpec


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
    """Per-dim interval tables of one layout (`(lo, hi, group)`, groups numbered per dim) and
    the shard (one group per dim) of every mesh position."""

    chunks: list[list[tuple[int, int, int]]]
    num_groups: list[int]
    shard_of_position: np.ndarray  # flat shard id per mesh position, -1 when empty
    devices: np.ndarray


def _layout_tables(t: TensorSpec, layout: Layout, mesh: MeshSpec) -> _Layout:
    coords = mesh_coords(mesh.shape)
    chunk_tables, per_dim_index, num_groups = [], [], []
    for dim, length in enumerate(t.shape):
        axes = axes_sharding(layout.placements, dim)
        chunks = dim_chunks(length, mesh.shape, layout.placements, dim)
        lookup: dict[tuple[int, ...], int] = {}
        for _, _, c in chunks:
            lookup.setdefault(c, len(lookup))
        index = np.array([lookup.get(tuple(int(x) for x in row[list(axes)]), -1) for row in coords])
        chunk_tables.append([(lo, hi, lookup[c]) for lo, hi, c in chunks])
        per_dim_index.append(index)
        num_groups.append(len(lookup))
    if t.shape:
        stacked = np.stack(per_dim_index)
        empty = (stacked < 0).any(axis=0)
        dims = tuple(max(1, n) for n in num_groups)
        flat = np.asarray(np.ravel_multi_index(tuple(np.where(empty, 0, stacked)), dims))
        shard: np.ndarray = np.where(empty, -1, flat)
    else:
        shard = np.zeros(len(mesh.devices), dtype=np.int64)
    return _Layout(chunk_tables, num_groups, shard, np.asarray(mesh.devices, dtype=np.int64))


def _dim_pieces(src: list[tuple[int, int, int]], dst: list[tuple[int, int, int]]) -> np.ndarray:
    """Intersections of two partitions of one dim: rows `(lo, hi, src_group, dst_group)`."""
    out, i, j = [], 0, 0
    while i < len(src) and j < len(dst):
        lo, hi = max(src[i][0], dst[j][0]), min(src[i][1], dst[j][1])
        if lo < hi:
            out.append((lo, hi, src[i][2], dst[j][2]))
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
    if t.src.blocks is not None or t.dst.blocks is not None:
        return _grid_tiles(t, request, sets, max_ndim)
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
        src_dims = tuple(src.num_groups)
        dst_dims = tuple(dst.num_groups)
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


def _cell_members(
    boxes: dict[int, tuple[tuple[tuple[int, int], ...], ...]], cuts: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """`(cell, device)` pairs, sorted and distinct: the grid cells (flat ids) inside some box of
    each device."""
    dims = tuple(len(c) - 1 for c in cuts)
    cells, devices = [], []
    for d, held in boxes.items():
        for box in held:
            ranges = [
                np.arange(np.searchsorted(c, lo), np.searchsorted(c, hi))
                for c, (lo, hi) in zip(cuts, box, strict=True)
            ]
            ids = np.ravel_multi_index(np.ix_(*ranges), dims).ravel() if ranges else np.zeros(1)
            cells.append(ids.astype(np.int64))
            devices.append(np.full(len(ids), d, dtype=np.int64))
    if not cells:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    pairs = np.unique(np.stack([np.concatenate(cells), np.concatenate(devices)]), axis=1)
    return pairs[0], pairs[1]


def _grouped(cells: np.ndarray, devices: np.ndarray) -> dict[int, np.ndarray]:
    keys, starts = np.unique(cells, return_index=True)
    bounds = [*starts[1:].tolist(), len(cells)][: len(keys)]
    return {int(k): devices[a:b] for k, a, b in zip(keys, starts, bounds, strict=True)}


def _grid_tiles(
    t: TensorSpec, request: Request, sets: _DeviceSets, max_ndim: int
) -> dict[str, np.ndarray]:
    """Tiles of a tensor with blocks on either side: the cells of the grid cut by every box
    edge, each with the devices whose boxes contain it."""
    sides = []
    for layout in (t.src, t.dst):
        mesh = request.meshes[layout.mesh]
        held = {d: h.boxes for d, h in holdings(t.shape, mesh, layout).items()}
        sides.append((held, {d: i for i, d in enumerate(mesh.devices)}))
    (src_held, src_pos), (dst_held, dst_pos) = sides
    boxes = (box for held in (src_held, dst_held) for bs in held.values() for box in bs)
    cuts = [
        np.array(c, dtype=np.int64)
        for c in grid_cuts(t.shape, (((iv,) for iv in box) for box in boxes))
    ]
    holders = _grouped(*_cell_members(src_held, cuts))
    needers = _grouped(*_cell_members(dst_held, cuts))
    dims = tuple(len(c) - 1 for c in cuts)
    rows = []
    for cell, wanting in needers.items():
        having = holders.get(cell)
        if having is None:  # parsing checks that source blocks cover the tensor
            raise ValueError(f"tensor {t.name!r}: no source block holds grid cell {cell}")
        lacking = np.setdiff1d(wanting, having)
        if len(lacking):
            first_dst = min(dst_pos[int(d)] for d in wanting)
            first_src = min(src_pos[int(d)] for d in having)
            rows.append((cell, sets.intern(having), sets.intern(lacking), first_dst, first_src))
    lo = np.zeros((len(rows), max_ndim), dtype=np.int64)
    hi = np.ones((len(rows), max_ndim), dtype=np.int64)
    if rows and dims:
        index = np.unravel_index(np.array([r[0] for r in rows], dtype=np.int64), dims)
        for d, c in enumerate(cuts):
            lo[:, d], hi[:, d] = c[index[d]], c[index[d] + 1]
    table = np.array([r[1:] for r in rows], dtype=np.int64).reshape(-1, 4)
    natural = np.stack(
        [np.zeros(len(rows), dtype=np.int64), table[:, 2], table[:, 3]], axis=1
    ).reshape(-1, 3)
    return {
        "lo": lo,
        "hi": hi,
        "num_bytes": np.prod(hi - lo, axis=1) * t.itemsize_bytes,
        "holders": table[:, 0],
        "needers": table[:, 1],
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
