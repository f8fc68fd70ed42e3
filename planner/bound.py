"""The port-v1 lower bound (DESIGN §3): no valid plan can finish sooner.

max of
  (a) receive: per host, bytes it needs and holds on none of its devices, over the rails its
      destination-mesh devices sit on (only those can be a transfer's entry on that host);
  (b) send: bytes that must leave some holder host, spread as evenly as a fractional assignment
      can over the send rails they may leave by (the holder's own rail, or on a host with
      destination-mesh devices also theirs, after an intra-host relay);
  (c) device: bytes a device needs and lacks, over its NVLink input plus one NIC rail;
plus one latency.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from meshcast.planner.maxflow import FlowNetwork
from meshcast.planner.tiles import Tiles
from meshcast.planner.topology import Topology


def lower_bound_s(topo: Topology, tiles: Tiles, dst_devices: frozenset[int]) -> float:
    """Seconds no valid plan can beat (0 when nothing has to move)."""
    if len(tiles) == 0:
        return 0.0
    dst_rails: dict[int, set[int]] = defaultdict(set)
    for d in dst_devices:
        dst_rails[topo.host_of[d]].add(topo.rail_of[d])
    pairs, inverse = np.unique(
        np.stack([tiles.holders, tiles.needers]), axis=1, return_inverse=True
    )
    pair_bytes = np.bincount(inverse.ravel(), weights=tiles.num_bytes, minlength=pairs.shape[1])
    recv_bytes: dict[int, float] = defaultdict(float)
    device_bytes: dict[int, float] = defaultdict(float)
    group_bytes: dict[frozenset[tuple[int, int]], float] = defaultdict(float)
    for (holder_set, needer_set), num_bytes in zip(pairs.T, pair_bytes, strict=True):
        holders = tiles.device_sets[int(holder_set)]
        needers = tiles.device_sets[int(needer_set)]
        holder_hosts = {topo.host_of[d] for d in holders}
        missing = {topo.host_of[d] for d in needers} - holder_hosts
        for h in missing:
            recv_bytes[h] += num_bytes
        if missing:
            ports = frozenset(
                (topo.host_of[d], r)
                for d in holders
                for r in {topo.rail_of[d]} | dst_rails.get(topo.host_of[d], set())
            )
            group_bytes[ports] += num_bytes
        for d in needers:
            device_bytes[d] += num_bytes
    nic, intra = topo.nic_bytes_per_s, topo.intra_bytes_per_s
    candidates = [b / (len(dst_rails[h]) * nic) for h, b in recv_bytes.items()]
    candidates += [b / (intra + nic) for b in device_bytes.values()]
    candidates.append(send_bound_bytes(group_bytes) / nic)
    bound = max(candidates)
    return float(bound + topo.latency_s) if bound > 0 else 0.0


def send_bound_bytes(group_bytes: dict[frozenset[tuple[int, int]], float]) -> float:
    """Least possible busiest-port byte count when each group's bytes may be split freely over
    its ports: max over group sets S of bytes(S) / |ports(S)|, found by Dinkelbach iterations
    on a max-flow feasibility test (exact, a handful of flows)."""
    if not group_bytes:
        return 0.0
    groups = list(group_bytes.items())
    ports = sorted({p for g, _ in groups for p in g})
    port_node = {p: len(groups) + i for i, p in enumerate(ports)}
    source, sink = len(groups) + len(ports), len(groups) + len(ports) + 1
    total = sum(b for _, b in groups)
    level = max(total / len(ports), *(b / len(g) for g, b in groups))
    for _ in range(len(groups) + 2):
        net = FlowNetwork(sink + 1)
        for i, (g, b) in enumerate(groups):
            net.add_edge(source, i, b)
            for p in g:
                net.add_edge(i, port_node[p], float("inf"))
        for p in ports:
            net.add_edge(port_node[p], sink, level)
        eps = 1e-12 * total
        if net.max_flow(source, sink, eps) >= total * (1 - 1e-12):
            return level
        side = net.source_side(source, eps)
        tight = [i for i in range(len(groups)) if i in side]
        tight_ports = {p for i in tight for p in groups[i][0]}
        level = max(level, sum(groups[i][1] for i in tight) / len(tight_ports))
    return level
