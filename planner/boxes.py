"""Arithmetic on half-open index boxes: `((lo, hi), ...)` per tensor dim."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from planner.mesh import Box


def volume(box: Box) -> int:
    return math.prod(max(0, hi - lo) for lo, hi in box)


def intersect(a: Box, b: Box) -> Box | None:
    """The common part of `a` and `b`, or None when it is empty."""
    out = tuple((max(al, bl), min(ah, bh)) for (al, ah), (bl, bh) in zip(a, b, strict=True))
    return out if all(lo < hi for lo, hi in out) else None


def contains(outer: Box, inner: Box) -> bool:
    return all(ol <= il and ih <= oh for (ol, oh), (il, ih) in zip(outer, inner, strict=True))


def subtract(a: Box, b: Box) -> list[Box]:
    """`a` minus `b` as disjoint boxes."""
    if intersect(a, b) is None:
        return [a]
    pieces: list[Box] = []
    rest = list(a)
    for d, ((lo, hi), (blo, bhi)) in enumerate(zip(a, b, strict=True)):
        if lo < blo:
            pieces.append((*rest[:d], (lo, blo), *rest[d + 1 :]))
        if bhi < hi:
            pieces.append((*rest[:d], (bhi, hi), *rest[d + 1 :]))
        rest[d] = (max(lo, blo), min(hi, bhi))
    return pieces


def uncovered_volume(target: Box, cover: Iterable[Box]) -> tuple[int, Box | None]:
    """Elements of `target` outside every box of `cover`, and one uncovered cell (or None).

    Coordinates are compressed to the cut points inside `target`, then covered cells are
    marked with numpy slicing, so many small boxes stay cheap.
    """
    clipped = [c for c in (intersect(target, b) for b in cover) if c is not None]
    if volume(target) == 0:
        return 0, None
    cuts = [
        np.unique(np.array([lo, hi] + [c[k][0] for c in clipped] + [c[k][1] for c in clipped]))
        for k, (lo, hi) in enumerate(target)
    ]
    covered = np.zeros(tuple(len(c) - 1 for c in cuts), dtype=bool)
    for c in clipped:
        idx = tuple(
            slice(int(np.searchsorted(cuts[k], c[k][0])), int(np.searchsorted(cuts[k], c[k][1])))
            for k in range(len(target))
        )
        covered[idx] = True
    if covered.all():
        return 0, None
    widths = np.ones(covered.shape, dtype=np.int64)
    for k, cut in enumerate(cuts):
        shape = [1] * len(cuts)
        shape[k] = len(cut) - 1
        widths = widths * np.diff(cut).reshape(shape)
    missing = int(widths[~covered].sum())
    first = np.argwhere(~covered)[0]
    cell = tuple((int(cuts[k][i]), int(cuts[k][i + 1])) for k, i in enumerate(first))
    return missing, cell


class TimedBoxes:
    """Boxes of one tensor that became available at given times, searchable with numpy."""

    def __init__(self, ndim: int) -> None:
        self._lo = np.zeros((4, ndim), dtype=np.int64)
        self._hi = np.zeros((4, ndim), dtype=np.int64)
        self._time = np.zeros(4)
        self._boxes: list[Box] = []

    def __len__(self) -> int:
        return len(self._boxes)

    def add(self, box: Box, time_s: float) -> None:
        n = len(self._boxes)
        if n == len(self._time):
            self._lo = np.concatenate([self._lo, np.zeros_like(self._lo)])
            self._hi = np.concatenate([self._hi, np.zeros_like(self._hi)])
            self._time = np.concatenate([self._time, np.zeros_like(self._time)])
        self._lo[n] = [lo for lo, _ in box]
        self._hi[n] = [hi for _, hi in box]
        self._time[n] = time_s
        self._boxes.append(box)

    @property
    def boxes(self) -> list[Box]:
        return self._boxes

    def time_to_cover(self, piece: Box) -> float | None:
        """Earliest time at which the boxes cover `piece`, None when they never do.

        Boxes that meet `piece` are taken in time order until nothing is left uncovered.
        """
        n = len(self._boxes)
        if n == 0:
            return None
        lo = np.array([a for a, _ in piece], dtype=np.int64)
        hi = np.array([b for _, b in piece], dtype=np.int64)
        meets = np.all((self._lo[:n] < hi) & (lo < self._hi[:n]), axis=1)
        candidates = np.flatnonzero(meets)
        remaining = [piece]
        for j in candidates[np.argsort(self._time[candidates], kind="stable")]:
            remaining = [r for part in remaining for r in subtract(part, self._boxes[j])]
            if not remaining:
                return float(self._time[j])
        return None
