"""The worked fused-QKV refit (`examples/fused_qkv_refit.py`) on the shared local world: both
directions bit-exact against torch's own slicing, at the lower bound."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from examples.fused_qkv_refit import refit
from meshcast.executor.local_world import LocalWorld
from meshcast.planner.fused import Attention

pytestmark = pytest.mark.torch


@pytest.mark.parametrize("algorithm", ["auto", "greedy"])
def test_megatron_to_vllm_and_back_are_exact(world: LocalWorld, algorithm: str) -> None:
    rows = refit(Attention(16, 4, head_dim=32, hidden=128), algorithm, world)
    assert [r["verified"] for r in rows] == [True, True]
    assert all(r["ratio"] <= 1.0 + 1e-9 for r in rows), rows
