"""Both plan caches behave alike: plans with their requests, and claims for single flight."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from meshcast.api.cache import CacheError, PlanCache, open_cache
from meshcast.api.cli import main

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
    """Plans are stored as the text given (answered as it is) and read back as documents."""
    assert cache.get("a" * 64) is None and len(cache) == 0
    text = json.dumps(PLAN, separators=(",", ":"))
    cache.put("a" * 64, text, {"tensors": []}, "greedy")
    cache.put("b" * 64, json.dumps({**PLAN, "request_id": "b" * 64}), None, "greedy")
    assert cache.get("a" * 64) == text and len(cache) == 2
    entries = {e.request_id: e for e in cache.entries()}
    assert entries["a" * 64].request == {"tensors": []} and entries["b" * 64].request is None
    assert entries["a" * 64].plan == PLAN and entries["b" * 64].plan["request_id"] == "b" * 64


def test_one_claim_at_a_time_until_released_or_expired(cache: PlanCache) -> None:
    assert cache.claim("x", "one", ttl_s=30)
    assert not cache.claim("x", "two", ttl_s=30)
    cache.release("x", "two")  # not the owner: no effect
    assert not cache.claim("x", "two", ttl_s=30)
    cache.release("x", "one")
    assert cache.claim("x", "two", ttl_s=0.05)
    import time

    time.sleep(0.1)
    assert cache.claim("x", "three", ttl_s=0.2)  # the expired claim no longer counts
    cache.renew("x", "two", ttl_s=30)  # not the owner: no effect
    cache.renew("x", "three", ttl_s=30)  # its owner still works on it
    time.sleep(0.3)
    assert not cache.claim("x", "four", ttl_s=30)


def test_a_path_that_cannot_hold_a_cache_is_refused_and_left_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "plans"
    (folder / "kept.txt").parent.mkdir()
    (folder / "kept.txt").write_text("mine")
    with pytest.raises(CacheError, match=re.escape(f"cache: {folder} is not a file")):
        open_cache(str(folder))
    assert (folder / "kept.txt").read_text() == "mine"  # not set aside as a corrupt cache
    assert list(tmp_path.iterdir()) == [folder]
    unopenable = "/proc/meshcast.sqlite3"
    with pytest.raises(CacheError, match=re.escape(f"cannot use {unopenable}: unable to open")):
        open_cache(unopenable)
    assert main(["serve", "--cache", str(folder), "--port", "8799"]) == 2
    assert f"meshcast: error: cache: {folder} is not a file" in capsys.readouterr().err
