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
from typing import Any, Final

Message = MutableMapping[str, Any]

#: The reply of every reference: a prediction's shape, no model behind it.
CONSTANT: Final[dict[str, Any]] = {
    "probability": 0.5,
    "prediction": 1,
    "label": "presence of heart disease",
    "threshold": 0.5,
    "model_version": "reference",
}
BODY = json.dumps(CONSTANT, separators=(",", ":")).encode()
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(
    scope: Message,
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    while scope["type"] == "lifespan":  # startup, then shutdown: each acknowledged
        kind = (await receive())["type"]
        await send({"type": f"{kind}.complete"})
        if kind == "lifespan.shutdown":
            return
    more = True
    while more:  # drain the request body, as any real endpoint must
        more = bool((await receive()).get("more_body", False))
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
