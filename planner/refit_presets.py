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
  `MergedColumnParallelLinear`: `[gate rows, up rows]` of the rank's chunk of each.
  `RowParallelLinear` (`o_proj`, `down_proj`): the rank's chunk of the input dim (dim 1).
- `vllm/model_executor/layers/vocab_parallel_embedding.py`: `VocabParallelEmbedding` and
  `ParallelLMHead` pad the vocabulary to a multiple of `DEFAULT_VOCAB_PADDING_SIZE` (64) and
  give each rank `padded / tp` rows; rows past the real vocabulary are padding.
- Norms are replicated on every rank.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

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


@dataclass(frozen=True)
class LlamaShape:
    """What a Llama-family preset needs of the model's config."""

    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    #: the LM head is its own tensor (not tied to the embedding)
    lm_head: bool = True


def llama_to_vllm(config: LlamaShape) -> dict[str, Rule]:
    """Engine parameter -> rule for a transformers Llama (also Qwen2 / Qwen3 dense, which share
    these names; Qwen3's per-head `q_norm` / `k_norm` are replicated like the other norms) into
    vLLM's layout."""
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
        rules[f"{attn}.o_proj.weight"] = Concat((f"{attn}.o_proj.weight",), dim=1, shard_dim=1)
        rules[f"{mlp}.gate_up_proj.weight"] = Concat(
            (f"{mlp}.gate_proj.weight", f"{mlp}.up_proj.weight"), dim=0, shard_dim=0
        )
        rules[f"{mlp}.down_proj.weight"] = Concat((f"{mlp}.down_proj.weight",), dim=1, shard_dim=1)
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
