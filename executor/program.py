"""What one rank does to run a plan: pure bookkeeping, worked out once at set-up, no torch.

For every transfer it takes part in, a rank knows its place on the transfer's route (the device
it receives from and the devices it forwards to, from `planner.route`), the message's layout on
the wire, and for every piece where its bytes live on this rank:
  - a sender reads each piece from its source shard, from its destination tensors (bytes that
    arrived earlier, e.g. a part it all-gathers) or from a relay buffer;
  - a receiver writes each piece into its destination tensors where they need it; bytes it
    needs to send on later, in another transfer, and holds nowhere else go to a relay buffer,
    which lives from the transfer that brings them to the last one that sends them; the rest
    is only forwarded down the chain, straight from the staging slot where it landed.
Where the rank's source and destination boxes overlap, the bytes are copied locally first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from meshcast.executor.wire import Message, wire_layout
from meshcast.planner.boxes import intersect, subtract, volume
from meshcast.planner.mesh import Box
from meshcast.planner.plan import Plan, Transfer
from meshcast.planner.problem import Problem
from meshcast.planner.route import transfer_route

SOURCE, DESTINATION, RELAY = "source", "destination", "relay"


@dataclass(frozen=True)
class Region:
    """A box of tensor number `tensor` that this rank holds: at `offset` in its local tensor
    number `local` of that tensor (always 0 but for block layouts, which list several)."""

    tensor: int
    box: Box
    local: int = 0
    offset: tuple[int, ...] = ()


@dataclass(frozen=True)
class Segment:
    """Part `box` of a piece, kept on this rank in `kind` (source, destination, relay)
    number `ref`: an index into `RankProgram.sources`, `.destinations` or `.relays`."""

    box: Box
    kind: str
    ref: int


@dataclass(frozen=True)
class RelayBuffer:
    """Bytes a rank receives, does not keep, and sends on in a later transfer."""

    tensor: int
    box: Box
    num_bytes: int


@dataclass(frozen=True)
class RankStep:
    """One transfer as seen by one of its participants."""

    #: position of the transfer in the plan's execution order
    index: int
    src: int
    #: the device this rank receives from (None on the sender)
    parent: int | None
    #: the devices this rank forwards to
    children: tuple[int, ...]
    #: sender and receivers, sorted: the members of a broadcast group
    participants: tuple[int, ...]
    message: Message
    #: per piece of the message, where its parts live on this rank
    segments: tuple[tuple[Segment, ...], ...]
    #: relay buffers made before this step and released after it
    allocate: tuple[int, ...] = ()
    release: tuple[int, ...] = ()

    @property
    def is_sender(self) -> bool:
        return self.parent is None


@dataclass(frozen=True)
class LocalCopy:
    """Box `box` of a tensor, from source region `source` to destination region
    `destination` of the same rank."""

    box: Box
    source: int
    destination: int


@dataclass(frozen=True)
class RankProgram:
    """Everything one rank does in a run, in order: local copies, then its steps."""

    rank: int
    sources: tuple[Region, ...]
    destinations: tuple[Region, ...]
    copies: tuple[LocalCopy, ...]
    steps: tuple[RankStep, ...]
    relays: dict[int, RelayBuffer]
    #: most relay bytes alive at once during a run
    peak_relay_bytes: int

    @property
    def max_chunks(self) -> int:
        return max((s.message.num_chunks for s in self.steps), default=0)


def message_pieces(problem: Problem, transfer: Transfer) -> list[tuple[int, Box, int]]:
    tensors = problem.request.tensors
    return [(p.tensor, p.box, tensors[p.tensor].itemsize_bytes) for p in transfer.pieces]


def rank_regions(problem: Problem, rank: int, side: str) -> tuple[Region, ...]:
    """The boxes this rank holds (`side="src"`) or must end up holding (`"dst"`)."""
    out = []
    for i in range(len(problem.request.tensors)):
        holding = problem.holding_of(i, side, rank)
        if holding is not None:
            out += [
                Region(i, box, local, offset)
                for box, (local, offset) in zip(holding.boxes, holding.places, strict=True)
            ]
    return tuple(out)


def _carve(parts: list[Box], box: Box) -> tuple[list[Box], list[Box]]:
    """`parts` split into what lies inside `box` and what is left outside it."""
    inside, outside = [], []
    for part in parts:
        common = intersect(part, box)
        if common is None:
            outside.append(part)
            continue
        inside.append(common)
        outside.extend(subtract(part, box))
    return inside, outside


def _by_tensor(regions: Sequence[Region]) -> dict[int, list[tuple[int, Region]]]:
    found: dict[int, list[tuple[int, Region]]] = {}
    for i, r in enumerate(regions):
        found.setdefault(r.tensor, []).append((i, r))
    return found


class _Builder:
    """Walks the plan once for one rank, tracking which relay buffers hold what."""

    def __init__(self, problem: Problem, rank: int) -> None:
        self.problem, self.rank = problem, rank
        self.sources = rank_regions(problem, rank, "src")
        self.destinations = rank_regions(problem, rank, "dst")
        #: per tensor, its source and destination regions with their numbers (a rank of a
        #: refit holds thousands of tensors: no scan over all of them per piece)
        self._sources_of = _by_tensor(self.sources)
        self._destinations_of = _by_tensor(self.destinations)
        self.relays: list[RelayBuffer] = []
        self.relay_by_tensor: dict[int, list[int]] = {}
        self.relay_born: dict[int, int] = {}
        self.relay_last_use: dict[int, int] = {}

    def sources_of(self, tensor: int) -> list[tuple[int, Region]]:
        return self._sources_of.get(tensor, [])

    def destinations_of(self, tensor: int) -> list[tuple[int, Region]]:
        return self._destinations_of.get(tensor, [])

    def read_from(self, tensor: int, box: Box, position: int) -> tuple[Segment, ...]:
        """Where a sender finds `box`: its source first, then its destination tensors (a part
        of them it sends on has arrived: the plan is valid), then relay buffers."""
        segments, left = [], [box]
        for kind, candidates in (
            (SOURCE, self.sources_of(tensor)),
            (DESTINATION, self.destinations_of(tensor)),
            (RELAY, [(r, self.relays[r]) for r in self.relay_by_tensor.get(tensor, [])]),
        ):
            for ref, held in candidates:
                inside, left = _carve(left, held.box)
                segments += [Segment(b, kind, ref) for b in inside]
                if inside and kind == RELAY:
                    self.relay_last_use[ref] = position
                if not left:
                    return tuple(segments)
        raise ValueError(
            f"transfer {position}: device {self.rank} does not hold box {[list(b) for b in box]} "
            f"of tensor {self.problem.request.tensors[tensor].name!r}"
        )

    def write_to(self, tensor: int, box: Box, position: int) -> tuple[Segment, ...]:
        """Where a receiver puts `box`: every destination region it meets; what lies outside
        them and outside its source goes to a new relay buffer (kept if sent on later)."""
        segments, left = [], [box]
        for ref, region in self.destinations_of(tensor):
            common = intersect(box, region.box)
            if common is not None:
                segments.append(Segment(common, DESTINATION, ref))
            left = _carve(left, region.box)[1]
        for _, region in self.sources_of(tensor):
            left = _carve(left, region.box)[1]
        itemsize = self.problem.request.tensors[tensor].itemsize_bytes
        for part in left:
            ref = len(self.relays)
            self.relays.append(RelayBuffer(tensor, part, volume(part) * itemsize))
            self.relay_by_tensor.setdefault(tensor, []).append(ref)
            self.relay_born[ref] = position
            segments.append(Segment(part, RELAY, ref))
        return tuple(segments)

    def local_copies(self) -> tuple[LocalCopy, ...]:
        copies = []
        for d, dst in enumerate(self.destinations):
            for s, src in self.sources_of(dst.tensor):
                common = intersect(src.box, dst.box)
                if common is not None:
                    copies.append(LocalCopy(common, s, d))
        return tuple(copies)


def rank_program(
    problem: Problem, transfers: Sequence[tuple[int, Transfer]], rank: int, chunk_bytes: int
) -> RankProgram:
    """What `rank` does to run `transfers` (in execution order, each with its index in the
    plan) with messages cut in chunks of `chunk_bytes`.

    Raises `ValueError` when the plan makes this rank send bytes it does not hold (the plan's
    validity check catches that first)."""
    build = _Builder(problem, rank)
    topo = problem.topology
    drafts = []
    for index, transfer in transfers:
        if rank != transfer.src and rank not in transfer.dst:
            continue
        parent, children = transfer_route(topo, transfer.src, transfer.dst).links()[rank]
        side = build.read_from if parent is None else build.write_to
        segments = tuple(side(p.tensor, p.box, index) for p in transfer.pieces)
        pieces, length = wire_layout(message_pieces(problem, transfer))
        drafts.append(
            RankStep(
                index=index,
                src=transfer.src,
                parent=parent,
                children=tuple(children),
                participants=tuple(sorted({transfer.src, *transfer.dst})),
                message=Message(pieces, length, chunk_bytes),
                segments=segments,
            )
        )
    used = build.relay_last_use
    born_at: dict[int, list[int]] = {}
    last_at: dict[int, list[int]] = {}
    for ref, last in used.items():
        born_at.setdefault(build.relay_born[ref], []).append(ref)
        last_at.setdefault(last, []).append(ref)
    steps, alive, peak = [], 0, 0
    for step in drafts:
        # relay buffers nothing sends on are never made: their bytes are only forwarded
        segments = tuple(
            tuple(s for s in piece if s.kind != RELAY or s.ref in used) for piece in step.segments
        )
        allocate, release = tuple(born_at.get(step.index, ())), tuple(last_at.get(step.index, ()))
        alive += sum(build.relays[r].num_bytes for r in allocate)
        peak = max(peak, alive)
        alive -= sum(build.relays[r].num_bytes for r in release)
        steps.append(
            RankStep(
                step.index,
                step.src,
                step.parent,
                step.children,
                step.participants,
                step.message,
                segments,
                allocate,
                release,
            )
        )
    return RankProgram(
        rank=rank,
        sources=build.sources,
        destinations=build.destinations,
        copies=build.local_copies(),
        steps=tuple(steps),
        relays={r: build.relays[r] for r in used},
        peak_relay_bytes=peak,
    )


def numbered(plan: Plan) -> list[tuple[int, Transfer]]:
    """The plan's transfers in execution order, each with its index."""
    return list(enumerate(plan.transfers))
