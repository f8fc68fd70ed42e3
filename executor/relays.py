"""Store-and-forward relays turned into cut-through, when relay buffers would not fit the budget.

Plans relay bytes through devices that keep none of them: a transfer brings an item to an entry
device on the rail the solver chose, and a later transfer sends it on over NVLink to the devices
of that host that need it. Run as planned, the entry holds the bytes in between (a relay buffer).
`fold_relays` instead lets such a later transfer travel with the one that brought its bytes: its
receivers join that transfer's chain right after the entry, which forwards every chunk from its
staging slot as it lands. Every rank computes the same folds, so the new order is again one
global order (deadlock-free), and every byte still reaches every device that needs it: a folded
transfer's receivers only get their bytes earlier.

`folded_plan` makes the result a plan of its own, simulated and checked like any other; a
compact plan (`planner.compact`) is folded in its own transfers and stays compact, each copy
folding as its template does (a copy's devices are its template's relabelled, so the same
relays keep nothing and the same carriers cover them).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, replace

from meshcast.planner.boxes import contains, intersect
from meshcast.planner.compact import (
    CompactTransfers,
    check_compact,
    device_transfers,
    planned_problem,
)
from meshcast.planner.plan import Piece, Plan, SolveStatus, Transfer
from meshcast.planner.problem import Problem
from meshcast.planner.replicas import Replicas
from meshcast.planner.simulate import Simulation, simulate


def _keeps_none(problem: Problem, device: int, piece: Piece) -> bool:
    """`device` neither holds nor needs any element of `piece`."""
    for boxes in (problem.src_boxes(piece.tensor), problem.dst_boxes(piece.tensor)):
        if any(intersect(box, piece.box) is not None for box in boxes.get(device, ())):
            return False
    return True


def _covers(carrier: Transfer, pieces: Sequence[Piece]) -> bool:
    return all(
        any(q.tensor == p.tensor and contains(q.box, p.box) for q in carrier.pieces) for p in pieces
    )


def fold_relays(problem: Problem, plan: Plan) -> tuple[list[tuple[int, Transfer]], dict[int, int]]:
    """The plan's transfers in execution order (with their indices) after folding, and for
    every folded transfer the index of the transfer it now travels with.

    A transfer is folded into the latest earlier transfer that delivered all its pieces to its
    sender when its sender keeps none of those bytes, its receivers share the sender's host,
    and the carrier's sender is not among them."""
    return _fold(problem, plan.transfers)


def _fold(
    problem: Problem, transfers: Sequence[Transfer]
) -> tuple[list[tuple[int, Transfer]], dict[int, int]]:
    host_of = problem.topology.host_of
    dst = [list(t.dst) for t in transfers]
    deliveries: dict[int, list[int]] = {}  # device -> transfers that reach it, in order
    carrier_of: dict[int, int] = {}
    inserted_after: dict[tuple[int, int], int] = {}  # (carrier, entry) -> devices added after it
    for index, transfer in enumerate(transfers):
        entry = transfer.src
        carrier = None
        if all(host_of[d] == host_of[entry] for d in transfer.dst) and all(
            _keeps_none(problem, entry, p) for p in transfer.pieces
        ):
            for earlier in reversed(deliveries.get(entry, [])):
                if _covers(transfers[earlier], transfer.pieces):
                    if transfers[earlier].src not in transfer.dst:
                        carrier = earlier
                    break
        if carrier is None:
            for d in transfer.dst:
                deliveries.setdefault(d, []).append(index)
            continue
        carrier_of[index] = carrier
        chain = dst[carrier]
        added = [d for d in transfer.dst if d not in chain]
        at = chain.index(entry) + 1 + inserted_after.get((carrier, entry), 0)
        chain[at:at] = added
        inserted_after[(carrier, entry)] = inserted_after.get((carrier, entry), 0) + len(added)
        for d in added:
            bisect.insort(deliveries.setdefault(d, []), carrier)
    order = [
        (index, replace(t, dst=tuple(dst[index])))
        for index, t in enumerate(transfers)
        if index not in carrier_of
    ]
    return order, carrier_of


