"""A plan as one self-contained HTML page: summary, per-port timeline, port load against the
bound, largest transfers. No scripts or assets from elsewhere (air-gapped clusters): inline
CSS and SVG; hovering a bar shows its transfer (an SVG `<title>`)."""

from __future__ import annotations

import html
from typing import Any

from meshcast.api.render import port_rows
from meshcast.planner.plan import Plan
from meshcast.planner.problem import Problem
from meshcast.planner.simulate import check_plan
from meshcast.planner.summary import summarize

#: most bars drawn on the timeline (a bar per transfer per port it holds); beyond, the first
#: transfers in plan order are drawn and the page says so
MAX_BARS = 20_000
#: most transfers listed as the largest
LARGEST = 12
ROW_PX, LABEL_PX, WIDTH_PX = 16, 130, 1100

STYLE = """
body { font: 13px system-ui, sans-serif; margin: 24px; color: #1d232a; }
h1 { font-size: 20px; margin: 0 0 12px; } h2 { font-size: 15px; margin: 24px 0 8px; }
table { border-collapse: collapse; } td, th { padding: 3px 10px; text-align: left; }
tr:nth-child(even) td { background: #f3f5f7; } th { border-bottom: 1px solid #c9d1d9; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
svg text { font: 11px system-ui, sans-serif; fill: #1d232a; }
rect.transfer { fill: #2f6fb3; stroke: #fff; stroke-width: 0.6; }
rect.transfer.nvlink { fill: #3a9b6b; }
rect.transfer:hover { fill: #e3883a; } rect.load { fill: #2f6fb3; }
line.bound { stroke: #c23b3b; stroke-width: 1.5; stroke-dasharray: 4 3; }
.note { color: #6a737d; }
"""


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1e3:.3f} ms" if value < 1 else f"{value:.3f} s"


def _bytes(value: float | None) -> str:
    if value is None:
        return "-"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if value >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value:.0f} B"


def _summary(summary: dict[str, Any], plan: Plan) -> str:
    ratio = summary["ratio"]
    rows = [
        ("request", plan.request_id[:16] + "..." if plan.request_id else "-"),
        ("algorithm", summary["algorithm"]),
        ("status", summary["status"]),
        ("valid", "yes" if summary["valid"] else f"NO: {summary['errors'][0]}"),
        ("makespan", _seconds(summary["makespan_s"])),
        ("lower bound", _seconds(summary["lower_bound_s"])),
        ("makespan / bound", "-" if ratio is None else f"{ratio:.4f}"),
        ("bytes on the wire", _bytes(summary["wire_bytes"])),
        ("transfers", f"{summary['transfers']:,}"),
        ("solve time", _seconds(summary["solve_time_s"])),
        ("busiest port", f"{summary['busiest_port']} ({_seconds(summary['busiest_port_s'])})"),
    ]
    body = "".join(
        f'<tr><th scope="row">{html.escape(k)}</th><td data-key="{html.escape(k)}">'
        f"{html.escape(str(v))}</td></tr>"
        for k, v in rows
    )
    return f'<section id="summary"><table>{body}</table></section>'


def _describe(problem: Problem, plan: Plan, k: int) -> str:
    tr = plan.transfers[k]
    tensors = problem.request.tensors
    pieces = "; ".join(
        f"{tensors[p.tensor].name}[{', '.join(f'{lo}:{hi}' for lo, hi in p.box)}]"
        for p in tr.pieces[:6]
    )
    more = f" (+{len(tr.pieces) - 6} pieces)" if len(tr.pieces) > 6 else ""
    return (
        f"transfer {k}: {tr.src} -> {list(tr.dst)}, "
        f"{_bytes(sum(problem.piece_bytes(p) for p in tr.pieces))}, "
        f"{_seconds(tr.start_s)} - {_seconds(tr.end_s)}; {pieces}{more}"
    )


def _timeline(problem: Problem, plan: Plan) -> str:
    rows = port_rows(problem, plan)
    drawn = len(plan.transfers)
    bars = sum(len(spans) for spans in rows.values())
    if bars > MAX_BARS:  # keep the first transfers in plan order
        per_transfer = bars / max(1, len(plan.transfers))
        drawn = max(1, int(MAX_BARS / per_transfer))
        rows = {name: [s for s in spans if s[0] < drawn] for name, spans in rows.items()}
        rows = {name: spans for name, spans in rows.items() if spans}
    end = max((tr.end_s for tr in plan.transfers), default=0.0) or 1.0
    scale = (WIDTH_PX - LABEL_PX - 10) / end
    height = ROW_PX * len(rows) + 24
    parts = [
        f'<svg id="timeline-svg" xmlns="http://www.w3.org/2000/svg" width="{WIDTH_PX}" '
        f'height="{height}" role="img" aria-label="per-port timeline">'
    ]
    for i, (name, spans) in enumerate(rows.items()):
        y = 4 + i * ROW_PX
        kind = "nvlink" if name.startswith("link") else "nic"
        parts.append(
            f'<g class="port" data-port="{html.escape(name)}"><text x="0" y="{y + 11}">'
            f"{html.escape(name)}</text>"
        )
        for k, start, stop in spans:
            x, w = LABEL_PX + start * scale, max(1.0, (stop - start) * scale)
            parts.append(
                f'<rect class="transfer {kind}" data-transfer="{k}" x="{x:.1f}" y="{y}" '
                f'width="{w:.1f}" height="{ROW_PX - 3}"><title>'
                f"{html.escape(_describe(problem, plan, k))}</title></rect>"
            )
        parts.append("</g>")
    axis_y = 4 + len(rows) * ROW_PX + 14
    parts.append(f'<text x="{LABEL_PX}" y="{axis_y}">0</text>')
    parts.append(f'<text x="{WIDTH_PX - 80}" y="{axis_y}">{_seconds(end)}</text></svg>')
    note = (
        f'<p class="note">showing the first {drawn:,} of {len(plan.transfers):,} transfers '
        f"({bars:,} bars in all)</p>"
        if drawn < len(plan.transfers)
        else ""
    )
    heading = "<h2>Timeline, one row per port</h2>"
    return f'<section id="timeline">{heading}{note}{"".join(parts)}</section>'


