"""Workers and the model (issue 11, points 4, 5 and 9) against a real supervisor.

One model for every worker (by content hash, whatever happens to the file),
a worker that cannot start stops the service with a non-zero status, the
worker gauge survives a SIGKILL, SIGHUP reloads all workers or none, and a
stopping service refuses new connections at once.
"""

from __future__ import annotations

import contextlib
import copy
import http.client
import json
import os
import re
import signal
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.cli import BLAS_THREAD_VARIABLES
from app.schemas import PATIENT_EXAMPLE
from app.testing import RunningServer, running_server
from model.artifact import read_payload, save_artifact

pytestmark = pytest.mark.e2e

BODY = json.dumps(PATIENT_EXAMPLE).encode()


def get_json(server: RunningServer, path: str) -> Any:
    with urllib.request.urlopen(server.url + path, timeout=10) as response:
        return json.load(response)


def prometheus(server: RunningServer) -> str:
    with urllib.request.urlopen(server.url + "/metrics?format=prometheus", timeout=10) as r:
        text: str = r.read().decode()
        return text


def worker_pids(server: RunningServer) -> list[int]:
    """Pids of the workers that loaded a model, in start order (from the JSON log)."""
    pids = []
    for line in server.log().splitlines():
        if line.startswith("{") and '"model loaded"' in line:
            pids.append(int(json.loads(line)["pid"]))
    return pids


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_for(condition: Any, timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@contextlib.contextmanager
def two_workers(
    model: Path, log_dir: Path, env: dict[str, str] | None = None
) -> Iterator[RunningServer]:
    """A 2-worker server, once both workers have loaded the model."""
    with running_server(model, workers=2, log_dir=log_dir, env=env) as server:
        wait_for(lambda: len(worker_pids(server)) == 2, what="both workers")
        yield server


def versions_served(server: RunningServer, n: int) -> set[str]:
    """Model versions of ``n`` predictions, each on a new connection (any worker)."""
    seen = set()
    for _ in range(n):
        request = urllib.request.Request(
            server.url + "/predict", BODY, {"content-type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            seen.add(json.load(response)["model_version"])
    return seen


@pytest.fixture
def other_payload(artifact_path: Path) -> dict[str, Any]:
    """A second valid model: the same network under another version."""
    payload = copy.deepcopy(read_payload(artifact_path))
    payload["model_version"] = "mlp-8h-reloaded0001"
    return payload


@pytest.fixture
def model_file(artifact_path: Path, tmp_path: Path) -> Path:
    path = tmp_path / "served" / "model.joblib"
    path.parent.mkdir()
    path.write_bytes(artifact_path.read_bytes())
    return path


def test_a_restarted_worker_serves_the_same_model_whatever_is_on_disk(
    model_file: Path, other_payload: dict[str, Any], tmp_path: Path
) -> None:
    with two_workers(model_file, tmp_path) as server:
        [version] = versions_served(server, 4)
        assert get_json(server, "/metrics")["serving"]["worker_processes"] == 2
        save_artifact(other_payload, model_file)  # replaced atomically, as issue 11 did
        victim = worker_pids(server)[0]
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: len(worker_pids(server)) == 3, what="a replacement worker")
        assert versions_served(server, 40) == {version}
        # The killed worker no longer counts (issue 11 saw 3 here).
        wait_for(
            lambda: get_json(server, "/metrics")["serving"]["worker_processes"] == 2,
            what="the worker gauge to drop the dead worker",
        )
        # A truncated file in place and another death: still serving the same model.
        model_file.write_bytes(model_file.read_bytes()[:100])
        os.kill(worker_pids(server)[1], signal.SIGKILL)
        wait_for(lambda: len(worker_pids(server)) == 4, what="a second replacement")
        assert versions_served(server, 20) == {version}
        assert server.stop() == 0


def test_a_worker_that_cannot_start_stops_the_service_with_status_3(
    model_file: Path, tmp_path: Path
) -> None:
    with two_workers(model_file, tmp_path) as server:
        snapshot = Path(re.findall(r'"model_path":"([^"]+)"', server.log())[0])
        assert snapshot.parent.name.startswith("heart-api-run-")
        snapshot.chmod(0o644)
        snapshot.write_bytes(b"damaged")  # what a bad disk could do to the snapshot
        os.kill(worker_pids(server)[0], signal.SIGKILL)
        assert server.process.wait(30) == 3
    assert "SHA-256" in server.log() and "a worker could not start" in server.log()


def test_sighup_reloads_every_worker_or_none(
    model_file: Path, other_payload: dict[str, Any], tmp_path: Path
) -> None:
    with two_workers(model_file, tmp_path) as server:
        [old] = versions_served(server, 4)
        # An invalid artifact: nothing changes, and /metrics says why.
        model_file.write_bytes(b"\x80\x04 truncated")
        server.process.send_signal(signal.SIGHUP)
        wait_for(
            lambda: 'reloads_total{result="failed"} 1.0' in prometheus(server),
            what="the failed reload",
            timeout=150,
        )
        text = prometheus(server)
        assert 'heart_model_reloads_total{result="failed"} 1.0' in text
        assert "not a complete joblib file" in text
        assert versions_served(server, 10) == {old}
        # A valid one: every worker switches, the old version disappears.
        save_artifact(other_payload, model_file)
        server.process.send_signal(signal.SIGHUP)
        wait_for(
            lambda: 'result="success"} 1.0' in prometheus(server), what="the reload", timeout=150
        )
        new = other_payload["model_version"]
        assert versions_served(server, 20) == {new}
        assert get_json(server, "/model")["model_version"] == new
        text = prometheus(server)
        assert f'heart_model_info{{model_version="{new}"}} 1.0' in text
        assert old not in text.split("heart_model_info")[-1].split("\n# ")[0]
        assert get_json(server, "/metrics")["serving"]["worker_processes"] == 2
        assert server.stop() == 0


def _hammer(url: str, stop: threading.Event, results: list[str]) -> None:
    """Keep-alive POSTs until ``stop``; record each outcome (model version or error)."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    while not stop.is_set():
        try:
            connection.request("POST", "/predict", BODY, {"content-type": "application/json"})
            response = connection.getresponse()
            payload = response.read()
            if response.status != 200:
                results.append(f"status {response.status}")
            else:
                results.append(json.loads(payload)["model_version"])
            if response.getheader("connection", "").lower() == "close":
                connection.close()
        except (OSError, http.client.HTTPException) as exc:
            results.append(f"error {type(exc).__name__}")
            connection.close()
    connection.close()


@pytest.mark.slow
def test_reload_under_load_fails_no_request(
    model_file: Path, other_payload: dict[str, Any], tmp_path: Path
) -> None:
    """32 keep-alive clients while the workers are replaced: every request answered."""
    with two_workers(model_file, tmp_path) as server:
        stop = threading.Event()
        results: list[list[str]] = [[] for _ in range(32)]
        threads = [threading.Thread(target=_hammer, args=(server.url, stop, r)) for r in results]
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        save_artifact(other_payload, model_file)
        server.process.send_signal(signal.SIGHUP)
        wait_for(
            lambda: 'result="success"} 1.0' in prometheus(server), what="the reload", timeout=150
        )
        time.sleep(1.0)
        stop.set()
        for thread in threads:
            thread.join(30)
        assert server.stop() == 0
    outcomes = [o for r in results for o in r]
    failures = [o for o in outcomes if o.startswith(("status", "error"))]
    assert failures == [], (len(outcomes), failures[:10])
    assert other_payload["model_version"] in outcomes
    assert len(outcomes) > 100


def test_stopping_service_refuses_new_connections_at_once(model_file: Path, tmp_path: Path) -> None:
    """Issue 11: during SIGTERM with a stuck request, new connections hung until the timeout."""
    with two_workers(model_file, tmp_path, env={"HEART_BODY_TIMEOUT": "20"}) as server:
        stuck = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        stuck.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 400\r\n\r\n{"
        )
        time.sleep(0.3)
        server.process.send_signal(signal.SIGTERM)
        time.sleep(1.5)  # the supervisor handles signals every 0.5 s
        start = time.monotonic()
        with pytest.raises(OSError):
            fresh = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            fresh.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert fresh.recv(100) == b""  # accepted by nobody: closed, not answered
            fresh.close()
            raise ConnectionRefusedError
        assert time.monotonic() - start < 2
        assert server.process.poll() is None  # still draining the stuck request
        stuck.close()
        assert server.process.wait(30) == 0


def blas_environment(pid: int) -> dict[str, str]:
    """The BLAS thread variables a process started with (its /proc environ)."""
    entries = Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0")
    pairs = dict(e.split("=", 1) for e in entries if "=" in e)
    return {k: pairs[k] for k in BLAS_THREAD_VARIABLES if k in pairs}


def test_workers_use_one_blas_thread_unless_the_operator_says_otherwise(
    artifact_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in BLAS_THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with running_server(artifact_path, workers=2, log_dir=tmp_path) as server:
        wait_for(lambda: len(worker_pids(server)) == 2, what="two workers")
        for pid in worker_pids(server):
            assert blas_environment(pid) == dict.fromkeys(BLAS_THREAD_VARIABLES, "1")
    # An operator who wants BLAS threads keeps them.
    with running_server(artifact_path, env={"OPENBLAS_NUM_THREADS": "2"}, log_dir=tmp_path) as s:
        wait_for(lambda: len(worker_pids(s)) == 1, what="the worker")
        [pid] = worker_pids(s)
        assert blas_environment(pid)["OPENBLAS_NUM_THREADS"] == "2"
