"""The whole-model refit example (`examples/refit_hf.py`) on real transformers models under
FSDP2 + TP: both models, both presets, and held-out configurations, bit-exact with logits that
follow the trainer across an optimizer step."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from examples.refit_hf import Options, refit
from meshcast.executor.local_world import LocalWorld

pytestmark = [pytest.mark.torch, pytest.mark.slow]

CASES: dict[str, dict[str, Any]] = {
    "llama-vllm": {},
    "llama-identity": {"preset": "identity"},
    "moe-vllm-ep2": {"model": "qwen3-moe", "engine_ep": 2},
    "moe-identity": {"model": "qwen3-moe", "preset": "identity"},
    # held out: 8 heads over engine TP 4 with 2 key/value heads (replicated twice), a
    # vocabulary vLLM pads from 203 to 256, one engine of 4
    "llama-tp4-gqa": {
        "heads": 8,
        "kv_heads": 2,
        "vocab": 203,
        "intermediate": 96,
        "engines": 1,
        "engine_tp": 4,
    },
    # held out: 5 experts over 2 expert-parallel groups of expert-TP 2 (3 and 2 experts),
    # no GQA, vocab 130
    "moe-5-experts-ep2-tp4": {
        "model": "qwen3-moe",
        "experts": 5,
        "heads": 4,
        "kv_heads": 4,
        "vocab": 130,
        "engines": 1,
        "engine_tp": 4,
        "engine_ep": 2,
    },
    # held out: an FSDP-only trainer (dp 4), one key/value head, vocab 77, three layers
    "llama-dp4-mqa": {
        "trainer_dp": 4,
        "trainer_tp": 1,
        "heads": 2,
        "kv_heads": 1,
        "vocab": 77,
        "layers": 3,
        "hidden": 32,
    },
}


@pytest.mark.parametrize("case", CASES)
def test_the_engines_hold_the_trainers_weights_and_follow_its_logits(
    world: LocalWorld, case: str
) -> None:
    result = refit(Options(**CASES[case]), world)
    assert result["bit_exact"], result
    assert result["logits_ok"], result
    assert result["syncs"] == 2 and result["current"] and result["same_objects"], result
