"""How the protocol's connections send: a response's head and body in one write, Nagle off.

uvicorn leaves two costs on a response, both measured on ``/predict``
(bench/PROFILE.md, BENCHMARKS.md): it writes a response's head and its body in
two ``transport.write`` calls, and on a listener it bound itself (its
supervisor's, as under ``heart-api serve``) asyncio leaves Nagle's algorithm
on. Neither concerns parsing HTTP or the service's limits, so both are kept
apart from ``app.protocol``, which installs them on each connection
(:func:`no_delay`) and each response (:class:`HeadWithBody`).
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any, Final

from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

#: Bodies up to this size are copied behind the head; larger ones are sent after it.
_JOIN_LIMIT: Final[int] = 64 * 1024


class HeadWithBody:
    """The connection as one response cycle sees it: the head waits for the body.

    uvicorn writes the status line and headers, then the body, in two
    ``transport.write`` calls: with Nagle off that is two ``send()`` system
    calls and two packets per response, and on loopback each send also runs
    the receiver's network stack, so the second one costs /predict about as
    much as scoring the patient (bench/PROFILE.md). Held, the head goes out with
    the first body write (every response has one, even an empty body), in one
    call. Any other write or a close sends the held head first, so nothing is
    reordered or lost; bodies larger than ``_JOIN_LIMIT`` are not copied.
    """

    __slots__ = ("_cycle", "_head", "_held", "_transport")

    def __init__(self, transport: asyncio.Transport, cycle: RequestResponseCycle) -> None:
        self._transport = transport
        self._cycle = cycle
        self._head: bytes | None = None
        self._held = False

    @classmethod
    def install(cls, cycle: RequestResponseCycle) -> None:
        """Put the wrapper between ``cycle`` and its connection; the held head is also
        sent when the response completes (a HEAD response has no body write)."""
        joined = cls(cycle.transport, cycle)
        completed = cycle.on_response

        def on_response() -> None:
            joined.flush()
            completed()

        cycle.transport = joined  # type: ignore[assignment]
        cycle.on_response = on_response

    def write(self, data: bytes) -> None:
        head = self._head
        if head is not None:
            self._head = None
            if len(data) <= _JOIN_LIMIT:
                self._transport.write(head + data)
                return
            self._transport.write(head)
        elif not self._held and self._cycle.response_started:
            # The first write after the response started is its head (uvicorn's send).
            self._held = True
            self._head = data
            return
        self._transport.write(data)

    def flush(self) -> None:
        if self._head is not None:
            self._transport.write(self._head)
            self._head = None

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


_TCP_FAMILIES: Final[frozenset[int]] = frozenset({socket.AF_INET, socket.AF_INET6})


def no_delay(transport: asyncio.Transport) -> None:
    """Turn Nagle's algorithm off where asyncio did not (uvicorn issue #3149).

    asyncio sets ``TCP_NODELAY`` on an accepted connection only when the
    listening socket object says ``proto == IPPROTO_TCP``. Sockets bound by
    uvicorn's ``Config.bind_socket()`` (every supervised worker, ``uvicorn
    --workers``) say 0, so a response written in two pieces waited for the
    client's delayed ACK, and ``heart-api serve`` served ``/predict`` at about
    two thirds of the rate of the same app on a listener of its own
    (BENCHMARKS.md). One ``setsockopt`` per connection, and only where needed.
    """
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in _TCP_FAMILIES and sock.proto != socket.IPPROTO_TCP:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
