"""The port-v1 cost of one transfer: its duration and the ports it holds (DESIGN §3)."""

from __future__ import annotations

from collections.abc import Sequence

from planner.topology import Topology


def transfer_cost(
    topo: Topology, num_bytes: int, src: int, dst: Sequence[int]
) -> tuple[float, tuple[int, ...]]:
    """Duration in seconds and the ports held for that long by `src -> dst` of `num_bytes`.

    Hosts of `dst` other than the sender's form a pipelined chain in order of first appearance;
    the first device of `dst` on each chain host is its entry (and picks the rail). Inside every
    host the remaining devices of `dst` follow in `dst` order, one NVLink hop each.
    """
    src_host = topo.host_of[src]
    chain: list[int] = []
    entry: dict[int, int] = {}
    per_host: dict[int, list[int]] = {}
    for d in dst:
        h = topo.host_of[d]
        per_host.setdefault(h, []).append(d)
        if h != src_host and h not in entry:
            entry[h] = d
            chain.append(h)
    ports: set[int] = set()
    inter_s = intra_s = 0.0
    if chain:
        inter_s = num_bytes / topo.nic_bytes_per_s + topo.latency_s * len(chain)
        ports.add(topo.send_port(src_host, topo.rail_of[src]))
        last = len(chain) - 1
        for i, h in enumerate(chain):
            rail = topo.rail_of[entry[h]]
            ports.add(topo.recv_port(h, rail))
            if i < last:
                ports.add(topo.send_port(h, rail))
    most_hops = 0
    for h, devices in per_host.items():
        prev = src if h == src_host else entry[h]
        hops = 0
        for d in devices:
            if d == prev:
                continue
            ports.add(topo.link_out_port(prev))
            ports.add(topo.link_in_port(d))
            prev = d
            hops += 1
        most_hops = max(most_hops, hops)
    if most_hops:
        intra_s = num_bytes / topo.intra_bytes_per_s + topo.latency_s * most_hops
    return max(inter_s, intra_s), tuple(sorted(ports))
