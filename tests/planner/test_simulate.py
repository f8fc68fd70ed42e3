"""The port-v1 simulator: hand-computed timings, validity errors, and the plan JSON format."""

from __future__ import annotations

import copy
import json
from dataclasses import replace

import pytest

from meshcast.planner import PlanFormatError
from meshcast.planner.boxes import covers
from meshcast.planner.cost import transfer_cost
from meshcast.planner.plan import Piece, Plan, SolveStatus, Transfer
from meshcast.planner.simulate import check_plan, simulate
from meshcast.solver import SolveOptions, make_plan
from tests.conftest import load_case, problem_of

GB = 1e9 / 8  # bytes per second of 1 Gbit/s


def test_chain_cost_by_hand() -> None:
    # paper-1tom-2x2: device 0 (host 0) to devices 2,3 (host 1) and 4,5 (host 2), 10 Gbit/s
    problem = problem_of(load_case("paper-1tom-2x2"))
    topo = problem.topology
    nbytes = 1_000_000
    duration, ports = transfer_cost(topo, nbytes, 0, [2, 3, 4, 5])
    inter = nbytes / (10 * GB) + 2 * 10e-6
    intra = nbytes / (800 * GB) + 1 * 10e-6
    assert duration == pytest.approx(max(inter, intra))
    names = {topo.port_name(p) for p in ports}
    assert names == {
        "send(h0,r0)",
        "recv(h1,r0)",
        "send(h1,r0)",
        "recv(h2,r0)",
        "link_out(d2)",
        "link_in(d3)",
        "link_out(d4)",
        "link_in(d5)",
    }


def test_half_duplex_relay_uses_one_port() -> None:
    request = load_case("paper-1tom-2x2")
    request["cluster"]["duplex"] = "half"
    topo = problem_of(request).topology
    _, ports = transfer_cost(topo, 10, 0, [2, 4])
    assert {topo.port_name(p) for p in ports} == {"nic(h0,r0)", "nic(h1,r0)", "nic(h2,r0)"}


def whole(problem, tensor: int = 0) -> Piece:  # type: ignore[no-untyped-def]
    shape = problem.request.tensors[tensor].shape
    return Piece(tensor, tuple((0, n) for n in shape))


def test_list_schedule_and_relay_timing() -> None:
    problem = problem_of(load_case("paper-1tom-2x2"))
    piece = whole(problem)
    nbytes = problem.piece_bytes(piece)
    # 0 -> 2 over the NIC, then 2 relays to 4 (host 2): the relay waits for the data
    sim = simulate(problem, [Transfer(0, (2,), (piece,)), Transfer(2, (3, 4, 5), (piece,))])
    first = nbytes / (10 * GB) + 10e-6
    second = nbytes / (10 * GB) + 10e-6
    assert sim.valid, sim.errors
    assert sim.times[0] == pytest.approx((0.0, first))
    assert sim.times[1] == pytest.approx((first, first + second))
    assert sim.makespan_s == pytest.approx(first + second)


def test_invalid_plans_are_reported() -> None:
    problem = problem_of(load_case("paper-1tom-2x2"))
    piece = whole(problem)
    # 2 forwards before it has anything; devices 4 and 5 never get their shard
    sim = simulate(problem, [Transfer(2, (4,), (piece,)), Transfer(0, (2, 3), (piece,))])
    assert not sim.valid
    assert "device 2 does not hold box" in sim.errors[0]
    assert any("device 5 misses" in e for e in sim.errors)
    bad = [
        (Transfer(0, (), (piece,)), "dst is empty"),
        (Transfer(0, (2, 2), (piece,)), "lists a device twice"),
        (Transfer(0, (1,), (piece,)), "in no destination mesh"),
        (Transfer(99, (2,), (piece,)), "in neither mesh"),
        (Transfer(0, (2,), ()), "no pieces"),
        (Transfer(0, (2,), (Piece(3, piece.box),)), "no tensor 3"),
        (Transfer(0, (2,), (Piece(0, ((0, 0),)),)), "empty or outside"),
    ]
    for transfer, message in bad:
        errors = simulate(problem, [transfer]).errors
        assert message in errors[0], (message, errors)


