"""The route of a transfer: one definition for the cost model and the executor's forwarding."""

from __future__ import annotations

import itertools

import pytest

from meshcast.planner import build_problem, parse_request
from meshcast.planner.cost import route_ports, transfer_cost
from meshcast.planner.route import transfer_route

REQUEST = {
    "tensors": [
        {
            "name": "x",
            "shape": [8, 8],
            "dtype": "float32",
            "src": {"mesh": "a", "placements": ["R"]},
            "dst": {"mesh": "b", "placements": ["R"]},
        }
    ],
    "meshes": {
        "a": {"shape": [2], "devices": [0, 1]},
        "b": {"shape": [6], "devices": [2, 3, 4, 5, 6, 7]},
    },
    "cluster": {
        "hosts": [[0, 1, 2], [3, 4], [5, 6, 7]],
        "nic_gbps": 10,
        "nics_per_host": 2,
        "intra_gbps": 100,
        "latency_us": 1,
    },
}


def test_links_follow_the_port_v1_route() -> None:
    topo = build_problem(parse_request(REQUEST)).topology
    # dst order: host 2 first, then host 1, and device 2 shares the sender's host
    route = transfer_route(topo, 0, (6, 5, 2, 3, 7, 4))
    assert route.chain_hosts == (2, 1) and route.entries == (6, 3)
    links = route.links()
    assert links[0] == (None, [6, 2])  # host 2's entry, and the hop inside the sender's host
    assert links[6] == (0, [3, 5])  # the next host's entry, and its own host's chain
    assert links[5] == (6, [7])  # the chain inside host 2 in dst order
    assert links[3] == (6, [4])
    assert links[2] == (0, []) and links[7] == (5, []) and links[4] == (3, [])
    assert route.most_intra_hops == 2


def test_every_receiver_has_exactly_one_parent_on_a_tree() -> None:
    topo = build_problem(parse_request(REQUEST)).topology
    links = transfer_route(topo, 1, (3, 4, 2, 5, 6, 7)).links()
    children = [c for _, kids in links.values() for c in kids]
    assert sorted(children) == [2, 3, 4, 5, 6, 7]
    for device, (parent, _) in links.items():
        if parent is not None:
            assert device in links[parent][1]


def test_the_cost_model_prices_the_ports_of_the_route() -> None:
    topo = build_problem(parse_request(REQUEST)).topology
    route = transfer_route(topo, 0, (6, 5, 2, 3, 7, 4))
    _, ports = transfer_cost(topo, 1000, 0, (6, 5, 2, 3, 7, 4))
    expected = {topo.send_port(0, topo.rail_of[0])}
    expected |= {
        topo.recv_port(h, topo.rail_of[e])
        for h, e in zip(route.chain_hosts, route.entries, strict=True)
    }
    expected |= {topo.send_port(2, topo.rail_of[6])}  # the first chain host forwards
    expected |= {topo.link_out_port(a) for a, _ in route.intra_hops}
    expected |= {topo.link_in_port(b) for _, b in route.intra_hops}
    assert set(ports) == expected


def test_a_transfer_inside_the_senders_host_has_no_inter_host_hops() -> None:
    topo = build_problem(parse_request(REQUEST)).topology
    route = transfer_route(topo, 0, (2,))
    assert route.inter_hops == () and route.links() == {0: (None, [2]), 2: (0, [])}


@pytest.mark.parametrize("duplex", ["full", "half"])
def test_one_receiver_costs_what_its_route_says(duplex: str) -> None:
    """Transfers to one device (most of every plan) are priced without building the route:
    the same ports and duration as the route gives, for every sender and receiver."""
    request = {**REQUEST, "cluster": {**REQUEST["cluster"], "duplex": duplex}}
    topo = build_problem(parse_request(request)).topology
    for src, dst in itertools.permutations(range(8), 2):
        duration, ports = transfer_cost(topo, 1 << 20, src, [dst])
        assert ports == route_ports(topo, transfer_route(topo, src, [dst]))
        remote = topo.host_of[src] != topo.host_of[dst]
        speed = topo.nic_bytes_per_s if remote else topo.intra_bytes_per_s
        assert duration == (1 << 20) / speed + topo.latency_s
