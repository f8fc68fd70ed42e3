"""The plan cache in Redis, for several service replicas behind a load balancer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from meshcast.api.cache.base import CachedPlan, CacheError, decoded

_PREFIX = "meshcast:"


class RedisCache:
    """Plans as `meshcast:plan:<id>` hashes, their ids in the set `meshcast:plans`, claims as
    `meshcast:claim:<id>` keys with an expiry."""

    def __init__(self, url: str) -> None:
        try:
            import redis
        except ImportError:
            raise CacheError(
                "cache: a redis:// cache needs `pip install 'meshcast[redis]'`"
            ) from None
        self.url = url
        self._redis = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        try:
            self._redis.ping()
        except redis.RedisError as err:
            raise CacheError(f"cache: cannot reach {url}: {err}") from None

    def get(self, request_id: str) -> str | None:
        raw = self._redis.hget(f"{_PREFIX}plan:{request_id}", "plan")
        return None if raw is None else raw.decode() if isinstance(raw, bytes) else str(raw)

    def put(
        self, request_id: str, plan: str, request: dict[str, Any] | None, algorithm: str
    ) -> None:
        key = f"{_PREFIX}plan:{request_id}"
        with self._redis.pipeline() as pipe:
            pipe.hset(key, "plan", plan)
            pipe.hset(key, "request", json.dumps(request))
            pipe.sadd(f"{_PREFIX}plans", request_id)
            pipe.execute()

    def entry(self, request_id: str) -> CachedPlan | None:
        plan, request = self._redis.hmget(f"{_PREFIX}plan:{request_id}", ["plan", "request"])
        if plan is None:
            return None
        return CachedPlan(request_id, decoded(plan), decoded(request or "null"))

    def entries(self) -> Iterator[CachedPlan]:
        for raw_id in sorted(self._redis.sscan_iter(f"{_PREFIX}plans")):
            request_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
            plan, request = self._redis.hmget(f"{_PREFIX}plan:{request_id}", ["plan", "request"])
            if plan is not None:
                yield CachedPlan(request_id, decoded(plan), decoded(request or "null"))

    def claim(self, request_id: str, owner: str, ttl_s: float) -> bool:
        key = f"{_PREFIX}claim:{request_id}"
        return bool(self._redis.set(key, owner, nx=True, px=max(1, int(ttl_s * 1000))))

    def renew(self, request_id: str, owner: str, ttl_s: float) -> None:
        key = f"{_PREFIX}claim:{request_id}"
        current = self._redis.get(key)
        if isinstance(current, bytes) and current.decode() == owner:
            self._redis.pexpire(key, max(1, int(ttl_s * 1000)))

    def release(self, request_id: str, owner: str) -> None:
        key = f"{_PREFIX}claim:{request_id}"
        current = self._redis.get(key)
        if isinstance(current, bytes) and current.decode() == owner:
            self._redis.delete(key)

    def __len__(self) -> int:
        return int(self._redis.scard(f"{_PREFIX}plans"))

    def close(self) -> None:
        self._redis.close()
