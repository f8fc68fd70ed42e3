"""Refit presets: Hugging Face transformers' Llama-family names into vLLM's engine layout, and
the identity (the engine is the same model under torch tensor parallelism).

vLLM's layout, as its source defines it (vllm-project/vllm):
- `vllm/model_executor/models/llama.py` `load_weights`: `stacked_params_mapping` fuses
  `q_proj`, `k_proj`, `v_proj` into `qkv_proj` (shard ids "q", "k", "v") and `gate_proj`,
  `up_proj` into `gate_up_proj` (shard ids 0, 1); other names load as they are.
- `vllm/model_executor/layers/linear.py` `QKVParallelLinear`: each rank keeps
  `[q, k, v]` of its heads, `num_heads / tp` query heads; key/value heads split over ranks when
  there are at least `tp` of them, else one per rank, replicated over `tp / num_kv_heads` ranks
  (`num_kv_head_replicas`; rank `r` loads kv shard `r // num_kv_head_replicas`).
  Its bias (Qwen2's `q/k/v_proj.bias`; Llama's with `attention_bias`) is fused and split the
  same way. `MergedColumnParallelLinear`: `[gate rows, up rows]` of the rank's chunk of each.
  `RowParallelLinear` (`o_proj`, `down_proj`): the rank's chunk of the input dim (dim 1), its
  bias whole on every rank (rank 0 adds it after the all-reduce).
- `vllm/model_executor/layers/vocab_parallel_embedding.py`: `VocabParallelEmbedding` and
  `ParallelLMHead` pad the vocabulary to a multiple of `DEFAULT_VOCAB_PADDING_SIZE` (64) and
  give each rank `padded / tp` rows; rows past the real vocabulary are padding.
- Norms are replicated on every rank.
- `vllm/model_executor/layers/fused_moe/layer.py` `FusedMoE`: `w13_weight` is
  `[local experts, 2 * I / tp, H]`, `_load_w13` putting the rank's chunk of the gate (w1) rows
  first and of the up (w3) rows second; `w2_weight` is `[local experts, H, I / tp]`, `_load_w2`
  narrowing the input dim. Under expert parallelism `determine_expert_map` ("linear") gives
  EP rank `r` the experts `[r * base + min(r, rem), ...)`, `base + 1` of them for `r < rem`
  (`base, rem = divmod(E, ep)`), whole. The router (`gate`) is a `ReplicatedLinear`.
  transformers (5.x) keeps the experts stacked: `mlp.experts.gate_up_proj` `[E, 2 * I, H]`
  (gate rows first: its forward `chunk(2)`s the product) and `mlp.experts.down_proj`
  `[E, H, I]`, the same order as `w13` and `w2`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from meshcast.planner.refit_map import Concat, LocalParam, Part, Rule, Shape

#: vLLM's `DEFAULT_VOCAB_PADDING_SIZE`
VOCAB_PADDING = 64


@dataclass(frozen=True)
class VllmQKV:
    """vLLM's `qkv_proj.weight` from `q_proj`, `k_proj`, `v_proj` (rows are heads)."""

    q: str
    k: str
    v: str
    num_heads: int
    num_kv_heads: int
    head_dim: int

    @property
    def sources(self) -> tuple[str, ...]:
        return (self.q, self.k, self.v)

    def local(self, shapes: Mapping[str, Shape], rank: int, num_ranks: int) -> LocalParam:
        if self.num_heads % num_ranks:
            raise ValueError(
                f"{self.q}: {self.num_heads} heads do not split over {num_ranks} ranks"
            )
        if num_ranks >= self.num_kv_heads:
            if num_ranks % self.num_kv_heads:
                raise ValueError(
                    f"{self.k}: {num_ranks} ranks do not replicate {self.num_kv_heads} key/value "
                    "heads evenly"
                )
            kv_per_rank, kv_shard = 1, rank // (num_ranks // self.num_kv_heads)
        else:
            if self.num_kv_heads % num_ranks:
                raise ValueError(
                    f"{self.k}: {self.num_kv_heads} key/value heads do not split over "
                    f"{num_ranks} ranks"
                )
            kv_per_rank, kv_shard = self.num_kv_heads // num_ranks, rank
        q_rows = self.num_heads // num_ranks * self.head_dim
        kv_rows = kv_per_rank * self.head_dim
        parts = []
        for name, rows, shard in (
            (self.q, q_rows, rank),
            (self.k, kv_rows, kv_shard),
            (self.v, kv_rows, kv_shard),
        ):
            shape = shapes[name]
            parts.append(
                Part(name, ((shard * rows, (shard + 1) * rows), *((0, n) for n in shape[1:])))
            )
        return LocalParam(tuple(parts), 0)


