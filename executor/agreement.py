"""Ranks agree on a plan before anything can fail on one rank alone.

Every rank first prepares the plan on its own (`executor.preparation`: checks it, works out its
program) and catches what goes wrong instead of raising. Then the ranks exchange one small
verdict each (a code, the plan's fingerprint, the relay bytes their program needs): when any
rank's preparation failed, every rank raises the same error, naming that rank and what it
found; when all succeeded but fingerprints differ, every rank raises `PlanMismatchError`. A
damaged plan on one rank is thus refused on every rank within one collective, instead of the
others waiting in their first transfer until the timeout.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import torch
import torch.distributed as dist

from meshcast.executor.arguments import raise_failure
from meshcast.planner.compact import CompactTransfers
from meshcast.planner.plan import Plan


class PlanMismatchError(RuntimeError):
    """Ranks were given different plans, requests, modes or chunk sizes (running would hang or
    corrupt)."""


class InvalidPlanError(ValueError):
    """The plan does not deliver the request (DESIGN §2 validity); refused before any data
    moves, on every rank alike, instead of failing half-way with peers left waiting."""


#: what a rank's preparation ended with, by the code it sends
OK, INVALID_PLAN, BAD_ARGUMENT = 0, 1, 2
_ERRORS: dict[int, type[Exception]] = {INVALID_PLAN: InvalidPlanError, BAD_ARGUMENT: ValueError}


def plan_fingerprint(plan: Plan, request_id: str = "", mode: str = "", chunk_bytes: int = 0) -> int:
    """63-bit digest of what every rank must agree on: transfers, request, mode, chunk size.

    A compact plan (`planner.compact`) is hashed in its compact form, without expanding it, so
    it differs from the digest of the same plan read back from JSON: every rank must get the
    plan the same way (all from one rank's planner, or all from the same document)."""
    h = hashlib.sha256(f"{request_id}\0{mode}\0{chunk_bytes}\0".encode())
    if isinstance(plan.transfers, CompactTransfers):
        h.update(b"compact\0" + plan.transfers.digest)
    else:  # every number of every transfer, with the counts that delimit them (times aside)
        numbers: list[int] = []
        for t in plan.transfers:
            numbers += (t.src, len(t.dst), *t.dst, len(t.pieces))
            for p in t.pieces:
                numbers += (p.tensor, len(p.box))
                for lo, hi in p.box:
                    numbers += (lo, hi)
        h.update(np.array(numbers, dtype=np.int64).tobytes())
    return int.from_bytes(h.digest()[:8], "big") >> 1


def agree_on_plan(
    code: int,
    problem: str | None,
    fingerprint: int,
    relay_bytes: int,
    rank: int,
    members: Sequence[int],
    group: dist.ProcessGroup,
    device: torch.device,
) -> int:
    """A collective over `members` (every rank of `group`): raise on every rank when any
    rank's preparation failed (`code`, with `problem` saying what) or fingerprints differ;
    otherwise the most relay bytes any rank's program needs."""
    mine = torch.tensor([code, fingerprint, relay_bytes], dtype=torch.int64, device=device)
    everyone = [torch.zeros_like(mine) for _ in members]
    dist.all_gather(everyone, mine, group=group)
    verdicts = [[int(v) for v in t.tolist()] for t in everyone]
    failing = [m for m, (c, _, _) in zip(members, verdicts, strict=True) if c != OK]
    if failing:
        first = verdicts[list(members).index(failing[0])][0]
        raise_failure(problem, rank, failing, group, device, _ERRORS.get(first, InvalidPlanError))
    prints = [f for _, f, _ in verdicts]
    differing = [m for m, f in zip(members, prints, strict=True) if f != prints[0]]
    if differing:
        raise PlanMismatchError(
            f"ranks hold different plans, requests, modes or chunk sizes: rank {members[0]} has "
            f"fingerprint {prints[0]:#x}, ranks {differing} differ (rank {rank} has "
            f"{fingerprint:#x})"
        )
    return max(r for _, _, r in verdicts)
