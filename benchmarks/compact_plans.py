"""Compact plans end to end: planning, writing and each rank's executor set-up, against the
distinct work.

Rows (each in a fresh process, so its peak RSS is its own):
- a 4,096-GPU pipeline boundary (`boundary_request(256)`: 256 identical host pairs) with 1, 2
  and 8 identical tensors, and one tensor as large as the 8 together: repeated tensors inside
  repeated components, which the plan keeps as one stack inside one component and its copies;
- the 16,384-GPU gather boundary and Qwen3-235B's 24,725-tensor per-expert refit, the two
  plans `benchmarks/solver_scaling.py` names.

Per row, each the shortest of three runs: `make_plan` (greedy) wall time; writing the plan's
JSON (streamed to /dev/null); the executor's per-rank set-up (`executor.preparation.prepare`:
check the plan, choose the chunk size, work out the rank's program, fingerprint it; the
set-up's few collectives are not timed) for the template's sender, one of its receivers and
the same receiver's place in the last copy. Once: the same set-up from the plan read back from
JSON (every transfer spelled out: what a rank pays without the compact form), and peak RSS.

    python benchmarks/compact_plans.py [--only NAME]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import markdown_table, write_results
from meshcast.api.progress import progress

CASES = (
    "4096-GPU boundary, 1 tensor",
    "4096-GPU boundary, 2 identical tensors",
    "4096-GPU boundary, 8 identical tensors",
    "4096-GPU boundary, 1 tensor of 8x the rows",
    "16384-GPU gather boundary",
    "24725-tensor per-expert refit",
)


#: runs of planning, writing and each set-up per row (the shortest is reported)
REPEATS = 3


def _request(name: str) -> dict[str, Any]:
    from meshcast.planner.synthetic_scale import boundary_request, qwen3_235b_per_expert_refit

    if name.startswith("4096-GPU boundary"):
        count = int(name.split(", ")[1].split()[0])
        if "8x the rows" in name:
            return boundary_request(256, batch=8 * 2048)
        raw = boundary_request(256)
        (tensor,) = raw["tensors"]
        raw["tensors"] = [dict(copy.deepcopy(tensor), name=f"hidden{i}") for i in range(count)]
        return raw
    if name == "16384-GPU gather boundary":
        return boundary_request(1024, batch=4 * 1024)  # as in solver_scaling.py
    return qwen3_235b_per_expert_refit()


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - started


def _ranks(plan: Any) -> dict[str, int]:
    """The ranks whose set-up is timed: the template's first sender and receiver, and that
    receiver's counterpart in the last copy."""
    from meshcast.planner.compact import CompactTransfers

    transfers = plan.transfers
    own = transfers.own if isinstance(transfers, CompactTransfers) else transfers
    first = own[0]
    ranks = {"sender": first.src, "receiver": first.dst[0]}
    if isinstance(transfers, CompactTransfers) and transfers.replicas:
        last = transfers.replicas[-1].copies[-1]
        ranks["copy receiver"] = last.device[first.dst[0]]
    return ranks


