"""The port-v1 cost of one transfer: its duration and the ports it holds (DESIGN §3)."""

from __future__ import annotations

from collections.abc import Sequence

from meshcast.planner.route import Route, transfer_route
from meshcast.planner.topology import Topology


def transfer_cost(
    topo: Topology, num_bytes: int, src: int, dst: Sequence[int]
) -> tuple[float, tuple[int, ...]]:
    """Duration in seconds and the ports held for that long by `src -> dst` of `num_bytes`,
    along the route `planner.route.transfer_route` defines."""
    key = (src, tuple(dst))
    shape = topo.route_shapes.get(key)
    if shape is None:
        shape = topo.route_shapes[key] = _route_shape(topo, src, dst)
    ports, num_chain_hosts, most_intra_hops = shape
    inter_s = intra_s = 0.0
    if num_chain_hosts:
        inter_s = num_bytes / topo.nic_bytes_per_s + topo.latency_s * num_chain_hosts
    if most_intra_hops:
        intra_s = num_bytes / topo.intra_bytes_per_s + topo.latency_s * most_intra_hops
    return max(inter_s, intra_s), ports


def _route_shape(topo: Topology, src: int, dst: Sequence[int]) -> tuple[tuple[int, ...], int, int]:
    """The ports a transfer's route holds, its number of receiving hosts and its longest chain
    inside a host: all of its cost that does not depend on the bytes."""
    if len(dst) == 1:  # one receiver (most transfers): one NIC hop or one NVLink hop
        (d,) = dst
        src_host, dst_host = topo.host_of[src], topo.host_of[d]
        if src_host == dst_host:
            hop = (topo.link_out_port(src), topo.link_in_port(d))
            return tuple(sorted(hop)), 0, 1
        nic = (
            topo.send_port(src_host, topo.rail_of[src]),
            topo.recv_port(dst_host, topo.rail_of[d]),
        )
        return tuple(sorted(nic)), 1, 0
    route = transfer_route(topo, src, dst)
    return route_ports(topo, route), len(route.chain_hosts), route.most_intra_hops


def route_ports(topo: Topology, route: Route) -> tuple[int, ...]:
    """The ports `route` holds (DESIGN §3), sorted."""
    src = route.src
    ports: set[int] = set()
    if route.chain_hosts:
        ports.add(topo.send_port(topo.host_of[src], topo.rail_of[src]))
        last = len(route.chain_hosts) - 1
        for i, (h, entry) in enumerate(zip(route.chain_hosts, route.entries, strict=True)):
            rail = topo.rail_of[entry]
            ports.add(topo.recv_port(h, rail))
            if i < last:
                ports.add(topo.send_port(h, rail))
    for a, b in route.intra_hops:
        ports.add(topo.link_out_port(a))
        ports.add(topo.link_in_port(b))
    return tuple(sorted(ports))
