"""Pipeline schedules measured on a real transformer in stages on meshes of different sizes:
iterations per second of GPipe, 1F1B and eager-1F1B with meshcast boundaries, torch's own
`Schedule1F1B` where it can run, and the simulator's prediction from the measured times.

The model and stages are `examples.pipeline_hf`'s: a transformers Llama cut into stages of
`--stage-tp 4,2,2` ranks, each tensor parallel over its own mesh, run by torch's `ScheduleGPipe`
and `Schedule1F1B` and meshcast's `ScheduleEager1F1B` on `MeshStage`s. torch's own pipeline
(`PipelineStage`, which sends each rank's local tensor to the same rank of the next stage) needs
equal meshes, so it runs on `--equal-tp` ranks per stage (2,2,2 by default), beside meshcast's
stages on those same meshes.

One run, in order:

1. compute: each stage's forward and backward of one micro-batch timed alone (the other stages
   wait), on its own ranks, median of several;
2. with `--testbed`, the link rate: each stage on an emulated host of its own, `tc`-limited
   links sized so that a boundary's transfer takes `--comm-fraction` (0.4) of the mean stage
   forward, the paper's regime (a quarter to a half); the boundaries' transfer times measured
   there alone, median of several;
3. the schedules, rounds alternating, each iteration timed barrier to barrier: `--compute delay`
   replaces each stage's forward and backward by a sleep of its measured time (transfers stay
   real: this machine's 2 cores cannot compute 8 ranks in parallel as a GPU pipeline does),
   `--compute real` runs the model; `--compute both` (default) runs both modes;
4. the simulator (`pipeline.simulate`) with the measured compute and transfer times: predicted
   iteration times and the predicted eager-1F1B over 1F1B;
5. memory per stage: peak micro-batches in flight and the largest peak RSS growth of its ranks
   over an iteration (real compute; eager-1F1B keeps more activations alive).

    python benchmarks/pipeline_run.py [--compute delay|real|both] [--iterations 6]
    sudo python benchmarks/pipeline_run.py --testbed --compute delay --json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor, distribute_tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import markdown_table, write_results
from examples.pipeline_hf import (
    SCHEDULE_CLASSES,
    LlamaStage,
    Options,
    boundary_layout,
    build_model,
    data,
    loss_fn,
    mesh_stage,
    parallelize_stage,
    run_step,
    stage_meshes,
)
from meshcast.executor.local_world import LocalWorld
from meshcast.executor.memory import PeakMemory
from meshcast.executor.pipeline_stage import MeshStage
from meshcast.pipeline.schedules import generate, peak_inflight
from meshcast.pipeline.simulate import Timing, simulate

SCHEDULES = ("gpipe", "1f1b", "eager-1f1b")
LATENCY_US = 50.0


# -- what every rank runs -------------------------------------------------------------------


class _Delay(torch.autograd.Function):
    """Sleep for the forward's time and give an output of the boundary's shape; sleep for the
    backward's time and give a zero gradient of the input's."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, shape: tuple[int, ...], times: tuple[float, float]):  # type: ignore[override]
        time.sleep(times[0])
        ctx.backward_s, ctx.input_shape = times[1], x.shape
        return x.new_zeros(shape, dtype=torch.float32)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]
        time.sleep(ctx.backward_s)
        return grad.new_zeros(ctx.input_shape), None, None


class DelayStage(torch.nn.Module):
    """A stage whose compute is a sleep of `times` (forward, backward seconds); its boundary
    tensors have the real stage's shapes and layouts."""

    def __init__(self, opts: Options, stage: int, mesh: Any, times: tuple[float, float]):
        super().__init__()
        self.mesh, self.times, self.first = mesh, times, stage == 0
        self.shape = boundary_layout(opts).shape
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.placement = boundary_layout(opts).placements

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        source = self.weight if self.first else (x.to_local() if isinstance(x, DTensor) else x)
        out = _Delay.apply(source, self.shape, self.times)
        return DTensor.from_local(out, self.mesh, list(self.placement), run_check=False)


