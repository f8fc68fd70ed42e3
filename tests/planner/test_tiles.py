"""Tiles cover every destination element exactly once, with the right holders and needers."""

from __future__ import annotations

import random

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from meshcast.planner.boxes import contains, intersect, volume
from meshcast.planner.synthetic import random_multibox_request, random_request
from tests.conftest import load_case, problem_of


def check_tiles_cover_destinations(request: dict) -> None:  # type: ignore[type-arg]
    """A device's boxes on one side are disjoint (placements, and the generators' blocks)."""
    problem = problem_of(request)
    tiles = problem.tiles
    for ti in range(len(problem.request.tensors)):
        src_boxes, dst_boxes = problem.src_boxes(ti), problem.dst_boxes(ti)
        mine = [i for i in range(len(tiles)) if tiles.tensor[i] == ti]
        for d, targets in dst_boxes.items():
            own = src_boxes.get(d, ())
            held = sum(volume(intersect(t, o) or ((0, 0),)) for t in targets for o in own)
            needed = [i for i in mine if d in tiles.device_sets[int(tiles.needers[i])]]
            boxes = [tiles.box(i) for i in needed]
            # every needed tile lies inside a destination box and outside what it holds
            assert all(any(contains(t, b) for t in targets) for b in boxes)
            assert all(intersect(b, o) is None for b in boxes for o in own)
            # pairwise disjoint, and together with the held part they fill the boxes exactly
            for a in range(len(boxes)):
                for b in range(a + 1, len(boxes)):
                    assert intersect(boxes[a], boxes[b]) is None
            assert sum(volume(b) for b in boxes) + held == sum(volume(t) for t in targets)
        for i in mine:
            box = tiles.box(i)
            holders = tiles.device_sets[int(tiles.holders[i])]
            assert holders == tuple(
                sorted(d for d, own in src_boxes.items() if any(contains(o, box) for o in own))
            )
            assert (
                int(tiles.num_bytes[i]) == volume(box) * problem.request.tensors[ti].itemsize_bytes
            )


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_tiles_cover_every_destination_element_once(seed: int) -> None:
    check_tiles_cover_destinations(random_request(random.Random(seed), max_hosts=4))


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_tiles_of_strided_and_block_layouts(seed: int) -> None:
    check_tiles_cover_destinations(random_multibox_request(random.Random(seed), max_hosts=4))


def test_tiles_of_shared_cases() -> None:
    for name in ("paper-n2m-case6", "dgx-boundary-2x8-to-2x8", "inplace-2x4"):
        check_tiles_cover_destinations(load_case(name))


def test_scale_case_tiles() -> None:
    tiles = problem_of(load_case("scale-64x8-to-64x8")).tiles
    assert len(tiles) == 4096
    assert set(np.unique(tiles.num_bytes).tolist()) == {1024 * 128 * 2}


def test_same_mesh_same_layout_needs_nothing() -> None:
    request = load_case("inplace-2x4")
    request["tensors"][0]["dst"] = request["tensors"][0]["src"]
    problem = problem_of(request)
    assert len(problem.tiles) == 0
    assert problem.lower_bound_s == 0.0


def test_scalar_tensor() -> None:
    request = load_case("paper-1tom-1x2")
    request["tensors"][0]["shape"] = []
    request["tensors"][0]["src"]["placements"] = ["R", "R"]
    tiles = problem_of(request).tiles
    assert len(tiles) == 1 and int(tiles.num_bytes[0]) == 4
