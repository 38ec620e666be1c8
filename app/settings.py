"""Service configuration: ``HEART_*`` environment variables, validated once at start.

A small Pydantic model instead of pydantic-settings: the service reads a
handful of flat variables, and owning the parsing lets a bad value fail with
one line that names the variable, what it holds and what is allowed, before
any worker starts. Unknown ``HEART_*`` variables are reported as warnings (a
typo such as ``HEART_MODLE_PATH`` would otherwise be silently ignored) but do
not stop the service, because other tools of this project share the prefix.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_core import ErrorDetails

ENV_PREFIX: Final[str] = "HEART_"

LogLevel = Literal["critical", "error", "warning", "info", "debug"]


class SettingsError(ValueError):
    """The environment holds a value the service cannot start with."""


class StartupError(RuntimeError):
    """The service cannot serve (no usable model); the message says how to fix it."""


class Settings(BaseModel):
    """Everything the service can be told from outside; each field is ``HEART_<NAME>``."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    model_path: Path = Field(
        default=Path("artifacts/model.joblib"),
        description="Trained model artifact written by `python -m training`.",
    )
    api_key: Annotated[SecretStr, Field(min_length=16)] | None = Field(
        default=None,
        description=(
            "When set, every endpoint except /health and /ready requires it in the "
            "X-API-Key header. At least 16 characters. Unset or empty: no authentication."
        ),
    )
    host: str = Field(default="127.0.0.1", min_length=1, description="Interface to listen on.")
    port: int = Field(default=8000, ge=1, le=65535, description="TCP port to listen on.")
    workers: int = Field(default=1, ge=1, le=64, description="Number of uvicorn worker processes.")
    log_level: LogLevel = Field(default="info", description="Minimum level of the JSON log lines.")
    access_log: bool = Field(default=True, description="Write one JSON line per request.")
    max_body_bytes: int = Field(
        default=2 * 1024 * 1024,
        ge=1024,
        description=(
            "Largest accepted request body in bytes, as sent and once a gzip or deflate "
            "Content-Encoding is decoded; larger bodies get 413."
        ),
    )
    max_batch_size: int = Field(
        default=1000, ge=1, le=100_000, description="Most patients accepted by /predict/batch."
    )
    max_table_rows: int = Field(
        default=30_000,
        ge=1,
        le=10_000_000,
        description=(
            "Most rows accepted by /predict/table per request; more gets 413. Counted "
            "before the rows are decoded, so a compressed Arrow stream cannot exceed it."
        ),
    )
    opentelemetry: bool = Field(
        default=False,
        description=(
            "FastAPI's built-in OpenTelemetry instrumentation, for an OpenTelemetry SDK "
            "you configure. Off by default: it checks for providers on every request "
            "(cost in bench/PROFILE.md)."
        ),
    )
    max_header_bytes: int = Field(
        default=16 * 1024,
        ge=1024,
        le=1024 * 1024,
        description=(
            "Largest request line plus headers in bytes; larger gets 431 and the "
            "connection is closed before more is buffered."
        ),
    )
    header_timeout: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description=(
            "Seconds a client has to send the request line and headers (from connecting, "
            "or from the first byte of a later request); then 408 and close."
        ),
    )
    body_timeout: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="Seconds a client has to send the whole body after its headers; then 408.",
    )
    max_concurrent_requests: int = Field(
        default=64,
        ge=1,
        le=100_000,
        description=(
            "Requests one worker holds queued or running; beyond it, 503 with Retry-After "
            "(never for /health and /ready)."
        ),
    )
    drift_min_patients: int = Field(
        default=100,
        ge=10,
        le=1_000_000,
        description=(
            "Fewest patients any published drift figure aggregates, so /metrics never "
            "reveals one patient's values."
        ),
    )
    model_sha256: Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$")] | None = Field(
        default=None,
        description=(
            "Pin the artifact: refuse to unpickle a file whose SHA-256 differs "
            "(python -m training prints it)."
        ),
    )

    @field_validator("model_sha256")
    @classmethod
    def _lower_hex(cls, value: str | None) -> str | None:
        return value.lower() if value is not None else None

    shutdown_timeout: int = Field(
        default=30,
        ge=1,
        description="Seconds to let in-flight requests finish after SIGTERM.",
    )

    @classmethod
    def env_name(cls, field: str) -> str:
        return ENV_PREFIX + field.upper()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Build settings from ``HEART_*`` variables; ``overrides`` (e.g. CLI flags) win.

        Raises :class:`SettingsError` with one line per invalid variable.
        """
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for name in cls.model_fields:
            raw = env.get(cls.env_name(name))
            if raw is None or (name in ("api_key", "model_sha256") and raw == ""):
                continue
            values[name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise SettingsError(_explain(exc, overrides)) from None

    @classmethod
    def unknown_variables(cls, environ: Mapping[str, str] | None = None) -> list[str]:
        """``HEART_*`` variables that configure nothing (probably typos)."""
        env = os.environ if environ is None else environ
        known = {cls.env_name(name) for name in cls.model_fields}
        return sorted(k for k in env if k.startswith(ENV_PREFIX) and k not in known)

    def to_env(self) -> dict[str, str]:
        """The environment that reproduces these settings in another process (a worker)."""
        env: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, bool):
                value = "true" if value else "false"
            env[self.env_name(name)] = str(value)
        return env


def _explain(exc: ValidationError, overrides: Mapping[str, object]) -> str:
    problems = []
    for error in exc.errors(include_url=False):
        field = str(error["loc"][0]) if error["loc"] else "?"
        source = (
            f"--{field.replace('_', '-')}"
            if overrides.get(field) is not None
            else Settings.env_name(field)
        )
        shown = "<hidden>" if field == "api_key" else repr(error.get("input"))
        problems.append(f"{source}={shown}: {_message(field, error)}")
    return "invalid configuration: " + "; ".join(problems)


def _message(field: str, error: ErrorDetails) -> str:
    """Pydantic's message, except where it misleads about the field's kind.

    The key is a ``SecretStr``, whose length check speaks of "items" (as for a
    list) and quotes the refused key's length; the operator needs to hear
    "characters", and a secret's length is not printed.
    """
    if field == "api_key" and error["type"] == "too_short":
        minimum = (error.get("ctx") or {}).get("min_length")
        return f"should have at least {minimum} characters"
    return str(error["msg"])
