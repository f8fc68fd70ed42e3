"""The plan viewer as a user sees it: a plan's page written by `api.viewer` and photographed
by headless Chromium, into `benchmarks/results/plan_viewer.{html,png}`.

    python benchmarks/plan_viewer.py [--case dgx-boundary-2x8-to-2x8] [--algorithm auto]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, SHARED
from meshcast.api.viewer import plan_page
from meshcast.planner import build_problem, parse_request
from meshcast.solver import SolveOptions, make_plan


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="dgx-boundary-2x8-to-2x8")
    parser.add_argument("--algorithm", default="auto")
    args = parser.parse_args()
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        print("chromium is not installed (apt-get install chromium)", file=sys.stderr)
        return 2
    problem = build_problem(
        parse_request(json.loads((SHARED / "cases" / f"{args.case}.json").read_text()))
    )
    plan = make_plan(problem, args.algorithm, SolveOptions(time_limit_s=2.0))
    RESULTS.mkdir(parents=True, exist_ok=True)
    page, shot = RESULTS / "plan_viewer.html", RESULTS / "plan_viewer.png"
    page.write_text(plan_page(problem, plan))
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--screenshot={shot}", "--window-size=1200,1300", page.as_uri()],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    print(f"{args.case} {plan.algorithm}: {len(plan.transfers)} transfers, ratio "
          f"{plan.makespan_s / plan.lower_bound_s:.4f}; wrote {page} and {shot}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
