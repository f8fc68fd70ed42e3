"""`TimedBoxes` against a brute-force reference: every element of a small tensor gets the time
it first arrives, so "when is this piece covered" and "is this target covered" are a max and
an all over cells, with no box arithmetic."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from meshcast.planner.boxes import TimedBoxes, covers
from meshcast.planner.mesh import Box

SHAPE = (6, 5, 4)


@st.composite
def boxes(draw: st.DrawFn) -> Box:
    out = []
    for n in SHAPE:
        lo = draw(st.integers(0, n - 1))
        out.append((lo, draw(st.integers(lo + 1, n))))
    return tuple(out)


def _first_arrival(held: list[tuple[Box, float]]) -> np.ndarray:
    """Per element, the earliest time a held box brings it (inf: never)."""
    grid = np.full(SHAPE, np.inf)
    for box, time_s in held:
        cells = tuple(slice(lo, hi) for lo, hi in box)
        grid[cells] = np.minimum(grid[cells], time_s)
    return grid


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(boxes(), st.floats(0, 10)), min_size=1, max_size=40),
    st.lists(boxes(), min_size=1, max_size=6),
    st.data(),
)
def test_time_to_cover_and_covers_match_element_times(
    held: list[tuple[Box, float]], queries: list[Box], data: st.DataObject
) -> None:
    timed = TimedBoxes()
    # queries interleave with additions, so what a box was checked against changes in between
    asked_at = sorted(data.draw(st.lists(st.integers(0, len(held)), min_size=len(queries),
                                         max_size=len(queries))))  # fmt: skip
    queries = queries + [box for box, _ in held[:3]]  # exact boxes: the lookup path
    asked_at += [len(held)] * len(held[:3])
    added = 0
    for query, at in sorted(zip(queries, asked_at, strict=True), key=lambda q: q[1]):
        while added < at:
            timed.add(*held[added])
            added += 1
        grid = _first_arrival(held[:added])[tuple(slice(lo, hi) for lo, hi in query)]
        expected = float(grid.max())
        found = timed.time_to_cover(query)
        assert (found is None) == (expected == np.inf)
        if found is not None:
            assert found == expected
        assert timed.covers(query) == (expected < np.inf)
        assert covers(query, [box for box, _ in held[:added]]) == (expected < np.inf)


def test_an_exact_box_is_covered_earlier_by_boxes_added_after_it_was_asked() -> None:
    timed = TimedBoxes()
    whole: Box = ((0, 4), (0, 4))
    timed.add(whole, 5.0)
    assert timed.time_to_cover(whole) == 5.0
    for lo, hi in itertools.pairwise((0, 2, 4)):
        timed.add(((lo, hi), (0, 4)), 1.0)
    assert timed.time_to_cover(whole) == 1.0  # the two halves came earlier
