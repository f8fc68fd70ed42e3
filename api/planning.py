"""Solving for the service: off the event loop, in a bounded process pool, each request once.

Within a process, identical requests in flight share one future (single flight). Across
processes (several uvicorn workers, several replicas on one Redis) the cache's claims decide who
solves; the others poll the cache until the plan lands or the claim expires.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import socket
import time
import uuid
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from meshcast.api.cache import PlanCache
from meshcast.api.metrics import Metrics
from meshcast.planner import build_problem
from meshcast.planner.bulk import collection_paused
from meshcast.planner.request import Request
from meshcast.planner.summary import summarize
from meshcast.solver import ALGORITHMS, SolveOptions, make_plan, plan_request

#: seconds between looks at the cache while another process solves
POLL_S = 0.05


class Overloaded(RuntimeError):
    """Too many distinct solves are queued; the caller should retry later."""


class SolverCrashed(RuntimeError):
    """A solver process died (killed, out of memory); the pool was replaced."""


@dataclass(frozen=True)
class PlanText:
    """A plan as its JSON text (what is cached and answered, passed between processes as
    one string), and the algorithm that made it."""

    text: str
    algorithm: str


def solve_request(request: Request) -> tuple[PlanText, float]:
    """In a pool process: the plan's JSON text and the solve's wall time. The request comes
    checked (`Request` pickles compactly), so it is not parsed again."""
    started = time.perf_counter()
    plan = plan_request(request)
    with collection_paused():
        text = plan.to_json_text()
    return PlanText(text, plan.algorithm), time.perf_counter() - started


def compare_request(request: Request) -> list[dict[str, Any]]:
    """In a pool process: every algorithm's plan summarised."""
    problem = build_problem(request)
    options = SolveOptions(request.options.time_limit_s, request.options.seed)
    return [
        summarize(problem, make_plan(problem, name, options), check=False) for name in ALGORITHMS
    ]


def _warm() -> int:
    return os.getpid()


class Planner:
    """Plans requests through the cache, solving each distinct request once."""

    def __init__(
        self, cache: PlanCache, metrics: Metrics, num_processes: int, max_pending: int
    ) -> None:
        self.cache, self.metrics = cache, metrics
        self.num_processes, self.max_pending = num_processes, max_pending
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._inflight: dict[str, asyncio.Future[str]] = {}
        self._closed = False
        self._pool = self._new_pool()

    def _new_pool(self) -> Executor:
        if self.num_processes == 0:  # solve on threads: tests, tiny deployments
            return ThreadPoolExecutor(max_workers=2, thread_name_prefix="meshcast-solve")
        return ProcessPoolExecutor(
            self.num_processes, mp_context=multiprocessing.get_context("spawn")
        )

    def warm_up(self) -> None:
        """Start the solver processes now rather than on the first request."""
        for _ in range(self.num_processes):
            self._pool.submit(_warm)

    @property
    def num_inflight(self) -> int:
        return len(self._inflight)

    async def _in_pool(self, fn: Any, *args: Any) -> Any:
        pool = self._pool
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)
        except BrokenProcessPool:
            if self._pool is pool and not self._closed:  # the first to see it replaces it
                self._pool = self._new_pool()
                pool.shutdown(wait=False, cancel_futures=True)
            raise SolverCrashed("a solver process died; the pool was restarted") from None

    async def plan(self, request: Request) -> tuple[str, bool]:
        """The plan of `request` (its JSON text) and whether it came without solving here (a
        cache hit)."""
        request_id = request.request_id
        cached = await asyncio.to_thread(self.cache.get, request_id)
        if cached is not None:
            self.metrics.cache_hits.inc()
            return cached, True
        if request_id in self._inflight:  # the same request is being solved: share it
            plan = await asyncio.shield(self._inflight[request_id])
            self.metrics.cache_hits.inc()
            return plan, True
        if len(self._inflight) >= self.max_pending:
            raise Overloaded(f"{len(self._inflight)} distinct requests are being solved")
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._inflight[request_id] = future
        try:
            plan, solved = await self._solve_once(request)
            future.set_result(plan)
        except BaseException as err:
            future.set_exception(err)
            future.exception()  # retrieved: followers re-raise it, nobody else needs to
            raise
        finally:
            del self._inflight[request_id]
        (self.metrics.cache_misses if solved else self.metrics.cache_hits).inc()
        return plan, not solved

    async def _solve_once(self, request: Request) -> tuple[str, bool]:
        request_id = request.request_id
        ttl_s = 3 * request.options.time_limit_s + 120
        while True:
            if await asyncio.to_thread(self.cache.claim, request_id, self.owner, ttl_s):
                try:
                    cached = await asyncio.to_thread(self.cache.get, request_id)
                    if cached is not None:  # finished just before the claim
                        return cached, False
                    plan, seconds = await self._in_pool(solve_request, request)
                    # the request's canonical JSON is stored with its plan (built off the loop)
                    request_json = await asyncio.to_thread(request.to_json)
                    await asyncio.to_thread(
                        self.cache.put, request_id, plan.text, request_json, plan.algorithm
                    )
                    self.metrics.plans_solved.labels(plan.algorithm).inc()
                    self.metrics.solve_seconds.observe(seconds)
                    return plan.text, True
                finally:
                    await asyncio.to_thread(self.cache.release, request_id, self.owner)
            await asyncio.sleep(POLL_S)  # another process solves it
            cached = await asyncio.to_thread(self.cache.get, request_id)
            if cached is not None:
                return cached, False

    async def compare(self, request: Request) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = await self._in_pool(compare_request, request)
        return rows

    def close(self) -> None:
        """Stop solving: queued solves are cancelled and a solve still running is abandoned
        (the server has already waited for the requests in flight), then the solver processes
        and their queues are released."""
        self._closed = True
        workers = list((getattr(self._pool, "_processes", None) or {}).values())
        for process in workers:  # ProcessPoolExecutor has no public way to stop a busy worker
            process.terminate()
        self._pool.shutdown(wait=True, cancel_futures=True)
