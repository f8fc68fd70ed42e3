"""Whole-model refit across real processes: trainer DTensors into engines' live parameters."""

from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")

import torch.distributed as dist  # noqa: E402
from torch.distributed.device_mesh import DeviceMesh  # noqa: E402
from torch.distributed.tensor import Replicate, Shard, distribute_tensor  # noqa: E402
from torch.distributed.tensor.placement_types import _StridedShard  # noqa: E402

from meshcast.executor.local_world import LocalWorld, RankFailure  # noqa: E402
from meshcast.executor.refit import Refit  # noqa: E402
from meshcast.executor.refit_verify import RefitMismatchError  # noqa: E402
from meshcast.planner.refit_map import Concat, Rule, local_shapes  # noqa: E402
from meshcast.planner.refit_presets import LlamaShape, llama_to_vllm  # noqa: E402

pytestmark = pytest.mark.torch

#: a small MLP block and its norm as a trainer names them
SHAPES = {"gate": (8, 6), "up": (8, 6), "down": (6, 8), "norm": (6,)}
#: on the trainer's (dp 2, tp 2) mesh: FSDP2 over TP rows, TP columns; the norm as FSDP2
#: keeps it, sharded over the sub-mesh `mesh["dp"]` that contains the rank (two sub-meshes)
TRAINER_PLACEMENTS = {
    "gate": [_StridedShard(0, split_factor=2), Shard(0)],
    "up": [_StridedShard(0, split_factor=2), Shard(0)],
    "down": [Replicate(), Shard(1)],
    "norm": [Shard(0)],
}
#: the engine's fused layout: gate_up column parallel, down row parallel, norm replicated
RULES: dict[str, Rule] = {
    "gate_up": Concat(("gate", "up"), dim=0, shard_dim=0),
    "down": Concat(("down",), dim=1, shard_dim=1),
    "norm": Concat(("norm",), dim=0, shard_dim=None),
}
TRAINER, ENGINES = [0, 1, 2, 3], [[4, 5], [6, 7]]
CLUSTER = {
    "hosts": [TRAINER, *ENGINES],
    "nic_gbps": 100,
    "nics_per_host": 1,
    "intra_gbps": 800,
    "latency_us": 5,
}


def _values(step: int) -> dict[str, Any]:
    """The trainer's global tensors at optimizer step `step`, the same on every rank."""
    generator = torch.Generator().manual_seed(2026)
    return {name: torch.randn(shape, generator=generator) + step for name, shape in SHAPES.items()}


def _expected(values: dict[str, Any], rank: int, tp: int) -> dict[str, Any]:
    """An engine rank's parameters computed with plain torch ops from the full tensors."""
    return {
        "gate_up": torch.cat([values["gate"].chunk(tp)[rank], values["up"].chunk(tp)[rank]]),
        "down": values["down"].chunk(tp, dim=1)[rank],
        "norm": values["norm"],
    }


def _meshes() -> tuple[DeviceMesh, DeviceMesh | None, int]:
    """The trainer's (dp, tp) mesh, and this rank's engine mesh and place in it (a
    collective: every rank makes every mesh)."""
    trainer = DeviceMesh("cpu", torch.tensor(TRAINER).reshape(2, 2), mesh_dim_names=("dp", "tp"))
    engines = [DeviceMesh("cpu", torch.tensor(e)) for e in ENGINES]
    rank = dist.get_rank()
    for ranks, mesh in zip(ENGINES, engines, strict=True):
        if rank in ranks:
            return trainer, mesh, ranks.index(rank)
    return trainer, None, 0


def _refit_job(
    corrupt_engine_shape: bool = False, fail_second_sync: bool = False
) -> dict[str, Any]:
    rank = dist.get_rank()
    trainer_mesh, engine_mesh, tp_rank = _meshes()
    values = _values(0)
    trainer_state, engine_params = None, None
    if rank in TRAINER:
        trainer_state = {
            name: distribute_tensor(
                values[name],
                trainer_mesh["dp"] if name == "norm" else trainer_mesh,
                TRAINER_PLACEMENTS[name],
                src_data_rank=None,
            )
            for name in SHAPES
        }
    if engine_mesh is not None:
        shapes = local_shapes(RULES, SHAPES, tp_rank, 2)
        if corrupt_engine_shape and rank == 5:
            shapes["down"] = (6, 3)
        engine_params = {name: torch.zeros(shape) for name, shape in shapes.items()}
    live = dict(engine_params or {})
    refit = Refit(
        RULES,
        trainer_state=trainer_state,
        engine_params=engine_params,
        engine_mesh=engine_mesh,
        cluster=CLUSTER,
    )
    plan = refit.plan
    results = []
    for step in range(2):
        if step and trainer_state is not None:  # an optimizer step: every value moves by one
            for t in trainer_state.values():
                t.to_local().add_(1.0)
        if step and fail_second_sync and rank == 2:  # one trainer rank's tensor changed dtype
            assert trainer_state is not None
            trainer_state["up"] = trainer_state["up"].to(torch.float64)
        try:
            refit.sync()
        except ValueError as err:
            out = {"error": str(err), "current": refit.current, "syncs": refit.num_syncs}
            refit.close()
            return out
        if engine_params is not None:
            expected = _expected(_values(step), tp_rank, 2)
            results.append(all(torch.equal(live[n], expected[n]) for n in expected))
    same_objects = engine_params is None or all(live[n] is engine_params[n] for n in live)
    out = {
        "exact": all(results),
        "current": refit.current,
        "syncs": refit.num_syncs,
        "planned_once": refit.plan is plan,
        "same_objects": same_objects,
        "tensors": len(refit.request.tensors),
        # the norm's trainer ranks hold it on two sub-meshes: its source is what each holds
        "sub_mesh_as_blocks": [t.src.blocks is not None for t in refit.request.tensors]
        == [name == "norm" for name in SHAPES],
    }
    refit.close()
    return out


