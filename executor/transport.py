"""Moving one message between the participants of a transfer, chunk by chunk, through a fixed
pool of staging slots.

A sender packs chunk k into a slot and sends it on; a receiver gets chunk k into a slot,
unpacks it and forwards the same slot down the chain. Chunk k uses slot k mod the
number of slots, so a rank never holds more than its pool, however long the message.

`chain` forwards along the transfer's route with p2p operations: a receiver keeps a receive
posted in every free slot, so a relay receives chunk k+1 while it forwards chunk k, and every
link carries each byte once. `broadcast` calls `dist.broadcast` per chunk on a process group of
the transfer's participants, several chunks in flight.

Deadlock freedom: every rank walks the plan's transfers in one global order, so the earliest
unfinished transfer has all its participants on it; inside it, what a rank does with chunk k
waits only on chunk k at its parent and on earlier chunks, whatever the pool sizes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch
import torch.distributed as dist

#: bytes per chunk unless the staging budget asks for smaller ones
CHUNK_BYTES = 4 << 20
#: a staging pool has at least this many slots, so receiving, forwarding and sending overlap
MIN_SLOTS = 4

ChunkFunction = Callable[[int, torch.Tensor], None]
#: chunk k's bytes where they already are (sent from or received into in place), else None
DirectFunction = Callable[[int], torch.Tensor | None]


class StagingPool:
    """`num_slots` slots of `slot_bytes` each, in one allocation on `device`."""

    def __init__(self, num_slots: int, slot_bytes: int, device: torch.device) -> None:
        self.num_slots, self.slot_bytes = num_slots, slot_bytes
        self.buffer = torch.empty(num_slots * slot_bytes, dtype=torch.uint8, device=device)

    @property
    def num_bytes(self) -> int:
        return self.num_slots * self.slot_bytes

    def slot(self, k: int, length: int) -> torch.Tensor:
        """The first `length` bytes of the slot of chunk `k`."""
        start = (k % self.num_slots) * self.slot_bytes
        return self.buffer[start : start + length]


class PeerFailure(RuntimeError):
    """A wait of one transfer failed (timed out, or its peer went away): which operation, on
    which peer (None: one of a broadcast group's), at which chunk."""

    def __init__(self, operation: str, peer: int | None, chunk: int, cause: BaseException):
        self.operation, self.peer, self.chunk = operation, peer, chunk
        super().__init__(f"{operation} of chunk {chunk} failed: {cause}")


def _waited(work: dist.Work, operation: str, peer: int | None, chunk: int) -> None:
    try:
        work.wait()
    except Exception as err:  # gloo and NCCL raise RuntimeError (DistBackendError) kinds
        raise PeerFailure(operation, peer, chunk, err) from err


def _wait(works: Sequence[tuple[int, dist.Work]], chunk: int) -> None:
    """Wait for the sends of chunk `chunk`, one per child."""
    for child, work in works:
        _waited(work, f"the send to rank {child}", child, chunk)


def _posted(
    post: Callable[[], dist.Work | None], operation: str, peer: int | None, chunk: int
) -> dist.Work:
    """The work of an operation just posted: posting fails too when the peer is already gone."""
    try:
        work = post()
    except Exception as err:
        raise PeerFailure(operation, peer, chunk, err) from err
    assert work is not None, "a p2p operation in a group this rank is not in"
    return work


class Chunks:
    """The chunks of one message on this rank: where each one is (its staging slot, or with
    `direct` already in place in the caller's tensors) and how a staged one is packed (`fill`,
    on the sender) or unpacked (`drain`, on a receiver that keeps some of its bytes)."""

    def __init__(
        self,
        pool: StagingPool,
        lengths: Sequence[int],
        direct: DirectFunction | None = None,
        fill: ChunkFunction | None = None,
        drain: ChunkFunction | None = None,
    ) -> None:
        self.pool, self.lengths, self._fill, self._drain = pool, lengths, fill, drain
        self._direct = [direct(k) for k in range(len(lengths))] if direct else []

    def __len__(self) -> int:
        return len(self.lengths)

    def _staged(self, k: int) -> bool:
        return not self._direct or self._direct[k] is None

    def buffer(self, k: int) -> torch.Tensor:
        """Where chunk `k` is sent from or received into."""
        if self._staged(k):
            return self.pool.slot(k, self.lengths[k])
        direct = self._direct[k]
        assert direct is not None
        return direct

    def packed(self, k: int) -> torch.Tensor:
        """Chunk `k`'s buffer, holding the bytes to send."""
        data = self.buffer(k)
        if self._fill is not None and self._staged(k):
            self._fill(k, data)
        return data

    def unpacked(self, k: int) -> torch.Tensor:
        """Chunk `k`'s buffer once it has been received, its bytes now also in place."""
        data = self.buffer(k)
        if self._drain is not None and self._staged(k):
            self._drain(k, data)
        return data


def chain(
    chunks: Chunks, parent: int | None, children: Sequence[int], group: dist.ProcessGroup
) -> None:
    """Send (no `parent`) or receive a message, forwarding every chunk to `children` from
    where it landed."""
    num_chunks, num_slots = len(chunks), chunks.pool.num_slots
    sends: dict[int, list[tuple[int, dist.Work]]] = {}

    def send(k: int, data: torch.Tensor) -> None:
        sends[k] = [
            (
                child,
                _posted(
                    partial(dist.isend, data, child, group=group),
                    f"the send to rank {child}",
                    child,
                    k,
                ),
            )
            for child in children
        ]

    if parent is None:
        for k in range(num_chunks):
            _wait(sends.pop(k - num_slots, []), k - num_slots)  # the slot's previous chunk left
            send(k, chunks.packed(k))
    else:

        def receive(k: int) -> dist.Work:
            return _posted(
                partial(dist.irecv, chunks.buffer(k), parent, group=group),
                f"the receive from rank {parent}",
                parent,
                k,
            )

        receives = {k: receive(k) for k in range(min(num_slots, num_chunks))}
        for k in range(num_chunks):
            _waited(receives.pop(k), f"the receive from rank {parent}", parent, k)
            data = chunks.unpacked(k)
            if children:
                send(k, data)
            # reuse the slot freed longest ago: the previous chunk's, once it has been sent on
            # (a leaf's own slot is free as soon as it is unpacked)
            free = k - 1 if children else k
            if free >= 0 and free + num_slots < num_chunks:
                _wait(sends.pop(free, []), free)
                receives[free + num_slots] = receive(free + num_slots)
    for k, works in sends.items():
        _wait(works, k)


def broadcast(chunks: Chunks, src: int, group: dist.ProcessGroup) -> None:
    """`dist.broadcast` of every chunk from global rank `src` to the members of `group`, up to
    one chunk per slot in flight."""
    sender = dist.get_rank() == src
    pending: dict[int, dist.Work] = {}
    num_slots = chunks.pool.num_slots

    if sender:
        operation, peer = f"the broadcast to ranks {dist.get_process_group_ranks(group)}", None
    else:
        operation, peer = f"the broadcast from rank {src}", src

    def finish(k: int) -> None:
        _waited(pending.pop(k), operation, peer, k)
        if not sender:
            chunks.unpacked(k)

    for k in range(len(chunks)):
        if k - num_slots in pending:
            finish(k - num_slots)
        data = chunks.packed(k) if sender else chunks.buffer(k)
        pending[k] = _posted(
            partial(dist.broadcast, data, src=src, group=group, async_op=True), operation, peer, k
        )
    for k in sorted(pending):
        finish(k)
