"""`meshcast run --algorithm auto --json` end to end on held-out random layouts.

Draws requests (1-D to 3-D meshes, uneven shapes, disjoint, overlapping or equal meshes, one to
three tensors of any dtype) with at most `--max-ranks` device ids from a seed no test uses, runs
the command line on each as a user would, and records whether every shard verified, the
measured wall time and how long the whole command took.

    python benchmarks/executor_heldout.py [--seed 4242] [--count 12] [--max-ranks 12]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import markdown_table, write_results
from meshcast.api.progress import progress
from meshcast.planner.dtypes import ITEMSIZE_BYTES
from meshcast.planner.synthetic import random_request


def draw(rng: random.Random, max_ranks: int) -> dict[str, Any]:
    while True:
        request = random_request(rng, max_hosts=4)
        devices = {d for m in request["meshes"].values() for d in m["devices"]}
        if max(devices) < max_ranks:
            for tensor in request["tensors"]:
                tensor["dtype"] = rng.choice(sorted(ITEMSIZE_BYTES))
            request["cluster"]["hosts"] = [
                [d for d in host if d < max_ranks] for host in request["cluster"]["hosts"]
            ]
            request["cluster"]["hosts"] = [h for h in request["cluster"]["hosts"] if h]
            return request


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=4242)
    parser.add_argument("--count", type=int, default=12)
    parser.add_argument("--max-ranks", type=int, default=12)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    meshcast = str(Path(sys.executable).parent / "meshcast")
    rows, data = [], []
    with (
        tempfile.TemporaryDirectory() as tmp,
        progress(args.count, "held-out executor runs") as steps,
    ):
        for k in range(args.count):
            steps.begin(f"request {k + 1}")
            request = draw(rng, args.max_ranks)
            path = Path(tmp, f"heldout-{k}.json")
            path.write_text(json.dumps(request))
            started = time.perf_counter()
            done = subprocess.run(
                [meshcast, "run", str(path), "--algorithm", "auto", "--json"],
                capture_output=True,
                text=True,
                timeout=600,
            )
            elapsed = time.perf_counter() - started
            lines = done.stdout.strip().splitlines()
            summary = json.loads(lines[-1]) if lines else {"verified": False}
            num_ranks = 1 + max(d for m in request["meshes"].values() for d in m["devices"])
            num_bytes = sum(
                math.prod(t["shape"]) * ITEMSIZE_BYTES[t["dtype"]] for t in request["tensors"]
            )
            dtypes = ",".join(t["dtype"] for t in request["tensors"])
            meshes = " -> ".join(str(m["shape"]) for m in request["meshes"].values())
            row = [
                k,
                num_ranks,
                meshes,
                dtypes,
                num_bytes / 2**20,
                summary["verified"],
                summary.get("wall_s", math.nan) * 1e3,
                elapsed,
                done.returncode,
            ]
            rows.append(row)
            data.append(
                {
                    "request": request,
                    "summary": summary,
                    "elapsed_s": elapsed,
                    "exit": done.returncode,
                    "stderr": done.stderr[-2000:],
                }
            )
            print(
                f"[{k + 1}/{args.count}] ranks={num_ranks} {meshes} verified={summary['verified']} "
                f"({elapsed:.1f} s)",
                flush=True,
            )
    header = ["#", "ranks", "meshes", "dtypes", "MiB", "verified", "wall ms", "command s", "exit"]
    table = markdown_table(header, rows)
    verdict = (
        f"\n{sum(1 for r in rows if r[5] is True)}/{len(rows)} verified; slowest command "
        f"{max(r[7] for r in rows):.1f} s (seed {args.seed})"
    )
    print(table + verdict)
    path = write_results("executor_heldout", table + verdict, data)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
