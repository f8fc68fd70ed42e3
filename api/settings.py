"""Service settings, from the environment (`MESHCAST_*`) or given directly in tests."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

from planner.work import DEFAULT_MAX_SOLVE_BYTES, DEFAULT_MAX_TILES


class SettingsError(ValueError):
    """An environment variable holds an unusable value; the message names it."""


@dataclass(frozen=True)
class Settings:
    """What the planning service needs to start, and the limits it enforces."""

    #: plan cache: a SQLite path (or `sqlite:///path`) or `redis://host:port/db`
    cache_url: str = ".meshcast/plans.sqlite3"
    #: largest `options.time_limit_s` a caller may ask for
    max_time_limit_s: float = 60.0
    #: largest request body, in bytes (413 beyond): 100,000 tensors take about 20 MB
    max_body_bytes: int = 64 << 20
    #: most tensors in one request (a per-expert MoE checkpoint has tens of thousands)
    max_tensors: int = 100_000
    #: most devices in one request's cluster
    max_devices: int = 16384
    #: most tiles a request's layouts may cut its tensors into (`planner.work`)
    max_tiles: int = DEFAULT_MAX_TILES
    #: most memory one solve may take, estimated from the request before planning
    max_solve_bytes: int = DEFAULT_MAX_SOLVE_BYTES
    #: solver processes (0: solve on threads of the server process)
    solver_processes: int = 2
    #: most distinct requests solving or queued at once (503 beyond)
    max_pending_solves: int = 64
    #: start the solver processes with the service instead of on the first request
    warm_up: bool = True

    @classmethod
    def from_env(cls) -> Settings:
        """Every field from `MESHCAST_<FIELD>` when set (`MESHCAST_CACHE` for `cache_url`)."""
        values: dict[str, object] = {}
        for field in fields(cls):
            name = (
                "MESHCAST_CACHE" if field.name == "cache_url" else f"MESHCAST_{field.name.upper()}"
            )
            raw = os.environ.get(name)
            if raw is None:
                continue
            kind: type = type(field.default)
            try:
                if kind is bool:
                    values[field.name] = raw.lower() in ("1", "true", "yes", "on")
                else:
                    values[field.name] = kind(raw)
            except ValueError:
                raise SettingsError(f"{name}: expected a {kind.__name__}, got {raw!r}") from None
            if kind in (int, float) and values[field.name] < 0:  # type: ignore[operator]
                raise SettingsError(f"{name}: must not be negative, got {raw!r}")
        return cls(**values)  # type: ignore[arg-type]
