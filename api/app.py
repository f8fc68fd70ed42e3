"""The meshcast planning service: `create_app(settings)`; run it with `make serve`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from api.cache import PlanCache
from api.routes import health, plans
from api.settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.cache = PlanCache(settings.cache_path)
        try:
            yield
        finally:
            app.state.cache.close()

    app = FastAPI(title="meshcast", summary="Cross-mesh resharding planner", lifespan=lifespan)

    @app.exception_handler(RequestValidationError)
    async def unreadable_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": ("body",), "msg": "invalid body"}
        field = ".".join(str(p) for p in first["loc"])
        return JSONResponse(
            status_code=422, content={"detail": {"field": field, "message": first["msg"]}}
        )

    app.include_router(health.router)
    app.include_router(plans.router)
    return app
