"""A bounded soak of `meshcast serve` on loopback: mixed load from several clients, faults on a
timer, then what it answered and what it kept.

A fixed number of requests (`--requests`, seeded) from `--clients` threads, each drawing its
next call from the mix: cached plans (a warm set), new plans (fresh seeds), compares, checks
of cached plans, pipeline schedules priced by boundary plans, and the plan viewer's pages.
Faults, on a timer: a solver process killed with SIGKILL every `--kill-solver-s` seconds, and
once, halfway, the whole service killed with SIGKILL and started again on the same cache (the
clients wait for it and go on). Printed and written under `benchmarks/results/`: per route p50
and p99, answers by class (2xx, 4xx, 503, any other status; connection failures while the
service was down counted apart), solver restarts, the service's resident memory (its process
and its solver processes) after warm-up and at the end of each life, and whether every new plan
answered 200 before the kill was still served after it.

    python benchmarks/service_soak.py                 # 3,000 requests, about a minute
    python benchmarks/service_soak.py --quick         # the shortened run CI makes (not written)
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import ROOT, SHARED, markdown_table, write_results

#: what each client call is, with its weight in the mix
MIX = {
    "plan-cached": 30,
    "plan-new": 20,
    "compare": 4,
    "check": 12,
    "schedule": 10,
    "view-list": 8,
    "view-plan": 16,
}


def _case(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((SHARED / "cases" / f"{name}.json").read_text())
    return data


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tree(pid: int) -> list[int]:
    """`pid` and every live process below it."""
    parent_of: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent_of[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    found, frontier = {pid}, {pid}
    while frontier:
        frontier = {c for c, p in parent_of.items() if p in frontier} - found
        found |= frontier
    return sorted(found)


def _rss_mib(pid: int) -> float:
    total = 0
    for p in _tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


class Service:
    """`meshcast serve` on a port of its own, on one SQLite cache, killed and restarted."""

    def __init__(self, cache: Path) -> None:
        self.cache, self.port = cache, _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.down = threading.Event()

    def start(self) -> None:
        command = [sys.executable, "-m", "meshcast.api.cli", "serve", "--port", str(self.port)]
        self.process = subprocess.Popen(
            [*command, "--cache", str(self.cache), "--log-level", "warning"],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    self.down.clear()
                    return
            time.sleep(0.2)
        raise RuntimeError("meshcast serve did not start")

    def kill(self) -> None:
        assert self.process is not None
        self.down.set()
        tree = _tree(self.process.pid)
        for pid in reversed(tree):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait()

    def solvers(self) -> list[int]:
        """The solver processes (not the resource tracker multiprocessing also starts)."""
        assert self.process is not None
        found = []
        for pid in _tree(self.process.pid):
            with contextlib.suppress(OSError):
                if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.append(pid)
        return found

    def restarts(self) -> float:
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        found = re.findall(r"^meshcast_solver_restarts_total\{[^}]*\} (\S+)$", text, re.M)
        return sum(float(v) for v in found)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


class Load:
    """The clients' calls and what came back."""

    def __init__(self, service: Service, requests: int, seed: int, think_s: float) -> None:
        self.service, self.rng, self.think_s = service, random.Random(seed), think_s
        self.small, self.case6 = _case("paper-1tom-1x2"), _case("paper-n2m-case1")
        kinds, weights = zip(*MIX.items(), strict=True)
        self.calls = self.rng.choices(kinds, weights, k=requests)
        self.next, self.lock = 0, threading.Lock()
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.classes: Counter[str] = Counter()
        self.by_route: dict[str, Counter[str]] = defaultdict(Counter)
        self.new_plans: dict[str, tuple[str, bool]] = {}  # id -> (plan, answered before kill)
        self.warm: list[str] = []
        self.warm_requests: list[dict[str, Any]] = []
        self.unreachable = 0
        self.killed = False

    def warm_up(self) -> None:
        for seed in range(8):
            request = copy.deepcopy(self.case6)
            request["options"] = {"algorithm": "greedy", "seed": seed}
            answer = httpx.post(f"{self.service.url}/v1/plans", json=request, timeout=60)
            answer.raise_for_status()
            self.warm.append(answer.headers["x-request-id"])
            self.warm_requests.append(request)
        self.warm_calls()

    def warm_calls(self) -> None:
        """One call of each kind, not counted, so that the memory measured at the start of a
        life is a warm service's (the compare lane's process imports the MILP and CP-SAT
        solvers on its first call)."""
        with httpx.Client(timeout=120) as client:
            for kind in MIX:
                self._call(client, kind, 0, record=False)

    def _body(self, kind: str, k: int) -> tuple[str, str, Any]:
        if kind == "plan-cached":
            return "POST", "/v1/plans", self.warm_requests[k % len(self.warm_requests)]
        if kind == "plan-new":
            request = copy.deepcopy(self.small)
            request["options"] = {"algorithm": "greedy", "seed": 1000 + k}
            return "POST", "/v1/plans", request
        if kind == "compare":
            request = copy.deepcopy(self.small)
            request["options"] = {"time_limit_s": 0.5, "seed": 5000 + k}
            return "POST", "/v1/compare", request
        if kind == "check":
            return "CHECK", "/v1/check", self.warm[k % len(self.warm)]
        if kind == "schedule":
            boundary = copy.deepcopy(self.small)
            boundary["options"] = {"algorithm": "greedy", "seed": k % 16}
            body = {"stages": 2, "microbatches": 8, "forward_ms": 10, "backward_ms": 20,
                    "boundaries": [boundary]}  # fmt: skip
            return "POST", "/v1/schedules", body
        if kind == "view-list":
            return "GET", "/v1/plans/view", None
        return "GET", f"/v1/plans/{self.warm[k % len(self.warm)]}/view", None

    def _call(self, client: httpx.Client, kind: str, k: int, record: bool = True) -> None:
        method, route, body = self._body(kind, k)
        url = self.service.url
        while True:
            if self.service.down.is_set():
                time.sleep(0.1)
                continue
            began = time.perf_counter()
            try:
                if method == "CHECK":  # the cached plan, then its check
                    plan = client.get(f"{url}/v1/plans/{body}").json()
                    request = self.warm_requests[self.warm.index(body)]
                    answer = client.post(f"{url}{route}", json={"request": request, "plan": plan})
                elif method == "GET":
                    answer = client.get(f"{url}{route}")
                else:
                    answer = client.post(f"{url}{route}", json=body)
            except (httpx.TransportError, json.JSONDecodeError):
                with self.lock:
                    self.unreachable += 1
                time.sleep(0.1)
                continue  # the service is down: the same call again once it is back
            seconds = time.perf_counter() - began
            break
        status = answer.status_code
        group = (
            "2xx" if 200 <= status < 300
            else "503" if status == 503
            else "4xx" if 400 <= status < 500
            else f"other {status}"
        )  # fmt: skip
        if not record:
            return
        with self.lock:
            self.latency[kind].append(seconds)
            self.classes[group] += 1
            self.by_route[kind][group] += 1
            if kind == "plan-new" and status == 200:
                self.new_plans[answer.headers["x-request-id"]] = (answer.text, not self.killed)

    def client(self) -> None:
        with httpx.Client(timeout=120) as client:
            while True:
                with self.lock:
                    if self.next >= len(self.calls):
                        return
                    k, self.next = self.next, self.next + 1
                self._call(client, self.calls[k], k)
                time.sleep(self.think_s)


