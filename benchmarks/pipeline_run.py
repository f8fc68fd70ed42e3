"""A real pipeline: a tensor-parallel MLP in two stages, each on its own mesh of two ranks,
activations and gradients moved across the meshes by the executor; 1F1B against eager-1F1B.

Each stage holds a column-parallel and a row-parallel linear layer (Megatron style: the
activation is replicated on the stage's two ranks, an all-reduce inside the stage). Stage 0's
output goes to stage 1's mesh with a meshcast plan, the gradient comes back with the plan of the
reversed request; both run through `Executor.run_async`, so a stage computes while its transfers
are in flight. Both schedules start from the same weights and data and accumulate gradients in
the same order, so their losses and final weights must be identical; the table gives measured
iterations per second. `--testbed` puts the two meshes on two emulated hosts joined by a
rate-limited link (`--nic-gbps`), so that transfers take network time rather than CPU time.

    python benchmarks/pipeline_run.py [--microbatches 8] [--iterations 12] [--hidden 2048]
    sudo python benchmarks/pipeline_run.py --testbed   # the two meshes on two emulated hosts
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import markdown_table, write_results
from meshcast.executor import Executor
from meshcast.executor.local_world import LocalWorld
from meshcast.pipeline.boundaries import reversed_request
from meshcast.pipeline.schedules import stage_ops
from meshcast.planner import parse_request
from meshcast.planner.plan import Plan
from meshcast.solver import plan_request

NUM_STAGES, TP = 2, 2
SCHEDULES = ("1f1b", "eager-1f1b")


def boundary_request(batch: int, width: int, nic_gbps: float) -> dict[str, Any]:
    """Stage 0's output, replicated on ranks 0-1, to stage 1's ranks 2-3, replicated."""
    return {
        "tensors": [
            {
                "name": "act",
                "shape": [batch, width],
                "dtype": "float32",
                "src": {"mesh": "stage0", "placements": ["R"]},
                "dst": {"mesh": "stage1", "placements": ["R"]},
            }
        ],
        "meshes": {
            "stage0": {"shape": [TP], "devices": [0, 1]},
            "stage1": {"shape": [TP], "devices": [2, 3]},
        },
        "cluster": {
            "hosts": [[0, 1], [2, 3]],
            "nic_gbps": nic_gbps,
            "nics_per_host": 1,
            "intra_gbps": 100,
            "latency_us": 50,
        },
        "options": {"algorithm": "auto", "time_limit_s": 1.0},
    }


class _CopyToGroup(torch.autograd.Function):
    """Identity forward; all-reduce of the gradient over the stage's ranks."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, group: Any) -> torch.Tensor:
        ctx.group = group
        return x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        grad = grad.contiguous()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


class _ReduceFromGroup(torch.autograd.Function):
    """All-reduce of the partial outputs forward; identity backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, group: Any) -> torch.Tensor:
        x = x.contiguous()
        dist.all_reduce(x, group=group)
        return x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


class StageMLP(torch.nn.Module):
    """This rank's half of a stage: column-parallel up-projection, GELU, row-parallel down."""

    def __init__(self, stage: int, tp_rank: int, width: int, hidden: int, group: Any) -> None:
        super().__init__()
        full = torch.Generator().manual_seed(1000 + stage)
        w1 = torch.randn(hidden, width, generator=full) / width**0.5
        w2 = torch.randn(width, hidden, generator=full) / hidden**0.5
        part = hidden // TP
        rows = slice(tp_rank * part, (tp_rank + 1) * part)
        self.w1 = torch.nn.Parameter(w1[rows].clone())
        self.b1 = torch.nn.Parameter(torch.zeros(part))
        self.w2 = torch.nn.Parameter(w2[:, rows].clone())
        self.b2 = torch.nn.Parameter(torch.zeros(width))
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _CopyToGroup.apply(x, self.group)
        h = F.gelu(x @ self.w1.t() + self.b1)
        return _ReduceFromGroup.apply(h @ self.w2.t(), self.group) + self.b2 + x


