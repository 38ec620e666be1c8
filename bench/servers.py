"""Starting, checking and stopping the servers under test, and reading their memory.

Each server is a real process on a free loopback port, optionally pinned to
one core with ``taskset`` (its workers inherit the affinity), with its output
going to a log file as it would in a deployment. Memory is read from
``/proc/PID/status`` of the uvicorn worker process, the one that serves.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any


class ServerError(RuntimeError):
    """A server did not start, did not answer as expected, or died."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pinned(argv: Sequence[str], cpus: Sequence[int] | None) -> list[str]:
    """Prefix ``argv`` with ``taskset -c`` when ``cpus`` is given."""
    if not cpus:
        return list(argv)
    return ["taskset", "-c", ",".join(str(c) for c in cpus), *argv]


def status_kib(status_text: str, key: str) -> int:
    """A ``kB`` field (``VmRSS``, ``VmHWM``...) of a ``/proc/PID/status`` text, in KiB."""
    for line in status_text.splitlines():
        name, _, value = line.partition(":")
        if name == key:
            parts = value.split()
            if len(parts) == 2 and parts[1] == "kB":
                return int(parts[0])
    raise ServerError(f"no {key} in process status")


def read_status_kib(pid: int, key: str = "VmRSS") -> int:
    return status_kib(Path(f"/proc/{pid}/status").read_text(), key)


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc, no psutil needed)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found.extend(int(c) for c in (task / "children").read_text().split())
    return found


def cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    return ""


def worker_pids(pid: int) -> list[int]:
    """The processes that serve requests: uvicorn's spawned workers, or ``pid`` itself.

    With one worker uvicorn serves in the main process; with several, the main
    process supervises children started by multiprocessing's ``spawn``
    (``spawn_main`` on their command line), next to helpers like the resource
    tracker that serve nothing.
    """
    spawned = [c for c in children(pid) if "spawn_main" in cmdline(c)]
    return spawned or [pid]


@dataclass
class Server:
    """A running server process and where to reach it."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    argv: list[str]
    _log: IO[bytes] | None = field(default=None, repr=False)
    #: Run after the process exits, e.g. to remove a container whatever happened.
    cleanup: list[str] | None = None
    env: dict[str, str] | None = field(default=None, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def workers(self) -> list[int]:
        return worker_pids(self.process.pid)

    def rss_kib(self) -> int:
        """Resident memory of the (single) serving worker."""
        pids = self.workers()
        if len(pids) != 1:
            raise ServerError(f"{self.name} has {len(pids)} workers; RSS needs exactly one")
        return read_status_kib(pids[0], "VmRSS")

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise ServerError(
                f"{self.name} exited with {self.process.returncode}; log:\n{self.log_tail()}"
            )

    def log_tail(self, n: int = 30) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-n:])

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM (graceful), then SIGKILL if it does not exit in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout_s)
        if self.cleanup:
            subprocess.run(self.cleanup, capture_output=True, check=False, timeout=60, env=self.env)
            self.cleanup = None
        if self._log is not None:
            self._log.close()
            self._log = None


def start(
    name: str,
    argv: Sequence[str],
    *,
    port: int,
    log_dir: Path,
    cpus: Sequence[int] | None = None,
    env: Mapping[str, str] | None = None,
    ready_path: str = "/",
    ready_timeout_s: float = 60.0,
    cwd: Path | None = None,
) -> Server:
    """Start ``argv`` and wait until ``GET ready_path`` answers 2xx.

    ``env`` is the complete environment of the server (default: ours).
    """
    log_path = log_dir / f"{name}.log"
    log = log_path.open("ab")
    command = pinned(argv, cpus)
    process = subprocess.Popen(
        command,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=dict(os.environ if env is None else env),
        cwd=cwd,
    )
    server = Server(
        name, port, process, log_path, command, log, env=None if env is None else dict(env)
    )
    deadline = time.monotonic() + ready_timeout_s
    while True:
        try:
            server.check_alive()
        except ServerError:
            server.stop()
            raise
        try:
            status, _ = request(server.url(ready_path), method="GET", timeout_s=2.0)
            if 200 <= status < 300:
                return server
        except OSError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise ServerError(
                f"{name} not ready after {ready_timeout_s:.0f} s:\n{server.log_tail()}"
            )
        time.sleep(0.1)


def request(
    url: str,
    *,
    method: str = "POST",
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout_s: float = 10.0,
) -> tuple[int, bytes]:
    """One HTTP request with the standard library: ``(status, body)``, 4xx/5xx included."""
    all_headers = {"Content-Type": "application/json"} if body is not None else {}
    all_headers.update(headers or {})
    req = urllib.request.Request(url, data=body, method=method, headers=all_headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def post_json(url: str, body: bytes) -> Any:
    """POST ``body`` and return the decoded JSON reply; any non-200 is an error."""
    status, reply = request(url, body=body)
    if status != 200:
        raise ServerError(f"POST {url} answered {status}: {reply[:500]!r}")
    return json.loads(reply)


@contextlib.contextmanager
def running(*args: Any, **kwargs: Any) -> Iterator[Server]:
    """:func:`start` as a context manager that always stops the server."""
    server = start(*args, **kwargs)
    try:
        yield server
    finally:
        server.stop()
