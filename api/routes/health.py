"""Liveness, metrics and what the service offers."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from meshcast.api.deps import CacheDep, MetricsDep, PlannerDep
from meshcast.solver import ALGORITHMS

router = APIRouter(tags=["service"])


@router.get("/healthz")
def healthz(cache: CacheDep, planner: PlannerDep) -> dict[str, Any]:
    """Liveness: the cache answers; how many plans it holds, how many plan solves and
    comparisons run."""
    return {
        "status": "ok",
        "cache": cache.url,
        "cached_plans": len(cache),
        "cache_set_aside": str(getattr(cache, "set_aside", None) or "") or None,
        "solving": planner.num_inflight,
        "comparing": planner.num_comparing,
    }


@router.get("/metrics", response_class=Response)
def metrics(metrics: MetricsDep) -> Response:
    """Prometheus text format."""
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/algorithms")
def algorithms() -> dict[str, str]:
    return {name: description for name, (_, description) in ALGORITHMS.items()}
