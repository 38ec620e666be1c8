"""The answers the HTTP protocol writes itself, built once as bytes.

``app.protocol`` answers some requests before the app (and its error handlers)
could: 431, 408, 503, and two 400s: for an upgrade request with a chunked body,
and for a request the parser refuses, which uvicorn answered in plain text, and
at once, ahead of the answers still due to valid requests before it (see
``HardenedHttpToolsProtocol.send_400_response``). They are ready-made bytes in
two shapes: ``{"error": ...}`` for a path below ``/v2``, as the Open Inference
Protocol requires of every failed request there (the app says which paths those
are: ``oip_path``), and the service's ``{"detail": ...}`` elsewhere, or when the
path has not arrived yet (see ``HardenedHttpToolsProtocol._target_path``). Like
every response of the app, each carries uvicorn's ``Date`` of the current
second (RFC 9110 6.6.1; see ``_ServerHeaders``).

They are data, not connection handling, so they live apart from the protocol
class; ``app.middleware`` takes the wording of the 503 from here
(``SHED_DETAIL``, ``RETRY_AFTER_SECONDS``), so that the 503 it writes for the
same overload says the same.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from app.limits import ConnectionLimits

#: What a client whose request was shed should wait before retrying, in seconds.
RETRY_AFTER_SECONDS: Final[int] = 1
#: Whether a path is the Open Inference Protocol's (``app.oip.is_protocol_path``), whose
#: errors must be ``{"error": ...}``; set by the app at start-up (else ``{"detail"}`` always).
oip_path: Callable[[str], bool] | None = None


def _error_bytes(message: str, extra: str = "", *, key: str, close: bool = True) -> bytes:
    """An error's headers after the status line and the server's own, then its body."""
    body = json.dumps({key: message}, separators=(",", ":")).encode()
    connection = "connection: close\r\n" if close else ""
    return (
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n{extra}{connection}\r\n"
    ).encode() + body


@dataclass(frozen=True)
class Refusal:
    """An answer the protocol writes itself, ready-made in both error shapes.

    These answers go out before the app (and its error handlers) could shape
    them, yet below ``/v2`` the Open Inference Protocol requires ``{"error":
    ...}`` of every failed request. Both are built once: choosing one per
    request is a check of its path, never a new response. Between the status
    line and the rest go the server's headers of the moment (``Date``), as
    uvicorn puts them in every response of the app (:class:`_ServerHeaders`).
    """

    status_line: bytes
    detail: bytes
    error: bytes

    @classmethod
    def build(
        cls, status: int, reason: str, message: str, extra: str = "", *, close: bool = True
    ) -> Refusal:
        return cls(
            f"HTTP/1.1 {status} {reason}\r\n".encode(),
            _error_bytes(message, extra, key="detail", close=close),
            _error_bytes(message, extra, key="error", close=close),
        )

    def to(self, path: str, server_headers: bytes) -> bytes:
        """The bytes for a request to ``path`` (``""`` when the path is not known yet)."""
        rest = self.error if oip_path is not None and oip_path(path) else self.detail
        return self.status_line + server_headers + rest


class _ServerHeaders:
    """uvicorn's headers for every response (``Date``, and ``Server`` unless turned off), as
    bytes.

    uvicorn's server renews the list once a second (``ServerState.default_headers``:
    a new list each time); it is encoded here once per list, so the 503 that
    sheds a request under overload costs one identity check more, no formatting.
    Holding the list keeps it alive, so the check cannot match a new list
    at a reused address.
    """

    __slots__ = ("_encoded", "_source")

    def __init__(self) -> None:
        self._source: list[tuple[bytes, bytes]] | None = None
        self._encoded = b""

    def of(self, headers: list[tuple[bytes, bytes]]) -> bytes:
        if headers is not self._source:
            self._encoded = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
            self._source = headers
        return self._encoded


server_headers = _ServerHeaders()


SHED_DETAIL: Final[str] = (
    "The service is at its concurrency limit (HEART_MAX_CONCURRENT_REQUESTS); "
    f"retry after {RETRY_AFTER_SECONDS} s."
)
_RETRY_AFTER: Final[str] = f"retry-after: {RETRY_AFTER_SECONDS}\r\n"
SHED: Final[Refusal] = Refusal.build(
    503, "Service Unavailable", SHED_DETAIL, _RETRY_AFTER, close=False
)
SHED_CLOSE: Final[Refusal] = Refusal.build(503, "Service Unavailable", SHED_DETAIL, _RETRY_AFTER)
#: What uvicorn says (and logs) of a request its parser refuses.
UVICORN_INVALID: Final[str] = "Invalid HTTP request received."
INVALID_REQUEST: Final[Refusal] = Refusal.build(
    400,
    "Bad Request",
    f"{UVICORN_INVALID} The request line, a header or the body's framing "
    "(Content-Length, chunks) is not valid HTTP/1.1.",
)
CHUNKED_UPGRADE: Final[Refusal] = Refusal.build(
    400,
    "Bad Request",
    "A request that asks to upgrade the connection (e.g. to HTTP/2) must send its body "
    "with Content-Length, not chunked: send it without the Upgrade header, or with "
    "Content-Length.",
)


@dataclass(frozen=True)
class _LimitRefusals:
    """The refusals that name a configured limit."""

    header_too_large: Refusal
    header_timeout: Refusal
    body_timeout: Refusal


@lru_cache(maxsize=4)
def limit_refusals(limits: ConnectionLimits) -> _LimitRefusals:
    """Built at a process's first such refusal (its limits are fixed), then reused."""
    timeout = "Request Timeout"
    return _LimitRefusals(
        Refusal.build(
            431,
            "Request Header Fields Too Large",
            f"Request line and headers exceed {limits.max_header_bytes} bytes "
            "(HEART_MAX_HEADER_BYTES).",
        ),
        Refusal.build(
            408,
            timeout,
            f"Request headers not received within {limits.header_timeout:g} s "
            "(HEART_HEADER_TIMEOUT).",
        ),
        Refusal.build(
            408,
            timeout,
            f"Request body not received within {limits.body_timeout:g} s (HEART_BODY_TIMEOUT).",
        ),
    )
