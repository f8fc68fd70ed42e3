"""A plan's transfers kept compact: what was planned once, and how it repeats.

Real plans repeat themselves twice over. Identical tensors are planned as one stack
(`planner.stacking`): a piece covering rows `[a, b)` of a stack stands for the same box of
members `a..b-1`. Identical components are planned once and copied (`planner.replicas`): a
device relabelling and, per data region, where the copy's region is. `CompactTransfers` holds
both without multiplying them out: the transfers the solver spelled out (`own`, in the planned
request's terms, stacks as one tensor, timed), the copies of some of them (`replicas`), and the
stacks' members (`stacking`).

It is a read-only sequence of the request's own transfers in execution order (own first, then
each copy's in its template's order), built one at a time by `expand()` and kept only when
indexed. `json_texts()` is the plan's one transfer writer: it writes the copies' numbers from
arrays, a copy at a time, and the same characters as writing every expanded transfer. A copy's
transfers on their own (`copy_transfers`) are what one rank of that copy runs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, overload

import numpy as np

from meshcast.planner.plan import Transfer, transfer_text, transfer_text_format
from meshcast.planner.problem import Problem
from meshcast.planner.replicas import Copy, Replicas, copied_devices, num_copied
from meshcast.planner.simulate import Simulation, simulate
from meshcast.planner.stacking import Stacking

#: copies whose numbers are turned into Python integers at a time when writing, and the most
#: numbers at a time (a copy of a stacked template has thousands)
_ROWS_AT_ONCE = 64
_NUMBERS_AT_ONCE = 1 << 16


class CompactTransfers(Sequence[Transfer]):
    """`own` transfers, then every copy's of every `Replicas`, as transfers of the request's
    own tensors (`stacking` expands stacked pieces into their members'; None: nothing
    stacked)."""

    def __init__(
        self,
        own: Sequence[Transfer],
        replicas: Sequence[Replicas] = (),
        stacking: Stacking | None = None,
    ) -> None:
        self.own = tuple(own)
        self.replicas = tuple(replicas)
        self.stacking = stacking
        self._len = len(self.own) + num_copied(self.replicas)

    def __reduce__(self) -> tuple[Any, ...]:
        # pickled compact (never the built transfers): what a rank receives stays small
        return (CompactTransfers, (self.own, self.replicas, self.stacking))

    def __len__(self) -> int:
        return self._len

    @overload
    def __getitem__(self, index: int) -> Transfer: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Transfer]: ...

    def __getitem__(self, index: int | slice) -> Transfer | Sequence[Transfer]:
        return self._built[index]

    def __iter__(self) -> Iterator[Transfer]:
        return self.expand()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    def __hash__(self) -> int:
        return hash(self.digest)

    def __repr__(self) -> str:
        stacks = 0 if self.stacking is None else len(self.stacking.members)
        return (
            f"CompactTransfers({len(self.own)} own, {len(self) - len(self.own)} copied, "
            f"{stacks} stacked tensors)"
        )

    @cached_property
    def _built(self) -> tuple[Transfer, ...]:
        return tuple(self.expand())

    def expand(self) -> Iterator[Transfer]:
        """Every transfer of the request in execution order, built one at a time."""
        for t in self.own:
            yield self.expanded(t)
        for which, rep in enumerate(self.replicas):
            for c in range(len(rep.copies)):
                for _, t in self._copy(which, c):
                    yield t

    def expanded(self, t: Transfer) -> Transfer:
        """Transfer `t` of the planned request as a transfer of the request itself."""
        if self.stacking is None:
            return t
        return Transfer(t.src, t.dst, self.stacking.expand_pieces(t.pieces), t.start_s, t.end_s)

    @cached_property
    def _first_ids(self) -> tuple[int, ...]:
        """Per `Replicas`, the plan index of its first copy's first transfer."""
        ids, first = [], len(self.own)
        for rep in self.replicas:
            ids.append(first)
            first += rep.num_transfers()
        return tuple(ids)

    @cached_property
    def _regions(self) -> tuple[list[tuple[int, ...]], ...]:
        return tuple(rep.regions(self.own) for rep in self.replicas)

    def copy_transfers(self, replicas: int, copy: int) -> list[tuple[int, Transfer]]:
        """Copy number `copy` of `self.replicas[replicas]`: its transfers with their plan
        indices, in order (built from the template's, nothing else expanded)."""
        return list(self._copy(replicas, copy))

    def _copy(self, which: int, c: int) -> Iterator[tuple[int, Transfer]]:
        rep = self.replicas[which]
        copy: Copy = rep.copies[c]
        dev = copy.device
        first = self._first_ids[which] + c * len(rep.template)
        for j, (k, regions) in enumerate(zip(rep.template, self._regions[which], strict=True)):
            t = self.own[k]
            pieces = tuple(
                copy.piece(rep.sources, r, p) for p, r in zip(t.pieces, regions, strict=True)
            )
            moved = Transfer(dev[t.src], tuple(dev[d] for d in t.dst), pieces, t.start_s, t.end_s)
            yield first + j, self.expanded(moved)

    @cached_property
    def copy_of_device(self) -> dict[int, tuple[int, int]]:
        """Every device some copy relabels a template device to: (replicas, copy) it is in."""
        return {
            d: (r, c)
            for r, rep in enumerate(self.replicas)
            for c, copy in enumerate(rep.copies)
            for d in copy.device.values()
        }

    @cached_property
    def digest(self) -> bytes:
        """SHA-256 of the compact form (own transfers, copies' arrays, stack members): equal
        for equal compact plans, computed without expanding them."""
        h = hashlib.sha256()
        for i, t in enumerate(self.own):
            h.update(transfer_text(i, Transfer(t.src, t.dst, t.pieces)).encode())
        for rep in self.replicas:
            h.update(repr((rep.template, rep.sources)).encode())
            if rep.copies:
                arrays = _CopyArrays(rep)
                for a in (arrays.devices, arrays.tensors, *arrays.lows):
                    h.update(np.ascontiguousarray(a).tobytes())
        if self.stacking is not None:
            h.update(repr(self.stacking.members).encode())
        return h.digest()

    def json_texts(self) -> Iterator[str]:
        """Every transfer as compact JSON text (`id` its position), the same characters as
        `transfer_text` of each expanded transfer: the numbers copies change (ids, devices,
        tensors, box bounds) are computed for all copies at once and formatted into the
        template's text, a copy at a time (each text then holds that copy's transfers,
        comma-separated). Stacked pieces expand into one piece per member row."""
        for i, t in enumerate(self.own):
            yield transfer_text(i, self.expanded(t))
        for which, rep in enumerate(self.replicas):
            if not rep.copies:
                continue
            writer = _CopyWriter(rep, self.stacking)
            if not writer.uniform:  # stacked in some copies, not in others: built one by one
                for c in range(len(rep.copies)):
                    yield ",".join(transfer_text(i, t) for i, t in self._copy(which, c))
                continue
            first = self._first_ids[which]
            template = list(zip(rep.template, self._regions[which], strict=True))
            # first pass: each transfer's text, a number the same in every copy written into
            # it once; second pass: the other numbers into one array (no list of columns)
            texts: list[str] = []
            varying: list[list[bool]] = []
            largest = 0
            for j, (k, regions) in enumerate(template):
                t = self.own[k]
                numbers = writer.columns(t, first + j, len(rep.template), regions)
                same = [bool((c == c[0]).all()) for c in numbers]
                fixed = tuple(str(c[0]) if s else "%d" for c, s in zip(numbers, same, strict=True))
                texts.append(transfer_text_format(self.expanded(writer.shaped(t, regions))) % fixed)
                varying.append([not s for s in same])
                largest = max([largest, *(int(abs(c).max()) for c in numbers)])
            text = ",".join(texts)
            kind = np.int32 if largest < 2**31 else np.int64  # half the memory when it fits
            values = np.empty((len(rep.copies), sum(map(sum, varying))), dtype=kind)
            at = 0
            for j, (k, regions) in enumerate(template):
                numbers = writer.columns(self.own[k], first + j, len(rep.template), regions)
                for column, keep in zip(numbers, varying[j], strict=True):
                    if keep:
                        values[:, at] = column
                        at += 1
            # Python ints for a few copies at a time only
            rows = max(1, min(_ROWS_AT_ONCE, _NUMBERS_AT_ONCE // max(1, values.shape[1])))
            for start in range(0, len(values), rows):
                for row in values[start : start + rows].tolist():
                    yield text % tuple(row)


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


@dataclass(frozen=True)
class _Stacks:
    """The stack members as arrays: member `i` of planned tensor `t` is
    `flat[start[t] + i]`; `stacked[t]`: `t` is a stack (its pieces expand along dim 0)."""

    flat: np.ndarray
    start: np.ndarray
    stacked: np.ndarray

    @classmethod
    def of(cls, stacking: Stacking | None, num_tensors: int) -> _Stacks:
        if stacking is None:
            members: Sequence[Sequence[int]] = [(t,) for t in range(num_tensors)]
            stacked = np.zeros(num_tensors, dtype=bool)
        else:
            members = stacking.members
            stacked = np.array([len(m) > 1 for m in members], dtype=bool)
        sizes = np.array([len(m) for m in members], dtype=np.int64)
        start = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        flat = np.array([i for m in members for i in m], dtype=np.int64)
        return cls(flat, start, stacked)


class _CopyWriter(_CopyArrays):
    """The integers of a template transfer's text in every copy, stacks expanded."""

    def __init__(self, rep: Replicas, stacking: Stacking | None) -> None:
        assert rep.copies, "nothing to write"
        super().__init__(rep)
        if stacking is not None:
            num = len(stacking.members)
        else:  # every tensor a copy or its template names
            num = 1 + max([int(self.tensors.max(initial=0)), *(p.tensor for p in rep.sources)])
        self.stacks = _Stacks.of(stacking, num)
        # per region (columns), per copy: is its target a stack? The text's shape needs one
        # answer per region for every copy
        kinds = self.stacks.stacked[self.tensors]
        self.region_stacked = [bool(k) for k in kinds[0]]
        self.uniform = bool((kinds == kinds[:1]).all())

    def shaped(self, t: Transfer, regions: Sequence[int]) -> Transfer:
        """`t` with each piece moved into the first copy's region: pieces of the shape (and
        stackedness) every copy's transfer has, to lay out the text's format."""
        copy = self.rep.copies[0]
        pieces = tuple(
            copy.piece(self.rep.sources, r, p) for p, r in zip(t.pieces, regions, strict=True)
        )
        return Transfer(t.src, t.dst, pieces, t.start_s, t.end_s)

    def columns(
        self, t: Transfer, first_id: int, step: int, regions: Sequence[int]
    ) -> list[np.ndarray]:
        """The integers of template transfer `t`'s expanded text in every copy
        (`transfer_text_format` order), the first copy's id `first_id`, each next copy's
        `step` further."""
        columns = [first_id + step * np.arange(self.n, dtype=np.int64)]
        columns += [self.devices[:, self.column[d]] for d in (t.src, *t.dst)]
        stacks = self.stacks
        for piece, r in zip(t.pieces, regions, strict=True):
            source, lows, tensor = self.rep.sources[r], self.lows[r], self.tensors[:, r]
            shifts = [
                lows[:, dim] + (lo - s_lo)
                for dim, ((lo, _), (s_lo, _)) in enumerate(zip(piece.box, source.box, strict=True))
            ]
            ends = [
                lows[:, dim] + (hi - s_lo)
                for dim, ((_, hi), (s_lo, _)) in enumerate(zip(piece.box, source.box, strict=True))
            ]
            if not self.region_stacked[r]:
                columns.append(stacks.flat[stacks.start[tensor]])
                for lo, hi in zip(shifts, ends, strict=True):
                    columns += [lo, hi]
                continue
            rows = piece.box[0][1] - piece.box[0][0]
            for i in range(rows):  # one piece per member row, the rest of the box as it is
                columns.append(stacks.flat[stacks.start[tensor] + shifts[0] + i])
                for lo, hi in zip(shifts[1:], ends[1:], strict=True):
                    columns += [lo, hi]
        return columns


def planned_problem(problem: Problem, transfers: CompactTransfers) -> Problem | str:
    """The problem `transfers` were planned in: `problem` itself, or its stacked form when
    the plan keeps stacks; what is wrong when its stacks are not this request's."""
    if transfers.stacking is None:
        return problem
    stacked = problem.stacked
    theirs = transfers.stacking
    if stacked is None or (stacked[1].members, stacked[1].request.tensors) != (
        theirs.members,
        theirs.request.tensors,
    ):
        return "the plan's stacked tensors are not this request's identical tensors"
    return stacked[0]


def check_compact(problem: Problem, transfers: CompactTransfers) -> Simulation:
    """Validity and port-v1 times of a compact plan of `problem`'s request from what it spells
    out: its own transfers, simulated in the planned problem; copies take their templates'
    times and are not simulated (they share no port with them and carry the same bytes;
    `planner.replicas`), so their devices' coverage is not checked here."""
    work = planned_problem(problem, transfers)
    if isinstance(work, str):
        return Simulation([], 0.0, 0, [work])
    return simulate(work, transfers.own, copied_devices(transfers.replicas))


def device_transfers(transfers: Sequence[Transfer], device: int) -> list[tuple[int, Transfer]]:
    """The transfers `device` takes part in, with their plan indices, in order; for a compact
    plan built from its own transfers and its device's copy only."""
    if not isinstance(transfers, CompactTransfers):
        return [(i, t) for i, t in enumerate(transfers) if device == t.src or device in t.dst]
    out = [
        (i, transfers.expanded(t))
        for i, t in enumerate(transfers.own)
        if device == t.src or device in t.dst
    ]
    where = transfers.copy_of_device.get(device)
    if where is not None:
        out += [(i, t) for i, t in transfers.copy_transfers(*where) if device in (t.src, *t.dst)]
    return out


def member_sets(transfers: Sequence[Transfer]) -> list[tuple[int, ...]]:
    """Distinct sorted device sets (sender and receivers) of transfers with several receivers,
    in one deterministic order; a compact plan's copies relabelled as arrays."""
    if not isinstance(transfers, CompactTransfers):
        return sorted({tuple(sorted({t.src, *t.dst})) for t in transfers if len(t.dst) > 1})
    found = {tuple(sorted({t.src, *t.dst})) for t in transfers.own if len(t.dst) > 1}
    for rep in transfers.replicas:
        if not rep.copies:
            continue
        template, devices = rep.devices
        column = {d: j for j, d in enumerate(template)}
        for k in rep.template:
            t = transfers.own[k]
            if len(t.dst) > 1:
                members = devices[:, [column[d] for d in sorted({t.src, *t.dst})]]
                found.update(map(tuple, np.sort(members, axis=1).tolist()))
    return sorted(found)
