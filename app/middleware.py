"""One pure-ASGI middleware for everything that wraps every request.

Request id, API key, body size and content type checks, latency, metrics and
the access log all happen here, in a single pass over the request headers,
because each extra middleware layer (and Starlette's ``BaseHTTPMiddleware``
above all) costs measurable throughput on a sub-millisecond endpoint.
Requests refused here (401, 413, 415, and the 503 for a request the protocol
shed while an earlier one on its connection was still in flight) never reach
the router, so an unauthenticated or oversized body is not even read; a refusal
that leaves a large or chunked body unread closes the connection after it.
Compressed bodies and answers (``Content-Encoding``, ``Accept-Encoding``) are
:mod:`app.encoding`'s.
"""

from __future__ import annotations

import functools
import hmac
import itertools
import json
import os
import re
import time
from collections.abc import Callable, Collection, Sequence
from typing import Final

from fastapi.routing import iter_route_contexts
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import encoding, protocol, refusals
from app.limits import admitted
from app.protocol import ADMITTED_KEY, BODY_TIMEOUT_KEY, SHED_KEY
from app.refusals import RETRY_AFTER_SECONDS, SHED_DETAIL
from app.runtime import Runtime

REQUEST_ID_HEADER: Final[bytes] = b"x-request-id"
_CLIENT_REQUEST_ID: Final = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")
_JSON_TYPE: Final = re.compile(rb"\s*application/([a-z0-9.+-]*\+)?json\s*(;.*)?", re.IGNORECASE)
UNMATCHED_ROUTE: Final[str] = "unmatched"
#: nginx's code for "the client closed the connection before the response": not a 5xx.
CLIENT_CLOSED: Final[int] = 499
#: On a refusal that leaves a large body unread: uvicorn closes the connection after it.
_CLOSE: Final[tuple[tuple[bytes, bytes], ...]] = ((b"connection", b"close"),)
_CLOSE_HEADERS: Final[dict[str, str]] = {"Connection": "close"}
_RETRY_AFTER: Final[tuple[tuple[bytes, bytes], ...]] = (
    (b"retry-after", str(RETRY_AFTER_SECONDS).encode()),
)


class RequestIds:
    """Unique ids without a syscall per request: a random per-process prefix and a counter."""

    def __init__(self) -> None:
        self._prefix = os.urandom(6).hex()
        self._counter = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}-{next(self._counter):08x}"


