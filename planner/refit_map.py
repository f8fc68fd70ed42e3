"""Refit mappings: which trainer tensors each engine parameter is made of, and what each engine
rank keeps of them.

An inference engine fuses and shards a trainer's tensors: vLLM's `qkv_proj.weight` is the
trainer's `q_proj`, `k_proj` and `v_proj` concatenated along dim 0, and each tensor-parallel rank
keeps its own rows of each. A mapping says this as data, per engine parameter: a `Rule` (here
`Concat`) gives, for engine rank `r` of `tp`, its local parameter as boxes of trainer tensors
concatenated along one dim (`LocalParam`). From the rules of a whole model `refit_blocks`
derives, per trainer tensor, the block layout its destination has over the engine ranks (what a
`meshcast.request/v1` destination says), and `LocalParam.views` where each trainer box lands in
the engine's local tensor (so the bytes can land in the live parameter through `out=` views).
Mappings that do not fit (a missing or extra trainer name, boxes whose other dims disagree, a
split that does not divide) raise `ValueError` naming the tensor. Pure: no torch, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from meshcast.planner.mesh import Box

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Part:
    """A box of one trainer tensor (global indices of that tensor)."""

    tensor: str
    box: Box


@dataclass(frozen=True)
class LocalParam:
    """One engine rank's local parameter: `parts` concatenated along `dim`, in order; with
    `size`, the local tensor is that long along `dim` and what follows the parts is padding
    the refit leaves as it is (a vocabulary padded to a multiple of 64)."""

    parts: tuple[Part, ...]
    dim: int
    size: int | None = None

    def shape(self, name: str = "parameter") -> Shape:
        """The local tensor's shape; `ValueError` naming `name` when the parts' other dims
        disagree."""
        if not self.parts:
            raise ValueError(f"{name}: an engine rank's local parameter has no parts")
        shapes = [tuple(hi - lo for lo, hi in p.box) for p in self.parts]
        first = shapes[0]
        for part, shape in zip(self.parts, shapes, strict=True):
            if len(shape) != len(first) or any(
                a != b for d, (a, b) in enumerate(zip(shape, first, strict=True)) if d != self.dim
            ):
                raise ValueError(
                    f"{name}: part {part.tensor!r} {list(shape)} does not fit beside "
                    f"{self.parts[0].tensor!r} {list(first)} along dim {self.dim}"
                )
        length = sum(s[self.dim] for s in shapes)
        if self.size is not None:
            if length > self.size:
                raise ValueError(f"{name}: {length} rows of parts exceed the local {self.size}")
            length = self.size
        return tuple(length if d == self.dim else n for d, n in enumerate(first))

    def views(self) -> dict[str, list[tuple[int, int, Box]]]:
        """Per trainer tensor, where each of its boxes lies in the local tensor, in order:
        (offset along `dim`, length, the box)."""
        out: dict[str, list[tuple[int, int, Box]]] = {}
        at = 0
        for part in self.parts:
            lo, hi = part.box[self.dim]
            out.setdefault(part.tensor, []).append((at, hi - lo, part.box))
            at += hi - lo
        return out


class Rule(Protocol):
    """How one engine parameter is made of trainer tensors."""

    @property
    def sources(self) -> tuple[str, ...]:
        """The trainer tensors it is made of."""
        ...

    def local(self, shapes: Mapping[str, Shape], rank: int, num_ranks: int) -> LocalParam:
        """Engine rank `rank` of `num_ranks`' local parameter, from the trainer shapes."""
        ...


