"""Hostile-client probes: ``python -m app.probe --url http://127.0.0.1:8000``.

Replays what issue 11 did to the service as an attacker or a broken client
would, and exits 1 on any finding (0 when the service holds). Loopback only
(it refuses any other host: these are attacks), every loop bounded, every
socket with a timeout. The fast probes take a few seconds with short server
timeouts and run in ``make test`` (tests/e2e/test_e2e_probes.py); ``--slow``
adds the overload probe (many connections for some seconds while a fresh
connection times ``/health``).

The server's own limits are passed in (``--header-timeout`` and so on) so the
probes know how long a correct server may take; they default to the
service's defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import ipaddress
import json
import math
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from app.schemas import PATIENT_EXAMPLE as PATIENT

#: Seconds a correct server may take beyond its configured timeout (scheduling on a busy box).
SLACK_SECONDS = 3.0


@dataclass
class Target:
    host: str
    port: int
    api_key: str | None = None
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_header_bytes: int = 16 * 1024

    def connect(self, timeout: float) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout=timeout)

    def auth(self) -> bytes:
        return f"X-API-Key: {self.api_key}\r\n".encode() if self.api_key else b""


@dataclass
class Report:
    findings: list[str] = field(default_factory=list)
    passed: list[str] = field(default_factory=list)

    def check(self, ok: bool, name: str, detail: str) -> None:
        (self.passed if ok else self.findings).append(f"{name}: {detail}")


def read_response(sock: socket.socket, limit: float) -> tuple[int | None, bytes, float]:
    """Status (None when closed without an answer), raw bytes, seconds waited."""
    start = time.monotonic()
    data = b""
    with contextlib.suppress(TimeoutError, ConnectionError, OSError):
        sock.settimeout(limit)
        while b"\r\n\r\n" not in data and len(data) < 1 << 20:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        length = _content_length(head)
        while length is not None and len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
            data += chunk
    waited = time.monotonic() - start
    if not data.startswith(b"HTTP/1."):
        return None, data, waited
    return int(data.split(b" ", 2)[1]), data, waited


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return None


def request(
    target: Target,
    method: str,
    path: str,
    body: bytes = b"",
    timeout: float = 10.0,
    *,
    connection: str = "close",
    headers: str = "",
) -> tuple[int | None, bytes]:
    """One request on a fresh connection; ``(status, raw response)``."""
    with target.connect(timeout) as sock:
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {target.host}\r\nConnection: {connection}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{headers}"
        ).encode()
        sock.sendall(head + target.auth() + b"\r\n" + body)
        status, raw, _ = read_response(sock, timeout)
        return status, raw


def _json_body(raw: bytes) -> Any:
    return json.loads(raw.partition(b"\r\n\r\n")[2] or b"null")


def server_errors(target: Target) -> dict[str, int]:
    """``errors_by_kind`` of the JSON ``/metrics``: how the server counted what we did."""
    status, raw = request(target, "GET", "/metrics")
    if status != 200:
        raise RuntimeError(f"/metrics answered {status}; pass --api-key if one is configured")
    errors: dict[str, int] = _json_body(raw)["serving"]["errors_by_kind"]
    return errors


# -- the probes ----------------------------------------------------------------------------


def probe_large_header(target: Target, report: Report) -> None:
    size = max(100_000, target.max_header_bytes * 4)
    with target.connect(10) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * size + b"\r\n\r\n")
        status, raw, _ = read_response(sock, 10)
    report.check(
        status is None or (status == 431 and _has_date(raw)),
        "large header",
        f"{size}-byte header answered {status} (want 431 with a Date header)",
    )


def _has_date(raw: bytes) -> bool:
    head = raw.partition(b"\r\n\r\n")[0].lower()
    return b"\r\ndate: " in head


def probe_pipelined_garbage(target: Target, report: Report) -> None:
    """A valid request and garbage in one write: the valid one's answer must come first.

    HTTP/1.1 answers in request order (RFC 9112 9.3.2); a 400 written before
    the pending 200 is read by the client as the answer to its valid request.
    """
    body = _body()
    valid = (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n" % len(body) + target.auth() + b"\r\n" + body
    )
    data = b""
    with target.connect(10) as sock, contextlib.suppress(TimeoutError, OSError):
        sock.sendall(valid + b"NOT HTTP AT ALL\r\n\r\n")
        while chunk := sock.recv(65536):  # the server closes after its 400
            data += chunk
    answers: list[tuple[int, bytes]] = []
    while data.startswith(b"HTTP/1."):
        head, _, rest = data.partition(b"\r\n\r\n")
        answers.append((int(head.split(b" ", 2)[1]), head))
        data = rest[_content_length(head) or 0 :]
    statuses = [status for status, _ in answers]
    dated = all(_has_date(head) for _, head in answers)
    report.check(
        statuses in ([200, 400], [200]) and dated,
        "pipelined garbage",
        f"a valid /predict then garbage: answered {statuses} (want [200, 400] or [200], "
        "each with a Date header)",
    )


def probe_slow_headers(target: Target, report: Report) -> None:
    limit = target.header_timeout + SLACK_SECONDS
    with target.connect(limit + 5) as sock:
        start = time.monotonic()
        status: int | None = None
        closed = False
        for byte in b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n":  # bounded: 35 bytes
            if time.monotonic() - start > limit:
                break
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            sock.settimeout(0.5)
            with contextlib.suppress(TimeoutError):
                data = sock.recv(1024)
                if data.startswith(b"HTTP/1."):
                    status = int(data.split(b" ", 2)[1])
                if not data or status is not None:
                    closed = True
                    break
        waited = time.monotonic() - start
    report.check(
        (closed or status == 408) and status in (None, 408) and waited <= limit,
        "slow headers",
        f"one byte every 0.5 s: answered {status} after {waited:.1f} s (want 408 or close "
        f"within {limit:.0f} s)",
    )


def probe_idle_connection(target: Target, report: Report) -> None:
    limit = target.header_timeout + SLACK_SECONDS
    with target.connect(limit + 5) as sock:
        status, data, waited = read_response(sock, limit + 2)
    report.check(
        waited <= limit and status in (None, 408),
        "idle connection",
        f"closed after {waited:.1f} s with {data[:12]!r} (want close within {limit:.0f} s)",
    )


def probe_short_body(target: Target, report: Report) -> None:
    limit = target.body_timeout + SLACK_SECONDS
    with target.connect(limit + 5) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n" + target.auth() + b'\r\n{"age": 54'
        )
        status, _, waited = read_response(sock, limit + 2)
    report.check(
        waited <= limit and status in (None, 408),
        "short body",
        f"Content-Length 1000 with 10 bytes sent: {status} after {waited:.1f} s "
        f"(want 408 within {limit:.0f} s)",
    )


def probe_client_leaves(target: Target, report: Report) -> None:
    before = server_errors(target)
    for _ in range(3):
        with target.connect(10) as sock:
            sock.sendall(
                b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 1000\r\n" + target.auth() + b'\r\n{"age": 54'
            )
            time.sleep(0.2)
    time.sleep(0.5)
    after = server_errors(target)
    grown = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
    five_xx = {k: v for k, v in grown.items() if k in ("internal", "server_other")}
    report.check(
        not five_xx and grown.get("client_closed", 0) >= 3,
        "client leaves mid-body",
        f"3 clients left mid-body; server counted {grown} (want client_closed, no 5xx)",
    )


def _body(**changes: Any) -> bytes:
    return json.dumps({**PATIENT, **changes}).encode()


def probe_duplicate_keys(target: Target, report: Report) -> None:
    body = b'{"age": 500, ' + _body()[1:]
    status, raw = request(target, "POST", "/predict", body)
    named = status == 422 and any(
        e.get("type") == "duplicate_key" and "age" in e.get("loc", [])
        for e in _json_body(raw).get("detail", [])
    )
    report.check(named, "duplicate key", f"'age' twice answered {status} (want 422 naming it)")


def probe_integral_floats(target: Target, report: Report) -> None:
    ok, _ = request(target, "POST", "/predict", _body(sex=1.0, thal=7.0))
    bad, raw = request(target, "POST", "/predict", _body(sex=0.5))
    types = [e.get("type") for e in _json_body(raw).get("detail", [])] if bad == 422 else []
    report.check(
        ok == 200 and bad == 422 and "int_from_float" in types,
        "integral floats",
        f"sex 1.0 answered {ok} (want 200); sex 0.5 answered {bad} with {types}",
    )


def probe_http2_upgrade(target: Target, report: Report) -> None:
    """A POST as Java's HttpClient sends it on http://: must be served, body and all."""
    status, raw = request(
        target,
        "POST",
        "/predict",
        _body(),
        connection="close, Upgrade, HTTP2-Settings",
        headers="Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n",
    )
    scored = status == 200 and "probability" in _json_body(raw)
    report.check(scored, "HTTP/2 upgrade", f"an h2c upgrade POST answered {status} (want 200)")


