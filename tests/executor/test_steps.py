"""The per-rank bookkeeping of the executor, without processes: routes, packing, references."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from executor.packing import pack, unpack  # noqa: E402
from executor.reference import reference_box, same_bytes  # noqa: E402
from executor.steps import broadcast_groups, forwarding, rank_steps  # noqa: E402
from planner import build_problem, parse_request  # noqa: E402
from planner.plan import Piece, Plan, Transfer  # noqa: E402
from planner.synthetic import scaled_request  # noqa: E402
from tests.conftest import load_case  # noqa: E402

REQUEST = {
    "tensors": [
        {
            "name": "x",
            "shape": [8, 8],
            "dtype": "float32",
            "src": {"mesh": "a", "placements": ["R"]},
            "dst": {"mesh": "b", "placements": ["R"]},
        }
    ],
    "meshes": {
        "a": {"shape": [2], "devices": [0, 1]},
        "b": {"shape": [6], "devices": [2, 3, 4, 5, 6, 7]},
    },
    "cluster": {
        "hosts": [[0, 1, 2], [3, 4], [5, 6, 7]],
        "nic_gbps": 10,
        "nics_per_host": 1,
        "intra_gbps": 100,
        "latency_us": 1,
    },
}
WHOLE = (Piece(0, ((0, 8), (0, 8))),)


def test_forwarding_follows_the_port_v1_route() -> None:
    problem = build_problem(parse_request(REQUEST))
    # dst order: host 2 first, then host 1, and device 2 shares the sender's host
    links = forwarding(problem, Transfer(src=0, dst=(6, 5, 2, 3, 7, 4), pieces=WHOLE))
    assert links[0] == (None, [6, 2])  # host 2's entry, and the hop inside the sender's host
    assert links[6] == (0, [3, 5])  # the next host's entry, and its own host's chain
    assert links[5] == (6, [7])  # the chain inside host 2 in dst order
    assert links[3] == (6, [4])
    assert links[2] == (0, []) and links[7] == (5, []) and links[4] == (3, [])


def test_every_receiver_has_exactly_one_parent_on_a_tree() -> None:
    problem = build_problem(parse_request(REQUEST))
    links = forwarding(problem, Transfer(src=1, dst=(3, 4, 2, 5, 6, 7), pieces=WHOLE))
    children = [c for _, kids in links.values() for c in kids]
    assert sorted(children) == [2, 3, 4, 5, 6, 7]
    for device, (parent, _) in links.items():
        if parent is not None:
            assert device in links[parent][1]


def test_rank_steps_and_groups() -> None:
    problem = build_problem(parse_request(REQUEST))
    plan = Plan(
        "",
        "test",
        (
            Transfer(0, (3, 5), WHOLE),
            Transfer(1, (2,), WHOLE),
            Transfer(3, (4, 6, 7), WHOLE),
            Transfer(0, (5, 3), WHOLE),
        ),
    )
    steps = rank_steps(problem, plan, 3)
    assert [s.index for s in steps] == [0, 2, 3]
    assert steps[1].is_sender and steps[1].num_bytes == 256
    assert steps[0].participants == (0, 3, 5)
    assert rank_steps(problem, plan, 1)[0].children == (2,)
    # single-receiver transfers need no group; equal member sets share one, sorted
    assert broadcast_groups(plan) == [(0, 3, 5), (3, 4, 6, 7)]


def test_unpack_restores_mixed_dtypes_at_odd_offsets() -> None:
    parts = [
        torch.tensor([[True, False, True]]),
        torch.arange(6, dtype=torch.float64).reshape(2, 3),
        torch.tensor([7], dtype=torch.int8),
        torch.arange(4, dtype=torch.bfloat16),
    ]
    buffer = pack(parts)
    assert buffer.numel() == 3 + 48 + 1 + 8
    layout = [(tuple((0, n) for n in p.shape), p.dtype) for p in parts]
    for got, want in zip(unpack(buffer, layout), parts, strict=True):
        assert same_bytes(got, want)
    with pytest.raises(ValueError, match="buffer holds 60 bytes, layout needs 12"):
        unpack(buffer, [layout[0], layout[2], layout[3]])


def test_reference_boxes_agree_with_slices_of_the_whole_tensor() -> None:
    whole = reference_box("w", (6, 5, 4), "float16", ((0, 6), (0, 5), (0, 4)))
    part = reference_box("w", (6, 5, 4), "float16", ((2, 5), (1, 5), (3, 4)))
    assert same_bytes(part, whole[2:5, 1:5, 3:4])
    assert not same_bytes(part, whole[1:4, 1:5, 3:4])
    other = reference_box("v", (6, 5, 4), "float16", ((2, 5), (1, 5), (3, 4)))
    assert not same_bytes(part, other)  # each tensor has its own data
    flipped = part.clone()
    flipped.view(-1).view(torch.uint8)[7] ^= 0x10
    assert not same_bytes(part, flipped)


def test_scaled_request_keeps_layouts_and_fits_the_budget() -> None:
    case = load_case("paper-n2m-case6")
    scaled = scaled_request(case, 64 << 20)
    assert scaled["meshes"] == case["meshes"] and scaled["cluster"] == case["cluster"]
    assert [t["src"] for t in scaled["tensors"]] == [t["src"] for t in case["tensors"]]
    num_bytes = build_problem(parse_request(scaled)).tiles.num_bytes.sum()
    assert 32 << 20 < num_bytes <= 64 << 20
    with pytest.raises(ValueError, match="max_bytes"):
        scaled_request(case, 0)


def test_reference_boxes_computed_in_slabs_are_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    import executor.reference

    box = ((1, 9), (0, 11), (2, 7))
    whole = reference_box("s", (9, 11, 7), "int32", box)
    monkeypatch.setattr(executor.reference, "SLAB_ELEMENTS", 50)
    assert same_bytes(reference_box("s", (9, 11, 7), "int32", box), whole)
