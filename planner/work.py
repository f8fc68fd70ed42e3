"""How much work a request is, from its numbers alone, before anything is tiled or allocated.

`estimate_work` bounds the tiles a request can have (the planner's largest arrays grow with
them) and counts its ports; services refuse requests whose work is over their limits before
planning (DESIGN §1: bad input gets an error naming the field, never a crash).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from planner.errors import RequestError
from planner.mesh import Placement, Strided, placement_dim
from planner.request import Layout, MeshSpec, Request, TensorSpec

#: what planning takes beyond the tiles and ports (interpreter, numpy, solver modules)
BASE_BYTES = 64 << 20
#: bytes of planner state per tile and per port, at most (measured peaks, `meshcast plan`
#: greedy: 1.4 KiB per tile on a per-expert refit of 27,371 tiles; 6.7 KiB per port on a
#: gather boundary of 32,768 ports and 131,072 transfers), with room to spare
BYTES_PER_TILE = 16 << 10
BYTES_PER_PORT = 8 << 10
#: default limits of `meshcast plan` and the service
DEFAULT_MAX_TILES = 4_000_000
DEFAULT_MAX_SOLVE_BYTES = 8 << 30


@dataclass(frozen=True)
class Work:
    """Upper bounds on a request's tiles and the number of its ports."""

    tiles: int
    ports: int

    @property
    def solve_bytes(self) -> int:
        """About the most memory planning the request takes."""
        return BASE_BYTES + self.tiles * BYTES_PER_TILE + self.ports * BYTES_PER_PORT


def _intervals(length: int, mesh: MeshSpec, placements: tuple[Placement, ...], dim: int) -> int:
    """At most how many intervals the layout cuts tensor dim `dim` into."""
    count = 1
    for axis, p in enumerate(placements):
        if placement_dim(p) == dim:
            count *= mesh.shape[axis] * (p.split_factor if isinstance(p, Strided) else 1)
    return min(count, max(1, length))


def _cuts(t: TensorSpec, layout: Layout, mesh: MeshSpec, dim: int) -> int:
    """At most how many pieces the layout's boundaries cut tensor dim `dim` into."""
    if layout.blocks is not None:
        edges = 2 * sum(len(boxes) for boxes in layout.blocks)
        return min(edges + 1, max(1, t.shape[dim]))
    return _intervals(t.shape[dim], mesh, layout.placements, dim)


def tensor_tiles(request: Request, t: TensorSpec) -> int:
    """An upper bound on the tiles of tensor `t`: per dim, the pieces both layouts' boundaries
    cut it into, multiplied over the dims."""
    src, dst = request.meshes[t.src.mesh], request.meshes[t.dst.mesh]
    return math.prod(
        min(max(1, n), _cuts(t, t.src, src, d) + _cuts(t, t.dst, dst, d) - 1)
        for d, n in enumerate(t.shape)
    )


def estimate_work(request: Request) -> Work:
    """Upper bounds on the tiles of `request`, and its port count (DESIGN §3)."""
    per_layout: dict[tuple[object, ...], int] = {}
    tiles = 0
    for t in request.tensors:
        key = (t.shape, t.src, t.dst)
        if key not in per_layout:
            per_layout[key] = tensor_tiles(request, t)
        tiles += per_layout[key]
    cluster = request.cluster
    devices = sum(len(h) for h in cluster.hosts)
    ports = 2 * len(cluster.hosts) * cluster.nics_per_host + 2 * devices
    return Work(tiles, ports)


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
