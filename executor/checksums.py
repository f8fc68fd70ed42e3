"""Position-sensitive checksums of boxes of a tensor that add up over any partition of a box.

`checksum(view, box)` of the elements of global `box` (held in `view`, any strides) is, mod
2^64, the sum over elements of `bits(x) * (1 + w_0(i_0) + ... + w_{n-1}(i_{n-1}))`: `bits` the
element's bits as an integer, `w_d` a fixed pseudo-random even weight of the global index along
dim `d`. It is the sum of `w_d . marginal_d` over dims (one reduction per dim, exact integer
arithmetic, in any order), so the checksums of the parts of a box add up to the box's: a
trainer rank sums the parts it owns, an engine rank checks the box it holds, and neither needs
the other's partition. One changed element changes it (its weight is odd); moved or swapped
elements change it unless their weights happen to collide.

A view in another dtype than the one that lands (`as_dtype`, a refit converting fp32 into
bf16) is converted slab by slab (at most `SLAB_BYTES` at a time, never the whole tensor), NaNs
made one canonical NaN on both ends: torch keeps or drops a NaN's payload depending on the
memory layout it converts.
"""

from __future__ import annotations

import numpy as np
import torch

from meshcast.planner.mesh import Box

#: most bytes converted or copied at once
SLAB_BYTES = 8 << 20
_MASK = (1 << 64) - 1
_INTEGER_OF_SIZE = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _weights(dim: int, lo: int, hi: int) -> np.ndarray:
    """splitmix64 of (dim, index) for indices [lo, hi), made even."""
    z = np.arange(lo, hi, dtype=np.uint64) + np.uint64((dim + 1) * 0x9E3779B97F4A7C15 & _MASK)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return z & ~np.uint64(1)


def _integer_bits(x: torch.Tensor) -> torch.Tensor:
    return x.view(_INTEGER_OF_SIZE[x.element_size()])


def _marginals(bits: torch.Tensor) -> list[np.ndarray]:
    """Per dim, the sums over all other dims (int64, exact), as numpy arrays."""
    n = bits.dim()
    if bits.device.type == "cpu":  # numpy widens int16 / int32 sums far faster than torch
        array = bits.numpy()
        if n <= 2:
            return _marginals_of(array)
        # two passes over the data whatever the rank: the last dim's marginal, and the sums
        # over the last dim, whose own marginals are the other dims' (exact integer sums)
        last = np.asarray(array.sum(axis=tuple(range(n - 1)), dtype=np.int64))
        rest = array.sum(axis=n - 1, dtype=np.int64)
        return [*_marginals_of(rest), last]
    return [
        bits.sum(dim=[a for a in range(n) if a != d], dtype=torch.int64).cpu().numpy()
        if n > 1
        else bits.to(torch.int64).cpu().numpy()
        for d in range(n)
    ]


def _marginals_of(array: np.ndarray) -> list[np.ndarray]:
    n = array.ndim
    return [
        np.asarray(array.sum(axis=tuple(a for a in range(n) if a != d), dtype=np.int64))
        for d in range(n)
    ]


def _plain_checksum(bits: torch.Tensor, box: Box) -> int:
    if bits.numel() == 0:
        return 0
    if bits.dim() == 0:
        return int(bits.item()) & _MASK
    marginals = _marginals(bits)
    total = np.uint64(int(marginals[0].sum(dtype=np.int64)) & _MASK)
    with np.errstate(over="ignore"):
        for d, ((lo, hi), marginal) in enumerate(zip(box, marginals, strict=True)):
            total = total + np.sum(_weights(d, lo, hi) * marginal.astype(np.uint64))
    return int(total)


def _canonical(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`x` in `dtype`, every NaN the same NaN (a copy only where it must be)."""
    converted = x if x.dtype == dtype else x.to(dtype)
    if converted.is_floating_point() and converted.dtype.itemsize > 1:
        nan = torch.isnan(converted)
        if bool(nan.any()):
            converted = torch.where(nan, torch.tensor(float("nan"), dtype=dtype), converted)
    return converted


def checksum(
    view: torch.Tensor, box: Box, as_dtype: torch.dtype | None = None, canonical_nans: bool = False
) -> int:
    """The checksum (an unsigned 64-bit integer) of `view`, the elements of global `box`, as
    they are in `as_dtype` (default: `view`'s dtype); with `canonical_nans` (both ends of a
    conversion) every NaN counts as the same NaN."""
    dtype = view.dtype if as_dtype is None else as_dtype
    if dtype == view.dtype and not canonical_nans:
        return _plain_checksum(_integer_bits(view), box)
    if view.dim() == 0 or view.numel() == 0:
        return _plain_checksum(_integer_bits(_canonical(view, dtype)), box)
    # converted slab by slab along dim 0 (the parts of a box add up)
    itemsize = max(view.element_size(), torch.empty(0, dtype=dtype).element_size())
    rows = max(1, SLAB_BYTES // max(1, view[0].numel() * itemsize))
    total = 0
    (lo, hi), rest = box[0], box[1:]
    for at in range(0, hi - lo, rows):
        slab = view[at : at + rows]
        part = ((lo + at, lo + at + slab.shape[0]), *rest)
        total += _plain_checksum(_integer_bits(_canonical(slab, dtype)), part)
    return total & _MASK
