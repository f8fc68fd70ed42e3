"""A rank that stops or dies mid-run: every other rank raises within the timeout, naming it."""

from __future__ import annotations

import os
import signal
from datetime import timedelta
from typing import Any

import pytest

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402

from meshcast.executor import Executor, TransferError  # noqa: E402
from meshcast.executor.local_run import reference_sources  # noqa: E402
from meshcast.executor.local_world import LocalWorld  # noqa: E402
from meshcast.planner import build_problem, parse_request  # noqa: E402
from meshcast.planner.plan import Plan  # noqa: E402
from meshcast.solver import SolveOptions, make_plan  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.slow]

TIMEOUT_S = 6.0
VICTIM = 3
RUNS = 3
#: eight 16 MiB tensors from ranks 0-3 to ranks 4-7, four transfers per rank
REQUEST: dict[str, Any] = {
    "tensors": [
        {
            "name": f"x{i}",
            "shape": [1024, 4096],
            "dtype": "float32",
            "src": {"mesh": "a", "placements": ["S(0)"]},
            "dst": {"mesh": "b", "placements": ["S(1)"]},
        }
        for i in range(8)
    ],
    "meshes": {
        "a": {"shape": [4], "devices": [0, 1, 2, 3]},
        "b": {"shape": [4], "devices": [4, 5, 6, 7]},
    },
    "cluster": {"hosts": [[0, 1], [2, 3], [4, 5], [6, 7]], "nic_gbps": 10},
}


def _faulty_run_job(request_json: dict[str, Any], plan_json: dict[str, Any], how: str) -> Any:
    """Run the plan a few times, as a training job does; the victim stops (SIGSTOP) or dies
    (SIGKILL) as it begins its second transfer. The others return what they raised: a rank with
    no transfer left to wait on the victim meets it in the next run's collective check."""
    request, plan = parse_request(request_json), Plan.from_json(plan_json)
    executor = Executor(
        plan,
        request,
        staging_bytes=1 << 20,
        chunk_bytes=1 << 16,
        timeout=timedelta(seconds=TIMEOUT_S),
    )
    if dist.get_rank() == VICTIM:
        move, calls = executor._move, []

        def stopping(*args: Any) -> None:
            calls.append(1)
            if len(calls) == 2:
                os.kill(os.getpid(), signal.SIGSTOP if how == "stop" else signal.SIGKILL)
            move(*args)

        executor._move = stopping  # type: ignore[method-assign]
    sources = reference_sources(request)
    try:
        for _ in range(RUNS):
            executor.run(sources)
    except TransferError as err:
        return {"error": str(err), "peer": err.peer, "transfer": err.transfer}
    return {"error": None}


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_every_other_rank_names_the_rank_that_stopped_within_the_timeout(how: str) -> None:
    request = parse_request(REQUEST)
    plan = make_plan(build_problem(request), "greedy", SolveOptions())
    world = LocalWorld(8, timeout_s=30)
    answers = world.run_losing({VICTIM}, _faulty_run_job, request.to_json(), plan.to_json(), how)
    assert sorted(answers) == [r for r in range(8) if r != VICTIM]
    for rank, (seconds, answer) in answers.items():
        assert isinstance(answer, dict), (rank, answer)  # a TransferError, not another error
        assert answer["error"] is not None, rank  # never a partial run reported as success
        assert f"rank {VICTIM} silent for" in answer["error"], (rank, answer["error"])
        assert seconds < TIMEOUT_S + 5, (rank, seconds)
    # ranks in a transfer with the victim name it as the peer they waited on
    waiting = [a for _, a in answers.values() if a["peer"] == VICTIM]
    assert waiting and all(f"rank {VICTIM}" in a["error"] for a in waiting)
    assert all("bytes moved" in a["error"] for a in waiting)


def _losing_refit_job() -> Any:
    """A refit whose engine rank `VICTIM + 2` dies during its first sync: the others say
    what failed, and whether the refit still calls the engine current."""
    from torch.distributed.device_mesh import DeviceMesh
    from torch.distributed.tensor import Shard, distribute_tensor

    from meshcast.executor.refit import Refit
    from meshcast.planner.refit_map import Concat

    rank, victim = dist.get_rank(), VICTIM + 2
    trainer = DeviceMesh("cpu", torch.arange(4))
    engines = [DeviceMesh("cpu", torch.tensor(r)) for r in ([4, 5], [6, 7])]
    engine = next((m for m in engines if rank in m.mesh.tolist()), None)
    rules = {f"w{i}": Concat((f"w{i}",), dim=1, shard_dim=1) for i in range(4)}
    state = params = None
    if rank < 4:
        full = torch.zeros(1024, 1024)
        state = {n: distribute_tensor(full, trainer, [Shard(0)], src_data_rank=None) for n in rules}
    elif engine is not None:
        params = {n: torch.zeros(1024, 512) for n in rules}
    refit = Refit(
        rules,
        trainer_state=state,
        engine_params=params,
        engine_mesh=engine,
        cluster={"hosts": [[0, 1, 2, 3], [4, 5], [6, 7]], "nic_gbps": 10},
        timeout=timedelta(seconds=TIMEOUT_S),
    )
    refit.sync()
    if rank == victim:
        move, calls = refit._executor._move, []

        def dying(*args: Any) -> None:
            calls.append(1)
            if len(calls) == 2:
                os.kill(os.getpid(), signal.SIGKILL)
            move(*args)

        refit._executor._move = dying  # type: ignore[method-assign]
    try:
        for _ in range(RUNS):
            refit.sync()
    except TransferError as err:
        return {"error": str(err), "current": refit.current, "syncs": refit.num_syncs}
    return {"error": None, "current": refit.current}


def test_a_refit_that_loses_a_rank_mid_sync_is_not_current_anywhere() -> None:
    world = LocalWorld(8, timeout_s=30)
    answers = world.run_losing({VICTIM + 2}, _losing_refit_job)
    assert sorted(answers) == [r for r in range(8) if r != VICTIM + 2]
    for rank, (seconds, answer) in answers.items():
        assert isinstance(answer, dict), (rank, answer)
        assert answer["error"] is not None and not answer["current"], (rank, answer)
        assert f"rank {VICTIM + 2} silent for" in answer["error"], (rank, answer["error"])
        assert answer["syncs"] == 1, (rank, answer)  # the failed sync did not count
        assert seconds < TIMEOUT_S + 5 + 10, (rank, seconds)  # set-up and the first sync too