def _load(problem: Problem, plan: Plan, busy: list[float]) -> str:
    topo = problem.topology
    used = sorted((s, p) for p, s in enumerate(busy) if s > 0)[::-1][:48]
    bound = problem.lower_bound_s
    top = max([bound, *(s for s, _ in used)], default=1.0) or 1.0
    scale = (WIDTH_PX - LABEL_PX - 80) / top
    height = ROW_PX * len(used) + 8
    parts = [
        f'<svg id="load-svg" xmlns="http://www.w3.org/2000/svg" width="{WIDTH_PX}" '
        f'height="{height}" role="img" aria-label="port load against the lower bound">'
    ]
    for i, (seconds, port) in enumerate(used):
        y = 4 + i * ROW_PX
        parts.append(
            f'<text x="0" y="{y + 11}">{html.escape(topo.port_name(port))}</text>'
            f'<rect class="load" x="{LABEL_PX}" y="{y}" width="{max(1.0, seconds * scale):.1f}" '
            f'height="{ROW_PX - 3}"><title>{_seconds(seconds)} busy</title></rect>'
            f'<text x="{LABEL_PX + seconds * scale + 6:.1f}" y="{y + 11}">'
            f"{_seconds(seconds)}</text>"
        )
    x = LABEL_PX + bound * scale
    parts.append(
        f'<line class="bound" x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{height}">'
        f"<title>lower bound {_seconds(bound)}</title></line></svg>"
    )
    return (
        '<section id="load"><h2>Busiest ports: seconds held, against the lower bound '
        f"(dashed, {_seconds(bound)})</h2>{''.join(parts)}</section>"
    )


def _largest(problem: Problem, plan: Plan) -> str:
    sizes = sorted(
        (
            (sum(problem.piece_bytes(p) for p in tr.pieces), k)
            for k, tr in enumerate(plan.transfers)
        ),
        reverse=True,
    )[:LARGEST]
    rows = "".join(
        f'<tr><td class="num">{k}</td><td>{plan.transfers[k].src}</td>'
        f"<td>{html.escape(str(list(plan.transfers[k].dst)))}</td>"
        f'<td class="num">{_bytes(size)}</td>'
        f'<td class="num">{_seconds(plan.transfers[k].end_s - plan.transfers[k].start_s)}</td>'
        f"<td>{len(plan.transfers[k].pieces)}</td></tr>"
        for size, k in sizes
    )
    return (
        '<section id="largest"><h2>Largest transfers</h2><table><tr><th>#</th><th>src</th>'
        "<th>dst (chain order)</th><th>bytes</th><th>duration</th><th>pieces</th></tr>"
        f"{rows}</table></section>"
    )


def plan_page(problem: Problem, plan: Plan) -> str:
    """The whole page for `plan` of the request in `problem`, times recomputed (port-v1)."""
    sim = check_plan(problem, plan)
    summary = summarize(problem, plan, simulation=sim)
    title = f"meshcast plan {plan.request_id[:12]}" if plan.request_id else "meshcast plan"
    busy = sim.port_busy_s
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{STYLE}</style></head><body><h1>{title}</h1>"
        f"{_summary(summary, plan)}{_timeline(problem, plan)}{_load(problem, plan, busy)}"
        f"{_largest(problem, plan)}</body></html>"
    )


def index_page(entries: list[tuple[str, dict[str, Any]]]) -> str:
    """A page listing cached plans (request id, algorithm, makespan), linking to each."""
    rows = "".join(
        f'<tr><td><a href="/v1/plans/{rid}/view">{rid[:16]}...</a></td>'
        f"<td>{html.escape(str(plan.get('algorithm')))}</td>"
        f'<td class="num">{_seconds(plan.get("makespan_s"))}</td>'
        f'<td class="num">{len(plan.get("transfers", []))}</td></tr>'
        for rid, plan in entries
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>meshcast plans'
        f"</title><style>{STYLE}</style></head><body><h1>Cached plans</h1><table><tr>"
        "<th>request</th><th>algorithm</th><th>makespan</th><th>transfers</th></tr>"
        f"{rows}</table></body></html>"
    )
