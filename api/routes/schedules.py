"""Pipeline schedules priced with the plans of their stage boundaries."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from pydantic import ValidationError

from meshcast.api.cache.base import decoded
from meshcast.api.deps import PlannerDep, SettingsDep
from meshcast.api.planning import Overloaded, SolverCrashed
from meshcast.api.routes.plans import (
    ERRORS,
    RawBody,
    accepted_request,
    json_value,
    unavailable,
    unprocessable,
)
from meshcast.api.schemas import ScheduleAnswer, ScheduleBody, request_body
from meshcast.pipeline.boundaries import boundary_timing, reversed_request
from meshcast.pipeline.schedules import SCHEDULES, ScheduleError, check_size, generate
from meshcast.pipeline.simulate import Timing, simulate
from meshcast.planner.plan import Plan

router = APIRouter(prefix="/v1", tags=["schedules"])


class ScheduleQuery(ScheduleBody):
    """`ScheduleBody` with the boundary requests left for `parse_request` to check (its errors
    name the field and the value)."""

    boundaries: list[Any] | None = None


def _per_stage(name: str, value: float | list[float], stages: int) -> list[float]:
    values = value if isinstance(value, list) else [value] * stages
    if len(values) != stages:
        raise unprocessable(name, f"expected {stages} values (one per stage), got {len(values)}")
    if any(not 0 <= v <= 1e9 for v in values):
        raise unprocessable(name, "times must be between 0 and 1e9 ms")
    return [v / 1e3 for v in values]


@router.post(
    "/schedules",
    openapi_extra=request_body(ScheduleBody),
    response_model=ScheduleAnswer,
    responses=ERRORS,
)
async def schedules(settings: SettingsDep, planner: PlannerDep, body: RawBody) -> dict[str, Any]:
    """Simulate GPipe, 1F1B and eager-1F1B; boundary transfers take their plans' makespans."""
    value = await asyncio.to_thread(json_value, body)
    try:
        query = ScheduleQuery.model_validate(value)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "body"
        raise unprocessable(field, first["msg"]) from None
    try:
        check_size(query.stages, query.microbatches)  # each is in range: their product is not
    except ScheduleError as err:
        raise unprocessable("microbatches", str(err)) from None
    names = list(SCHEDULES) if query.schedule is None else [query.schedule]
    if query.schedule is not None and query.schedule not in SCHEDULES:
        raise unprocessable("schedule", f"expected one of {', '.join(SCHEDULES)}")
    forward = _per_stage("forward_ms", query.forward_ms, query.stages)
    backward = _per_stage("backward_ms", query.backward_ms, query.stages)
    boundaries: list[dict[str, Any]] = []
    if query.boundaries is not None:
        if len(query.boundaries) != query.stages - 1:
            raise unprocessable(
                "boundaries", f"expected {query.stages - 1} requests, got {len(query.boundaries)}"
            )
        boundaries_json = query.boundaries
        requests = await asyncio.to_thread(
            lambda: [
                accepted_request(raw, settings, field_prefix=f"boundaries[{k}].")
                for k, raw in enumerate(boundaries_json)
            ]
        )
        plans = []
        try:
            for request in requests:
                ahead, _ = await planner.plan(request)
                back, _ = await planner.plan(reversed_request(request))
                pair = await asyncio.to_thread(_plans, ahead, back)
                plans.append(pair)
        except (Overloaded, SolverCrashed) as err:
            raise unavailable(str(err)) from None
        timing, boundaries = boundary_timing(forward, backward, plans)
    else:
        comm = (query.comm_ms or 0.0) / 1e3
        timing = Timing(forward, backward, [comm] * (query.stages - 1), [comm] * (query.stages - 1))

    def simulated() -> dict[str, Any]:
        return {
            name: simulate(generate(name, query.stages, query.microbatches), timing).summary()
            for name in names
        }

    try:
        results = await asyncio.to_thread(simulated)  # seconds for the largest: off the loop
    except ScheduleError as err:
        raise unprocessable("body", str(err)) from None
    return {"boundaries": boundaries, "results": results}


def _plans(ahead: str, back: str) -> tuple[Plan, Plan]:
    """Both directions' plans from their JSON texts."""
    return Plan.from_json(decoded(ahead)), Plan.from_json(decoded(back))
