"""The port-v1 list schedule of a plan, and its validity (DESIGN §2, §3).

`PortClock` is port-v1's list-schedule recurrence: a transfer starts when all its ports are
free and its data has arrived at its sender, and holds its ports until it ends. The simulator,
`solver.order.in_order` and CP-SAT's hint (in integer time units) use it; the schedulers that
search orders apply the same rule to their own arrays for speed (`solver.order.earliest_start`
vectorised, `solver.search` with undo; `tests/solver/test_clock.py` proves the first equal to
it), the greedy's router scores recipes by booked load (an estimate, not a schedule), and every
plan's times come from `simulate`.
`simulate` walks a plan in order, finds when each piece became available at its sender from
the geometry of earlier deliveries, and reports every validity error it meets.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from meshcast.planner.boxes import TimedBoxes, contains, covers, uncovered_volume
from meshcast.planner.cost import transfer_cost
from meshcast.planner.mesh import Box
from meshcast.planner.plan import Plan, Transfer
from meshcast.planner.problem import Problem


class PortClock:
    """Ready time of every port; `place` books one transfer after the ones before it. Times are
    seconds, or any numbers that add (integer time units start from `origin=0`)."""

    def __init__(self, num_ports: int, origin: float = 0.0) -> None:
        self.ready_s = [origin] * num_ports

    def start_time(self, ports: Sequence[int], data_ready_s: float = 0.0) -> float:
        ready = self.ready_s
        return max(data_ready_s, max((ready[p] for p in ports), default=0.0))

    def place(
        self, duration_s: float, ports: Sequence[int], data_ready_s: float = 0.0
    ) -> tuple[float, float]:
        start = self.start_time(ports, data_ready_s)
        end = start + duration_s
        for p in ports:
            self.ready_s[p] = end
        return start, end


@dataclass
class Simulation:
    """Outcome of walking a plan: per-transfer times, makespan, and what is wrong with it."""

    times: list[tuple[float, float]]
    makespan_s: float
    wire_bytes: int
    errors: list[str] = field(default_factory=list)
    #: seconds each port (by number, `Topology.port_name`) is held, over the whole plan
    port_busy_s: list[float] = field(default_factory=list)
    #: bytes each transfer sends between hosts
    transfer_wire_bytes: list[int] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.errors


def simulate(
    problem: Problem, transfers: Sequence[Transfer], copied: Collection[int] = ()
) -> Simulation:
    """List-schedule `transfers` in order under port-v1 and check that each piece is held.

    Devices in `copied` are not checked for coverage: they belong to copies of components
    these transfers plan (`planner.replicas`), whose transfers are not among them."""
    topo = problem.topology
    clock = PortClock(topo.num_ports)
    known = problem.src_devices | problem.dst_devices
    holdings = _Holdings(problem, per_device=bool(copied))
    times: list[tuple[float, float]] = []
    errors: list[str] = []
    makespan = 0.0
    wire_bytes = 0
    busy = [0.0] * topo.num_ports
    wires: list[int] = []
    host_of = topo.host_of
    for k, tr in enumerate(transfers):
        problem_here = _transfer_problem(problem, tr, known)
        ready = 0.0
        num_bytes = 0
        if problem_here is None:
            for piece in tr.pieces:
                arrival = holdings.arrival_s(piece.tensor, tr.src, piece.box)
                if arrival is None:
                    problem_here = (
                        f"device {tr.src} does not hold box {list(map(list, piece.box))} of "
                        f"tensor {problem.request.tensors[piece.tensor].name!r} at this point"
                    )
                    break
                if arrival > ready:
                    ready = arrival
                num_bytes += problem.piece_bytes(piece)
        if problem_here is not None:
            errors.append(f"transfer {k}: {problem_here}")
            times.append((math.nan, math.nan))
            wires.append(0)
            continue
        duration, ports = transfer_cost(topo, num_bytes, tr.src, tr.dst)
        start, end = clock.place(duration, ports, ready)
        times.append((start, end))
        for p in ports:
            busy[p] += duration
        if end > makespan:
            makespan = end
        for piece in tr.pieces:
            for d in tr.dst:
                holdings.deliver(piece.tensor, d, piece.box, end)
        src_host = host_of[tr.src]
        remote = {host_of[d] for d in tr.dst}
        wire = num_bytes * (len(remote) - (src_host in remote))
        wire_bytes += wire
        wires.append(wire)
    errors.extend(holdings.coverage_errors(frozenset(copied)))
    return Simulation(times, makespan, wire_bytes, errors, busy, wires)


def _transfer_problem(problem: Problem, tr: Transfer, known: frozenset[int]) -> str | None:
    src, dst = tr.src, tr.dst
    if src not in known:
        return f"src {src} is in neither mesh"
    if not dst:
        return "dst is empty"
    if len(dst) > 1 and len(set(dst)) != len(dst):
        return f"dst {list(dst)} lists a device twice"
    dst_devices = problem.dst_devices
    for d in dst:
        if d == src:
            return f"dst {list(dst)} contains the sender {src}"
        if d not in dst_devices:
            return f"dst device {d} is in no destination mesh"
    if not tr.pieces:
        return "no pieces"
    tensors = problem.request.tensors
    for piece in tr.pieces:
        if not 0 <= piece.tensor < len(tensors):
            return f"no tensor {piece.tensor} (request has {len(tensors)})"
        shape = tensors[piece.tensor].shape
        if len(piece.box) != len(shape) or not _inside(piece.box, shape):
            return f"box {list(map(list, piece.box))} is empty or outside shape {list(shape)}"
    return None


def _inside(box: Box, shape: Sequence[int]) -> bool:
    """Whether every interval of `box` is non-empty and inside its dim of `shape`."""
    for (lo, hi), n in zip(box, shape, strict=True):  # noqa: SIM110 (a loop is faster)
        if not 0 <= lo < hi <= n:
            return False
    return True


class _Holdings:
    """What every device holds of every tensor, and since when: its source shard from the
    start, and every box delivered to it."""

    def __init__(self, problem: Problem, per_device: bool = False) -> None:
        self.problem = problem
        self.held: dict[tuple[int, int], TimedBoxes] = {}
        #: look up each device's source boxes alone (a template among copies touches few
        #: devices), not every device's of a tensor at once
        self.per_device = per_device
        self._own_boxes: dict[tuple[int, int], tuple[Box, ...]] = {}
        self._src_boxes: dict[int, dict[int, tuple[Box, ...]]] = {}

    def _own(self, tensor: int, device: int) -> tuple[Box, ...]:
        if not self.per_device:
            every = self._src_boxes.get(tensor)
            if every is None:
                every = self._src_boxes[tensor] = self.problem.src_boxes(tensor)
            return every.get(device, ())
        key = (tensor, device)
        boxes = self._own_boxes.get(key)
        if boxes is None:
            boxes = self._own_boxes[key] = self.problem.boxes_of(tensor, "src", device)
        return boxes

    def _timed(self, tensor: int, device: int) -> TimedBoxes:
        """The boxes `device` holds of `tensor` with their arrival times, its own at 0."""
        key = (tensor, device)
        boxes = self.held.get(key)
        if boxes is None:
            boxes = self.held[key] = TimedBoxes()
            for own in self._own(tensor, device):
                boxes.add(own, 0.0)
        return boxes

    def arrival_s(self, tensor: int, device: int, box: Box) -> float | None:
        """When `device` holds all of `box` of `tensor`; None if it never does (so far)."""
        own = self._own(tensor, device)
        if any(contains(o, box) for o in own):
            return 0.0
        if (tensor, device) not in self.held and len(own) < 2:
            return None
        return self._timed(tensor, device).time_to_cover(box)

    def deliver(self, tensor: int, device: int, box: Box, time_s: float) -> None:
        self._timed(tensor, device).add(box, time_s)

    def coverage_errors(self, skipped: frozenset[int] = frozenset()) -> list[str]:
        """One error per destination device (but those `skipped`) that misses part of its
        destination shard."""
        problem, errors = self.problem, []
        for ti, spec in enumerate(problem.request.tensors):
            devices = [d for d in problem.mesh_devices(ti, "dst") if d not in skipped]
            dst, src = problem.boxes_for(ti, "dst", devices), problem.boxes_for(ti, "src", devices)
            for d in devices:
                targets = dst[d]
                boxes = self.held.get((ti, d))
                cover = boxes.boxes if boxes is not None else src[d]
                for target in targets:
                    if boxes.covers(target) if boxes is not None else covers(target, cover):
                        continue
                    missing, cell = uncovered_volume(target, cover)
                    errors.append(
                        f"tensor {spec.name!r}: device {d} misses {missing} elements, "
                        f"e.g. {list(map(list, cell or ()))}"
                    )
        return errors


def check_plan(problem: Problem, plan: Plan, rel_tol: float = 1e-6) -> Simulation:
    """`simulate` plus agreement of the plan's reported times with port-v1."""
    sim = simulate(problem, plan.transfers)
    mismatched = 0
    for k, (tr, (_, end)) in enumerate(zip(plan.transfers, sim.times, strict=True)):
        if not math.isnan(end) and not math.isclose(tr.end_s, end, rel_tol=rel_tol, abs_tol=1e-9):
            mismatched += 1
            if mismatched <= 3:
                sim.errors.append(
                    f"transfer {k}: plan says end_s={tr.end_s}, port-v1 gives {end:.9g}"
                )
    if not math.isclose(plan.makespan_s, sim.makespan_s, rel_tol=rel_tol, abs_tol=1e-9):
        sim.errors.append(
            f"plan says makespan_s={plan.makespan_s}, port-v1 gives {sim.makespan_s:.9g}"
        )
    return sim
