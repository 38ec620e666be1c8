"""The per-connection limits of the HTTP protocol, and the count of admitted requests.

Both are shared: ``app.protocol`` enforces the limits and counts each request it
admits, ``app.refusals`` names the limits in its answers, and ``app.middleware``
releases a request's count when its answer is done. They are configuration and
one counter, not connection handling, so they live apart from the protocol
class. The limits are read once per worker from the same ``HEART_*`` settings
as the rest of the service.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True)
class ConnectionLimits:
    max_header_bytes: int = 16 * 1024
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_concurrent_requests: int = 64
    #: ``HEART_MAX_BODY_BYTES``: a shed request with a larger (or chunked) body closes.
    max_body_bytes: int = 2 * 1024 * 1024


@lru_cache(maxsize=1)
def configured_limits() -> ConnectionLimits:
    """The limits of this process's ``HEART_*`` settings, read once.

    Every worker is a fresh process whose environment holds the validated
    settings (``heart-api serve`` puts them there), so reading the environment
    here works both under ``heart-api serve`` and a plain ``uvicorn --http``.
    """
    from app.settings import Settings

    settings = Settings.from_env()
    return ConnectionLimits(
        max_header_bytes=settings.max_header_bytes,
        header_timeout=settings.header_timeout,
        body_timeout=settings.body_timeout,
        max_concurrent_requests=settings.max_concurrent_requests,
        max_body_bytes=settings.max_body_bytes,
    )


class _Admitted:
    """Requests of this worker that were admitted (not shed) and have not finished."""

    count: int = 0

    def release(self) -> None:
        self.count -= 1


admitted = _Admitted()