@pytest.mark.slow
def test_a_refit_moves_the_whole_state_dict_into_live_parameters(world: LocalWorld) -> None:
    answers = world.run(_refit_job)
    assert all(a["exact"] for a in answers), [r for r, a in enumerate(answers) if not a["exact"]]
    assert all(a["current"] and a["syncs"] == 2 for a in answers)
    assert all(a["planned_once"] and a["same_objects"] for a in answers)
    assert {a["tensors"] for a in answers} == {len(SHAPES)}  # one request for the whole model
    assert all(a["sub_mesh_as_blocks"] for a in answers)


@pytest.mark.slow
def test_an_engine_parameter_that_does_not_fit_is_an_error_on_every_rank(world: LocalWorld) -> None:
    with pytest.raises(RankFailure) as failure:
        world.run(_refit_job, True)
    errors = failure.value.errors
    assert sorted(errors) == list(range(world.num_ranks))
    assert all("down: the mapping makes [6, 4] on engine rank 1" in e for e in errors.values())


#: a one-layer Llama as transformers names it: 4 heads of 4, 2 key/value heads, vocab 100
LLAMA = LlamaShape(num_layers=1, num_heads=4, num_kv_heads=2, head_dim=4)
LLAMA_SHAPES = {
    "model.embed_tokens.weight": (100, 16),
    "model.norm.weight": (16,),
    "lm_head.weight": (100, 16),
    "model.layers.0.self_attn.q_proj.weight": (16, 16),
    "model.layers.0.self_attn.k_proj.weight": (8, 16),
    "model.layers.0.self_attn.v_proj.weight": (8, 16),
    "model.layers.0.self_attn.o_proj.weight": (16, 16),
    "model.layers.0.mlp.gate_proj.weight": (24, 16),
    "model.layers.0.mlp.up_proj.weight": (24, 16),
    "model.layers.0.mlp.down_proj.weight": (16, 24),
    "model.layers.0.input_layernorm.weight": (16,),
    "model.layers.0.post_attention_layernorm.weight": (16,),
}
#: the padding rows of a vocabulary-parallel engine tensor: the refit leaves them alone
PADDING = -7.0


def _llama_placements(name: str) -> list[Any]:
    """FSDP2 (dp, strided over TP) with TP colwise / rowwise, as torch parallelizes Llama."""
    if name.endswith("norm.weight"):
        return [Shard(0)]  # on mesh["dp"]
    if any(k in name for k in ("o_proj", "down_proj")):
        return [Shard(0), Shard(1)]
    return [_StridedShard(0, split_factor=2), Shard(0)]


