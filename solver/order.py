"""Ordering moves: list schedules under port-v1 with `planner.simulate.PortClock`."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from meshcast.planner.simulate import PortClock
from meshcast.solver.moves import Move


@dataclass(frozen=True)
class Schedule:
    """An execution order of moves and the port-v1 times it gives."""

    order: tuple[int, ...]
    times: tuple[tuple[float, float], ...]  # indexed by move, not by position
    makespan_s: float


def in_order(moves: Sequence[Move], num_ports: int, order: Sequence[int] | None = None) -> Schedule:
    """List-schedule `moves` in `order` (default: as listed); deps must come first."""
    clock = PortClock(num_ports)
    order = tuple(range(len(moves))) if order is None else tuple(order)
    times: list[tuple[float, float]] = [(0.0, 0.0)] * len(moves)
    makespan = 0.0
    for i in order:
        m = moves[i]
        ready = max((times[d][1] for d in m.deps), default=0.0)
        times[i] = clock.place(m.duration_s, m.ports, ready)
        makespan = max(makespan, times[i][1])
    return Schedule(order, tuple(times), makespan)


def port_loads(moves: Sequence[Move], num_ports: int) -> np.ndarray:
    """Seconds each port is held, summed over all moves."""
    load = np.zeros(num_ports)
    for m in moves:
        for p in m.ports:
            load[p] += m.duration_s
    return load


def critical_priority(moves: Sequence[Move], num_ports: int) -> list[tuple[float, float]]:
    """Priority of each move: load of its busiest port, then its own duration (larger first)."""
    load = port_loads(moves, num_ports)
    return [(max((load[p] for p in m.ports), default=0.0), m.duration_s) for m in moves]


def earliest_start(
    moves: Sequence[Move],
    num_ports: int,
    priority: Sequence[tuple[float, ...]] | None = None,
) -> Schedule:
    """Non-delay list schedule: repeatedly book the move that can start first (its ports free
    and its data arrived), ties going to the higher priority.

    Without a static `priority` the rule is most-work-remaining: the seconds still to be booked
    on the move's ports, then the move's own duration. Start times of all waiting moves are
    recomputed with numpy at every step (quadratic, but a few vector operations per move).
    """
    n = len(moves)
    if n == 0:
        return Schedule((), (), 0.0)
    width = max(len(m.ports) for m in moves)
    ports = np.full((n, max(1, width)), num_ports, dtype=np.int64)  # num_ports: an idle dummy
    for i, m in enumerate(moves):
        ports[i, : len(m.ports)] = m.ports
    duration = np.array([m.duration_s for m in moves])
    port_sets = [frozenset(m.ports) for m in moves]
    ready = np.zeros(num_ports + 1)
    remaining = np.zeros(num_ports + 1)
    np.add.at(remaining, ports, np.where(ports < num_ports, duration[:, None], 0.0))
    static = None if priority is None else np.array(priority, dtype=float).reshape(n, -1)
    waiting = np.array([len(m.deps) for m in moves])
    users: list[list[int]] = [[] for _ in moves]
    for i, m in enumerate(moves):
        for d in m.deps:
            users[d].append(i)
    data_ready = np.zeros(n)
    start = np.zeros(n)
    end = np.zeros(n)
    alive = waiting == 0
    order: list[int] = []
    while len(order) < n:
        idx = np.flatnonzero(alive)
        if len(idx) == 0:
            break
        est = np.maximum(ready[ports[idx]].max(axis=1), data_ready[idx])
        first = est.min()
        tied = np.flatnonzero(est <= first + 1e-12 * max(1.0, first))
        if len(tied) > 1:
            if static is None:
                work = remaining[ports[idx[tied]]].sum(axis=1)
                score = np.stack([work, duration[idx[tied]]], axis=1)
            else:
                score = static[idx[tied]]
            keys = [-score[:, c] for c in range(score.shape[1] - 1, -1, -1)]
            tied = tied[np.lexsort((tied, *keys))]
        # Book the tied moves in priority order while their ports stay free: booking one only
        # delays moves that share its ports, so this is the same as one pick per step.
        taken: set[int] = set()
        for i in idx[tied].tolist():
            held = port_sets[i]
            if not taken.isdisjoint(held):
                continue
            taken.update(held)
            alive[i] = False
            start[i], end[i] = first, first + duration[i]
            ready[list(held)] = end[i]
            remaining[list(held)] -= duration[i]
            order.append(i)
            for u in users[i]:
                data_ready[u] = max(data_ready[u], end[i])
                waiting[u] -= 1
                if waiting[u] == 0:
                    alive[u] = True
    assert len(order) == n, "moves with cyclic dependencies"
    times = tuple(zip(start.tolist(), end.tolist(), strict=True))
    return Schedule(tuple(order), times, float(end.max()))


#: above this many moves only the most-work-remaining rule is tried
MANY_MOVES = 1500


def best_schedule(moves: Sequence[Move], num_ports: int) -> Schedule:
    """The shorter of a few list-scheduling rules (each is cheap; their winners differ)."""
    best = in_order(moves, num_ports)
    rules: list[Sequence[tuple[float, ...]] | None] = [None]
    if len(moves) <= MANY_MOVES:
        rules += [critical_priority(moves, num_ports), [(m.duration_s,) for m in moves]]
    for rule in rules:
        candidate = earliest_start(moves, num_ports, rule)
        if candidate.makespan_s < best.makespan_s:
            best = candidate
    return best


def randomized_search(
    moves: Sequence[Move], num_ports: int, incumbent: Schedule, deadline: float, seed: int
) -> Schedule:
    """Local search on the execution order until `deadline` (a `time.perf_counter` value):
    swap two random transfers, keep the swap when the makespan does not grow (so the search
    drifts across plateaus; a swap that puts a relay before its source is skipped). The best
    order seen is returned."""
    rng = np.random.default_rng(seed)
    n = len(moves)
    best = current = incumbent
    has_deps = any(m.deps for m in moves)
    while n > 1 and time.perf_counter() < deadline:
        order = list(current.order)
        a, b = (int(x) for x in rng.integers(n, size=2))
        order[a], order[b] = order[b], order[a]
        if has_deps and not _deps_first(moves, order):
            continue
        candidate = in_order(moves, num_ports, order)
        if candidate.makespan_s <= current.makespan_s:
            current = candidate
            if candidate.makespan_s < best.makespan_s:
                best = candidate
    return best


def is_valid_order(moves: Sequence[Move], order: Sequence[int]) -> bool:
    """`order` is a permutation of the moves with every relay after its source move."""
    return sorted(order) == list(range(len(moves))) and _deps_first(moves, order)


def _deps_first(moves: Sequence[Move], order: Sequence[int]) -> bool:
    position = {i: k for k, i in enumerate(order)}
    return all(position[d] < position[i] for i, m in enumerate(moves) for d in m.deps)
