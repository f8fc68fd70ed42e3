"""`Refit.sync(verify=True)`: every engine box checked against the trainer's values.

Each destination box of the refit's request (an engine rank's block of a trainer tensor) gets
two checksums (`executor.checksums`): the one its engine rank computes from its live
parameter after the sync, and the expected one, the sum of what the trainer ranks compute from
their own shards. Each element of a trainer tensor is counted by one trainer rank only (the
lowest rank holding it; replicas are skipped), cut by the destination boxes, in the engine's
dtype when the sync converts. The plan plays no part: what is checked is the mapping's promise,
not the executor's bookkeeping. One all-reduce over the trainer and engine ranks carries both;
every rank then compares the same numbers, so a mismatch raises the same error everywhere,
naming the tensor, the engine rank and the box.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from meshcast.executor.checksums import checksum
from meshcast.executor.dtypes import TORCH_DTYPES
from meshcast.executor.local_data import Shards, region_view
from meshcast.executor.program import Region
from meshcast.planner.boxes import intersect, subtract
from meshcast.planner.mesh import Box
from meshcast.planner.problem import Problem

_LOW = (1 << 32) - 1


class RefitMismatchError(RuntimeError):
    """An engine rank's parameters do not hold the trainer's values after a sync."""


@dataclass(frozen=True)
class _Slot:
    """One destination box of tensor `tensor` on `device`, where its local data holds it."""

    device: int
    region: Region
    #: index of its distinct (tensor, box): the expected sum is shared by equal boxes
    key: int


@dataclass(frozen=True)
class _TrainerPart:
    """A part `box` of a trainer tensor this rank counts: inside its held `region`, inside the
    destination box of `key`."""

    region: Region
    box: Box
    key: int


def _owned(box: Box, lower: Sequence[Box]) -> list[Box]:
    """`box` less every box of `lower` (held by lower ranks, which count it)."""
    parts = [box]
    for other in lower:
        parts = [rest for part in parts for rest in subtract(part, other)]
    return parts


class RefitChecksums:
    """The checksum work of one rank, worked out once from the refit's request."""

    def __init__(self, problem: Problem, rank: int) -> None:
        self.problem, self.rank = problem, rank
        request = problem.request
        self.slots: list[_Slot] = []
        keys: dict[tuple[int, Box], int] = {}
        by_tensor: list[dict[Box, int]] = []
        for i in range(len(request.tensors)):
            distinct: dict[Box, int] = {}
            for device, held in problem.holdings(i, "dst").items():
                for box, (local, offset) in zip(held.boxes, held.places, strict=True):
                    key = keys.setdefault((i, box), len(keys))
                    distinct[box] = key
                    self.slots.append(_Slot(device, Region(i, box, local, offset), key))
            by_tensor.append(distinct)
        self.num_keys = len(keys)
        self._mine = [(k, slot) for k, slot in enumerate(self.slots) if slot.device == rank]
        self.parts: list[_TrainerPart] = []
        for i in range(len(request.tensors)):
            holding = problem.holding_of(i, "src", rank)
            if holding is None:
                continue
            lower = [
                b for device, boxes in problem.src_boxes(i).items() if device < rank for b in boxes
            ]
            for box, (local, offset) in zip(holding.boxes, holding.places, strict=True):
                for owned in _owned(box, lower):
                    for target, key in by_tensor[i].items():
                        common = intersect(owned, target)
                        if common is not None:
                            region = Region(i, box, local, offset)
                            self.parts.append(_TrainerPart(region, common, key))

    def _name(self, tensor: int) -> str:
        return self.problem.request.tensors[tensor].name

    def expected(self, sources: Shards) -> np.ndarray:
        """This rank's share of every expected checksum, from its source data (what it passes
        to `Executor.run`)."""
        sums = np.zeros(self.num_keys, dtype=np.uint64)
        tensors = self.problem.request.tensors
        for part in self.parts:
            spec = tensors[part.region.tensor]
            held = region_view(sources[spec.name], part.region)
            index = tuple(
                slice(lo - hlo, hi - hlo)
                for (lo, hi), (hlo, _) in zip(part.box, part.region.box, strict=True)
            )
            value = checksum(
                held[index],
                part.box,
                TORCH_DTYPES[spec.wire_dtype],
                canonical_nans=spec.dst_dtype is not None,
            )
            with np.errstate(over="ignore"):
                sums[part.key] += np.uint64(value)
        return sums

    def measured(self, landed: Shards) -> np.ndarray:
        """The checksum of every destination box this rank holds, from its destination data
        (what `Executor.run` filled)."""
        sums = np.zeros(len(self.slots), dtype=np.uint64)
        tensors = self.problem.request.tensors
        for index, slot in self._mine:
            spec = tensors[slot.region.tensor]
            view = region_view(landed[spec.name], slot.region)
            value = checksum(view, slot.region.box, canonical_nans=spec.dst_dtype is not None)
            sums[index] = np.uint64(value)
        return sums

    @staticmethod
    def shares(expected: np.ndarray, measured: np.ndarray) -> torch.Tensor:
        """This rank's expected and measured sums as one tensor to all-reduce: 32-bit halves
        in int64, so no sum over ranks can overflow."""
        both = np.concatenate([expected, measured])
        return torch.from_numpy(
            np.stack([both & np.uint64(_LOW), both >> np.uint64(32)]).astype(np.int64)
        )

    def compare(self, summed: torch.Tensor) -> None:
        """From every rank's shares summed, raise `RefitMismatchError` (the same on every rank)
        when any engine box differs from the trainer's values."""
        low, high = (summed.cpu().numpy()[k].astype(np.uint64) for k in (0, 1))
        with np.errstate(over="ignore"):
            total = low + (high << np.uint64(32))
        want, got = total[: self.num_keys], total[self.num_keys :]
        keys = np.array([s.key for s in self.slots], dtype=np.int64)
        wrong = np.flatnonzero(want[keys] != got)
        if len(wrong):
            slot = self.slots[int(wrong[0])]
            name = self._name(slot.region.tensor)
            box = [list(iv) for iv in slot.region.box]
            raise RefitMismatchError(
                f"verify: {name} {box} on engine rank {slot.device} does not hold the "
                f"trainer's values ({len(wrong)} of {len(self.slots)} engine boxes differ)"
            )
