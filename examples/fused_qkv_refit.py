"""Worked refit: a fused QKV weight from Megatron-Core's order (tensor parallel 4) into vLLM's
order (tensor parallel 2) on two inference engines, and back.

The request is built with `planner.fused`: the weight is `[q; k; v]` (all heads of each), and
every rank's local tensor is a list of slices of those parts (`megatron_qkv`, `vllm_qkv`). Each
rank then runs the plan with its fused local tensor split into views, one per block, so the
bytes land in the engine's weight itself. What each rank should hold is computed here a second
way, with plain torch ops on the query groups and heads, and compared bit for bit.

    python -m examples.fused_qkv_refit            # Llama-3-8B-shaped layer, auto planner
    python -m examples.fused_qkv_refit --heads 8 --kv-heads 2 --head-dim 16 --hidden 64
    python -m examples.fused_qkv_refit --write-requests DIR   # then: meshcast run DIR/...json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from meshcast.executor.executor import Executor
from meshcast.executor.local_world import LocalWorld
from meshcast.planner import build_problem, parse_request
from meshcast.planner.fused import Attention, Slice, block_sizes, megatron_qkv, vllm_qkv
from meshcast.planner.plan import Plan
from meshcast.solver import SolveOptions, make_plan

TRAIN_TP, ENGINE_TP, ENGINES = 4, 2, 2
#: trainer on host 0 (ranks 0-3), two engines on host 1 (ranks 4-5 and 6-7)
TRAIN_RANKS = [0, 1, 2, 3]
ENGINE_RANKS = [4, 5, 6, 7]
CLUSTER = {
    "hosts": [TRAIN_RANKS, ENGINE_RANKS],
    "nic_gbps": 400,
    "nics_per_host": 4,
    "intra_gbps": 3600,
    "latency_us": 5,
}


def request(attn: Attention, to_engines: bool, algorithm: str) -> dict[str, Any]:
    """The refit request: Megatron TP 4 -> vLLM TP 2 x 2 engines (or back)."""
    qkv = attn.qkv()
    train = qkv.layout("train", megatron_qkv(attn, TRAIN_TP))
    engines = qkv.layout("engines", vllm_qkv(attn, ENGINE_TP) * ENGINES)
    src, dst = (train, engines) if to_engines else (engines, train)
    return {
        "tensors": [
            {"name": "qkv", "shape": list(qkv.shape), "dtype": "bfloat16", "src": src, "dst": dst}
        ],
        "meshes": {
            "train": {"shape": [TRAIN_TP], "devices": TRAIN_RANKS},
            "engines": {"shape": [ENGINES, ENGINE_TP], "devices": ENGINE_RANKS},
        },
        "cluster": CLUSTER,
        "options": {"algorithm": algorithm, "time_limit_s": 2.0},
    }


def _global_parts(attn: Attention) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The layer's q, k and v weights (deterministic bfloat16 values)."""
    gen = torch.Generator().manual_seed(0)
    hd, h = attn.head_dim, attn.hidden
    full = torch.randn((attn.num_heads + 2 * attn.num_kv_heads) * hd, h, generator=gen)
    q, k, v = full.bfloat16().split(
        [attn.num_heads * hd, attn.num_kv_heads * hd, attn.num_kv_heads * hd]
    )
    return q, k, v


def megatron_local(attn: Attention, rank: int) -> torch.Tensor:
    """Megatron's fused weight on TP rank `rank`, with torch ops: groups `[q_g, k_g, v_g]`,
    contiguous runs of groups per rank."""
    q, k, v = _global_parts(attn)
    groups = attn.num_kv_heads
    by_group = torch.cat(
        [
            q.view(groups, -1, attn.hidden),
            k.view(groups, -1, attn.hidden),
            v.view(groups, -1, attn.hidden),
        ],
        dim=1,
    )
    return by_group.chunk(TRAIN_TP)[rank].reshape(-1, attn.hidden).clone()


