"""Plans of many identical parts, kept as one part and its copies.

A pipeline boundary of thousands of hosts moves the same pattern between every host pair:
the same transfers with other device numbers and other boxes. The solvers plan one such
component (`solver.components`) and describe the others as copies of it: a device relabelling
and, for every region of data the component moves (a piece of one of its items), where the
copy's corresponding region is. Copies share no port with each other or with their template,
and every copied transfer carries the same bytes over the same kinds of links, so each takes
the template's times; whatever makes the template valid makes each copy valid.

`CopiedTransfers` is a plan's transfer list in that form: the transfers the plan spells out
(`own`), then every copy's, in its template's order. It is a read-only sequence of
`Transfer`s (built on first access) and writes its JSON text straight from the template's
numbers and the copies' offsets, without building the transfers.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import overload

import numpy as np

from meshcast.planner.boxes import contains
from meshcast.planner.plan import Piece, Transfer, transfer_text, transfer_text_format
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


#: copies whose numbers are turned into Python integers at a time when writing
_ROWS_AT_ONCE = 64


class CopiedTransfers(Sequence[Transfer]):
    """`own` transfers, then the transfers of every copy of every `Replicas` (each copy's in
    its template's order): a plan's execution order."""

    def __init__(self, own: Sequence[Transfer], replicas: Sequence[Replicas]) -> None:
        self.own = tuple(own)
        self.replicas = tuple(replicas)
        self._len = len(self.own) + num_copied(self.replicas)

    def __len__(self) -> int:
        return self._len

    @overload
    def __getitem__(self, index: int) -> Transfer: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Transfer]: ...

    def __getitem__(self, index: int | slice) -> Transfer | Sequence[Transfer]:
        return self.all[index]

    def __iter__(self) -> Iterator[Transfer]:
        return iter(self.all)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    def __hash__(self) -> int:
        return hash(self.all)

    def __repr__(self) -> str:
        return f"CopiedTransfers({len(self.own)} own, {len(self) - len(self.own)} copied)"

    @cached_property
    def all(self) -> tuple[Transfer, ...]:
        """Every transfer, built."""
        out = list(self.own)
        for rep in self.replicas:
            template = [self.own[k] for k in rep.template]
            regions = rep.regions(self.own)
            for copy in rep.copies:
                dev = copy.device
                out.extend(
                    Transfer(
                        dev[t.src],
                        tuple(dev[d] for d in t.dst),
                        tuple(
                            copy.piece(rep.sources, r, p)
                            for p, r in zip(t.pieces, per, strict=True)
                        ),
                        t.start_s,
                        t.end_s,
                    )
                    for t, per in zip(template, regions, strict=True)
                )
        return tuple(out)

    def json_texts(self) -> Iterator[str]:
        """Every transfer as compact JSON text (`id` its position), without building them:
        the numbers the copies change (ids, devices, tensors, box bounds) are computed for
        all copies at once and formatted into the template's text, a copy at a time (each
        text then holds that copy's transfers, comma-separated)."""
        for i, t in enumerate(self.own):
            yield transfer_text(i, t)
        first_id = len(self.own)
        for rep in self.replicas:
            if not rep.copies:
                continue
            where = _CopyArrays(rep)
            columns: list[np.ndarray] = []
            texts: list[str] = []
            for j, (k, regions) in enumerate(zip(rep.template, rep.regions(self.own), strict=True)):
                numbers = where.columns(self.own[k], first_id + j, len(rep.template), regions)
                # a number the same in every copy is written into the text once
                same = [bool((c == c[0]).all()) for c in numbers]
                fixed = tuple(str(c[0]) if s else "%d" for c, s in zip(numbers, same, strict=True))
                texts.append(transfer_text_format(self.own[k]) % fixed)
                columns += [c for c, s in zip(numbers, same, strict=True) if not s]
            text = ",".join(texts)
            values = np.stack(columns, axis=1) if columns else np.zeros((len(rep.copies), 0))
            for start in range(0, len(values), _ROWS_AT_ONCE):  # Python ints for a few only
                for row in values[start : start + _ROWS_AT_ONCE].tolist():
                    yield text % tuple(row)
            first_id += rep.num_transfers()


class _CopyArrays:
    """Every copy's devices and target regions as arrays (copies along the first axis)."""

    def __init__(self, rep: Replicas) -> None:
        copies = rep.copies
        self.rep = rep
        self.n = len(copies)
        template, self.devices = rep.devices
        self.column = {d: j for j, d in enumerate(template)}
        self.tensors = np.array([[p.tensor for p in c.targets] for c in copies], dtype=np.int64)
        self.lows = [
            np.array([[lo for lo, _ in c.targets[r].box] for c in copies], dtype=np.int64)
            for r in range(len(rep.sources))
        ]

    def columns(
        self, t: Transfer, first_id: int, step: int, regions: Sequence[int]
    ) -> list[np.ndarray]:
        """The integers of template transfer `t`'s text in every copy (`transfer_text_format`
        order), the first copy's id `first_id`, each next copy's `step` further."""
        columns = [first_id + step * np.arange(self.n, dtype=np.int64)]
        columns += [self.devices[:, self.column[d]] for d in (t.src, *t.dst)]
        for piece, r in zip(t.pieces, regions, strict=True):
            source, lows = self.rep.sources[r], self.lows[r]
            columns.append(self.tensors[:, r])
            for dim, ((lo, hi), (s_lo, _)) in enumerate(zip(piece.box, source.box, strict=True)):
                columns.append(lows[:, dim] + (lo - s_lo))
                columns.append(lows[:, dim] + (hi - s_lo))
        return columns


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
