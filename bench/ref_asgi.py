"""Reference 1: the fastest thing uvicorn can serve, a raw ASGI app with a constant reply.

No framework, no validation, no model: it reads the request body (so the
transfer costs the same as for the real service) and answers a fixed JSON
document shaped like a prediction. What uvicorn, its HTTP parser and the event
loop cost per request is the ceiling for every other server in the benchmark.

Run: ``uvicorn bench.ref_asgi:app``
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

BODY = json.dumps(
    {
        "probability": 0.5,
        "prediction": 1,
        "label": "presence of heart disease",
        "threshold": 0.5,
        "model_version": "reference",
    },
    separators=(",", ":"),
).encode()
HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(BODY)).encode()),
]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    more = True
    while more:  # drain the request body, as any real endpoint must
        message = await receive()
        more = bool(message.get("more_body", False))
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
