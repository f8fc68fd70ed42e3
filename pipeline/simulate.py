"""Discrete-event simulation of a pipeline schedule with real transfer times.

Each stage runs its ops in order on one compute stream. Between stages `i` and `i + 1` there are
two channels, one per direction: activations go forward, gradients backward; a channel carries
one transfer at a time, in the order the sending stage issued them. A forward starts when the
stage is free and its activation has arrived; a backward when its gradient has (the last stage's
backward needs only its own forward). Sending never blocks compute.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from meshcast.pipeline.schedules import Op, ScheduleError, peak_inflight


@dataclass(frozen=True)
class Timing:
    """Per-stage compute times and per-boundary transfer times, in seconds."""

    forward_s: Sequence[float]
    backward_s: Sequence[float]
    #: boundary i (stage i -> i + 1): activation and gradient transfer times
    activation_s: Sequence[float]
    gradient_s: Sequence[float]

    @classmethod
    def uniform(cls, num_stages: int, forward_s: float, backward_s: float, comm_s: float) -> Timing:
        return cls(
            [forward_s] * num_stages,
            [backward_s] * num_stages,
            [comm_s] * (num_stages - 1),
            [comm_s] * (num_stages - 1),
        )


@dataclass(frozen=True)
class Interval:
    """Something that took time: an op on a stage, or a transfer on a channel."""

    lane: str
    name: str
    start_s: float
    end_s: float


@dataclass
class PipelineResult:
    """What one iteration of the schedule looks like."""

    iteration_s: float
    bubble_fraction: float
    peak_inflight: list[int]
    intervals: list[Interval] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        return {
            "iteration_s": self.iteration_s,
            "bubble_fraction": self.bubble_fraction,
            "peak_inflight": self.peak_inflight,
        }


def _check_timing(timing: Timing, num_stages: int) -> None:
    for name, values, count in (
        ("forward_s", timing.forward_s, num_stages),
        ("backward_s", timing.backward_s, num_stages),
        ("activation_s", timing.activation_s, num_stages - 1),
        ("gradient_s", timing.gradient_s, num_stages - 1),
    ):
        if len(values) != count:
            raise ScheduleError(f"{name}: expected {count} values, got {len(values)}")
        if any(not 0 <= v < float("inf") for v in values):
            raise ScheduleError(
                f"{name}: times must be finite and not negative, got {list(values)}"
            )


def simulate(ops: list[list[Op]], timing: Timing) -> PipelineResult:
    """Run the schedule `ops` (one op list per stage) with `timing`."""
    num_stages = len(ops)
    _check_timing(timing, num_stages)
    stage_free = [0.0] * num_stages
    forward_channel_free = [0.0] * max(0, num_stages - 1)
    backward_channel_free = [0.0] * max(0, num_stages - 1)
    #: (stage, kind, micro-batch) -> when its input is at that stage
    arrival: dict[tuple[int, str, int], float] = {}
    done: dict[tuple[int, str, int], float] = {}
    position = [0] * num_stages
    intervals: list[Interval] = []
    remaining = sum(len(s) for s in ops)
    while remaining:
        progressed = False
        for stage in range(num_stages):
            while position[stage] < len(ops[stage]):
                op = ops[stage][position[stage]]
                if op.kind == "F":
                    ready = 0.0 if stage == 0 else arrival.get((stage, "F", op.microbatch))
                elif stage == num_stages - 1:
                    ready = done.get((stage, "F", op.microbatch))
                else:
                    ready = arrival.get((stage, "B", op.microbatch))
                if ready is None:
                    break
                start = max(stage_free[stage], ready)
                duration = (timing.forward_s if op.kind == "F" else timing.backward_s)[stage]
                end = start + duration
                stage_free[stage] = end
                done[(stage, op.kind, op.microbatch)] = end
                intervals.append(Interval(f"stage {stage}", str(op), start, end))
                _send(
                    stage,
                    op,
                    end,
                    timing,
                    num_stages,
                    forward_channel_free,
                    backward_channel_free,
                    arrival,
                    intervals,
                )
                position[stage] += 1
                remaining -= 1
                progressed = True
        if not progressed:
            stuck = [
                f"stage {s}: {ops[s][position[s]]}"
                for s in range(num_stages)
                if position[s] < len(ops[s])
            ]
            raise ScheduleError(f"the schedule deadlocks: waiting forever at {', '.join(stuck)}")
    iteration = max((i.end_s for i in intervals), default=0.0)
    busy = sum(i.end_s - i.start_s for i in intervals if i.lane.startswith("stage"))
    bubble = 1 - busy / (num_stages * iteration) if iteration > 0 else 0.0
    return PipelineResult(iteration, bubble, [peak_inflight(s) for s in ops], intervals)


def _send(
    stage: int,
    op: Op,
    end: float,
    timing: Timing,
    num_stages: int,
    forward_channel_free: list[float],
    backward_channel_free: list[float],
    arrival: dict[tuple[int, str, int], float],
    intervals: list[Interval],
) -> None:
    """Put the op's output on the channel to the next stage (F) or the previous one (B)."""
    if op.kind == "F" and stage < num_stages - 1:
        start = max(end, forward_channel_free[stage])
        finish = start + timing.activation_s[stage]
        forward_channel_free[stage] = finish
        arrival[(stage + 1, "F", op.microbatch)] = finish
        intervals.append(Interval(f"send {stage}->{stage + 1}", f"A{op.microbatch}", start, finish))
    elif op.kind == "B" and stage > 0:
        start = max(end, backward_channel_free[stage - 1])
        finish = start + timing.gradient_s[stage - 1]
        backward_channel_free[stage - 1] = finish
        arrival[(stage - 1, "B", op.microbatch)] = finish
        intervals.append(Interval(f"send {stage}->{stage - 1}", f"G{op.microbatch}", start, finish))
