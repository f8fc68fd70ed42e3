"""Whole-model refit: meshcast's `Refit.sync` against gather-and-broadcast, same model, same
cluster, one run; and both methods by the port-v1 model at real scale.

The baseline is the one RL frameworks ship (slime and SGLang's `update_weights_from_distributed`,
verl's naive engine, OpenRLHF's `broadcast_to_vllm`): every trainer rank calls `full_tensor()`
on each parameter (an all-gather over its mesh), trainer rank 0 packs the full tensors into a
bucket and `dist.broadcast`s it to every engine rank, and each engine rank copies out the
slices it keeps (its `load_weights`). Buckets are scaled to the model: those frameworks use
512 MiB-1 GiB buckets on 60-1,300 GB models (a hundred buckets or more); here a sixteenth of
the model, at least 1 MiB. Tensors that fuse into one engine parameter share a bucket.

Rows (a real transformers model under FSDP2 + TP, `examples.refit_hf`; one rank per emulated
host on the testbed, trainer (dp 2, tp 2) on 4 hosts):
- `moe-ep`: Qwen3-MoE into one engine of TP 2 whose experts are split over its 2 hosts (expert
  parallelism across hosts): each engine host needs half the experts;
- `dense-tp`: Llama into one engine of TP 2 on 2 hosts: each needs half of every matrix;
- `dense-replicas`: Llama into 2 engines of TP 1 on 2 hosts: each host needs the whole model,
  where a broadcast is near the receive-NIC bound too.

Per row: the sync's time (median of the repeats, barrier to barrier), with `verify=True`, and
the baseline's; meshcast's port-v1 prediction (its plan's makespan with the testbed's
calibrated figures); bytes each host's NIC sent and received (`/proc/net/dev` in its namespace);
each rank's peak memory growth during the step (`executor.memory.PeakMemory`). Loopback runs
the same rows in one local world (no NIC to count, no prediction: every rank shares one host).

At real scale (`../shared/cases-scale` refits and a DeepSeek-V3-sized one), the port-v1
prediction of meshcast's plan beside the baseline's, estimated in the same model's terms and in
its favour: its all-gathers at the NIC rate across hosts and the NVLink rate within, then a
pipelined (NCCL ring) broadcast of the whole model from one GPU's NIC, the two in sequence as
those frameworks do per bucket; published figures beside them, from other hardware.

    python benchmarks/refit.py                      # loopback rows and the real-scale table
    sudo python benchmarks/refit.py --testbed --json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import SHARED, markdown_table, write_results

#: the rows' models and meshes (see the module docstring)
ROWS: dict[str, dict[str, Any]] = {
    "moe-ep": dict(
        model="qwen3-moe", hidden=512, intermediate=512, layers=4, heads=8, kv_heads=4,
        vocab=4096, experts=8, engines=1, engine_tp=2, engine_ep=2,
    ),
    "dense-tp": dict(
        model="llama", hidden=512, intermediate=2048, layers=6, heads=8, kv_heads=4,
        vocab=4096, engines=1, engine_tp=2,
    ),
    "dense-replicas": dict(
        model="llama", hidden=512, intermediate=2048, layers=6, heads=8, kv_heads=4,
        vocab=4096, engines=2, engine_tp=1,
    ),
}  # fmt: skip
#: published whole-model refit times (other hardware), beside the real-scale predictions
PUBLISHED = [
    ("Qwen3-30B-A3B, 32 H100, broadcast (slime)", 7.0),
    ("Kimi-K2, 256 H20, broadcast", 16.0),
    ("DeepSeek-V3, 256 GB200, NCCL M2N (NeMo-RL)", 1.45),
    ("DeepSeek-V3, H100, NeMo-RL", 2.6),
]
SCALE_CASES = [
    "refit-small-pp2-to-2x2",
    "refit-mixtral-8x22b-pp4-to-4x8",
    "refit-qwen2-57b-per-expert-pp2-to-2x8",
]


# ---------------------------------------------------------------- one rank's measurements


def _nic_bytes() -> tuple[int, int]:
    """Bytes this namespace's eth0 has sent and received (0, 0 where there is none)."""
    for line in Path("/proc/net/dev").read_text().splitlines():
        name, _, counters = line.partition(":")
        if name.strip() == "eth0":
            fields = counters.split()
            return int(fields[8]), int(fields[0])
    return 0, 0


