"""The hostile-client probes (app/probe.py) against a real server: none may find anything.

Short server timeouts keep this to a few seconds; the overload probe runs with
few connections here (the c=2,000 figure is in BENCHMARKS.md, from
``make bench-hardening``).
"""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app import probe
from app.testing import RunningServer, running_server

pytestmark = pytest.mark.e2e

LIMITS = {
    "HEART_HEADER_TIMEOUT": "1",
    "HEART_BODY_TIMEOUT": "1",
    "HEART_MAX_HEADER_BYTES": "8192",
    "HEART_MAX_CONCURRENT_REQUESTS": "4",
}


@pytest.fixture(scope="module")
def server(
    artifact_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    with running_server(
        artifact_path, env=LIMITS, log_dir=tmp_path_factory.mktemp("probe")
    ) as running:
        yield running


def target(server: RunningServer) -> probe.Target:
    return probe.Target(
        "127.0.0.1", server.port, header_timeout=1, body_timeout=1, max_header_bytes=8192
    )


@pytest.mark.parametrize("check", probe.FAST_PROBES, ids=lambda p: p.__name__)
def test_fast_probe_finds_nothing(server: RunningServer, check: probe.Probe) -> None:
    report = probe.Report()
    check(target(server), report)
    assert report.findings == []
    assert report.passed  # the probe did judge something


def test_probe_command_exits_zero_on_a_hardened_server(server: RunningServer) -> None:
    argv = ["--url", server.url, "--header-timeout", "1", "--body-timeout", "1"]
    assert probe.main([*argv, "--max-header-bytes", "8192"]) == 0


def test_probe_command_refuses_a_remote_host() -> None:
    with pytest.raises(SystemExit, match="loopback"):
        probe.main(["--url", "http://192.0.2.1:8000"])


def test_probes_notice_a_server_without_limits() -> None:
    """A check that cannot fail is no check: a bare socket server that never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        report = probe.Report()
        lazy = probe.Target("127.0.0.1", port, header_timeout=0.5, body_timeout=0.5)
        probe.probe_idle_connection(lazy, report)
        assert report.findings and "idle connection" in report.findings[0]


def test_overload_sheds_with_retry_after_and_probes_stay_fast(server: RunningServer) -> None:
    result = probe.overload(target(server), connections=64, seconds=3)
    statuses = result["statuses"]
    assert statuses.get("503", 0) > 0, result  # limit 4 per worker: some requests are shed
    assert statuses.get("200", 0) > 0, result
    assert not [s for s in statuses if s.startswith("5") and s != "503"], result
    assert result["health_samples"] >= 5 and result["health_max_ms"] < 2000, result
    errors = json.load(urllib.request.urlopen(server.url + "/metrics", timeout=10))
    assert errors["serving"]["errors_by_kind"].get("overloaded", 0) > 0


def test_beyond_the_limit_requests_get_503_with_retry_after_but_probes_do_not(
    server: RunningServer,
) -> None:
    """Hold 4 requests in flight (headers sent, body pending): the worker is full."""
    held = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(4)]
    try:
        for sock in held:
            sock.sendall(
                b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 400\r\n\r\n{"
            )
        time.sleep(0.2)  # < HEART_BODY_TIMEOUT (1 s): all four are still in flight
        status, raw = probe.request(
            target(server), "POST", "/predict", json.dumps(probe.PATIENT).encode()
        )
        v2_status, v2_raw = probe.request(target(server), "GET", "/v2/models/heart")
        health, _ = probe.request(target(server), "GET", "/health")
        ready, _ = probe.request(target(server), "GET", "/ready")
        keep_alive = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        keep_alive.sendall(_post(json.dumps(probe.PATIENT).encode()))
        first, _, _ = probe.read_response(keep_alive, 10)
    finally:
        for sock in held:
            sock.close()
    # The refusal discarded its body and kept the connection: it serves once there is room.
    time.sleep(0.3)
    keep_alive.sendall(_post(json.dumps(probe.PATIENT).encode()))
    second, _, _ = probe.read_response(keep_alive, 10)
    keep_alive.close()
    assert (first, second) == (503, 200)
    assert status == 503, raw
    assert b"\r\nretry-after: 1\r\n" in raw.lower()
    assert b"HEART_MAX_CONCURRENT_REQUESTS" in raw
    assert list(_body(raw)) == ["detail"]
    assert (v2_status, list(_body(v2_raw))) == (503, ["error"])  # the protocol's shape
    assert (health, ready) == (200, 200)


def test_the_servers_own_refusals_below_v2_have_the_protocols_error_shape(
    server: RunningServer,
) -> None:
    """431, 408 and 503 are written by app.protocol before any routing: below /v2 they too
    must be the Open Inference Protocol's ``{"error": ...}``, elsewhere ``{"detail": ...}``."""
    for path, key in (("/v2/models/heart/infer", "error"), ("/predict", "detail")):
        status, raw = probe.request(
            target(server), "POST", path, headers=f"X-Big: {'a' * 9000}\r\n"
        )
        assert (status, list(_body(raw))) == (431, [key]), raw
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\n".encode())  # then nothing
            status, raw, _ = probe.read_response(sock, 10)
        assert (status, list(_body(raw))) == (408, [key]), raw
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            post = _post(json.dumps(probe.PATIENT).encode()).replace(b"/predict", path.encode())
            sock.sendall(post[:-5])  # the body cut short
            status, raw, _ = probe.read_response(sock, 10)
        assert (status, list(_body(raw))) == (408, [key]), raw


def _body(raw: bytes) -> Any:
    return json.loads(raw.partition(b"\r\n\r\n")[2])


def _post(body: bytes) -> bytes:
    return (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
