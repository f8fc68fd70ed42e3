"""Planning time against request size: tensors (MoE refits named per expert, 100 to 50,000
tensors on 192 GPUs; a DeepSeek-V3-sized stacked refit on 384 GPUs), devices (pipeline
boundaries, 64 to 16,384 GPUs) and the tiles that follow, for greedy and auto.

Every row is one whole `meshcast plan` in process, wall time split into parse (JSON and
checks), solve (tiling, as stacked for meshcast's algorithms, and the algorithm), plan
(building the plan and checking it under port-v1) and write (the plan's JSON). A size whose
run took longer than `--give-up` seconds ends that sweep for that algorithm. Writes
`benchmarks/results/solver_scaling.{md,json,png}`.

    python benchmarks/solver_scaling.py [--time-limit 5] [--max-devices N] [--max-tensors N]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, markdown_table, write_results
from meshcast.api.progress import progress
from meshcast.planner import build_problem, parse_request
from meshcast.planner.synthetic_scale import (
    boundary_request,
    deepseek_v3_stacked_refit,
    qwen3_235b_per_expert_refit,
)
from meshcast.solver import SolveOptions, make_plan

ALGORITHMS = ("greedy", "auto")
#: builds one request of a sweep when called
RequestBuilder = Callable[[], dict[str, Any]]


def refit_with(num_tensors: int) -> dict[str, Any]:
    """Qwen3-235B's per-expert refit cut to about `num_tensors` tensors (263 per layer)."""
    return qwen3_235b_per_expert_refit(max(1, round((num_tensors - 3) / 263)))


def sweeps(max_tensors: int, max_devices: int) -> list[tuple[str, int, RequestBuilder]]:
    """(sweep, size, a function building the request): requests are built one at a time."""
    found: list[tuple[str, int, RequestBuilder]] = [
        ("tensors", n, partial(refit_with, n))
        for n in (100, 1_000, 5_000, 25_000, 50_000)
        if n <= max_tensors
    ]
    found.append(("stacked", 384, deepseek_v3_stacked_refit))  # 552 tensors, experts stacked
    for devices in (64, 256, 1024, 4096, 16384):
        if devices <= max_devices:
            hosts = devices // 16
            # every GPU sends its slice to its peer: one message each
            peer = partial(boundary_request, hosts, batch=8 * hosts, seq=4096,
                           dst_placements=("S(0)", "S(1)"))  # fmt: skip
            found.append(("boundary", devices, peer))
    for devices in (64, 256, 1024, 4096, 16384):
        if devices <= max_devices:
            hosts = devices // 16
            # every GPU of the next stage gathers its host's rows: all-gathers inside hosts
            found.append(("gather", devices, partial(boundary_request, hosts, batch=4 * hosts)))
    return found


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - started


def plan_once(request: dict[str, Any], algorithm: str, time_limit_s: float) -> dict[str, Any]:
    text = json.dumps(request)
    problem, parse_s = timed(lambda: build_problem(parse_request(json.loads(text))))
    plan, wall_s = timed(
        lambda: make_plan(problem, algorithm, SolveOptions(time_limit_s=time_limit_s))
    )
    written, write_s = timed(plan.to_json_text)
    return {
        "tensors": len(problem.request.tensors),
        "devices": sum(len(h) for h in problem.request.cluster.hosts),
        "tiles": len(problem.tiles),
        "transfers": len(plan.transfers),
        "parse_s": parse_s,
        "solve_s": plan.solve_time_s - plan.check_s,
        "plan_s": plan.check_s + (wall_s - plan.solve_time_s),
        "write_s": write_s,
        "wall_s": parse_s + wall_s + write_s,
        "solve_time_s": plan.solve_time_s,
        "ratio": plan.ratio,
        "plan_mb": len(written) / 1e6,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time-limit", type=float, default=5.0, help="auto's limit (s)")
    parser.add_argument("--max-devices", type=int, default=16384)
    parser.add_argument("--max-tensors", type=int, default=50_000)
    parser.add_argument("--give-up", type=float, default=60.0)
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    stopped: set[tuple[str, str]] = set()
    planned = sweeps(args.max_tensors, args.max_devices)
    with progress(len(planned) * len(ALGORITHMS), "solver scaling") as steps:
        for sweep, size, build in planned:
            request = build()
            for algorithm in ALGORITHMS:
                steps.begin(f"{sweep} {size} {algorithm}")
                if (sweep, algorithm) in stopped:
                    continue
                row = {"sweep": sweep, "size": size, "algorithm": algorithm}
                row |= plan_once(request, algorithm, args.time_limit)
                rows.append(row)
                print(
                    f"{sweep:<9} {size:>6} {algorithm:<7} {row['tiles']:>8} tiles "
                    f"{row['wall_s']:7.2f} s wall (parse {row['parse_s']:.2f} solve "
                    f"{row['solve_s']:.2f} plan {row['plan_s']:.2f} write {row['write_s']:.2f}) "
                    f"ratio {row['ratio']:.4f}",
                    flush=True,
                )
                if row["wall_s"] > args.give_up:
                    stopped.add((sweep, algorithm))
    header = [
        "sweep", "size", "algorithm", "tensors", "devices", "tiles", "transfers",
        "parse s", "solve s", "plan s", "write s", "wall s", "solve_time_s", "ratio",
    ]  # fmt: skip
    body = [
        [r["sweep"], r["size"], r["algorithm"], r["tensors"], r["devices"], r["tiles"],
         r["transfers"], r["parse_s"], r["solve_s"], r["plan_s"], r["write_s"], r["wall_s"],
         r["solve_time_s"], r["ratio"]]
        for r in rows
    ]  # fmt: skip
    markdown = (
        f"# Planning time against request size (auto's time limit {args.time_limit:g} s)\n\n"
        "tensors: per-expert MoE refits on 192 GPUs; stacked: a DeepSeek-V3-sized refit with "
        "stacked experts on 384 GPUs; boundary: one message per GPU between "
        "two [hosts, 8] stages; gather: every GPU of the next stage gathers its host's rows. "
        "Wall = parse (JSON, checks) + solve (tiling, algorithm) + plan (build and check "
        "under port-v1) "
        "+ write (plan JSON); solve_time_s is what the plan reports (solve + plan); "
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

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for sweep, marker in (("tensors", "o"), ("boundary", "s"), ("gather", "^")):
        for algorithm, style in (("greedy", "-"), ("auto", "--")):
            points = sorted(
                (r["tiles"] + r["transfers"], r["wall_s"])
                for r in rows
                if r["sweep"] == sweep and r["algorithm"] == algorithm
            )
            if points:
                ax.plot(*zip(*points, strict=True), style, marker=marker,
                        label=f"{sweep}, {algorithm}")  # fmt: skip
    work = [r["tiles"] + r["transfers"] for r in rows]
    if work:
        lo, hi = min(work), max(work)
        ax.plot(
            [lo, hi], [lo * 2e-5, hi * 2e-5], ":", color="grey", label="20 us per tile+transfer"
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("tiles + transfers")
    ax.set_ylabel("wall seconds per `meshcast plan`")
    ax.grid(True, which="both", linewidth=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
