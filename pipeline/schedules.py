"""Pipeline schedules: the order in which each stage runs its forwards and backwards (DESIGN §6).

Stage `i` of `n` (0-indexed) runs every micro-batch's forward `F(m)` and backward `B(m)`:

- `gpipe`: all forwards, then all backwards.
- `1f1b`: `min(B, n - i)` forwards before its first backward, then one backward and one
  forward in turn, then the remaining backwards. At most `n - i` micro-batches in flight.
- `eager-1f1b`: the same with `min(B, 2(n - i) - 1)` forwards first, so a forward's send to
  the next stage overlaps the stage's next forward; `2(n - i) - 1` micro-batches in flight.
"""

from __future__ import annotations

from dataclasses import dataclass

SCHEDULES = ("gpipe", "1f1b", "eager-1f1b")
#: the largest pipeline simulated: stages x micro-batches (about 1 s per schedule)
MAX_STAGE_MICROBATCHES = 65_536


@dataclass(frozen=True)
class Op:
    """One compute step of a stage: the forward ("F") or backward ("B") of a micro-batch."""

    kind: str
    microbatch: int

    def __str__(self) -> str:
        return f"{self.kind}{self.microbatch}"


class ScheduleError(ValueError):
    """A schedule that cannot run: the message names the stage and the op."""


def warmup_forwards(schedule: str, num_stages: int, stage: int, num_microbatches: int) -> int:
    """Forwards stage `stage` runs before its first backward."""
    if schedule == "gpipe":
        return num_microbatches
    if schedule == "1f1b":
        return min(num_microbatches, num_stages - stage)
    if schedule == "eager-1f1b":
        return min(num_microbatches, 2 * (num_stages - stage) - 1)
    raise ScheduleError(f"schedule: expected one of {', '.join(SCHEDULES)}, got {schedule!r}")


def stage_ops(schedule: str, num_stages: int, stage: int, num_microbatches: int) -> list[Op]:
    """Stage `stage`'s ops in the order it runs them."""
    warmup = warmup_forwards(schedule, num_stages, stage, num_microbatches)
    ops = [Op("F", m) for m in range(warmup)]
    for k in range(num_microbatches - warmup):  # steady state: a backward, then a forward
        ops += [Op("B", k), Op("F", warmup + k)]
    ops += [Op("B", m) for m in range(num_microbatches - warmup, num_microbatches)]
    return ops


def check_size(num_stages: int, num_microbatches: int) -> None:
    """`ScheduleError` naming the field when the pipeline is empty or too large to simulate."""
    if num_stages < 1:
        raise ScheduleError(f"stages: must be at least 1, got {num_stages}")
    if num_microbatches < 1:
        raise ScheduleError(f"microbatches: must be at least 1, got {num_microbatches}")
    if num_stages * num_microbatches > MAX_STAGE_MICROBATCHES:
        raise ScheduleError(
            f"microbatches: {num_stages} stages x {num_microbatches} micro-batches is over "
            f"{MAX_STAGE_MICROBATCHES:,} stage micro-batches"
        )


def generate(schedule: str, num_stages: int, num_microbatches: int) -> list[list[Op]]:
    """Every stage's op list; checked with `validate`."""
    check_size(num_stages, num_microbatches)
    ops = [stage_ops(schedule, num_stages, s, num_microbatches) for s in range(num_stages)]
    validate(ops, num_microbatches)
    return ops


def validate(ops: list[list[Op]], num_microbatches: int) -> None:
    """Each stage runs every forward and backward once, each backward after its forward.
    (Waiting across stages is checked by the simulator, which refuses a deadlock.)"""
    expected = sorted((kind, m) for kind in "FB" for m in range(num_microbatches))
    for stage, stage_list in enumerate(ops):
        seen = sorted((op.kind, op.microbatch) for op in stage_list)
        if seen != expected:
            raise ScheduleError(
                f"stage {stage}: expected F and B of micro-batches 0..{num_microbatches - 1} "
                "once each"
            )
        done: set[int] = set()
        for op in stage_list:
            if op.kind == "F":
                done.add(op.microbatch)
            elif op.microbatch not in done:
                raise ScheduleError(f"stage {stage}: {op} runs before F{op.microbatch}")


def peak_inflight(stage_list: list[Op]) -> int:
    """Most micro-batches whose activations the stage holds at once (forward done, backward
    not yet)."""
    held = peak = 0
    for op in stage_list:
        held += 1 if op.kind == "F" else -1
        peak = max(peak, held)
    return peak
