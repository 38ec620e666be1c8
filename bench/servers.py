"""The servers under test: started through ``app.testing``, pinned, read from ``/proc``.

:mod:`app.testing` starts, waits for and stops every server; this adds the targets
beside the service (references, app variants), pinning with ``taskset``
(inherited by workers), and their CPU time and memory from ``/proc``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.testing import REPO_ROOT, RunningServer, free_port, running
from app.testing import service_command as service_argv
from app.testing import service_environment as service_env
from bench.report import RESULTS_DIR, proc_field

#: What ``make train`` writes and ``make bench`` serves.
DEFAULT_MODEL = REPO_ROOT / "artifacts" / "model.joblib"


class ServerError(RuntimeError):
    """A server did not start, did not answer as expected, or died."""


@dataclass(frozen=True)
class CpuPlan:
    """Which cores the servers and the load generator may use (None: no pinning)."""

    server: tuple[int, ...] | None
    client: tuple[int, ...] | None

    @classmethod
    def for_this_machine(cls) -> CpuPlan:
        cores = sorted(os.sched_getaffinity(0))
        return cls((cores[0],), (cores[1],)) if len(cores) >= 2 else cls(None, None)

    def describe(self) -> str:
        if self.server is None:
            return "no pinning: server and load generator share the CPU"
        return f"server on core {self.server}, load generator on core {self.client} (taskset)"


def pinned(argv: Sequence[str], cpus: Sequence[int] | None, nice: int = 0) -> list[str]:
    """Prefix ``argv`` with ``taskset -c`` when ``cpus`` is given, ``nice -n`` when ``nice``."""
    niced = ["nice", "-n", str(nice), *argv] if nice else list(argv)
    return ["taskset", "-c", ",".join(str(c) for c in cpus), *niced] if cpus else niced


@dataclass(frozen=True)
class Target:
    """A server under test: the service as shipped, or an ASGI ``app`` under uvicorn."""

    key: str
    label: str
    #: ``module:attribute`` of an ASGI app (a reference, or ours with ``--factory``).
    app: str = ""
    ready_path: str = "/ready"
    has_batch: bool = True
    #: Serve this artifact instead of the run's (``bench.load --without-interval``).
    artifact: Path | None = None
    #: uvicorn options after the app: ``--factory``, ``--http``, ``--loop`` (bench.hardening).
    options: tuple[str, ...] = ()
    #: ``HEART_*`` settings beside the model path, e.g. the access log off.
    settings: tuple[tuple[str, str], ...] = ()

    @property
    def is_service(self) -> bool:
        return not self.app

    def command(self, port: int) -> list[str]:
        """How this target is run on ``port``, before pinning."""
        if self.app:
            listen = ["--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
            listen += ["--log-level", "warning"]
            return [sys.executable, "-m", "uvicorn", self.app, *self.options, *listen]
        return service_argv(port)


@dataclass
class Server:
    target: Target
    running: RunningServer

    def url(self, path: str) -> str:
        return self.running.url + path

    def check_alive(self) -> None:
        if (status := self.running.process.poll()) is not None:
            tail = "\n".join(self.running.log().splitlines()[-30:])
            raise ServerError(f"{self.target.key} exited with {status}:\n{tail}")

    def workers(self) -> list[int]:
        """The processes that serve requests, whose CPU time tells the cost per request."""
        return worker_pids(self.running.process.pid)

    def rss_kib(self) -> int:
        """Resident memory (``VmRSS``) of the single serving worker, in KiB."""
        pids = self.workers()
        if len(pids) != 1:
            raise ServerError(f"{self.target.key} has {len(pids)} workers; RSS needs exactly one")
        return status_kib(proc(pids[0], "status"), "VmRSS")


@contextlib.contextmanager
def started(
    target: Target, artifact: Path, log_dir: Path, cpus: Sequence[int] | None, nice: int = 0
) -> Iterator[Server]:
    """Start ``target`` (pinned to ``cpus``, reniced); yield it once it answers; stop it.
    The time-outs are generous: a busy machine takes tens of seconds to load a model."""
    log_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    with running(
        pinned(target.command(port), cpus, nice),
        port=port,
        env=service_env(target.artifact or artifact, dict(target.settings)),
        log_path=log_dir / f"{target.key}-{port}.log",
        ready_path=target.ready_path,
        timeout=60,
    ) as server:
        yield Server(target, server)


def post(url: str, body: bytes, media_type: str | None = None, extra: Sequence[str] = ()) -> Any:
    """POST ``body`` (with the ``extra`` headers, ``"Name: value"``) and return the reply,
    decompressed and decoded when JSON; any non-200 is an error."""
    headers = {"Content-Type": media_type or "application/json", "Accept": media_type or "*/*"}
    headers |= {name.strip(): value.strip() for name, _, value in (h.partition(":") for h in extra)}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, body, headers), timeout=60) as r:
            raw = r.read()
            if r.headers.get("Content-Encoding"):  # gzip or zlib: the header says which
                raw = zlib.decompress(raw, zlib.MAX_WBITS | 32)
            return raw if media_type else json.loads(raw)
    except urllib.error.HTTPError as exc:
        raise ServerError(f"POST {url} answered {exc.code}: {exc.read()[:500]!r}") from exc


def status_kib(status_text: str, key: str) -> int:
    """A ``kB`` field (``VmRSS``, ``VmHWM``...) of a ``/proc/PID/status`` text, in KiB."""
    value = proc_field(status_text, key).split()
    if value[1:] != ["kB"]:
        raise ServerError(f"no {key} in kB in process status")
    return int(value[0])


def proc(pid: int, name: str) -> str:
    """``/proc/PID/NAME``, or "" once the process is gone (it may exit while we read)."""
    try:
        return Path(f"/proc/{pid}/{name}").read_text(errors="replace")
    except OSError:
        return ""


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (a supervisor's workers and helpers), from /proc."""
    found, todo = [], [pid]
    while todo:
        found.append(current := todo.pop())
        tasks = Path(f"/proc/{current}/task").glob("*")
        todo += [int(c) for t in tasks for c in proc(current, f"task/{t.name}/children").split()]
    return found


def worker_pids(pid: int) -> list[int]:
    """The processes that serve requests: ``pid`` itself for a plain ``uvicorn``, else the
    children ``heart-api serve`` or ``uvicorn --workers N`` spawned (``spawn_main`` on their
    command line), not helpers like the resource tracker."""
    return [c for c in process_tree(pid)[1:] if "spawn_main" in proc(c, "cmdline")] or [pid]


def cpu_seconds(*pids: int) -> float:
    """User + system CPU time of ``pids`` so far (0 for one gone): unlike requests per
    second, it does not depend on the CPU share a shared machine's scheduler gives them."""
    stats = [proc(pid, "stat").rsplit(")", 1)[-1].split() for pid in pids]
    return sum(int(f[11]) + int(f[12]) for f in stats if len(f) > 12) / os.sysconf("SC_CLK_TCK")


def arguments(module: str, description: str | None) -> argparse.ArgumentParser:
    """The options every server benchmark shares: the model, the rounds, where results go."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=description)
    parser.add_argument("--artifact", type=model_path, default=str(DEFAULT_MODEL), help="model")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR, help="where results go")
    return parser


def model_path(given: str | Path) -> Path:
    """``--artifact``: a model ``make train`` (or ``python -m training``) wrote, checked before
    any server starts."""
    if not Path(given).is_file():
        raise argparse.ArgumentTypeError(f"no model at {given}: run `make train` first")
    return Path(given).resolve()
