"""``app.protocol`` on a real loopback socket, without a server process."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import re
import socket
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from app import Settings, create_app
from app.limits import ConnectionLimits, admitted
from app.oip import is_protocol_path
from app.protocol import ADMITTED_KEY, HardenedHttpToolsProtocol
from app.schemas import PATIENT_EXAMPLE
from app.testing import free_port


def _protocols(
    app: Any, state: ServerState | None = None, limits: ConnectionLimits | None = None
) -> tuple[Callable[[], HardenedHttpToolsProtocol], list[HardenedHttpToolsProtocol]]:
    """A protocol factory for asyncio's ``create_server`` serving ``app`` (with ``limits``
    instead of the process's settings), and the list of the connections' protocols it made."""
    config = uvicorn.Config(app, http=HardenedHttpToolsProtocol, loop="asyncio", lifespan="off")
    config.load()
    shared = state or ServerState()
    accepted: list[HardenedHttpToolsProtocol] = []

    def protocol() -> HardenedHttpToolsProtocol:
        accepted.append(HardenedHttpToolsProtocol(config=config, server_state=shared, app_state={}))
        if limits is not None:
            accepted[-1].limits = limits
        return accepted[-1]

    return protocol, accepted


async def _first(accepted: list[HardenedHttpToolsProtocol]) -> HardenedHttpToolsProtocol:
    for _ in range(500):
        if accepted:
            return accepted[0]
        await asyncio.sleep(0.01)
    raise AssertionError("the server accepted no connection in 5 s")


async def _nodelay_of_accepted_connection(listener: socket.socket, port: int) -> int:
    async def app(scope: object, receive: object, send: object) -> None:  # never called
        raise AssertionError

    protocol, accepted = _protocols(app)
    server = await asyncio.get_running_loop().create_server(protocol, sock=listener)
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        sock = (await _first(accepted)).transport.get_extra_info("socket")
        value: int = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        writer.close()
        return value
    finally:
        server.close()


def test_connections_from_a_listener_bound_by_uvicorn_have_nodelay() -> None:
    """uvicorn issue #3149: its ``bind_socket()`` listener (``proto`` 0) makes asyncio skip
    ``TCP_NODELAY``; every supervised worker accepts on such a listener."""
    port = free_port()
    listener = uvicorn.Config("x:y", host="127.0.0.1", port=port).bind_socket()
    assert listener.proto == 0  # the case asyncio does not handle (else this test is moot)
    try:
        assert asyncio.run(_nodelay_of_accepted_connection(listener, port)) != 0
    finally:
        listener.close()


async def _answer_after_shutdown_began(port: int) -> bytes:
    """What a connection accepted after the worker's shutdown began gets for its request."""

    async def app(scope: dict[str, object], receive: object, send: Any) -> None:
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
        )
        await send({"type": "http.response.body", "body": b"ok"})

    state = ServerState()
    protocol, accepted = _protocols(app, state)
    server = await asyncio.get_running_loop().create_server(protocol, "127.0.0.1", port)
    try:
        _, known = await asyncio.open_connection("127.0.0.1", port)
        await _first(accepted)
        for connection in list(state.connections):  # what uvicorn's Server.shutdown does
            connection.shutdown()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)  # a late one
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 10)  # until the server closes
        known.close()
        writer.close()
        return answer
    finally:
        server.close()


def test_a_connection_accepted_after_shutdown_began_is_drained_too() -> None:
    """Measured once in a reload under load: such a connection kept serving until the
    shutdown timeout, then was reset. It must get ``Connection: close`` at once."""
    answer = asyncio.run(_answer_after_shutdown_began(free_port()))
    assert answer.startswith(b"HTTP/1.1 200"), answer
    assert b"\r\nconnection: close\r\n" in answer.lower()
    assert answer.endswith(b"ok")


class _RecordingTransport:
    """The connection's transport, with every write recorded."""

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


