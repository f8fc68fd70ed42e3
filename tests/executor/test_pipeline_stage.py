"""Pipeline stages on meshes of their own inside `torch.distributed.pipelining`: a transformers
Llama in stages of different TP degrees matches one process under torch's GPipe and 1F1B and
meshcast's eager-1F1B; neighbours that disagree, and a stage that fails mid-step, are errors on
every rank; the torch internals the stage overrides are still there."""

from __future__ import annotations

import inspect
import time
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.pipelining import PipelineStage, Schedule1F1B, schedules, stage
from torch.distributed.tensor import Replicate, Shard

from examples.pipeline_hf import Options, run
from meshcast.executor.local_world import LocalWorld
from meshcast.executor.pipeline_schedules import ScheduleEager1F1B
from meshcast.executor.pipeline_stage import (
    TORCH_VERSIONS,
    MeshStage,
    StageTensor,
    check_torch_version,
)

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def world8() -> Iterator[LocalWorld]:
    with LocalWorld(8, timeout_s=120) as world:
        yield world


@pytest.mark.slow
def test_llama_on_stages_of_tp_4_2_2_matches_one_process_under_every_schedule(
    world8: LocalWorld,
) -> None:
    result = run(Options(stage_tp=(4, 2, 2)), world8)
    assert result["ok"], result
    assert result["schedules_identical"], result
    assert 0 <= result["grad_max_rel_err"] <= 1e-4 and result["loss_abs_err"] <= 1e-5, result
    for losses in result["losses"].values():
        assert losses[1] < losses[0]  # it trains: the SGD step lowered the loss


@pytest.mark.slow
def test_held_out_four_stages_with_sequence_sharded_boundaries(world8: LocalWorld) -> None:
    # held out: 4 stages of TP 2, 4, 1, 1; the hidden state crosses boundaries sharded along
    # the sequence (each stage all-gathers it), 8 heads over 4 key/value heads, 5 layers
    opts = Options(
        stage_tp=(2, 4, 1, 1), layers=5, heads=8, kv_heads=4, boundary="S(1)", sequence=12
    )
    result = run(opts, world8)
    assert result["ok"] and result["schedules_identical"], result


def test_options_that_cannot_work_name_the_flag() -> None:
    with pytest.raises(ValueError, match="--heads 6: not divisible by stage TP degree 4"):
        Options(heads=6, kv_heads=6).check()
    with pytest.raises(ValueError, match="--microbatches 2: at least the 3 stages"):
        Options(microbatches=2).check()


def _two_meshes() -> list[DeviceMesh]:
    """Ranks 0-1 and 2-3 (a collective: every rank makes every mesh, in the same order)."""
    return [DeviceMesh("cpu", torch.tensor(ranks)) for ranks in ([0, 1], [2, 3])]


def _mismatched_neighbours() -> str:
    rank = dist.get_rank()
    stage_index = 0 if rank < 2 else 1
    mesh = _two_meshes()[stage_index]
    shape = (4, 8) if stage_index == 0 else (4, 9)
    layout = StageTensor(shape, torch.float32, (Replicate(),))
    try:
        MeshStage(
            torch.nn.Identity(),
            stage_index,
            2,
            mesh,
            inputs=[layout] if stage_index else [],
            outputs=[] if stage_index else [layout],
        )
    except ValueError as err:
        return str(err)
    return "no error"


def test_neighbours_that_disagree_are_an_error_on_every_rank() -> None:
    with LocalWorld(4, timeout_s=60) as world:
        messages = world.run(_mismatched_neighbours)
    assert set(messages) == {
        "stage 0 output 0 is (4, 8) float32, stage 1 input 0 expects (4, 9) float32"
    }


_planned: list[str] = []


def _counting_planner(request: Any) -> Any:
    from meshcast.solver import plan_request

    _planned.append(request.request_id)
    return plan_request(request)


def _two_stages_built_twice() -> int:
    rank = dist.get_rank()
    stage_index = 0 if rank < 2 else 1
    mesh = _two_meshes()[stage_index]
    layout = StageTensor((4, 6), torch.float32, (Shard(1),))
    for _ in range(2):  # a rebuilt stage (another schedule, a restart) plans nothing again
        pipe = MeshStage(
            torch.nn.Identity(),
            stage_index,
            2,
            mesh,
            inputs=[layout] if stage_index else [],
            outputs=[] if stage_index else [layout],
            plan_with=_counting_planner,
        )
        pipe.close()
    return len(_planned)


def test_each_boundary_is_planned_once_per_shape_and_cached() -> None:
    with LocalWorld(4, timeout_s=60) as world:
        counts = world.run(_two_stages_built_twice)
    assert counts == [2, 0, 0, 0]  # rank 0 planned the activations and the gradients, once


