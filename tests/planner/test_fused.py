"""Fused-parameter block helpers: the slices of Megatron's and vLLM's QKV weights give exactly
the local tensors that plain torch ops on query groups and heads give."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from examples import fused_qkv_refit as example  # noqa: E402
from meshcast.planner.fused import Attention, Fused, block_sizes, megatron_qkv, vllm_qkv  # noqa: E402


def _from_blocks(attn: Attention, slices: list[tuple[str, int, int]]) -> torch.Tensor:
    q, k, v = example._global_parts(attn)
    full = torch.cat([q, k, v])
    boxes = attn.qkv().blocks(slices)
    assert sum(block_sizes(slices)) == sum(hi - lo for (lo, hi), _ in boxes)
    return torch.cat([full[lo:hi, a:b] for (lo, hi), (a, b) in boxes])


@pytest.mark.parametrize(("heads", "kv_heads"), [(8, 8), (8, 4), (16, 4), (32, 8)])
def test_megatron_slices_are_megatrons_local_weight(heads: int, kv_heads: int) -> None:
    attn = Attention(heads, kv_heads, head_dim=4, hidden=6)
    for rank, slices in enumerate(megatron_qkv(attn, example.TRAIN_TP)):
        assert torch.equal(_from_blocks(attn, slices), example.megatron_local(attn, rank))


@pytest.mark.parametrize(("heads", "kv_heads"), [(8, 8), (8, 4), (8, 1), (32, 8)])
def test_vllm_slices_are_vllms_local_weight(heads: int, kv_heads: int) -> None:
    attn = Attention(heads, kv_heads, head_dim=4, hidden=6)
    for rank, slices in enumerate(vllm_qkv(attn, example.ENGINE_TP)):
        assert torch.equal(_from_blocks(attn, slices), example.vllm_local(attn, rank))


def test_bad_shapes_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="tp: 4 does not divide the 2 query groups"):
        megatron_qkv(Attention(8, 2, 4, 6), 4)
    with pytest.raises(ValueError, match=r"slice: .* is not inside a part"):
        Fused((("q", 4),), (4, 2)).blocks([("q", 2, 6)])
