"""The paper's one-to-many and many-to-many cases on the emulated testbed (root only).

Each case is scaled to `--max-bytes` (default 64 MiB) and run at `--nic-gbps` per host link
(default 0.5 Gbit/s) with every algorithm listed; the table gives measured and predicted
(port-v1, with the testbed's calibrated figures) times and the speedup over send/recv, measured
next to modelled; a plot shows the two speedups side by side.

    sudo python benchmarks/testbed_paper.py [--cases paper-1tom-4x2,...] [--algorithms ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, SHARED, geomean, markdown_table, write_results
from meshcast.api.cli_run import parse_size
from meshcast.api.progress import progress
from meshcast.planner import parse_request
from meshcast.planner.synthetic import scaled_request
from meshcast.testbed.bench import bench, bench_steps

DEFAULT_CASES = [
    "paper-1tom-1x2",
    "paper-1tom-1x4",
    "paper-1tom-2x2",
    "paper-1tom-4x2",
    "paper-n2m-case1",
    "paper-n2m-case3",
    "paper-n2m-case7",
]
DEFAULT_ALGORITHMS = "sendrecv,sendrecv-allgather,broadcast-lb,alpa-order,greedy,auto"


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = sorted({r["case"] for r in rows}, key=[r["case"] for r in rows].index)
    measured = [
        next(r["speedup_measured"] for r in rows if r["case"] == c and r["algorithm"] == "auto")
        for c in cases
    ]
    modelled = [
        next(r["speedup_predicted"] for r in rows if r["case"] == c and r["algorithm"] == "auto")
        for c in cases
    ]
    x = range(len(cases))
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(cases)), 4))
    ax.bar([i - 0.2 for i in x], modelled, width=0.4, label="port-v1 model")
    ax.bar([i + 0.2 for i in x], measured, width=0.4, label="measured on the testbed")
    ax.set_xticks(list(x), [c.removeprefix("paper-") for c in cases], rotation=30, ha="right")
    ax.set_ylabel("speedup of auto over send/recv")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(DEFAULT_CASES))
    parser.add_argument("--algorithms", default=DEFAULT_ALGORITHMS)
    parser.add_argument("--max-bytes", type=parse_size, default=64 << 20)
    parser.add_argument("--nic-gbps", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    algorithms = args.algorithms.split(",")
    rows: list[dict[str, Any]] = []
    calibrations = {}
    cases = args.cases.split(",")
    with progress(len(cases) * bench_steps(algorithms), "testbed paper cases") as steps:
        for k, case in enumerate(cases, 1):
            raw = json.loads((SHARED / "cases" / f"{case}.json").read_text())
            request = parse_request(scaled_request(raw, args.max_bytes))
            started = time.perf_counter()
            calibration, results = bench(
                request, algorithms, name="paper", nic_gbps=args.nic_gbps, repeats=args.repeats,
                step=lambda label, case=case: steps.begin(f"{case}: {label}"),
            )  # fmt: skip
            calibrations[case] = calibration
            base = next(r for r in results if r.algorithm == "sendrecv")
            for r in results:
                rows.append(
                    {
                        "case": case,
                        **r.to_json(),
                        "ratio": r.measured_s / r.predicted_s,
                        "speedup_measured": base.measured_s / r.measured_s,
                        "speedup_predicted": base.predicted_s / r.predicted_s,
                    }
                )
                print(
                    f"[{k}] {case} {r.algorithm}: measured {r.measured_s:.3f} s, predicted "
                    f"{r.predicted_s:.3f} s ({r.measured_s / r.predicted_s:.2f}x), "
                    f"verified={r.verified}",
                    flush=True,
                )
            print(f"[{k}] {case} done in {time.perf_counter() - started:.0f} s", flush=True)
    table = markdown_table(
        [
            "case",
            "algorithm",
            "measured s",
            "predicted s",
            "measured/predicted",
            "bound s",
            "speedup measured",
            "speedup model",
            "verified",
        ],
        [
            [
                r["case"],
                r["algorithm"],
                r["measured_s"],
                r["predicted_s"],
                r["ratio"],
                r["lower_bound_s"],
                r["speedup_measured"],
                r["speedup_predicted"],
                r["verified"],
            ]
            for r in rows
        ],
    )
    ratios = [r["ratio"] for r in rows]
    summary = (
        f"\nmeasured/predicted: min {min(ratios):.2f}, max {max(ratios):.2f}, geomean "
        f"{geomean(ratios):.2f}; all verified: {all(r['verified'] for r in rows)}; "
        f"{args.max_bytes / 2**20:g} MiB at {args.nic_gbps:g} Gbit/s per host link, median of "
        f"{args.repeats} runs"
    )
    print(table + summary)
    note = "Paper cases on the emulated testbed (network namespaces, tc-limited links).\n\n"
    write_results(
        "testbed_paper", note + table + summary, {"rows": rows, "calibrations": calibrations}
    )
    plot(rows, RESULTS / "testbed_paper.png")
    print(f"written to {RESULTS / 'testbed_paper.md'} and testbed_paper.png")


if __name__ == "__main__":
    main()
