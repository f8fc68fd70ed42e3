"""Solving for the service: off the event loop, in bounded process pools, each request once.

Work goes through one admission path with two lanes, each with its own solver processes and
its own bound on pending work: `plan` (`POST /v1/plans`, and the plans `POST /v1/schedules`
needs) and `compare` (`POST /v1/compare`, every algorithm at its full time limit: up to a
minute of solver time each). A lane that is full answers 503 with `Retry-After` at once, never a
silent wait, and identical work in flight in a lane is shared (single flight). Separate
processes, rather than priorities or cost-weighted admission in one pool, because a solve cannot
be preempted: a compare that has a plan process would hold it for its whole time limit, so the
only bound on how long a plan request waits behind compare work is that no compare ever runs on
a plan process. The lanes still share the machine's cores, which the OS shares between them.

Across processes (several uvicorn workers, several replicas on one Redis) the cache's claims
decide who solves a plan; the others poll the cache until the plan lands or the claim expires.
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import os
import signal
import socket
import time
import uuid
from collections.abc import MutableMapping
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
#: a claim lasts this long unless its owner, still solving, renews it (every third of it)
CLAIM_TTL_S = 10.0


#: the admission lanes (see the module docstring)
LANES = ("plan", "compare")


class Overloaded(RuntimeError):
    """Too many distinct solves are queued in a lane; the caller should retry later."""


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


#: in a solver process: where each task says which process runs it (`_SolverPool`)
_REPORTS: Any = None


def _solver_process(reports: Any) -> None:
    global _REPORTS
    _REPORTS = reports


def _tracked(token: int, fn: Any, *args: Any) -> Any:
    # one small write to a pipe is atomic: the processes share the pipe without a lock
    _REPORTS.send((token, os.getpid()))
    return fn(*args)


class _SolverPool:
    """One lane's solver processes (or threads), and which process ran which task: when a
    process dies the whole pool breaks, and only the task it was running is to blame; the
    others (queued, or stopped by the pool's own clean-up) are bystanders, run again."""

    def __init__(self, lane: str, processes: int) -> None:
        self.reports: Any = None
        self.executor: Executor
        if processes == 0:  # solve on threads: tests, tiny deployments
            self.executor = ThreadPoolExecutor(2, thread_name_prefix=f"meshcast-{lane}")
            self.processes: MutableMapping[int, Any] = {}
            return
        context = multiprocessing.get_context("spawn")
        self.reports, self._writer = context.Pipe(duplex=False)
        pool = ProcessPoolExecutor(
            processes, context, initializer=_solver_process, initargs=(self._writer,)
        )
        self.executor = pool
        # the pool's own table of its processes (no public one): it keeps a process that died
        # and stops the others when it breaks; `shutdown` drops the attribute, not the table
        self.processes = pool._processes
        self._tokens = itertools.count()
        self._ran_on: dict[int, int] = {}

    def submit(self, fn: Any, *args: Any) -> tuple[int, asyncio.Future[Any]]:
        loop = asyncio.get_running_loop()
        if self.reports is None:
            return -1, loop.run_in_executor(self.executor, fn, *args)
        token = next(self._tokens)
        return token, loop.run_in_executor(self.executor, _tracked, token, fn, *args)

    def _read_reports(self) -> None:
        while self.reports.poll():
            ran, pid = self.reports.recv()
            self._ran_on[ran] = pid

    def forget(self, token: int) -> None:
        """Task `token` has finished (its report came before it ran)."""
        if self.reports is not None:
            self._read_reports()
            self._ran_on.pop(token, None)

    def close(self) -> None:
        """Stop every process (a busy one too: the pool has no public way) and release the
        report queue (its locks are the system's semaphores)."""
        for process in list(self.processes.values()):
            process.terminate()
        self.executor.shutdown(wait=True, cancel_futures=True)
        if self.reports is not None:
            self.reports.close()
            self._writer.close()
            self.reports = None

    def died_running(self, token: int) -> bool:
        """Whether the process that ran task `token` died (killed, out of memory), after the
        pool broke. Blocks while the pool stops its other processes."""
        if self.reports is None:
            return False
        self._read_reports()
        process = self.processes.get(self._ran_on.get(token, -1))
        if process is None:  # never started: queued behind the one that died
            return False
        process.join(timeout=10)
        return process.exitcode not in (None, -signal.SIGTERM)


class Planner:
    """Plans requests through the cache, solving each distinct request once, and compares
    algorithms, each kind of work in its own lane."""

    def __init__(
        self,
        cache: PlanCache,
        metrics: Metrics,
        num_processes: int,
        max_pending: int,
        compare_processes: int = 1,
        max_pending_compares: int = 2,
    ) -> None:
        self.cache, self.metrics = cache, metrics
        self.num_processes, self.max_pending = num_processes, max_pending
        self.compare_processes, self.max_pending_compares = compare_processes, max_pending_compares
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._inflight: dict[str, asyncio.Future[str]] = {}
        self._compares: dict[str, asyncio.Future[list[dict[str, Any]]]] = {}
        self._closed = False
        self._pools = {lane: self._new_pool(lane) for lane in LANES}

    def _processes(self, lane: str) -> int:
        return self.num_processes if lane == "plan" else self.compare_processes

    def _new_pool(self, lane: str) -> _SolverPool:
        return _SolverPool(lane, self._processes(lane))

    def warm_up(self) -> None:
        """Start the solver processes now rather than on the first request."""
        for lane, pool in self._pools.items():
            for _ in range(self._processes(lane)):
                pool.executor.submit(_warm)

    @property
    def num_inflight(self) -> int:
        return len(self._inflight)

    @property
    def num_comparing(self) -> int:
        return len(self._compares)

    async def _in_pool(self, lane: str, fn: Any, *args: Any) -> Any:
        """`fn(*args)` on a solver of `lane`. When a solver process dies the pool is replaced;
        the task it was running fails (`SolverCrashed`, a 503), the others run again once."""
        for attempt in range(2):
            pool, token = self._pools[lane], -1
            try:
                token, future = pool.submit(fn, *args)  # a broken pool refuses at once
                result = await future
            except BrokenProcessPool:
                if self._pools[lane] is pool and not self._closed:  # the first to see it
                    self._pools[lane] = self._new_pool(lane)
                    pool.executor.shutdown(wait=False, cancel_futures=True)
                    self.metrics.solver_restarts.labels(lane).inc()
                if attempt or await asyncio.to_thread(pool.died_running, token):
                    raise SolverCrashed(
                        f"the {lane} solver process running this request died; the pool was "
                        "restarted: retry"
                    ) from None
                continue  # a bystander: once more, on the new pool
            finally:
                pool.forget(token)
            return result
        raise AssertionError("unreachable")

    def _admit(self, lane: str, pending: int, limit: int) -> None:
        if pending >= limit:
            self.metrics.admissions.labels(lane, "rejected").inc()
            raise Overloaded(
                f"the {lane} lane is full: {pending} distinct requests are being solved "
                f"(at most {limit}); retry later"
            )
        self.metrics.admissions.labels(lane, "admitted").inc()

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
            self.metrics.admissions.labels("plan", "shared").inc()
            return plan, True
        self._admit("plan", len(self._inflight), self.max_pending)
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
        while True:
            if await asyncio.to_thread(self.cache.claim, request_id, self.owner, CLAIM_TTL_S):
                renewing = asyncio.create_task(self._renewing(request_id))
                try:
                    cached = await asyncio.to_thread(self.cache.get, request_id)
                    if cached is not None:  # finished just before the claim
                        return cached, False
                    plan, seconds = await self._in_pool("plan", solve_request, request)
                    # the request's canonical JSON is stored with its plan (built off the loop)
                    request_json = await asyncio.to_thread(request.to_json)
                    await asyncio.to_thread(
                        self.cache.put, request_id, plan.text, request_json, plan.algorithm
                    )
                    self.metrics.plans_solved.labels(plan.algorithm).inc()
                    self.metrics.solve_seconds.observe(seconds)
                    return plan.text, True
                finally:
                    renewing.cancel()
                    await asyncio.to_thread(self.cache.release, request_id, self.owner)
            await asyncio.sleep(POLL_S)  # another process solves it
            cached = await asyncio.to_thread(self.cache.get, request_id)
            if cached is not None:
                return cached, False

    async def _renewing(self, request_id: str) -> None:
        """Keep this process's claim while it solves: a claim whose owner died (a service
        killed mid-solve) lapses within `CLAIM_TTL_S`, and the next to ask solves it."""
        while True:
            await asyncio.sleep(CLAIM_TTL_S / 3)
            await asyncio.to_thread(self.cache.renew, request_id, self.owner, CLAIM_TTL_S)

    async def compare(self, request: Request) -> list[dict[str, Any]]:
        """Every algorithm's plan of `request` summarised, in the compare lane (not cached)."""
        request_id = request.request_id
        if request_id in self._compares:  # the same comparison is running: share it
            self.metrics.admissions.labels("compare", "shared").inc()
            return await asyncio.shield(self._compares[request_id])
        self._admit("compare", len(self._compares), self.max_pending_compares)
        future: asyncio.Future[list[dict[str, Any]]] = asyncio.get_running_loop().create_future()
        self._compares[request_id] = future
        try:
            rows: list[dict[str, Any]] = await self._in_pool("compare", compare_request, request)
            future.set_result(rows)
        except BaseException as err:
            future.set_exception(err)
            future.exception()
            raise
        finally:
            del self._compares[request_id]
        return rows

    def close(self) -> None:
        """Stop solving: queued solves are cancelled and a solve still running is abandoned
        (the server has already waited for the requests in flight), then the solver processes
        and their queues are released."""
        self._closed = True
        for pool in self._pools.values():
            pool.close()
