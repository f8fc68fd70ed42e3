"""Liveness of a run's ranks, kept in the job's store, so a failed wait can say who stopped.

While an executor runs, a daemon thread on each rank writes the time into the job's key-value
store (the one `init_process_group` rendezvoused through) every `PERIOD_S`. A rank blocked in
a wait on a live peer keeps beating; a rank that was stopped (SIGSTOP, a hung kernel) or died
does not. When a wait fails, `Heartbeats.silent()` reads every member's last beat (bounded by
`READ_S`, so a store that went away with its host cannot hang the error path) and names the
ranks silent for longer than `SILENT_S`.

The default store is reached through `torch.distributed.distributed_c10d._get_default_store`,
private in torch 2.4 to 2.13 (where it was read); without it, errors say the store cannot tell.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import torch.distributed as dist

PERIOD_S = 0.5
#: a rank whose last beat is older than this stopped making progress
SILENT_S = 1.5
#: longest the error path waits for the store
READ_S = 2.0


def default_store() -> dist.Store | None:
    try:
        from torch.distributed.distributed_c10d import _get_default_store

        return _get_default_store()
    except (ImportError, RuntimeError, ValueError):
        return None


class Heartbeats:
    """The beats of `members` under `prefix` (unique to one executor, the same on every
    rank) in `store`; this rank beats from `start()` to `stop()`."""

    def __init__(
        self, store: dist.Store | None, prefix: str, rank: int, members: Sequence[int]
    ) -> None:
        self.store, self.prefix, self.rank, self.members = store, prefix, rank, list(members)
        self._stopped: threading.Event | None = None

    def _key(self, rank: int) -> str:
        return f"{self.prefix}/{rank}"

    def _beat(self, stopped: threading.Event) -> None:
        assert self.store is not None
        while True:
            try:
                self.store.set(self._key(self.rank), repr(time.time()))
            except Exception:  # a store that went away: the error path says so
                return
            if stopped.wait(PERIOD_S):
                return

    def start(self) -> None:
        """Beat until `stop()` (a no-op without a store, or when already beating)."""
        if self.store is None or self._stopped is not None:
            return
        self._stopped = threading.Event()
        name = f"meshcast-heartbeat-{self.rank}"
        threading.Thread(target=self._beat, args=(self._stopped,), name=name, daemon=True).start()

    def stop(self) -> None:
        if self._stopped is not None:
            self._stopped.set()
            self._stopped = None

    def _last_beats(self) -> dict[int, float | None]:
        assert self.store is not None
        out: dict[int, float | None] = {}
        for rank in self.members:
            key = self._key(rank)
            out[rank] = float(self.store.get(key)) if self.store.check([key]) else None
        return out

    def silent(self) -> str:
        """Who stopped beating, in words (for an error message). A peer that died a moment
        ago still looks alive: the store is read again until someone has been silent for
        `SILENT_S` or that long has passed."""
        if self.store is None:
            return "the job's store cannot tell which rank stopped"
        deadline = time.monotonic() + SILENT_S
        while True:
            words = self._silent_now()
            if not words.startswith("every rank") or time.monotonic() > deadline:
                return words
            time.sleep(PERIOD_S / 2)

    def _silent_now(self) -> str:
        answer: list[dict[int, float | None] | BaseException] = []

        def read() -> None:
            try:
                answer.append(self._last_beats())
            except Exception as err:
                answer.append(err)

        reader = threading.Thread(target=read, name="meshcast-heartbeat-read", daemon=True)
        reader.start()
        reader.join(READ_S)  # a store that hangs keeps only this daemon thread
        if not answer:
            return f"the job's store did not answer within {READ_S:g} s"
        beats = answer[0]
        if isinstance(beats, BaseException):
            return f"the job's store cannot be read ({beats})"
        now = time.time()
        silent = {
            r: (now - b if b is not None else None)
            for r, b in beats.items()
            if r != self.rank and (b is None or now - b > SILENT_S)
        }
        if not silent:
            return "every rank of the run is alive (the job's store)"
        words = [
            f"rank {r} silent for {age:.1f} s" if age is not None else f"rank {r} never beat"
            for r, age in sorted(silent.items())
        ]
        return "stopped making progress (the job's store): " + ", ".join(words)
