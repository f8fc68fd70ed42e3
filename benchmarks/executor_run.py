"""Measured wall time of plans on a local gloo world: the paper's cases scaled to 64 MiB.

For every paper case: send/recv, broadcast-lb and auto plans, each run in chain mode and in
broadcast mode (`dist.broadcast` on sub-groups), median of `--repeats` runs barrier to barrier,
every destination shard verified byte for byte. One world of processes serves every case.

Loopback has no NIC: every rank shares this machine's cores and memory bandwidth, so the
figures measure bytes copied through the kernel, not a network. The ratios between plans
still show what one send per receiver costs against one broadcast.

    python benchmarks/executor_run.py [--max-bytes 64MiB] [--repeats 3] [--cases paper-1tom-1x2,...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import SHARED, geomean, markdown_table, write_results
from meshcast.api.cli_run import parse_size
from meshcast.api.progress import progress
from meshcast.executor.local_run import RunSettings, run_plan
from meshcast.executor.local_world import LocalWorld
from meshcast.planner import build_problem, parse_request
from meshcast.planner.synthetic import scaled_request
from meshcast.solver import SolveOptions, make_plan

PLANS = [
    ("sendrecv", "chain"),
    ("broadcast-lb", "chain"),
    ("broadcast-lb", "broadcast"),
    ("auto", "chain"),
    ("auto", "broadcast"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-bytes", type=parse_size, default=64 << 20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cases", help="comma-separated case names (default: every paper case)")
    args = parser.parse_args()
    files = sorted((SHARED / "cases").glob("paper-*.json"))
    if args.cases:
        files = [f for f in files if f.stem in args.cases.split(",")]
    requests = {f.stem: scaled_request(json.loads(f.read_text()), args.max_bytes) for f in files}
    num_ranks = max(1 + max(d for h in r["cluster"]["hosts"] for d in h) for r in requests.values())
    print(f"starting {num_ranks} local ranks (gloo)", flush=True)
    rows: list[list[Any]] = []
    data: list[dict[str, Any]] = []
    with (
        LocalWorld(num_ranks, timeout_s=300) as world,
        progress(len(requests) * len(PLANS), "executor runs") as steps,
    ):
        for k, (case, raw) in enumerate(requests.items()):
            parsed = parse_request(raw)
            problem = build_problem(parsed)
            plans = {a: make_plan(problem, a, SolveOptions(time_limit_s=2.0)) for a, _ in PLANS}
            walls = {}
            for algorithm, mode in PLANS:
                steps.begin(f"{case} {algorithm}/{mode}")
                started = time.perf_counter()
                report = run_plan(
                    world, parsed, plans[algorithm], RunSettings(mode=mode, repeats=args.repeats)
                )
                walls[(algorithm, mode)] = report.wall_s
                data.append(
                    {
                        "case": case,
                        "algorithm": algorithm,
                        "mode": mode,
                        "verified": report.verified,
                        "wall_s": report.wall_s,
                        "runs_s": report.runs_s,
                        "transfers": len(report.transfers),
                        "predicted_s": plans[algorithm].makespan_s,
                    }
                )
                print(
                    f"[{k + 1}/{len(requests)}] {case} {algorithm}/{mode}: "
                    f"{report.wall_s * 1e3:.1f} ms, verified={report.verified} "
                    f"({time.perf_counter() - started:.1f} s)",
                    flush=True,
                )
            base = walls[("sendrecv", "chain")]
            predicted = plans["sendrecv"].makespan_s / plans["auto"].makespan_s
            rows.append(
                [
                    case,
                    f"{base * 1e3:.0f}",
                    *(f"{walls[p] * 1e3:.0f}" for p in PLANS[1:]),
                    base / walls[("auto", "chain")],
                    base / walls[("auto", "broadcast")],
                    predicted,
                ]
            )
    header = [
        "case",
        "sendrecv ms",
        "bcast-lb chain ms",
        "bcast-lb bcast ms",
        "auto chain ms",
        "auto bcast ms",
        "speedup chain",
        "speedup bcast",
        "predicted speedup",
    ]
    table = markdown_table(header, rows)
    speedups = [r[-3] for r in rows]
    summary = (
        f"\ngeomean measured speedup of auto (chain) over sendrecv: {geomean(speedups):.2f}; "
        f"every run verified: {all(d['verified'] for d in data)}"
    )
    print(table + summary)
    note = (
        f"Wall time of `meshcast run`-style runs on one machine, paper cases scaled to "
        f"{args.max_bytes / 2**20:g} MiB, median of {args.repeats} runs.\n\n"
    )
    path = write_results("executor_run", note + table + summary, data)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