class ServiceMiddleware:
    """Wraps the FastAPI app; see the module docstring."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        runtime: Runtime,
        open_paths: Collection[str],
        routes: Sequence[BaseRoute],
        any_body_paths: Collection[str] = (),
        is_protocol_path: Callable[[str], bool] = lambda path: False,
    ) -> None:
        self.app = app
        self.runtime = runtime
        self.metrics = runtime.metrics
        self.access_log = runtime.access_log
        key = runtime.settings.api_key
        self.api_key = key.get_secret_value().encode() if key is not None else None
        self.open_paths = frozenset(open_paths)
        # Paths are read once here (the router is complete when the middleware
        # stack is built): the metrics label unknown paths as one route, and only
        # the body endpoints get the content-type check.
        # app.main.add_routes puts our routes on the app's router; a router included
        # with include_router would be one entry, so expand whatever is there.
        expanded = [context.route for context in iter_route_contexts(routes)]
        self.known_paths = frozenset(
            path for route in expanded if (path := getattr(route, "path", None))
        )
        self.post_paths = frozenset(
            getattr(route, "path", "")
            for route in expanded
            if "POST" in (getattr(route, "methods", None) or ())
        )
        # `any_body_paths` read bodies of their own format (the Open Inference
        # Protocol's binary tensors) and check them themselves.
        self.body_paths = self.post_paths - frozenset(any_body_paths)
        self.get_paths = frozenset(
            getattr(route, "path", "")
            for route in expanded
            if "GET" in (getattr(route, "methods", None) or ())
        )
        # The Open Inference Protocol's paths (app/oip.py) have their own error shape.
        self.is_protocol_path = is_protocol_path
        self.max_body_bytes = runtime.settings.max_body_bytes
        self.ids = RequestIds()
        #: The 413 of a compressed body that inflates beyond the limit.
        self.too_large = self._too_large(None, decoded=True)[1]
        # Bound once: a request that accepts gzip (httpx's default) passes it along.
        self._count_compressed = self.metrics.observe_compressed_response
        # Connections the protocol refuses never become requests; count them here too.
        protocol.refusal_observer = self.metrics.observe_refused_connection
        protocol.shed_observer = self._count_shed
        # and the protocol's own refusals below /v2 take the protocol's error shape.
        refusals.oip_path = is_protocol_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                send = self._quiet_startup_failure(send)
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id: bytes | None = None
        api_key: bytes | None = None
        content_length: bytes | None = None
        content_type: bytes | None = None
        content_encoding: bytes | None = None
        accept_encoding: bytes | None = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                content_length = value
            elif name == b"content-type":
                content_type = value
            elif name == b"x-request-id":
                request_id = value
            elif name == b"x-api-key":
                api_key = value
            elif name == b"authorization" and api_key is None and value[:7].lower() == b"bearer ":
                # Prometheus (and most HTTP tooling) can send a bearer token but not a custom
                # header, so the same key is also accepted as `Authorization: Bearer <key>`.
                api_key = value[7:].strip()
            elif name == b"transfer-encoding":
                chunked = True
            elif name == b"accept-encoding":
                accept_encoding = _listed(accept_encoding, value)
            elif name == b"content-encoding":
                content_encoding = _listed(content_encoding, value)
        if request_id is None or _CLIENT_REQUEST_ID.fullmatch(request_id) is None:
            rid = self.ids.next()
            request_id = rid.encode()
        else:
            rid = request_id.decode()
        path: str = scope["path"]
        route = path if path in self.known_paths else UNMATCHED_ROUTE
        status = 0
        kind: str | None = None

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (REQUEST_ID_HEADER, request_id)]
            await send(message)

        try:
            coding: encoding.Coding | None = None
            refusal: tuple[int, str] | None
            headers: tuple[tuple[bytes, bytes], ...] = ()
            if SHED_KEY in scope:
                # As app.protocol's own 503 for the same overload, in the same shape.
                kind = "overloaded"
                refusal, headers = (503, SHED_DETAIL), _RETRY_AFTER
            else:
                unsupported: str | None = None
                if content_encoding is not None:
                    try:
                        coding = encoding.request_coding(content_encoding)
                    except encoding.UnsupportedCodingError as exc:
                        unsupported = str(exc)
                refusal = self._refuse(
                    path, api_key, content_length, content_type, chunked, scope, unsupported
                )
                if unsupported is not None and refusal is not None and refusal[0] == 415:
                    headers = (encoding.ACCEPT_ENCODING,)  # RFC 7694: what would be read
                    self.metrics.observe_unsupported_coding()
            app_scope = scope
            if scope["method"] == "HEAD" and path in self.get_paths:
                # HEAD is GET without the body (RFC 9110 9.3.2), which uptime monitors
                # use; FastAPI routes only GET. The server drops the body of a HEAD.
                app_scope = {**scope, "method": "GET"}
            if refusal is not None:
                code, detail = refusal
                if self._leaves_large_body(code, content_length, chunked):
                    headers += _CLOSE
                await _respond(send_with_id, code, detail, headers, key=self._error_key(path))
            else:
                app_receive = receive
                if chunked and content_length is None:
                    app_receive = self._limited(receive)
                app_send: Send = send_with_id
                if coding is not None:
                    app_scope = encoding.plain_scope(app_scope)
                    app_receive = encoding.decoding(
                        app_receive,
                        coding,
                        limit=self.max_body_bytes,
                        too_large=self.too_large,
                        outcome=functools.partial(self.metrics.observe_compressed_request, coding),
                    )
                if accept_encoding is not None:
                    app_send = encoding.compressing(
                        send_with_id, accept_encoding, self._count_compressed
                    )
                await self.app(app_scope, app_receive, app_send)
        except encoding.BodyRefusedError as exc:
            # A compressed body that is corrupt or too large once decoded: refused as a
            # body too large to read is, the rest of it unread and the connection closed.
            if not status:
                await _respond(
                    send_with_id, exc.status, exc.detail, _CLOSE, key=self._error_key(path)
                )
        except ClientDisconnect:
            # The client left (or was cut off by the body timeout) while we read its
            # body: its own kind, never a server error and never a traceback.
            if not status:
                status = 408 if BODY_TIMEOUT_KEY in scope else CLIENT_CLOSED
        except Exception:
            # Answer in JSON with the request id; the exception still propagates so
            # the server logs its traceback (Starlette sees the response started).
            if not status:
                await _respond(
                    send_with_id, 500, "Internal server error.", key=self._error_key(path)
                )
            raise
        finally:
            if ADMITTED_KEY in scope:
                admitted.release()
            seconds = time.perf_counter() - start
            if not status:
                status = CLIENT_CLOSED  # the client went away before any response
            self.metrics.observe_request(scope["method"], route, status, seconds, kind)
            # Other requests in flight: their lines come in this loop turn; join them.
            defer = admitted.count > 0
            self.access_log.write(scope["method"], path, status, seconds, rid, defer=defer)

    def _error_key(self, path: str) -> str:
        """The key of an error body: ``error`` where the Open Inference Protocol requires it."""
        return "error" if self.is_protocol_path(path) else "detail"

    def _count_shed(self, method: str, path: str) -> None:
        """A request the protocol answered 503 itself (no app, no access log line)."""
        route = path if path in self.known_paths else UNMATCHED_ROUTE
        self.metrics.observe_request(method, route, 503, 0.0, "overloaded")

    def _quiet_startup_failure(self, send: Send) -> Send:
        """Drop Starlette's traceback from a failed start-up: our one log line said it all.

        Starlette reports a lifespan failure with the full traceback, which
        uvicorn logs as a multi-line error; for a missing model, the line the
        lifespan logged (what is wrong, how to fix it) is the useful part.
        """

        async def send_quietly(message: Message) -> None:
            if message["type"] == "lifespan.startup.failed" and self.runtime.startup_error:
                message = {"type": "lifespan.startup.failed", "message": ""}
            await send(message)

        return send_quietly

    def _leaves_large_body(self, code: int, content_length: bytes | None, chunked: bool) -> bool:
        """Whether a refusal (a 503 for overload too) leaves unread a body larger than the
        limit, or of unknown size.

        Such a refusal closes the connection after its answer (RFC 9110 15.5.14
        allows it): kept open, the connection waited for the whole declared
        body (``Content-Length: 99999999999``), and the parser churned through
        whatever the client kept sending, until the body deadline. A body within
        the limit (a 401 or 415) is discarded as it arrives and the connection kept.
        """
        if code in (400, 413) or chunked:
            return True
        if content_length is None:
            return False
        try:
            return int(content_length) > self.max_body_bytes
        except ValueError:  # the parser refuses it first; if not, its end is unknown
            return True

    def _refuse(
        self,
        path: str,
        api_key: bytes | None,
        content_length: bytes | None,
        content_type: bytes | None,
        chunked: bool,
        scope: Scope,
        unsupported_coding: str | None = None,
    ) -> tuple[int, str] | None:
        if (
            self.api_key is not None
            and path not in self.open_paths
            and (api_key is None or not hmac.compare_digest(api_key, self.api_key))
        ):
            return 401, (
                "Missing or invalid API key: send the key in the X-API-Key header "
                "(or as Authorization: Bearer <key>)."
            )
        if content_length is not None:
            try:
                length = int(content_length)
            except ValueError:
                return 400, "Invalid Content-Length header."
            if length > self.max_body_bytes:
                return self._too_large(length)
        else:
            length = 0
        if not (length or chunked) or scope["method"] != "POST":
            return None
        if unsupported_coding is not None and path in self.post_paths:
            return 415, unsupported_coding
        if path in self.body_paths and (
            content_type is None or _JSON_TYPE.fullmatch(content_type) is None
        ):
            return 415, (
                "Unsupported media type: send the body as JSON with "
                "'Content-Type: application/json'."
            )
        return None

    def _too_large(self, length: int | None, *, decoded: bool = False) -> tuple[int, str]:
        size = f"of {length} bytes " if length is not None else ""
        once = " once its Content-Encoding is decoded" if decoded else ""
        return 413, (
            f"Request body {size}exceeds the limit of {self.max_body_bytes} bytes "
            f"(HEART_MAX_BODY_BYTES){once}; send fewer patients per request."
        )

    def _limited(self, receive: Receive) -> Receive:
        """For bodies without Content-Length (chunked): count while the app reads."""
        received = 0
        limit = self.max_body_bytes

        async def receive_limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # HTTPException passes through FastAPI's body reading untouched
                    # and is rendered by its handler as {"detail": ...}.
                    # With Connection: close, as a refusal before reading (_leaves_large_body):
                    # the rest of the body is never read.
                    raise HTTPException(*self._too_large(None), headers=_CLOSE_HEADERS)
            return message

        return receive_limited


def _listed(previous: bytes | None, value: bytes) -> bytes:
    """A list header's value so far: one may come in several lines (RFC 9110 5.3), and a
    coding in a second ``Content-Encoding`` line is as much applied as one in the first."""
    return value if previous is None else b"%b,%b" % (previous, value)


async def _respond(
    send: Send,
    status: int,
    detail: str,
    headers: tuple[tuple[bytes, bytes], ...] = (),
    *,
    key: str = "detail",
) -> None:
    """A ``{"detail": ...}`` JSON error, the shape of FastAPI's HTTPException responses
    (``{"error": ...}`` with ``key="error"``, the Open Inference Protocol's)."""
    body = json.dumps({key: detail}, separators=(",", ":")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
