"""One rank of a testbed job, launched inside its host's namespace:
`python -m testbed.worker JOB.json RANK OUT_DIR`.

Joins the gloo world through rank 0's address, runs the job's plans (each verified, timed
between barriers), the calibration or a given function, and writes `OUT_DIR/rank<RANK>.json`.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist


def main(job_path: str, rank: int, out_dir: str) -> None:
    from meshcast.executor.calibrate import calibrate
    from meshcast.executor.local_run import rank_job

    job: dict[str, Any] = json.loads(Path(job_path).read_text())
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}",
        rank=rank,
        world_size=job["world_size"],
        timeout=timedelta(seconds=job["timeout_s"]),
    )
    try:
        answer: dict[str, Any] = {}
        if "function" in job:  # "module:name", called with the job's args on every rank
            module, name = job["function"].split(":")
            answer["result"] = getattr(importlib.import_module(module), name)(*job["args"])
        if job.get("calibrate"):
            answer["calibration"] = calibrate(
                job["calibrate_bytes"], job["repeats"], job["chunk_bytes"]
            )
        answer["runs"] = [
            rank_job(
                job["request"],
                run["plan"],
                {
                    "mode": run["mode"],
                    "repeats": job["repeats"],
                    "timeout_s": job["timeout_s"],
                    "chunk_bytes": run["chunk_bytes"],
                },
            )
            for run in job["runs"]
        ]
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(answer))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
