"""Run a real server in a subprocess on a free loopback port: tests, scripts and benchmarks.

End-to-end checks must exercise what users run, so :func:`running_server`
starts ``python -m app serve`` (the console script's code path: configuration
check, artifact pre-check, uvicorn, workers, metrics directory) rather than an
in-process app, and stops it with SIGTERM like a process manager would. The
benchmarks start their reference apps and the pinned service through the same
:func:`running`, so there is one way to start, wait for and stop a server.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class RunningServer:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait for a graceful exit; return the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise


def clean_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The current environment without HEART_* and multiprocess settings, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("HEART_") and k != "PROMETHEUS_MULTIPROC_DIR"
    }
    env.update(extra or {})
    return env


def service_environment(artifact: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Only the model path and ``extra``: a developer's own HEART_* settings must not leak in."""
    return clean_environment({"HEART_MODEL_PATH": str(artifact), **(extra or {})})


def service_command(port: int, *, workers: int = 1, args: Sequence[str] = ()) -> list[str]:
    """``python -m app serve`` on 127.0.0.1:``port``, as the console script runs it."""
    listen = ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    return [sys.executable, "-m", "app", "serve", *listen, *args]


def wait_until_healthy(
    server: RunningServer, timeout: float = 30.0, ready_path: str = "/ready"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"server exited with {server.process.returncode} before answering:\n" + server.log()
            )
        with (
            contextlib.suppress(OSError, urllib.error.URLError),
            urllib.request.urlopen(server.url + ready_path, timeout=1) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.05)
    raise RuntimeError(f"server did not become ready within {timeout} s:\n" + server.log())


@contextlib.contextmanager
def running(
    command: Sequence[str],
    *,
    port: int,
    env: Mapping[str, str],
    log_path: Path,
    ready_path: str = "/ready",
    timeout: float = 30.0,
) -> Iterator[RunningServer]:
    """Start ``command`` (which must listen on ``port``); yield once it answers; stop it."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            list(command), cwd=REPO_ROOT, env=dict(env), stdout=log, stderr=subprocess.STDOUT
        )
    server = RunningServer(process=process, port=port, log_path=log_path)
    try:
        wait_until_healthy(server, timeout, ready_path)
        yield server
    finally:
        if process.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.stop()


def running_server(
    artifact: Path,
    *,
    workers: int = 1,
    env: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
    log_dir: Path | None = None,
    prefix: Sequence[str] = (),
    timeout: float = 30.0,
) -> contextlib.AbstractContextManager[RunningServer]:
    """Start ``python -m app serve`` for ``artifact``; yield once it is ready; stop it.

    ``prefix`` goes before the command, e.g. ``taskset -c 0`` for a benchmark
    that pins the server to one core (``taskset`` and ``nice`` exec the
    server, so the process is the server itself).
    """
    port = free_port()
    directory = Path(log_dir or tempfile.mkdtemp(prefix="heart-api-test-"))
    return running(
        [*prefix, *service_command(port, workers=workers, args=args)],
        port=port,
        env=service_environment(artifact, env),
        log_path=directory / f"server-{port}.log",
        timeout=timeout,
    )
