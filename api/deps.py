"""FastAPI dependencies: the app's settings, plan cache, planner and metrics."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from meshcast.api.cache import PlanCache
from meshcast.api.metrics import Metrics
from meshcast.api.planning import Planner
from meshcast.api.settings import Settings


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_cache(request: Request) -> PlanCache:
    cache: PlanCache = request.app.state.cache
    return cache


def get_planner(request: Request) -> Planner:
    planner: Planner = request.app.state.planner
    return planner


def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


SettingsDep = Annotated[Settings, Depends(get_settings)]
CacheDep = Annotated[PlanCache, Depends(get_cache)]
PlannerDep = Annotated[Planner, Depends(get_planner)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