def _baseline(
    opts: Any,
    rules: dict[str, Any],
    shapes: dict[str, tuple[int, ...]],
    state: Any,
    params: Any,
    tp_rank: int,
    group: Any,
) -> None:
    """One gather-and-broadcast refit (see the module docstring)."""
    import torch
    import torch.distributed as dist

    total = sum(math.prod(s) * 4 for s in shapes.values())
    bucket_bytes = max(1 << 20, total // 16)
    buckets: list[list[str]] = [[]]
    size = 0
    for rule in rules.values():  # fused sources together, in the engine's order
        if size >= bucket_bytes:
            buckets.append([])
            size = 0
        buckets[-1] += list(rule.sources)
        size += sum(math.prod(shapes[n]) * 4 for n in rule.sources)
    rank = dist.get_rank()
    for names in buckets:
        fulls = [state[n].full_tensor() for n in names] if state is not None else None
        if rank != 0 and params is None:
            continue
        numel = sum(math.prod(shapes[n]) for n in names)
        flat = torch.cat([f.flatten() for f in fulls]) if rank == 0 else torch.empty(numel)
        dist.broadcast(flat, src=0, group=group)
        if params is None:
            continue
        sizes = [math.prod(shapes[n]) for n in names]
        full = dict(zip(names, torch.split(flat, sizes), strict=True))
        for engine_name, rule in rules.items():
            if not set(rule.sources) <= full.keys():
                continue
            local = rule.local(shapes, tp_rank, opts.engine_tp)
            param = params[engine_name]
            for tensor, places in local.views().items():
                whole = full[tensor].view(shapes[tensor])
                for at, length, box in places:
                    part = whole[tuple(slice(lo, hi) for lo, hi in box)]
                    param.narrow(local.dim, at, length).copy_(part)


def bench_rank(row: dict[str, Any], cluster: dict[str, Any] | None, repeats: int) -> dict[str, Any]:
    """Every rank: the trainer (FSDP2 + TP) or an engine (vLLM's layout), then meshcast's
    sync, verified sync and the baseline, each `repeats` times."""
    import torch
    import torch.distributed as dist

    from examples.refit_hf import Options, build_model, make_trainer
    from meshcast.executor.memory import PeakMemory
    from meshcast.executor.refit import Refit
    from meshcast.planner.refit_map import local_shapes
    from meshcast.planner.refit_presets import llama_to_vllm, shape_of

    opts = Options(**row)
    rank = dist.get_rank()
    model = build_model(opts)
    trainer_mesh, engine_mesh = opts.meshes()
    engine_ranks = [r for e in range(opts.engines) for r in opts.engine_ranks(e)]
    group = dist.new_group([0, *engine_ranks])
    rules = llama_to_vllm(shape_of(model.config), opts.engine_ep)
    shapes = {n: tuple(t.shape) for n, t in model.state_dict().items()}
    state = params = None
    tp_rank = 0
    if rank in opts.trainer_ranks:
        state = make_trainer(model, trainer_mesh)
    elif engine_mesh is not None:
        tp_rank = engine_mesh.get_local_rank()
        locals_ = local_shapes(rules, shapes, tp_rank, opts.engine_tp)
        params = {n: torch.zeros(s) for n, s in locals_.items()}
        del model
    refit = Refit(
        rules, trainer_state=state, engine_params=params, engine_mesh=engine_mesh, cluster=cluster
    )
    methods = {
        "meshcast": lambda: refit.sync(),
        "meshcast-verify": lambda: refit.sync(verify=True),
        "baseline": lambda: _baseline(opts, rules, shapes, state, params, tp_rank, group),
    }
    out: dict[str, Any] = {"rank": rank, "predicted_s": refit.plan.makespan_s}
    refit.sync()  # the first sync: staging and process groups warm
    landed = {n: t.clone() for n, t in (params or {}).items()}
    for method, step in methods.items():
        times, growth, nic = [], [], []
        for _ in range(repeats):
            for t in (params or {}).values():
                t.fill_(math.nan)  # each method's every run must land every value itself
            dist.barrier()
            sent, received = _nic_bytes()
            with PeakMemory(torch.device("cpu")) as peak:
                began = time.perf_counter()
                step()
                dist.barrier()
                times.append(time.perf_counter() - began)
            after = _nic_bytes()
            nic.append((after[0] - sent, after[1] - received))
            growth.append(peak.growth_bytes or 0)
        exact = all(torch.equal(params[n], landed[n]) for n in landed) if params else True
        out[method] = {"s": times, "growth": growth, "nic": nic, "exact": exact}
    out["model_bytes"] = sum(math.prod(s) * 4 for s in shapes.values())
    refit.close()
    dist.destroy_process_group(group)
    return out


# ---------------------------------------------------------------- running the rows


def _row_results(name: str, where: str, answers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for method in ("meshcast", "meshcast-verify", "baseline"):
        seconds = statistics.median(answers[0][method]["s"])
        sent = [max(s for s, _ in a[method]["nic"]) for a in answers]
        received = [max(r for _, r in a[method]["nic"]) for a in answers]
        rows.append(
            {
                "row": name,
                "where": where,
                "method": method,
                "sync_s": seconds,
                "runs_s": answers[0][method]["s"],
                "predicted_s": answers[0]["predicted_s"]
                if method.startswith("meshcast") and where == "testbed"
                else None,
                "exact": all(a[method]["exact"] for a in answers),
                "model_mib": answers[0]["model_bytes"] / 2**20,
                "max_nic_sent_mib": max(sent) / 2**20,
                "max_nic_received_mib": max(received) / 2**20,
                "nic_sent_mib": [s / 2**20 for s in sent],
                "nic_received_mib": [r / 2**20 for r in received],
                "peak_growth_mib": [max(a[method]["growth"]) / 2**20 for a in answers],
            }
        )
    return rows


def _world_size(row: dict[str, Any]) -> int:
    from examples.refit_hf import Options

    return Options(**row).world_size


def loopback(names: list[str], repeats: int) -> list[dict[str, Any]]:
    from meshcast.executor.local_world import LocalWorld

    rows = []
    for name in names:
        print(f"loopback {name}: running", file=sys.stderr, flush=True)
        with LocalWorld(_world_size(ROWS[name]), timeout_s=600) as world:
            answers = world.run(bench_rank, ROWS[name], None, repeats)
        rows += _row_results(name, "loopback", answers)
    return rows


def testbed(
    names: list[str], repeats: int, nic_gbps: float
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from meshcast.testbed import network
    from meshcast.testbed.bench import TESTBED_CHUNK_BYTES
    from meshcast.testbed.launch import run_job

    rows, calibration = [], {}
    for name in names:
        world_size = _world_size(ROWS[name])
        spec = network.TestbedSpec(
            name="refit", num_hosts=world_size, host_gbps=nic_gbps, latency_us=50,
            host_of={r: r for r in range(world_size)},
        )  # fmt: skip
        print(f"testbed {name}: {world_size} hosts at {nic_gbps:g} Gbit/s", file=sys.stderr)
        with network.running(spec):
            base = {"world_size": world_size, "timeout_s": 600, "repeats": 3, "runs": []}
            calibration = run_job(
                spec,
                {**base, "calibrate": True, "calibrate_bytes": 16 << 20,
                 "chunk_bytes": TESTBED_CHUNK_BYTES},
                600,
            )[0]["calibration"]  # fmt: skip
            print(f"  calibrated {calibration}", file=sys.stderr, flush=True)
            cluster = {
                "hosts": [[r] for r in range(world_size)],
                "nic_gbps": calibration["nic_gbps"],
                "nics_per_host": 1,
                "intra_gbps": 100,
                "latency_us": calibration["latency_us"],
            }
            job = {**base, "function": "benchmarks.refit:bench_rank",
                   "args": [ROWS[name], cluster, repeats]}  # fmt: skip
            answers = [a["result"] for a in run_job(spec, job, 900)]
        rows += _row_results(name, "testbed", answers)
    return calibration, rows


# ---------------------------------------------------------------- real scale, by port-v1


def deepseek_sized_request() -> dict[str, Any]:
    """A DeepSeek-V3-sized refit (Qwen3-MoE-shaped: 61 layers of 256 experts of 7168 x 2048,
    128 heads of 128, vocab 129,280; about 0.7 T parameters, bf16) from 256 training GPUs
    (32 hosts; experts over dp 32 and tp 8, attention (dp, tp) as FSDP2 + TP keep it) into 8
    engines of 16 GPUs (2 hosts each), experts split 16 ways (vLLM's expert parallelism)."""
    from meshcast.planner.refit_map import refit_blocks
    from meshcast.planner.refit_presets import LlamaShape, llama_to_vllm

    hidden, inter, experts, layers, heads, vocab = 7168, 2048, 256, 61, 128, 129280
    config = LlamaShape(layers, heads, heads, 128, qk_norm=True, num_experts=experts)
    rules = llama_to_vllm(config, ep=16)
    shapes: dict[str, tuple[int, ...]] = {
        "model.embed_tokens.weight": (vocab, hidden),
        "lm_head.weight": (vocab, hidden),
        "model.norm.weight": (hidden,),
    }
    for i in range(layers):
        a, m = f"model.layers.{i}.self_attn", f"model.layers.{i}.mlp"
        shapes |= {f"{a}.{p}_proj.weight": (heads * 128, hidden) for p in "qkv"}
        shapes[f"{a}.o_proj.weight"] = (hidden, heads * 128)
        shapes |= {f"{a}.{n}.weight": (128,) for n in ("q_norm", "k_norm")}
        shapes[f"{m}.gate.weight"] = (experts, hidden)
        shapes[f"{m}.experts.gate_up_proj"] = (experts, 2 * inter, hidden)
        shapes[f"{m}.experts.down_proj"] = (experts, hidden, inter)
        shapes |= {
            f"model.layers.{i}.{n}.weight": (hidden,)
            for n in ("input_layernorm", "post_attention_layernorm")
        }
    blocks = refit_blocks(rules, shapes, 16, 8)
    trainer, engine = list(range(256)), list(range(256, 384))

    def placements(name: str) -> list[str]:
        if (
            len(shapes[name]) == 1
            or name.endswith("gate.weight")
            or "embed" in name
            or "lm_head" in name
        ):
            return ["S(0)", "R"]
        if name.endswith(("o_proj.weight",)):
            return ["S(0)", "S(1)"]
        if "experts" in name:
            return ["S(0)", "S(1)"]
        return ["S(0)", "S(0)"]

    return {
        "tensors": [
            {
                "name": name,
                "shape": list(shape),
                "dtype": "bfloat16",
                "src": {"mesh": "train", "placements": placements(name)},
                "dst": {"mesh": "engines",
                        "blocks": [[[list(iv) for iv in box] for box in b] for b in blocks[name]]},
            }
            for name, shape in shapes.items()
        ],
        "meshes": {
            "train": {"shape": [32, 8], "devices": trainer},
            "engines": {"shape": [8, 16], "devices": engine},
        },
        "cluster": {
            "hosts": [list(range(h * 8, h * 8 + 8)) for h in range(48)],
            "nic_gbps": 400, "nics_per_host": 8, "intra_gbps": 3600, "latency_us": 5,
        },
    }  # fmt: skip


def baseline_estimate_s(raw: dict[str, Any]) -> float:
    """Gather-and-broadcast by the port-v1 model's figures (see the module docstring)."""
    cluster = raw["cluster"]
    host_of = {d: h for h, devices in enumerate(cluster["hosts"]) for d in devices}
    nic = cluster["nic_gbps"] * 1e9 / 8  # one GPU's rail
    intra = cluster.get("intra_gbps", cluster["nic_gbps"]) * 1e9 / 8
    itemsize = {"bfloat16": 2, "float16": 2, "float32": 4, "float8_e4m3fn": 1}
    gather = broadcast = 0.0
    for t in raw["tensors"]:
        size = math.prod(t["shape"]) * itemsize.get(t["dtype"], 4)
        devices = raw["meshes"][t["src"]["mesh"]]["devices"]
        n, hosts = len(devices), len({host_of[d] for d in devices})
        gather += size * (1 - 1 / hosts) / nic + size * (1 / hosts - 1 / n) / intra
        broadcast += size / nic
    return gather + broadcast


def real_scale(time_limit_s: float) -> list[dict[str, Any]]:
    from meshcast.planner import build_problem, parse_request
    from meshcast.solver import SolveOptions, make_plan

    requests = {
        name: json.loads((SHARED / "cases-scale" / f"{name}.json").read_text())
        for name in SCALE_CASES
        if (SHARED / "cases-scale" / f"{name}.json").exists()
    }
    requests["deepseek-v3-sized-256-to-8x16"] = deepseek_sized_request()
    rows = []
    for name, raw in requests.items():
        print(f"real scale {name}: planning", file=sys.stderr, flush=True)
        began = time.perf_counter()
        problem = build_problem(parse_request(raw))
        plan = make_plan(problem, "greedy", SolveOptions(time_limit_s))
        itemsize = {"bfloat16": 2, "float16": 2, "float32": 4}
        model = sum(math.prod(t["shape"]) * itemsize.get(t["dtype"], 4) for t in raw["tensors"])
        rows.append(
            {
                "case": name,
                "tensors": len(raw["tensors"]),
                "gpus": sum(len(h) for h in raw["cluster"]["hosts"]),
                "model_gb": model / 1e9,
                "meshcast_predicted_s": plan.makespan_s,
                "lower_bound_s": problem.lower_bound_s,
                "baseline_estimate_s": baseline_estimate_s(raw),
                "plan_s": time.perf_counter() - began,
            }
        )
    return rows


# ---------------------------------------------------------------- the report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--testbed", action="store_true", help="also on the emulated testbed (root)"
    )
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--nic-gbps", type=float, default=0.5)
    parser.add_argument("--time-limit", type=float, default=5.0, help="real-scale planning")
    parser.add_argument("--json", action="store_true", help="print one JSON line last")
    args = parser.parse_args(argv)
    names = args.rows.split(",")
    unknown = sorted(set(names) - set(ROWS))
    if unknown:
        parser.error(f"--rows: unknown row {unknown[0]!r} (rows: {', '.join(ROWS)})")
    if args.testbed and os.geteuid() != 0:
        parser.error("--testbed needs root (network namespaces and tc)")
    rows = loopback(names, args.repeats)
    calibration: dict[str, Any] = {}
    if args.testbed:
        calibration, testbed_rows = testbed(names, args.repeats, args.nic_gbps)
        rows += testbed_rows
    scale = real_scale(args.time_limit)

    def speedup(where: str, name: str) -> float:
        mine = next(
            (r for r in rows if (r["where"], r["row"], r["method"]) == (where, name, "meshcast")),
            None,
        )
        base = next(
            (r for r in rows if (r["where"], r["row"], r["method"]) == (where, name, "baseline")),
            None,
        )
        return base["sync_s"] / mine["sync_s"] if mine and base else math.nan

    for r in rows:
        r["vs_prediction"] = r["sync_s"] / r["predicted_s"] if r["predicted_s"] else None
        mesh = next(
            x
            for x in rows
            if (x["where"], x["row"], x["method"]) == (r["where"], r["row"], "meshcast")
        )
        r["vs_meshcast"] = r["sync_s"] / mesh["sync_s"]
    header = ["where", "row", "model MiB", "method", "sync s", "predicted s", "measured/pred",
              "vs meshcast", "max NIC sent MiB", "max NIC recv MiB", "max peak growth MiB",
              "exact"]  # fmt: skip
    table = markdown_table(
        header,
        [
            [r["where"], r["row"], r["model_mib"], r["method"], r["sync_s"],
             r["predicted_s"] or math.nan, r["vs_prediction"] or math.nan, r["vs_meshcast"],
             r["max_nic_sent_mib"], r["max_nic_received_mib"], max(r["peak_growth_mib"]),
             r["exact"]]
            for r in rows
        ],
    )  # fmt: skip
    scale_table = markdown_table(
        ["case", "tensors", "GPUs", "model GB", "meshcast predicted s", "lower bound s",
         "baseline estimate s", "baseline / meshcast", "plan s"],
        [
            [s["case"], s["tensors"], s["gpus"], s["model_gb"], s["meshcast_predicted_s"],
             s["lower_bound_s"], s["baseline_estimate_s"],
             s["baseline_estimate_s"] / s["meshcast_predicted_s"], s["plan_s"]]
            for s in scale
        ],
    )  # fmt: skip
    published = markdown_table(["published (other hardware)", "s"], PUBLISHED)
    where = "testbed" if args.testbed else "loopback"
    moe_ep_speedup = speedup(where, "moe-ep")
    markdown = (
        f"# Refit: meshcast sync vs gather-and-broadcast\n\n{table}\n\n"
        f"moe-ep speedup ({where}): {moe_ep_speedup:.2f}x"
        + (f"; testbed calibration: {json.dumps(calibration)}" if calibration else "")
        + f"\n\n## Real scale (port-v1)\n\n{scale_table}\n\n{published}\n"
    )
    print(markdown)
    path = write_results(
        "refit", markdown, {"rows": rows, "scale": scale, "calibration": calibration}
    )
    print(f"results: {path}", file=sys.stderr)
    if args.json:
        print(json.dumps({"moe_ep_speedup": moe_ep_speedup, "rows": rows, "scale": scale}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
