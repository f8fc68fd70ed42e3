"""Pictures of a simulated pipeline iteration: a Chrome trace and a PNG Gantt chart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from meshcast.pipeline.simulate import PipelineResult


def _lanes(result: PipelineResult) -> list[str]:
    stages = sorted(
        {i.lane for i in result.intervals if i.lane.startswith("stage")},
        key=lambda lane: int(lane.split()[1]),
    )
    channels = sorted({i.lane for i in result.intervals if not i.lane.startswith("stage")})
    return stages + channels


def chrome_trace(result: PipelineResult, title: str) -> dict[str, Any]:
    """Trace Event Format: one thread per stage and per channel (opens in Perfetto)."""
    lanes = _lanes(result)
    events: list[dict[str, Any]] = [
        {"name": "process_name", "ph": "M", "pid": 0, "args": {"name": title}}
    ]
    events += [
        {"name": "thread_name", "ph": "M", "pid": 0, "tid": tid, "args": {"name": lane}}
        for tid, lane in enumerate(lanes)
    ]
    events += [
        {
            "name": i.name,
            "ph": "X",
            "pid": 0,
            "tid": lanes.index(i.lane),
            "ts": i.start_s * 1e6,
            "dur": (i.end_s - i.start_s) * 1e6,
        }
        for i in result.intervals
    ]
    return {"traceEvents": events, "displayTimeUnit": "ms"}


def write_trace(result: PipelineResult, title: str, path: Path) -> None:
    path.write_text(json.dumps(chrome_trace(result, title)))


def write_gantt(result: PipelineResult, title: str, path: Path) -> None:
    """One row per stage and per channel; forwards blue, backwards orange, transfers grey."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lanes = _lanes(result)
    fig, ax = plt.subplots(figsize=(12, max(2.5, 0.45 * len(lanes) + 1.2)))
    colours = {"F": "tab:blue", "B": "tab:orange", "A": "0.6", "G": "0.8"}
    for interval in result.intervals:
        y = lanes.index(interval.lane)
        ax.broken_barh(
            [(interval.start_s * 1e3, (interval.end_s - interval.start_s) * 1e3)],
            (y - 0.4, 0.8),
            facecolors=colours[interval.name[0]],
            edgecolor="black",
            linewidth=0.3,
        )
        if interval.lane.startswith("stage"):
            ax.text(
                (interval.start_s + interval.end_s) / 2 * 1e3,
                y,
                interval.name,
                ha="center",
                va="center",
                fontsize=5,
            )
    ax.set_yticks(range(len(lanes)), lanes, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("time (ms)")
    ax.set_title(
        f"{title}: iteration {result.iteration_s * 1e3:.1f} ms, bubble "
        f"{result.bubble_fraction:.1%}, peak in flight {result.peak_inflight}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