def probe_websocket_handshakes(target: Target, report: Report) -> None:
    """More WebSocket handshakes than a worker admits at once, then a patient: each
    handshake must end like any request, or the worker stays full (503) for good."""
    handshake = "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
    handshake += "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    statuses = {
        request(target, "GET", "/model", connection="Upgrade", headers=handshake)[0]
        for _ in range(80)
    }
    status, _ = request(target, "POST", "/predict", _body())
    report.check(
        status == 200 and statuses == {200},
        "WebSocket handshakes",
        f"80 handshakes answered {sorted(map(str, statuses))}, then /predict {status} (want 200s)",
    )


BAD_BODIES: tuple[bytes, ...] = (
    b"",
    b"{",
    b"[]",
    b"null",
    b'{"age": NaN}',
    b'{"age": 1e999}',
    b'{"patients": 5}',
    b"\xff\xfe",
    b'{"age": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    _body(age=10**400),
)


def probe_bad_bodies(target: Target, report: Report) -> None:
    statuses = {
        path: [request(target, "POST", path, body)[0] for body in BAD_BODIES]
        for path in ("/predict", "/predict/batch")
    }
    worst = [s for values in statuses.values() for s in values if s is None or s >= 500]
    report.check(not worst, "malformed bodies", f"statuses {statuses} (want only 4xx)")