class LocalBoundary(torch.nn.Module):
    """A stage module with plain local tensors at its boundaries, as torch's own
    `PipelineStage` sends them (each rank's replicated copy to the same rank of the next stage)."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.inner(x)
        return y.to_local() if isinstance(y, DTensor) else y


def _delay_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    local = output.to_local() if isinstance(output, DTensor) else output
    return local.sum() * 0.0


def _stage_module(opts: Options, stage: int, mesh: Any, times: dict[str, Any] | None) -> Any:
    if times is None:
        return parallelize_stage(LlamaStage(build_model(opts), opts, stage, mesh), mesh)
    return DelayStage(opts, stage, mesh, (times["forward_s"][stage], times["backward_s"][stage]))


def measure_compute(opts_json: dict[str, Any], repeats: int) -> dict[str, list[float]]:
    """Each stage's forward and backward of one micro-batch, timed alone on its ranks (median;
    the other ranks wait at a barrier)."""
    opts = Options.from_json(opts_json)
    torch.set_num_threads(1)
    rank = dist.get_rank()
    stage = opts.stage_of(rank)
    meshes = stage_meshes(opts)
    module = _stage_module(opts, stage, meshes[stage], None)
    tokens, targets = data(opts)
    rows = opts.batch // opts.microbatches
    layout = boundary_layout(opts)
    forward, backward = [], []
    for turn in range(opts.num_stages):
        dist.barrier()
        if turn != stage:
            continue
        for _ in range(repeats + 1):  # the first is warm-up
            if stage == 0:
                x: Any = tokens[:rows]
            else:
                whole = torch.randn(layout.shape, generator=torch.Generator().manual_seed(3))
                x = distribute_tensor(whole, meshes[stage], list(layout.placements))
                x = x.detach().requires_grad_()
            dist.barrier(group=meshes[stage].get_group())
            began = time.perf_counter()
            y = module(x)
            middle = time.perf_counter()
            if stage == opts.num_stages - 1:
                loss_fn(y, targets[:rows]).backward()
            else:
                y.backward(torch.ones_like(y))
            ended = time.perf_counter()
            forward.append(middle - began)
            backward.append(ended - middle)
    # every rank learns every stage's times (its first rank's figures)
    mine = [statistics.median(forward[1:]), statistics.median(backward[1:])] if forward else None
    everyone: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, mine)
    firsts = [everyone[opts.stage_ranks(s)[0]] for s in range(opts.num_stages)]
    return {"forward_s": [f[0] for f in firsts], "backward_s": [f[1] for f in firsts]}


def measure_transfers(opts_json: dict[str, Any], repeats: int) -> dict[str, list[float]]:
    """Each boundary's activation and gradient transfer alone (median of `repeats`, barrier
    to barrier), with the executors `MeshStage` prepares."""
    opts = Options.from_json(opts_json)
    torch.set_num_threads(1)
    rank = dist.get_rank()
    stage = opts.stage_of(rank)
    pipe = mesh_stage(opts, stage, stage_meshes(opts)[stage], torch.nn.Identity())
    out: dict[str, list[float]] = {"activation_s": [], "gradient_s": []}
    for boundary in pipe.boundaries:
        for key, executor in (
            ("activation_s", boundary.activations),
            ("gradient_s", boundary.gradients),
        ):
            shards = {}
            if executor.source_tensors:
                local_shape = _local_shape(executor, boundary.names[0])
                shards = {boundary.names[0]: torch.ones(local_shape)}
            samples = []
            for _ in range(repeats + 1):
                dist.barrier()
                began = time.perf_counter()
                executor.run(shards)
                dist.barrier()
                samples.append(time.perf_counter() - began)
            out[key].append(statistics.median(samples[1:]))
    pipe.close()
    return out


def _local_shape(executor: Any, name: str) -> tuple[int, ...]:
    expected = executor._expected("src")[name]  # the executor's own shapes
    return tuple(expected.shapes[0])


def run_schedules(
    opts_json: dict[str, Any],
    schedules: list[str],
    iterations: int,
    times: dict[str, Any] | None,
    native: bool,
) -> dict[str, Any]:
    """Train under each schedule of `schedules` in turn (rounds: a schedule may come back, its
    iteration times add up, the first of each turn left out as warm-up). `times`: the delay
    mode's compute times (None: the real model). `native`: torch's own `PipelineStage` (equal
    meshes only) instead of `MeshStage`."""
    from torch.distributed.pipelining import PipelineStage

    opts = Options.from_json(opts_json)
    torch.set_num_threads(1)
    rank = dist.get_rank()
    stage = opts.stage_of(rank)
    meshes = stage_meshes(opts)
    mesh = meshes[stage]
    module = _stage_module(opts, stage, mesh, times)
    layout = boundary_layout(opts)
    if native:
        tp = opts.stage_tp[0]
        groups = [
            dist.new_group([opts.stage_ranks(s)[j] for s in range(opts.num_stages)])
            for j in range(tp)
        ]
        rows = opts.batch // opts.microbatches
        example = torch.zeros(layout.shape)
        pipe: Any = PipelineStage(
            LocalBoundary(module),
            stage,
            opts.num_stages,
            torch.device("cpu"),
            input_args=(example if stage else torch.zeros(rows, opts.sequence, dtype=torch.long),),
            output_args=(example,) if stage < opts.num_stages - 1 else None,
            group=groups[mesh.get_local_rank()],
        )
    else:
        pipe = mesh_stage(opts, stage, mesh, module)
    tokens, targets = data(opts)
    lossf = _delay_loss if times is not None else loss_fn
    out: dict[str, Any] = {}
    for name in schedules:
        schedule = SCHEDULE_CLASSES[name](pipe, opts.microbatches, loss_fn=lossf)
        seen = out.setdefault(name, {"times": [], "peak_growth_bytes": 0})
        for i in range(iterations + 1):
            dist.barrier()
            with PeakMemory(torch.device("cpu")) as peak:
                began = time.perf_counter()
                run_step(schedule, opts, stage, tokens, targets, [])
                dist.barrier()
                took = time.perf_counter() - began
            module.zero_grad(set_to_none=True)
            if i:  # the first is warm-up
                seen["times"].append(took)
                seen["peak_growth_bytes"] = max(seen["peak_growth_bytes"], peak.growth_bytes or 0)
    if isinstance(pipe, MeshStage):
        pipe.close()
    return out


# -- the parent -----------------------------------------------------------------------------


class Launcher:
    """Runs a function on every rank of a world of `opts.world_size`: local processes, or one
    process per rank inside the testbed's emulated hosts."""

    def __init__(self, opts: Options, spec: Any = None) -> None:
        self.opts, self.spec = opts, spec
        self.world = None if spec is not None else LocalWorld(opts.world_size, timeout_s=600)

    def run(self, function: str, *args: Any) -> list[Any]:
        if self.world is not None:
            return self.world.run(globals()[function], *args)[: self.opts.world_size]
        from meshcast.testbed.launch import run_job

        job = {
            "world_size": self.opts.world_size,
            "timeout_s": 600,
            "runs": [],
            "function": f"benchmarks.pipeline_run:{function}",
            "args": list(args),
        }
        return [a["result"] for a in run_job(self.spec, job, timeout_s=3600)]

    def close(self) -> None:
        if self.world is not None:
            self.world.close()