def measure(name: str) -> dict[str, Any]:
    """One row, in this process."""
    from meshcast.executor.preparation import prepare
    from meshcast.planner import build_problem, parse_request
    from meshcast.planner.compact import CompactTransfers
    from meshcast.planner.plan import Plan
    from meshcast.solver import SolveOptions, make_plan

    request = parse_request(_request(name))
    problem = build_problem(request)
    # the best of three (this machine's neighbours are noisy); each from a fresh problem
    planned = [
        _timed(lambda: make_plan(build_problem(request), "greedy", SolveOptions(5.0)))
        for _ in range(REPEATS)
    ]
    plan, plan_s = planned[0][0], min(s for _, s in planned)
    with open(os.devnull, "w") as sink:
        write_s = min(_timed(lambda: plan.write_json(sink))[1] for _ in range(REPEATS))
    world = 1 + max(problem.topology.host_of)
    settings = {"mode": "chain", "chunk_bytes": 4 << 20, "staging_bytes": 64 << 20}
    setup_s = {}
    for role, rank in _ranks(plan).items():
        setup_s[role] = min(
            _timed(lambda r=rank: prepare(plan, request, r, world, **settings))[1]
            for _ in range(REPEATS)
        )
    compact = isinstance(plan.transfers, CompactTransfers)
    built = compact and "_built" in vars(plan.transfers)
    flat = Plan.from_json(json.loads(plan.to_json_text())) if compact else plan
    receiver = _ranks(plan)["receiver"]
    _, flat_s = _timed(lambda: prepare(flat, request, receiver, world, **settings))
    return {
        "case": name,
        "devices": world,
        "tensors": len(request.tensors),
        "transfers": len(plan.transfers),
        "spelled_out": len(plan.transfers.own) if compact else len(plan.transfers),
        "ratio": plan.ratio,
        "plan_s": plan_s,
        "write_s": write_s,
        "setup_s": setup_s,
        "setup_from_json_s": flat_s,
        "expanded_during_setup": built,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def planning_rss_mb(name: str) -> dict[str, float]:
    """Peak RSS of planning alone (before torch is imported), then with the set-ups (torch
    imported; no JSON round trip), in this process."""
    from meshcast.planner import build_problem, parse_request
    from meshcast.solver import SolveOptions, make_plan

    request = parse_request(_request(name))
    problem = build_problem(request)
    plan = make_plan(problem, "greedy", SolveOptions(5.0))
    planned = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    from meshcast.executor.preparation import prepare  # imports torch

    world = 1 + max(problem.topology.host_of)
    settings: dict[str, Any] = {"mode": "chain", "chunk_bytes": 4 << 20, "staging_bytes": 64 << 20}
    for rank in _ranks(plan).values():
        prepare(plan, request, rank, world, **settings)
    return {"plan": planned, "setup": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _child(*args: str) -> Any:
    """The last JSON line a fresh child of this script prints (a child's peak RSS starts
    from its parent's, so every measurement has a parent that holds little)."""
    out = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="run one case (by name), in this process; print JSON")
    parser.add_argument(
        "--rss", action="store_true", help="with --only: the peak RSS of planning and set-up"
    )
    args = parser.parse_args(argv)
    if args.only:
        print(json.dumps(planning_rss_mb(args.only) if args.rss else measure(args.only)))
        return 0
    rows = []
    with progress(len(CASES), "compact plans") as steps:
        for name in CASES:
            steps.begin(name)
            rows.append(_child("--only", name))
            rows[-1]["peak_rss_planning_mb"] = _child("--only", name, "--rss")
            print(json.dumps(rows[-1]), flush=True)
    header = [
        "case",
        "transfers",
        "spelled out",
        "ratio",
        "make_plan s",
        "write s",
        "set-up s per rank (compact)",
        "set-up s (from JSON)",
        "set-up / make_plan",
        "peak RSS MB: plan",
        "plan + set-up (torch)",
        "with JSON round trip",
    ]
    table = [
        [
            r["case"],
            r["transfers"],
            r["spelled_out"],
            round(r["ratio"], 4),
            round(r["plan_s"], 3),
            round(r["write_s"], 3),
            " / ".join(f"{v:.3f}" for v in r["setup_s"].values()),
            round(r["setup_from_json_s"], 3),
            round(max(r["setup_s"].values()) / r["plan_s"], 3),
            round(r["peak_rss_planning_mb"]["plan"]),
            round(r["peak_rss_planning_mb"]["setup"]),
            round(r["peak_rss_mb"]),
        ]
        for r in rows
    ]
    roles = " / ".join(dict.fromkeys(k for r in rows for k in r["setup_s"]))
    markdown = (
        "# Compact plans: planning, writing and per-rank set-up\n\n"
        f"Set-up per rank: {roles} (`executor.preparation.prepare`, collectives excluded); "
        "from JSON: the receiver's set-up on the same plan read back from its document.\n\n"
        + markdown_table(header, table)
    )
    print(markdown)
    print(f"results: {write_results('compact_plans', markdown, rows)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
