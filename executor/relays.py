"""Store-and-forward relays turned into cut-through, when relay buffers would not fit the budget.

Plans relay bytes through devices that keep none of them: a transfer brings an item to an entry
device on the rail the solver chose, and a later transfer sends it on over NVLink to the devices
of that host that need it. Run as planned, the entry holds the bytes in between (a relay buffer).
`fold_relays` instead lets such a later transfer travel with the one that brought its bytes: its
receivers join that transfer's chain right after the entry, which forwards every chunk from its
staging slot as it lands. Every rank computes the same folds, so the new order is again one
global order (deadlock-free), and every byte still reaches every device that needs it: a folded
transfer's receivers only get their bytes earlier.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import replace

from meshcast.planner.boxes import contains, intersect
from meshcast.planner.plan import Piece, Plan, SolveStatus, Transfer
from meshcast.planner.problem import Problem
from meshcast.planner.simulate import simulate


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
    host_of = problem.topology.host_of
    dst = [list(t.dst) for t in plan.transfers]
    deliveries: dict[int, list[int]] = {}  # device -> transfers that reach it, in order
    carrier_of: dict[int, int] = {}
    inserted_after: dict[tuple[int, int], int] = {}  # (carrier, entry) -> devices added after it
    for index, transfer in enumerate(plan.transfers):
        entry = transfer.src
        carrier = None
        if all(host_of[d] == host_of[entry] for d in transfer.dst) and all(
            _keeps_none(problem, entry, p) for p in transfer.pieces
        ):
            for earlier in reversed(deliveries.get(entry, [])):
                if _covers(plan.transfers[earlier], transfer.pieces):
                    if plan.transfers[earlier].src not in transfer.dst:
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
        for index, t in enumerate(plan.transfers)
        if index not in carrier_of
    ]
    return order, carrier_of


def folded_plan(
    problem: Problem, plan: Plan
) -> tuple[Plan, list[tuple[int, Transfer]], dict[int, int]]:
    """`fold_relays`, its order also as a plan of its own with the port-v1 times the
    simulator gives it, checked like any other: what the executor runs and reports. Raises
    `ValueError` when the folded order does not deliver the request (a folding bug)."""
    order, carrier_of = fold_relays(problem, plan)
    transfers = tuple(t for _, t in order)
    sim = simulate(problem, transfers)
    if sim.errors:
        raise ValueError(f"plan with relays folded: {sim.errors[0]} ({len(sim.errors)} in all)")
    folded = replace(
        plan,
        transfers=tuple(
            replace(t, start_s=s, end_s=e) for t, (s, e) in zip(transfers, sim.times, strict=True)
        ),
        makespan_s=sim.makespan_s,
        wire_bytes=sim.wire_bytes,
        status=plan.status if sim.makespan_s <= plan.makespan_s else SolveStatus.HEURISTIC,
    )
    return folded, order, carrier_of