class _Linear(torch.nn.Module):
    """A replicated linear layer on a stage's mesh; raises in the forward of micro-batch
    `fail_at` (counted per step) when set."""

    def __init__(self, mesh: DeviceMesh, fail_at: int | None = None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.weight = torch.nn.Parameter(torch.randn(8, 8) / 8)
        self.mesh, self.fail_at, self.calls = mesh, fail_at, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from torch.distributed.tensor import DTensor

        if self.fail_at is not None and self.calls == self.fail_at:
            raise RuntimeError("this stage's forward failed")
        self.calls += 1
        h = x.to_local() if isinstance(x, DTensor) else x
        return DTensor.from_local(torch.tanh(h @ self.weight), self.mesh, [Replicate()])


def _failing_middle_stage(timeout_s: float) -> tuple[str, float]:
    from datetime import timedelta

    rank = dist.get_rank()
    stage_index = [0, 0, 1, 1, 2][rank]
    meshes = [DeviceMesh("cpu", torch.tensor(r)) for r in ([0, 1], [2, 3], [4])]
    layout = StageTensor((2, 8), torch.float32, (Replicate(),))
    module = _Linear(meshes[stage_index], fail_at=1 if stage_index == 1 else None)
    pipe = MeshStage(
        module,
        stage_index,
        3,
        meshes[stage_index],
        inputs=[layout] if stage_index else [],
        outputs=[layout] if stage_index < 2 else [],
        timeout=timedelta(seconds=timeout_s),
    )
    schedule = ScheduleEager1F1B(pipe, 4, loss_fn=lambda y, t: ((y.to_local() - t) ** 2).mean())
    began = time.monotonic()
    try:
        if stage_index == 0:
            schedule.step(torch.randn(8, 8))
        elif stage_index == 2:
            schedule.step(target=torch.zeros(8, 8), losses=[])
        else:
            schedule.step()
    except Exception as err:
        return f"{type(err).__name__}: {err} (from {err.__cause__})", time.monotonic() - began
    return "no error", time.monotonic() - began


def test_a_stage_that_fails_mid_step_stops_every_rank_at_once_naming_it() -> None:
    timeout_s = 60.0
    with LocalWorld(5, timeout_s=120) as world:
        answers = world.run(_failing_middle_stage, timeout_s)
    for rank, (message, took) in enumerate(answers):
        assert took < 20, (rank, message, took)  # told, not timed out
        if rank in (2, 3):
            assert "this stage's forward failed" in message, message
        else:  # a neighbour, or its neighbour in turn: the error names the failed stage
            assert message.startswith("ValueError"), message
            assert "stage 1 stopped (the forward of micro-batch 1" in message, message


def _native_and_eager(name: str) -> list[list[float]]:
    """torch's own `PipelineStage` (one rank per stage) under `name`: its gradients."""
    rank = dist.get_rank()
    torch.manual_seed(rank)
    module = torch.nn.Linear(8, 8)
    example = (torch.zeros(2, 8),)
    pipe = PipelineStage(
        module,
        rank,
        2,
        torch.device("cpu"),
        input_args=example,
        output_args=example if rank == 0 else None,
    )
    schedule_class = ScheduleEager1F1B if name == "eager-1f1b" else Schedule1F1B
    schedule = schedule_class(pipe, 4, loss_fn=lambda y, t: ((y - t) ** 2).mean())
    x = torch.randn(8, 8, generator=torch.Generator().manual_seed(5))
    if rank == 0:
        schedule.step(x)
    else:
        schedule.step(target=torch.zeros(8, 8), losses=[])
    assert module.weight.grad is not None
    return module.weight.grad.tolist()


def test_eager_1f1b_runs_torchs_own_stages_and_matches_its_1f1b() -> None:
    with LocalWorld(2, timeout_s=60) as world:
        assert world.run(_native_and_eager, "eager-1f1b") == world.run(_native_and_eager, "1f1b")


def test_the_torch_version_is_checked() -> None:
    low, high = TORCH_VERSIONS
    check_torch_version(f"{low[0]}.{low[1]}.0+cpu")
    check_torch_version(torch.__version__)  # the installed one is in the range
    with pytest.raises(RuntimeError, match=r"written against torch 2\.13-2\.13"):
        check_torch_version(f"{high[0]}.{high[1] + 1}.0")


def test_the_torch_internals_the_stage_overrides_are_still_there() -> None:
    """What `MeshStage` and `ScheduleEager1F1B` override or call, with the signatures they
    were written against: a torch upgrade that moves them fails here, not mid-training."""
    base = stage._PipelineStageBase
    wanted: dict[Any, dict[str, list[str]]] = {
        base: {
            "_prepare_forward_infra": ["num_microbatches", "args", "kwargs", "has_backward"],
            "_prepare_backward_infra": [
                "num_microbatches",
                "loss_fn",
                "target",
                "received_grad_meta",
                "loss_kwargs",
            ],
            "_create_grad_recv_info": ["act_send_info"],
            "_get_init_p2p_neighbors_ops": [],
            "get_fwd_recv_ops": ["fwd_chunk_id"],
            "get_bwd_recv_ops": ["bwd_chunk_id"],
            "get_fwd_send_ops": ["fwd_chunk_id"],
            "get_bwd_send_ops": ["bwd_chunk_id"],
            "_retrieve_recv_activations": ["fwd_chunk_id"],
            "_retrieve_recv_grads": ["bwd_chunk_id"],
            "forward_one_chunk": ["fwd_chunk_id", "args", "kwargs", "save_forward_output"],
            "backward_one_chunk": ["bwd_chunk_id", "loss", "full_backward", "last_backward"],
            "perform_reduce_grad": ["grad_scale_factor"],
            "clear_runtime_states": [],
        },
        schedules.PipelineScheduleSingle: {
            "_step_microbatches": [
                "arg_mbs",
                "kwarg_mbs",
                "target_mbs",
                "losses",
                "return_outputs",
                "loss_kwargs",
            ],
            "_initialize_stage": ["args", "kwargs", "target", "loss_kwargs"],
            "_check_inputs": ["arg_mbs", "kwarg_mbs", "target_mbs", "losses"],
            "_maybe_compute_loss": ["stage", "output", "target_mbs", "mb_index", "loss_kwargs"],
            "_maybe_get_loss": ["stage", "mb_index"],
            "_update_losses": ["stages", "losses"],
        },
    }
    for owner, methods in wanted.items():
        for method, parameters in methods.items():
            signature = inspect.signature(getattr(owner, method))
            assert list(signature.parameters)[1:] == parameters, (owner, method)
    assert list(inspect.signature(schedules._batch_p2p).parameters) == ["p2p_ops", "desc"]
    assert list(inspect.signature(schedules._wait_batch_p2p).parameters) == ["work"]
