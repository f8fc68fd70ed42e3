"""Prometheus metrics of the service: HTTP traffic (per route), cache hits and misses, solves,
admissions and solver restarts per lane.

Each app has its own registry (tests build many apps in one process). Under several uvicorn
workers `meshcast serve` sets `PROMETHEUS_MULTIPROC_DIR`, every process writes its samples
there, and `/metrics` adds them up across workers.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_SOLVE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)


class Metrics:
    """The service's counters and histograms."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "meshcast_http_requests",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "meshcast_http_request_duration_seconds",
            "HTTP request latency by route and method",
            ["route", "method"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.plans_solved = Counter(
            "meshcast_plans_solved",
            "Plans solved (not served from the cache)",
            ["algorithm"],
            registry=self.registry,
        )
        self.cache_hits = Counter(
            "meshcast_cache_hits",
            "Plan requests answered from the cache or another's solve",
            registry=self.registry,
        )
        self.cache_misses = Counter(
            "meshcast_cache_misses", "Plan requests that had to be solved", registry=self.registry
        )
        self.solve_seconds = Histogram(
            "meshcast_solve_seconds",
            "Wall time of each solve",
            buckets=_SOLVE_BUCKETS,
            registry=self.registry,
        )

        self.admissions = Counter(
            "meshcast_admissions",
            "Solving work by lane (plan, compare) and outcome (admitted, shared with identical "
            "work in flight, rejected with 503)",
            ["lane", "outcome"],
            registry=self.registry,
        )
        self.solver_restarts = Counter(
            "meshcast_solver_restarts",
            "Solver pools replaced after a process died, by lane",
            ["lane"],
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        """The Prometheus text format, summed over worker processes when there are several."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return bytes(generate_latest(registry))
        return bytes(generate_latest(self.registry))
