"""OR-Tools and PuLP are optional at run time: without either, the other algorithms plan, and
asking for the missing one is one line naming the package."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.conftest import CASES_DIR, ROOT

CASE = str(CASES_DIR / "paper-n2m-case1.json")


def _without(packages: list[str], code: str) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter where importing any of `packages` fails."""
    blocker = textwrap.dedent(
        f"""
        import sys
        for name in {packages!r}:
            sys.modules[name] = None  # `import name` now raises ImportError
        """
    )
    return subprocess.run(
        [sys.executable, "-c", blocker + textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("missing", [["ortools"], ["pulp"], ["ortools", "pulp"]])
def test_greedy_and_auto_plan_without_the_optional_solvers(missing: list[str]) -> None:
    done = _without(
        missing,
        f"""
        import json
        from meshcast.planner import build_problem, parse_request
        from meshcast.solver import SolveOptions, make_plan
        problem = build_problem(parse_request(json.load(open({CASE!r}))))
        for name in ("greedy", "broadcast-lb", "auto"):
            plan = make_plan(problem, name, SolveOptions(time_limit_s=0.5))
            print(name, plan.status.value, round(plan.ratio, 6))
        print("loaded:", sorted(m for m in ("ortools", "pulp") if sys.modules.get(m)))
        """,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[0] for line in lines[:3]] == ["greedy", "broadcast-lb", "auto"]
    assert lines[-1] == "loaded: []"


@pytest.mark.parametrize(("algorithm", "package"), [("cpsat", "ortools"), ("milp", "pulp")])
def test_asking_for_a_missing_solver_is_one_line_naming_its_package(
    algorithm: str, package: str
) -> None:
    done = _without(
        [package],
        f"""
        from meshcast.api.cli import main
        sys.exit(main(["plan", {CASE!r}, "--algorithm", {algorithm!r}]))
        """,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"meshcast: error: --algorithm: {algorithm} needs the Python package")
    assert f"pip install {package}" in line
