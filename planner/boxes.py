"""Arithmetic on half-open index boxes: `((lo, hi), ...)` per tensor dim."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from meshcast.planner.mesh import Box

#: `covers` tests pairwise disjointness with numpy up to this many boxes
DISJOINT_CHECK_MAX = 256


def volume(box: Box) -> int:
    out = 1
    for lo, hi in box:  # a loop: boxes are short, and this runs per piece of every plan
        out *= max(0, hi - lo)
    return out


def intersect(a: Box, b: Box) -> Box | None:
    """The common part of `a` and `b`, or None when it is empty."""
    out = tuple((max(al, bl), min(ah, bh)) for (al, ah), (bl, bh) in zip(a, b, strict=True))
    return out if all(lo < hi for lo, hi in out) else None


def contains(outer: Box, inner: Box) -> bool:
    for (ol, oh), (il, ih) in zip(outer, inner, strict=True):  # noqa: SIM110 (faster)
        if il < ol or oh < ih:
            return False
    return True


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


def clipped_to(target: Box, boxes: Iterable[Box]) -> list[Box]:
    """The non-empty intersections of `boxes` with `target`."""
    return [c for c in (intersect(target, b) for b in boxes) if c is not None]


def grid_cuts(
    shape: Sequence[int], regions: Iterable[Iterable[Iterable[tuple[int, int]]]]
) -> list[list[int]]:
    """Per tensor dim, the sorted edges (0 and the length included) of every interval of
    `regions`, each region given as its intervals per dim (a box: one interval per dim)."""
    edges: list[set[int]] = [{0, n} for n in shape]
    for region in regions:
        for d, intervals in enumerate(region):
            for interval in intervals:
                edges[d].update(interval)
    return [sorted(e) for e in edges]


def covers(target: Box, cover: Sequence[Box]) -> bool:
    """Whether the boxes of `cover` together hold every element of `target`.

    Clipped to `target`, pairwise disjoint boxes cover it exactly when their volumes add up to
    its volume (the usual case, checked with numpy); otherwise `uncovered_volume` decides."""
    clipped = clipped_to(target, cover)
    if target in clipped:
        return True
    need = volume(target)
    if need == 0:
        return True
    if sum(volume(c) for c in clipped) < need:
        return False
    if len(clipped) <= DISJOINT_CHECK_MAX:
        lo = np.array([[a for a, _ in c] for c in clipped], dtype=np.int64)
        hi = np.array([[b for _, b in c] for c in clipped], dtype=np.int64)
        lo_a, hi_a, lo_b, hi_b = lo[:, None, :], hi[:, None, :], lo[None, :, :], hi[None, :, :]
        overlap = np.all((lo_a < hi_b) & (lo_b < hi_a), axis=2)
        if np.count_nonzero(overlap) == len(clipped):  # each box meets only itself
            return True
    return uncovered_volume(target, clipped)[0] == 0


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


def meets(a: Box, b: Box) -> bool:
    """Whether `a` and `b` share at least one element."""
    for (al, ah), (bl, bh) in zip(a, b, strict=True):  # noqa: SIM110 (twice as fast as all())
        if al >= bh or bl >= ah:
            return False
    return True


def _pairwise_disjoint(lo: np.ndarray, hi: np.ndarray) -> bool:
    """Whether no two of the boxes `lo[i], hi[i]` (non-empty) share an element: all pairs,
    a block of rows at a time."""
    n = len(lo)
    for first in range(0, n, DISJOINT_CHECK_MAX):
        rows = slice(first, first + DISJOINT_CHECK_MAX)
        meet = np.all(
            (lo[rows, None, :] < hi[None, :, :]) & (lo[None, :, :] < hi[rows, None, :]), axis=2
        )
        if np.count_nonzero(meet) > meet.shape[0]:  # each box meets only itself
            return False
    return True


class TimedBoxes:
    """Boxes of one tensor that became available at given times.

    Most devices hold a handful of boxes per tensor: those are searched as plain tuples. Once
    a device holds `ARRAYS_FROM` boxes, numpy copies (grown by doubling) take over the search.
    A piece that is exactly a box meeting no other one (what relays forward) is answered by a
    lookup; whether that box meets another is worked out when it is first asked for, and
    afterwards only against the boxes added since.
    """

    ARRAYS_FROM = 12
    #: below this many boxes to compare, plain tuples beat numpy
    NUMPY_FROM = 24

    __slots__ = ("_alone", "_exact", "_hi", "_lo", "_times", "boxes")

    def __init__(self) -> None:
        self.boxes: list[Box] = []
        self._times: list[float] = []
        self._lo: np.ndarray | None = None
        self._hi: np.ndarray | None = None
        #: the first index of every distinct box
        self._exact: dict[Box, int] = {}
        #: box index -> how many boxes (from the first) it is known to meet none of but
        #: itself; -1 once it meets one
        self._alone: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self.boxes)

    def add(self, box: Box, time_s: float) -> None:
        n = len(self.boxes)
        self.boxes.append(box)
        self._times.append(time_s)
        self._exact.setdefault(box, n)
        if self._lo is None:
            if n + 1 < self.ARRAYS_FROM:
                return
            self._lo = np.array([[lo for lo, _ in b] for b in self.boxes], dtype=np.int64)
            self._hi = np.array([[hi for _, hi in b] for b in self.boxes], dtype=np.int64)
            return
        assert self._hi is not None
        if n == len(self._lo):
            self._lo = np.concatenate([self._lo, np.zeros_like(self._lo)])
            self._hi = np.concatenate([self._hi, np.zeros_like(self._hi)])
        self._lo[n] = [lo for lo, _ in box]
        self._hi[n] = [hi for _, hi in box]

    def _is_alone(self, j: int) -> bool:
        """Whether box `j` meets no other box, checked against the boxes added since the last
        time it was asked."""
        known = self._alone.get(j, 0)
        if known < 0:
            return False
        n = len(self.boxes)
        if known < n:
            if any(k != j for k in self._meeting(self.boxes[j], known)):
                self._alone[j] = -1
                return False
            self._alone[j] = n
        return True

    def _meeting(self, piece: Box, first: int = 0) -> list[int]:
        """Indices (from `first`) of the boxes that meet `piece`, in the order they were added."""
        n = len(self.boxes)
        if self._lo is None or self._hi is None or n - first < self.NUMPY_FROM:
            boxes = self.boxes
            return [j for j in range(first, n) if meets(boxes[j], piece)]
        lo = np.array([a for a, _ in piece], dtype=np.int64)
        hi = np.array([b for _, b in piece], dtype=np.int64)
        hit = np.all((self._lo[first:n] < hi) & (lo < self._hi[first:n]), axis=1)
        found: list[int] = (np.flatnonzero(hit) + first).tolist()
        return found

    def time_to_cover(self, piece: Box) -> float | None:
        """Earliest time at which the boxes cover `piece`, None when they never do.

        Boxes that meet `piece` are taken in time order until nothing is left uncovered.
        """
        j = self._exact.get(piece)
        if j is not None and self._is_alone(j):  # only this box holds any of it
            return self._times[j]
        remaining = [piece]
        for j in sorted(self._meeting(piece), key=self._times.__getitem__):
            box = self.boxes[j]
            if len(remaining) == 1 and contains(box, remaining[0]):
                return self._times[j]
            remaining = [r for part in remaining for r in subtract(part, box)]
            if not remaining:
                return self._times[j]
        return None

    def covers(self, target: Box) -> bool:
        """Whether the boxes together hold every element of `target` (see `covers`): clipped
        with numpy, volumes summed, pairwise disjointness checked with numpy."""
        if target in self._exact:
            return True
        n = len(self.boxes)
        if n == 0:
            return volume(target) == 0
        all_lo, all_hi = self._lo, self._hi
        if all_lo is None or all_hi is None:
            all_lo = np.array([[a for a, _ in box] for box in self.boxes], dtype=np.int64)
            all_hi = np.array([[b for _, b in box] for box in self.boxes], dtype=np.int64)
        lo = np.maximum(all_lo[:n], np.array([a for a, _ in target], dtype=np.int64))
        hi = np.minimum(all_hi[:n], np.array([b for _, b in target], dtype=np.int64))
        inside = np.all(hi > lo, axis=1)
        lo, hi = lo[inside], hi[inside]
        have = sum(math.prod(extent) for extent in (hi - lo).tolist())
        need = volume(target)
        if have < need:
            return False
        if have == need and _pairwise_disjoint(lo, hi):
            return True
        lows, highs = lo.tolist(), hi.tolist()
        clipped = [tuple(zip(a, b, strict=True)) for a, b in zip(lows, highs, strict=True)]
        return uncovered_volume(target, clipped)[0] == 0
