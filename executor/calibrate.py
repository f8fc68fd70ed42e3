"""Measure a torch.distributed world's links and give the request's cluster figures.

`calibrate()` is a collective over the default world (any backend, any number of hosts). Hosts
are told apart by `MESHCAST_HOST_ID` when set (the testbed sets it), else by hostname. It times,
between rank 0 and a rank on another host, a one-way latency (half the median round trip of a
one-byte message) and a p2p bandwidth; between rank 0 and a rank on its own host, the intra-host
bandwidth; and a chained broadcast through one rank per host. Bandwidths are bytes over time
minus the latencies on the way, median of the repeats, timed on rank 0 from the send to a
one-byte answer (no barrier inside the timing).
"""

from __future__ import annotations

import os
import socket
import statistics
import time
from typing import Any

import torch
import torch.distributed as dist

from meshcast.executor import transport
from meshcast.executor.executor import default_device


def host_id() -> str:
    """What tells this rank's host apart from the others."""
    return os.environ.get("MESHCAST_HOST_ID") or socket.gethostname()


def world_hosts() -> list[list[int]]:
    """The world's ranks grouped by host, hosts in order of their first rank (a collective)."""
    names: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(names, host_id())
    hosts: dict[str, list[int]] = {}
    for rank, name in enumerate(names):
        hosts.setdefault(str(name), []).append(rank)
    return list(hosts.values())


def _timed_on_rank0(action: Any, repeats: int) -> float:
    """Median seconds of `action` as rank 0 sees it (a barrier before each, none inside)."""
    samples = []
    for _ in range(repeats):
        dist.barrier()
        started = time.perf_counter()
        action()
        samples.append(time.perf_counter() - started)
    everyone: list[Any] = [statistics.median(samples)]
    dist.broadcast_object_list(everyone, src=0)
    return float(everyone[0])


def _send_and_ack(src: int, dst: int, data: torch.Tensor, ack: torch.Tensor) -> None:
    """`data` from src to dst and a one-byte answer back: src's clock covers the delivery."""
    rank = dist.get_rank()
    if rank == src:
        dist.send(data, dst)
        dist.recv(ack, dst)
    elif rank == dst:
        dist.recv(data, src)
        dist.send(ack, src)


def calibrate(
    num_bytes: int = 32 << 20, repeats: int = 3, chunk_bytes: int = transport.CHUNK_BYTES
) -> dict[str, Any]:
    """Every rank gets the same figures: `nic_gbps`, `intra_gbps`, `latency_us` (None where the
    world has no such pair), plus `chain_gbps` and the hosts found."""
    device = default_device()
    hosts = world_hosts()
    home = hosts[0]  # rank 0's
    remote = hosts[1][0] if len(hosts) > 1 else None
    neighbour = home[1] if len(home) > 1 else None
    tiny = torch.zeros(1, dtype=torch.uint8, device=device)
    big = torch.zeros(num_bytes, dtype=torch.uint8, device=device)
    result: dict[str, Any] = {"hosts": hosts, "bytes": num_bytes}

    def gbps(seconds: float, latency_s: float) -> float:
        return num_bytes * 8 / max(seconds - latency_s, 1e-9) / 1e9

    latency_s = 0.0
    if remote is not None:
        latency_s = _timed_on_rank0(lambda: _send_and_ack(0, remote, tiny, tiny), 20) / 2
        result["latency_us"] = latency_s * 1e6
        round_trip = _timed_on_rank0(lambda: _send_and_ack(0, remote, big, tiny), repeats)
        result["nic_gbps"] = gbps(round_trip, 2 * latency_s)
        entries = [ranks[0] for ranks in hosts]
        rank = dist.get_rank()
        if rank in entries:
            position = entries.index(rank)
            parent = entries[position - 1] if position else None
            children = entries[position + 1 : position + 2]
        group = dist.group.WORLD
        assert group is not None
        chunk = min(chunk_bytes, num_bytes)
        pool = transport.StagingPool(transport.MIN_SLOTS, chunk, device)
        lengths = [min(chunk, num_bytes - k) for k in range(0, num_bytes, chunk)]

        last = entries[-1]

        def chained() -> None:  # then the last host answers rank 0
            if rank in entries:
                transport.chain(transport.Chunks(pool, lengths), parent, children, group)
            _send_and_ack(last, 0, tiny, tiny)

        hops = len(entries) - 1
        result["chain_gbps"] = gbps(_timed_on_rank0(chained, repeats), latency_s * (hops + 2))
    else:
        result.update(latency_us=None, nic_gbps=None, chain_gbps=None)
    if neighbour is not None:
        round_trip = _timed_on_rank0(lambda: _send_and_ack(0, neighbour, big, tiny), repeats)
        result["intra_gbps"] = gbps(round_trip, 0.0)
    else:
        result["intra_gbps"] = None
    return result
