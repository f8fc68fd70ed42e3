"""Deterministic global tensors, computed shard by shard, for bit-exact checks.

Every element's bytes are a hash of its flat global index and the tensor's name, so any rank can
build any box of any tensor without materialising the whole tensor, and every bit pattern of
every dtype appears (NaN payloads included). Comparison is byte for byte.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import torch

from meshcast.executor.dtypes import TORCH_DTYPES
from meshcast.planner.mesh import Box

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _seed(name: str) -> np.uint64:
    return np.uint64(int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little"))


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: every input bit reaches every output bit."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


#: elements computed at once: bounds the uint64 temporaries to about 100 MB
SLAB_ELEMENTS = 1 << 22


def reference_box(name: str, shape: tuple[int, ...], dtype: str, box: Box) -> torch.Tensor:
    """The elements of `box` of the reference tensor `name` (global `shape`, `dtype`)."""
    extents = [hi - lo for lo, hi in box]
    if math.prod(extents) <= SLAB_ELEMENTS:
        return _reference_slab(name, shape, dtype, box)
    axis = max(range(len(box)), key=lambda a: extents[a])
    step = max(1, SLAB_ELEMENTS // (math.prod(extents) // extents[axis]))
    lo, hi = box[axis]
    slabs = [
        _reference_slab(
            name, shape, dtype, (*box[:axis], (start, min(start + step, hi)), *box[axis + 1 :])
        )
        for start in range(lo, hi, step)
    ]
    return torch.cat(slabs, dim=axis)


def _reference_slab(name: str, shape: tuple[int, ...], dtype: str, box: Box) -> torch.Tensor:
    flat = np.zeros((1,) * len(shape), dtype=np.uint64)
    stride = 1
    for axis in reversed(range(len(shape))):
        lo, hi = box[axis]
        index = np.arange(lo, hi, dtype=np.uint64) * np.uint64(stride)
        flat = flat + index.reshape([-1 if a == axis else 1 for a in range(len(shape))])
        stride *= shape[axis]
    with np.errstate(over="ignore"):
        bits = _mix(flat * _GOLDEN + _seed(name))
    torch_dtype = TORCH_DTYPES[dtype]
    if torch_dtype == torch.bool:
        return torch.from_numpy((bits & np.uint64(1)).astype(np.bool_))
    itemsize = torch.empty(0, dtype=torch_dtype).element_size()
    raw = np.ascontiguousarray(bits.view(np.uint8).reshape(*bits.shape, 8)[..., :itemsize])
    return torch.from_numpy(raw).view(torch_dtype).reshape(bits.shape)


def same_bytes(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-exact equality (NaNs with equal payloads are equal)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    as_bytes = [t.detach().cpu().contiguous().reshape(-1).view(torch.uint8) for t in (a, b)]
    return bool(torch.equal(*as_bytes))


def same_converted(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-exact equality of two conversions of the same values to a float dtype, NaNs aside:
    torch's conversion kernels keep or drop a NaN's payload depending on the memory layout
    (a contiguous fp32 to bf16 copy gives 0xFFFF where a strided one gives 0x7FC0), so a NaN
    only has to be a NaN at both ends."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    a, b = (t.detach().cpu().contiguous().reshape(-1) for t in (a, b))
    nan = torch.isnan(a)
    if not torch.equal(nan, torch.isnan(b)):
        return False
    return same_bytes(a[~nan], b[~nan])
