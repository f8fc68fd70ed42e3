"""Plan requests from training launchers, served from the cache when already planned."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException

from api.deps import CacheDep, SettingsDep
from planner import PlanFormatError, RequestError, build_problem, parse_request
from planner.plan import Plan
from planner.simulate import check_plan
from solver import SolveOptions, make_plan, resolve

router = APIRouter(prefix="/v1", tags=["plans"])
#: any JSON: requests are validated by `planner.parse_request`, whose messages name the field
JsonBody = Annotated[Any, Body()]


def _unprocessable(field: str, message: str) -> HTTPException:
    return HTTPException(status_code=422, detail={"field": field, "message": message})


@router.post("/plans")
def create_plan(settings: SettingsDep, cache: CacheDep, body: JsonBody) -> dict[str, Any]:
    """Plan a `meshcast.request/v1` (or return the cached plan of the same canonical request)."""
    try:
        request = parse_request(body)
        resolve(request.options.algorithm)
    except RequestError as err:
        raise _unprocessable(err.field, err.message) from None
    if request.options.time_limit_s > settings.max_time_limit_s:
        raise _unprocessable(
            "options.time_limit_s",
            f"{request.options.time_limit_s} s is over this service's limit of "
            f"{settings.max_time_limit_s} s",
        )
    cached = cache.get(request.request_id)
    if cached is not None:
        return {"cached": True, "plan": cached}
    options = SolveOptions(time_limit_s=request.options.time_limit_s, seed=request.options.seed)
    plan = make_plan(build_problem(request), request.options.algorithm, options).to_json()
    cache.put(request.request_id, plan)
    return {"cached": False, "plan": plan}


@router.get("/plans/{request_id}")
def get_plan(request_id: str, cache: CacheDep) -> dict[str, Any]:
    plan = cache.get(request_id)
    if plan is None:
        raise HTTPException(
            status_code=404,
            detail={"field": "request_id", "message": f"no plan for {request_id!r}"},
        )
    return {"cached": True, "plan": plan}


@router.post("/check")
def check(body: JsonBody) -> dict[str, Any]:
    """Validate `{"request": ..., "plan": ...}` and recompute the plan's port-v1 times."""
    if not isinstance(body, dict) or "request" not in body or "plan" not in body:
        raise _unprocessable("body", "expected an object with 'request' and 'plan'")
    try:
        problem = build_problem(parse_request(body["request"]))
        plan = Plan.from_json(body["plan"])
    except RequestError as err:
        raise _unprocessable(f"request.{err.field}", err.message) from None
    except PlanFormatError as err:
        raise _unprocessable(f"plan.{err.field}", err.message) from None
    sim = check_plan(problem, plan)
    return {
        "valid": sim.valid,
        "errors": sim.errors[:20],
        "makespan_s": sim.makespan_s,
        "lower_bound_s": problem.lower_bound_s,
        "wire_bytes": sim.wire_bytes,
    }
