"""Fused parameters as block layouts: "this weight is the concatenation of these parts, and
each rank keeps these slices of them, in this order".

The global tensor meshcast plans is the parts concatenated along `dim` in a canonical order
(for a QKV weight, all query heads, then all key heads, then all value heads: the checkpoint's
order). A rank's local tensor concatenates slices of parts in its own order; each slice is one
block, a box of the global tensor. The executor takes the rank's local tensor split into those
blocks (views: `local.split(block_sizes(...), dim)`), so bytes land in the fused weight itself.

`megatron_qkv` and `vllm_qkv` give the slices of the two layouts of a grouped-query attention
QKV weight that refits convert between by hand today:
  - Megatron-Core keeps it ordered by query group, `[q heads of group g, k_g, v_g]` per group,
    and tensor parallelism keeps a contiguous run of groups per rank;
  - vLLM's QKV-parallel layer keeps `[q heads, k heads, v heads]` of its own heads per rank
    (key/value heads replicated when there are more ranks than key/value heads).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from meshcast.planner.mesh import Box

#: a slice of a part: (part name, first row, one past the last row), rows along the fused dim
Slice = tuple[str, int, int]


@dataclass(frozen=True)
class Fused:
    """A fused parameter: `parts` (name, length along `dim`) concatenated along `dim` of a
    tensor of `shape` (the other dims are the parts' own)."""

    parts: tuple[tuple[str, int], ...]
    shape: tuple[int, ...]
    dim: int = 0

    def start(self, part: str) -> int:
        """Where `part` begins along `dim` of the global tensor."""
        at = 0
        for name, length in self.parts:
            if name == part:
                return at
            at += length
        raise ValueError(f"part: unknown part {part!r} (parts: {[n for n, _ in self.parts]})")

    def blocks(self, slices: Sequence[Slice]) -> list[Box]:
        """The global boxes of a rank's local tensor made of `slices`, in its order."""
        lengths, out = dict(self.parts), []
        for part, lo, hi in slices:
            if part not in lengths or not 0 <= lo <= hi <= lengths[part]:
                raise ValueError(f"slice: {(part, lo, hi)} is not inside a part of {self.parts}")
            start = self.start(part)
            box = [(0, n) for n in self.shape]
            box[self.dim] = (start + lo, start + hi)
            out.append(tuple(box))
        return out

    def layout(self, mesh: str, per_device: Sequence[Sequence[Slice]]) -> dict[str, object]:
        """A request layout (`{"mesh", "blocks"}`) from every mesh device's slices."""
        return {
            "mesh": mesh,
            "blocks": [[[list(iv) for iv in box] for box in self.blocks(s)] for s in per_device],
        }


def block_sizes(slices: Sequence[Slice]) -> list[int]:
    """Lengths along the fused dim of a rank's blocks: `local.split(block_sizes(s), dim)`."""
    return [hi - lo for _, lo, hi in slices]


@dataclass(frozen=True)
class Attention:
    """A grouped-query attention layer's heads."""

    num_heads: int
    num_kv_heads: int
    head_dim: int
    hidden: int

    def qkv(self) -> Fused:
        """The fused QKV weight, global order all q, all k, all v heads (rows)."""
        q = self.num_heads * self.head_dim
        kv = self.num_kv_heads * self.head_dim
        return Fused((("q", q), ("k", kv), ("v", kv)), (q + 2 * kv, self.hidden))

    def _heads(self, part: str, first: int, count: int) -> Slice:
        return (part, first * self.head_dim, (first + count) * self.head_dim)


def megatron_qkv(attn: Attention, tp: int) -> list[list[Slice]]:
    """Per tensor-parallel rank, the slices of Megatron-Core's fused QKV: the rank's query
    groups in order, each `[its q heads, its k head, its v head]`."""
    groups = attn.num_kv_heads
    if groups % tp or attn.num_heads % groups:
        raise ValueError(
            f"tp: {tp} does not divide the {groups} query groups evenly "
            f"(or {attn.num_heads} heads do not form {groups} groups)"
        )
    per_group = attn.num_heads // groups
    out = []
    for rank in range(tp):
        slices: list[Slice] = []
        for g in range(rank * groups // tp, (rank + 1) * groups // tp):
            slices += [
                attn._heads("q", g * per_group, per_group),
                attn._heads("k", g, 1),
                attn._heads("v", g, 1),
            ]
        out.append(slices)
    return out


def vllm_qkv(attn: Attention, tp: int) -> list[list[Slice]]:
    """Per tensor-parallel rank, the slices of vLLM's QKV-parallel weight: `[q, k, v]` of the
    rank's heads; key/value heads replicated over ranks when `tp` exceeds their number."""
    if attn.num_heads % tp or (tp % attn.num_kv_heads and attn.num_kv_heads % tp):
        raise ValueError(
            f"tp: {tp} does not split {attn.num_heads} heads and {attn.num_kv_heads} "
            "key/value heads evenly"
        )
    q_per_rank = attn.num_heads // tp
    kv_per_rank = max(1, attn.num_kv_heads // tp)
    out = []
    for rank in range(tp):
        kv_first = rank * attn.num_kv_heads // tp
        out.append(
            [
                attn._heads("q", rank * q_per_rank, q_per_rank),
                attn._heads("k", kv_first, kv_per_rank),
                attn._heads("v", kv_first, kv_per_rank),
            ]
        )
    return out