def probe_compression_bomb(target: Target, report: Report) -> None:
    """64 MiB of zeros gzipped to about 64 KiB: a 413, quickly, and the server still up.

    Far above the default body limit (2 MiB) and any sane one; a server that
    inflated the whole body before checking would take seconds and the memory.
    """
    bomb = gzip.compress(b"\0" * (64 << 20), compresslevel=9, mtime=0)
    start = time.monotonic()
    status, _ = request(target, "POST", "/predict/batch", bomb, 30, headers=GZIP_HEADER)
    seconds = time.monotonic() - start
    alive = request(target, "GET", "/health")[0] == 200
    report.check(
        status == 413 and seconds < 10 and alive,
        "compression bomb",
        f"{len(bomb):,} gzip bytes of 64 MiB of zeros: {status} after {seconds:.1f} s, "
        f"health {'ok' if alive else 'DOWN'} (want 413, the server up)",
    )


GZIP_HEADER = "Content-Encoding: gzip\r\n"
Probe = Callable[[Target, Report], None]
FAST_PROBES: tuple[Probe, ...] = (
    probe_large_header,
    probe_pipelined_garbage,
    probe_slow_headers,
    probe_idle_connection,
    probe_short_body,
    probe_client_leaves,
    probe_duplicate_keys,
    probe_integral_floats,
    probe_http2_upgrade,
    probe_websocket_handshakes,
    probe_bad_bodies,
    probe_compression_bomb,
)


# -- overload ------------------------------------------------------------------------------


async def _hammer(target: Target, stop: float, counts: dict[int, int]) -> None:
    body = _body()
    head = (
        (
            f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
        ).encode()
        + target.auth()
        + b"\r\n"
    )
    while time.monotonic() < stop:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(target.host, target.port), 5
            )
        except (OSError, TimeoutError):
            counts[0] = counts.get(0, 0) + 1
            await asyncio.sleep(0.05)
            continue
        try:
            while time.monotonic() < stop:
                writer.write(head + body)
                line = await asyncio.wait_for(reader.readline(), 20)
                if not line:
                    break
                status = int(line.split(b" ", 2)[1])
                counts[status] = counts.get(status, 0) + 1
                length = 0
                while (header := await reader.readline()) not in (b"\r\n", b""):
                    if header.lower().startswith(b"content-length:"):
                        length = int(header.split(b":")[1])
                await reader.readexactly(length)
                if status == 503:
                    await asyncio.sleep(0.05)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
            counts[-1] = counts.get(-1, 0) + 1
        finally:
            writer.close()