@dataclass(frozen=True)
class Folding:
    """A plan with its relays folded: a plan of its own, simulated and checked like any other
    (compact when the plan was), with the way back to the given plan's transfer indices."""

    plan: Plan
    #: every folded transfer's index in the given plan -> its carrier's
    carrier_of: dict[int, int]
    #: per transfer of the folded plan, its index in the given plan (spelled out for a plan
    #: of its own transfers only; a compact plan's copies are mapped by `original`)
    _kept: tuple[int, ...]
    #: per `Replicas` of a compact plan: where its copies start in the folded plan, their
    #: transfers each there, where they start in the given plan, their transfers each there,
    #: and per folded template position its position in the given template
    _copies: tuple[tuple[int, int, int, int, dict[int, int]], ...] = ()

    def original(self, index: int) -> int:
        """The given plan's index of the folded plan's transfer `index`."""
        if index < len(self._kept):
            return self._kept[index]
        for first, template, first_given, given_template, given_of in reversed(self._copies):
            if index >= first:
                copy, j = divmod(index - first, template)
                return first_given + copy * given_template + given_of[j]
        raise IndexError(index)

    def device_transfers(self, device: int) -> list[tuple[int, Transfer]]:
        """The folded plan's transfers `device` takes part in, with the given plan's indices."""
        return [(self.original(i), t) for i, t in device_transfers(self.plan.transfers, device)]


def folded_plan(problem: Problem, plan: Plan) -> Folding:
    """`fold_relays` as a plan of its own with the port-v1 times the simulator gives it,
    checked like any other: what the executor runs and reports. A compact plan is folded in
    its distinct part (its own transfers; each copy folds as its template does) and stays
    compact. Raises `ValueError` when the folded plan does not deliver the request (a folding
    bug)."""
    transfers = plan.transfers
    if not isinstance(transfers, CompactTransfers):
        order, carrier_of = fold_relays(problem, plan)
        folded: Sequence[Transfer] = tuple(t for _, t in order)
        sim = simulate(problem, folded)
        kept = tuple(i for i, _ in order)
        return _checked(plan, folded, sim, carrier_of, kept, ())
    work = planned_problem(problem, transfers)
    if isinstance(work, str):
        raise ValueError(f"plan: {work}")
    order, own_carrier = _fold(work, transfers.own)
    position = {index: k for k, (index, _) in enumerate(order)}
    replicas, copies, carrier_of = [], [], dict(own_carrier)
    first, first_given = len(order), len(transfers.own)
    for rep in transfers.replicas:
        template = [k for k in rep.template if k not in own_carrier]
        replicas.append(Replicas(tuple(position[k] for k in template), rep.sources, rep.copies))
        at = {k: j for j, k in enumerate(rep.template)}
        given_of = {j: at[k] for j, k in enumerate(template)}
        copies.append((first, len(template), first_given, len(rep.template), given_of))
        for c in range(len(rep.copies)):  # a copy's relays fold into its own carriers
            base = first_given + c * len(rep.template)
            for k, carrier in own_carrier.items():
                if k in at:
                    carrier_of[base + at[k]] = base + at[carrier]
        first += len(template) * len(rep.copies)
        first_given += rep.num_transfers()
    compact = CompactTransfers([t for _, t in order], replicas, transfers.stacking)
    sim = check_compact(problem, compact)
    timed = [
        replace(t, start_s=s, end_s=e) for t, (s, e) in zip(compact.own, sim.times, strict=True)
    ]
    folded = CompactTransfers(timed, replicas, transfers.stacking)
    return _checked(plan, folded, sim, carrier_of, tuple(i for i, _ in order), tuple(copies))


def _checked(
    plan: Plan,
    transfers: Sequence[Transfer],
    sim: Simulation,
    carrier_of: dict[int, int],
    kept: tuple[int, ...],
    copies: tuple[tuple[int, int, int, int, dict[int, int]], ...],
) -> Folding:
    if sim.errors:
        raise ValueError(f"plan with relays folded: {sim.errors[0]} ({len(sim.errors)} in all)")
    if not isinstance(transfers, CompactTransfers):
        transfers = tuple(
            replace(t, start_s=s, end_s=e) for t, (s, e) in zip(transfers, sim.times, strict=True)
        )
    folded = replace(
        plan,
        transfers=transfers,
        makespan_s=sim.makespan_s,
        wire_bytes=None,
        status=plan.status if sim.makespan_s <= plan.makespan_s else SolveStatus.HEURISTIC,
    )
    return Folding(folded, carrier_of, kept, copies)
