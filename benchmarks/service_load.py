"""Load on a real `meshcast serve`: cached and uncached plan requests, one and many clients.

Starts the service from this checkout on a free port with a fresh SQLite cache, then measures
latency (p50, p99) and throughput of: `GET /healthz` (the floor: no cache, no parsing), cached
`POST /v1/plans` from one client and from 16, distinct uncached requests from 8 clients, and 16
identical uncached requests at once (solves counted from `/metrics`), and greedy plan
requests while three 15 s comparisons of the 32-to-16 GPU refit are in flight (the compare lane
admits two; the third is answered 503).

    python benchmarks/service_load.py [--requests 400] [--workers 1]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import SHARED, markdown_table, write_results
from meshcast.api.progress import progress
from meshcast.planner.synthetic import shared_like_request
from tests.api.server import running_server

CASES = SHARED / "cases"


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def _measure(
    name: str, calls: list[Callable[[httpx.Client], httpx.Response]], num_clients: int
) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: list[int] = []
    clients = [httpx.Client(timeout=300) for _ in range(num_clients)]

    def run(index: int) -> None:
        client = clients[index % num_clients]
        started = time.perf_counter()
        response = calls[index](client)
        latencies.append(time.perf_counter() - started)
        statuses.append(response.status_code)

    started = time.perf_counter()
    with ThreadPoolExecutor(num_clients) as pool:
        list(pool.map(run, range(len(calls))))
    wall = time.perf_counter() - started
    for client in clients:
        client.close()
    row = {
        "scenario": name,
        "clients": num_clients,
        "requests": len(calls),
        "p50_ms": statistics.median(latencies) * 1e3,
        "p99_ms": _percentile(latencies, 0.99) * 1e3,
        "req_per_s": len(calls) / wall,
        "non_200": sum(1 for s in statuses if s != 200),
    }
    print(
        f"{name:<40} p50 {row['p50_ms']:8.2f} ms  p99 {row['p99_ms']:8.2f} ms  "
        f"{row['req_per_s']:8.1f} req/s",
        flush=True,
    )
    return row


def _solves(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    pattern = r"^meshcast_plans_solved_total\{[^}]*\} (\S+)$"
    return sum(float(v) for v in re.findall(pattern, text, re.M))


def _fairness(url: str, count: int = 10) -> dict[str, Any]:
    """Greedy plans while three comparisons at a 15 s time limit are sent (default settings)."""
    compares = []
    for seed in range(3):
        request = json.loads((CASES / "refit-fsdp32-to-tp2x8.json").read_text())
        request["options"] = {"time_limit_s": 15.0, "seed": seed}
        compares.append(request)
    with ThreadPoolExecutor(3) as pool:
        sent = [pool.submit(httpx.post, f"{url}/v1/compare", json=r, timeout=600) for r in compares]
        while httpx.get(f"{url}/healthz", timeout=10).json()["comparing"] < 2:
            time.sleep(0.05)
        time.sleep(1.0)  # both admitted, the third answered
        latencies, statuses = [], []
        for k in range(count):
            request = shared_like_request(random.Random(1000 + k), "paper")
            request["options"] = {"algorithm": "greedy"}
            began = time.perf_counter()
            answer = httpx.post(f"{url}/v1/plans", json=request, timeout=600)
            latencies.append(time.perf_counter() - began)
            statuses.append(answer.status_code)
        in_flight = httpx.get(f"{url}/healthz", timeout=10).json()["comparing"]
        compare_statuses = sorted(f.result().status_code for f in sent)
    return {
        "scenario": "POST /v1/plans greedy, 3 compares in flight",
        "clients": 1,
        "requests": count,
        "p50_ms": statistics.median(latencies) * 1e3,
        "p99_ms": max(latencies) * 1e3,
        "req_per_s": count / sum(latencies),
        "non_200": sum(s != 200 for s in statuses),
        "comparing_after": in_flight,
        "compare_statuses": compare_statuses,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(77)
    cached_request = shared_like_request(rng, "paper")
    distinct = [shared_like_request(rng, kind) for kind in ["paper", "modern"] * 8]
    for request in distinct:
        request["options"] = {"time_limit_s": 0.5}
    identical = shared_like_request(rng, "modern")
    identical["options"] = {"time_limit_s": 1.0}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = str(Path(tmp) / "plans.sqlite3")
        with running_server("--cache", cache, "--workers", str(args.workers)) as url:
            httpx.post(f"{url}/v1/plans", json=cached_request, timeout=300)  # now cached
            n = args.requests
            health = [lambda c: c.get(f"{url}/healthz")] * n
            cached = [lambda c: c.post(f"{url}/v1/plans", json=cached_request)] * n
            with progress(6, "service load") as steps:
                steps.begin("GET /healthz")
                rows.append(_measure("GET /healthz (floor)", health, 1))
                steps.begin("cached plans, 1 client")
                rows.append(_measure("POST /v1/plans cached", cached, 1))
                steps.begin("cached plans, 16 clients")
                rows.append(_measure("POST /v1/plans cached", cached, 16))
                before = _solves(url)
                uncached = [
                    (lambda c, r=r: c.post(f"{url}/v1/plans", json=r))  # type: ignore[misc]
                    for r in distinct
                ]
                steps.begin("distinct requests")
                rows.append(_measure("POST /v1/plans uncached, distinct", uncached, 8))
                rows[-1]["solves"] = _solves(url) - before
                before = _solves(url)
                same = [lambda c: c.post(f"{url}/v1/plans", json=identical)] * 16
                steps.begin("16 identical requests")
                rows.append(_measure("POST /v1/plans uncached, 16 identical", same, 16))
                rows[-1]["solves"] = _solves(url) - before
                steps.begin("plans beside three 15 s comparisons")
                rows.append(_fairness(url))
    header = ["scenario", "clients", "requests", "p50 ms", "p99 ms", "req/s", "non-200", "solves"]
    table = markdown_table(
        header,
        [
            [
                r["scenario"],
                r["clients"],
                r["requests"],
                r["p50_ms"],
                r["p99_ms"],
                r["req_per_s"],
                r["non_200"],
                r.get("solves", "-"),
            ]
            for r in rows
        ],
    )
    floor = rows[0]["p50_ms"]
    note = (
        f"\ncached POST p50 from one client: {rows[1]['p50_ms']:.2f} ms "
        f"({rows[1]['p50_ms'] / floor:.1f}x the /healthz floor of {floor:.2f} ms); "
        f"{args.workers} uvicorn worker(s); beside three 15 s comparisons (answers "
        f"{rows[-1]['compare_statuses']}, {rows[-1]['comparing_after']} still running after the "
        f"plans) a greedy plan took {rows[-1]['p99_ms']:.0f} ms at most"
    )
    print(table + note)
    path = write_results("service_load", table + note, rows)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
