"""Plans of many identical parts, kept as one part and its copies.

A pipeline boundary of thousands of hosts moves the same pattern between every host pair:
the same transfers with other device numbers and other boxes. The solvers plan one such
component (`solver.components`) and describe the others as copies of it: a device relabelling
and, for every region of data the component moves (a piece of one of its items), where the
copy's corresponding region is. Copies share no port with each other or with their template,
and every copied transfer carries the same bytes over the same kinds of links, so each takes
the template's times; whatever makes the template valid makes each copy valid.

A plan keeps its copies in that form (`planner.compact.CompactTransfers`): the transfers it
spells out, then every copy's, in its template's order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from meshcast.planner.boxes import contains
from meshcast.planner.plan import Piece, Transfer
from meshcast.planner.topology import Topology


@dataclass(frozen=True)
class Copy:
    """One copy of a template: where each template device and each source region went."""

    #: template device -> this copy's device
    device: Mapping[int, int]
    #: per source region of the template (`Replicas.sources`), this copy's region, same shape
    targets: tuple[Piece, ...]

    def piece(self, sources: Sequence[Piece], region: int, piece: Piece) -> Piece:
        """`piece` (inside source region `region`) at the same place in this copy's region."""
        source, target = sources[region], self.targets[region]
        box = tuple(
            (lo - s_lo + t_lo, hi - s_lo + t_lo)
            for (lo, hi), (s_lo, _), (t_lo, _) in zip(
                piece.box, source.box, target.box, strict=True
            )
        )
        return Piece(target.tensor, box)


@dataclass(frozen=True)
class Replicas:
    """Copies of some transfers (`template`, indices into the transfers they copy)."""

    template: tuple[int, ...]
    #: the regions of data the template moves: every piece it carries lies inside one of them
    sources: tuple[Piece, ...]
    copies: tuple[Copy, ...]

    def regions(self, transfers: Sequence[Transfer]) -> list[tuple[int, ...]]:
        """Per template transfer, per piece, the source region it lies inside."""
        return [
            tuple(_region_of(self.sources, piece) for piece in transfers[k].pieces)
            for k in self.template
        ]

    def num_transfers(self) -> int:
        return len(self.template) * len(self.copies)

    def remapped(self, index: Mapping[int, int]) -> Replicas:
        """The same replicas with template indices mapped through `index` (e.g. from move
        numbers to positions in the execution order), kept in increasing order."""
        return Replicas(tuple(sorted(index[k] for k in self.template)), self.sources, self.copies)

    @cached_property
    def devices(self) -> tuple[list[int], np.ndarray]:
        """The template's devices, and per copy (rows) the copy's device for each (columns)."""
        template = list(self.copies[0].device)
        return template, np.array([[c.device[d] for d in template] for c in self.copies], np.int64)

    def ports(self, topology: Topology) -> tuple[np.ndarray, np.ndarray]:
        """The template's ports (its devices' links and its hosts' rails), and per copy
        (rows) the copy's port for each (columns)."""
        topo = topology
        template, devices = self.devices
        index = np.vectorize(topo.device_index.__getitem__, otypes=[np.int64])(devices)
        hosts = np.vectorize(topo.host_of.__getitem__, otypes=[np.int64])(devices)
        nic = topo.num_nic_ports
        columns: dict[int, np.ndarray] = {}
        for j, d in enumerate(template):
            columns[topo.link_out_port(d)] = 2 * nic + 2 * index[:, j]
            columns[topo.link_in_port(d)] = 2 * nic + 2 * index[:, j] + 1
            h = topo.host_of[d]
            for rail in range(topo.num_rails):
                send = hosts[:, j] * topo.num_rails + rail
                columns[topo.send_port(h, rail)] = send
                columns[topo.recv_port(h, rail)] = send if topo.half_duplex else nic + send
        return np.array(list(columns), np.int64), np.stack(list(columns.values()), axis=1)


def _region_of(sources: Sequence[Piece], piece: Piece) -> int:
    for r, source in enumerate(sources):
        if source.tensor == piece.tensor and contains(source.box, piece.box):
            return r
    raise ValueError(f"piece {piece} lies in none of the template's regions")


def num_copied(replicas: Sequence[Replicas]) -> int:
    """Transfers the copies add to a plan."""
    return sum(r.num_transfers() for r in replicas)


def copied_devices(replicas: Sequence[Replicas]) -> frozenset[int]:
    """Every device some copy relabels a template device to."""
    return frozenset(d for rep in replicas for c in rep.copies for d in c.device.values())


def with_copies(
    topology: Topology,
    replicas: Sequence[Replicas],
    wire_bytes: int,
    transfer_wire_bytes: Sequence[int],
    port_busy_s: Sequence[float],
) -> tuple[int, list[float]]:
    """Bytes on the wire and seconds each port is held over the whole plan, from those of its
    own transfers (per transfer and per port): each copy adds its template's, on its ports."""
    own = np.asarray(port_busy_s, dtype=np.float64)
    busy = own.copy()
    for rep in replicas:
        wire_bytes += sum(transfer_wire_bytes[k] for k in rep.template) * len(rep.copies)
        template, copied = rep.ports(topology)
        np.add.at(busy, copied.ravel(), np.broadcast_to(own[template], copied.shape).ravel())
    return wire_bytes, busy.tolist()
