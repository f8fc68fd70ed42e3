"""Packing a chunk of a message from this rank's tensors, and unpacking one into them.

Every contiguous run of a chunk (`executor.wire`) is viewed in its own dtype and shape straight
from the staging slot, and copied from or to the views of the caller's tensors that hold its
segments: no whole shard is ever copied, and strided views are read and written in place.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from meshcast.executor.program import DESTINATION, SOURCE, RankProgram, RankStep
from meshcast.planner.boxes import intersect, volume
from meshcast.planner.mesh import Box


def _slices(outer: Box, inner: Box) -> tuple[slice, ...]:
    return tuple(
        slice(ilo - olo, ihi - olo) for (olo, _), (ilo, ihi) in zip(outer, inner, strict=True)
    )


class LocalTensors:
    """This rank's tensors during one run: the caller's source shards, the destination tensors
    (the caller's `out` or allocated), and the relay buffers alive at this point. `dtypes` are
    the wire's (the destination's): a source of another dtype is converted as it is packed,
    chunk by chunk, never as a whole."""

    def __init__(
        self,
        program: RankProgram,
        dtypes: Sequence[torch.dtype],
        sources: Sequence[torch.Tensor],
        destinations: Sequence[torch.Tensor],
        device: torch.device,
    ) -> None:
        self.program, self.dtypes, self.device = program, dtypes, device
        self.sources, self.destinations = sources, destinations
        self.relays: dict[int, torch.Tensor] = {}

    def view(self, kind: str, ref: int, box: Box) -> torch.Tensor:
        """The elements `box` (global indices) of local tensor `ref` of `kind`."""
        if kind == SOURCE:
            return self.sources[ref][_slices(self.program.sources[ref].box, box)]
        if kind == DESTINATION:
            return self.destinations[ref][_slices(self.program.destinations[ref].box, box)]
        return self.relays[ref][_slices(self.program.relays[ref].box, box)]

    def local_copies(self) -> None:
        """Bytes this rank holds in its source and needs in its destination tensors."""
        for copy in self.program.copies:
            target = self.view(DESTINATION, copy.destination, copy.box)
            target.copy_(self.view(SOURCE, copy.source, copy.box))

    def make_relays(self, step: RankStep) -> None:
        for ref in step.allocate:
            relay = self.program.relays[ref]
            shape = tuple(hi - lo for lo, hi in relay.box)
            self.relays[ref] = torch.empty(
                shape, dtype=self.dtypes[relay.tensor], device=self.device
            )

    def release_relays(self, step: RankStep) -> None:
        for ref in step.release:
            del self.relays[ref]

    def direct(self, step: RankStep, k: int) -> torch.Tensor | None:
        """Chunk `k` of `step`'s message as a view of this rank's own bytes, when it lies in
        one piece whose only segment is the whole piece, held in one contiguous local view:
        then it is sent from, or received straight into, that view (no staging copy)."""
        message = step.message
        lo = k * message.chunk_bytes
        hi = lo + message.chunk_length(k)
        piece = message.piece_at(lo)
        if piece is None or hi > message.pieces[piece].offset + message.pieces[piece].num_bytes:
            return None
        segments = step.segments[piece]
        whole = message.pieces[piece]
        if len(segments) != 1 or segments[0].box != whole.box:
            return None
        local = self.view(segments[0].kind, segments[0].ref, whole.box)
        if not local.is_contiguous() or local.dtype != self.dtypes[whole.tensor]:
            return None
        return local.reshape(-1).view(torch.uint8)[lo - whole.offset : hi - whole.offset]

    def copy_chunk(self, step: RankStep, k: int, data: torch.Tensor, to_wire: bool) -> None:
        """Pack chunk `k` of `step`'s message into `data` (`to_wire`) or unpack it from there."""
        message = step.message
        for run in message.runs(k):
            piece = message.pieces[run.piece]
            segments = step.segments[run.piece]
            if not segments:
                continue
            shape = tuple(hi - lo for lo, hi in run.box)
            end = run.offset + volume(run.box) * piece.itemsize
            staged = data[run.offset : end].view(self.dtypes[piece.tensor]).view(shape)
            for segment in segments:
                common = intersect(run.box, segment.box)
                if common is None:
                    continue
                wire = staged[_slices(run.box, common)]
                local = self.view(segment.kind, segment.ref, common)
                if to_wire:
                    wire.copy_(local)
                else:
                    local.copy_(wire)
