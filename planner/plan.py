"""`meshcast.plan/v1`: transfers in execution order, with their port-v1 times (DESIGN §2)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, TextIO, cast

from meshcast.planner.bulk import collection_paused
from meshcast.planner.errors import PlanFormatError
from meshcast.planner.mesh import Box

PLAN_FORMAT = "meshcast.plan/v1"


class SolveStatus(str, Enum):
    """What an algorithm knows about its plan."""

    #: no shorter plan exists (over the routes the algorithm models, or under the lower bound)
    OPTIMAL = "optimal"
    #: an optimizing solver's plan, not proven optimal (its bound is in `best_bound_s`)
    FEASIBLE = "feasible"
    #: a heuristic's plan: nothing proven
    HEURISTIC = "heuristic"


def _json_number(value: float) -> str:
    """A float as `json.dumps` writes it."""
    return json.dumps(value) if not math.isfinite(value) else float.__repr__(value)


def transfer_text_format(t: Transfer) -> str:
    """The JSON text of a transfer shaped like `t` (as many receivers, pieces and dims), its
    times `t`'s, as a `%s` format of its integers in `transfer_numbers` order (the times' text
    has no `%`): the plan's one way of writing a transfer."""
    pieces = ",".join(
        '{"tensor":%s,"box":[' + ",".join("[%s,%s]" for _ in p.box) + "]}" for p in t.pieces
    )
    dst = ",".join("%s" for _ in t.dst)
    return (
        f'{{"id":%s,"src":%s,"dst":[{dst}],"pieces":[{pieces}],'
        f'"start_s":{_json_number(t.start_s)},"end_s":{_json_number(t.end_s)}}}'
    )


def transfer_numbers(i: int, t: Transfer) -> list[int]:
    """The integers of transfer `t`'s text with id `i`: the id, src, every dst, and per piece
    its tensor and box bounds."""
    numbers = [i, t.src, *t.dst]
    for p in t.pieces:
        numbers.append(p.tensor)
        for lo, hi in p.box:
            numbers += (lo, hi)
    return numbers


def transfer_text(i: int, t: Transfer) -> str:
    """Transfer `t` with id `i` as compact JSON text (the characters `json.dumps` writes)."""
    return transfer_text_format(t) % tuple(transfer_numbers(i, t))


@dataclass(frozen=True)
class Piece:
    """A box of global indices of tensor number `tensor` in the request."""

    tensor: int
    box: Box


@dataclass(frozen=True)
class Transfer:
    """One message: `pieces` packed in one buffer, from `src` to every device of `dst`.

    `dst` order is the chain order across hosts (and the hop order inside each host).
    """

    src: int
    dst: tuple[int, ...]
    pieces: tuple[Piece, ...]
    start_s: float = 0.0
    end_s: float = 0.0


