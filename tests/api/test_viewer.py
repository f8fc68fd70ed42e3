"""The plan viewer: a self-contained page (summary, a bar per transfer and port, port load,
largest transfers), served per cached plan, written by `meshcast plan --html`, and opened by
a real headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from meshcast.api.app import create_app
from meshcast.api.cli import main
from meshcast.api.viewer import plan_page
from meshcast.planner.cost import transfer_cost
from meshcast.planner.plan import Plan
from meshcast.planner.problem import Problem
from meshcast.solver import SolveOptions, make_plan
from tests.api.test_service import CASE, settings_for
from tests.conftest import CASES_DIR, load_case, problem_of


def _bars(problem: Problem, plan: Plan) -> int:
    """A bar per transfer per port it holds (port-v1)."""
    return sum(
        len(
            transfer_cost(problem.topology, sum(map(problem.piece_bytes, t.pieces)), t.src, t.dst)[
                1
            ]
        )
        for t in plan.transfers
    )


def test_the_page_has_every_part_and_nothing_from_elsewhere() -> None:
    problem = problem_of(load_case("dgx-boundary-2x8-to-2x8"))
    plan = make_plan(problem, "greedy", SolveOptions(time_limit_s=1))
    page = plan_page(problem, plan)
    for part in ('id="summary"', 'id="timeline-svg"', 'id="load-svg"', 'id="largest"'):
        assert part in page
    assert page.count('class="transfer ') == _bars(problem, plan)
    assert f"{plan.makespan_s / plan.lower_bound_s:.4f}" in page  # the ratio in the summary
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # no external assets
    assert "<script" not in page


def _chromium() -> str:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.skip("chromium is not installed (.ci/run installs Debian's chromium)")
    return binary


def _headless(binary: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_chromium_renders_the_page_of_a_served_plan(tmp_path: Path) -> None:
    binary = _chromium()
    with TestClient(create_app(settings_for(tmp_path))) as client:
        plan = client.post("/v1/plans", json=CASE).json()
        view = client.get(f"/v1/plans/{plan['request_id']}/view")
        index = client.get("/v1/plans/view")
        missing = client.get(f"/v1/plans/{'0' * 64}/view")
    assert view.status_code == 200 and view.headers["content-type"].startswith("text/html")
    assert f"/v1/plans/{plan['request_id']}/view" in index.text
    assert missing.status_code == 404
    page = tmp_path / "plan.html"
    page.write_text(view.text)
    dom = _headless(binary, "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    problem = problem_of(CASE)
    assert dom.stdout.count('class="transfer ') == _bars(problem, Plan.from_json(plan))
    assert "makespan / bound" in dom.stdout and plan["algorithm"] in dom.stdout
    shot = tmp_path / "plan.png"
    taken = _headless(binary, f"--screenshot={shot}", "--window-size=1200,900", page.as_uri())
    assert taken.returncode == 0 and shot.stat().st_size > 10_000, taken.stderr[-2000:]


def test_meshcast_plan_writes_the_page(tmp_path: Path) -> None:
    out = tmp_path / "plan.html"
    case = str(CASES_DIR / "paper-n2m-case6.json")
    assert main(["plan", case, "--algorithm", "greedy", "--html", str(out)]) == 0
    assert 'id="timeline-svg"' in out.read_text() and out.read_text().count('class="transfer ') > 0
