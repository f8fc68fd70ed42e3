"""Pieces of several tensors (any dtypes) packed into one byte buffer, and back."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from planner.mesh import Box

TORCH_DTYPES: dict[str, torch.dtype] = {
    "bool": torch.bool,
    "uint8": torch.uint8,
    "int8": torch.int8,
    "float8_e4m3fn": torch.float8_e4m3fn,
    "float8_e5m2": torch.float8_e5m2,
    "int16": torch.int16,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int32": torch.int32,
    "float32": torch.float32,
    "int64": torch.int64,
    "float64": torch.float64,
}


def pack(parts: Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenate the raw bytes of `parts` into one uint8 tensor (a view, not a copy, when
    there is one contiguous part)."""
    flat = [p.contiguous().reshape(-1).view(torch.uint8) for p in parts]
    if len(flat) == 1:
        return flat[0]
    return torch.cat(flat) if flat else torch.empty(0, dtype=torch.uint8)


def unpack(buffer: torch.Tensor, layout: Sequence[tuple[Box, torch.dtype]]) -> list[torch.Tensor]:
    """Split `buffer` back into tensors of the given boxes' shapes and dtypes (views of
    `buffer` where the alignment allows, copies otherwise)."""
    out, offset = [], 0
    for box, dtype in layout:
        shape = tuple(hi - lo for lo, hi in box)
        count = 1
        for n in shape:
            count *= n
        itemsize = torch.empty(0, dtype=dtype).element_size()
        num_bytes = count * itemsize
        raw = buffer[offset : offset + num_bytes]
        if offset % itemsize:  # a dtype view needs an aligned start
            raw = raw.clone()
        out.append(raw.view(dtype).reshape(shape))
        offset += num_bytes
    if offset != buffer.numel():
        raise ValueError(f"buffer holds {buffer.numel()} bytes, layout needs {offset}")
    return out