async def time_health(target: Target, stop: float, times: list[float], every: float = 0.2) -> None:
    """A liveness probe until ``stop``: a new connection, ``GET /health`` (20 s timeout),
    ``every`` seconds; the seconds each took go to ``times`` (``inf``: no 200 came)."""
    while time.monotonic() < stop:
        start = time.monotonic()
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(target.host, target.port), 20
            )
            writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            line = await asyncio.wait_for(reader.readline(), 20)
            writer.close()
            ok = line.startswith(b"HTTP/1.1 200")
            times.append(time.monotonic() - start if ok else math.inf)
        except (OSError, TimeoutError):
            times.append(math.inf)
        await asyncio.sleep(every)


def overload(target: Target, connections: int, seconds: float) -> dict[str, Any]:
    """``connections`` clients posting /predict for ``seconds``; /health timed meanwhile."""
    counts: dict[int, int] = {}
    times: list[float] = []

    async def run() -> None:
        stop = time.monotonic() + seconds
        await asyncio.gather(
            *(_hammer(target, stop, counts) for _ in range(connections)),
            time_health(target, stop, times),
        )

    asyncio.run(run())
    return {
        "connections": connections,
        "seconds": seconds,
        "statuses": {str(k): v for k, v in sorted(counts.items())},
    } | health_summary(times)


def health_summary(times: list[float]) -> dict[str, Any]:
    """How the liveness probes fared: their count, failures, and p50/p99/max in ms
    (None where that quantile is a failed probe, or there was none)."""
    ordered = sorted(times)

    def ms(q: float) -> float | None:
        at = ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else math.inf
        return None if math.isinf(at) else round(at * 1000, 1)

    return {
        "health_samples": len(ordered),
        "health_failed": ordered.count(math.inf),
        "health_p50_ms": ms(0.5),
        "health_p99_ms": ms(0.99),
        "health_max_ms": ms(1.0),
    }


def probe_overload(target: Target, report: Report, connections: int, seconds: float) -> None:
    result = overload(target, connections, seconds)
    statuses = result["statuses"]
    five_xx = {k: v for k, v in statuses.items() if k.startswith("5") and k != "503"}
    p99 = result["health_p99_ms"]
    report.check(
        not five_xx and p99 is not None and p99 < 1000,
        "overload",
        f"{connections} connections for {seconds:g} s: {json.dumps(result)} "
        "(want no 5xx but 503, /health p99 under 1 s)",
    )


# -- command -------------------------------------------------------------------------------


def loopback_target(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        loopback = ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        loopback = False
    if parts.scheme != "http" or not loopback:
        raise SystemExit(f"refusing {url!r}: these probes attack a server; use http on loopback")
    return host, parts.port or 80


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.probe", description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--api-key", help="the server's HEART_API_KEY, if any")
    parser.add_argument("--header-timeout", type=float, default=10.0)
    parser.add_argument("--body-timeout", type=float, default=30.0)
    parser.add_argument("--max-header-bytes", type=int, default=16 * 1024)
    parser.add_argument("--slow", action="store_true", help="also the overload probe")
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args(argv)
    host, port = loopback_target(args.url)
    target = Target(
        host, port, args.api_key, args.header_timeout, args.body_timeout, args.max_header_bytes
    )
    report = Report()
    for probe in FAST_PROBES:
        probe(target, report)
    if args.slow:
        probe_overload(target, report, args.connections, args.seconds)
    for line in report.passed:
        print(f"ok       {line}")
    for line in report.findings:
        print(f"FINDING  {line}")
    return 1 if report.findings else 0


if __name__ == "__main__":
    raise SystemExit(main())
