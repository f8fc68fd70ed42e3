"""Liveness and what the service offers."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.deps import CacheDep
from solver import ALGORITHMS

router = APIRouter(tags=["service"])


@router.get("/health")
def health(cache: CacheDep) -> dict[str, Any]:
    return {"status": "ok", "cached_plans": len(cache)}


@router.get("/v1/algorithms")
def algorithms() -> dict[str, str]:
    return {name: description for name, (_, description) in ALGORITHMS.items()}
