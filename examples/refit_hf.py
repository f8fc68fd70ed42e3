"""Whole-model refit of a real transformers model: a trainer under torch's FSDP2 (`fully_shard`)
and tensor parallelism (`parallelize_module`) into inference engines on other ranks, every step.

The model (a Llama, or a Qwen3-MoE with stacked experts) is built from a config with random
weights, the same on every rank. Trainer ranks parallelize it on a (dp, tp) mesh: attention and
dense-MLP projections column / row parallel over `tp`, then every layer and the root sharded by
FSDP2 over `dp` (norms, embedding, LM head, router and experts on the sub-mesh `mesh["dp"]`).
Engine ranks hold their engine's weights on their own tensor-parallel mesh:

- `--preset vllm`: vLLM's layout (`planner.refit_presets.llama_to_vllm`: fused `qkv_proj` and
  `gate_up_proj`, vocabulary-parallel embedding and head with vLLM's padding, MoE experts as
  `w13_weight` / `w2_weight` under TP and EP), run by a small tensor-parallel forward written
  here in plain torch over the engine's process group;
- `--preset identity`: the same transformers model under `parallelize_module` on the engine's
  mesh, run by its own forward.

One `Refit` is planned for the whole model; `sync()` moves the trainer's current values into the
engine's parameters in place. Then, checked independently of meshcast: every engine tensor
equals its slice of the unsharded state dict (gathered with `full_tensor()`, sliced here with
plain torch ops), and each engine's logits on a fixed batch match the trainer model's own (its
FSDP2 + TP forward). The trainer then takes an optimizer step and the engines follow.

Tolerance: the engines and the trainer compute in fp32 but add partial sums in different orders
(row-parallel all-reduces over other degrees, experts summed per rank), so logits agree to
rounding, not bit for bit: `|engine - trainer| <= 1e-4 * (1 + max |trainer|)` (fp32 epsilon is
1.2e-7; a few layers of hidden-size dot products stay well inside it, a wrong weight does not).

    python -m examples.refit_hf                          # Llama, vLLM layout, 8 gloo ranks
    python -m examples.refit_hf --model qwen3-moe --engine-ep 2 --json
    python -m examples.refit_hf --preset identity --heads 8 --kv-heads 2
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor
from torch.distributed.tensor.parallel import (
    ColwiseParallel,
    ParallelStyle,
    RowwiseParallel,
    SequenceParallel,
    parallelize_module,
)

from meshcast.executor.local_world import LocalWorld
from meshcast.executor.memory import PeakMemory
from meshcast.executor.refit import Refit
from meshcast.planner.refit_map import Rule
from meshcast.planner.refit_presets import VOCAB_PADDING, identity, llama_to_vllm, shape_of

#: logits agree to this, relative to the largest (see the module's docstring)
LOGITS_RTOL = 1e-4
BATCH, SEQUENCE = 2, 8


@dataclass(frozen=True)
class Options:
    """The model and the meshes, as the command line gives them."""

    model: str = "llama"
    hidden: int = 64
    intermediate: int = 128
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    vocab: int = 100
    experts: int = 4
    trainer_dp: int = 2
    trainer_tp: int = 2
    engines: int = 2
    engine_tp: int = 2
    engine_ep: int = 1
    preset: str = "vllm"
    seed: int = 0

    @property
    def trainer_ranks(self) -> list[int]:
        return list(range(self.trainer_dp * self.trainer_tp))

    def engine_ranks(self, engine: int) -> list[int]:
        first = len(self.trainer_ranks) + engine * self.engine_tp
        return list(range(first, first + self.engine_tp))

    @property
    def world_size(self) -> int:
        return len(self.trainer_ranks) + self.engines * self.engine_tp

    def meshes(self) -> tuple[DeviceMesh, DeviceMesh | None]:
        """The trainer's (dp, tp) mesh, and this rank's engine mesh if it is in one (a
        collective: every rank makes every mesh)."""
        trainer = DeviceMesh(
            "cpu",
            torch.tensor(self.trainer_ranks).reshape(self.trainer_dp, self.trainer_tp),
            mesh_dim_names=("dp", "tp"),
        )
        rank = dist.get_rank()
        engines = [
            DeviceMesh("cpu", torch.tensor(self.engine_ranks(e))) for e in range(self.engines)
        ]
        return trainer, next((m for m in engines if rank in m.mesh.tolist()), None)


def build_model(opts: Options) -> torch.nn.Module:
    """The model with its random weights, the same on every rank (seeded)."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen3MoeConfig, Qwen3MoeForCausalLM

    common = dict(
        vocab_size=opts.vocab,
        hidden_size=opts.hidden,
        num_hidden_layers=opts.layers,
        num_attention_heads=opts.heads,
        num_key_value_heads=opts.kv_heads,
        head_dim=opts.hidden // opts.heads,
        tie_word_embeddings=False,
        attn_implementation="eager",
    )
    torch.manual_seed(opts.seed)
    if opts.model == "llama":
        return LlamaForCausalLM(LlamaConfig(intermediate_size=opts.intermediate, **common))
    config = Qwen3MoeConfig(
        intermediate_size=opts.intermediate,
        moe_intermediate_size=opts.intermediate,
        num_experts=opts.experts,
        num_experts_per_tok=min(2, opts.experts),
        norm_topk_prob=True,
        **common,
    )
    return Qwen3MoeForCausalLM(config)


