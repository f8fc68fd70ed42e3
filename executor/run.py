"""Run a `meshcast.plan/v1` inside a torch.distributed job (DESIGN §5).

Every rank calls `execute` with the same plan and request and its local source shards, and
gets its local destination shards back, bit-exact with slicing the global tensors. Ranks are
device ids. Transfers run in plan order; each is a tree of blocking p2p sends along the route
port-v1 prices: a chain over the entry device of each receiving host, and inside every host a
chain from its entry (or from the sender) through that host's other receivers. Buffers go
chunk by chunk, so a long chain is pipelined. The same code runs on gloo (CPU tensors) and NCCL
(CUDA tensors); timeouts are the process group's (`init_process_group(timeout=...)`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence

import torch
import torch.distributed as dist

from executor.holdings import Holdings
from executor.packing import TORCH_DTYPES, pack, unpack
from planner.plan import Plan, Transfer
from planner.problem import Problem, build_problem
from planner.request import Request

#: bytes forwarded per step of a chain
CHUNK_BYTES = 4 << 20


class PlanMismatchError(RuntimeError):
    """Ranks were given different plans (executing would hang or corrupt data)."""


def plan_fingerprint(plan: Plan) -> int:
    """63-bit digest of the transfers (what every rank must agree on)."""
    body = [
        [t.src, list(t.dst), [[p.tensor, [list(iv) for iv in p.box]] for p in t.pieces]]
        for t in plan.transfers
    ]
    digest = hashlib.sha256(json.dumps(body, separators=(",", ":")).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def _check_fingerprints(plan: Plan, device: torch.device) -> None:
    mine = torch.tensor([plan_fingerprint(plan)], dtype=torch.int64, device=device)
    everyone = [torch.zeros_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(everyone, mine)
    values = [int(t.item()) for t in everyone]
    differing = [r for r, v in enumerate(values) if v != values[0]]
    if differing:
        raise PlanMismatchError(
            f"ranks hold different plans: rank 0 has fingerprint {values[0]:#x}, "
            f"ranks {differing} differ (rank {dist.get_rank()} has {int(mine.item()):#x})"
        )


def forwarding(problem: Problem, transfer: Transfer) -> dict[int, tuple[int | None, list[int]]]:
    """Per participant: who it receives from (None for the sender) and whom it sends to."""
    topo = problem.topology
    src_host = topo.host_of[transfer.src]
    per_host: dict[int, list[int]] = {}
    for d in transfer.dst:
        per_host.setdefault(topo.host_of[d], []).append(d)
    entries = [ds[0] for h, ds in per_host.items() if h != src_host]
    links: dict[int, tuple[int | None, list[int]]] = {transfer.src: (None, [])}
    previous = transfer.src
    for entry in entries:  # the inter-host chain
        links[previous][1].append(entry)
        links[entry] = (previous, [])
        previous = entry
    for h, devices in per_host.items():  # the intra-host chains
        previous = transfer.src if h == src_host else devices[0]
        for d in devices if h == src_host else devices[1:]:
            links[previous][1].append(d)
            links[d] = (previous, [])
            previous = d
    return links


def _relay(buffer: torch.Tensor, parent: int | None, children: Sequence[int]) -> None:
    """Receive `buffer` chunk by chunk from `parent` (unless sender) and pass each on."""
    for start in range(0, max(1, buffer.numel()), CHUNK_BYTES):
        chunk = buffer[start : start + CHUNK_BYTES]
        if parent is not None:
            dist.recv(chunk, src=parent)
        for child in children:
            dist.send(chunk, dst=child)


def execute(
    plan: Plan,
    request: Request,
    source_shards: Mapping[str, torch.Tensor],
    device: torch.device | None = None,
) -> dict[str, torch.Tensor]:
    """Run `plan` on this rank; return this rank's destination shard of every tensor whose
    destination mesh contains it (keyed by tensor name)."""
    rank = dist.get_rank()
    problem = build_problem(request)
    if device is None:
        backend = dist.get_backend()
        device = (
            torch.device("cuda", torch.cuda.current_device())
            if backend == "nccl"
            else torch.device("cpu")
        )
    _check_fingerprints(plan, device)
    holdings = [Holdings() for _ in request.tensors]
    for i, spec in enumerate(request.tensors):
        box = problem.src_boxes(i).get(rank)
        if box is None:
            continue
        if spec.name not in source_shards:
            raise ValueError(f"rank {rank} holds a shard of {spec.name!r} but none was given")
        shard = source_shards[spec.name]
        expected = tuple(hi - lo for lo, hi in box)
        if tuple(shard.shape) != expected or shard.dtype != TORCH_DTYPES[spec.dtype]:
            raise ValueError(
                f"rank {rank}: source shard of {spec.name!r} is {tuple(shard.shape)} "
                f"{shard.dtype}, the layout says {expected} {TORCH_DTYPES[spec.dtype]}"
            )
        holdings[i].add(box, shard.to(device))
    for transfer in plan.transfers:
        if rank != transfer.src and rank not in transfer.dst:
            continue
        parent, children = forwarding(problem, transfer)[rank]
        layout = [(p.box, TORCH_DTYPES[request.tensors[p.tensor].dtype]) for p in transfer.pieces]
        if parent is None:
            buffer = pack([holdings[p.tensor].extract(p.box) for p in transfer.pieces]).to(device)
        else:
            size = sum(problem.piece_bytes(p) for p in transfer.pieces)
            buffer = torch.empty(size, dtype=torch.uint8, device=device)
        _relay(buffer, parent, children)
        if parent is not None:
            for piece, data in zip(transfer.pieces, unpack(buffer, layout), strict=True):
                holdings[piece.tensor].add(piece.box, data)
    result = {}
    for i, spec in enumerate(request.tensors):
        box = problem.dst_boxes(i).get(rank)
        if box is not None:
            result[spec.name] = holdings[i].extract(box).clone()
    return result
