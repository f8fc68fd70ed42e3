"""Refit presets against vLLM's layouts written out head by head with numpy."""

from __future__ import annotations

import numpy as np
import pytest

from meshcast.planner.refit_map import LocalParam, check_mapping, local_shapes, refit_blocks
from meshcast.planner.refit_presets import (
    LlamaShape,
    VllmExperts,
    VllmQKV,
    VocabParallel,
    identity,
    llama_to_vllm,
    shape_of,
)

HEADS, KV_HEADS, HEAD_DIM, HIDDEN = 8, 2, 4, 16


def _assembled(local: LocalParam, values: dict[str, np.ndarray]) -> np.ndarray:
    pieces = [values[p.tensor][tuple(slice(lo, hi) for lo, hi in p.box)] for p in local.parts]
    return np.concatenate(pieces, axis=local.dim)


def _vllm_qkv(values: dict[str, np.ndarray], rank: int, tp: int) -> np.ndarray:
    """vLLM's local qkv_proj weight, by heads: the rank's query heads, then its key/value
    heads (one replicated head per rank when tp exceeds the key/value heads)."""
    q = values["q"].reshape(HEADS, HEAD_DIM, HIDDEN)
    k = values["k"].reshape(KV_HEADS, HEAD_DIM, HIDDEN)
    v = values["v"].reshape(KV_HEADS, HEAD_DIM, HIDDEN)
    q_heads = list(range(rank * HEADS // tp, (rank + 1) * HEADS // tp))
    if tp >= KV_HEADS:
        kv_heads = [rank // (tp // KV_HEADS)]
    else:
        kv_heads = list(range(rank * KV_HEADS // tp, (rank + 1) * KV_HEADS // tp))
    return np.concatenate([q[q_heads], k[kv_heads], v[kv_heads]]).reshape(-1, HIDDEN)


@pytest.mark.parametrize("tp", [1, 2, 4, 8])
def test_vllm_qkv_is_vllms_heads_with_kv_replication(tp: int) -> None:
    rng = np.random.default_rng(tp)
    values = {
        "q": rng.standard_normal((HEADS * HEAD_DIM, HIDDEN)),
        "k": rng.standard_normal((KV_HEADS * HEAD_DIM, HIDDEN)),
        "v": rng.standard_normal((KV_HEADS * HEAD_DIM, HIDDEN)),
    }
    shapes = {n: v.shape for n, v in values.items()}
    rule = VllmQKV("q", "k", "v", HEADS, KV_HEADS, HEAD_DIM)
    for rank in range(tp):
        local = rule.local(shapes, rank, tp)
        assert np.array_equal(_assembled(local, values), _vllm_qkv(values, rank, tp))
        kv_local = max(1, KV_HEADS // tp)
        assert local.shape() == ((HEADS // tp + 2 * kv_local) * HEAD_DIM, HIDDEN)


def test_vllm_qkv_refuses_heads_that_do_not_split() -> None:
    shapes = {"q": (HEADS * HEAD_DIM, HIDDEN), "k": (8, HIDDEN), "v": (8, HIDDEN)}
    with pytest.raises(ValueError, match=r"^q: 8 heads do not split over 3 ranks"):
        VllmQKV("q", "k", "v", HEADS, KV_HEADS, HEAD_DIM).local(shapes, 0, 3)
    with pytest.raises(ValueError, match=r"^k: 8 ranks do not replicate 3 key/value heads"):
        VllmQKV("q", "k", "v", 24, 3, HEAD_DIM).local({**shapes, "q": (96, HIDDEN)}, 0, 8)


@pytest.mark.parametrize(("vocab", "tp"), [(100, 2), (128, 4), (1000, 8)])
def test_vocab_parallel_pads_to_64_and_keeps_each_ranks_rows(vocab: int, tp: int) -> None:
    rule = VocabParallel("embed")
    padded = -(-vocab // 64) * 64
    values = {"embed": np.arange(vocab * 3, dtype=np.float64).reshape(vocab, 3)}
    for rank in range(tp):
        local = rule.local({"embed": (vocab, 3)}, rank, tp)
        assert local.shape() == (padded // tp, 3)
        rows = range(rank * padded // tp, min(vocab, (rank + 1) * padded // tp))
        assert np.array_equal(_assembled(local, values), values["embed"][list(rows)].reshape(-1, 3))


def _llama_shapes(config: LlamaShape, vocab: int, ffn: int) -> dict[str, tuple[int, ...]]:
    """A transformers Llama state dict's names and shapes (`LlamaForCausalLM.state_dict()`)."""
    hidden = config.num_heads * config.head_dim
    kv = config.num_kv_heads * config.head_dim
    shapes: dict[str, tuple[int, ...]] = {
        "model.embed_tokens.weight": (vocab, hidden),
        "model.norm.weight": (hidden,),
        "lm_head.weight": (vocab, hidden),
    }
    for i in range(config.num_layers):
        layer = f"model.layers.{i}"
        shapes |= {
            f"{layer}.self_attn.q_proj.weight": (hidden, hidden),
            f"{layer}.self_attn.k_proj.weight": (kv, hidden),
            f"{layer}.self_attn.v_proj.weight": (kv, hidden),
            f"{layer}.self_attn.o_proj.weight": (hidden, hidden),
            f"{layer}.mlp.gate_proj.weight": (ffn, hidden),
            f"{layer}.mlp.up_proj.weight": (ffn, hidden),
            f"{layer}.mlp.down_proj.weight": (hidden, ffn),
            f"{layer}.input_layernorm.weight": (hidden,),
            f"{layer}.post_attention_layernorm.weight": (hidden,),
        }
    return shapes


@pytest.mark.parametrize("tp", [1, 2, 4])
def test_llama_preset_covers_the_state_dict_with_vllms_local_shapes(tp: int) -> None:
    config = LlamaShape(num_layers=2, num_heads=HEADS, num_kv_heads=KV_HEADS, head_dim=HEAD_DIM)
    shapes = _llama_shapes(config, vocab=100, ffn=24)
    rules = llama_to_vllm(config)
    check_mapping(rules, shapes)
    blocks = refit_blocks(rules, shapes, tp, num_engines=2)
    assert set(blocks) == set(shapes) and all(len(b) == 2 * tp for b in blocks.values())
    hidden = HEADS * HEAD_DIM
    for rank in range(tp):
        local = local_shapes(rules, shapes, rank, tp)
        kv_local = max(1, KV_HEADS // tp)
        assert local["model.layers.1.self_attn.qkv_proj.weight"] == (
            (HEADS // tp + 2 * kv_local) * HEAD_DIM,
            hidden,
        )
        assert local["model.layers.0.mlp.gate_up_proj.weight"] == (2 * 24 // tp, hidden)
        assert local["model.layers.0.mlp.down_proj.weight"] == (hidden, 24 // tp)
        assert local["model.layers.0.self_attn.o_proj.weight"] == (hidden, hidden // tp)
        assert local["model.embed_tokens.weight"] == (128 // tp, hidden)
        assert local["model.norm.weight"] == (hidden,)


def test_identity_shards_as_torch_chunk_does() -> None:
    rules = identity({"w": 0, "o": 1, "norm": None})
    shapes = {"w": (10, 4), "o": (4, 10), "norm": (4,)}
    values = {n: np.arange(np.prod(s), dtype=np.float64).reshape(s) for n, s in shapes.items()}
    for rank in range(3):
        assert np.array_equal(
            _assembled(rules["w"].local(shapes, rank, 3), values),
            np.array_split(values["w"], [4, 8])[rank],  # torch.chunk(10, 3): 4, 4, 2
        )
        assert np.array_equal(
            _assembled(rules["o"].local(shapes, rank, 3), values),
            np.array_split(values["o"], [4, 8], axis=1)[rank],
        )
        assert np.array_equal(
            _assembled(rules["norm"].local(shapes, rank, 3), values), values["norm"]
        )


EXPERTS, INTER = 5, 6


def _vllm_w13(gate_up: np.ndarray, rank: int, tp: int, ep: int) -> np.ndarray:
    """vLLM's `w13_weight` of a rank, as `determine_expert_map` and `_load_w13` fill it: per
    local expert, the rank's chunk of the gate rows, then of the up rows."""
    moe_tp = tp // ep
    lo, hi = _linear_experts(rank // moe_tp, ep)
    size, r = INTER // moe_tp, rank % moe_tp
    return np.stack(
        [
            np.concatenate(
                [e[r * size : (r + 1) * size], e[INTER + r * size : INTER + (r + 1) * size]]
            )
            for e in gate_up[lo:hi]
        ]
    )


def _linear_experts(ep_rank: int, ep: int) -> tuple[int, int]:
    counts = [EXPERTS // ep + (r < EXPERTS % ep) for r in range(ep)]
    return sum(counts[:ep_rank]), sum(counts[: ep_rank + 1])


@pytest.mark.parametrize(("tp", "ep"), [(1, 1), (2, 1), (2, 2), (3, 3), (4, 2), (6, 3)])
def test_vllm_experts_are_vllms_w13_and_w2_under_tp_and_ep(tp: int, ep: int) -> None:
    rng = np.random.default_rng(tp * 10 + ep)
    values = {
        "gate_up": rng.standard_normal((EXPERTS, 2 * INTER, HIDDEN)),
        "down": rng.standard_normal((EXPERTS, HIDDEN, INTER)),
    }
    shapes = {n: v.shape for n, v in values.items()}
    w13, w2 = VllmExperts("gate_up", EXPERTS, ep), VllmExperts("down", EXPERTS, ep, down=True)
    moe_tp = tp // ep
    for rank in range(tp):
        lo, hi = _linear_experts(rank // moe_tp, ep)
        size, r = INTER // moe_tp, rank % moe_tp
        assert np.array_equal(
            _assembled(w13.local(shapes, rank, tp), values),
            _vllm_w13(values["gate_up"], rank, tp, ep),
        )
        assert np.array_equal(
            _assembled(w2.local(shapes, rank, tp), values),
            values["down"][lo:hi, :, r * size : (r + 1) * size],
        )
    # every expert row lands somewhere: the ranks' boxes cover both tensors
    blocks = refit_blocks({"w13": w13, "w2": w2}, shapes, tp)
    for name in shapes:
        cells = sum(
            int(np.prod([hi - lo for lo, hi in box])) for boxes in blocks[name] for box in boxes
        )
        assert cells == values[name].size * 1  # no replication of experts within one engine


def test_vllm_experts_refuse_what_does_not_split() -> None:
    shapes = {"gate_up": (EXPERTS, 2 * INTER, HIDDEN), "down": (EXPERTS, HIDDEN, INTER)}
    with pytest.raises(ValueError, match=r"^gate_up: 4 engine ranks do not form 3 expert-parallel"):
        VllmExperts("gate_up", EXPERTS, 3).local(shapes, 0, 4)
    with pytest.raises(ValueError, match=r"^down: intermediate size 6 does not split over 4"):
        VllmExperts("down", EXPERTS, 1, down=True).local(shapes, 0, 4)
    with pytest.raises(ValueError, match=r"^gate_up: expected stacked experts \[4, rows, cols\]"):
        VllmExperts("gate_up", 4).local(shapes, 0, 1)


def test_shape_of_reads_transformers_configs() -> None:
    transformers = pytest.importorskip("transformers")
    dense = transformers.Qwen3Config(
        hidden_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        num_hidden_layers=3,
        tie_word_embeddings=True,
    )
    assert shape_of(dense) == LlamaShape(3, 4, 2, 16, lm_head=False, qk_norm=True)
    moe = transformers.MixtralConfig(
        hidden_size=64,
        num_attention_heads=8,
        num_key_value_heads=2,
        num_hidden_layers=2,
        num_local_experts=6,
    )
    assert shape_of(moe) == LlamaShape(2, 8, 2, 8, num_experts=6)


@pytest.mark.parametrize(
    "family",
    ["llama", "llama-attention-bias", "qwen2", "qwen3", "qwen3-moe", "mixtral"],
)
def test_the_vllm_preset_covers_every_tensor_of_each_transformers_family(family: str) -> None:
    """Every name of the model's real state dict feeds exactly one engine parameter, biases
    included (Qwen2's q/k/v biases fused like their weights), under TP 2 and EP 2."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("torch")
    common = dict(
        vocab_size=100,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    configs = {
        "llama": lambda: transformers.LlamaConfig(**common),
        "llama-attention-bias": lambda: transformers.LlamaConfig(attention_bias=True, **common),
        "qwen2": lambda: transformers.Qwen2Config(**common),
        "qwen3": lambda: transformers.Qwen3Config(head_dim=8, **common),
        "qwen3-moe": lambda: transformers.Qwen3MoeConfig(
            head_dim=8, num_experts=4, moe_intermediate_size=16, **common
        ),
        "mixtral": lambda: transformers.MixtralConfig(num_local_experts=4, **common),
    }
    config = configs[family]()
    model = transformers.AutoModelForCausalLM.from_config(config)
    shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    shape = shape_of(config)
    assert shape.qkv_bias == (family in ("qwen2", "llama-attention-bias"))
    blocks = refit_blocks(llama_to_vllm(shape, ep=2 if shape.num_experts else 1), shapes, 2)
    assert set(blocks) == set(shapes)
