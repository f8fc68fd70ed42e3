"""What every plan cache offers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from meshcast.planner.bulk import collection_paused


def decoded(text: str | bytes) -> Any:
    """Stored JSON decoded with the cyclic collector paused (plans of 10^5 pieces decode in a
    third of the time)."""
    with collection_paused():
        return json.loads(text)


class CacheError(RuntimeError):
    """The cache cannot be opened or reached; the message names it."""


@dataclass(frozen=True)
class CachedPlan:
    """A plan with the canonical request it was made for."""

    request_id: str
    plan: dict[str, Any]
    request: dict[str, Any] | None


class PlanCache(Protocol):
    """Plans by canonical request id, shared by every process that opens the same cache."""

    #: where the cache lives, for messages and the health route
    url: str

    def get(self, request_id: str) -> str | None:
        """The cached plan's JSON text (as stored: answered as it is), or None."""

    def put(
        self, request_id: str, plan: str, request: dict[str, Any] | None, algorithm: str
    ) -> None:
        """Store (or replace) the plan of `request_id`: its JSON text, the request it was made
        for, and the algorithm that made it."""

    def entry(self, request_id: str) -> CachedPlan | None:
        """A plan with the request it was made for, by request id."""

    def entries(self) -> Iterator[CachedPlan]:
        """Every cached plan, for export."""

    def claim(self, request_id: str, owner: str, ttl_s: float) -> bool:
        """Try to become the one process solving `request_id` for `ttl_s` seconds."""

    def renew(self, request_id: str, owner: str, ttl_s: float) -> None:
        """Extend `owner`'s claim on `request_id` to `ttl_s` seconds from now (nothing if it
        is not `owner`'s any more)."""

    def release(self, request_id: str, owner: str) -> None:
        """Give up a claim (after the plan is stored, or on failure)."""

    def __len__(self) -> int: ...

    def close(self) -> None: ...
