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
from meshcast.planner.refit_map import Concat, Rule, local_shapes  # noqa: E402

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


def _refit_job(corrupt_engine_shape: bool = False) -> dict[str, Any]:
    rank = dist.get_rank()
    trainer_mesh = DeviceMesh(
        "cpu", torch.tensor(TRAINER).reshape(2, 2), mesh_dim_names=("dp", "tp")
    )
    engine_meshes = [DeviceMesh("cpu", torch.tensor(e)) for e in ENGINES]
    values = _values(0)
    trainer_state = None
    engine_params, engine_mesh, tp_rank = None, None, 0
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
    for engine, mesh in zip(ENGINES, engine_meshes, strict=True):
        if rank in engine:
            engine_mesh, tp_rank = mesh, engine.index(rank)
            shapes = local_shapes(RULES, SHAPES, tp_rank, len(engine))
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
        refit.sync()
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
