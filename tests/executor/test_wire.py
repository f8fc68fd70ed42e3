"""A message on the wire: pieces aligned, chunks cut into contiguous runs of whole elements."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshcast.executor.wire import ALIGN_BYTES, Message, flat_range_boxes, wire_layout


@st.composite
def boxes_and_ranges(draw: st.DrawFn) -> tuple[tuple[tuple[int, int], ...], int, int]:
    ndim = draw(st.integers(0, 4))
    box = tuple(
        (lo, lo + draw(st.integers(1, 5)))
        for lo in draw(st.lists(st.integers(0, 9), min_size=ndim, max_size=ndim))
    )
    count = math.prod(hi - lo for lo, hi in box)
    first = draw(st.integers(0, count))
    last = draw(st.integers(first, count))
    return box, first, last


@settings(max_examples=300, deadline=None)
@given(boxes_and_ranges())
def test_flat_ranges_are_cut_into_few_contiguous_boxes_in_order(case) -> None:  # type: ignore[no-untyped-def]
    box, first, last = case
    shape = tuple(hi - lo for lo, hi in box)
    numbers = np.arange(math.prod(shape)).reshape(shape)  # element -> its row-major position
    seen: list[int] = []
    runs = list(flat_range_boxes(box, first, last))
    for at, sub in runs:
        part = numbers[
            tuple(slice(lo - blo, hi - blo) for (lo, hi), (blo, _) in zip(sub, box, strict=True))
        ]
        flat = part.reshape(-1).tolist()
        assert flat == list(range(at, at + len(flat)))  # contiguous, starting where it says
        seen += flat
    assert seen == list(range(first, last))
    assert len(runs) <= max(1, 2 * len(box) - 1)


def test_pieces_start_aligned_and_chunks_hold_whole_elements() -> None:
    pieces, length = wire_layout(
        [(0, ((0, 3),), 1), (1, ((0, 2), (0, 3)), 8), (2, ((5, 6),), 1), (3, ((0, 4),), 2)]
    )
    assert [p.offset for p in pieces] == [0, 8, 56, 64]
    assert length == 72
    message = Message(pieces, length, chunk_bytes=16)
    assert message.num_chunks == 5 and message.chunk_length(4) == 8
    covered = []
    for k in range(message.num_chunks):
        for run in message.runs(k):
            piece = pieces[run.piece]
            size = math.prod(hi - lo for lo, hi in run.box) * piece.itemsize
            assert run.offset % piece.itemsize == 0
            assert run.offset >= 0 and run.offset + size <= message.chunk_length(k)
            covered.append((run.piece, run.box))
    # every element of every piece travels exactly once
    for i, piece in enumerate(pieces):
        parts = [b for p, b in covered if p == i]
        assert sum(math.prod(hi - lo for lo, hi in b) for b in parts) == math.prod(
            hi - lo for lo, hi in piece.box
        )


def test_chunks_must_be_aligned() -> None:
    pieces, length = wire_layout([(0, ((0, 3),), 4)])
    with pytest.raises(ValueError, match=f"multiple of {ALIGN_BYTES}"):
        Message(pieces, length, chunk_bytes=12)