def vllm_local(attn: Attention, rank: int) -> torch.Tensor:
    """vLLM's QKV-parallel weight on TP rank `rank`: its q heads, then its k and v heads
    (replicated when TP exceeds the key/value heads)."""
    q, k, v = _global_parts(attn)
    kv = attn.num_kv_heads
    if kv >= ENGINE_TP:
        k_r, v_r = k.chunk(ENGINE_TP)[rank], v.chunk(ENGINE_TP)[rank]
    else:
        k_r, v_r = k.chunk(kv)[rank * kv // ENGINE_TP], v.chunk(kv)[rank * kv // ENGINE_TP]
    return torch.cat([q.chunk(ENGINE_TP)[rank], k_r, v_r]).clone()


def _role(rank: int, attn: Attention) -> tuple[str, int, list[Slice]] | None:
    if rank in TRAIN_RANKS:
        tp = TRAIN_RANKS.index(rank)
        return "train", tp, megatron_qkv(attn, TRAIN_TP)[tp]
    if rank in ENGINE_RANKS:
        tp = ENGINE_RANKS.index(rank) % ENGINE_TP
        return "engine", tp, vllm_qkv(attn, ENGINE_TP)[tp]
    return None


def _local(attn: Attention, role: str, tp: int) -> torch.Tensor:
    return megatron_local(attn, tp) if role == "train" else vllm_local(attn, tp)


def refit_job(attn: Attention, req: dict[str, Any], plan_json: dict[str, Any]) -> bool:
    """One rank: its fused weight split into block views, the plan run, the result checked."""
    rank = dist.get_rank()
    to_engines = req["tensors"][0]["src"]["mesh"] == "train"
    role = _role(rank, attn)
    if role is None:  # a rank of the world in neither mesh: set-up only
        with Executor(Plan.from_json(plan_json), parse_request(req)) as executor:
            executor.run({})
        return True
    name, tp, slices = role
    sending = (name == "train") == to_engines
    weight = _local(attn, name, tp) if sending else torch.zeros_like(_local(attn, name, tp))
    views = list(weight.split(block_sizes(slices)))
    with Executor(Plan.from_json(plan_json), parse_request(req)) as executor:
        if sending:
            executor.run({"qkv": views})
            return True
        received = executor.run({}, out={"qkv": views})
    assert received["qkv"] is views  # the engine's own weight, written in place
    return bool(torch.equal(weight.view(torch.int16), _local(attn, name, tp).view(torch.int16)))


def refit(
    attn: Attention, algorithm: str = "auto", world: LocalWorld | None = None
) -> list[dict[str, Any]]:
    """Both directions planned and run on a local world; per direction the plan's figures and
    whether every rank holds exactly what torch says it should."""
    rows = []
    own = world is None
    world = world or LocalWorld(len(TRAIN_RANKS) + len(ENGINE_RANKS))
    try:
        for to_engines in (True, False):
            req = request(attn, to_engines, algorithm)
            problem = build_problem(parse_request(req))
            plan = make_plan(problem, algorithm, SolveOptions(time_limit_s=2.0))
            exact = world.run(refit_job, attn, req, plan.to_json())
            rows.append(
                {
                    "direction": "megatron tp4 -> vllm tp2 x2"
                    if to_engines
                    else "vllm tp2 x2 -> megatron tp4",
                    "algorithm": plan.algorithm,
                    "transfers": len(plan.transfers),
                    "makespan_s": plan.makespan_s,
                    "lower_bound_s": plan.lower_bound_s,
                    "ratio": plan.makespan_s / plan.lower_bound_s,
                    "verified": all(exact),
                }
            )
    finally:
        if own:
            world.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--kv-heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--algorithm", default="auto")
    parser.add_argument("--write-requests", type=Path, metavar="DIR")
    args = parser.parse_args(argv)
    attn = Attention(args.heads, args.kv_heads, args.head_dim, args.hidden)
    if args.write_requests:
        args.write_requests.mkdir(parents=True, exist_ok=True)
        for to_engines, stem in ((True, "megatron-to-vllm"), (False, "vllm-to-megatron")):
            path = args.write_requests / f"fused-qkv-{stem}.json"
            path.write_text(json.dumps(request(attn, to_engines, args.algorithm)))
            print(path)
        return 0
    rows = refit(attn, args.algorithm)
    for row in rows:
        print(
            f"{row['direction']:28s} {row['algorithm']:8s} {row['transfers']:4d} transfers  "
            f"makespan {row['makespan_s'] * 1e3:8.3f} ms  "
            f"bound {row['lower_bound_s'] * 1e3:8.3f} ms  "
            f"ratio {row['ratio']:.4f}  {'verified' if row['verified'] else 'MISMATCH'}"
        )
    return 0 if all(r["verified"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
