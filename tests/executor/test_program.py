"""The per-rank bookkeeping of the executor, without processes: programs, relays, references."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")

from meshcast.executor.program import (  # noqa: E402
    DESTINATION,
    RELAY,
    LocalCopy,
    Segment,
    numbered,
    rank_program,
)
from meshcast.executor.reference import reference_box, same_bytes  # noqa: E402
from meshcast.planner import build_problem, parse_request  # noqa: E402
from meshcast.planner.compact import member_sets  # noqa: E402
from meshcast.planner.plan import Piece, Plan, Transfer  # noqa: E402
from meshcast.planner.synthetic import scaled_request  # noqa: E402
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


def test_rank_programs_follow_the_plan_order_and_the_route() -> None:
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
    steps = rank_program(problem, numbered(plan), 3, 64).steps
    assert [s.index for s in steps] == [0, 2, 3]
    assert steps[1].is_sender and steps[1].message.num_bytes == 256
    assert steps[1].message.num_chunks == 4
    assert steps[0].participants == (0, 3, 5)
    assert steps[0].parent == 0 and steps[0].children == (5,)  # host 1's entry, then host 2
    assert rank_program(problem, numbered(plan), 1, 64).steps[0].children == (2,)
    # single-receiver transfers need no group; equal member sets share one, sorted
    assert member_sets(plan.transfers) == [(0, 3, 5), (3, 4, 6, 7)]


SPLIT = {
    # host 1 holds the tensor on devices 0 and 1; host 2's devices 2 and 3 need its halves
    "tensors": [
        {
            "name": "w",
            "shape": [4, 6],
            "dtype": "bfloat16",
            "src": {"mesh": "a", "placements": ["R"]},
            "dst": {"mesh": "b", "placements": ["S(0)"]},
        }
    ],
    "meshes": {"a": {"shape": [2], "devices": [0, 1]}, "b": {"shape": [2], "devices": [2, 3]}},
    "cluster": {"hosts": [[0, 1], [2, 3]], "nic_gbps": 10, "latency_us": 1},
}
TOP, BOTTOM = Piece(0, ((0, 2), (0, 6))), Piece(0, ((2, 4), (0, 6)))


def test_a_relay_keeps_only_what_it_sends_on_and_only_until_then() -> None:
    problem = build_problem(parse_request(SPLIT))
    plan = Plan(
        "",
        "test",
        (
            Transfer(0, (2,), (TOP, BOTTOM)),  # device 2 needs TOP, relays BOTTOM to 3
            Transfer(1, (3,), (TOP,)),  # unrelated: 3 receives the piece it does not need
            Transfer(2, (3,), (BOTTOM,)),
        ),
    )
    relay = rank_program(problem, numbered(plan), 2, 16)
    first, last = relay.steps
    assert first.segments == (
        (Segment(TOP.box, DESTINATION, 0),),
        (Segment(BOTTOM.box, RELAY, 0),),
    )
    assert first.allocate == (0,) and first.release == ()
    assert last.allocate == () and last.release == (0,)
    assert last.segments == ((Segment(BOTTOM.box, RELAY, 0),),)
    assert relay.peak_relay_bytes == 2 * 6 * 2
    leaf = rank_program(problem, numbered(plan), 3, 16)
    # a piece nobody sends on is not kept: it has no segment at all
    assert leaf.steps[0].segments == ((),) and leaf.relays == {}
    assert leaf.steps[1].segments == ((Segment(BOTTOM.box, DESTINATION, 0),),)


def test_a_sender_reads_what_it_received_from_its_destination_tensors() -> None:
    request = copy.deepcopy(SPLIT)
    request["tensors"][0]["dst"]["placements"] = ["R"]  # both need the whole tensor
    problem = build_problem(parse_request(request))
    plan = Plan(
        "",
        "test",
        (
            Transfer(0, (2,), (TOP,)),
            Transfer(1, (3,), (BOTTOM,)),
            Transfer(2, (3,), (TOP,)),  # the intra-host all-gather
            Transfer(3, (2,), (BOTTOM,)),
        ),
    )
    program = rank_program(problem, numbered(plan), 2, 16)
    assert program.steps[1].segments == ((Segment(TOP.box, DESTINATION, 0),),)
    assert program.relays == {} and program.peak_relay_bytes == 0


def test_overlapping_meshes_copy_locally_what_a_rank_already_holds() -> None:
    request = copy.deepcopy(SPLIT)
    request["meshes"]["b"]["devices"] = [1, 2]  # device 1 holds all, needs the top half
    problem = build_problem(parse_request(request))
    plan = Plan("", "test", (Transfer(0, (2,), (BOTTOM,)),))
    program = rank_program(problem, numbered(plan), 1, 16)
    assert program.copies == (LocalCopy(TOP.box, 0, 0),)
    assert program.steps == ()


def test_a_sender_missing_its_bytes_is_an_error() -> None:
    problem = build_problem(parse_request(SPLIT))
    plan = Plan("", "test", (Transfer(2, (3,), (BOTTOM,)),))  # device 2 never got BOTTOM
    with pytest.raises(ValueError, match="device 2 does not hold box"):
        rank_program(problem, numbered(plan), 2, 16)


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
    import meshcast.executor.reference

    box = ((1, 9), (0, 11), (2, 7))
    whole = reference_box("s", (9, 11, 7), "int32", box)
    monkeypatch.setattr(meshcast.executor.reference, "SLAB_ELEMENTS", 50)
    assert same_bytes(reference_box("s", (9, 11, 7), "int32", box), whole)


def test_scaled_request_halves_blocks_exactly() -> None:
    from examples.fused_qkv_refit import request
    from meshcast.planner.fused import Attention

    full = request(Attention(32, 8, 128, 4096), True, "auto")
    scaled = scaled_request(full, 1 << 20)
    parsed = parse_request(scaled)  # blocks still inside, sources still cover
    (tensor,) = parsed.tensors
    assert tensor.shape[0] * tensor.shape[1] * 2 <= 1 << 20
    factors = [a // b for a, b in zip(full["tensors"][0]["shape"], tensor.shape, strict=True)]
    assert [a // f for a, f in zip(full["tensors"][0]["shape"], factors, strict=True)] == list(
        tensor.shape
    )
    for side in ("src", "dst"):
        halved = [
            [
                [[lo // f, hi // f] for (lo, hi), f in zip(box, factors, strict=True)]
                for box in boxes
            ]
            for boxes in full["tensors"][0][side]["blocks"]
        ]
        assert scaled["tensors"][0][side]["blocks"] == halved
    with pytest.raises(ValueError, match="no tensor can be halved further"):
        scaled_request(full, 1)
