"""The bytes of one transfer on the wire, and how a chunk of them maps back onto boxes.

A transfer's pieces travel as one message: piece after piece, each in row-major order of its box,
each starting at a multiple of `ALIGN_BYTES` (a few bytes of padding at most), so that every
chunk boundary that is a multiple of `ALIGN_BYTES` falls between whole elements of any dtype and
every piece can be viewed in its own dtype straight from a staging slot. Chunk `k` of a message
is its bytes `[k * chunk_bytes, (k + 1) * chunk_bytes)`; a chunk of a piece is a range of its
row-major elements, which `flat_range_boxes` cuts into at most `2 * ndim - 1` boxes, each a
contiguous run of the chunk.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from meshcast.planner.mesh import Box

#: every piece starts at a multiple of this (the largest element size), as does every chunk
ALIGN_BYTES = 8


def align_up(num_bytes: int) -> int:
    return -(-num_bytes // ALIGN_BYTES) * ALIGN_BYTES


@dataclass(frozen=True)
class WirePiece:
    """One piece of a message: its box of tensor `tensor`, element size, place in the message."""

    tensor: int
    box: Box
    itemsize: int
    offset: int

    @property
    def num_bytes(self) -> int:
        return math.prod(hi - lo for lo, hi in self.box) * self.itemsize


@dataclass(frozen=True)
class Run:
    """A contiguous run of one chunk: elements of `box` (global indices) of piece `piece`,
    found at byte `offset` of the chunk."""

    piece: int
    box: Box
    offset: int


def wire_layout(pieces: Sequence[tuple[int, Box, int]]) -> tuple[tuple[WirePiece, ...], int]:
    """Place `(tensor, box, itemsize)` pieces one after another; returns them and the message
    length in bytes."""
    out, offset = [], 0
    for tensor, box, itemsize in pieces:
        piece = WirePiece(tensor, box, itemsize, offset)
        out.append(piece)
        offset = align_up(offset + piece.num_bytes)
    length = out[-1].offset + out[-1].num_bytes if out else 0
    return tuple(out), length


def flat_range_boxes(box: Box, first: int, last: int) -> Iterator[tuple[int, Box]]:
    """Elements `[first, last)` of `box` in row-major order, as `(position of the run's first
    element, sub-box)` pairs in order; every sub-box is contiguous in that order."""
    if first >= last:
        return
    if not box:
        yield 0, ()
        return
    (lo, _), rest = box[0], box[1:]
    inner = math.prod(hi - lo for lo, hi in rest)
    row, col = divmod(first, inner)
    end_row, end_col = divmod(last, inner)
    if row == end_row:
        for at, sub in flat_range_boxes(rest, col, end_col):
            yield row * inner + at, ((lo + row, lo + row + 1), *sub)
        return
    if col:
        for at, sub in flat_range_boxes(rest, col, inner):
            yield row * inner + at, ((lo + row, lo + row + 1), *sub)
        row += 1
    if end_row > row:
        yield row * inner, ((lo + row, lo + end_row), *rest)
    if end_col:
        for at, sub in flat_range_boxes(rest, 0, end_col):
            yield end_row * inner + at, ((lo + end_row, lo + end_row + 1), *sub)


class Message:
    """A transfer's pieces laid out on the wire, cut into chunks of `chunk_bytes`."""

    def __init__(self, pieces: Sequence[WirePiece], num_bytes: int, chunk_bytes: int) -> None:
        if chunk_bytes % ALIGN_BYTES:
            raise ValueError(f"chunk_bytes: must be a multiple of {ALIGN_BYTES}, got {chunk_bytes}")
        self.pieces, self.num_bytes, self.chunk_bytes = tuple(pieces), num_bytes, chunk_bytes
        self._starts = [p.offset for p in self.pieces]

    @property
    def num_chunks(self) -> int:
        return -(-self.num_bytes // self.chunk_bytes)

    def chunk_length(self, k: int) -> int:
        return min(self.chunk_bytes, self.num_bytes - k * self.chunk_bytes)

    def piece_at(self, offset: int) -> int | None:
        """The piece whose bytes include byte `offset` of the message (None in padding)."""
        i = bisect.bisect_right(self._starts, offset) - 1
        if i < 0 or offset >= self.pieces[i].offset + self.pieces[i].num_bytes:
            return None
        return i

    def runs(self, k: int) -> Iterator[Run]:
        """The contiguous runs of chunk `k`, in order."""
        lo = k * self.chunk_bytes
        hi = lo + self.chunk_length(k)
        i = max(0, bisect.bisect_right(self._starts, lo) - 1)
        while i < len(self.pieces) and self.pieces[i].offset < hi:
            piece = self.pieces[i]
            start = max(lo, piece.offset) - piece.offset
            stop = min(hi, piece.offset + piece.num_bytes) - piece.offset
            if stop > start:
                size = piece.itemsize
                for at, sub in flat_range_boxes(piece.box, start // size, stop // size):
                    yield Run(i, sub, piece.offset + at * size - lo)
            i += 1
