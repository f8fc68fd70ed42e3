"""Launch one process per rank inside its host's namespace and collect their answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from meshcast.testbed.network import TestbedError, TestbedSpec, host_address

#: rank 0's store port; free by construction, the namespace is the testbed's own
STORE_PORT = 29400


def run_job(spec: TestbedSpec, job: dict[str, Any], timeout_s: float) -> list[dict[str, Any]]:
    """Run `job` (see `testbed.worker`) on every rank; answers by rank. A rank that fails or
    does not finish in time stops the others, and its log tail is in the error."""
    world_size = job["world_size"]
    with tempfile.TemporaryDirectory(prefix="meshcast-testbed-") as tmp:
        job_path = Path(tmp, "job.json")
        job_path.write_text(json.dumps(job))
        processes, logs = [], []
        for rank in range(world_size):
            host = spec.host_of.get(rank, 0)
            env = {
                **os.environ,
                "MASTER_ADDR": host_address(spec.host_of.get(0, 0)),
                "MASTER_PORT": str(STORE_PORT),
                "GLOO_SOCKET_IFNAME": "eth0",
                "MESHCAST_HOST_ID": f"h{host}",
                "OMP_NUM_THREADS": "1",
            }
            log = open(Path(tmp, f"rank{rank}.log"), "w")  # noqa: SIM115 (closed below)
            logs.append(log)
            command = [
                "ip",
                "netns",
                "exec",
                spec.namespace(host),
                sys.executable,
                "-m",
                "meshcast.testbed.worker",
                str(job_path),
                str(rank),
                tmp,
            ]
            processes.append(subprocess.Popen(command, env=env, stdout=log, stderr=log))
        deadline = time.monotonic() + timeout_s
        try:
            while any(p.poll() is None for p in processes):
                failed = [r for r, p in enumerate(processes) if p.poll() not in (None, 0)]
                if failed or time.monotonic() > deadline:
                    rank = (
                        failed[0]
                        if failed
                        else next(r for r, p in enumerate(processes) if p.poll() is None)
                    )
                    tail = Path(tmp, f"rank{rank}.log").read_text()[-1500:]
                    what = "failed" if failed else f"did not finish in {timeout_s:g} s"
                    raise TestbedError(f"rank {rank} {what}:\n{tail}")
                time.sleep(0.1)
            failed = [r for r, p in enumerate(processes) if p.returncode != 0]
            if failed:
                tail = Path(tmp, f"rank{failed[0]}.log").read_text()[-1500:]
                raise TestbedError(f"rank {failed[0]} failed:\n{tail}")
            return [json.loads(Path(tmp, f"rank{r}.json").read_text()) for r in range(world_size)]
        finally:
            for process in processes:
                if process.poll() is None:
                    process.kill()
                    process.wait()
            for log in logs:
                log.close()