def tp_plan(model: torch.nn.Module) -> dict[str, ParallelStyle]:
    """torch TP per layer: attention (and a dense MLP) column parallel in, row parallel out.
    A mixture of experts stays whole under TP (FSDP2 shards it; its input is the same on every
    TP rank, and so are its gradients)."""
    plan: dict[str, ParallelStyle] = {
        **{f"self_attn.{p}": ColwiseParallel() for p in ("q_proj", "k_proj", "v_proj")},
        "self_attn.o_proj": RowwiseParallel(),
    }
    if hasattr(model.model.layers[0].self_attn, "q_norm"):
        # Qwen3's per-head norms see this rank's heads ([batch, seq, heads, head_dim]): their
        # weights replicated over TP as DTensors, so that their gradients are all-reduced
        # (torch's SequenceParallel style, sharding the heads dim, does exactly that)
        for norm in ("q_norm", "k_norm"):
            plan[f"self_attn.{norm}"] = SequenceParallel(sequence_dim=2, use_local_output=True)
    if not hasattr(model.model.layers[0].mlp, "experts"):
        plan.update({f"mlp.{p}": ColwiseParallel() for p in ("gate_proj", "up_proj")})
        plan["mlp.down_proj"] = RowwiseParallel()
    return plan


def identity_rules(model: torch.nn.Module) -> dict[str, Rule]:
    """The identity preset for an engine parallelized by `tp_plan`: colwise weights sharded
    along dim 0, rowwise along dim 1, the rest replicated."""
    plan = tp_plan(model)
    dims: dict[str, int | None] = {}
    for name, _ in model.named_parameters():
        style = next((s for p, s in plan.items() if f".{p}." in name), None)
        dims[name] = (
            0
            if isinstance(style, ColwiseParallel)
            else 1
            if isinstance(style, RowwiseParallel)
            else None
        )
    return identity(dims)


def make_trainer(model: torch.nn.Module, mesh: DeviceMesh) -> dict[str, DTensor]:
    """Parallelize the trainer as torchtitan does (TP, then FSDP2 per layer and at the root);
    its state dict: name -> sharded DTensor parameter (updated in place by the optimizer)."""
    for layer in model.model.layers:
        parallelize_module(layer, mesh["tp"], tp_plan(model))
        fully_shard(layer, mesh=mesh["dp"])
    fully_shard(model, mesh=mesh["dp"])
    return dict(model.state_dict())


