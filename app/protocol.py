"""uvicorn's httptools protocol with the limits a service on an open port needs.

uvicorn (0.54 when this was written) leaves four gaps that a
hostile or broken client can use, all measured in issue 11:

* headers are unbounded: httptools buffers a header of any size, so one
  connection could make a worker hold hundreds of MB;
* there is no read timeout before the first response: an idle connection, a
  request line or headers trickled one byte at a time, or a body shorter than
  its ``Content-Length`` hold a connection (and a task) forever;
* ``limit_concurrency`` answers 503 to *every* request beyond the limit,
  health probes included (so Kubernetes would kill a busy but healthy pod),
  counts idle keep-alive connections as load, sends no ``Retry-After`` and
  bypasses the app, so the refusals never reach ``/metrics``;
* ``h11_max_incomplete_event_size`` bounds headers only for the slower h11
  protocol, and a reverse proxy in the container would cost a second hop on
  every request.

So this subclass keeps uvicorn's (fast) httptools parser and adds, per
connection, a byte budget for the request head (refused with 431 before more
is buffered), a deadline for the head (408, or a silent close when nothing was
sent) and for the body (408), and marks a request as *shed* when the worker
already has ``HEART_MAX_CONCURRENT_REQUESTS`` admitted requests queued or running; the
app's middleware answers a shed request with 503 and ``Retry-After`` at once,
except for the probes ``/health`` and ``/ready``, which are never shed (the
protocol answers it itself when no earlier response is due on the connection;
either way the 503 closes the connection when the body it leaves unread is
chunked or larger than ``HEART_MAX_BODY_BYTES``). On
the usual request (head and body in one read) it adds no timer and one length
comparison.

It also serves a request that asks to switch to HTTP/2 (``Connection: Upgrade``,
``Upgrade: h2c``, as Java's ``HttpClient`` and ``curl --http2`` send on
``http://``) as the HTTP/1.1 request it also is, body included (RFC 9110
section 7.8 lets a server ignore ``Upgrade``): httptools stops parsing at such a
head, and uvicorn then handed the app an empty body, so every such POST got a
422 "Field required" and its patient was silently dropped (see
``_after_ignored_upgrade``). A WebSocket handshake is served the same way:
the service has no WebSocket route (see ``_should_upgrade_to_ws``).

The answers it writes itself (431, 408, 503, and 400s) are ready-made bytes in
the error shape of the request's path: see ``app.refusals``.

It also turns Nagle's algorithm off on connections accepted from a listener
that uvicorn bound, where asyncio does not, and sends a response's head and
body in one write where uvicorn makes two: see ``app.transport``.

Use it with ``heart-api serve`` (the default), or
``uvicorn --http app.protocol:HardenedHttpToolsProtocol ...``; the limits come
from the same ``HEART_*`` settings as the rest of the service (``app.limits``).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Any, Final

import httptools
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from app.limits import admitted, configured_limits
from app.refusals import (
    CHUNKED_UPGRADE,
    INVALID_REQUEST,
    SHED,
    SHED_CLOSE,
    UVICORN_INVALID,
    Refusal,
    limit_refusals,
    server_headers,
)
from app.transport import HeadWithBody, no_delay

#: Scope keys the protocol sets for the middleware (ASGI allows extra scope keys).
SHED_KEY: Final[str] = "heart.shed"
BODY_TIMEOUT_KEY: Final[str] = "heart.body_timeout"
#: Set on requests counted in :data:`app.limits.admitted`; the middleware releases them when done.
ADMITTED_KEY: Final[str] = "heart.admitted"
#: Never shed: liveness and readiness must answer fast precisely when the pod is busy.
PROBE_PATHS: Final[frozenset[str]] = frozenset({"/health", "/ready"})
_PROBE_TARGETS: Final[frozenset[bytes]] = frozenset(p.encode() for p in PROBE_PATHS)
#: Servers whose graceful shutdown has begun (see ``connection_made``).
_draining_servers: weakref.WeakSet[ServerState] = weakref.WeakSet()
#: Called with the method and path of each request shed by the protocol itself.
shed_observer: Callable[[str, str], None] | None = None
#: Called with a reason ("header_too_large", "header_timeout", "malformed_request") for
#: connections refused before a request existed, so the app can count them; set by the app
#: at start-up.
refusal_observer: Callable[[str], None] | None = None


def _nothing() -> None:
    return None


class HardenedHttpToolsProtocol(HttpToolsProtocol):
    """See the module docstring. One instance per connection."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = configured_limits()
        self._reading_head = True
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._draining = False
        #: Body bytes still due for a request whose ``Upgrade`` was ignored (None: none).
        self._upgrade_body: int | None = None
        self._discard_input = False
        #: A parser 400 (and its path) that waits for the answers due before it.
        self._refused_after: tuple[Refusal, str] | None = None
        # uvicorn sets it as each request begins; a refusal before the first one reads it.
        self.url = b""

    # -- connection ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        no_delay(transport)
        # Also bounds a connection that never sends a byte.
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)
        if self.server_state in _draining_servers:
            # asyncio accepts a connection in one step and makes its protocol in a later
            # one: this connection was accepted just before the listener closed, after
            # uvicorn told the connections it knew to shut down. Without this it kept
            # serving a busy client until HEART_SHUTDOWN_TIMEOUT, then was reset
            # (measured: 1 reset in 65,684 requests of a reload under load).
            self.shutdown()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        self._cancel_body_timer()
        # uvicorn never starts the requests still queued behind one in flight: their apps,
        # which give back the slots they were counted in, never run. Kept, the slots were
        # lost for good, and a client that pipelined requests and left could, 64 at a
        # time, make a worker shed everything but the probes until it was restarted.
        for queued, _ in self.pipeline:
            if ADMITTED_KEY in queued.scope:
                admitted.release()
        self.pipeline.clear()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._discard_input:
            return
        if self._upgrade_body is not None:
            data = self._take_upgrade_body(data)
            if not data:
                return
        if self._reading_head:
            room = self.limits.max_header_bytes - self._head_bytes
            if len(data) > room:
                # Feed only what may still belong to the head; if the head is not
                # complete by then it is too large, and nothing more is buffered.
                head, rest = data[:room], data[room:]
                self._head_bytes += len(head)
                if head:
                    self._feed(head)
                if self.transport.is_closing():
                    return
                if self._reading_head:
                    self._refuse_head()
                    return
                self.data_received(rest)
                return
            self._head_bytes += len(data)
        self._feed(data)
        if self.transport.is_closing():
            return
        if self._reading_head:
            if self._head_bytes and self._head_timer is None:
                self._head_timer = self.loop.call_later(
                    self.limits.header_timeout, self._head_timed_out
                )
        elif self._body_timer is None and self.cycle is not None and self.cycle.more_body:
            self._body_timer = self.loop.call_later(self.limits.body_timeout, self._body_timed_out)

    def _feed(self, data: bytes) -> None:
        """uvicorn's ``data_received``, except that an upgrade is never taken."""
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.logger.warning(UVICORN_INVALID)
            self.send_400_response(UVICORN_INVALID)
        except httptools.HttpParserUpgrade as upgrade:
            self._after_ignored_upgrade(data[upgrade.args[0] :])

    def send_400_response(self, msg: str) -> None:
        """uvicorn's 400 for a request its parser refuses, as JSON in the path's error shape,
        after the answers still due to earlier requests.

        uvicorn wrote it as ``text/plain`` on every path, where the service's
        other errors are ``{"detail": ...}`` and the Open Inference Protocol
        requires ``{"error": ...}`` below /v2: a client reading the refusal as
        JSON failed on it instead of reporting it. The path is taken as far as
        it arrived (:meth:`_target_path`), as for the 431 and 408. The message
        is a fixed sentence, never the request's bytes; the connection is
        closed, as uvicorn does, since the parser cannot resume after an error.

        uvicorn also wrote it at once, even behind a valid request (pipelined,
        or in the same write) whose answer was still being computed: the
        client read the 400 as that request's answer. HTTP/1.1 answers in
        request order (RFC 9112 9.3.2), so then nothing more is read, and the
        400 goes out when the last answer due is complete
        (:meth:`on_response_complete`).
        """
        self._observe("malformed_request")
        if msg == UVICORN_INVALID:
            refusal = INVALID_REQUEST
        else:  # no other caller in uvicorn 0.54: a later one's own (fixed) sentence
            refusal = Refusal.build(400, "Bad Request", msg)
        path = self._target_path()
        cycle = self.cycle
        if self._earlier_answer_due():
            if not self._reading_head:  # the refused request is queued: the 400 is its answer
                self.pipeline.popleft()  # (the newest at the left: uvicorn pops from the right)
                if ADMITTED_KEY in cycle.scope:  # counted, but its app will never release it
                    admitted.release()
            self._discard_input = True
            # The transport itself: uvicorn resumes its flow control after each answer.
            self.transport.pause_reading()
            self._cancel_head_timer()
            self._cancel_body_timer()
            self._refused_after = (refusal, path)
            return
        if cycle is not None and cycle.response_started and not cycle.response_complete:
            # The refused request's own answer has begun: a 400 inside it would corrupt it.
            self.transport.close()
            return
        self._close_with(self._refusal(refusal, path))

    def _earlier_answer_due(self) -> bool:
        """Whether a request before the one the parser refused still awaits its answer.

        The parser stopped either in a new request's head, so the latest cycle
        (``self.cycle``, running or queued) is an earlier request's, or in the
        body of the latest request: queued, it waits behind another; running,
        it is the refused request itself, and nothing is due before it.
        """
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            return False
        if self._reading_head:
            return True
        return bool(self.pipeline) and self.pipeline[0][0] is cycle

    def on_response_complete(self) -> None:
        """uvicorn's, then the 400 deferred by :meth:`send_400_response`, if no answer is
        due any more (a queued request starts instead: its answer comes first)."""
        last = not self.pipeline
        super().on_response_complete()
        if self._refused_after is not None and last and not self.transport.is_closing():
            refusal, path = self._refused_after
            self._unset_keepalive_if_required()
            self._close_with(self._refusal(refusal, path))

    def _should_upgrade_to_ws(self) -> bool:
        """Never: the service has no WebSocket route, so a handshake is served as the plain
        HTTP request it also is, its ``Upgrade`` ignored as for h2c.

        uvicorn's WebSocket path skips what this protocol adds: a handshake counted
        against the concurrency limit was never released (64 of them locked a
        worker into 503s until restart), one arriving at the limit crashed the
        protocol, and one with a body waited forever (found by a hostile-client probe).
        """
        return False

    def _after_ignored_upgrade(self, rest: bytes) -> None:
        """Read the body of a request whose ``Upgrade`` we ignore, as plain HTTP/1.1.

        httptools treats everything after an upgrade request's head as the new
        protocol's bytes: it reports the message complete with no body and hands
        back the rest. Here the rest is what it is, the request's body
        (``Content-Length`` bytes, passed to the request's cycle as the parser
        would), and anything after it is the next request, which the parser
        (resumed by httptools) reads as usual.
        """
        if self._upgrade_body is not None:  # set from Content-Length by on_headers_complete
            self._reading_head = False
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete:
                cycle.more_body = True
            rest = self._take_upgrade_body(rest)
            if not rest and self._upgrade_body is not None and self._body_timer is None:
                self._body_timer = self.loop.call_later(
                    self.limits.body_timeout, self._body_timed_out
                )
        if rest:
            self.data_received(rest)

    def _take_upgrade_body(self, data: bytes) -> bytes:
        """Pass the body bytes still due to the request; return what comes after them."""
        due = self._upgrade_body or 0
        body, rest = data[:due], data[due:]
        due -= len(body)
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:  # else a shed request's body
            cycle.body += body
            if due == 0:
                cycle.more_body = False
            elif len(cycle.body) > HIGH_WATER_LIMIT:
                self.flow.pause_reading()
            cycle.message_event.set()
        if due:
            self._upgrade_body = due
        else:
            self._upgrade_body = None
            self._cancel_body_timer()
            self._reading_head = True
            self._head_bytes = 0
        return rest

    def _body_framing(self) -> tuple[bool, int]:
        """(chunked, Content-Length) of the request whose head was just read: one that asks
        for an upgrade (or a CONNECT), or one being shed."""
        chunked, length = False, 0
        for name, value in self.headers:
            if name == b"transfer-encoding":
                chunked = True
            elif name == b"content-length":
                length = int(value)  # llhttp has checked it is one run of digits
        return chunked, length

    # -- parser callbacks ----------------------------------------------------------------

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._head_bytes = 0
        self._cancel_head_timer()
        if self.parser.should_upgrade():
            chunked, length = self._body_framing()
            if chunked:
                # Where such a body ends is beyond what the parser will tell us.
                self._discard_input = True
                upgrade = self._refusal(CHUNKED_UPGRADE, self._target_path())
                self._answer_now(upgrade, keep_alive=False)
                return
            # The parser stops at this head; _after_ignored_upgrade reads the body.
            self._upgrade_body = length or None
        # Before the request's task exists, so the middleware sees the flags. Shed
        # requests do not count: counting them would let a burst of cheap 503s keep
        # the worker "full" and shed nearly everything (measured: 72 of 19,259
        # requests served at 500 connections).
        if self.url.partition(b"?")[0] not in _PROBE_TARGETS:
            if admitted.count >= self.limits.max_concurrent_requests:
                if self.cycle is None or self.cycle.response_complete:
                    self._shed_now()
                    return
                # A response is still due on this connection: answer in order, via the app.
                self.scope[SHED_KEY] = True  # type: ignore[literal-required]
            else:
                admitted.count += 1
                self.scope[ADMITTED_KEY] = True  # type: ignore[literal-required]
        super().on_headers_complete()
        if self.cycle is not None:
            HeadWithBody.install(self.cycle)
            if self._draining:
                self.cycle.keep_alive = False  # answered with Connection: close

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._cancel_body_timer()
        self._reading_head = True
        self._head_bytes = 0
        # The next request's target is unknown until it arrives (see _target_path).
        self.url = b""

    def _target_path(self) -> str:
        """The path of the request being read, as far as it has arrived (``""`` before).

        httptools passes on what it has of the URL at the end of every read, so
        a head refused before it is complete (431, 408) is answered in the
        error shape of its path whenever the path has begun to arrive. The path
        is taken as sent: not percent-decoded, nor taken out of an absolute URL.
        """
        return self.url.partition(b"?")[0].decode("latin-1")

    def _shed_now(self) -> None:
        """Answer 503 right here: no task, no app, a few microseconds.

        Under overload most requests are shed, so what a refusal costs decides
        how long everything else waits, the probes on their new connections
        included (measured in BENCHMARKS.md). A body within ``HEART_MAX_BODY_BYTES``
        is discarded by the finished cycle as it arrives, and the connection stays
        open; a larger or chunked one closes it, as the app's refusals do (kept
        open, it waited for the whole declared body until the body deadline).
        """
        keep_alive = (
            self.parser.should_keep_alive() and not self._draining and not self._large_body()
        )
        path = self._target_path()
        self._answer_now(self._refusal(SHED if keep_alive else SHED_CLOSE, path), keep_alive)
        if shed_observer is not None:  # (the scope has no method yet: uvicorn sets it later)
            method = self.parser.get_method().decode("ascii", "replace")
            shed_observer(method, path)

    def _large_body(self) -> bool:
        """Whether the request's body is chunked or larger than ``HEART_MAX_BODY_BYTES``."""
        chunked, length = self._body_framing()
        return chunked or length > self.limits.max_body_bytes

    def _refusal(self, refusal: Refusal, path: str) -> bytes:
        """``refusal``'s bytes for a request to ``path``, with the server's ``Date``."""
        return refusal.to(path, server_headers.of(self.server_state.default_headers))

    def _answer_now(self, response: bytes, keep_alive: bool) -> None:
        """Send ``response`` from the protocol: the request gets no task and no app.

        Its cycle is marked answered, so the parser's later callbacks discard its body.
        """
        self.transport.write(response)
        cycle = RequestResponseCycle(
            scope=self.scope,
            transport=self.transport,
            flow=self.flow,
            logger=self.logger,
            access_logger=self.access_logger,
            access_log=False,
            default_headers=[],
            message_event=asyncio.Event(),
            expect_100_continue=False,
            keep_alive=keep_alive,
            on_response=_nothing,
        )
        cycle.response_started = cycle.response_complete = True
        self.cycle = cycle
        if not keep_alive:
            self.transport.close()

    # -- draining ------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Graceful stop: finish the request in flight; answer the next one and close.

        uvicorn closes an idle keep-alive connection at once, and a request the
        client sends at that moment meets a closed socket: a reset (issue 11, a
        reload under load). Closing after any fixed grace period has the same
        race with a client that is slow to send its next request (a busy
        machine delayed one by more than 1 s). So an idle connection stays open
        until its keep-alive timeout, exactly when any worker would close it
        anyway, and a request that arrives before then is answered with
        ``Connection: close`` and the connection closed after the response:
        draining adds no race of its own, and the client reconnects to a
        worker that stays.
        """
        self._draining = True
        _draining_servers.add(self.server_state)
        for queued, _ in self.pipeline:  # pipelined requests not answered yet
            queued.keep_alive = False
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # Only while its headers can still say so: closing after a response whose
            # headers promised keep-alive would reset the client's next request.
            # Otherwise the next request on the connection gets the Connection: close.
            if not cycle.response_started:
                cycle.keep_alive = False
        elif self.timeout_keep_alive_task is None and not self._head_bytes:
            # No keep-alive timer yet (a connection that has sent nothing): bound it the same way.
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

    # -- limits --------------------------------------------------------------------------

    def _refuse_head(self) -> None:
        self._observe("header_too_large")
        refusal = limit_refusals(self.limits).header_too_large
        self._close_with(self._refusal(refusal, self._target_path()))

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or not self._reading_head:
            return
        if self._head_bytes:
            self._observe("header_timeout")
            refusal = limit_refusals(self.limits).header_timeout
            self._close_with(self._refusal(refusal, self._target_path()))
        else:  # an idle connection: nothing to answer
            self.transport.close()

    def _body_timed_out(self) -> None:
        self._body_timer = None
        cycle = self.cycle
        if self.transport.is_closing() or cycle is None or not cycle.more_body:
            return
        cycle.scope[BODY_TIMEOUT_KEY] = True  # type: ignore[literal-required]
        if not cycle.response_started:
            refusal = limit_refusals(self.limits).body_timeout
            self.transport.write(self._refusal(refusal, cycle.scope["path"]))
            cycle.response_started = cycle.response_complete = True
        # The app sees a disconnect (connection_lost wakes its receive()).
        self.transport.close()

    def _close_with(self, response: bytes) -> None:
        self._cancel_head_timer()
        self.transport.write(response)
        self.transport.close()

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _cancel_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    @staticmethod
    def _observe(reason: str) -> None:
        if refusal_observer is not None:
            refusal_observer(reason)
