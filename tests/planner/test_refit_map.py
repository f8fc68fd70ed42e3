"""Refit mappings: engine parameters made of trainer tensors, checked against plain numpy."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from meshcast.planner import build_problem, parse_request
from meshcast.planner.refit_map import (
    Concat,
    LocalParam,
    Part,
    Rule,
    check_engine_shapes,
    local_shapes,
    refit_blocks,
)
from meshcast.planner.simulate import simulate
from meshcast.solver import SolveOptions, make_plan

#: a small MLP block and its norm, as a trainer names them
SHAPES = {
    "gate": (8, 6),
    "up": (8, 6),
    "down": (6, 8),
    "norm": (6,),
}
#: the engine's fused layout of it: vLLM-style gate_up (column parallel), down (row parallel),
#: a replicated norm
RULES: dict[str, Rule] = {
    "gate_up": Concat(("gate", "up"), dim=0, shard_dim=0),
    "down": Concat(("down",), dim=1, shard_dim=1),
    "norm": Concat(("norm",), dim=0, shard_dim=None),
}


def _trainer_values() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {name: rng.standard_normal(shape) for name, shape in SHAPES.items()}


def _assembled(local: LocalParam, values: dict[str, np.ndarray]) -> np.ndarray:
    """The local tensor the mapping describes, built from its parts."""
    pieces = [values[p.tensor][tuple(slice(lo, hi) for lo, hi in p.box)] for p in local.parts]
    return np.concatenate(pieces, axis=local.dim)


@pytest.mark.parametrize("tp", [1, 2])
def test_local_parameters_equal_plain_numpy_slicing(tp: int) -> None:
    values = _trainer_values()
    for rank in range(tp):
        gate_up = _assembled(RULES["gate_up"].local(SHAPES, rank, tp), values)
        rows = 8 // tp
        expected = np.concatenate(
            [
                values["gate"][rank * rows : (rank + 1) * rows],
                values["up"][rank * rows : (rank + 1) * rows],
            ]
        )
        assert np.array_equal(gate_up, expected)
        down = _assembled(RULES["down"].local(SHAPES, rank, tp), values)
        assert np.array_equal(down, np.split(values["down"], tp, axis=1)[rank])
        assert np.array_equal(
            _assembled(RULES["norm"].local(SHAPES, rank, tp), values), values["norm"]
        )
        assert local_shapes(RULES, SHAPES, rank, tp) == {
            "gate_up": (16 // tp, 6),
            "down": (6, 8 // tp),
            "norm": (6,),
        }


def test_views_say_where_each_trainer_box_lands() -> None:
    local = RULES["gate_up"].local(SHAPES, 1, 2)
    assert local.views() == {
        "gate": [(0, 4, ((4, 8), (0, 6)))],
        "up": [(4, 4, ((4, 8), (0, 6)))],
    }
    values = _trainer_values()
    assembled = _assembled(local, values)
    for name, places in local.views().items():
        for offset, length, box in places:
            view = assembled[offset : offset + length]
            assert np.array_equal(view, values[name][tuple(slice(lo, hi) for lo, hi in box)])


def _refit_request(tp: int, engines: int) -> dict[str, Any]:
    """The trainer's tensors on 2 devices (rows sharded), into `engines` engines of `tp`."""
    blocks = refit_blocks(RULES, SHAPES, tp, engines)
    engine_devices = list(range(2, 2 + tp * engines))
    return {
        "tensors": [
            {
                "name": name,
                "shape": list(shape),
                "dtype": "float32",
                "src": {"mesh": "trainer", "placements": ["S(0)"]},
                "dst": {
                    "mesh": "engines",
                    "blocks": [
                        [[list(iv) for iv in box] for box in boxes] for boxes in blocks[name]
                    ],
                },
            }
            for name, shape in SHAPES.items()
        ],
        "meshes": {
            "trainer": {"shape": [2], "devices": [0, 1]},
            "engines": {"shape": [engines, tp], "devices": engine_devices},
        },
        "cluster": {
            "hosts": [
                [0, 1],
                *([d for d in engine_devices[e * tp : (e + 1) * tp]] for e in range(engines)),
            ],
            "nic_gbps": 100,
            "intra_gbps": 800,
        },
    }


@pytest.mark.parametrize(("tp", "engines"), [(1, 1), (2, 1), (2, 2)])
def test_the_blocks_make_a_request_whose_plan_delivers_every_local_part(
    tp: int, engines: int
) -> None:
    request = parse_request(_refit_request(tp, engines))
    problem = build_problem(request)
    plan = make_plan(problem, "greedy", SolveOptions())
    assert simulate(problem, plan.transfers).valid
    # each engine device's destination boxes of each tensor are its local parts, in order
    for index, spec in enumerate(request.tensors):
        for position, device in enumerate(request.meshes["engines"].devices):
            rank = position % tp
            parts = [
                p.box
                for rule in RULES.values()
                for p in rule.local(SHAPES, rank, tp).parts
                if p.tensor == spec.name
            ]
            assert problem.holding_of(index, "dst", device).boxes == tuple(parts)


def test_a_mapping_that_does_not_fit_names_the_tensor() -> None:
    with pytest.raises(ValueError, match=r"gate_up: source 'gate' is not in the trainer's"):
        refit_blocks(RULES, {k: v for k, v in SHAPES.items() if k != "gate"}, 2)
    with pytest.raises(ValueError, match=r"^extra: a trainer tensor no engine parameter"):
        refit_blocks(RULES, {**SHAPES, "extra": (3,)}, 2)
    with pytest.raises(ValueError, match=r"^gate: dim 0 of \[8, 6\] does not split evenly over 3"):
        refit_blocks(RULES, SHAPES, 3)
    with pytest.raises(ValueError, match=r"^norm: shard_dim 1 is not a dim of \[6\]"):
        refit_blocks({**RULES, "norm": Concat(("norm",), shard_dim=1)}, SHAPES, 2)
    crooked = {"fused": Concat(("gate", "down"), dim=0, shard_dim=None)}
    with pytest.raises(ValueError, match=r"fused: part 'down' \[6, 8\] does not fit beside 'gate'"):
        refit_blocks({**RULES, **crooked}, SHAPES, 1)
    with pytest.raises(ValueError, match=r"down: the mapping makes \[6, 4\] on engine rank 1"):
        check_engine_shapes(RULES, SHAPES, {"gate_up": (8, 6), "down": (6, 5), "norm": (6,)}, 1, 2)
    with pytest.raises(ValueError, match=r"^bias: an engine parameter no rule makes"):
        check_engine_shapes(RULES, SHAPES, {"bias": (3,)}, 0, 1)
    with pytest.raises(ValueError, match=r"^norm: the engine has no such parameter on rank 0"):
        check_engine_shapes(RULES, SHAPES, {"gate_up": (16, 6), "down": (6, 8)}, 0, 1)
    with pytest.raises(ValueError, match=r"has no parts"):
        LocalParam((), 0).shape("empty")
    assert LocalParam((Part("a", ((0, 2),)),), 0).shape() == (2,)
