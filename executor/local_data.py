"""A rank's data of one tensor: one tensor (placements, DTensor's local tensor) or a list of
tensors (block layouts, one per block), and the views of it that hold each of its boxes."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch

from meshcast.executor.program import Region

#: what a rank passes (sources, `out`) and gets back per tensor name
LocalData = torch.Tensor | Sequence[torch.Tensor]
Shards = Mapping[str, LocalData]


def as_local_data(tensors: list[torch.Tensor], listed: bool) -> LocalData:
    """A rank's data of one tensor from its local tensors: the list for block layouts, else
    the one tensor."""
    return tensors if listed else tensors[0]


def region_view(data: LocalData, region: Region) -> torch.Tensor:
    """The elements of `region.box` inside the rank's data of its tensor."""
    local = data if isinstance(data, torch.Tensor) else data[region.local]
    index = tuple(
        slice(o, o + hi - lo) for o, (lo, hi) in zip(region.offset, region.box, strict=True)
    )
    return local[index] if index else local


def region_views(
    regions: Sequence[Region], data: Mapping[str, LocalData], name_of: Callable[[int], str]
) -> list[torch.Tensor]:
    """One view per region (in order) into the data of its tensor's name."""
    return [region_view(data[name_of(r.tensor)], r) for r in regions]
