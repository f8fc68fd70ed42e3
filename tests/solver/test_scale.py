"""Planning at scale: identical components solved once, and deadlines honoured."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

import meshcast.solver.greedy
from meshcast.planner.compact import CompactTransfers
from meshcast.planner.plan import Plan
from meshcast.planner.simulate import check_plan, simulate
from meshcast.planner.synthetic_scale import boundary_request
from meshcast.solver import SolveOptions, make_plan
from meshcast.solver.auto import auto
from meshcast.solver.baselines import broadcast_lb, sendrecv
from meshcast.solver.components import components
from meshcast.solver.greedy import _first_of_kind_tiles, greedy
from meshcast.solver.items import coalesce
from meshcast.solver.order import in_order
from tests.conftest import CASES_DIR, problem_of


def test_identical_host_pairs_are_routed_once_and_replayed(plancheck: Any) -> None:
    one = problem_of(boundary_request(1, batch=4, seq=64, hidden=512))
    four = problem_of(boundary_request(4, batch=16, seq=64, hidden=512))
    result = greedy(four, SolveOptions())
    assert "4 component(s), 1 distinct" in result.notes
    plan, alone = (
        make_plan(four, "greedy", SolveOptions()),
        make_plan(one, "greedy", SolveOptions()),
    )
    assert check_plan(four, plan).valid
    assert len(plan.transfers) == 4 * len(alone.transfers)
    assert plan.makespan_s == pytest.approx(alone.makespan_s, rel=1e-12)
    verdict = plancheck.check(boundary_request(4, batch=16, seq=64, hidden=512), plan.to_json())
    assert verdict["valid"], verdict["errors"]


def test_a_passed_deadline_still_gives_the_greedy_plan_in_one_pass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    problem = problem_of(boundary_request(2, batch=8, seq=64, hidden=512))
    calls: list[tuple[bool, float | None]] = []
    routing_of = meshcast.solver.greedy.greedy_routing

    def counted(*args: Any) -> Any:
        calls.append((args[2], args[3]))
        return routing_of(*args)

    def never(*_: Any) -> Any:
        raise AssertionError("a baseline was planned after the deadline")

    monkeypatch.setattr(meshcast.solver.greedy, "greedy_routing", counted)
    greedy(problem, SolveOptions())
    assert len(calls) > 1  # without a deadline: several variants
    calls.clear()
    monkeypatch.setattr(meshcast.solver.greedy, "broadcast_lb", never)
    monkeypatch.setattr(meshcast.solver.greedy, "sendrecv", never)
    past = SolveOptions(deadline=time.perf_counter())
    result = greedy(problem, past)
    assert len(calls) == 1 and calls[0][1] == past.deadline  # one variant, no rerouting
    assert simulate(problem, result.transfers()).valid
    late = auto(problem, past)
    assert any("time limit reached" in note for note in late.notes)


def test_auto_reports_its_solve_time_and_stays_valid_under_a_short_limit() -> None:
    problem = problem_of(boundary_request(2, batch=8, seq=64, hidden=512))
    plan = make_plan(problem, "auto", SolveOptions(time_limit_s=0.3))
    assert check_plan(problem, plan).valid
    assert 0 < plan.check_s < plan.solve_time_s


def test_gathering_hosts_get_their_parts_pipelined_behind_the_nic(plancheck: Any) -> None:
    """Every GPU of the next stage gathers its host's rows: each NIC part is relayed to seven
    GPUs after it lands, so the relay tail after the last part decides the makespan. Splits
    through one entry shrink it (1.32 of the bound with parts spread over the entry rails)."""
    request = boundary_request(2, batch=8)
    problem = problem_of(request)
    plan = make_plan(problem, "greedy", SolveOptions())
    assert plan.ratio <= 1.15
    verdict = plancheck.check(request, plan.to_json())
    assert verdict["valid"], verdict["errors"]
    assert verdict["makespan_s"] == pytest.approx(plan.makespan_s, rel=1e-9)


def test_a_move_budget_gives_the_plan_with_fewest_moves() -> None:
    """Under `max_moves` (what auto can still build and check in its time), routings with
    fewer moves win, down to one without splits: a worse plan, but one built in time."""
    problem = problem_of(boundary_request(2, batch=8))
    free = greedy(problem, SolveOptions())
    tight = greedy(problem, SolveOptions(max_moves=1))
    assert len(tight.moves) < len(free.moves)
    transfers = tight.transfers()
    assert simulate(problem, transfers).valid
    host_pairs, sources_per_host, moves_per_piece = 2, 8, 1 + 7  # over the NIC, then relayed
    assert len(transfers) == host_pairs * sources_per_host * moves_per_piece
    assert len(tight.moves) == len(transfers) // host_pairs  # the second pair copies the first


@pytest.mark.parametrize(
    "request_json",
    [*(json.loads(path.read_text()) for path in sorted(CASES_DIR.glob("*.json"))),
     boundary_request(3, batch=12)],
)  # fmt: skip
def test_the_greedy_reports_the_makespan_of_its_order(request_json: dict[str, Any]) -> None:
    """The greedy's makespan comes from its components' schedules (identical ones are not
    scheduled again): the list schedule of the assembled moves in its order agrees."""
    problem = problem_of(request_json)
    result = greedy(problem, SolveOptions())
    assert result.makespan_s is not None
    again = in_order(result.moves, problem.topology.num_ports, result.order).makespan_s
    assert result.makespan_s == pytest.approx(again, rel=1e-12)


REPEATED = {
    "gather": boundary_request(4, batch=16, seq=64, hidden=512),
    "one-message": boundary_request(
        3, batch=12, seq=64, hidden=512, dst_placements=("S(0)", "S(1)")
    ),
    "reshard": boundary_request(2, batch=8, seq=64, hidden=512, dst_placements=("S(0)", "S(2)")),
}


@pytest.mark.parametrize("algorithm", ["greedy", "auto"])
@pytest.mark.parametrize("name", sorted(REPEATED))
def test_copied_components_are_what_planning_them_in_full_gives(
    name: str, algorithm: str, plancheck: Any
) -> None:
    """A plan whose identical components are copies of one (checked and simulated once) is,
    once every transfer is built and simulated from scratch, valid with the same times, bytes
    on the wire and port loads; its JSON text is that of the built transfers."""
    problem = problem_of(REPEATED[name])
    plan = make_plan(problem, algorithm, SolveOptions(time_limit_s=2.0))
    assert isinstance(plan.transfers, CompactTransfers)
    assert len(plan.transfers.own) < len(plan.transfers)
    built = tuple(plan.transfers)
    full = simulate(problem, built)
    assert full.valid, full.errors[:3]
    planned = [s for t in built for s in (t.start_s, t.end_s)]
    assert planned == pytest.approx([s for pair in full.times for s in pair], rel=1e-12)
    assert plan.makespan_s == pytest.approx(full.makespan_s, rel=1e-12)
    assert plan.wire_bytes == full.wire_bytes
    assert plan.port_busy_s == pytest.approx(full.port_busy_s, rel=1e-12, abs=1e-15)
    document = plan.to_json()
    assert plan.to_json_text() == json.dumps(document, separators=(",", ":"))
    assert Plan.from_json(document) == plan
    verdict = plancheck.check(REPEATED[name], document)
    assert verdict["valid"], verdict["errors"]


@pytest.mark.parametrize("name", sorted(REPEATED))
def test_baselines_of_one_component_per_kind_take_as_long_as_on_all(name: str) -> None:
    """The greedy compares itself with the baselines on one component of each kind: their
    makespan there is their makespan on the whole request."""
    problem = problem_of(REPEATED[name])
    comps = components(problem, coalesce(problem))
    first = _first_of_kind_tiles(problem, comps)
    assert 0 < len(first) < len(problem.tiles)
    for baseline in (sendrecv, broadcast_lb):
        alone = baseline(problem, SolveOptions(), first).makespan_s
        whole = baseline(problem, SolveOptions()).makespan_s
        assert alone == pytest.approx(whole, rel=1e-12)
