"""Executor memory at refit scale, and wall time, against an earlier executor in the same run.

MoE refit requests (pipeline-stage training meshes to inference engines, and engines colocated
on the training devices; bf16, 88-176 MiB of destination shards per inference rank) run on a
local gloo world. Per rank: destination bytes and peak memory growth from before `Executor(...)`
to the end of the run (RSS high-water mark on CPU), for
  - the baseline executor (`--baseline`, a git revision: its tree is exported to a temporary
    folder and run in its own processes, contiguous sources, no `out`),
  - this executor without `out` (it allocates each destination shard once), and
  - this executor with `out=` (caller-owned tensors; sources and outs strided views),
every run verified byte for byte. The bound is the staging budget + 32 MiB with `out`, plus the
rank's destination bytes without it, plus the relay buffers the plan needs (reported).
With `--wall`, `executor_run.py` (paper cases at 64 MiB, loopback) and, as root,
`meshcast testbed bench` (chain mode, emulated hosts) run under both trees, alternately.

    python benchmarks/executor_memory.py [--staging 16MiB] [--baseline e930077] [--wall]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

TREE = os.environ.get("MESHCAST_BENCH_TREE")
sys.path.insert(0, TREE or str(Path(__file__).resolve().parents[1]))
HERE = Path(__file__).resolve().parents[1]

from meshcast.planner import build_problem, parse_request  # noqa: E402

#: the executor this one replaced (copies of whole shards, buffers kept between runs)
BASELINE = "e930077"
SLACK_BYTES = 32 << 20
MIB = 2**20


def _requests() -> dict[str, dict[str, Any]]:
    from meshcast.planner.synthetic import moe_refit_request

    return {
        "refit pp2x2 -> 2 engines x2 (8 ranks)": moe_refit_request(),
        "refit pp2x2 -> 2 engines x2, colocated (4 ranks)": moe_refit_request(colocated=True),
        "refit pp2x2 -> 2 engines x4 (12 ranks)": moe_refit_request(engine_tp=4),
    }


def _memory_module() -> Any:
    """This tree's `executor/memory.py`, also inside a baseline tree's processes."""
    spec = importlib.util.spec_from_file_location("meshcast_memory", HERE / "executor/memory.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _baseline_rank(request_json: dict[str, Any], plan_json: dict[str, Any]) -> dict[str, Any]:
    """One rank with the baseline's API: `Executor(plan, request).run(shards)`."""
    import torch
    import torch.distributed as dist

    from meshcast.executor import Executor
    from meshcast.executor.local_run import reference_sources, verify_received
    from meshcast.planner.plan import Plan

    request, plan = parse_request(request_json), Plan.from_json(plan_json)
    shards = reference_sources(request)
    with _memory_module().PeakMemory(torch.device("cpu")) as peak:
        executor = Executor(plan, request)
        received = executor.run(shards)
        dist.barrier()
    verified = not verify_received(request, received)
    executor.close()
    return {"rank": dist.get_rank(), "peak_growth_bytes": peak.growth_bytes, "verified": verified}


def measure(
    request_json: dict[str, Any], plan_json: dict[str, Any], variant: str, staging: int
) -> Any:
    """Run one variant on a fresh local world; per-rank memory and whether it verified."""
    from meshcast.executor.local_world import LocalWorld
    from meshcast.planner.plan import Plan

    request = parse_request(request_json)
    num_ranks = 1 + max(build_problem(request).topology.host_of)
    with LocalWorld(num_ranks, timeout_s=600) as world:
        if variant == "baseline":
            return world.run(_baseline_rank, request_json, plan_json)
        from meshcast.executor.local_run import RunSettings, run_plan

        settings = RunSettings(
            staging_bytes=staging, use_out=variant == "out", strided=variant == "out"
        )
        report = run_plan(world, request, Plan.from_json(plan_json), settings)
        return [dict(m, verified=report.verified) for m in report.memory]


def _run_in(tree: Path, *args: str) -> str:
    """`python ARGS` with `tree`'s packages first on the path; its standard output."""
    env = {**os.environ, "MESHCAST_BENCH_TREE": str(tree), "PYTHONPATH": str(tree)}
    done = subprocess.run(
        [sys.executable, *args], cwd=tree, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{tree}: {' '.join(args[:3])} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def _in_tree(tree: Path, *args: str) -> Any:
    """This script's `--measure` in `tree`'s code, in its own processes; its JSON answer."""
    stdout = _run_in(tree, str(Path(__file__).resolve()), *args)
    return json.loads(stdout.strip().splitlines()[-1])


def export_tree(revision: str, into: Path) -> Path:
    """The project as it was at `revision`, as files (`git archive`), beside `../shared`."""
    tree = into / "meshcast"
    tree.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(HERE), "archive", revision], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    (into / "shared").symlink_to(HERE.parent / "shared")
    return tree