def vllm_slices(full: dict[str, torch.Tensor], opts: Options, rank: int) -> dict[str, Any]:
    """vLLM's parameters on engine TP rank `rank`, sliced from the unsharded state dict with
    plain torch ops (heads, chunks, experts), independently of the presets."""
    tp, d = opts.engine_tp, opts.hidden // opts.heads
    out: dict[str, Any] = {}
    padded = -(-opts.vocab // VOCAB_PADDING) * VOCAB_PADDING
    rows = slice(rank * padded // tp, min(opts.vocab, (rank + 1) * padded // tp))
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        out[name] = full[name][rows]  # the rows past the vocabulary are padding, unchecked
    out["model.norm.weight"] = full["model.norm.weight"]
    kv_shard = rank * opts.kv_heads // tp  # replicated kv heads when tp > kv heads
    kv_count = max(1, opts.kv_heads // tp)
    for i in range(opts.layers):
        attn, mlp = f"model.layers.{i}.self_attn", f"model.layers.{i}.mlp"
        q = full[f"{attn}.q_proj.weight"].reshape(opts.heads, d, -1).chunk(tp)[rank]
        k, v = (
            full[f"{attn}.{p}_proj.weight"].reshape(opts.kv_heads, d, -1)[
                kv_shard : kv_shard + kv_count
            ]
            for p in ("k", "v")
        )
        out[f"{attn}.qkv_proj.weight"] = torch.cat([q, k, v]).flatten(0, 1)
        out[f"{attn}.o_proj.weight"] = full[f"{attn}.o_proj.weight"].chunk(tp, dim=1)[rank]
        for norm in ("q_norm", "k_norm"):
            if f"{attn}.{norm}.weight" in full:
                out[f"{attn}.{norm}.weight"] = full[f"{attn}.{norm}.weight"]
        if opts.model == "llama":
            gate, up = (full[f"{mlp}.{p}_proj.weight"].chunk(tp)[rank] for p in ("gate", "up"))
            out[f"{mlp}.gate_up_proj.weight"] = torch.cat([gate, up])
            out[f"{mlp}.down_proj.weight"] = full[f"{mlp}.down_proj.weight"].chunk(tp, 1)[rank]
        else:
            expert_tp = tp // opts.engine_ep
            group, t = rank // expert_tp, rank % expert_tp
            experts = torch.tensor_split(torch.arange(opts.experts), opts.engine_ep)[group]
            gate_up = full[f"{mlp}.experts.gate_up_proj"][experts]
            gate, up = gate_up.chunk(2, dim=1)
            out[f"{mlp}.experts.w13_weight"] = torch.cat(
                [gate.chunk(expert_tp, 1)[t], up.chunk(expert_tp, 1)[t]], dim=1
            )
            down = full[f"{mlp}.experts.down_proj"][experts]
            out[f"{mlp}.experts.w2_weight"] = down.chunk(expert_tp, 2)[t]
            out[f"{mlp}.gate.weight"] = full[f"{mlp}.gate.weight"]
        for norm in ("input_layernorm", "post_attention_layernorm"):
            out[f"model.layers.{i}.{norm}.weight"] = full[f"model.layers.{i}.{norm}.weight"]
    return out


def identity_slices(
    full: dict[str, torch.Tensor], rules: dict[str, Rule], rank: int, tp: int
) -> dict[str, Any]:
    """The identity engine's local parameters: `torch.chunk` of each, as torch TP keeps them."""
    out = {}
    for name in full:
        dim = getattr(rules[name], "shard_dim", None)
        out[name] = full[name] if dim is None else full[name].chunk(tp, dim)[rank]
    return out


class VllmEngine:
    """A tensor-parallel forward over vLLM-layout weights, in plain torch: column-parallel
    projections local, row-parallel ones all-reduced over the engine's group, the vocabulary
    split over ranks, experts summed where they live and all-reduced."""

    def __init__(self, model: torch.nn.Module, opts: Options, mesh: DeviceMesh) -> None:
        self.opts, self.config = opts, model.config
        self.group, self.rank = mesh.get_group(), mesh.get_local_rank()
        self.rotary = model.model.rotary_emb  # the model's own RoPE tables (no weights)
        shapes = vllm_slices(_shapes(model), opts, self.rank)
        padded = -(-opts.vocab // VOCAB_PADDING) * VOCAB_PADDING
        for name in ("model.embed_tokens.weight", "lm_head.weight"):
            shapes[name] = torch.empty(padded // opts.engine_tp, opts.hidden)
        self.params = {name: torch.full(t.shape, float("nan")) for name, t in shapes.items()}

    def _reduced(self, x: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(x, group=self.group)
        return x

    def _norm(self, x: torch.Tensor, name: str) -> torch.Tensor:
        eps = self.config.rms_norm_eps
        return self.params[name] * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))

    def _attention(self, x: torch.Tensor, i: int, rope: Any) -> torch.Tensor:
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        attn, opts = f"model.layers.{i}.self_attn", self.opts
        d, tp = opts.hidden // opts.heads, opts.engine_tp
        heads, kv = opts.heads // tp, max(1, opts.kv_heads // tp)
        q, k, v = (x @ self.params[f"{attn}.qkv_proj.weight"].T).split(
            [heads * d, kv * d, kv * d], -1
        )
        q, k, v = (t.unflatten(-1, (-1, d)) for t in (q, k, v))
        if f"{attn}.q_norm.weight" in self.params:
            q, k = self._norm(q, f"{attn}.q_norm.weight"), self._norm(k, f"{attn}.k_norm.weight")
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        q, k = apply_rotary_pos_emb(q, k, *rope)
        k, v = (t.repeat_interleave(heads // kv, dim=1) for t in (k, v))
        scores = (q @ k.transpose(-1, -2)) * d**-0.5
        causal = torch.ones(x.shape[1], x.shape[1], dtype=torch.bool).triu(1)
        mixed = scores.masked_fill(causal, float("-inf")).softmax(-1) @ v
        return self._reduced(
            mixed.transpose(1, 2).flatten(2) @ self.params[f"{attn}.o_proj.weight"].T
        )

    def _mlp(self, x: torch.Tensor, i: int) -> torch.Tensor:
        mlp = f"model.layers.{i}.mlp"
        if self.opts.model == "llama":
            gate, up = (x @ self.params[f"{mlp}.gate_up_proj.weight"].T).chunk(2, -1)
            return self._reduced((F.silu(gate) * up) @ self.params[f"{mlp}.down_proj.weight"].T)
        tokens = x.flatten(0, 1)
        weights = (tokens @ self.params[f"{mlp}.gate.weight"].T).softmax(-1)
        top, chosen = weights.topk(self.config.num_experts_per_tok, -1)
        if self.config.norm_topk_prob:
            top = top / top.sum(-1, keepdim=True)
        expert_tp = self.opts.engine_tp // self.opts.engine_ep
        experts = torch.tensor_split(torch.arange(self.opts.experts), self.opts.engine_ep)[
            self.rank // expert_tp
        ]
        out = torch.zeros_like(tokens)
        w13, w2 = self.params[f"{mlp}.experts.w13_weight"], self.params[f"{mlp}.experts.w2_weight"]
        for local, expert in enumerate(experts.tolist()):
            rows, slot = (chosen == expert).nonzero(as_tuple=True)
            gate, up = (tokens[rows] @ w13[local].T).chunk(2, -1)
            out.index_add_(0, rows, ((F.silu(gate) * up) @ w2[local].T) * top[rows, slot, None])
        return self._reduced(out).unflatten(0, x.shape[:2])

    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        p, opts = self.params, self.opts
        per_rank = p["model.embed_tokens.weight"].shape[0]
        local = ids - self.rank * per_rank
        inside = (local >= 0) & (local < per_rank)
        x = F.embedding(local.clamp(0, per_rank - 1), p["model.embed_tokens.weight"])
        x = self._reduced(x.masked_fill(~inside[..., None], 0.0))  # padding rows are garbage
        rope = self.rotary(x, torch.arange(ids.shape[1])[None])
        for i in range(opts.layers):
            layer = f"model.layers.{i}"
            x = x + self._attention(self._norm(x, f"{layer}.input_layernorm.weight"), i, rope)
            x = x + self._mlp(self._norm(x, f"{layer}.post_attention_layernorm.weight"), i)
        x = self._norm(x, "model.norm.weight")
        pieces = [torch.empty(*x.shape[:2], per_rank) for _ in range(opts.engine_tp)]
        dist.all_gather(pieces, (x @ p["lm_head.weight"].T).contiguous(), group=self.group)
        return torch.cat(pieces, -1)[..., : opts.vocab]


def _shapes(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Zero tensors of the model's parameter shapes (to slice shapes from)."""
    return {name: torch.zeros(p.shape) for name, p in model.named_parameters()}


def _nan_first(x: float) -> float:
    return math.inf if math.isnan(x) else x


def _storage(model: torch.nn.Module, engine: VllmEngine | None) -> dict[str, int]:
    """Each engine weight's address: the same before and after a sync when it landed in
    place (the model's own parameters, or the vLLM-layout tensors)."""
    if engine is not None:
        return {n: t.data_ptr() for n, t in engine.params.items()}
    return {
        n: (p.to_local() if isinstance(p, DTensor) else p).data_ptr()
        for n, p in model.named_parameters()
    }


def _gathered(state: dict[str, DTensor] | None) -> dict[str, torch.Tensor]:
    """The unsharded state dict on every rank: `full_tensor()` on the trainer, then sent to
    all from trainer rank 0 (the check's own path, not meshcast's)."""
    full = {n: t.full_tensor() for n, t in state.items()} if state is not None else None
    box = [full if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _trainer_logits(model: torch.nn.Module | None, ids: torch.Tensor) -> torch.Tensor:
    """The trainer model's logits on the batch (its FSDP2 + TP forward), on every rank."""
    logits = None
    if model is not None:
        with torch.no_grad():
            logits = model(input_ids=ids).logits
    box = [logits if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def refit_job(opts_json: dict[str, Any]) -> dict[str, Any]:
    """One rank's part: build its role, refit, check, train a step, refit again, check."""
    opts = Options(**opts_json)
    rank = dist.get_rank()
    # torch warns that a strided full_tensor() takes two all-gathers: the check's path, not ours
    logging.getLogger("torch.distributed.tensor._redistribute").setLevel(logging.ERROR)
    model = build_model(opts)
    trainer_mesh, engine_mesh = opts.meshes()
    rules = (
        identity_rules(model)
        if opts.preset == "identity"
        else llama_to_vllm(shape_of(model.config), opts.engine_ep)
    )
    trainer_state = engine_params = engine = None
    if rank in opts.trainer_ranks:
        trainer_state = make_trainer(model, trainer_mesh)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    elif engine_mesh is not None:
        if opts.preset == "identity":
            for layer in model.model.layers:
                parallelize_module(layer, engine_mesh, tp_plan(model))
            engine_params = {
                n: (p.to_local() if isinstance(p, DTensor) else p).data
                for n, p in model.named_parameters()
            }
            for t in engine_params.values():
                t.fill_(float("nan"))  # nothing of the model's own init survives a refit
        else:
            engine = VllmEngine(model, opts, engine_mesh)
            engine_params = engine.params
    storage = _storage(model, engine)  # where the engine's weights live, before any sync
    refit = Refit(
        rules, trainer_state=trainer_state, engine_params=engine_params, engine_mesh=engine_mesh
    )
    ids = torch.randint(
        0, opts.vocab, (BATCH, SEQUENCE), generator=torch.Generator().manual_seed(1)
    )
    train_ids = torch.randint(
        0, opts.vocab, (BATCH, SEQUENCE), generator=torch.Generator().manual_seed(2)
    )
    report: dict[str, Any] = {"bit_exact": True, "logits_ok": True, "logits_max_abs_diff": 0.0}
    report.update(sync_s=[], peak_growth_bytes=0, same_objects=True)
    for step in range(2):
        if step and trainer_state is not None:  # one optimizer step on the trainer
            model(input_ids=train_ids, labels=train_ids).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        dist.barrier()  # the sync's time, not the wait for the trainer's step
        with PeakMemory(torch.device("cpu")) as peak:
            began = time.perf_counter()
            refit.sync()
            report["sync_s"].append(time.perf_counter() - began)
        report["peak_growth_bytes"] = max(report["peak_growth_bytes"], peak.growth_bytes or 0)
        full = _gathered(trainer_state)
        expected_logits = _trainer_logits(model if trainer_state is not None else None, ids)
        if engine_mesh is None:
            continue
        tp_rank = engine_mesh.get_local_rank()
        expected = (
            identity_slices(full, rules, tp_rank, opts.engine_tp)
            if opts.preset == "identity"
            else vllm_slices(full, opts, tp_rank)
        )
        for name, want in expected.items():
            got = engine_params[name].narrow(0, 0, want.shape[0])
            report["bit_exact"] &= torch.equal(got, want)
        report["same_objects"] &= _storage(model, engine) == storage  # in place
        with torch.no_grad():
            logits = engine.logits(ids) if engine is not None else model(input_ids=ids).logits
        diff = (logits - expected_logits).abs().max().item()  # NaN where a weight is missing
        report["logits_max_abs_diff"] = max(report["logits_max_abs_diff"], diff, key=_nan_first)
        report["logits_ok"] &= diff <= LOGITS_RTOL * (1 + expected_logits.abs().max().item())
    report.update(
        syncs=refit.num_syncs,
        current=refit.current,
        tensors=len(refit.request.tensors),
        bytes=sum(math.prod(t.shape) * t.itemsize_bytes for t in refit.request.tensors),
    )
    refit.close()
    return report


def refit(opts: Options, world: LocalWorld | None = None) -> dict[str, Any]:
    """Run the refit on `opts.world_size` gloo ranks (a local world of its own unless given);
    the figures of every rank, summed up."""
    own = world is None
    world = world or LocalWorld(opts.world_size)
    try:
        answers = world.run(refit_job, asdict(opts))
    finally:
        if own:
            world.close()
    members = answers[: opts.world_size]
    return {
        "bit_exact": all(a["bit_exact"] for a in members),
        "logits_ok": all(a["logits_ok"] for a in members),
        "logits_max_abs_diff": max(a["logits_max_abs_diff"] for a in members),
        "syncs": members[0]["syncs"],
        "sync_s": [max(a["sync_s"][i] for a in members) for i in range(members[0]["syncs"])],
        "peak_growth_mib": {r: a["peak_growth_bytes"] / 2**20 for r, a in enumerate(members)},
        "current": all(a["current"] for a in members),
        "same_objects": all(a["same_objects"] for a in members),
        "tensors": members[0]["tensors"],
        "model_bytes": members[0]["bytes"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = Options()
    parser.add_argument("--model", choices=["llama", "qwen3-moe"], default=defaults.model)
    parser.add_argument("--preset", choices=["vllm", "identity"], default=defaults.preset)
    for field in ("hidden", "intermediate", "layers", "heads", "kv_heads", "vocab", "experts"):
        parser.add_argument(
            f"--{field.replace('_', '-')}", type=int, default=getattr(defaults, field)
        )
    for field in ("trainer_dp", "trainer_tp", "engines", "engine_tp", "engine_ep", "seed"):
        parser.add_argument(
            f"--{field.replace('_', '-')}", type=int, default=getattr(defaults, field)
        )
    parser.add_argument("--json", action="store_true", help="print one JSON line last")
    args = vars(parser.parse_args(argv))
    as_json = args.pop("json")
    opts = Options(**args)
    if opts.engine_tp % opts.engine_ep:
        parser.error(f"--engine-ep {opts.engine_ep} does not divide --engine-tp {opts.engine_tp}")
    print(
        f"{opts.model} ({opts.layers} layers, hidden {opts.hidden}, {opts.heads} heads, "
        f"{opts.kv_heads} kv heads, vocab {opts.vocab}"
        + (f", {opts.experts} experts" if opts.model != "llama" else "")
        + f"): trainer (dp {opts.trainer_dp}, tp {opts.trainer_tp}) -> {opts.engines} engines "
        f"of TP {opts.engine_tp} (EP {opts.engine_ep}), preset {opts.preset}, "
        f"{opts.world_size} gloo ranks",
        file=sys.stderr,
    )
    result = refit(opts)
    print(
        f"{result['tensors']} tensors, {result['model_bytes'] / 2**20:.1f} MiB; syncs "
        + ", ".join(f"{s * 1e3:.0f} ms" for s in result["sync_s"])
        + f"; bit-exact {result['bit_exact']}; logits within tolerance {result['logits_ok']} "
        f"(max |diff| {result['logits_max_abs_diff']:.2e}); peak growth "
        f"{max(result['peak_growth_mib'].values()):.1f} MiB",
        file=sys.stderr,
    )
    if as_json:
        print(json.dumps(result))
    return 0 if result["bit_exact"] and result["logits_ok"] and result["current"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
