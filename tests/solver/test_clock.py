"""One port-v1 clock: the fast schedulers and the copies' accounting agree with the simulator."""

from __future__ import annotations

import copy
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshcast.planner import build_problem, parse_request
from meshcast.planner.compact import CompactTransfers
from meshcast.planner.simulate import PortClock, simulate
from meshcast.planner.synthetic import random_request
from meshcast.planner.synthetic_scale import boundary_request
from meshcast.solver import SolveOptions, make_plan
from meshcast.solver.greedy import GREEDY, greedy_routing
from meshcast.solver.items import coalesce
from meshcast.solver.moves import Move
from meshcast.solver.order import critical_priority, earliest_start, in_order
from meshcast.solver.routing import to_result

NUM_PORTS = 6


@st.composite
def move_lists(draw: st.DrawFn) -> list[Move]:
    """Up to 14 moves on 6 ports, durations from a few values (so starts tie), each move
    depending on some earlier ones (relays)."""
    moves = []
    for i in range(draw(st.integers(1, 14))):
        ports = draw(st.sets(st.integers(0, NUM_PORTS - 1), min_size=1, max_size=3))
        duration = draw(st.sampled_from([0.5, 1.0, 1.0, 2.0, 3.25]))
        deps = draw(st.sets(st.integers(0, i - 1), max_size=2)) if i else set()
        moves.append(Move(0, (1,), (), 0, duration, tuple(sorted(ports)), tuple(sorted(deps))))
    return moves


@settings(max_examples=300, deadline=None)
@given(move_lists(), st.booleans())
def test_earliest_start_gives_the_list_schedule_of_its_own_order(
    moves: list[Move], static: bool
) -> None:
    """The vectorised non-delay scheduler books each move exactly where `PortClock` puts it
    when the moves are list-scheduled in the order it chose."""
    priority = critical_priority(moves, NUM_PORTS) if static else None
    fast = earliest_start(moves, NUM_PORTS, priority)
    assert sorted(fast.order) == list(range(len(moves)))
    listed = in_order(moves, NUM_PORTS, fast.order)
    assert listed.times == fast.times
    assert listed.makespan_s == fast.makespan_s


@settings(max_examples=200, deadline=None)
@given(move_lists())
def test_integer_units_follow_the_same_clock(moves: list[Move]) -> None:
    """`PortClock` in integer time units (CP-SAT's hint) gives the seconds clock's times when
    every duration is a whole number of units."""
    units = [Move(m.src, m.dst, m.pieces, 0, float(round(m.duration_s * 4)), m.ports, m.deps)
             for m in moves]  # fmt: skip
    seconds = in_order(units, NUM_PORTS)
    clock = PortClock(NUM_PORTS, origin=0)
    ends: list[int] = []
    for m in units:
        _, end = clock.place(int(m.duration_s), m.ports, max((ends[d] for d in m.deps), default=0))
        assert isinstance(end, int)
        ends.append(end)
    assert [float(e) for e in ends] == [e for _, e in seconds.times]


@pytest.mark.parametrize("seed", range(8))
def test_a_solvers_schedule_is_the_simulators(seed: int) -> None:
    """The greedy's moves in their list-scheduled order, simulated as a plan (durations from
    the route, data readiness from the geometry of earlier deliveries, not from `deps`): the
    same times."""
    request = parse_request(random_request(random.Random(seed), max_hosts=3))
    problem = build_problem(request)
    items = coalesce(problem)
    result = to_result(problem, items, greedy_routing(problem, items, GREEDY))
    transfers = [result.moves[i].to_transfer() for i in result.order]
    sim = simulate(problem, transfers)
    assert sim.valid, sim.errors[:2]
    listed = in_order(result.moves, problem.topology.num_ports, result.order)
    assert sim.times == [listed.times[i] for i in result.order]
    assert sim.makespan_s == result.makespan_s


@pytest.mark.parametrize("alike", [1, 3])
def test_copies_add_their_templates_port_time_and_bytes(alike: int) -> None:
    """`replicas.with_copies` (each copy adds its template's per-port busy time and wire
    bytes, on its own ports) against simulating every transfer of the expanded plan."""
    raw = boundary_request(4)
    (tensor,) = raw["tensors"]
    raw["tensors"] = [dict(copy.deepcopy(tensor), name=f"h{i}") for i in range(alike)]
    problem = build_problem(parse_request(raw))
    plan = make_plan(problem, "greedy", SolveOptions())
    assert isinstance(plan.transfers, CompactTransfers) and plan.transfers.replicas
    whole = simulate(problem, tuple(plan.transfers))
    assert whole.valid
    assert plan.wire_bytes == whole.wire_bytes
    assert plan.port_busy_s == pytest.approx(whole.port_busy_s, rel=1e-12, abs=1e-15)
    assert plan.makespan_s == pytest.approx(whole.makespan_s, rel=1e-12)
    planned = [x for t in plan.transfers for x in (t.start_s, t.end_s)]
    assert planned == pytest.approx([x for times in whole.times for x in times], rel=1e-12)