def memory_table(baseline: Path, staging: int) -> tuple[str, list[dict[str, Any]]]:
    from benchmarks.common import markdown_table
    from meshcast.solver import SolveOptions, make_plan

    rows, data = [], []
    for name, request_json in _requests().items():
        problem = build_problem(parse_request(request_json))
        plan = make_plan(problem, "auto", SolveOptions(time_limit_s=2.0))
        print(f"{name}: {len(plan.transfers)} transfers, ratio {plan.ratio:.3f}", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            paths = [Path(tmp, "request.json"), Path(tmp, "plan.json")]
            paths[0].write_text(json.dumps(request_json))
            paths[1].write_text(json.dumps(plan.to_json()))
            files = [str(p) for p in paths]
            runs = {
                "baseline": _in_tree(baseline, "--measure", *files, "baseline"),
                "alloc": _in_tree(HERE, "--measure", *files, "alloc", str(staging)),
                "out": _in_tree(HERE, "--measure", *files, "out", str(staging)),
            }
        by_rank = {v: {m["rank"]: m for m in ms} for v, ms in runs.items()}
        for rank in sorted(by_rank["out"]):
            new, out, old = by_rank["alloc"][rank], by_rank["out"][rank], by_rank["baseline"][rank]
            relay = out["peak_relay_bytes"]
            bound_out = out["staging_bytes"] + relay + SLACK_BYTES
            bound_alloc = bound_out + new["destination_bytes"]
            verified = old["verified"] and new["verified"] and out["verified"]
            row = {
                "request": name,
                "rank": rank,
                "destination_mib": new["destination_bytes"] / MIB,
                "baseline_growth_mib": old["peak_growth_bytes"] / MIB,
                "growth_mib": new["peak_growth_bytes"] / MIB,
                "growth_out_mib": out["peak_growth_bytes"] / MIB,
                "staging_mib": out["staging_bytes"] / MIB,
                "relay_mib": relay / MIB,
                "within_bound": new["peak_growth_bytes"] <= bound_alloc
                and out["peak_growth_bytes"] <= bound_out,
                "verified": verified,
            }
            data.append(row)
            rows.append(
                [
                    name,
                    rank,
                    *[f"{v:.1f}" for v in list(row.values())[2:8]],
                    row["within_bound"],
                    verified,
                ]
            )
    header = [
        "request",
        "rank",
        "dst MiB",
        "baseline growth MiB",
        "growth MiB (no out)",
        "growth MiB (out)",
        "staging MiB",
        "relay MiB",
        "within bound",
        "verified",
    ]
    return markdown_table(header, rows), data


def _wall_executor_run(tree: Path, cases: str | None) -> dict[str, float]:
    script = str(tree / "benchmarks/executor_run.py")
    _run_in(tree, script, "--repeats", "3", *(["--cases", cases] if cases else []))
    rows = json.loads((tree / "benchmarks/results/executor_run.json").read_text())
    return {f"{r['case']} {r['algorithm']} {r['mode']}": r["wall_s"] for r in rows}


def _wall_testbed(tree: Path, request: Path) -> dict[str, float]:
    stdout = _run_in(
        tree,
        *(
            "-m",
            "meshcast.api.cli",
            "testbed",
            "bench",
            str(request),
            "--algorithms",
            "sendrecv,auto",
        ),
        *("--max-bytes", "64MiB", "--json", "--name", "membench"),
    )
    results = json.loads(stdout.strip().splitlines()[-1])["results"]
    return {f"testbed {request.stem} {r['algorithm']}": r["measured_s"] for r in results}


def wall_table(
    baseline: Path, rounds: int = 2, cases: str | None = None
) -> tuple[str, dict[str, Any]]:
    from benchmarks.common import SHARED, geomean, markdown_table

    testbed_case = SHARED / "cases" / "paper-n2m-case1.json"
    times: dict[str, dict[str, list[float]]] = {"baseline": {}, "now": {}}
    for k in range(rounds):
        for label, tree in (("baseline", baseline), ("now", HERE)):
            print(f"wall round {k + 1}/{rounds}: {label}", flush=True)
            figures = _wall_executor_run(tree, cases)
            if os.geteuid() == 0:
                figures.update(_wall_testbed(tree, testbed_case))
            for key, value in figures.items():
                times[label].setdefault(key, []).append(value)
    rows, ratios = [], []
    for key in times["now"]:
        old, new = min(times["baseline"][key]), min(times["now"][key])
        ratios.append(new / old)
        rows.append([key, f"{old * 1e3:.1f}", f"{new * 1e3:.1f}", f"{new / old:.3f}"])
    rows.append(["geomean", "", "", f"{geomean(ratios):.3f}"])
    return markdown_table(["run", "baseline ms", "now ms", "now / baseline"], rows), times


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--measure":
        request_json, plan_json = (json.loads(Path(p).read_text()) for p in sys.argv[2:4])
        staging = int(sys.argv[5]) if len(sys.argv) > 5 else 0
        print(json.dumps(measure(request_json, plan_json, sys.argv[4], staging)))
        return
    from benchmarks.common import write_results
    from meshcast.api.cli_run import parse_size

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--staging", type=parse_size, default=16 << 20)
    parser.add_argument("--baseline", default=BASELINE, help="git revision to compare with")
    parser.add_argument("--wall", action="store_true", help="also wall times, both trees")
    parser.add_argument("--rounds", type=int, default=2, help="wall rounds per tree (min kept)")
    parser.add_argument("--cases", help="executor_run.py cases for the wall times (default all)")
    parser.add_argument("--skip-memory", action="store_true", help="wall times only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="meshcast-baseline-") as tmp:
        baseline = export_tree(args.baseline, Path(tmp))
        markdown = f"staging {args.staging / MIB:g} MiB, baseline {args.baseline}"
        data: dict[str, Any] = {"staging_bytes": args.staging}
        if not args.skip_memory:
            memory_md, data["memory"] = memory_table(baseline, args.staging)
            print(memory_md)
            markdown += f"\n\n{memory_md}"
        if args.wall:
            wall_md, data["wall"] = wall_table(baseline, args.rounds, args.cases)
            print(wall_md)
            markdown += f"\n\n{wall_md}"
    print(f"wrote {write_results('executor_memory', markdown, data)}")


if __name__ == "__main__":
    main()