def test_check_plan_flags_wrong_times() -> None:
    problem = problem_of(load_case("paper-1tom-1x1"))
    piece = whole(problem)
    plan = Plan("id", "hand", (Transfer(0, (1,), (piece,), 0.0, 1.0),), makespan_s=1.0)
    sim = check_plan(problem, plan)
    assert any("plan says end_s=1.0" in e for e in sim.errors)
    fixed = plan.with_times(
        simulate(problem, plan.transfers).times, simulate(problem, plan.transfers).makespan_s
    )
    assert check_plan(problem, fixed).valid


def test_plan_json_round_trip() -> None:
    problem = problem_of(load_case("paper-1tom-1x2"))
    piece = whole(problem)
    plan = Plan(
        "abc",
        "hand",
        (Transfer(0, (2, 3), (piece,), 0.0, 0.5),),
        0.5,
        0.4,
        0.01,
        SolveStatus.OPTIMAL,
        0.45,
    )
    data = json.loads(json.dumps(plan.to_json()))
    assert data["format"] == "meshcast.plan/v1"
    assert data["gap"] == pytest.approx(0.1)
    assert Plan.from_json(data) == plan


@pytest.mark.parametrize("case", ["paper-1tom-1x2", "dgx-boundary-2x8-to-2x8", "inplace-2x4"])
@pytest.mark.parametrize("algorithm", ["greedy", "sendrecv"])
def test_plan_text_is_what_json_dumps_writes(case: str, algorithm: str) -> None:
    """The plan writer that skips the transfers' dicts writes the same characters."""
    problem = problem_of(load_case(case))
    plan = make_plan(problem, algorithm, SolveOptions(time_limit_s=0.5))
    assert plan.to_json_text() == json.dumps(plan.to_json(), separators=(",", ":"))
    bounded = replace(plan, best_bound_s=plan.makespan_s * 0.9, wire_bytes=None)
    assert bounded.to_json_text() == json.dumps(bounded.to_json(), separators=(",", ":"))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda d: d.update(format="v0"), "format"),
        (lambda d: d.update(transfers={}), "transfers"),
        (lambda d: d["transfers"][0].update(src="0"), "transfers[0].src"),
        (lambda d: d["transfers"][0].update(dst=3), "transfers[0].dst"),
        (lambda d: d["transfers"][0]["pieces"][0].update(box=[[0]]), "transfers[0].pieces[0].box"),
        (lambda d: d.update(makespan_s="fast"), "makespan_s"),
    ],
)
def test_malformed_plans_name_the_field(change, field: str) -> None:  # type: ignore[no-untyped-def]
    problem = problem_of(load_case("paper-1tom-1x2"))
    data = Plan("abc", "hand", (Transfer(0, (2, 3), (whole(problem),)),)).to_json()
    data = copy.deepcopy(data)
    change(data)
    with pytest.raises(PlanFormatError) as info:
        Plan.from_json(data)
    assert info.value.field == field


def test_covers_decides_disjoint_overlapping_and_holed_covers() -> None:
    target = ((0, 4), (0, 4))
    halves = [((0, 2), (0, 4)), ((2, 4), (0, 4))]
    assert covers(target, halves)
    assert covers(target, [((0, 3), (0, 4)), ((1, 4), (0, 4))])  # overlapping, complete
    # overlapping boxes whose volumes add up to the target's, with a hole at rows 3..4
    holed = [((0, 3), (0, 4)), ((0, 1), (0, 4)), ((3, 4), (0, 2))]
    assert sum((b[0][1] - b[0][0]) * (b[1][1] - b[1][0]) for b in holed) >= 16
    assert not covers(target, holed)
    assert not covers(target, halves[:1])
    assert covers((), [()]) and not covers((), [])
