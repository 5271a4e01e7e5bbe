"""Every ``RAGC_*`` variable ragc reads, typed and checked in one place (pydantic-settings).

Secrets come from the environment only. The service, the compile and the CLI read their
settings through :meth:`Environment.read`, so a variable has one name, one type, one default
and one error message everywhere. An empty variable counts as unset.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any, Final, Literal

from pydantic import Field, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings.sources.utils import parse_env_vars

from schemas.errors import InvalidInputError

__all__ = ["DEFAULT_STORE_URL", "PREFIX", "Environment"]

PREFIX: Final = "RAGC_"
DEFAULT_STORE_URL: Final = "sqlite:///.ragc/knowledge.db"

_GIVEN: ContextVar[Mapping[str, str] | None] = ContextVar("ragc_environ", default=None)
"""A mapping :meth:`Environment.read` reads instead of ``os.environ`` (tests, config files)."""


class _MappingSource(EnvSettingsSource):
    """The environment source, over a given mapping."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(
            self._environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str
        )


class Environment(BaseSettings):
    """The ``RAGC_*`` variables (each field's name is the variable's, without the prefix)."""

    model_config = SettingsConfigDict(
        env_prefix=PREFIX, env_ignore_empty=True, extra="ignore", frozen=True
    )

    store: str = Field(default=DEFAULT_STORE_URL, description="snapshot store URL")
    warm_dsn: str | None = Field(default=None, description="Postgres DSN of the warm tier")
    archive_url: str | None = Field(
        default=None, description="archive (path or fsspec URL) published snapshots are copied to"
    )
    knowledge: str | None = Field(default=None, description="folder the webhook recompiles")
    sources: str | None = Field(
        default=None, description="TOML file naming the knowledge sources a compile may pull"
    )
    admin_token: str | None = Field(default=None, description="bearer token of the admin API")
    webhook_secret: str | None = Field(default=None, description="HMAC key of the webhook")
    tenant_auth: Literal["keys", "trust"] = Field(
        default="keys",
        description="keys (a tenant is whoever holds its API key) or trust (the request's "
        "tenant field is believed: single-tenant, or behind an authenticating gateway)",
    )
    provider: str = Field(default="offline", description="the L3 composer")
    l3_budget: int | None = Field(
        default=None, ge=0, description="L3 answers per tenant and month: a whole number, 0 or more"
    )
    pointer_poll_s: float = Field(
        default=0.25,
        gt=0,
        allow_inf_nan=False,
        description="seconds between pointer reads, above 0",
    )
    body_timeout_s: float = Field(
        default=10.0,
        gt=0,
        allow_inf_nan=False,
        description="seconds a client has to send a request body (then 408), above 0",
    )
    audit: bool = Field(default=True, description="audit every answer: on or off")
    access_log: bool = Field(default=False, description="one log line per request: on or off")
    log_format: Literal["text", "json"] = Field(
        default="text", description="text (for people) or json (one object per line)"
    )
    route_cache: int = Field(
        default=10_000,
        ge=0,
        description="questions memoised per version; use 0 to turn the memo off",
    )
    encoder_batch: int = Field(
        default=32, ge=1, description="questions per encoder call; use 1 to turn batching off"
    )
    encoder_window_ms: float = Field(
        default=1.0,
        ge=0,
        le=1000,
        allow_inf_nan=False,
        description="a few milliseconds to wait for a batch: between 0 and 1000",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,  # noqa: ARG003 - no .env files
        file_secret_settings: PydanticBaseSettingsSource,  # noqa: ARG003 - secrets: env only
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        given = _GIVEN.get()
        source = env_settings if given is None else _MappingSource(settings_cls, given)
        return (init_settings, source)

    @classmethod
    def read(cls, environ: Mapping[str, str] | None = None) -> Environment:
        """The settings from ``environ`` (default ``os.environ``).

        Raises :class:`InvalidInputError` naming the variable, its value and what it takes.
        """
        token = _GIVEN.set(environ)
        try:
            return cls()
        except ValidationError as exc:
            raise _invalid(exc) from None
        finally:
            _GIVEN.reset(token)


def _invalid(exc: ValidationError) -> InvalidInputError:
    problem = exc.errors()[0]
    field = str(problem["loc"][0]) if problem["loc"] else ""
    name = f"{PREFIX}{field.upper()}"
    raw: Any = problem.get("input")
    info: FieldInfo | None = Environment.model_fields.get(field)
    message = str(problem["msg"])
    return InvalidInputError(
        f"{name}={raw!r} is not valid: {message[0].lower()}{message[1:]}",
        hint=f"{name}: {info.description}" if info and info.description else None,
    )
