"""Plan quality: every algorithm on every shared case and on held-out cases of the same kinds.

For each case: makespan / lower bound (port-v1), transfers and wall time per algorithm, next to
the reference checker's own baselines (sendrecv, broadcast, alpa-order) computed in the same
run. Writes `benchmarks/results/solver_quality.{md,json,png}`.

    python benchmarks/solver_quality.py [--cases DIR] [--held-out N] [--time-limit S]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, geomean, load_plancheck, markdown_table, write_results
from meshcast.api.progress import progress
from meshcast.planner import build_problem, parse_request
from meshcast.planner.simulate import check_plan
from meshcast.planner.synthetic import shared_like_request
from meshcast.solver import ALGORITHMS, SolveOptions, make_plan
from meshcast.solver.items import coalesce

REFERENCE = ("sendrecv", "broadcast", "alpa-order")
HELD_OUT_ALGORITHMS = ("broadcast-lb", "alpa-order", "greedy", "milp", "cpsat", "auto")
#: the reference alpa-order is quadratic: skip it above this many tiles
REFERENCE_MAX_TILES = 3000


def bandwidth_bound(problem: Any) -> bool:
    """Messages (coalesced items) average at least 10 latencies of transfer time."""
    items = coalesce(problem)
    if not items or problem.topology.latency_s == 0:
        return True
    mean_s = sum(it.num_bytes for it in items) / len(items) / problem.topology.nic_bytes_per_s
    return mean_s >= 10 * problem.topology.latency_s


def run_case(
    name: str,
    request: dict[str, Any],
    algorithms: tuple[str, ...],
    options: SolveOptions,
    plancheck: Any,
) -> dict[str, Any]:
    problem = build_problem(parse_request(request))
    row: dict[str, Any] = {
        "case": name,
        "tiles": len(problem.tiles),
        "lower_bound_s": problem.lower_bound_s,
        "bandwidth_bound": bandwidth_bound(problem),
        "algorithms": {},
        "reference": {},
    }
    for algorithm in algorithms:
        started = time.perf_counter()
        plan = make_plan(problem, algorithm, options)
        wall = time.perf_counter() - started
        entry = {
            "ratio": plan.ratio,
            "transfers": len(plan.transfers),
            "wall_s": wall,
            "status": plan.status,
            "valid": check_plan(problem, plan).valid,
        }
        if plancheck is not None and len(plan.transfers) <= 6000:
            verdict = plancheck.check(request, plan.to_json())
            entry["reference_valid"] = verdict["valid"]
            entry["reference_ratio"] = verdict["ratio"]
        row["algorithms"][algorithm] = entry
        print(
            f"  {name:<28} {algorithm:<20} ratio {plan.ratio:7.3f}  "
            f"{len(plan.transfers):6d} transfers  {wall:6.2f} s",
            flush=True,
        )
    if plancheck is not None:
        for baseline in REFERENCE:
            if baseline == "alpa-order" and len(problem.tiles) > REFERENCE_MAX_TILES:
                continue
            plan = plancheck.baseline(request, baseline, max_work=REFERENCE_MAX_TILES)
            if plan is not None:
                row["reference"][baseline] = plancheck.check(request, plan)["ratio"]
    return row


def table(rows: list[dict[str, Any]], algorithms: tuple[str, ...]) -> str:
    header = ["case", "tiles", *algorithms, *(f"ref {b}" for b in REFERENCE)]
    body = []
    for row in rows:
        cells = [row["case"] + ("" if row["bandwidth_bound"] else " (latency-bound)"), row["tiles"]]
        cells += [row["algorithms"][a]["ratio"] for a in algorithms]
        cells += [row["reference"].get(b, float("nan")) for b in REFERENCE]
        body.append(cells)
    means = ["geomean, bandwidth-bound", ""]
    bound_rows = [r for r in rows if r["bandwidth_bound"]]
    means += [geomean([r["algorithms"][a]["ratio"] for r in bound_rows]) for a in algorithms]
    means += [
        geomean([r["reference"][b] for r in bound_rows if b in r["reference"]]) for b in REFERENCE
    ]
    body.append(means)
    return markdown_table(header, body)


def detail_table(rows: list[dict[str, Any]], algorithms: tuple[str, ...], key: str) -> str:
    """One figure (`transfers` or `wall_s`) per case and algorithm."""
    body = [[row["case"], *(row["algorithms"][a][key] for a in algorithms)] for row in rows]
    return markdown_table(["case", *algorithms], body)


def plot(rows: list[dict[str, Any]], algorithms: tuple[str, ...], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(12, 5))
    width = 0.8 / len(algorithms)
    for k, algorithm in enumerate(algorithms):
        ax.bar(
            [i + k * width for i in range(len(rows))],
            [r["algorithms"][algorithm]["ratio"] for r in rows],
            width,
            label=algorithm,
        )
    ax.set_xticks(
        [i + 0.4 for i in range(len(rows))], [r["case"] for r in rows], rotation=70, fontsize=7
    )
    ax.set_yscale("log")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_ylabel("makespan / lower bound (log)")
    ax.legend(fontsize=7, ncol=5)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cases", default=str(Path(__file__).resolve().parents[2] / "shared" / "cases")
    )
    parser.add_argument("--held-out", type=int, default=20, help="held-out cases (seeded)")
    parser.add_argument("--time-limit", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    options = SolveOptions(time_limit_s=args.time_limit)
    plancheck = load_plancheck()
    algorithms = tuple(ALGORITHMS)
    case_files = sorted(Path(args.cases).glob("*.json"))
    print(f"shared cases: {len(case_files)} x {len(algorithms)} algorithms, then held-out cases: "
          f"{args.held_out} x {len(HELD_OUT_ALGORITHMS)} algorithms")  # fmt: skip
    rng = random.Random(args.seed)
    shared, held = [], []
    with progress(len(case_files) + args.held_out, "solver quality") as steps:
        for f in case_files:
            steps.begin(f.stem)
            shared.append(
                run_case(f.stem, json.loads(f.read_text()), algorithms, options, plancheck)
            )
        for k in range(args.held_out):
            kind = "paper" if k % 2 == 0 else "modern"
            steps.begin(f"held-{kind}-{k}")
            request = shared_like_request(rng, kind)
            held.append(
                run_case(f"held-{kind}-{k}", request, HELD_OUT_ALGORITHMS, options, plancheck)
            )
    beaten = [
        (r["case"], a)
        for r in shared + held
        for a in ("auto",)
        if r["reference"]
        and r["algorithms"][a]["ratio"] > min(r["reference"].values()) * (1 + 1e-9)
    ]
    invalid = [
        (r["case"], a)
        for r in shared + held
        for a, e in r["algorithms"].items()
        if not e["valid"] or not e.get("reference_valid", True)
    ]
    markdown = "\n\n".join(
        [
            f"# Solver quality (makespan / lower bound, time limit {args.time_limit:g} s)",
            "## Shared cases",
            table(shared, algorithms),
            "### Transfers per plan",
            detail_table(shared, algorithms, "transfers"),
            "### Wall seconds per plan (solve, simulation and validity check)",
            detail_table(shared, algorithms, "wall_s"),
            f"## Held-out cases (seed {args.seed})",
            table(held, HELD_OUT_ALGORITHMS),
            f"auto slower than a reference baseline on: {beaten or 'no case'}",
            f"invalid plans: {invalid or 'none'}",
        ]
    )
    print()
    print(markdown)
    path = write_results("solver_quality", markdown, {"shared": shared, "held_out": held})
    plot(shared, algorithms, RESULTS / "solver_quality.png")
    print(f"\nwritten: {path} and solver_quality.png")
    return 1 if invalid else 0


if __name__ == "__main__":
    sys.exit(main())
