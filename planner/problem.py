"""A request made ready for planning: topology, tiles, shard boxes and the lower bound."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from planner.bound import lower_bound_s
from planner.boxes import volume
from planner.mesh import Box, mesh_coords, shard_box
from planner.plan import Piece
from planner.request import Request
from planner.stacking import Stacking, stack_identical
from planner.tiles import Tiles, build_tiles
from planner.topology import Topology


@dataclass(frozen=True)
class Problem:
    """Everything a solver needs; built once per request by `build_problem`."""

    request: Request
    topology: Topology
    src_devices: frozenset[int]
    dst_devices: frozenset[int]
    _cache: dict[object, object] = field(default_factory=dict, repr=False, compare=False)

    @cached_property
    def tiles(self) -> Tiles:
        """Every tile of the request (computed when first asked: a plan of the stacked
        request never needs the request's own)."""
        return build_tiles(self.request)

    @cached_property
    def lower_bound_s(self) -> float:
        return lower_bound_s(self.topology, self.tiles, self.dst_devices)

    @cached_property
    def stacked(self) -> tuple[Problem, Stacking] | None:
        """The problem with identical tensors stacked (see `planner.stacking`), None when
        no two tensors are alike."""
        stacking = stack_identical(self.request)
        if stacking is None:
            return None
        problem = Problem(stacking.request, self.topology, self.src_devices, self.dst_devices)
        return problem, stacking

    def piece_bytes(self, piece: Piece) -> int:
        """Bytes of one plan piece."""
        return volume(piece.box) * self.request.tensors[piece.tensor].itemsize_bytes

    def src_boxes(self, tensor: int) -> dict[int, Box]:
        """Source shard box of every device of tensor `tensor`'s source mesh."""
        return self._boxes(tensor, "src")

    def dst_boxes(self, tensor: int) -> dict[int, Box]:
        """Destination shard box of every device of tensor `tensor`'s destination mesh."""
        return self._boxes(tensor, "dst")

    def _boxes(self, tensor: int, side: str) -> dict[int, Box]:
        spec = self.request.tensors[tensor]
        layout = spec.src if side == "src" else spec.dst
        key = ("boxes", spec.shape, layout)  # identical layers share their boxes
        if key not in self._cache:
            mesh = self.request.meshes[layout.mesh]
            coords = mesh_coords(mesh.shape)
            self._cache[key] = {
                d: shard_box(spec.shape, mesh.shape, layout.placements, coords[i])
                for i, d in enumerate(mesh.devices)
            }
        boxes = self._cache[key]
        assert isinstance(boxes, dict)
        return boxes


def build_problem(request: Request) -> Problem:
    """Tile the request and index its cluster."""
    src = frozenset(d for t in request.tensors for d in request.meshes[t.src.mesh].devices)
    dst = frozenset(d for t in request.tensors for d in request.meshes[t.dst.mesh].devices)
    return Problem(request, Topology.from_cluster(request.cluster), src, dst)
