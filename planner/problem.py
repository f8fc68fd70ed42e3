"""A request made ready for planning: topology, tiles, shard boxes and the lower bound."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

from meshcast.planner.bound import lower_bound_s
from meshcast.planner.boxes import volume
from meshcast.planner.holdings import Holding, holding_of, holdings
from meshcast.planner.mesh import Box
from meshcast.planner.plan import Piece
from meshcast.planner.request import Request
from meshcast.planner.stacking import Stacking, stack_identical
from meshcast.planner.tiles import Tiles, build_tiles
from meshcast.planner.topology import Topology


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

    def src_boxes(self, tensor: int) -> dict[int, tuple[Box, ...]]:
        """The boxes every device of tensor `tensor`'s source mesh holds."""
        return self._boxes(tensor, "src")

    def dst_boxes(self, tensor: int) -> dict[int, tuple[Box, ...]]:
        """The boxes every device of tensor `tensor`'s destination mesh must end up holding."""
        return self._boxes(tensor, "dst")

    def holdings(self, tensor: int, side: str) -> dict[int, Holding]:
        """Every mesh device's local data of tensor `tensor` on `side` ("src" or "dst")."""
        spec = self.request.tensors[tensor]
        layout = spec.src if side == "src" else spec.dst
        key = ("holdings", spec.shape, layout)  # identical layers share them
        if key not in self._cache:
            self._cache[key] = holdings(spec.shape, self.request.meshes[layout.mesh], layout)
        found = self._cache[key]
        assert isinstance(found, dict)
        return found

    def holding_of(self, tensor: int, side: str, device: int) -> Holding | None:
        """`holdings(tensor, side).get(device)`, without working out the other devices' when
        they are not known yet."""
        spec = self.request.tensors[tensor]
        layout = spec.src if side == "src" else spec.dst
        every = self._cache.get(("holdings", spec.shape, layout))
        if every is not None:
            assert isinstance(every, dict)
            return every.get(device)
        index = self._mesh_index(layout.mesh).get(device)
        if index is None:
            return None
        key = ("holding", spec.shape, layout, device)
        found = self._cache.get(key)
        if found is None:
            mesh = self.request.meshes[layout.mesh]
            found = self._cache[key] = holding_of(spec.shape, mesh, layout, index)
        assert isinstance(found, Holding)
        return found

    def boxes_of(self, tensor: int, side: str, device: int) -> tuple[Box, ...]:
        """The boxes `device` holds (`side="src"`) or must end up holding of `tensor`."""
        holding = self.holding_of(tensor, side, device)
        return () if holding is None else holding.boxes

    def boxes_for(
        self, tensor: int, side: str, devices: Sequence[int]
    ) -> dict[int, tuple[Box, ...]]:
        """`boxes_of` for each of `devices`: every device's worked out at once when they are
        most of the mesh, else each of theirs alone (a template's few among many copies)."""
        if 2 * len(devices) > len(self.mesh_devices(tensor, side)):
            every = self._boxes(tensor, side)
            return {d: every.get(d, ()) for d in devices}
        return {d: self.boxes_of(tensor, side, d) for d in devices}

    def mesh_devices(self, tensor: int, side: str) -> tuple[int, ...]:
        """The devices of tensor `tensor`'s mesh on `side`, in mesh order."""
        spec = self.request.tensors[tensor]
        return self.request.meshes[(spec.src if side == "src" else spec.dst).mesh].devices

    def _mesh_index(self, mesh: str) -> dict[int, int]:
        """Each device of mesh `mesh` -> its position in the mesh's device list."""
        key = ("mesh index", mesh)
        found = self._cache.get(key)
        if found is None:
            devices = self.request.meshes[mesh].devices
            found = self._cache[key] = {d: i for i, d in enumerate(devices)}
        assert isinstance(found, dict)
        return found

    def _boxes(self, tensor: int, side: str) -> dict[int, tuple[Box, ...]]:
        spec = self.request.tensors[tensor]
        key = ("boxes", spec.shape, spec.src if side == "src" else spec.dst)
        if key not in self._cache:
            self._cache[key] = {d: h.boxes for d, h in self.holdings(tensor, side).items()}
        boxes = self._cache[key]
        assert isinstance(boxes, dict)
        return boxes


def build_problem(request: Request) -> Problem:
    """Tile the request and index its cluster."""
    src = frozenset(d for t in request.tensors for d in request.meshes[t.src.mesh].devices)
    dst = frozenset(d for t in request.tensors for d in request.meshes[t.dst.mesh].devices)
    return Problem(request, Topology.from_cluster(request.cluster), src, dst)
