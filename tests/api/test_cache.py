"""Both plan caches behave alike: plans with their requests, and claims for single flight."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.cache import PlanCache, open_cache

PLAN = {
    "format": "meshcast.plan/v1",
    "request_id": "a" * 64,
    "algorithm": "greedy",
    "transfers": [],
}


@pytest.fixture(params=["sqlite", "redis"])
def cache(request: pytest.FixtureRequest, tmp_path: Path) -> PlanCache:
    url = (
        str(tmp_path / "c.sqlite3")
        if request.param == "sqlite"
        else request.getfixturevalue("redis_url")
    )
    opened = open_cache(url)
    request.addfinalizer(opened.close)
    return opened


def test_plans_round_trip_with_their_requests(cache: PlanCache) -> None:
    assert cache.get("a" * 64) is None and len(cache) == 0
    cache.put("a" * 64, PLAN, {"tensors": []})
    cache.put("b" * 64, {**PLAN, "request_id": "b" * 64}, None)
    assert cache.get("a" * 64) == PLAN and len(cache) == 2
    entries = {e.request_id: e for e in cache.entries()}
    assert entries["a" * 64].request == {"tensors": []} and entries["b" * 64].request is None


def test_one_claim_at_a_time_until_released_or_expired(cache: PlanCache) -> None:
    assert cache.claim("x", "one", ttl_s=30)
    assert not cache.claim("x", "two", ttl_s=30)
    cache.release("x", "two")  # not the owner: no effect
    assert not cache.claim("x", "two", ttl_s=30)
    cache.release("x", "one")
    assert cache.claim("x", "two", ttl_s=0.05)
    import time

    time.sleep(0.1)
    assert cache.claim("x", "three", ttl_s=30)  # the expired claim no longer counts
