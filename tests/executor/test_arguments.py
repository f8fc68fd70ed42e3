"""What a rank's own check finds wrong in its run arguments (the agreement is tested across
processes in test_execute.py)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from meshcast.executor.arguments import Expected, check_arguments  # noqa: E402

CPU = torch.device("cpu")
SOURCES = {"w": Expected(((4, 6),), torch.bfloat16)}
OUT = {"w": Expected(((2, 6),), torch.bfloat16), "b": Expected(((6,),), torch.float32)}


def _check(sources: dict, out: dict) -> str | None:  # type: ignore[type-arg]
    return check_arguments(sources, out, SOURCES, OUT, CPU)


def test_good_arguments_pass_strided_views_included() -> None:
    fused = torch.empty(6, 4, dtype=torch.bfloat16)  # a fused parameter, transposed
    assert _check({"w": torch.zeros(6, 4, dtype=torch.bfloat16).t()}, {"w": fused.t()[:2]}) is None
    assert _check({"w": torch.zeros(4, 6, dtype=torch.bfloat16)}, {}) is None  # out is optional


@pytest.mark.parametrize(
    ("sources", "out", "expected"),
    [
        # a missing source shard
        ({}, {}, "source_shards: this rank holds a shard of 'w', none given"),
        # a source shard of a tensor this rank holds none of
        (
            {"w": torch.zeros(4, 6, dtype=torch.bfloat16), "x": torch.zeros(1)},
            {},
            "source_shards['x']",
        ),
        # the wrong shape
        (
            {"w": torch.zeros(4, 5, dtype=torch.bfloat16)},
            {},
            "expected (4, 6) bfloat16 on cpu, got (4, 5)",
        ),
        # the wrong dtype
        ({"w": torch.zeros(4, 6)}, {}, "got (4, 6) float32 on cpu"),
        # not a tensor
        ({"w": [[0.0] * 6] * 4}, {}, "source_shards['w']: expected a torch.Tensor, got list"),
        # an out this rank does not receive
        (
            {"w": torch.zeros(4, 6, dtype=torch.bfloat16)},
            {"z": torch.zeros(1)},
            "out['z']: this rank",
        ),
        # an out whose elements overlap: the bytes could not all land
        (
            {"w": torch.zeros(4, 6, dtype=torch.bfloat16)},
            {"b": torch.zeros(1).expand(6)},
            "out['b']: its elements overlap",
        ),
    ],
)
def test_bad_arguments_are_named(sources: dict, out: dict, expected: str) -> None:  # type: ignore[type-arg]
    problem = _check(sources, out)
    assert problem is not None and expected in problem, problem


def test_an_out_sharing_memory_with_a_source_is_refused() -> None:
    buffer = torch.zeros(6, 6, dtype=torch.bfloat16)
    problem = _check({"w": buffer[:4]}, {"w": buffer[3:5]})
    assert problem == "out['w']: shares memory with source_shards['w']"
    assert _check({"w": buffer[:4]}, {"w": buffer[4:6]}) is None  # adjacent rows do not overlap


BLOCKS = {"qkv": Expected(((2, 4), (1, 4)), torch.float32, listed=True)}


@pytest.mark.parametrize(
    ("sources", "expected"),
    [
        (
            {"qkv": torch.zeros(3, 4)},
            "source_shards['qkv']: expected a list of 2 tensors (one per block), got Tensor",
        ),
        (
            {"qkv": [torch.zeros(2, 4)]},
            "source_shards['qkv']: expected a list of 2 tensors (one per block), got 1 items",
        ),
        (
            {"qkv": [torch.zeros(2, 4), torch.zeros(2, 4)]},
            "source_shards['qkv'][1]: expected (1, 4) float32 on cpu, got (2, 4) float32 on cpu",
        ),
    ],
)
def test_block_layouts_take_one_tensor_per_block(sources: dict, expected: str) -> None:  # type: ignore[type-arg]
    assert check_arguments(sources, {}, BLOCKS, {}, CPU) == expected
    good = [torch.zeros(2, 4), torch.zeros(1, 4)]
    assert check_arguments({"qkv": good}, {}, BLOCKS, {}, CPU) is None
    out = {"qkv": [torch.zeros(2, 4), good[1]]}
    assert check_arguments({"qkv": good}, out, BLOCKS, BLOCKS, CPU) == (
        "out['qkv'][1]: shares memory with source_shards['qkv'][1]"
    )