def _chunk(length: int, num_chunks: int, i: int) -> tuple[int, int]:
    """`torch.chunk`'s chunk `i` of `num_chunks` of `range(length)`."""
    size = -(-length // num_chunks) if length else 0
    return min(length, i * size), min(length, (i + 1) * size)


@dataclass(frozen=True)
class Concat:
    """`sources` concatenated along `dim`; each source cut along `shard_dim` into `num_ranks`
    chunks (`torch.chunk`), rank `r` keeping chunk `r` of every source, in source order
    (column-parallel fused layers such as `gate_up_proj`; `shard_dim` other than `dim` for
    row-parallel ones); `shard_dim=None`: every rank keeps every source whole (replicated).
    `even`: the sources must split evenly, as vLLM's parallel layers require."""

    sources: tuple[str, ...]
    dim: int = 0
    shard_dim: int | None = 0
    even: bool = True

    def local(self, shapes: Mapping[str, Shape], rank: int, num_ranks: int) -> LocalParam:
        parts = []
        for name in self.sources:
            shape = shapes[name]
            box = [(0, n) for n in shape]
            for what, dim in (("dim", self.dim), ("shard_dim", self.shard_dim)):
                if dim is not None and not 0 <= dim < max(1, len(shape)):
                    raise ValueError(f"{name}: {what} {dim} is not a dim of {list(shape)}")
            if self.shard_dim is not None:
                n = shape[self.shard_dim]
                if self.even and n % num_ranks:
                    raise ValueError(
                        f"{name}: dim {self.shard_dim} of {list(shape)} does not split evenly "
                        f"over {num_ranks} engine ranks"
                    )
                box[self.shard_dim] = _chunk(n, num_ranks, rank)
            parts.append(Part(name, tuple(box)))
        return LocalParam(tuple(parts), self.dim)


def check_mapping(rules: Mapping[str, Rule], shapes: Mapping[str, Shape]) -> None:
    """Every trainer tensor feeds some engine parameter and every source is a trainer tensor;
    `ValueError` naming the first that does not."""
    used: set[str] = set()
    for engine, rule in rules.items():
        for name in rule.sources:
            if name not in shapes:
                raise ValueError(
                    f"{engine}: source {name!r} is not in the trainer's state dict "
                    f"({len(shapes)} tensors)"
                )
            used.add(name)
    extra = sorted(set(shapes) - used)
    if extra:
        raise ValueError(f"{extra[0]}: a trainer tensor no engine parameter is made of")


def refit_blocks(
    rules: Mapping[str, Rule], shapes: Mapping[str, Shape], num_ranks: int, num_engines: int = 1
) -> dict[str, list[list[Box]]]:
    """Per trainer tensor, the boxes of it each engine device keeps, for a destination mesh of
    `num_engines` engines of `num_ranks` ranks (device order: engine by engine, ranks in
    order): a `blocks` layout (DESIGN §1), one list per device, in its local order. A device
    that keeps none of a tensor gets an empty list."""
    check_mapping(rules, shapes)
    per_rank: list[dict[str, list[Box]]] = [{} for _ in range(num_ranks)]
    for engine, rule in rules.items():
        for rank in range(num_ranks):
            local = rule.local(shapes, rank, num_ranks)
            local.shape(engine)
            for part in local.parts:
                per_rank[rank].setdefault(part.tensor, []).append(part.box)
    return {
        name: [
            per_rank[rank].get(name, []) for _ in range(num_engines) for rank in range(num_ranks)
        ]
        for name in shapes
    }


def local_shapes(
    rules: Mapping[str, Rule], shapes: Mapping[str, Shape], rank: int, num_ranks: int
) -> dict[str, Shape]:
    """Each engine parameter's local shape on engine rank `rank` of `num_ranks`."""
    return {
        engine: rule.local(shapes, rank, num_ranks).shape(engine) for engine, rule in rules.items()
    }


def check_engine_shapes(
    rules: Mapping[str, Rule],
    shapes: Mapping[str, Shape],
    engine_shapes: Mapping[str, Sequence[int]],
    rank: int,
    num_ranks: int,
) -> None:
    """The engine's live parameters on `rank` are what the mapping makes; `ValueError` naming
    the first missing, extra or differently shaped one."""
    expected = local_shapes(rules, shapes, rank, num_ranks)
    for name in engine_shapes:
        if name not in expected:
            raise ValueError(f"{name}: an engine parameter no rule makes")
    for name, shape in expected.items():
        if name not in engine_shapes:
            raise ValueError(f"{name}: the engine has no such parameter on rank {rank}")
        if tuple(engine_shapes[name]) != shape:
            raise ValueError(
                f"{name}: the mapping makes {list(shape)} on engine rank {rank}, the engine's "
                f"parameter is {list(engine_shapes[name])}"
            )
