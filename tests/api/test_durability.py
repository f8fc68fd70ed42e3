"""The service killed with SIGKILL in the middle of a burst of solves: every plan it answered 200
for is in the cache when it comes back (SQLite in WAL mode, `synchronous = NORMAL`: a commit is
in the operating system's hands before the answer leaves, and a process's death cannot undo
that; only a power loss could lose the last commits)."""

from __future__ import annotations

import contextlib
import copy
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.api.server import ROOT, descendants, free_port, running_server
from tests.conftest import load_case

pytestmark = pytest.mark.slow

SMALL = load_case("paper-1tom-1x2")
CLIENTS = 4


def _wait_healthy(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, "meshcast serve exited"
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("meshcast serve did not start")


def test_a_service_killed_during_a_burst_loses_no_plan_it_answered(tmp_path: Path) -> None:
    cache = tmp_path / "c.sqlite3"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "meshcast.api.cli", "serve", "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--cache", str(cache), "--log-level", "warning"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    answered: dict[str, str] = {}
    lock = threading.Lock()

    def client(first: int) -> None:  # distinct requests (seeds), one after another
        for seed in range(first, 10_000, CLIENTS):
            request = copy.deepcopy(SMALL)
            request["options"] = {"algorithm": "greedy", "seed": seed}
            try:
                response = httpx.post(f"{url}/v1/plans", json=request, timeout=30)
            except httpx.TransportError:
                return  # the service is gone
            if response.status_code == 200:
                with lock:
                    answered[response.headers["x-request-id"]] = response.text

    try:
        _wait_healthy(url, process)
        threads = [threading.Thread(target=client, args=(k,)) for k in range(CLIENTS)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60
        while len(answered) < 40 and time.monotonic() < deadline:
            time.sleep(0.01)
        children = descendants(process.pid)
        process.kill()  # mid-burst: solves and cache writes in flight
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.wait()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    with lock:
        kept = dict(answered)
    assert len(kept) >= 40
    with running_server("--cache", str(cache)) as restarted:
        for request_id, plan in kept.items():
            response = httpx.get(f"{restarted}/v1/plans/{request_id}", timeout=30)
            assert response.status_code == 200, (request_id, response.text)
            assert response.text == plan
