"""The meshcast planning service: `create_app(settings)`; run it with `meshcast serve`.

Resources live in the lifespan: the plan cache, the metrics and the planner with its solver
processes. Every error a client can cause is a 4xx with `{"detail": ...}` naming the field; an
unexpected failure is a 500 with a short JSON detail and a log line, never a bare traceback.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse

from meshcast.api.cache import open_cache
from meshcast.api.metrics import Metrics
from meshcast.api.middleware import BodyLimit, Instrumentation
from meshcast.api.planning import Planner
from meshcast.api.routes import health, plans, schedules
from meshcast.api.schemas import add_body_models
from meshcast.api.settings import Settings

log = logging.getLogger("meshcast.service")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        cache = open_cache(settings.cache_url)
        planner = Planner(
            cache,
            metrics,
            settings.solver_processes,
            settings.max_pending_solves,
            settings.compare_processes,
            settings.max_pending_compares,
        )
        if settings.warm_up:
            planner.warm_up()
        app.state.settings, app.state.cache, app.state.planner = settings, cache, planner
        log.info("meshcast service ready, cache %s (%d plans)", cache.url, len(cache))
        try:
            yield
        finally:
            planner.close()
            cache.close()

    app = FastAPI(
        title="meshcast",
        summary="Plans for cross-mesh resharding: which replica sends each tile, over which "
        "rail, in what order.",
        lifespan=lifespan,
    )
    app.state.metrics = metrics

    @app.exception_handler(RequestValidationError)
    async def unreadable_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": ("body",), "msg": "invalid body"}
        field = ".".join(str(p) for p in first["loc"])
        return JSONResponse(
            status_code=422, content={"detail": {"field": field, "message": first["msg"]}}
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse(
            status_code=500,
            content={"detail": {"field": "", "message": f"internal error ({type(exc).__name__})"}},
        )

    app.include_router(health.router)
    app.include_router(plans.router)
    app.include_router(schedules.router)

    def openapi() -> dict[str, Any]:
        """FastAPI's schema plus the request and check bodies the routes parse themselves."""
        if app.openapi_schema is None:
            app.openapi_schema = add_body_models(
                get_openapi(
                    title=app.title, version=app.version, summary=app.summary, routes=app.routes
                )
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(Instrumentation, metrics=metrics)
    return app