@dataclass(frozen=True)
class VocabParallel:
    """vLLM's vocabulary-parallel embedding or LM head from one `[vocab, hidden]` tensor: the
    vocabulary padded to a multiple of `padding`, each rank keeping `padded / tp` rows."""

    source: str
    padding: int = VOCAB_PADDING

    @property
    def sources(self) -> tuple[str, ...]:
        return (self.source,)

    def local(self, shapes: Mapping[str, Shape], rank: int, num_ranks: int) -> LocalParam:
        vocab, *rest = shapes[self.source]
        padded = -(-vocab // self.padding) * self.padding
        if padded % num_ranks:
            raise ValueError(
                f"{self.source}: a vocabulary padded to {padded} does not split over {num_ranks}"
            )
        per_rank = padded // num_ranks
        lo, hi = min(vocab, rank * per_rank), min(vocab, (rank + 1) * per_rank)
        box = ((lo, hi), *((0, n) for n in rest))
        return LocalParam((Part(self.source, box),), 0, size=per_rank)


def expert_range(num_experts: int, ep: int, ep_rank: int) -> tuple[int, int]:
    """vLLM's "linear" expert placement: EP rank `ep_rank`'s experts `[lo, hi)`."""
    base, rem = divmod(num_experts, ep)
    lo = ep_rank * base + min(ep_rank, rem)
    return lo, lo + base + (ep_rank < rem)


@dataclass(frozen=True)
class VllmExperts:
    """vLLM's `w13_weight` (`down=False`) or `w2_weight` from transformers' stacked experts.
    The engine's ranks form `ep` expert-parallel groups of `num_ranks / ep` ranks (rank
    `r` is EP rank `r // (num_ranks / ep)`, expert-TP rank `r % (num_ranks / ep)`): `ep = 1`
    is vLLM's tensor-parallel MoE, `ep = num_ranks` its `enable_expert_parallel`."""

    source: str
    num_experts: int
    ep: int = 1
    down: bool = False

    @property
    def sources(self) -> tuple[str, ...]:
        return (self.source,)

    def local(self, shapes: Mapping[str, Shape], rank: int, num_ranks: int) -> LocalParam:
        shape = shapes[self.source]
        if len(shape) != 3 or shape[0] != self.num_experts:
            raise ValueError(
                f"{self.source}: expected stacked experts [{self.num_experts}, rows, cols], "
                f"got {list(shape)}"
            )
        if num_ranks % self.ep:
            raise ValueError(
                f"{self.source}: {num_ranks} engine ranks do not form {self.ep} "
                "expert-parallel groups"
            )
        tp = num_ranks // self.ep
        experts = expert_range(self.num_experts, self.ep, rank // tp)
        tp_rank = rank % tp
        if self.down:  # [E, H, I]: the rank's chunk of the input dim
            if shape[2] % tp:
                raise ValueError(
                    f"{self.source}: intermediate size {shape[2]} does not split over {tp}"
                )
            size = shape[2] // tp
            box = (experts, (0, shape[1]), (tp_rank * size, (tp_rank + 1) * size))
            return LocalParam((Part(self.source, box),), 2)
        if shape[1] % (2 * tp):  # [E, 2I, H]: the rank's gate rows, then its up rows
            raise ValueError(
                f"{self.source}: gate and up rows {shape[1]} do not split over {tp} ranks"
            )
        half, size = shape[1] // 2, shape[1] // (2 * tp)
        parts = tuple(
            Part(
                self.source,
                (experts, (at + tp_rank * size, at + (tp_rank + 1) * size), (0, shape[2])),
            )
            for at in (0, half)
        )
        return LocalParam(parts, 1)


@dataclass(frozen=True)
class LlamaShape:
    """What a Llama-family preset needs of the model's config."""

    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    #: the LM head is its own tensor (not tied to the embedding)
    lm_head: bool = True
    #: per-head `q_norm` / `k_norm` in attention (Qwen3, Qwen3-MoE)
    qk_norm: bool = False
    #: experts per MoE layer (Qwen3-MoE, Mixtral: every layer sparse); 0: a dense model
    num_experts: int = 0
    #: biases on `q_proj`, `k_proj`, `v_proj` (Qwen2; Llama with `attention_bias`)
    qkv_bias: bool = False
    #: a bias on `o_proj` too (Llama with `attention_bias`)
    o_bias: bool = False


def shape_of(config: Any) -> LlamaShape:
    """A `LlamaShape` from a transformers config (`LlamaConfig`, `Qwen2Config`, `Qwen3Config`,
    `Qwen3MoeConfig`, `MixtralConfig`), read by attribute."""
    heads = config.num_attention_heads
    bias = bool(getattr(config, "attention_bias", False))
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return LlamaShape(
        num_layers=config.num_hidden_layers,
        num_heads=heads,
        num_kv_heads=getattr(config, "num_key_value_heads", None) or heads,
        head_dim=head_dim,
        lm_head=not getattr(config, "tie_word_embeddings", False),
        qk_norm=config.model_type in ("qwen3", "qwen3_moe"),
        num_experts=getattr(config, "num_experts", None)
        or getattr(config, "num_local_experts", None)
        or 0,
        qkv_bias=config.model_type == "qwen2" or bias,
        o_bias=bias,
    )


def llama_to_vllm(config: LlamaShape, ep: int = 1) -> dict[str, Rule]:
    """Engine parameter -> rule for a transformers Llama (also Qwen2 / Qwen3 dense, which share
    these names; Qwen3's per-head `q_norm` / `k_norm` are replicated like the other norms) into
    vLLM's layout. With `config.num_experts`, every layer's MLP is a mixture of experts as
    Qwen3-MoE and Mixtral name it (`mlp.gate`, `mlp.experts.*`), its experts over `ep`
    expert-parallel groups (`VllmExperts`)."""
    rules: dict[str, Rule] = {
        "model.embed_tokens.weight": VocabParallel("model.embed_tokens.weight"),
        "model.norm.weight": Concat(("model.norm.weight",), shard_dim=None),
    }
    for i in range(config.num_layers):
        layer = f"model.layers.{i}"
        attn, mlp = f"{layer}.self_attn", f"{layer}.mlp"
        rules[f"{attn}.qkv_proj.weight"] = VllmQKV(
            f"{attn}.q_proj.weight",
            f"{attn}.k_proj.weight",
            f"{attn}.v_proj.weight",
            config.num_heads,
            config.num_kv_heads,
            config.head_dim,
        )
        if config.qkv_bias:  # `QKVParallelLinear` loads its bias as it loads its weight rows
            rules[f"{attn}.qkv_proj.bias"] = VllmQKV(
                f"{attn}.q_proj.bias",
                f"{attn}.k_proj.bias",
                f"{attn}.v_proj.bias",
                config.num_heads,
                config.num_kv_heads,
                config.head_dim,
            )
        rules[f"{attn}.o_proj.weight"] = Concat((f"{attn}.o_proj.weight",), dim=1, shard_dim=1)
        if config.o_bias:  # `RowParallelLinear` keeps its whole bias on every rank
            rules[f"{attn}.o_proj.bias"] = Concat((f"{attn}.o_proj.bias",), shard_dim=None)
        if config.qk_norm:
            for norm in ("q_norm", "k_norm"):
                rules[f"{attn}.{norm}.weight"] = Concat((f"{attn}.{norm}.weight",), shard_dim=None)
        if config.num_experts:
            experts, count = f"{mlp}.experts", config.num_experts
            rules[f"{mlp}.gate.weight"] = Concat((f"{mlp}.gate.weight",), shard_dim=None)
            rules[f"{experts}.w13_weight"] = VllmExperts(f"{experts}.gate_up_proj", count, ep)
            rules[f"{experts}.w2_weight"] = VllmExperts(f"{experts}.down_proj", count, ep, True)
        else:
            rules[f"{mlp}.gate_up_proj.weight"] = Concat(
                (f"{mlp}.gate_proj.weight", f"{mlp}.up_proj.weight"), dim=0, shard_dim=0
            )
            rules[f"{mlp}.down_proj.weight"] = Concat(
                (f"{mlp}.down_proj.weight",), dim=1, shard_dim=1
            )
        for norm in ("input_layernorm", "post_attention_layernorm"):
            rules[f"{layer}.{norm}.weight"] = Concat((f"{layer}.{norm}.weight",), shard_dim=None)
    if config.lm_head:
        rules["lm_head.weight"] = VocabParallel("lm_head.weight")
    return rules


def identity(shard_dims: Mapping[str, int | None]) -> dict[str, Rule]:
    """The engine is the trainer's model under torch tensor parallelism on its own mesh: each
    parameter keeps its name, sharded along its `shard_dims` entry (`Shard(d)` of
    `parallelize_module`'s colwise (0) / rowwise (1) plans, `torch.chunk` sizes) or replicated
    (None)."""
    return {
        name: Concat((name,), dim=0 if dim is None else dim, shard_dim=dim, even=False)
        for name, dim in shard_dims.items()
    }
