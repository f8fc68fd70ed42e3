"""What one rank holds of each tensor: boxes of global indices with their data."""

from __future__ import annotations

import torch

from planner.boxes import contains, intersect, volume
from planner.mesh import Box


def _slices(outer: Box, inner: Box) -> tuple[slice, ...]:
    return tuple(
        slice(ilo - olo, ihi - olo) for (olo, _), (ilo, ihi) in zip(outer, inner, strict=True)
    )


class Holdings:
    """Boxes of one tensor held by this rank: its source shard and every piece received."""

    def __init__(self, dtype: torch.dtype, device: torch.device) -> None:
        self.dtype, self.device = dtype, device
        self._parts: list[tuple[Box, torch.Tensor]] = []

    def add(self, box: Box, data: torch.Tensor) -> None:
        self._parts.append((box, data))

    def extract(self, box: Box) -> torch.Tensor:
        """The data of `box`, from one held box that contains it or assembled from several."""
        shape = tuple(hi - lo for lo, hi in box)
        if volume(box) == 0:  # an empty shard (torch.chunk leaves trailing chunks empty)
            return torch.empty(shape, dtype=self.dtype, device=self.device)
        for held, data in reversed(self._parts):
            if contains(held, box):
                return data[_slices(held, box)]
        out = torch.empty(shape, dtype=self.dtype, device=self.device)
        filled = 0
        for held, data in self._parts:
            common = intersect(held, box)
            if common is not None:
                out[_slices(box, common)] = data[_slices(held, common)]
                filled += volume(common)
        if filled < volume(box):  # overlaps can only over-count, so this is a sure miss
            raise KeyError(f"box {box} is not fully held")
        return out
