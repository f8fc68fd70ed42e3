"""How much work a request is, from its numbers alone, before anything is tiled or allocated.

`estimate_work` bounds the tiles a request can have (the planner's largest arrays grow with
them) and counts its ports; services refuse requests whose work is over their limits before
planning (DESIGN §1: bad input gets an error naming the field, never a crash).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

from meshcast.planner.boxes import grid_cuts
from meshcast.planner.errors import RequestError
from meshcast.planner.mesh import (
    Interval,
    Placement,
    Strided,
    mesh_coords,
    placement_dim,
    shard_intervals,
)
from meshcast.planner.request import MeshSpec, Request, TensorSpec

#: what planning takes beyond the tiles and ports (interpreter, numpy, solver modules)
BASE_BYTES = 64 << 20
#: bytes of planner state per tile and per port, at most (measured peaks, `meshcast plan`
#: greedy: 1.4 KiB per tile on a per-expert refit of 27,371 tiles; 6.7 KiB per port on a
#: gather boundary of 32,768 ports and 131,072 transfers), with room to spare
BYTES_PER_TILE = 16 << 10
BYTES_PER_PORT = 8 << 10
#: numpy temporaries per (cell, device) pair of a block layout's grid
BYTES_PER_GRID_PAIR = 64
#: default limits of `meshcast plan` and the service
DEFAULT_MAX_TILES = 4_000_000
DEFAULT_MAX_SOLVE_BYTES = 8 << 30


@dataclass(frozen=True)
class Work:
    """Upper bounds on a request's tiles, the number of its ports and the (grid cell, device)
    pairs its block layouts make the tiler list."""

    tiles: int
    ports: int
    grid_pairs: int = 0

    @property
    def solve_bytes(self) -> int:
        """About the most memory planning the request takes."""
        return (
            BASE_BYTES
            + self.tiles * BYTES_PER_TILE
            + self.ports * BYTES_PER_PORT
            + self.grid_pairs * BYTES_PER_GRID_PAIR
        )


def _intervals(length: int, mesh: MeshSpec, placements: tuple[Placement, ...], dim: int) -> int:
    """At most how many intervals the layout cuts tensor dim `dim` into."""
    count = 1
    for axis, p in enumerate(placements):
        if placement_dim(p) == dim:
            count *= mesh.shape[axis] * (p.split_factor if isinstance(p, Strided) else 1)
    return min(count, max(1, length))


def tensor_tiles(request: Request, t: TensorSpec) -> tuple[int, int]:
    """An upper bound on the tiles of tensor `t` (per dim, the pieces both layouts' boundaries
    cut it into, multiplied over the dims) and, with blocks, the (grid cell, device) pairs the
    tiler lists."""
    if t.src.blocks is not None or t.dst.blocks is not None:
        return _grid_work(request, t)
    src, dst = request.meshes[t.src.mesh], request.meshes[t.dst.mesh]
    tiles = math.prod(
        min(
            max(1, n),
            _intervals(n, src, t.src.placements, d) + _intervals(n, dst, t.dst.placements, d) - 1,
        )
        for d, n in enumerate(t.shape)
    )
    return tiles, 0


def _grid_work(request: Request, t: TensorSpec) -> tuple[int, int]:
    """Cells of the grid cut by the edges of every box of both layouts, and the (cell,
    device) pairs of those boxes (what `planner.tiles` lists)."""
    regions: list[tuple[tuple[Interval, ...], ...]] = []  # per region, per dim its intervals
    for layout in (t.src, t.dst):
        if layout.blocks is not None:
            regions += [tuple((iv,) for iv in box) for held in layout.blocks for box in held]
            continue
        mesh = request.meshes[layout.mesh]
        regions += [
            shard_intervals(t.shape, mesh.shape, layout.placements, coord)
            for coord in mesh_coords(mesh.shape).tolist()
        ]
    cuts = grid_cuts(t.shape, regions)
    cells = math.prod(len(c) - 1 for c in cuts)
    pairs = sum(
        math.prod(
            sum(bisect.bisect_left(c, hi) - bisect.bisect_left(c, lo) for lo, hi in intervals)
            for c, intervals in zip(cuts, region, strict=True)
        )
        for region in regions
    )
    return cells, pairs


def estimate_work(request: Request) -> Work:
    """Upper bounds on the tiles of `request`, and its port count (DESIGN §3)."""
    per_layout: dict[tuple[object, ...], tuple[int, int]] = {}
    tiles = pairs = 0
    for t in request.tensors:
        key = (t.shape, t.src, t.dst)
        if key not in per_layout:  # identical layouts are tiled once
            per_layout[key] = tensor_tiles(request, t)
            pairs += per_layout[key][1]
        tiles += per_layout[key][0]
    cluster = request.cluster
    devices = sum(len(h) for h in cluster.hosts)
    ports = 2 * len(cluster.hosts) * cluster.nics_per_host + 2 * devices
    return Work(tiles, ports, pairs)


def check_work(
    request: Request,
    max_tiles: int = DEFAULT_MAX_TILES,
    max_solve_bytes: int = DEFAULT_MAX_SOLVE_BYTES,
) -> Work:
    """The request's work; `RequestError` when it is over `max_tiles` or would take more than
    `max_solve_bytes` of memory to plan."""
    work = estimate_work(request)
    if work.tiles > max_tiles:
        raise RequestError(
            "tensors",
            f"the layouts cut these tensors into up to {work.tiles:,} tiles, over the limit of "
            f"{max_tiles:,}",
        )
    if work.solve_bytes > max_solve_bytes:
        raise RequestError(
            "tensors" if work.tiles * BYTES_PER_TILE >= work.ports * BYTES_PER_PORT else "cluster",
            f"planning this request takes up to {work.solve_bytes / 2**30:.1f} GiB "
            f"({work.tiles:,} tiles, {work.ports:,} ports), over the limit of "
            f"{max_solve_bytes / 2**30:.1f} GiB",
        )
    return work
