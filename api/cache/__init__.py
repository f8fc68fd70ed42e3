"""Plan caches keyed by the canonical request id: embedded SQLite (default) or Redis.

`open_cache(url)` takes a path or `sqlite:///path` for SQLite and `redis://host:port/db` for
Redis. Both store each plan with the request it answers, so a cache can be exported as files
and re-imported elsewhere, and both offer short claims so that several server processes solve
one request once.
"""

from __future__ import annotations

from pathlib import Path

from meshcast.api.cache.base import CachedPlan, CacheError, PlanCache
from meshcast.api.cache.sqlite import SqliteCache


def open_cache(url: str) -> PlanCache:
    """The cache `url` names (created when missing)."""
    if url.startswith(("redis://", "rediss://", "unix://")):
        from meshcast.api.cache.redis_cache import RedisCache

        return RedisCache(url)
    path = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else url
    if "://" in path:
        raise CacheError(
            f"cache: unknown scheme in {url!r} (expected a path, sqlite:/// or redis://)"
        )
    return SqliteCache(Path(path))


__all__ = ["CacheError", "CachedPlan", "PlanCache", "SqliteCache", "open_cache"]
