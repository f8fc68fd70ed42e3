"""Moving one packed buffer between the participants of a transfer.

Two ways, same result: `chain` forwards the buffer chunk by chunk along the transfer's route with
`batch_isend_irecv` (a relay posts every receive at once and passes each chunk on as soon as it
has arrived, so a long chain is pipelined and every link carries each byte once), and
`broadcast` calls `dist.broadcast` on a process group made of the transfer's participants.
Single-receiver transfers are one chain hop in both modes.

Deadlock freedom: every rank walks the plan's transfers in one global order, so the earliest
unfinished transfer always has all its participants on it; inside it, chunk k reaches depth d
once it has reached depth d-1, whatever the other chunks do.
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
    `children`, chunk by chunk: every receive is posted at once, and each chunk goes on to
    the children as soon as it has arrived."""
    chunks = list(torch.split(buffer, chunk_bytes)) if buffer.numel() else []
    if not chunks:
        return
    sends: list[dist.Work] = []
    if parent is None:
        ops = [dist.P2POp(dist.isend, c, child, group=group) for c in chunks for child in children]
        sends = dist.batch_isend_irecv(ops)
    else:
        receives = dist.batch_isend_irecv(
            [dist.P2POp(dist.irecv, c, parent, group=group) for c in chunks]
        )
        for chunk, received in zip(chunks, receives, strict=True):
            received.wait()
            if children:
                sends += dist.batch_isend_irecv(
                    [dist.P2POp(dist.isend, chunk, child, group=group) for child in children]
                )
    for work in sends:
        work.wait()


def broadcast(buffer: torch.Tensor, src: int, group: dist.ProcessGroup) -> None:
    """`buffer` from global rank `src` to every member of `group`."""
    dist.broadcast(buffer, src=src, group=group)
