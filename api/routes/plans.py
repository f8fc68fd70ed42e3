"""Plan requests from training launchers, served from the cache when already planned."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import HTMLResponse, Response
from starlette.requests import Request as StarletteRequest

from meshcast.api.deps import CacheDep, PlannerDep, SettingsDep
from meshcast.api.planning import Overloaded, SolverCrashed
from meshcast.api.schemas import (
    CheckBody,
    CompareAnswer,
    ErrorBody,
    PlanBody,
    RequestBody,
    SummaryBody,
    request_body,
)
from meshcast.api.settings import Settings
from meshcast.api.viewer import index_page, plan_page
from meshcast.planner import PlanFormatError, RequestError, build_problem, parse_request
from meshcast.planner.bulk import collection_paused
from meshcast.planner.plan import Plan
from meshcast.planner.request import Request
from meshcast.planner.summary import summarize
from meshcast.planner.work import check_work
from meshcast.solver import resolve

router = APIRouter(prefix="/v1", tags=["plans"])


async def _raw_body(request: StarletteRequest) -> bytes:
    return await request.body()


#: the body as sent: decoded off the event loop by the routes (`json_value`), then validated by
#: `planner.parse_request`, whose messages name the field (the schema is `request_body`'s)
RawBody = Annotated[bytes, Depends(_raw_body)]
_REQUEST_ID = re.compile(r"[0-9a-f]{64}")
#: most plans the listing page shows (the newest)
VIEW_LIST_MAX = 500


def unprocessable(field: str, message: str) -> HTTPException:
    return HTTPException(status_code=422, detail={"field": field, "message": message})


def unavailable(message: str) -> HTTPException:
    return HTTPException(
        status_code=503, detail={"field": "", "message": message}, headers={"Retry-After": "1"}
    )


def json_value(body: bytes) -> Any:
    """The body decoded as JSON, whatever its content type (`curl -d @request.json` sends
    none), with the cyclic collector paused (a request of 10^5 tensors: 0.5 s instead of 1.4)."""
    try:
        with collection_paused():
            return json.loads(body)
    except ValueError as err:
        raise unprocessable("body", f"expected a JSON document: {err}") from None


def accepted_request(body: Any, settings: Settings, field_prefix: str = "") -> Request:
    """Parse and check a request (a decoded JSON value) against the schema and this service's
    limits."""
    try:
        return _within_limits(parse_request(body), settings)
    except RequestError as err:
        raise unprocessable(field_prefix + err.field, err.message) from None


async def accepted_off_loop(body: bytes, settings: Settings) -> Request:
    """The body decoded and `accepted_request` on a worker thread, its id computed there too:
    a request of tens of thousands of tensors takes seconds to decode and check, and the event
    loop keeps serving."""

    def accept() -> Request:
        request = accepted_request(json_value(body), settings)
        _ = request.request_id
        return request

    return await asyncio.to_thread(accept)


def _within_limits(request: Request, settings: Settings) -> Request:
    resolve(request.options.algorithm)
    if len(request.tensors) > settings.max_tensors:
        raise RequestError(
            "tensors",
            f"{len(request.tensors)} tensors is over this service's limit of "
            f"{settings.max_tensors}",
        )
    num_devices = sum(len(h) for h in request.cluster.hosts)
    if num_devices > settings.max_devices:
        raise RequestError(
            "cluster.hosts",
            f"{num_devices} devices is over this service's limit of {settings.max_devices}",
        )
    if request.options.time_limit_s > settings.max_time_limit_s:
        raise RequestError(
            "options.time_limit_s",
            f"{request.options.time_limit_s} s is over this service's limit of "
            f"{settings.max_time_limit_s} s",
        )
    check_work(request, settings.max_tiles, settings.max_solve_bytes)
    return request


def _plan_response(plan: str, request_id: str, hit: bool) -> Response:
    """The plan itself (request in, plan out: its JSON text as cached); hit or miss and the
    request id in headers."""
    return Response(
        plan,
        media_type="application/json",
        headers={"X-Cache": "hit" if hit else "miss", "X-Request-Id": request_id},
    )


ERRORS: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorBody, "description": "the request names the field and what is wrong"},
    503: {"model": ErrorBody, "description": "overloaded or a solver process died: retry"},
}


@router.post(
    "/plans",
    openapi_extra=request_body(RequestBody),
    responses={200: {"model": PlanBody, "description": "the plan"}, **ERRORS},
)
async def create_plan(settings: SettingsDep, planner: PlannerDep, body: RawBody) -> Response:
    """Plan a `meshcast.request/v1`, or return the cached plan of the same canonical request:
    the answer is the `meshcast.plan/v1` itself. Header `X-Cache: hit` when nothing was solved
    for this call, `X-Request-Id` the canonical request's sha256."""
    request = await accepted_off_loop(body, settings)
    try:
        plan, hit = await planner.plan(request)
    except (Overloaded, SolverCrashed) as err:
        raise unavailable(str(err)) from None
    return _plan_response(plan, request.request_id, hit)


