"""Checksums of boxes: independent of layout and of how a box is cut, sensitive to position."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from meshcast.executor.checksums import SLAB_BYTES, checksum  # noqa: E402
from meshcast.executor.reference import reference_box  # noqa: E402

pytestmark = pytest.mark.torch

DTYPES = ["float32", "bfloat16", "float16", "int64", "uint8", "bool", "float8_e4m3fn"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_parts_of_a_box_add_up_to_the_box_in_any_layout(dtype: str) -> None:
    box = ((3, 40), (0, 9), (5, 11))
    x = reference_box("t", (50, 9, 11), dtype, box)  # random bits, NaN payloads included
    whole = checksum(x, box)
    strided = x.permute(2, 1, 0).contiguous().permute(2, 1, 0)
    assert checksum(strided, box) == whole
    parts = [((3, 17), (0, 9), (5, 11)), ((17, 40), (0, 4), (5, 11)), ((17, 40), (4, 9), (5, 11))]
    views = [x[:14], x[14:, :4], x[14:, 4:]]
    assert sum(checksum(v, b) for v, b in zip(views, parts, strict=True)) % (1 << 64) == whole


def test_one_flipped_bit_and_one_swap_change_the_checksum() -> None:
    box = ((0, 64), (0, 32))
    x = reference_box("w", (64, 32), "bfloat16", box)
    base = checksum(x, box)
    for row, col, bit in [(0, 0, 0), (63, 31, 15), (10, 5, 7)]:
        flipped = x.clone()
        flipped.view(torch.int16)[row, col] ^= 1 << bit
        assert checksum(flipped, box) != base
    swapped = x.clone()
    swapped[[1, 2]] = swapped[[2, 1]]  # two rows exchanged (a wrong fused order)
    assert checksum(swapped, box) != base
    shifted = ((1, 65), (0, 32))  # the same values one row lower in the tensor
    assert checksum(x, shifted) != base


def test_a_converted_box_sums_as_its_conversion_does_with_nans_canonical() -> None:
    rows = SLAB_BYTES // (4 * 64) + 7  # more than one slab
    box = ((0, rows), (0, 64))
    x = reference_box("c", (rows, 64), "float32", box)
    assert bool(torch.isnan(x).any())
    converted = torch.empty((64, rows), dtype=torch.bfloat16).t()
    converted.copy_(x)  # a strided conversion: other NaN payloads than x.to(bfloat16)
    assert checksum(x, box, torch.bfloat16, canonical_nans=True) == checksum(
        converted, box, canonical_nans=True
    )
    assert checksum(x, box, torch.float16, canonical_nans=True) != checksum(
        converted, box, canonical_nans=True
    )