def soak(
    requests: int, clients: int, kill_solver_s: float, seed: int, think_s: float
) -> dict[str, Any]:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="meshcast-soak-") as tmp:
        service = Service(Path(tmp, "plans.sqlite3"))
        service.start()
        load = Load(service, requests, seed, think_s)
        load.warm_up()
        lives = [{"rss_start_mib": _rss_mib(service.process.pid)}]  # type: ignore[union-attr]
        restarts, killed_solvers = 0.0, 0
        threads = [threading.Thread(target=load.client) for _ in range(clients)]
        began = time.monotonic()
        for thread in threads:
            thread.start()
        last_kill, rng = time.monotonic(), random.Random(seed)
        while any(t.is_alive() for t in threads):
            time.sleep(0.05)
            if not load.killed and load.next >= requests // 2:  # halfway: the whole service
                lives[-1]["rss_end_mib"] = _rss_mib(service.process.pid)  # type: ignore[union-attr]
                restarts += service.restarts()
                with load.lock:
                    load.killed = True
                service.kill()
                service.start()
                load.warm_calls()
                lives.append({"rss_start_mib": _rss_mib(service.process.pid)})  # type: ignore[union-attr]
            elif time.monotonic() - last_kill > kill_solver_s and not service.down.is_set():
                solvers = service.solvers()
                if solvers:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(rng.choice(solvers), signal.SIGKILL)
                        killed_solvers += 1
                last_kill = time.monotonic()
        wall = time.monotonic() - began
        time.sleep(1.0)  # a pool killed last is replaced on the next request: let it settle
        lives[-1]["rss_end_mib"] = _rss_mib(service.process.pid)  # type: ignore[union-attr]
        restarts += service.restarts()
        kept = {rid: plan for rid, (plan, before) in load.new_plans.items() if before}
        lost = [
            rid
            for rid, plan in kept.items()
            if (r := httpx.get(f"{service.url}/v1/plans/{rid}", timeout=30)).status_code != 200
            or r.text != plan
        ]
        service.stop()
    routes = {
        kind: {
            "count": len(values),
            "p50_ms": statistics.median(values) * 1e3,
            "p99_ms": sorted(values)[max(0, int(len(values) * 0.99) - 1)] * 1e3,
            "classes": dict(load.by_route[kind]),
        }
        for kind, values in sorted(load.latency.items())
    }
    return {
        "requests": requests,
        "clients": clients,
        "wall_s": wall,
        "routes": routes,
        "classes": dict(load.classes),
        "unreachable_while_down": load.unreachable,
        "solvers_killed": killed_solvers,
        "solver_restarts": restarts,
        "plans_answered_before_the_kill": len(kept),
        "plans_lost": lost,
        "lives": lives,
        "rss_growth": max(life["rss_end_mib"] / life["rss_start_mib"] - 1 for life in lives),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--think-ms", type=float, default=100.0, help="each client, between calls")
    parser.add_argument("--kill-solver-s", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--quick", action="store_true", help="400 requests, 4 clients, a solver killed every 2 s"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON line last")
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.clients, args.kill_solver_s = 400, 4, 2.0
    print(f"soak: {args.requests} requests from {args.clients} clients", file=sys.stderr)
    result = soak(args.requests, args.clients, args.kill_solver_s, args.seed, args.think_ms / 1e3)
    table = markdown_table(
        ["call", "count", "p50 ms", "p99 ms", "answers"],
        [
            [k, r["count"], r["p50_ms"], r["p99_ms"],
             ", ".join(f"{c} {n}" for c, n in sorted(r["classes"].items()))]
            for k, r in result["routes"].items()
        ],
    )  # fmt: skip
    lives = "; ".join(
        f"life {i + 1}: {life['rss_start_mib']:.0f} -> {life['rss_end_mib']:.0f} MiB"
        for i, life in enumerate(result["lives"])
    )
    markdown = (
        f"# Service soak ({result['requests']} requests, {result['clients']} clients, "
        f"{result['wall_s']:.0f} s)\n\n{table}\n\n"
        f"answers: {result['classes']}; connection failures while the service was down: "
        f"{result['unreachable_while_down']}\n\n"
        f"faults: {result['solvers_killed']} solver processes killed, "
        f"{result['solver_restarts']:.0f} pool restarts; the service killed once and restarted\n\n"
        f"plans answered 200 before the kill: {result['plans_answered_before_the_kill']}, "
        f"lost: {len(result['plans_lost'])}\n\n"
        f"resident memory (service and solvers): {lives}; largest growth "
        f"{100 * result['rss_growth']:.1f}%\n"
    )
    print(markdown)
    if not args.quick:  # the shortened run (CI's) leaves the recorded results alone
        print(f"results: {write_results('service_soak', markdown, result)}", file=sys.stderr)
    if args.json:
        print(json.dumps(result))
    others = [c for c in result["classes"] if c.startswith("other")]
    return 1 if others or result["plans_lost"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