@router.get("/plans/view", response_class=HTMLResponse)
async def plans_page(cache: CacheDep) -> HTMLResponse:
    """A page listing the cached plans (newest last), each linking to its view."""
    entries = await asyncio.to_thread(lambda: [(e.request_id, e.plan) for e in cache.entries()])
    return HTMLResponse(index_page(entries[-VIEW_LIST_MAX:]))


@router.get(
    "/plans/{request_id}/view",
    response_class=HTMLResponse,
    responses={404: {"model": ErrorBody}, 422: {"model": ErrorBody}},
)
async def plan_view(request_id: str, cache: CacheDep) -> HTMLResponse:
    """A cached plan as one self-contained HTML page (`api.viewer`)."""
    if not _REQUEST_ID.fullmatch(request_id):
        raise unprocessable("request_id", f"expected 64 lowercase hex digits, got {request_id!r}")
    entry = await asyncio.to_thread(cache.entry, request_id)
    if entry is None or entry.request is None:
        raise HTTPException(
            status_code=404,
            detail={
                "field": "request_id",
                "message": f"no plan with its request for {request_id!r}",
            },
        )

    def render() -> str:
        problem = build_problem(parse_request(entry.request))
        return plan_page(problem, Plan.from_json(entry.plan))

    return HTMLResponse(await asyncio.to_thread(render))


@router.get(
    "/plans/{request_id}",
    responses={
        200: {"model": PlanBody, "description": "the cached plan"},
        404: {"model": ErrorBody, "description": "no plan for that id"},
        422: {"model": ErrorBody, "description": "not a request id"},
    },
)
async def get_plan(request_id: str, cache: CacheDep) -> Response:
    """A cached plan by the sha256 of its canonical request."""
    if not _REQUEST_ID.fullmatch(request_id):
        raise unprocessable("request_id", f"expected 64 lowercase hex digits, got {request_id!r}")
    plan = await asyncio.to_thread(cache.get, request_id)
    if plan is None:
        raise HTTPException(
            status_code=404,
            detail={"field": "request_id", "message": f"no plan for {request_id!r}"},
        )
    return _plan_response(plan, request_id, True)


@router.post(
    "/compare",
    openapi_extra=request_body(RequestBody),
    response_model=CompareAnswer,
    responses=ERRORS,
)
async def compare(settings: SettingsDep, planner: PlannerDep, body: RawBody) -> dict[str, Any]:
    """Every algorithm on one request, side by side (not cached)."""
    request = await accepted_off_loop(body, settings)
    try:
        rows = await planner.compare(request)
    except (Overloaded, SolverCrashed) as err:
        raise unavailable(str(err)) from None
    return {"request_id": request.request_id, "algorithms": rows}


@router.post(
    "/check", openapi_extra=request_body(CheckBody), response_model=SummaryBody, responses=ERRORS
)
async def check(settings: SettingsDep, body: RawBody) -> dict[str, Any]:
    """Validate `{"request": ..., "plan": ...}` and recompute the plan's port-v1 times."""

    def checked() -> dict[str, Any]:  # large plans take a while: off the loop
        value = json_value(body)
        if not isinstance(value, dict) or "request" not in value or "plan" not in value:
            raise unprocessable("body", "expected an object with 'request' and 'plan'")
        request = accepted_request(value["request"], settings, field_prefix="request.")
        try:
            plan = Plan.from_json(value["plan"])
        except PlanFormatError as err:
            raise unprocessable(f"plan.{err.field}", err.message) from None
        try:
            return summarize(build_problem(request), plan)
        except RequestError as err:
            raise unprocessable(f"request.{err.field}", err.message) from None

    return await asyncio.to_thread(checked)
