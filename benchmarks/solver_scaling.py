"""Solve time against device count: greedy, milp and auto on the 1024-GPU case's shape, 8 to
4096 GPUs (`planner.synthetic.transpose_request`: 256 KiB tiles at every size).

An algorithm whose run took longer than `--give-up` seconds is not tried on larger sizes.
Writes `benchmarks/results/solver_scaling.{md,json,png}`.

    python benchmarks/solver_scaling.py [--max-devices N] [--time-limit S]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, markdown_table, write_results
from planner import build_problem, parse_request
from planner.synthetic import transpose_request
from solver import SolveOptions, make_plan

ALGORITHMS = ("greedy", "milp", "auto")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-devices", type=int, default=4096)
    parser.add_argument("--time-limit", type=float, default=2.0)
    parser.add_argument("--give-up", type=float, default=60.0)
    args = parser.parse_args()
    sizes = [
        n
        for n in (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
        if n <= args.max_devices
    ]
    rows: list[dict[str, Any]] = []
    stopped: set[str] = set()
    for n in sizes:
        started = time.perf_counter()
        problem = build_problem(parse_request(transpose_request(n)))
        row: dict[str, Any] = {
            "devices": n,
            "tiles": len(problem.tiles),
            "tiling_s": time.perf_counter() - started,
        }
        for algorithm in ALGORITHMS:
            if algorithm in stopped:
                continue
            started = time.perf_counter()
            plan = make_plan(problem, algorithm, SolveOptions(time_limit_s=args.time_limit))
            wall = time.perf_counter() - started
            row[algorithm] = {"wall_s": wall, "ratio": plan.ratio, "transfers": len(plan.transfers)}
            print(
                f"{n:6d} devices {len(problem.tiles):7d} tiles  {algorithm:<7} "
                f"{wall:7.2f} s  ratio {plan.ratio:.3f}",
                flush=True,
            )
            if wall > args.give_up:
                stopped.add(algorithm)
        rows.append(row)
    header = [
        "devices",
        "tiles",
        "tiling s",
        *(f"{a} s" for a in ALGORITHMS),
        *(f"{a} ratio" for a in ALGORITHMS),
    ]
    body = [
        [r["devices"], r["tiles"], r["tiling_s"]]
        + [r[a]["wall_s"] if a in r else float("nan") for a in ALGORITHMS]
        + [r[a]["ratio"] if a in r else float("nan") for a in ALGORITHMS]
        for r in rows
    ]
    markdown = (
        "# Solver scaling (transpose S(0),S(1) -> S(1),S(0), 256 KiB tiles, "
        f"time limit {args.time_limit:g} s)\n\n"
        "Wall seconds per plan (simulation and validity check included); "
        "ratio = makespan / lower bound.\n\n" + markdown_table(header, body)
    )
    print()
    print(markdown)
    path = write_results("solver_scaling", markdown, rows)
    plot(rows, RESULTS / "solver_scaling.png")
    print(f"\nwritten: {path} and solver_scaling.png")
    return 0


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for algorithm in ALGORITHMS:
        points = [(r["devices"], r[algorithm]["wall_s"]) for r in rows if algorithm in r]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=algorithm)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("devices")
    ax.set_ylabel("wall seconds per plan")
    ax.grid(True, which="both", linewidth=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