async def _exchange(request: bytes, body: bytes, *, fail_after_head: bool = False) -> Any:
    """One request to a server on the hardened protocol: (the client's bytes, the writes)."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        headers = [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if fail_after_head:
            raise RuntimeError("the app failed after the head")
        await send({"type": "http.response.body", "body": body})

    protocol, accepted = _protocols(app)
    listener = socket.create_server(("127.0.0.1", 0))
    server = await asyncio.get_running_loop().create_server(protocol, sock=listener)
    try:
        reader, writer = await asyncio.open_connection(*listener.getsockname())
        connection = await _first(accepted)
        recording = _RecordingTransport(connection.transport)
        connection.transport = recording  # type: ignore[assignment]
        writer.write(request)
        received = b""
        while len(received) < len(body) or b"\r\n\r\n" not in received:
            chunk = await asyncio.wait_for(reader.read(1 << 20), 5)
            if not chunk:
                break
            received += chunk
            if b"\r\n\r\n" in received and len(received.partition(b"\r\n\r\n")[2]) >= len(
                body if not request.startswith(b"HEAD") else b""
            ):
                break
        writer.close()
        return received, recording.writes
    finally:
        server.close()


GET = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"


def test_a_response_head_and_body_go_out_in_one_write() -> None:
    """uvicorn writes them separately: two send() calls, two packets per /predict."""
    received, writes = asyncio.run(_exchange(GET, b'{"probability":0.5}'))
    assert len(writes) == 1
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert received.endswith(b'\r\n\r\n{"probability":0.5}')


def test_a_head_response_without_body_write_is_still_sent() -> None:
    received, writes = asyncio.run(_exchange(b"HEAD / HTTP/1.1\r\nhost: x\r\n\r\n", b"abc"))
    assert len(writes) == 1
    assert received.startswith(b"HTTP/1.1 200 OK\r\n") and received.endswith(b"\r\n\r\n")


def test_a_large_body_is_not_copied_behind_the_head() -> None:
    body = b"x" * (200 * 1024)
    received, writes = asyncio.run(_exchange(GET, body))
    assert len(writes) == 2 and writes[1] == body
    assert received.endswith(body)


def test_the_head_is_sent_when_the_app_fails_after_it() -> None:
    """uvicorn then closes the connection; the held head must not be lost."""
    received, writes = asyncio.run(_exchange(GET, b"never sent", fail_after_head=True))
    assert len(writes) == 1
    assert received.startswith(b"HTTP/1.1 200 OK\r\n") and b"never sent" not in received


async def _exchange_pieces(
    pieces: list[bytes], answers: int, limits: ConnectionLimits | None = None
) -> list[bytes]:
    """Send ``pieces`` (one write each, a pause between) to :func:`_echo`; return the
    first ``answers`` responses (fewer if the connection closes first), each as the bytes
    received."""
    protocol, _ = _protocols(_echo, limits=limits)
    listener = socket.create_server(("127.0.0.1", 0))
    server = await asyncio.get_running_loop().create_server(protocol, sock=listener)
    try:
        return await _send_pieces(listener.getsockname(), pieces, answers)
    finally:
        server.close()


async def _echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An app that answers each request with its own body, in brackets."""
    if scope["type"] != "http":
        return
    if ADMITTED_KEY in scope:  # as the service's middleware does when a request ends
        admitted.release()
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    echo = b"[" + body + b"]"
    headers = [(b"content-length", str(len(echo)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": echo})


async def _send_pieces(address: Any, pieces: list[bytes], answers: int) -> list[bytes]:
    """Send ``pieces`` to a server at ``address`` on one connection, one write each, a
    pause between; return the first ``answers`` responses (fewer if it closes first)."""
    reader, writer = await asyncio.open_connection(*address)
    for piece in pieces:
        writer.write(piece)
        await writer.drain()
        await asyncio.sleep(0.05)
    responses: list[bytes] = []
    while len(responses) < answers:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            lines = head.lower().split(b"\r\n")
            length = next(int(h[15:]) for h in lines if h.startswith(b"content-length:"))
            responses.append(head + await reader.readexactly(length))
        except asyncio.IncompleteReadError:  # closed
            break
    writer.close()
    return responses


async def _echo_bodies(pieces: list[bytes], answers: int) -> bytes:
    """What :func:`_exchange_pieces` received, in one piece."""
    return b"".join(await _exchange_pieces(pieces, answers))


def _h2c_post(body: bytes, *, chunked: bool = False) -> bytes:
    """A POST as Java's HttpClient or ``curl --http2`` sends it on ``http://``."""
    length = b"transfer-encoding: chunked" if chunked else b"content-length: %d" % len(body)
    return (
        b"POST /predict HTTP/1.1\r\nhost: x\r\nconnection: Upgrade, HTTP2-Settings\r\n"
        b"upgrade: h2c\r\nhttp2-settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"
        b"content-type: application/json\r\n" + length + b"\r\n\r\n" + body
    )


def test_an_h2c_upgrade_request_is_served_as_http_1_1_with_its_body() -> None:
    """httptools stops at an upgrade request's head; uvicorn handed the app an empty
    body, so every such POST was refused (422) and its patient dropped."""
    body = b'{"age": 54}'
    plain = b"POST /b HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabc"
    # In one write, followed by a pipelined request on the same connection.
    received = asyncio.run(_echo_bodies([_h2c_post(body) + plain], answers=2))
    assert received.count(b"HTTP/1.1 200 OK") == 2
    assert b"HTTP/1.1 101" not in received
    assert received.index(b"[" + body + b"]") < received.index(b"[abc]")
    # Head, then the body in two pieces, then the next request.
    head, _, _ = _h2c_post(body).partition(b"\r\n\r\n")
    pieces = [head + b"\r\n\r\n", body[:4], body[4:] + plain[:10], plain[10:]]
    received = asyncio.run(_echo_bodies(pieces, answers=2))
    assert received.count(b"HTTP/1.1 200 OK") == 2
    assert b"[" + body + b"]" in received and b"[abc]" in received
    # Without a body (a GET) nothing changes.
    get = b"GET / HTTP/1.1\r\nhost: x\r\nconnection: Upgrade\r\nupgrade: h2c\r\n\r\n"
    assert asyncio.run(_echo_bodies([get], answers=1)).startswith(b"HTTP/1.1 200 OK")


def test_an_upgrade_request_with_a_chunked_body_is_refused_clearly() -> None:
    """Where a chunked body ends after an upgrade head, the parser does not say: a 400
    that says what to send instead, and the connection closed."""
    received = asyncio.run(_echo_bodies([_h2c_post(b"3\r\nabc\r\n0\r\n\r\n", chunked=True)], 1))
    assert received.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"Content-Length" in received and b"connection: close" in received.lower()


def test_websocket_handshakes_are_served_as_http_and_release_their_slot() -> None:
    """uvicorn's WebSocket path never released the concurrency slot the protocol had
    counted (the app, here as in the service, releases it): 64 handshakes locked a worker
    into 503s until it was restarted."""
    before = admitted.count
    handshake = (
        b"GET /model HTTP/1.1\r\nhost: x\r\nconnection: Upgrade\r\nupgrade: websocket\r\n"
        b"sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    with_body = _h2c_post(b"abc").replace(b"upgrade: h2c", b"upgrade: websocket")
    received = asyncio.run(_echo_bodies([handshake * 3 + with_body], answers=4))
    assert received.count(b"HTTP/1.1 200 OK") == 4
    assert b"101" not in received.partition(b"\r\n")[0]
    assert received.endswith(b"[abc]")
    assert admitted.count == before


#: Short deadlines, so that the timeouts below take a fraction of a second.
_TIGHT = ConnectionLimits(max_header_bytes=1024, header_timeout=0.3, body_timeout=0.3)


def _refused(
    pieces: list[bytes], limits: ConnectionLimits, answers: int = 1
) -> list[tuple[bytes, Any]]:
    """The status line and JSON body of each response :func:`_exchange_pieces` received."""
    responses = asyncio.run(_exchange_pieces(pieces, answers, limits))
    return [(r.partition(b"\r\n")[0], json.loads(r.partition(b"\r\n\r\n")[2])) for r in responses]


_BIG_HEADER = b"x-big: " + b"a" * 2000 + b"\r\n"
_PENDING_BODY = b"Host: x\r\nContent-Length: 10\r\n\r\nab"
_BAD_CHUNK = b"Host: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n"


@pytest.mark.parametrize(
    ("pieces", "limits", "status", "key"),
    [
        # 431: the path came before the headers that broke the limit...
        ([b"GET /v2/models/heart HTTP/1.1\r\n" + _BIG_HEADER], _TIGHT, 431, "error"),
        ([b"GET /predict HTTP/1.1\r\n" + _BIG_HEADER], _TIGHT, 431, "detail"),
        # ... or only its beginning did, in a request line beyond the limit.
        ([b"GET /v2/models/" + b"a" * 2000], _TIGHT, 431, "error"),
        ([b"GET /v2?" + b"a" * 2000], _TIGHT, 431, "error"),
        ([b"GET /v2x/" + b"a" * 2000], _TIGHT, 431, "detail"),
        # 408 for a head that stalls: the path as far as it arrived, if it has.
        ([b"GET /v2/models/heart HTTP/1.1\r\nHost: x\r\n"], _TIGHT, 408, "error"),
        ([b"GET /v2/mo"], _TIGHT, 408, "error"),
        ([b"GET /predict HTTP/1.1\r\n"], _TIGHT, 408, "detail"),
        ([b"GE"], _TIGHT, 408, "detail"),
        # 408 for a body that stalls.
        ([b"POST /v2/models/heart/infer HTTP/1.1\r\n" + _PENDING_BODY], _TIGHT, 408, "error"),
        ([b"POST /predict HTTP/1.1\r\n" + _PENDING_BODY], _TIGHT, 408, "detail"),
        # 503 from the protocol itself (the limit 0 sheds every request but the probes),
        # on a connection kept open and on one that closes.
        (
            [b"GET /v2/models/heart HTTP/1.1\r\nHost: x\r\n\r\n"],
            dataclasses.replace(_TIGHT, max_concurrent_requests=0),
            503,
            "error",
        ),
        (
            [b"GET /v2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"],
            dataclasses.replace(_TIGHT, max_concurrent_requests=0),
            503,
            "error",
        ),
        (
            [b"GET /predict HTTP/1.1\r\nHost: x\r\n\r\n"],
            dataclasses.replace(_TIGHT, max_concurrent_requests=0),
            503,
            "detail",
        ),
        # 400 for an upgrade request with a chunked body.
        (
            [_h2c_post(b"0\r\n\r\n", chunked=True).replace(b"/predict", b"/v2")],
            _TIGHT,
            400,
            "error",
        ),
        ([_h2c_post(b"0\r\n\r\n", chunked=True)], _TIGHT, 400, "detail"),
        # 400 for a request the parser refuses: in a header, the body's framing, the
        # request line; and TLS sent to the plain HTTP port (no path).
        ([b"GET /v2/models/heart HTTP/1.1\r\nHost: x\r\nno colon\r\n\r\n"], _TIGHT, 400, "error"),
        ([b"GET /predict HTTP/1.1\r\nHost: x\r\nno colon\r\n\r\n"], _TIGHT, 400, "detail"),
        ([b"POST /v2/models/heart/infer HTTP/1.1\r\n" + _BAD_CHUNK], _TIGHT, 400, "error"),
        ([b"POST /predict HTTP/1.1\r\n" + _BAD_CHUNK], _TIGHT, 400, "detail"),
        ([b"GET /v2 HTTP/9.9\r\n\r\n"], _TIGHT, 400, "error"),
        ([b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"], _TIGHT, 400, "detail"),
    ],
)
def test_refusals_of_the_protocol_itself_take_the_error_shape_of_their_path(
    pieces: list[bytes],
    limits: ConnectionLimits,
    status: int,
    key: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Written before routing, these were ``{"detail": ...}`` below /v2 too, where the Open
    Inference Protocol requires ``{"error": ...}`` of every failed request."""
    monkeypatch.setattr("app.refusals.oip_path", is_protocol_path)  # as the app does
    [(line, body)] = _refused(pieces, limits)
    assert line.startswith(b"HTTP/1.1 %d " % status), line
    assert list(body) == [key], body


@pytest.mark.parametrize(
    ("pieces", "reason"),
    [
        ([b"GET /predict?" + b"a" * 2000], "header_too_large"),
        ([b"GET /predict HTTP/1.1\r\n"], "header_timeout"),
        ([b"GET /predict HTTP/1.1\r\nHost: x\r\nno colon\r\n\r\n"], "malformed_request"),
    ],
)
def test_each_connection_refused_before_a_request_is_counted_by_reason(
    pieces: list[bytes], reason: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``heart_http_refused_connections_total{reason}`` is the only trace these leave in
    /metrics (no request, so no request counter): each kind must reach it, once."""
    seen: list[str] = []
    monkeypatch.setattr("app.protocol.refusal_observer", seen.append)
    _refused(pieces, _TIGHT)
    assert seen == [reason]


def test_a_stalled_head_after_a_request_below_v2_is_not_taken_for_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A request's path is not the next one's: an empty line (which the parser skips) sent
    after a /v2 request, then nothing, times out as a request whose path is unknown."""
    monkeypatch.setattr("app.refusals.oip_path", is_protocol_path)
    first = b"GET /v2/models/heart HTTP/1.1\r\nHost: x\r\n\r\n"
    shed = dataclasses.replace(_TIGHT, max_concurrent_requests=0)
    (shed_line, shed_body), (line, body) = _refused([first, b"\r\n"], shed, 2)
    assert shed_line.startswith(b"HTTP/1.1 503 ") and list(shed_body) == ["error"]
    assert line.startswith(b"HTTP/1.1 408 ") and list(body) == ["detail"]


def test_a_request_the_parser_refuses_gets_json_without_its_contents_and_a_close(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """uvicorn answered it ``text/plain`` on every path, so a client reading the refusal as
    JSON failed on it; the answer must still not echo the request, and close the
    connection (the parser cannot resume). A request's path is not the next one's."""
    monkeypatch.setattr("app.refusals.oip_path", is_protocol_path)
    secret = b"x-patient: age 54 cholesterol 245"
    bad = b"GET /v2/models/heart HTTP/1.1\r\nHost: x\r\n" + secret + b"\r\nno colon\r\n\r\n"
    [refusal] = asyncio.run(_exchange_pieces([bad], answers=2))  # one answer, then closed
    head, _, body = refusal.partition(b"\r\n\r\n")
    lines = head.lower().split(b"\r\n")
    assert lines[0] == b"http/1.1 400 bad request"
    assert b"content-type: application/json" in lines and b"connection: close" in lines
    message = json.loads(body)["error"]
    assert message.startswith("Invalid HTTP request received.")
    assert secret not in refusal and b"heart" not in refusal
    # After a request below /v2 on the same connection, garbage has no path of its own.
    good = b"GET /v2 HTTP/1.1\r\nHost: x\r\n\r\n"
    answered, refused = asyncio.run(_exchange_pieces([good, b"garbage\r\n\r\n"], answers=3))
    assert answered.startswith(b"HTTP/1.1 200 ")
    assert list(json.loads(refused.partition(b"\r\n\r\n")[2])) == ["detail"]


#: The service's answers below, with the deadlines out of the way: a close within the test's
#: few seconds is the service's own, never the body deadline's.
_PATIENT_LIMITS = ConnectionLimits(header_timeout=60.0, body_timeout=60.0)
_KEY = "test-key-0123456789abcdef"


async def _service_answers(
    app: Any, pieces: list[bytes], limits: ConnectionLimits = _PATIENT_LIMITS
) -> tuple[bytes, bool]:
    """Send ``pieces`` to the service's ``app`` (started) on the hardened protocol: what
    came back within 3 s, and whether the server closed the connection by then."""
    protocol, _ = _protocols(app, limits=limits)
    listener = socket.create_server(("127.0.0.1", 0))
    server = await asyncio.get_running_loop().create_server(protocol, sock=listener)
    try:
        async with app.router.lifespan_context(app):
            reader, writer = await asyncio.open_connection(*listener.getsockname())
            for piece in pieces:
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(0.05)
            received, closed = b"", False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(3):
                    while chunk := await reader.read(65536):
                        received += chunk
                    closed = True
            writer.close()
            return received, closed
    finally:
        server.close()


def _service(artifact_path: Path, **settings: Any) -> Any:
    return create_app(Settings(model_path=artifact_path, max_body_bytes=2048, **settings))


_JSON_HEAD = b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
_HUGE = b"Content-Length: 99999999999\r\n\r\n"
_OVER = b"Transfer-Encoding: chunked\r\n\r\n" + b"c00\r\n" + b" " * 0xC00 + b"\r\n"


@pytest.mark.parametrize("path", [b"/predict", b"/v2/models/heart/infer"])
@pytest.mark.parametrize(
    ("framing", "key"),
    [
        pytest.param(_HUGE, None, id="content-length"),
        pytest.param(_OVER, None, id="chunked"),
        pytest.param(_HUGE, _KEY, id="unauthenticated"),
    ],
)
def test_a_body_refused_unread_closes_the_connection(
    artifact_path: Path, path: bytes, framing: bytes, key: str | None
) -> None:
    """A 413 (or, with an API key configured, the 401 that comes first) left the connection
    open, waiting for the declared 100 GB (or the rest of a chunked body over the limit)
    that would never be read, while the parser churned through whatever the client sent,
    until the body deadline. The answer says ``Connection: close``, and the server closes."""
    app = _service(artifact_path, api_key=key)
    received, closed = asyncio.run(_service_answers(app, [b"POST " + path + _JSON_HEAD + framing]))
    head = received.partition(b"\r\n\r\n")[0].lower().split(b"\r\n")
    assert head[0] == (
        b"http/1.1 401 unauthorized" if key else b"http/1.1 413 request entity too large"
    )
    assert b"connection: close" in head
    assert closed


def test_a_refusal_that_leaves_only_a_small_body_keeps_the_connection(artifact_path: Path) -> None:
    """A body within the limit (here a 415's) is discarded as it arrives: the client's next
    request on the connection is answered."""
    app = _service(artifact_path)
    small = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
    pieces = [small + b"Content-Length: 100\r\n\r\n", b" " * 100, b"GET /health HTTP/1.1\r\n\r\n"]
    received, closed = asyncio.run(_service_answers(app, pieces))
    assert received.startswith(b"HTTP/1.1 415 ")
    assert b"connection: close" not in received.lower()
    assert b"HTTP/1.1 200 OK" in received and not closed


#: One request in flight at a time: a request pipelined behind another is shed by the app.
_ONE_AT_A_TIME = dataclasses.replace(_PATIENT_LIMITS, max_concurrent_requests=1)
_IN_FLIGHT = b"GET /model HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture
def no_request_admitted(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker's count of requests in flight at 0 (a few tests above leave theirs)."""
    monkeypatch.setattr(admitted, "count", 0)


def _responses(received: bytes) -> list[list[bytes]]:
    """The head lines (lower case) of each response in ``received``, in order."""
    heads = []
    while b"\r\n\r\n" in received:
        head, _, received = received.partition(b"\r\n\r\n")
        lines = head.lower().split(b"\r\n")
        length = next(int(h[15:]) for h in lines if h.startswith(b"content-length:"))
        heads.append(lines)
        received = received[length:]
    return heads


@pytest.mark.usefixtures("no_request_admitted")
@pytest.mark.parametrize(
    "framing",
    [pytest.param(_HUGE, id="content-length"), pytest.param(_OVER, id="chunked")],
)
def test_a_request_shed_by_the_app_with_its_body_unread_closes_the_connection(
    artifact_path: Path, framing: bytes
) -> None:
    """The middleware's 503 (for a request pipelined behind one still in flight) kept the
    connection, which then waited for the declared 100 GB (or the rest of a chunked body)
    until the body deadline, as the 413 once did: it now says ``Connection: close`` and
    closes, like every refusal that leaves a large body unread."""
    app = _service(artifact_path)
    pieces = [_IN_FLIGHT + b"POST /predict" + _JSON_HEAD + framing]
    received, closed = asyncio.run(_service_answers(app, pieces, _ONE_AT_A_TIME))
    first, shed = _responses(received)
    assert first[0] == b"http/1.1 200 ok"
    assert shed[0] == b"http/1.1 503 service unavailable"
    assert b"retry-after: 1" in shed and b"connection: close" in shed
    assert closed


@pytest.mark.usefixtures("no_request_admitted")
def test_a_request_shed_by_the_app_with_a_small_body_keeps_the_connection(
    artifact_path: Path,
) -> None:
    """A body within the limit is discarded as it arrives: the next request is answered."""
    app = _service(artifact_path)
    small = b"POST /predict" + _JSON_HEAD + b"Content-Length: 100\r\n\r\n" + b" " * 100
    pieces = [_IN_FLIGHT + small, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"]
    received, closed = asyncio.run(_service_answers(app, pieces, _ONE_AT_A_TIME))
    statuses = [head[0] for head in _responses(received)]
    assert statuses == [b"http/1.1 200 ok", b"http/1.1 503 service unavailable", b"http/1.1 200 ok"]
    assert b"connection: close" not in received.lower() and not closed


@pytest.mark.parametrize(
    "framing",
    [pytest.param(_HUGE, id="content-length"), pytest.param(_OVER, id="chunked")],
)
def test_a_request_shed_by_the_protocol_with_its_body_unread_closes_the_connection(
    artifact_path: Path, framing: bytes
) -> None:
    """The protocol's own 503 (no request in flight on the connection) follows the same rule."""
    app = _service(artifact_path)
    shed_all = dataclasses.replace(_PATIENT_LIMITS, max_concurrent_requests=0)
    received, closed = asyncio.run(
        _service_answers(app, [b"POST /predict" + _JSON_HEAD + framing], shed_all)
    )
    [shed] = _responses(received)
    assert shed[0] == b"http/1.1 503 service unavailable" and b"connection: close" in shed
    assert closed


async def _uvicorn_answers(requests: list[list[bytes]]) -> list[bytes]:
    """The first response to each of ``requests`` (its pieces, on a connection of its
    own) from a real uvicorn ``Server`` on the hardened protocol, whose clock keeps the
    ``Date`` of its answers."""
    config = uvicorn.Config(
        _echo, http=HardenedHttpToolsProtocol, loop="asyncio", lifespan="off", log_level="error"
    )
    server = uvicorn.Server(config)
    listener = socket.create_server(("127.0.0.1", 0))
    serving = asyncio.create_task(server.serve(sockets=[listener]))
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        answers = []
        for pieces in requests:
            [answer] = await _send_pieces(listener.getsockname(), pieces, 1)
            answers.append(answer)
        return answers
    finally:
        server.should_exit = True
        await serving
        listener.close()


_IMF_FIXDATE = re.compile(rb"[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT")


@pytest.mark.parametrize("shed", [False, True], ids=["limits", "shed"])
def test_every_refusal_of_the_protocol_has_a_date(
    shed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RFC 9110 6.6.1: an origin server with a clock sends ``Date`` in every answer. uvicorn
    adds it to each response of the app; the protocol's own ready-made refusals had none."""
    limits = dataclasses.replace(_TIGHT, max_concurrent_requests=0 if shed else 64)
    monkeypatch.setattr("app.protocol.configured_limits", lambda: limits)
    kinds = (
        {
            503: [b"GET /predict HTTP/1.1\r\nHost: x\r\n\r\n"],
            "503, closing": [b"GET /predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"],
        }
        if shed
        else {
            431: [b"GET /predict HTTP/1.1\r\n" + _BIG_HEADER],
            "408 (head)": [b"GET /predict HTTP/1.1\r\n"],
            "408 (body)": [b"POST /predict HTTP/1.1\r\n" + _PENDING_BODY],
            "400 (parser)": [b"GET /predict HTTP/1.1\r\nHost: x\r\nno colon\r\n\r\n"],
            "400 (upgrade)": [_h2c_post(b"0\r\n\r\n", chunked=True)],
        }
    )
    before = time.time()
    answers = asyncio.run(_uvicorn_answers(list(kinds.values())))
    for kind, answer in zip(kinds, answers, strict=True):
        status = str(kind)[:3].encode()
        lines = answer.partition(b"\r\n\r\n")[0].split(b"\r\n")
        assert lines[0].startswith(b"HTTP/1.1 " + status + b" "), (kind, lines[0])
        dates = [line[6:] for line in lines if line.lower().startswith(b"date: ")]
        assert len(dates) == 1, (kind, lines)
        assert _IMF_FIXDATE.fullmatch(dates[0]), (kind, dates[0])
        sent = parsedate_to_datetime(dates[0].decode()).timestamp()
        assert before - 2 <= sent <= time.time() + 1, (kind, dates[0])


def _predict(body: bytes) -> bytes:
    return b"POST /predict" + _JSON_HEAD + b"Content-Length: %d\r\n\r\n" % len(body) + body


_GARBAGE = b"garbage\r\n\r\n"


@pytest.mark.parametrize("valid", [1, 2], ids=["one", "two pipelined"])
def test_a_parser_400_after_valid_requests_comes_after_their_answers(
    artifact_path: Path, valid: int
) -> None:
    """HTTP/1.1 answers in request order (RFC 9112 9.3.2). The 400 for garbage sent behind
    a valid /predict in the same write was written at once, before the prediction: the
    client read it as the answer to its valid request. The answers now come first, then
    the 400 and the close."""
    app = _service(artifact_path)
    body = json.dumps(PATIENT_EXAMPLE).encode()
    received, closed = asyncio.run(_service_answers(app, [_predict(body) * valid + _GARBAGE]))
    statuses = [head[0] for head in _responses(received)]
    assert statuses == [b"http/1.1 200 ok"] * valid + [b"http/1.1 400 bad request"], received
    answers = received.split(b"HTTP/1.1 ")[1:]
    assert all(b'"probability":' in answer for answer in answers[:valid])
    assert b"connection: close" in answers[-1].lower()
    assert json.loads(answers[-1].partition(b"\r\n\r\n")[2])["detail"].startswith(
        "Invalid HTTP request received."
    )
    assert closed


def test_a_parser_400_in_a_queued_requests_body_comes_after_the_earlier_answer() -> None:
    """A broken chunk in the body of a request pipelined behind one still in flight: that
    request is never run (the 400 is its answer), and the earlier one is answered first.
    The slot it took of ``HEART_MAX_CONCURRENT_REQUESTS`` is given back."""
    before = admitted.count
    pipelined = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\n" + _BAD_CHUNK
    answered, refused = asyncio.run(_exchange_pieces([pipelined], answers=3))
    assert admitted.count == before
    assert answered.startswith(b"HTTP/1.1 200 ") and answered.endswith(b"[]")
    assert refused.startswith(b"HTTP/1.1 400 ") and b"connection: close" in refused.lower()


async def _closing_answer_then(garbage: bytes) -> bytes:
    """All that comes back for a request the app answers with ``Connection: close``, sent
    with ``garbage`` behind it in the same write."""

    async def closing(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if ADMITTED_KEY in scope:
            admitted.release()
        headers = [(b"content-length", b"2"), (b"connection", b"close")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})

    protocol, _ = _protocols(closing)
    listener = socket.create_server(("127.0.0.1", 0))
    server = await asyncio.get_running_loop().create_server(protocol, sock=listener)
    try:
        reader, writer = await asyncio.open_connection(*listener.getsockname())
        writer.write(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n" + garbage)
        received = await asyncio.wait_for(reader.read(), 5)  # until the server closes
        writer.close()
        return received
    finally:
        server.close()


def test_no_parser_400_follows_an_answer_that_closes_the_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An earlier answer that says ``Connection: close`` is the connection's last: the 400
    deferred behind it is never written (nor read as the answer to anything)."""
    seen: list[str] = []
    monkeypatch.setattr("app.protocol.refusal_observer", seen.append)
    received = asyncio.run(_closing_answer_then(_GARBAGE))
    assert seen == ["malformed_request"]  # the parser did refuse the garbage
    assert received.startswith(b"HTTP/1.1 200 ") and received.endswith(b"\r\n\r\nok")
    assert received.count(b"HTTP/1.1") == 1


async def _left_with_requests_queued(before: int) -> int:
    """The worker's count of admitted requests after a client pipelines three requests to a
    slow app and leaves before the first answer, once the first one's app has finished."""

    async def slow(scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            await asyncio.sleep(0.2)
            headers = [(b"content-length", b"2")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"ok"})
        finally:
            if ADMITTED_KEY in scope:  # as the service's middleware does
                admitted.release()

    protocol, _ = _protocols(slow)
    listener = socket.create_server(("127.0.0.1", 0))
    server = await asyncio.get_running_loop().create_server(protocol, sock=listener)
    try:
        _, writer = await asyncio.open_connection(*listener.getsockname())
        writer.write(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n" * 3)
        await writer.drain()
        await asyncio.sleep(0.05)
        assert admitted.count == before + 3  # all three counted (else this test is moot)
        writer.close()
        for _ in range(100):
            await asyncio.sleep(0.05)
            if admitted.count == before:
                break
        return admitted.count
    finally:
        server.close()


def test_requests_queued_on_a_connection_that_is_lost_give_back_their_slots() -> None:
    """uvicorn never starts the requests pipelined behind one in flight once the connection
    is lost, so the middleware never released their slots of HEART_MAX_CONCURRENT_REQUESTS:
    a client that pipelined requests and left took them for good, and 64 such slots made
    the worker shed every request but the probes until it was restarted."""
    before = admitted.count
    assert asyncio.run(_left_with_requests_queued(before)) == before