@dataclass(frozen=True)
class Plan:
    """A complete plan; `transfers` are in the one global execution order all ranks follow
    (a tuple, or for plans of repeated parts their compact form,
    `planner.compact.CompactTransfers`)."""

    request_id: str
    algorithm: str
    transfers: Sequence[Transfer]
    makespan_s: float = 0.0
    lower_bound_s: float = 0.0
    solve_time_s: float = 0.0
    status: SolveStatus = SolveStatus.HEURISTIC
    #: a proven bound on the best makespan, when the algorithm proves one
    best_bound_s: float | None = None
    #: bytes sent between hosts (a chain over k receiving hosts sends its bytes k times)
    wire_bytes: int | None = None
    #: seconds each port (by number) is held: what the planner's simulation found (not part
    #: of the JSON document)
    port_busy_s: tuple[float, ...] = field(default=(), compare=False, repr=False)
    #: of `solve_time_s`, the seconds spent building and checking the plan from the solver's
    #: moves (not part of the JSON document)
    check_s: float = field(default=0.0, compare=False, repr=False)

    @property
    def ratio(self) -> float:
        """Makespan over the lower bound (1.0 is the physical limit)."""
        if self.lower_bound_s > 0:
            return self.makespan_s / self.lower_bound_s
        return 1.0 if self.makespan_s == 0 else math.inf

    @property
    def gap(self) -> float | None:
        """Relative distance between the makespan and the proven bound."""
        if self.best_bound_s is None or self.makespan_s <= 0:
            return None
        return max(0.0, (self.makespan_s - self.best_bound_s) / self.makespan_s)

    def with_times(self, times: list[tuple[float, float]], makespan_s: float) -> Plan:
        transfers = tuple(
            replace(t, start_s=s, end_s=e) for t, (s, e) in zip(self.transfers, times, strict=True)
        )
        return replace(self, transfers=transfers, makespan_s=makespan_s)

    def to_json(self) -> dict[str, Any]:
        """The plan document as a dict (`to_json_text` parsed)."""
        with collection_paused():
            return cast(dict[str, Any], json.loads(self.to_json_text()))

    def to_json_text(self) -> str:
        """The plan document as compact JSON text (the characters `json.dumps` with
        `(",", ":")` separators writes), written without building the transfers' dicts."""
        return "".join(self.json_parts())

    def write_json(self, stream: TextIO) -> None:
        """Write `to_json_text()` to `stream` part by part (never the whole text at once)."""
        for part in self.json_parts():
            stream.write(part)

    def json_parts(self) -> Iterator[str]:
        """`to_json_text()` in parts: the plan's one writer. A compact plan writes its copies
        from arrays (`CompactTransfers.json_texts`)."""
        from meshcast.planner.compact import CompactTransfers  # it builds on this module

        head = json.dumps(self._summary_json(), separators=(",", ":"))
        yield f'{head[:-1]},"transfers":['
        if isinstance(self.transfers, CompactTransfers):
            texts: Iterable[str] = self.transfers.json_texts()
        else:
            texts = (transfer_text(i, t) for i, t in enumerate(self.transfers))
        for n, text in enumerate(texts):
            yield f",{text}" if n else text
        yield "]}"

    def _summary_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format": PLAN_FORMAT,
            "request_id": self.request_id,
            "algorithm": self.algorithm,
            "status": self.status.value,
            "makespan_s": self.makespan_s,
            "lower_bound_s": self.lower_bound_s,
            "solve_time_s": self.solve_time_s,
        }
        if self.best_bound_s is not None:
            out["best_bound_s"] = self.best_bound_s
            out["gap"] = self.gap
        if self.wire_bytes is not None:
            out["wire_bytes"] = self.wire_bytes
        return out

    @classmethod
    def from_json(cls, data: Any) -> Plan:
        """Parse a plan document; `PlanFormatError` names the first malformed field."""
        if not isinstance(data, dict):
            raise PlanFormatError("plan", f"expected a JSON object, got {type(data).__name__}")
        if data.get("format") != PLAN_FORMAT:
            raise PlanFormatError("format", f"expected {PLAN_FORMAT!r}, got {data.get('format')!r}")
        raw = data.get("transfers")
        if not isinstance(raw, list):
            raise PlanFormatError("transfers", f"expected a list, got {type(raw).__name__}")
        with collection_paused():
            transfers = tuple(_parse_transfer(f"transfers[{i}]", t) for i, t in enumerate(raw))
        best = data.get("best_bound_s")
        wire = data.get("wire_bytes")
        return cls(
            request_id=str(data.get("request_id", "")),
            algorithm=str(data.get("algorithm", "")),
            transfers=transfers,
            makespan_s=_number("makespan_s", data.get("makespan_s", 0.0)),
            lower_bound_s=_number("lower_bound_s", data.get("lower_bound_s", 0.0)),
            solve_time_s=_number("solve_time_s", data.get("solve_time_s", 0.0)),
            status=_status(data.get("status", SolveStatus.HEURISTIC.value)),
            best_bound_s=None if best is None else _number("best_bound_s", best),
            wire_bytes=None if wire is None else _integer("wire_bytes", wire),
        )


def _status(value: Any) -> SolveStatus:
    try:
        return SolveStatus(value)
    except ValueError:
        known = ", ".join(s.value for s in SolveStatus)
        raise PlanFormatError("status", f"expected one of {known}, got {value!r}") from None


def _number(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise PlanFormatError(where, f"expected a finite number, got {value!r}")
    return float(value)


def _integer(where: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PlanFormatError(where, f"expected an integer, got {value!r}")
    return value


def _parse_transfer(where: str, raw: Any) -> Transfer:
    if not isinstance(raw, dict):
        raise PlanFormatError(where, f"expected an object, got {type(raw).__name__}")
    dst = raw.get("dst")
    if not isinstance(dst, list):
        raise PlanFormatError(f"{where}.dst", f"expected a list of devices, got {dst!r}")
    pieces = raw.get("pieces")
    if not isinstance(pieces, list):
        raise PlanFormatError(f"{where}.pieces", f"expected a list, got {pieces!r}")
    return Transfer(
        src=_integer(f"{where}.src", raw.get("src")),
        dst=tuple(_integer(f"{where}.dst[{j}]", d) for j, d in enumerate(dst)),
        pieces=tuple(_parse_piece(f"{where}.pieces[{j}]", p) for j, p in enumerate(pieces)),
        start_s=_number(f"{where}.start_s", raw.get("start_s", 0.0)),
        end_s=_number(f"{where}.end_s", raw.get("end_s", 0.0)),
    )


def _parse_piece(where: str, raw: Any) -> Piece:
    if not isinstance(raw, dict):
        raise PlanFormatError(where, f"expected an object, got {type(raw).__name__}")
    box = raw.get("box")
    if not isinstance(box, list) or not all(isinstance(iv, list) and len(iv) == 2 for iv in box):
        raise PlanFormatError(f"{where}.box", f"expected [[lo, hi], ...], got {box!r}")
    return Piece(
        tensor=_integer(f"{where}.tensor", raw.get("tensor")),
        box=tuple(
            (_integer(f"{where}.box[{k}]", lo), _integer(f"{where}.box[{k}]", hi))
            for k, (lo, hi) in enumerate(box)
        ),
    )
