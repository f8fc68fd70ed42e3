"""The arguments of a run, checked on every rank before any data moves.

Each rank checks its own `source_shards` and `out` against what the plan expects of it; then
the ranks of the run agree (one small all-gather): when any rank found a problem, every rank
raises the same `ValueError`, naming the rank, the tensor and the shapes, instead of the good
ranks waiting for data that never comes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import torch
import torch.distributed as dist

#: bytes of one rank's message sent to the others
MESSAGE_BYTES = 1024


@dataclass(frozen=True)
class Expected:
    """What a rank must pass for one tensor: one tensor of `shapes[0]`, or (`listed`, block
    layouts) a list of tensors of `shapes`."""

    shapes: tuple[tuple[int, ...], ...]
    dtype: torch.dtype
    listed: bool = False


def _describe(shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> str:
    return f"{tuple(shape)} {str(dtype).removeprefix('torch.')} on {device}"


def same_device(a: torch.device, b: torch.device) -> bool:
    """`cuda` and `cuda:0` are the same device when 0 is the current one."""
    if a.type != b.type:
        return False
    if a.type != "cuda":
        return True
    current = torch.cuda.current_device()
    return (a.index if a.index is not None else current) == (
        b.index if b.index is not None else current
    )


def _byte_span(t: torch.Tensor) -> tuple[int, int, int]:
    """(storage address, first byte, one past the last byte) that `t` can touch."""
    first = last = int(t.storage_offset())
    for size, stride in zip(t.shape, t.stride(), strict=True):
        if size == 0:
            return t.untyped_storage().data_ptr(), 0, 0
        reach = (int(size) - 1) * stride
        first, last = (first + reach, last) if stride < 0 else (first, last + reach)
    size = t.element_size()
    return t.untyped_storage().data_ptr(), first * size, (last + 1) * size


def _overlaps(a: torch.Tensor, b: torch.Tensor) -> bool:
    base_a, lo_a, hi_a = _byte_span(a)
    base_b, lo_b, hi_b = _byte_span(b)
    return base_a == base_b and lo_a < hi_b and lo_b < hi_a


def _tensor_problem(
    where: str,
    value: Any,
    shape: tuple[int, ...],
    dtype: torch.dtype,
    device: torch.device,
    writable: bool,
) -> str | None:
    if not isinstance(value, torch.Tensor):
        return f"{where}: expected a torch.Tensor, got {type(value).__name__}"
    if tuple(value.shape) != shape or value.dtype != dtype or not same_device(value.device, device):
        return (
            f"{where}: expected {_describe(shape, dtype, device)}, "
            f"got {_describe(value.shape, value.dtype, value.device)}"
        )
    if writable and any(
        st == 0 and n > 1 for n, st in zip(value.shape, value.stride(), strict=True)
    ):
        return (
            f"{where}: its elements overlap (strides {value.stride()} for shape "
            f"{tuple(value.shape)}): the bytes could not all land"
        )
    return None


def _tensors(
    where: str, value: Any, want: Expected
) -> list[tuple[str, Any, tuple[int, ...]]] | str:
    """`(where, tensor, shape)` for every tensor `value` must be (a list of them for block
    layouts), or what is wrong with its form."""
    if not want.listed:
        return [(where, value, want.shapes[0])]
    if not isinstance(value, list | tuple) or len(value) != len(want.shapes):
        got = f"{len(value)} items" if isinstance(value, list | tuple) else type(value).__name__
        return f"{where}: expected a list of {len(want.shapes)} tensors (one per block), got {got}"
    return [
        (f"{where}[{k}]", v, s) for k, (v, s) in enumerate(zip(value, want.shapes, strict=True))
    ]


def check_arguments(
    source_shards: Mapping[str, Any],
    out: Mapping[str, Any],
    expected_sources: Mapping[str, Expected],
    expected_out: Mapping[str, Expected],
    device: torch.device,
) -> str | None:
    """What is wrong with this rank's arguments (None when nothing is), in one line."""
    for name in source_shards:
        if name not in expected_sources:
            return (
                f"source_shards[{name!r}]: this rank holds no source shard of it "
                f"(expected {sorted(expected_sources)})"
            )
    for name in out:
        if name not in expected_out:
            return (
                f"out[{name!r}]: this rank receives no destination shard of it "
                f"(expected a subset of {sorted(expected_out)})"
            )
    sources: list[tuple[str, Any]] = []
    for name, want in expected_sources.items():
        if name not in source_shards:
            return f"source_shards: this rank holds a shard of {name!r}, none given"
        tensors = _tensors(f"source_shards[{name!r}]", source_shards[name], want)
        if isinstance(tensors, str):
            return tensors
        for where, value, shape in tensors:
            problem = _tensor_problem(where, value, shape, want.dtype, device, False)
            if problem:
                return problem
            sources.append((where, value))
    for name, value in out.items():
        want = expected_out[name]
        tensors = _tensors(f"out[{name!r}]", value, want)
        if isinstance(tensors, str):
            return tensors
        for where, item, shape in tensors:
            problem = _tensor_problem(where, item, shape, want.dtype, device, True)
            if problem:
                return problem
            for other, source in sources:
                if _overlaps(item, source):
                    return f"{where}: shares memory with {other}"
    return None


def agree(
    problem: str | None,
    rank: int,
    members: Sequence[int],
    group: dist.ProcessGroup,
    device: torch.device,
) -> None:
    """A collective over `members`: raise the same `ValueError` on every member when any of
    them has a `problem`. When none has (every run), it costs one one-element all-reduce (on
    gloo several times cheaper than a gather); the failing ranks are gathered only then."""
    flag = torch.tensor([1 if problem else 0], dtype=torch.int32, device=device)
    anyone = flag.clone()
    dist.all_reduce(anyone, op=dist.ReduceOp.MAX, group=group)
    if not int(anyone.item()):
        return
    flags = [torch.zeros_like(flag) for _ in members]
    dist.all_gather(flags, flag, group=group)
    failing = [m for m, f in zip(members, flags, strict=True) if int(f.item())]
    raise_failure(problem, rank, failing, group, device, ValueError)


def raise_failure(
    problem: str | None,
    rank: int,
    failing: Sequence[int],
    group: dist.ProcessGroup,
    device: torch.device,
    error: type[Exception],
) -> NoReturn:
    """A collective over the group: the first failing rank sends its `problem` to all, and
    every rank raises `error` with it, naming that rank and the other failing ones."""
    text = torch.zeros(MESSAGE_BYTES, dtype=torch.uint8, device=device)
    if rank == failing[0]:
        encoded = (problem or "").encode()[:MESSAGE_BYTES]
        text[: len(encoded)] = torch.frombuffer(bytearray(encoded), dtype=torch.uint8)
    dist.broadcast(text, src=failing[0], group=group)
    message = bytes(text.cpu().tolist()).rstrip(b"\0").decode(errors="replace")
    others = failing[1:]
    if others:
        message += f"; rank(s) {list(others)} refused theirs too"
        if rank in others:
            message += f" (rank {rank}: {problem})"
    raise error(f"rank {failing[0]}: {message}")
