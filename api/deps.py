"""FastAPI dependencies: the app's settings and plan cache."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.cache import PlanCache
from api.settings import Settings


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_cache(request: Request) -> PlanCache:
    cache: PlanCache = request.app.state.cache
    return cache


SettingsDep = Annotated[Settings, Depends(get_settings)]
CacheDep = Annotated[PlanCache, Depends(get_cache)]
