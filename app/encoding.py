"""HTTP content codings: gzip and deflate request bodies in, compressed answers out.

``tritonclient.http`` compresses an inference request on request
(``request_compression_algorithm="gzip"`` or ``"deflate"``, sent with
``Content-Encoding``) and asks for a compressed answer with ``Accept-Encoding``;
users of ``/predict/table`` and ``/predict/batch`` upload large files the same
way. Triton reads both codings (and answers any other with 415 and
``Accept-Encoding: gzip, deflate``), so this service does too, on every
endpoint that takes a body. ``app.middleware`` calls this module at one place,
and only for a request that carries one of the two headers: one with neither
pays two comparisons for it, and a ``/predict`` answer to a client that accepts
gzip a held message and a length comparison (see :class:`_Compressor`).

Request bodies are decoded as they arrive, never more than the body limit
(``HEART_MAX_BODY_BYTES``) plus one slice at a time: the limit is on the body
the endpoint reads, so 10 MB of zeros gzipped to 10 kB is refused as the plain
10 MB would be, before it is inflated. The app then sees the body and headers
as if the body had been sent uncompressed (``Inference-Header-Content-Length``
counts the decoded body, as in Triton).

Answers are compressed only where it pays: 2xx answers of at least
:data:`MIN_COMPRESSED_BYTES` (so a ``/predict`` answer never is), not already
encoded, not a partial range, not an event stream nor a format that is
compressed already. Errors never are: they are short, and ``tritonclient``
reads an error body without decoding it.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Final, Literal

from starlette.concurrency import run_in_threadpool
from starlette.types import Message, Receive, Scope, Send

from app import qvalues

#: The codings read and written (x-gzip is read as gzip): the metrics' ``coding`` label.
Coding = Literal["gzip", "deflate"]
#: What became of a compressed request body the endpoint read: the metrics' ``outcome``.
BodyOutcome = Literal["decoded", "corrupt", "too_large"]

#: What ``Accept-Encoding`` lists in a 415 for a coding we do not read (as Triton sends it).
ACCEPTED: Final[str] = "gzip, deflate"
ACCEPT_ENCODING: Final[tuple[bytes, bytes]] = (b"accept-encoding", ACCEPTED.encode())
#: Both read as zlib does with this window: a gzip (RFC 1952) or a zlib (RFC 1950) stream,
#: which is what "deflate" means in HTTP (RFC 9110 8.4.1.2) and what tritonclient sends.
#: Triton reads either coding the same way; raw deflate without the zlib wrapper is refused.
_GZIP_OR_ZLIB: Final[int] = zlib.MAX_WBITS | 32
#: Request codings by their (lower-case) names; x-gzip is gzip (RFC 9110 8.4.1.3).
_CODINGS: Final[dict[bytes, Coding]] = {b"gzip": "gzip", b"x-gzip": "gzip", b"deflate": "deflate"}
#: Most concatenated compressed streams one body may hold (``cat a.gz b.gz`` is two).
MAX_STREAMS: Final[int] = 16
#: Most bytes one call inflates: the memory a decoded body holds beyond the limit.
INFLATE_SLICE: Final[int] = 64 * 1024
#: Compressing or inflating this much runs in a worker thread, so the event loop keeps
#: answering probes and small predictions meanwhile.
_THREAD_BYTES: Final[int] = 64 * 1024
#: Smaller answers go out as they are: they fit one packet with their headers, and
#: /predict is latency-critical.
MIN_COMPRESSED_BYTES: Final[int] = 1024
#: zlib's fastest level: the large table answers barely shrink further at higher levels,
#: for much more CPU.
_LEVEL: Final[int] = 1
#: Answers whose media type is compressed already, or a stream a client reads as it comes.
_INCOMPRESSIBLE: Final[frozenset[bytes]] = frozenset(
    {
        b"text/event-stream",
        b"application/gzip",
        b"application/x-gzip",
        b"application/zip",
        b"application/zstd",
        b"font/woff",
        b"font/woff2",
    }
)
_INCOMPRESSIBLE_KINDS: Final[tuple[bytes, ...]] = (b"image/", b"audio/", b"video/")
#: Response compressors by coding: gzip's header, and zlib's for deflate (what clients read).
_WBITS: Final[dict[Coding, int]] = {"gzip": zlib.MAX_WBITS | 16, "deflate": zlib.MAX_WBITS}


class UnsupportedCodingError(ValueError):
    """A ``Content-Encoding`` this service cannot decode; the message says what it reads."""


class BodyRefusedError(Exception):
    """A compressed body refused while the app read it: corrupt, or too large once decoded.

    Raised from the app's ``receive``, so it leaves the app as it came in, and the
    middleware answers it in the path's error shape, as its other refusals.
    """

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def request_coding(header: bytes) -> Coding | None:
    """The coding a ``Content-Encoding`` names (``None``: identity), or raise.

    Only one coding is read: a stacked list (``gzip, br``) is refused as a whole,
    as is any coding but gzip and deflate. ``identity`` and empty elements of the
    list mean no coding.
    """
    codings = [c for c in (part.strip().lower() for part in header.split(b",")) if c]
    codings = [c for c in codings if c != b"identity"]
    if not codings:
        return None
    if len(codings) == 1 and codings[0] in _CODINGS:
        return _CODINGS[codings[0]]
    shown = header.decode("latin-1").strip()
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    raise UnsupportedCodingError(
        f"Unsupported Content-Encoding {shown!r}: send the body uncompressed, or compressed "
        "with gzip or deflate alone (the answer's Accept-Encoding lists them)."
    )


def plain_scope(scope: Scope) -> Scope:
    """The request as the app should see it once its body is decoded.

    Without ``Content-Encoding`` (the app gets the decoded body), and without
    ``Content-Length``, which counted the encoded bytes: the decoded length is
    known only once the body has been read, like a chunked body's.
    """
    headers = [
        (name, value)
        for name, value in scope["headers"]
        if name not in (b"content-encoding", b"content-length")
    ]
    return {**scope, "headers": headers}


def decoding(
    receive: Receive,
    coding: Coding,
    *,
    limit: int,
    too_large: str,
    outcome: Callable[[BodyOutcome], None] = lambda outcome: None,
) -> Receive:
    """``receive`` with the body decoded; :class:`BodyRefusedError` (413, ``too_large``)
    beyond ``limit`` decoded bytes, or 400 for data that are not ``coding``.

    ``outcome`` hears how the body ended, for the metrics: decoded to its end
    (a body without any data is not a compressed body, and is not reported), or refused.
    """
    return _Decoder(receive, coding, limit, too_large, outcome).receive


class _Decoder:
    """One request body's inflation, message by message.

    Concatenated streams (``cat a.gz b.gz``) are read as one body, as ``gzip -d``
    reads them, up to :data:`MAX_STREAMS`: an empty gzip stream is 20 bytes that
    inflate to nothing, so a 2 MB body of them never meets the decoded limit but
    held the event loop for a fifth of a second.
    """

    def __init__(
        self,
        receive: Receive,
        coding: Coding,
        limit: int,
        too_large: str,
        outcome: Callable[[BodyOutcome], None],
    ) -> None:
        self._receive = receive
        self._coding = coding
        self._limit = limit
        self._too_large = too_large
        self._outcome = outcome
        self._inflate: zlib._Decompress | None = None
        self._produced = 0
        self._streams = 0
        self._done = False

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] != "http.request" or self._done:
            return message
        data: bytes = message.get("body", b"")
        more: bool = message.get("more_body", False)
        try:
            if len(data) >= _THREAD_BYTES:
                body = await run_in_threadpool(self._decoded, data)
            else:
                body = self._decoded(data)
            if not more:
                self._done = True
                if self._inflate is not None and not self._inflate.eof:
                    raise self._corrupt(f"ends within its {self._coding} data (truncated)")
        except BodyRefusedError as exc:
            self._outcome("too_large" if exc.status == 413 else "corrupt")
            raise
        if not more and self._streams:
            self._outcome("decoded")
        return {"type": "http.request", "body": body, "more_body": more}

    def _decoded(self, data: bytes) -> bytes:
        pieces: list[bytes] = []
        inflate = self._inflate
        try:
            while True:
                if inflate is None or inflate.eof:
                    if not data:
                        break
                    self._streams += 1
                    if self._streams > MAX_STREAMS:
                        raise self._corrupt(f"holds more than {MAX_STREAMS} concatenated streams")
                    inflate = self._inflate = zlib.decompressobj(_GZIP_OR_ZLIB)
                # One byte beyond the room left tells "more than the limit" from "at it".
                room = min(INFLATE_SLICE, self._limit - self._produced) + 1
                piece = inflate.decompress(data, room)
                self._produced += len(piece)
                if self._produced > self._limit:
                    raise BodyRefusedError(413, self._too_large)
                pieces.append(piece)
                if inflate.eof:
                    data = inflate.unused_data  # the next stream's, if any
                    continue
                data = inflate.unconsumed_tail
                if len(piece) < room and not data:
                    break  # all input taken and the slice not full: nothing is pending
        except zlib.error:
            raise self._corrupt(f"is not valid {self._coding} data") from None
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def _corrupt(self, what: str) -> BodyRefusedError:
        coding = self._coding
        layout = " (the zlib format, as zlib.compress writes it)" if coding == "deflate" else ""
        return BodyRefusedError(
            400,
            f"The request body {what} (Content-Encoding: {coding}): send it whole, "
            f"compressed with {coding}{layout}, or uncompressed without Content-Encoding.",
        )


def compressing(
    send: Send,
    accept_encoding: bytes,
    compressed: Callable[[Coding], None] = lambda coding: None,
) -> Send:
    """``send`` with 2xx answers of :data:`MIN_COMPRESSED_BYTES` or more compressed in
    the best coding ``accept_encoding`` accepts, and ``Vary: Accept-Encoding``;
    ``compressed`` hears the coding of each answer compressed (for the metrics)."""
    return _Compressor(send, accept_encoding, compressed).send


class _Compressor:
    """One response: its start is held until the first body part shows its size.

    A small complete answer (every ``/predict``) is passed on untouched, without
    reading a header or the client's ``Accept-Encoding``: the hold and one length
    comparison are all it costs.
    """

    __slots__ = ("_accept", "_compress", "_counted", "_send", "_start")

    def __init__(
        self, send: Send, accept_encoding: bytes, compressed: Callable[[Coding], None]
    ) -> None:
        self._send = send
        self._accept = accept_encoding
        self._counted = compressed
        self._start: Message | None = None
        self._compress: zlib._Compress | None = None

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self._start = message
            return
        start, self._start = self._start, None
        if start is not None:
            if kind == "http.response.body":
                body: bytes = message.get("body", b"")
                more: bool = message.get("more_body", False)
                if more or len(body) >= MIN_COMPRESSED_BYTES:
                    coding = self._coding(start)
                    if coding is not None:
                        self._compress = zlib.compressobj(_LEVEL, zlib.DEFLATED, _WBITS[coding])
                        message = {**message, "body": await self._compressed(body, more)}
                        _encode(start, coding, None if more else len(message["body"]))
                        self._counted(coding)
            await self._send(start)
        elif kind == "http.response.body" and self._compress is not None:
            more = message.get("more_body", False)
            message = {**message, "body": await self._compressed(message.get("body", b""), more)}
        await self._send(message)

    def _coding(self, start: Message) -> Coding | None:
        """The coding of this answer, or None; adds ``Vary`` to an answer that depends on it."""
        status: int = start["status"]
        if not 200 <= status < 300 or status in (204, 206):
            return None
        media = b""
        for name, value in start["headers"]:
            # A file served with byte ranges (the /docs assets): compressed, its GET would
            # differ from its HEAD, which carries no body to measure, and a Range resumed
            # would count bytes of the uncompressed file into the compressed one.
            if name in (b"content-encoding", b"accept-ranges"):
                return None
            if name == b"content-type":
                media = value.partition(b";")[0].strip().lower()
        if media in _INCOMPRESSIBLE or media.startswith(_INCOMPRESSIBLE_KINDS):
            return None
        start["headers"] = [*start["headers"], (b"vary", b"Accept-Encoding")]
        return negotiate(self._accept)

    async def _compressed(self, body: bytes, more: bool) -> bytes:
        if len(body) >= _THREAD_BYTES:
            return await run_in_threadpool(self._compress_part, body, more)
        return self._compress_part(body, more)

    def _compress_part(self, body: bytes, more: bool) -> bytes:
        compress = self._compress
        assert compress is not None
        # A part of a stream is flushed whole, so the client can read it as it arrives.
        mode = zlib.Z_SYNC_FLUSH if more else zlib.Z_FINISH
        return compress.compress(body) + compress.flush(mode)


def _encode(start: Message, coding: Coding, length: int | None) -> None:
    """Say so in the answer's headers: its coding, its new length (none for a stream), and
    a weak ETag (RFC 9110 8.8.1: the compressed bytes are not the bytes it named).

    A 304 must carry the ETag its 200 would (RFC 9110 15.4.5), but it passes here
    untouched: it has no body to tell whether that 200 would be compressed. The only
    304s are StaticFiles' for the /docs assets, never compressed (byte ranges, see
    :meth:`_Compressor._coding`), so their 200 and 304 carry the same strong ETag. A
    route that sets an ETag on an answer this module may compress must weaken it in
    its own 304 as well.
    """
    headers: list[tuple[bytes, bytes]] = []
    for name, value in start["headers"]:
        if name == b"content-length":
            continue
        if name == b"etag" and not value.startswith(b"W/"):
            value = b"W/" + value
        headers.append((name, value))
    headers.append((b"content-encoding", coding.encode()))
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    start["headers"] = headers


def negotiate(accept_encoding: bytes) -> Coding | None:
    """The coding ``Accept-Encoding`` prefers among gzip and deflate (gzip on a tie), if any.

    RFC 9110 12.5.3: ``q=0`` refuses a coding, ``*`` stands for any coding not
    listed, and a coding not listed (without ``*``) is not acceptable. An element
    whose q is not a qvalue (``q=2``, ``q=nan``) is ignored, as for ``Accept``
    on /predict/table.
    """
    weights: dict[str, float] = {}
    for coding, quality, _ in qvalues.elements(accept_encoding.decode("latin-1")):
        if quality is not None:
            weights["gzip" if coding == "x-gzip" else coding] = quality
    anything = weights.get("*", 0.0)
    gzip, deflate = weights.get("gzip", anything), weights.get("deflate", anything)
    if gzip > 0 and gzip >= deflate:
        return "gzip"
    return "deflate" if deflate > 0 else None
