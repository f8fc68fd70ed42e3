"""The route of one transfer: how its bytes travel from the sender to every receiver (DESIGN §3).

Defined once, here, for both sides of the contract: the cost model prices the ports a route
holds (`planner.cost`), and the executor forwards data along the same links.

Hosts of `dst` other than the sender's form a pipelined chain in order of first appearance; the
first device of `dst` on each of those hosts is its entry (it picks the receive rail). Inside
every host the data then hops from the sender (on the sender's host) or from the entry through
that host's other devices of `dst`, in `dst` order, one NVLink hop each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from meshcast.planner.topology import Topology


@dataclass(frozen=True)
class Route:
    """The links one transfer's data takes, as `(from, to)` device pairs."""

    src: int
    #: receiving hosts other than the sender's, in chain order
    chain_hosts: tuple[int, ...]
    #: the entry device of each chain host (same order)
    entries: tuple[int, ...]
    #: links inside hosts, chain by chain
    intra_hops: tuple[tuple[int, int], ...]
    #: the longest chain of hops inside one host
    most_intra_hops: int

    @property
    def inter_hops(self) -> tuple[tuple[int, int], ...]:
        """Links between hosts: sender to the first entry, then entry to entry."""
        return tuple(zip((self.src, *self.entries), self.entries, strict=False))

    def links(self) -> dict[int, tuple[int | None, list[int]]]:
        """Per participant: the device it receives from (None for the sender) and the devices
        it forwards to, inter-host hops first."""
        out: dict[int, tuple[int | None, list[int]]] = {self.src: (None, [])}
        for a, b in (*self.inter_hops, *self.intra_hops):
            out[a][1].append(b)
            out[b] = (a, [])
        return out


def transfer_route(topo: Topology, src: int, dst: Sequence[int]) -> Route:
    """The route of a transfer from `src` to the devices `dst`, in `dst` order."""
    host_of = topo.host_of
    src_host = host_of[src]
    per_host: dict[int, list[int]] = {}
    for d in dst:
        per_host.setdefault(host_of[d], []).append(d)
    chain_hosts = tuple(h for h in per_host if h != src_host)
    hops: list[tuple[int, int]] = []
    most = 0
    for h, devices in per_host.items():
        previous = src if h == src_host else devices[0]
        chain = devices if h == src_host else devices[1:]
        for d in chain:
            hops.append((previous, d))
            previous = d
        most = max(most, len(chain))
    return Route(
        src=src,
        chain_hosts=chain_hosts,
        entries=tuple(per_host[h][0] for h in chain_hosts),
        intra_hops=tuple(hops),
        most_intra_hops=most,
    )
