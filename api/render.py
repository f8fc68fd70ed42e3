"""Pictures of a plan's port-v1 schedule: a Gantt chart per port and a Chrome trace."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from meshcast.planner.cost import transfer_cost
from meshcast.planner.plan import Plan
from meshcast.planner.problem import Problem


def port_rows(problem: Problem, plan: Plan) -> dict[str, list[tuple[int, float, float]]]:
    """Per port name: (transfer id, start, end) of every transfer holding it."""
    topo = problem.topology
    rows: dict[int, list[tuple[int, float, float]]] = {}
    for k, tr in enumerate(plan.transfers):
        num_bytes = sum(problem.piece_bytes(piece) for piece in tr.pieces)
        _, ports = transfer_cost(topo, num_bytes, tr.src, tr.dst)
        for p in ports:
            rows.setdefault(p, []).append((k, tr.start_s, tr.end_s))
    return {topo.port_name(p): rows[p] for p in sorted(rows)}


def chrome_trace(problem: Problem, plan: Plan) -> dict[str, Any]:
    """Trace Event Format: one thread per port, one complete event per transfer on it."""
    events: list[dict[str, Any]] = []
    for tid, (name, spans) in enumerate(port_rows(problem, plan).items()):
        events.append(
            {"name": "thread_name", "ph": "M", "pid": 0, "tid": tid, "args": {"name": name}}
        )
        for k, start, end in spans:
            tr = plan.transfers[k]
            events.append(
                {
                    "name": f"t{k} {tr.src}->{','.join(map(str, tr.dst))}",
                    "ph": "X",
                    "pid": 0,
                    "tid": tid,
                    "ts": start * 1e6,
                    "dur": (end - start) * 1e6,
                    "args": {"transfer": k, "pieces": len(tr.pieces)},
                }
            )
    return {"traceEvents": events, "displayTimeUnit": "ms"}


def write_trace(problem: Problem, plan: Plan, path: Path) -> None:
    path.write_text(json.dumps(chrome_trace(problem, plan)))


def write_gantt(problem: Problem, plan: Plan, path: Path) -> None:
    """A PNG with one row per port in use and one bar per transfer holding it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = port_rows(problem, plan)
    height = max(2.5, 0.22 * len(rows) + 1.2)
    fig, ax = plt.subplots(figsize=(11, min(height, 60)))
    cmap = plt.get_cmap("tab20")
    for y, spans in enumerate(rows.values()):
        ax.broken_barh(
            [(s * 1e3, (e - s) * 1e3) for _, s, e in spans],
            (y - 0.4, 0.8),
            facecolors=[cmap(k % 20) for k, _, _ in spans],
            edgecolor="black",
            linewidth=0.2,
        )
    ax.set_yticks(range(len(rows)), list(rows), fontsize=7)
    ax.invert_yaxis()
    ax.axvline(
        plan.lower_bound_s * 1e3, color="red", linestyle="--", linewidth=1, label="lower bound"
    )
    ax.set_xlabel("time (ms)")
    ax.set_title(
        f"{plan.algorithm}: {len(plan.transfers)} transfers, "
        f"makespan {plan.makespan_s * 1e3:.3f} ms ({plan.ratio:.3f} x lower bound)"
    )
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
