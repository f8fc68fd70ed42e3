"""A testbed job for the link-cut test: run a plan over and over until a transfer fails, and
say when and how (each rank, in its host's namespace)."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from meshcast.executor import Executor, TransferError
from meshcast.executor.local_run import reference_sources
from meshcast.planner import parse_request
from meshcast.planner.plan import Plan


def run_until_it_fails(
    request_json: dict[str, Any],
    plan_json: dict[str, Any],
    timeout_s: float,
    runs: int,
    marker: str,
) -> dict[str, Any]:
    """Runs until one fails; rank 0 touches `marker` once a run has completed (the cue to
    cut the link)."""
    request = parse_request(request_json)
    executor = Executor(
        Plan.from_json(plan_json),
        request,
        chunk_bytes=1 << 20,
        timeout=timedelta(seconds=timeout_s),
    )
    sources, done = reference_sources(request), 0
    try:
        while done < runs:
            executor.run(sources)
            done += 1
            if done == 1 and executor.rank == 0:
                Path(marker).touch()
    except TransferError as err:
        return {"error": str(err), "peer": err.peer, "at": time.time(), "runs": done}
    return {"error": None, "at": time.time(), "runs": runs}
