"""The pipeline benchmark's pieces, small: compute and transfer times measured on the ranks,
every schedule run on meshcast's stages and torch's own `PipelineStage` with the measured delays,
and the simulator's prediction built from the measured times."""

from __future__ import annotations

from dataclasses import asdict

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from benchmarks.pipeline_run import (
    SCHEDULES,
    _predict,
    measure_compute,
    measure_transfers,
    run_schedules,
)
from examples.pipeline_hf import Options
from meshcast.executor.local_world import LocalWorld

pytestmark = [pytest.mark.torch, pytest.mark.slow]

SMALL = Options(
    stage_tp=(2, 1, 1),
    layers=3,
    hidden=32,
    heads=2,
    kv_heads=2,
    intermediate=64,
    vocab=64,
    batch=6,
    sequence=8,
    microbatches=3,
)


def test_measured_times_drive_the_delay_mode_and_the_prediction() -> None:
    with LocalWorld(SMALL.world_size, timeout_s=120) as world:
        compute = world.run(measure_compute, asdict(SMALL), 2)[0]
        transfers = world.run(measure_transfers, asdict(SMALL), 2)[0]
        assert len(compute["forward_s"]) == len(compute["backward_s"]) == 3
        assert all(t > 0 for t in compute["forward_s"] + compute["backward_s"])
        assert len(transfers["activation_s"]) == len(transfers["gradient_s"]) == 2
        assert all(t > 0 for t in transfers["activation_s"] + transfers["gradient_s"])
        delays = {"forward_s": [0.02, 0.01, 0.01], "backward_s": [0.04, 0.02, 0.02]}
        answers = world.run(run_schedules, asdict(SMALL), list(SCHEDULES), 2, delays, False)
    predicted = _predict(delays, transfers, SMALL)
    for name in SCHEDULES:
        times = [max(r) for r in zip(*(a[name]["times"] for a in answers), strict=True)]
        assert len(times) == 2
        # a delayed iteration cannot beat its compute: stage 0's ops alone take 3 x 60 ms
        assert min(times) >= 3 * (0.02 + 0.04)
        assert predicted[name]["iteration_s"] >= 3 * (0.02 + 0.04)
    assert predicted["eager-1f1b"]["peak_inflight"] == [3, 3, 1]
    assert predicted["1f1b"]["peak_inflight"] == [3, 2, 1]


def test_torchs_own_stages_run_on_equal_meshes_in_both_modes() -> None:
    equal = Options(**{**asdict(SMALL), "stage_tp": (1, 1, 1)})
    equal = Options.from_json(asdict(equal))
    delays = {"forward_s": [0.005] * 3, "backward_s": [0.01] * 3}
    with LocalWorld(equal.world_size, timeout_s=120) as world:
        delayed = world.run(run_schedules, asdict(equal), ["1f1b"], 1, delays, True)
        real = world.run(run_schedules, asdict(equal), ["1f1b"], 1, None, True)
    for answers in (delayed, real):
        assert all(len(a["1f1b"]["times"]) == 1 for a in answers)
