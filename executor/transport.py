"""Moving one packed buffer between the participants of a transfer.

Two ways, same result: `chain` forwards the buffer chunk by chunk along the transfer's route with
`batch_isend_irecv` (a relay receives chunk k while it forwards chunk k-1, so a long chain is
pipelined and every link carries each byte once), and `broadcast` calls `dist.broadcast` on a
process group made of the transfer's participants. Single-receiver transfers are one chain hop
in both modes.

Deadlock freedom: every rank walks the plan's transfers in one global order, so the earliest
unfinished transfer always has all its participants waiting on it. Inside a chain, a rank's step
k waits only on its parent's step k+1 and its children's step k-1: one wave at a time.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist

#: bytes per chunk of a chain: large enough to amortise a message, small enough to pipeline
CHUNK_BYTES = 4 << 20


def chain(
    buffer: torch.Tensor,
    parent: int | None,
    children: Sequence[int],
    group: dist.ProcessGroup,
    chunk_bytes: int = CHUNK_BYTES,
) -> None:
    """Receive `buffer` from `parent` (unless this rank sends) while forwarding it to
    `children`, chunk by chunk."""
    chunks = list(torch.split(buffer, chunk_bytes)) if buffer.numel() else []
    # the sender has every chunk at once; a relay forwards in wave k the chunk it got in k-1
    lag = 0 if parent is None else 1
    for wave in range(len(chunks) + (lag if children else 0)):
        ops = []
        if parent is not None and wave < len(chunks):
            ops.append(dist.P2POp(dist.irecv, chunks[wave], parent, group=group))
        if 0 <= wave - lag < len(chunks):
            ready = chunks[wave - lag]
            ops.extend(dist.P2POp(dist.isend, ready, child, group=group) for child in children)
        for work in dist.batch_isend_irecv(ops):
            work.wait()


def broadcast(buffer: torch.Tensor, src: int, group: dist.ProcessGroup) -> None:
    """`buffer` from global rank `src` to every member of `group`."""
    dist.broadcast(buffer, src=src, group=group)
