"""``app.protocol`` on a real loopback socket, without a server process."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import uvicorn
from uvicorn.server import ServerState

from app.protocol import HardenedHttpToolsProtocol
from app.testing import free_port


async def _nodelay_of_accepted_connection(listener: socket.socket, port: int) -> int:
    async def app(scope: object, receive: object, send: object) -> None:  # never called
        raise AssertionError

    config = uvicorn.Config(app, http=HardenedHttpToolsProtocol, loop="asyncio", lifespan="off")
    config.load()
    accepted: list[HardenedHttpToolsProtocol] = []

    def protocol() -> HardenedHttpToolsProtocol:
        accepted.append(
            HardenedHttpToolsProtocol(config=config, server_state=ServerState(), app_state={})
        )
        return accepted[-1]

    server = await asyncio.get_running_loop().create_server(protocol, sock=listener)
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(100):
            if accepted:
                break
            await asyncio.sleep(0.01)
        sock = accepted[0].transport.get_extra_info("socket")
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

    config = uvicorn.Config(app, http=HardenedHttpToolsProtocol, loop="asyncio", lifespan="off")
    config.load()
    state = ServerState()
    accepted: list[HardenedHttpToolsProtocol] = []

    def protocol() -> HardenedHttpToolsProtocol:
        accepted.append(HardenedHttpToolsProtocol(config=config, server_state=state, app_state={}))
        return accepted[-1]

    server = await asyncio.get_running_loop().create_server(protocol, "127.0.0.1", port)
    try:
        _, known = await asyncio.open_connection("127.0.0.1", port)
        while not accepted:
            await asyncio.sleep(0.01)
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
