"""What one rank does for each transfer of a plan: pure bookkeeping, no communication.

A transfer travels along the route port-v1 prices (DESIGN §3): a chain over the entry device of
each receiving host, and inside every host a chain from its entry (or from the sender) through
that host's other receivers, in `dst` order.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.plan import Piece, Plan, Transfer
from planner.problem import Problem


@dataclass(frozen=True)
class Step:
    """One transfer as seen by one of its participants."""

    #: position of the transfer in the plan's execution order
    index: int
    src: int
    #: the device this rank receives from in a chain (None on the sender)
    parent: int | None
    #: the devices this rank forwards to in a chain
    children: tuple[int, ...]
    #: sender and receivers, sorted: the members of a broadcast group
    participants: tuple[int, ...]
    pieces: tuple[Piece, ...]
    num_bytes: int

    @property
    def is_sender(self) -> bool:
        return self.parent is None


def forwarding(problem: Problem, transfer: Transfer) -> dict[int, tuple[int | None, list[int]]]:
    """Per participant: whom it receives from (None for the sender) and whom it forwards to."""
    topo = problem.topology
    src_host = topo.host_of[transfer.src]
    per_host: dict[int, list[int]] = {}
    for d in transfer.dst:
        per_host.setdefault(topo.host_of[d], []).append(d)
    links: dict[int, tuple[int | None, list[int]]] = {transfer.src: (None, [])}
    previous = transfer.src
    for host, devices in per_host.items():  # the chain across hosts, through each entry
        if host == src_host:
            continue
        links[previous][1].append(devices[0])
        links[devices[0]] = (previous, [])
        previous = devices[0]
    for host, devices in per_host.items():  # the chains inside hosts
        previous = transfer.src if host == src_host else devices[0]
        for d in devices if host == src_host else devices[1:]:
            links[previous][1].append(d)
            links[d] = (previous, [])
            previous = d
    return links


def rank_steps(problem: Problem, plan: Plan, rank: int) -> list[Step]:
    """The transfers `rank` takes part in, in plan order."""
    steps = []
    for index, transfer in enumerate(plan.transfers):
        if rank != transfer.src and rank not in transfer.dst:
            continue
        parent, children = forwarding(problem, transfer)[rank]
        steps.append(
            Step(
                index=index,
                src=transfer.src,
                parent=parent,
                children=tuple(children),
                participants=tuple(sorted({transfer.src, *transfer.dst})),
                pieces=transfer.pieces,
                num_bytes=sum(problem.piece_bytes(p) for p in transfer.pieces),
            )
        )
    return steps


def broadcast_groups(plan: Plan) -> list[tuple[int, ...]]:
    """Distinct member sets of transfers with several receivers, in one deterministic order
    (every rank must create process groups in the same order)."""
    return sorted({tuple(sorted({t.src, *t.dst})) for t in plan.transfers if len(t.dst) > 1})