def _vllm_expected(values: dict[str, Any], rank: int, tp: int) -> dict[str, Any]:
    """vLLM's engine tensors on rank `rank` of `tp`, by heads with plain torch ops."""
    attn, mlp = "model.layers.0.self_attn", "model.layers.0.mlp"
    q = values[f"{attn}.q_proj.weight"].reshape(4, 4, 16)
    k = values[f"{attn}.k_proj.weight"].reshape(2, 4, 16)
    v = values[f"{attn}.v_proj.weight"].reshape(2, 4, 16)
    heads, kv = (
        slice(rank * 4 // tp, (rank + 1) * 4 // tp),
        slice(rank * 2 // tp, (rank + 1) * 2 // tp),
    )
    vocab = torch.full((128 // tp, 16), PADDING)
    rows = slice(rank * 128 // tp, min(100, (rank + 1) * 128 // tp))
    embed, head = vocab.clone(), vocab.clone()
    embed[: rows.stop - rows.start] = values["model.embed_tokens.weight"][rows]
    head[: rows.stop - rows.start] = values["lm_head.weight"][rows]
    return {
        "model.embed_tokens.weight": embed,
        "lm_head.weight": head,
        "model.norm.weight": values["model.norm.weight"],
        f"{attn}.qkv_proj.weight": torch.cat([q[heads], k[kv], v[kv]]).reshape(-1, 16),
        f"{attn}.o_proj.weight": values[f"{attn}.o_proj.weight"].chunk(tp, dim=1)[rank],
        f"{mlp}.gate_up_proj.weight": torch.cat(
            [
                values[f"{mlp}.gate_proj.weight"].chunk(tp)[rank],
                values[f"{mlp}.up_proj.weight"].chunk(tp)[rank],
            ]
        ),
        f"{mlp}.down_proj.weight": values[f"{mlp}.down_proj.weight"].chunk(tp, dim=1)[rank],
        "model.layers.0.input_layernorm.weight": values["model.layers.0.input_layernorm.weight"],
        "model.layers.0.post_attention_layernorm.weight": values[
            "model.layers.0.post_attention_layernorm.weight"
        ],
    }


def _llama_refit_job(engine_dtype: str = "float32", corrupt: bool = False) -> dict[str, Any]:
    """Refit the Llama into vLLM's layout (in `engine_dtype`), verified; with `corrupt`, a
    second sync whose landed bytes are damaged on engine rank 5."""
    rank = dist.get_rank()
    trainer_mesh, engine_mesh, tp_rank = _meshes()
    generator = torch.Generator().manual_seed(7)
    values = {n: torch.randn(s, generator=generator) for n, s in LLAMA_SHAPES.items()}
    rules = llama_to_vllm(LLAMA)
    trainer_state, engine_params = None, None
    if rank in TRAINER:
        trainer_state = {
            n: distribute_tensor(
                values[n],
                trainer_mesh["dp"] if n.endswith("norm.weight") else trainer_mesh,
                _llama_placements(n),
                src_data_rank=None,
            )
            for n in LLAMA_SHAPES
        }
    if engine_mesh is not None:
        shapes = local_shapes(rules, LLAMA_SHAPES, tp_rank, 2)
        dtype = getattr(torch, engine_dtype)
        engine_params = {n: torch.full(s, PADDING, dtype=dtype) for n, s in shapes.items()}
    refit = Refit(
        rules,
        trainer_state=trainer_state,
        engine_params=engine_params,
        engine_mesh=engine_mesh,
        cluster=CLUSTER,
    )
    refit.sync(verify=True)
    out: dict[str, Any] = {"current": refit.current, "exact": True}
    if engine_params is not None:
        expected = _vllm_expected(values, tp_rank, 2)
        out["exact"] = all(
            torch.equal(engine_params[n], expected[n].to(engine_params[n].dtype)) for n in expected
        )
    wire = {t.itemsize_bytes for t in refit.request.tensors}
    out["wire_itemsize"] = wire.pop() if len(wire) == 1 else wire
    if corrupt:
        if rank == 5:  # one element of one engine tensor damaged after it landed
            run = refit._executor.run

            def damaged(*args: Any, **kwargs: Any) -> Any:
                landed = run(*args, **kwargs)
                landed["model.layers.0.mlp.down_proj.weight"][0][3, 2] += 1
                return landed

            refit._executor.run = damaged  # type: ignore[method-assign]
        try:
            refit.sync(verify=True)
        except RefitMismatchError as err:
            out["error"] = str(err)
        out["current_after"] = refit.current
    refit.close()
    return out


@pytest.mark.slow
def test_a_llama_state_dict_refits_into_vllms_layout(world: LocalWorld) -> None:
    answers = world.run(_llama_refit_job)
    assert all(a["current"] and a["exact"] for a in answers)


@pytest.mark.slow
def test_fp32_weights_refit_into_a_bf16_engine_verified_and_a_damaged_box_is_caught(
    world: LocalWorld,
) -> None:
    answers = world.run(_llama_refit_job, "bfloat16", True)
    members = answers[: len(TRAINER) + sum(map(len, ENGINES))]
    # converted by the senders: bf16 on the wire, each value torch's own rounding of fp32
    assert all(a["current"] and a["exact"] and a["wire_itemsize"] == 2 for a in members)
    for a in members:  # every trainer and engine rank names the same tensor, rank and box
        assert (
            "verify: model.layers.0.mlp.down_proj.weight [[0, 16], [12, 24]] on engine rank 5"
            in a["error"]
        ), a
        assert a["current_after"] is False


@pytest.mark.slow
def test_a_failed_sync_raises_everywhere_and_leaves_the_engine_not_current(
    world: LocalWorld,
) -> None:
    answers = world.run(_refit_job, False, True)
    members = answers[: len(TRAINER) + sum(map(len, ENGINES))]  # ranks in neither move nothing
    assert all("rank 2: source_shards['up']" in a["error"] for a in members), members[0]
    assert all(a["current"] is False and a["syncs"] == 1 for a in members)
