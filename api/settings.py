"""Service settings, from the environment (`MESHCAST_*`) or given directly in tests."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    """What the planning service needs to start."""

    #: SQLite file of the plan cache (created with its folder on start)
    cache_path: Path = Path(".meshcast/plans.sqlite3")
    #: largest `options.time_limit_s` a caller may ask for
    max_time_limit_s: float = 60.0

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            cache_path=Path(os.environ.get("MESHCAST_CACHE", str(cls.cache_path))),
            max_time_limit_s=float(
                os.environ.get("MESHCAST_MAX_TIME_LIMIT_S", cls.max_time_limit_s)
            ),
        )