def _testbed_spec(opts: Options, name: str, gbps: float) -> Any:
    from meshcast.testbed import network

    host_of = {r: s for s in range(opts.num_stages) for r in opts.stage_ranks(s)}
    return network.TestbedSpec(
        name=name,
        num_hosts=opts.num_stages,
        host_gbps=gbps,
        latency_us=LATENCY_US,
        host_of=host_of,
    )


def _cluster(opts: Options, gbps: float) -> dict[str, Any]:
    return {
        "hosts": [opts.stage_ranks(s) for s in range(opts.num_stages)],
        "nic_gbps": gbps,
        "nics_per_host": 1,
        "intra_gbps": 100,
        "latency_us": LATENCY_US,
    }


def _predict(
    compute: dict[str, list[float]], transfers: dict[str, list[float]], opts: Options
) -> dict[str, Any]:
    timing = Timing(
        compute["forward_s"],
        compute["backward_s"],
        transfers["activation_s"],
        transfers["gradient_s"],
    )
    out = {}
    for name in SCHEDULES:
        ops = generate(name, opts.num_stages, opts.microbatches)
        out[name] = {
            "iteration_s": simulate(ops, timing).iteration_s,
            "peak_inflight": [peak_inflight(s) for s in ops],
        }
    return out


def _rows(
    label: str,
    opts: Options,
    args: argparse.Namespace,
    modes: list[str],
    boundary_bytes: int,
) -> dict[str, Any]:
    """One configuration: compute measured on local processes, then (with `--testbed`) the
    links sized from it, the transfers measured there, and every schedule in every mode."""
    local = Launcher(opts)
    try:
        compute = local.run("measure_compute", asdict(opts), args.repeats)[0]
    finally:
        local.close()
    pairs = zip(compute["forward_s"], compute["backward_s"], strict=True)
    print("  compute per micro-batch, forward / backward ms: " + _pairs_ms(pairs), flush=True)
    with contextlib.ExitStack() as stack:
        if args.testbed:
            from meshcast.testbed import network

            forward = statistics.mean(compute["forward_s"])
            gbps = boundary_bytes * 8 / (args.comm_fraction * forward) / 1e9
            spec = _testbed_spec(opts, f"pipe{label}", gbps)
            stack.enter_context(network.running(spec))
            print(f"  testbed: {opts.num_stages} hosts, {gbps:.3f} Gbit/s links", flush=True)
            launcher = Launcher(replace(opts, cluster=_cluster(opts, gbps)), spec)
        else:
            launcher = Launcher(opts)
        stack.callback(launcher.close)
        transfers = launcher.run("measure_transfers", asdict(launcher.opts), args.repeats)[0]
        pairs = zip(transfers["activation_s"], transfers["gradient_s"], strict=True)
        print("  transfers per micro-batch, activation / gradient ms: " + _pairs_ms(pairs))
        predicted = _predict(compute, transfers, opts)
        rows = []
        for mode in modes:
            times = compute if mode == "delay" else None
            iterations = args.iterations if mode == "delay" else max(2, args.iterations // 2)
            for native in [False, True] if label == "equal" else [False]:
                schedules = list(("1f1b",) if native else SCHEDULES) * args.rounds
                answers = launcher.run(
                    "run_schedules", asdict(launcher.opts), schedules, iterations, times, native
                )
                for name in dict.fromkeys(schedules):
                    rows.append(_row(opts, answers, name, mode, native, predicted[name]))
    return {
        "stage_tp": list(opts.stage_tp),
        "compute": compute,
        "transfers": transfers,
        "predicted": predicted,
        "cluster": launcher.opts.cluster,
        "rows": rows,
    }


def _pairs_ms(pairs: Any) -> str:
    return ", ".join(f"{a * 1e3:.1f} / {b * 1e3:.1f}" for a, b in pairs)


def _row(
    opts: Options,
    answers: list[Any],
    name: str,
    mode: str,
    native: bool,
    predicted: dict[str, Any],
) -> dict[str, Any]:
    """One schedule's figures: an iteration lasts as long as its slowest rank."""
    per_iteration = [max(r) for r in zip(*(a[name]["times"] for a in answers), strict=True)]
    median = statistics.median(per_iteration)
    growth = [
        max(answers[r][name]["peak_growth_bytes"] for r in opts.stage_ranks(s)) / 2**20
        for s in range(opts.num_stages)
    ]
    row = {
        "stages": ",".join(map(str, opts.stage_tp)),
        "stage": "torch PipelineStage" if native else "meshcast MeshStage",
        "schedule": name,
        "mode": mode,
        "iteration_s": median,
        "iterations_per_s": 1 / median,
        # real compute has no prediction here: its ranks share this machine's cores, so their
        # compute times are not the ones measured alone
        "predicted_s": predicted["iteration_s"] if mode == "delay" else float("nan"),
        "peak_inflight": predicted["peak_inflight"],
        "peak_growth_mib": growth,
        "iterations": len(per_iteration),
    }
    print(
        f"  {mode:5s} {row['stage']:20s} {name:10s} {median * 1e3:8.1f} ms "
        f"(predicted {row['predicted_s'] * 1e3:.1f})",
        flush=True,
    )
    return row


def _table(rows: list[dict[str, Any]]) -> str:
    header = [
        "stage TP",
        "stages",
        "schedule",
        "compute",
        "iteration ms",
        "iterations/s",
        "predicted ms",
        "in flight per stage",
        "peak growth MiB per stage",
    ]
    return markdown_table(
        header,
        [
            [
                r["stages"],
                r["stage"],
                r["schedule"],
                r["mode"],
                r["iteration_s"] * 1e3,
                r["iterations_per_s"],
                r["predicted_s"] * 1e3,
                "/".join(map(str, r["peak_inflight"])),
                "/".join(f"{g:.1f}" for g in r["peak_growth_mib"]),
            ]
            for r in rows
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage-tp", default="4,2,2")
    parser.add_argument(
        "--equal-tp", type=int, default=2, help="torch's own pipeline: TP per stage (0: skip)"
    )
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--split", default="", help="layers per stage (default: even)")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--intermediate", type=int, default=512)
    parser.add_argument("--vocab", type=int, default=512)
    parser.add_argument("--sequence", type=int, default=128)
    parser.add_argument("--rows", type=int, default=4, help="sequences per micro-batch")
    parser.add_argument("--microbatches", type=int, default=6)
    parser.add_argument("--iterations", type=int, default=6, help="per schedule and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="samples of each measured time")
    parser.add_argument("--compute", choices=["delay", "real", "both"], default="both")
    parser.add_argument("--testbed", action="store_true", help="one emulated host per stage")
    parser.add_argument(
        "--comm-fraction", type=float, default=0.4, help="transfer / forward, sizing the links"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON line last")
    args = parser.parse_args()
    base = Options(
        stage_tp=tuple(int(v) for v in args.stage_tp.split(",")),
        layers=args.layers,
        split=tuple(int(v) for v in args.split.split(",") if v),
        hidden=args.hidden,
        heads=args.heads,
        kv_heads=args.heads,
        intermediate=args.intermediate,
        vocab=args.vocab,
        batch=args.rows * args.microbatches,
        sequence=args.sequence,
        microbatches=args.microbatches,
        schedules=SCHEDULES,
    )
    base.check()
    modes = ["delay", "real"] if args.compute == "both" else [args.compute]
    configs = [("meshcast", base)]
    if args.equal_tp:
        equal = replace(base, stage_tp=(args.equal_tp,) * base.num_stages, split=())
        equal.check()
        configs.append(("equal", equal))
    boundary_bytes = 4 * args.rows * base.sequence * base.hidden
    results: dict[str, Any] = {}
    for label, opts in configs:
        print(f"{label}: stages of TP {', '.join(map(str, opts.stage_tp))}", flush=True)
        results[label] = _rows(label, opts, args, modes, boundary_bytes)
    rows = [row for config in results.values() for row in config["rows"]]
    mine = results["meshcast"]
    gains = {}
    for mode in modes:
        by_name = {r["schedule"]: r["iteration_s"] for r in mine["rows"] if r["mode"] == mode}
        gains[mode] = by_name["1f1b"] / by_name["eager-1f1b"]
    predicted = mine["predicted"]
    predicted_gain = predicted["1f1b"]["iteration_s"] / predicted["eager-1f1b"]["iteration_s"]
    forward = statistics.mean(mine["compute"]["forward_s"])
    ratio = [t / forward for t in mine["transfers"]["activation_s"]]
    where = "testbed: one emulated host per stage" if args.testbed else "gloo on one machine"
    summary = (
        f"\n{where}; {base.microbatches} micro-batches of {args.rows}x{base.sequence} tokens, "
        f"boundary {boundary_bytes / 2**10:.0f} KiB; transfer / mean forward "
        + ", ".join(f"{r:.2f}" for r in ratio)
        + f"; eager-1F1B over 1F1B (stages {args.stage_tp}): "
        + ", ".join(f"{m} {g:.3f}x" for m, g in gains.items())
        + f", predicted {predicted_gain:.3f}x (delay mode; real compute is not predicted: its "
        "ranks share this machine's cores)"
    )
    table = _table(rows)
    print(table + summary)
    name = "pipeline_run" + ("_testbed" if args.testbed else "")
    name += "" if args.compute == "both" else f"_{args.compute}"
    write_results(
        name,
        table + summary,
        {"configs": results, "gains": gains, "predicted_gain": predicted_gain},
    )
    if args.json:
        line = {
            "mode": modes[0],
            "eager_over_1f1b": gains[modes[0]],
            "predicted_eager_over_1f1b": predicted_gain,
        }
        print(json.dumps(line))


if __name__ == "__main__":
    main()
