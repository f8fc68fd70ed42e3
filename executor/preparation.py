"""What one rank works out from a plan before it runs, without talking to the others.

`prepare` checks the plan against the request, picks the chunk size every rank uses, and works
out this rank's program. Its cost follows the plan's distinct work: a compact plan
(`planner.compact`) is checked from the transfers it spells out, and a rank inside a copy of a
component gets its program from that copy's transfers alone, so no rank walks (or even builds)
the transfers of thousands of identical host pairs. A plan read from JSON is walked whole.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from meshcast.executor import transport
from meshcast.executor.agreement import InvalidPlanError, plan_fingerprint
from meshcast.executor.program import RankProgram, rank_program
from meshcast.executor.wire import ALIGN_BYTES, align_up
from meshcast.planner.boxes import volume
from meshcast.planner.compact import (
    CompactTransfers,
    check_compact,
    device_transfers,
    member_sets,
)
from meshcast.planner.plan import Plan, Transfer
from meshcast.planner.problem import Problem, build_problem
from meshcast.planner.request import Request
from meshcast.planner.simulate import Simulation, simulate


@dataclass(frozen=True)
class Prepared:
    """One rank's view of a checked plan."""

    problem: Problem
    #: the chunk size every rank uses (the same inputs give the same size on every rank)
    chunk_bytes: int
    program: RankProgram
    #: what every rank must agree on (`agreement.plan_fingerprint`)
    fingerprint: int
    #: distinct member sets of transfers with several receivers (broadcast mode's groups)
    broadcast_groups: tuple[tuple[int, ...], ...]


def message_chunk_bytes(chunk_bytes: int, staging_bytes: int, longest_message: int) -> int:
    """The chunk size every rank uses: at most `chunk_bytes`, at least `MIN_SLOTS` chunks in
    the staging budget, no longer than the longest message; a multiple of `ALIGN_BYTES`."""
    chunk = min(chunk_bytes, staging_bytes // transport.MIN_SLOTS, align_up(longest_message))
    return max(ALIGN_BYTES, chunk // ALIGN_BYTES * ALIGN_BYTES)


def longest_message_bytes(problem: Problem, transfers: Iterable[Transfer]) -> int:
    """Bytes of the longest of these messages on the wire, padding included."""
    longest = 0
    for transfer in transfers:
        length = 0
        for p in transfer.pieces:
            length = align_up(length) + problem.piece_bytes(p)
        longest = max(longest, length)
    return longest


def longest_compact_message_bytes(problem: Problem, transfers: CompactTransfers) -> int:
    """`longest_message_bytes` of a compact plan's messages (its own transfers: each copy's
    have its template's bytes), from the stacked pieces: a piece of rows `[a, b)` of a stack
    is `b - a` member pieces of its other dims, each aligned on the wire."""
    stacking = transfers.stacking
    tensors = problem.request.tensors
    longest = 0
    for transfer in transfers.own:
        length = 0
        for p in transfer.pieces:
            members = (p.tensor,) if stacking is None else stacking.members[p.tensor]
            if len(members) == 1:
                length = align_up(length) + volume(p.box) * tensors[members[0]].itemsize_bytes
                continue
            (lo, hi), rest = p.box[0], p.box[1:]
            each = volume(rest) * tensors[members[0]].itemsize_bytes
            for _ in range(lo, hi):
                length = align_up(length) + each
        longest = max(longest, length)
    return longest


def check_delivers(problem: Problem, plan: Plan) -> Simulation:
    """The plan's port-v1 schedule and validity errors, from its distinct part when it is
    compact."""
    if isinstance(plan.transfers, CompactTransfers):
        return check_compact(problem, plan.transfers)
    return simulate(problem, plan.transfers)


def prepare(
    plan: Plan,
    request: Request,
    rank: int,
    world_size: int,
    *,
    mode: str,
    chunk_bytes: int,
    staging_bytes: int,
) -> Prepared:
    """Check `plan` and work out `rank`'s part in it. Raises `InvalidPlanError` when the plan
    does not deliver the request, `ValueError` when the request does not fit the world."""
    problem = build_problem(request)
    beyond = [d for d in problem.topology.host_of if d >= world_size]
    if beyond:
        raise ValueError(
            f"request: device {min(beyond)} is not a rank of this world (world size {world_size})"
        )
    errors = check_delivers(problem, plan).errors
    if errors:
        raise InvalidPlanError(f"plan: {errors[0]} ({len(errors)} problem(s) in all)")
    if isinstance(plan.transfers, CompactTransfers):
        longest = longest_compact_message_bytes(problem, plan.transfers)
    else:
        longest = longest_message_bytes(problem, plan.transfers)
    chunk = message_chunk_bytes(chunk_bytes, staging_bytes, longest)
    program = rank_program(problem, device_transfers(plan.transfers, rank), rank, chunk)
    groups = tuple(member_sets(plan.transfers)) if mode == "broadcast" else ()
    fingerprint = plan_fingerprint(plan, request.request_id, mode, chunk)
    return Prepared(problem, chunk, program, fingerprint, groups)
