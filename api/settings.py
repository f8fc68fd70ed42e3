"""Service settings, from the environment (`MESHCAST_*`, by pydantic-settings) or given
directly in tests. A value that does not parse (a misspelt boolean, a number with a unit) is
an error at start naming the variable, never a silent default."""

from __future__ import annotations

from typing import ClassVar

from pydantic import AliasChoices, Field, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from meshcast.planner.work import DEFAULT_MAX_SOLVE_BYTES, DEFAULT_MAX_TILES

ENV_PREFIX = "MESHCAST_"


class SettingsError(ValueError):
    """An environment variable holds an unusable value; the message names it."""


class Settings(BaseSettings):
    """What the planning service needs to start, and the limits it enforces."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, frozen=True, extra="forbid", populate_by_name=True
    )

    #: plan cache: a SQLite path (or `sqlite:///path`) or `redis://host:port/db`
    cache_url: str = Field(
        ".meshcast/plans.sqlite3", validation_alias=AliasChoices("cache_url", "MESHCAST_CACHE")
    )
    #: largest `options.time_limit_s` a caller may ask for
    max_time_limit_s: float = Field(60.0, ge=0)
    #: largest request body, in bytes (413 beyond): 100,000 tensors take about 20 MB
    max_body_bytes: int = Field(64 << 20, ge=0)
    #: most tensors in one request (a per-expert MoE checkpoint has tens of thousands)
    max_tensors: int = Field(100_000, ge=0)
    #: most devices in one request's cluster
    max_devices: int = Field(16384, ge=0)
    #: most tiles a request's layouts may cut its tensors into (`planner.work`)
    max_tiles: int = Field(DEFAULT_MAX_TILES, ge=0)
    #: most memory one solve may take, estimated from the request before planning
    max_solve_bytes: int = Field(DEFAULT_MAX_SOLVE_BYTES, ge=0)
    #: solver processes (0: solve on threads of the server process)
    solver_processes: int = Field(2, ge=0)
    #: most distinct requests solving or queued at once (503 beyond)
    max_pending_solves: int = Field(64, ge=0)
    #: solver processes of the compare lane (`POST /v1/compare`), apart from the plan lane's
    compare_processes: int = Field(1, ge=0)
    #: most distinct comparisons running or queued at once (503 beyond)
    max_pending_compares: int = Field(2, ge=0)
    #: start the solver processes with the service instead of on the first request
    warm_up: bool = True

    #: whether the `MESHCAST_*` environment is read (only by `from_env`)
    _reads_environment: ClassVar[bool] = False

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Settings given directly are all there is; `from_env` reads the environment."""
        return (init_settings, env_settings) if cls._reads_environment else (init_settings,)

    @classmethod
    def from_env(cls) -> Settings:
        """Every field from `MESHCAST_<FIELD>` when set (`MESHCAST_CACHE` for `cache_url`)."""
        try:
            return _FromEnvironment()
        except ValidationError as err:
            first = err.errors()[0]
            name = str(first["loc"][0]) if first["loc"] else ""
            variable = _variable(name) if name in cls.model_fields else name.upper()
            raise SettingsError(
                f"{variable}: {first['msg']} (got {first.get('input')!r})"
            ) from None


class _FromEnvironment(Settings):
    """`Settings` read by pydantic-settings from the `MESHCAST_*` environment variables."""

    _reads_environment: ClassVar[bool] = True


def _variable(field: str) -> str:
    """The environment variable of a settings field."""
    return f"{ENV_PREFIX}CACHE" if field == "cache_url" else f"{ENV_PREFIX}{field.upper()}"
