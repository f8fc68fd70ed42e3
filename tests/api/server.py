"""`meshcast serve` as a real process for tests: started on a free port, stopped by SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
#: the process id of each running server, by its base URL
SERVER_PIDS: dict[str, int] = {}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_server(*args: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """Yield the base URL of a `meshcast serve` process; stop it gracefully afterwards."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "meshcast.api.cli",
        "serve",
        "--port",
        str(port),
        "--log-level",
    ]
    with running_process([*command, "warning", *args], port, cwd=ROOT, env=env) as url:
        yield url


@contextmanager
def running_process(
    command: list[str], port: int, cwd: Path, env: dict[str, str] | None = None
) -> Iterator[str]:
    """Start a service command that listens on `port`, wait for /healthz, SIGTERM it after."""
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    children: set[int] = set()
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                stderr = process.stderr.read().decode() if process.stderr else ""
                raise RuntimeError(f"meshcast serve did not start: {stderr[-2000:]}")
            time.sleep(0.2)
        SERVER_PIDS[url] = process.pid
        yield url
        children = descendants(process.pid)  # solver processes, uvicorn workers, trackers
    finally:
        SERVER_PIDS.pop(url, None)
        process.send_signal(signal.SIGTERM)
        try:
            _, stderr_bytes = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            for pid in descendants(process.pid):
                os.kill(pid, signal.SIGKILL)
            process.communicate()
            raise RuntimeError(
                "meshcast serve did not stop within 30 s of SIGTERM, or a process it started "
                "still holds its stderr"
            ) from None
    # a clean stop: no process left behind, no traceback on the way out
    stderr = stderr_bytes.decode()
    # uvicorn re-raises the SIGTERM it handled once it has shut down
    assert process.returncode in (0, -signal.SIGTERM), stderr[-2000:]
    assert "Traceback" not in stderr and "leaked" not in stderr, stderr[-2000:]
    left = survivors(children)
    assert not left, f"processes started by meshcast serve outlived it: {sorted(left)}"


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (Linux /proc)."""
    parent_of: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent_of[int(stat.parent.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parent_of.items() if parent in frontier} - found
        found |= frontier
    return found


def cpu_ticks(pid: int) -> int:
    """User and system time `pid` has used, in clock ticks (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def survivors(pids: set[int], within_s: float = 10.0) -> set[int]:
    """Those of `pids` still alive after waiting up to `within_s` for them to end."""
    deadline = time.monotonic() + within_s
    while (left := {pid for pid in pids if _alive(pid)}) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