def train(
    schedules: list[str],
    request_json: dict[str, Any],
    plan_json: dict[str, Any],
    back_plan_json: dict[str, Any],
    microbatches: int,
    iterations: int,
    hidden: int,
) -> dict[str, Any]:
    """On every rank: train from the same start under each schedule of `schedules` in turn
    (a schedule may come back: its iteration times add up, the first iteration of each turn
    left out as warm-up)."""
    torch.set_num_threads(1)
    rank = dist.get_rank()
    stage, tp_rank = divmod(rank, TP)
    groups = [dist.new_group([0, 1]), dist.new_group([2, 3])]  # collective, same order
    request = parse_request(request_json)
    back = reversed_request(request)
    batch, width = request.tensors[0].shape
    ahead = Executor(Plan.from_json(plan_json), request)
    behind = Executor(Plan.from_json(back_plan_json), back)
    data = torch.Generator().manual_seed(7)
    inputs = torch.randn(microbatches, batch, width, generator=data)
    targets = torch.randn(microbatches, batch, width, generator=data)
    out: dict[str, Any] = {}
    for schedule in schedules:
        model = StageMLP(stage, tp_rank, width, hidden, groups[stage])
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        ops = stage_ops(schedule, NUM_STAGES, stage, microbatches)
        times, losses = [], []
        for _ in range(iterations):
            dist.barrier()
            started = time.perf_counter()
            received = [
                (ahead if stage == 1 else behind).run_async({}) for _ in range(microbatches)
            ]
            sent, saved = [], {}
            for op in ops:
                m = op.microbatch
                if op.kind == "F":
                    x = inputs[m] if stage == 0 else received[m].result(300)["act"]
                    x = x.clone().requires_grad_(stage == 1)
                    y = model(x)
                    saved[m] = (x, y)
                    if stage == 0:
                        sent.append(ahead.run_async({"act": y.detach()}))
                elif stage == 1:
                    x, y = saved.pop(m)
                    loss = F.mse_loss(y, targets[m]) / microbatches
                    loss.backward()
                    losses.append(float(loss.detach()))
                    assert x.grad is not None
                    sent.append(behind.run_async({"act": x.grad}))
                else:
                    x, y = saved.pop(m)
                    y.backward(received[m].result(300)["act"])
            for future in sent:
                future.result(300)
            optimizer.step()
            optimizer.zero_grad()
            dist.barrier()
            times.append(time.perf_counter() - started)
        digest = hashlib.sha256()
        for parameter in model.parameters():
            digest.update(parameter.detach().numpy().tobytes())
        seen = out.setdefault(schedule, {"times": [], "first_losses": losses})
        seen["times"] += times[1:]
        seen["losses"], seen["weights"] = losses, digest.hexdigest()
    ahead.close()
    behind.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--microbatches", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=12)
    parser.add_argument("--batch", type=int, default=64, help="rows per micro-batch")
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=3, help="1F1B, eager, 1F1B, eager, ...")
    parser.add_argument("--testbed", action="store_true", help="two emulated hosts (root)")
    parser.add_argument("--nic-gbps", type=float, default=0.5, help="testbed link rate")
    args = parser.parse_args()
    request_json = boundary_request(args.batch, args.width, nic_gbps=args.nic_gbps)
    request = parse_request(request_json)
    plan, back_plan = plan_request(request), plan_request(reversed_request(request))
    print(
        f"activation {args.batch}x{args.width} float32 per micro-batch; plans: "
        f"{len(plan.transfers)} and {len(back_plan.transfers)} transfer(s)",
        flush=True,
    )
    train_args = [
        list(SCHEDULES) * args.rounds,
        request.to_json(),
        plan.to_json(),
        back_plan.to_json(),
        args.microbatches,
        args.iterations,
        args.hidden,
    ]
    if args.testbed:
        from meshcast.testbed import network
        from meshcast.testbed.bench import spec_for
        from meshcast.testbed.launch import run_job

        spec = spec_for(request, "pipeline", args.nic_gbps, request.cluster.latency_us)
        job = {
            "world_size": NUM_STAGES * TP,
            "timeout_s": 600,
            "runs": [],
            "function": "benchmarks.pipeline_run:train",
            "args": train_args,
        }
        with network.running(spec):
            answers = [a["result"] for a in run_job(spec, job, timeout_s=1800)]
        where = f"two emulated hosts, {args.nic_gbps:g} Gbit/s link"
    else:
        with LocalWorld(NUM_STAGES * TP, timeout_s=300) as world:
            answers = world.run(train, *train_args)
        where = "gloo on one machine"
    per_schedule: dict[str, list[float]] = {s: [] for s in SCHEDULES}
    for schedule in SCHEDULES:
        for runs in zip(*(a[schedule]["times"] for a in answers), strict=True):
            per_schedule[schedule].append(max(runs))  # an iteration lasts as its slowest rank
    losses = {s: answers[2][s]["losses"] for s in SCHEDULES}
    weights = {s: [a[s]["weights"] for a in answers] for s in SCHEDULES}
    first_round = {s: answers[2][s]["first_losses"] for s in SCHEDULES}
    identical = (
        first_round["1f1b"] == first_round["eager-1f1b"]
        and weights["1f1b"] == weights["eager-1f1b"]
    )
    rows = []
    for schedule in SCHEDULES:
        median = statistics.median(per_schedule[schedule])
        rows.append(
            [schedule, median * 1e3, 1 / median, len(per_schedule[schedule]), losses[schedule][-1]]
        )
    ratio = statistics.median(per_schedule["1f1b"]) / statistics.median(per_schedule["eager-1f1b"])
    table = markdown_table(
        ["schedule", "iteration ms (median)", "iterations/s", "iterations", "last loss"], rows
    )
    summary = (
        f"\neager-1F1B speed over 1F1B: {ratio:.3f}x; losses and final weights identical: "
        f"{identical}; {args.microbatches} micro-batches of {args.batch}x{args.width}, "
        f"hidden {args.hidden}, 2 stages x 2 ranks, {where}; rounds alternate the schedules"
    )
    print(table + summary)
    write_results(
        "pipeline_run_testbed" if args.testbed else "pipeline_run",
        table + summary,
        {
            "rows": rows,
            "ratio": ratio,
            "identical": identical,
            "losses": losses,
            "weights": weights,
        },
    )


if __name__ == "__main__":
    main()
