"""A torch.distributed world of local processes (gloo over 127.0.0.1), kept up between jobs.

`LocalWorld(8).run(fn, *args)` calls the module-level function `fn(*args)` on every rank at once
and returns the results by rank. Processes start once (spawned, so they import cleanly) and
rendezvous through a TCP store that the parent owns, so no port is guessed. A rank that raises
reports its traceback; a rank that dies or does not answer in time is an error too, never a hang.
"""

from __future__ import annotations

import os
import queue
import signal
import threading
import time
import traceback
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from multiprocessing.process import BaseProcess
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

#: seconds the parent waits beyond the world's own timeout before giving up on a rank
_GRACE_S = 30.0


class RankFailure(RuntimeError):
    """One or more ranks failed a job; `errors` maps rank to its message or traceback."""

    def __init__(self, errors: dict[int, str]) -> None:
        first = min(errors)
        last_line = (errors[first].strip().splitlines() or [""])[-1]
        super().__init__(
            f"{len(errors)} rank(s) failed {sorted(errors)}; rank {first}: {last_line}"
        )
        self.errors = errors


def _serve(rank: int, num_ranks: int, port: int, timeout_s: float, inbox: Any, outbox: Any) -> None:
    torch.set_num_threads(1)  # many ranks share few cores
    store = dist.TCPStore("127.0.0.1", port, is_master=False, timeout=timedelta(seconds=timeout_s))
    dist.init_process_group(
        "gloo", store=store, rank=rank, world_size=num_ranks, timeout=timedelta(seconds=timeout_s)
    )
    outbox.put((rank, True, "ready"))
    try:
        while (job := inbox.get()) is not None:
            fn, args = job
            try:
                outbox.put((rank, True, fn(*args)))
            except BaseException:
                outbox.put((rank, False, traceback.format_exc()))
    finally:
        dist.destroy_process_group()


@contextmanager
def _ctrl_c_left_to_parent() -> Iterator[None]:
    """Start processes with SIGINT ignored (they inherit it, also while importing torch): on
    Ctrl-C only the parent gets KeyboardInterrupt, and it stops the ranks itself. Meanwhile
    the parent holds SIGINT blocked, so a Ctrl-C during the start waits and is not lost."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # a pending one lands now


class LocalWorld:
    """`num_ranks` local processes forming one gloo world; ranks are 0 .. num_ranks - 1."""

    def __init__(self, num_ranks: int, *, timeout_s: float = 120.0) -> None:
        if num_ranks < 1:
            raise ValueError(f"num_ranks: must be at least 1, got {num_ranks}")
        self.num_ranks, self.timeout_s = num_ranks, timeout_s
        self._store = dist.TCPStore(
            "127.0.0.1",
            0,
            is_master=True,
            wait_for_workers=False,
            timeout=timedelta(seconds=timeout_s),
        )
        context = mp.get_context("spawn")
        self._outbox = context.Queue()
        self._inboxes = [context.Queue() for _ in range(num_ranks)]
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
        self._processes: list[BaseProcess] = [
            context.Process(
                target=_serve,
                args=(r, num_ranks, self._store.port, timeout_s, self._inboxes[r], self._outbox),
                daemon=True,
                name=f"meshcast-rank-{r}",
            )
            for r in range(num_ranks)
        ]
        with _ctrl_c_left_to_parent():
            for process in self._processes:
                process.start()
        try:
            self._collect("starting the world")
        except BaseException:
            self.close(force=True)
            raise

    def _collect(self, what: str) -> list[Any]:
        results: dict[int, Any] = {}
        errors: dict[int, str] = {}
        deadline = time.monotonic() + self.timeout_s + _GRACE_S
        while len(results) + len(errors) < self.num_ranks:
            try:
                rank, ok, value = self._outbox.get(timeout=1.0)
            except queue.Empty:
                dead = {
                    r: f"process exited with code {p.exitcode} while {what}"
                    for r, p in enumerate(self._processes)
                    if not p.is_alive() and r not in results and r not in errors
                }
                if dead or time.monotonic() > deadline:
                    missing = set(range(self.num_ranks)) - set(results) - set(errors)
                    errors.update(dead or {r: f"no answer while {what}" for r in missing})
                    raise RankFailure(errors) from None
                continue
            if ok:
                results[rank] = value
            else:
                errors[rank] = value
        if errors:
            raise RankFailure(errors)
        return [results[r] for r in range(self.num_ranks)]

    def run(
        self,
        fn: Callable[..., Any],
        *args: Any,
        per_rank: Sequence[tuple[Any, ...]] | None = None,
    ) -> list[Any]:
        """`fn(*args)` on every rank (or `fn(*per_rank[r])` on rank r); results by rank."""
        if per_rank is not None and len(per_rank) != self.num_ranks:
            raise ValueError(f"per_rank: expected {self.num_ranks} argument tuples")
        for rank, inbox in enumerate(self._inboxes):
            inbox.put((fn, per_rank[rank] if per_rank is not None else args))
        return self._collect(f"running {fn.__name__}")

    def run_losing(
        self, lost: Collection[int], fn: Callable[..., Any], *args: Any
    ) -> dict[int, tuple[float, Any]]:
        """`fn(*args)` on every rank, when ranks `lost` are expected to stop or die during it:
        the other ranks' answers (results, or tracebacks of what they raised) with the seconds
        each took, not waiting for the lost ones. The world is then closed: a world that lost
        a rank cannot run another job."""
        start = time.monotonic()
        for inbox in self._inboxes:
            inbox.put((fn, args))
        answers: dict[int, tuple[float, Any]] = {}
        deadline = start + self.timeout_s + _GRACE_S
        try:
            while len(answers) < self.num_ranks - len(set(lost)) and time.monotonic() < deadline:
                try:
                    rank, _, value = self._outbox.get(timeout=1.0)
                except queue.Empty:
                    continue
                if rank not in lost:
                    answers[rank] = (time.monotonic() - start, value)
        finally:
            self.close(force=True)
        return answers

    def close(self, *, force: bool = False) -> None:
        """Stop every process: politely (each rank leaves the world; killed if it has not
        within 10 s), or at once with `force`, after a failure or Ctrl-C, when ranks may be
        stuck in a collective."""
        if not force:
            for inbox, process in zip(self._inboxes, self._processes, strict=True):
                if process.is_alive():
                    inbox.put(None)
            deadline = time.monotonic() + 10
            for process in self._processes:
                process.join(timeout=max(0.0, deadline - time.monotonic()))
        for process in self._processes:
            if process.is_alive():
                process.kill()
        for process in self._processes:
            process.join()
        for channel in [self._outbox, *self._inboxes]:
            channel.cancel_join_thread()  # nobody reads them any more
            channel.close()

    def __enter__(self) -> LocalWorld:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.close(force=exc_type is not None)
