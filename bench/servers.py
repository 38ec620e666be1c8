"""The servers under test: started through ``app.testing``, pinned, measured in rounds.

:mod:`app.testing` starts, waits for and stops every server; this adds the targets
beside the service (references, app variants, its image), pinning with ``taskset``
(inherited by workers), CPU time and memory from ``/proc``, and interleaved rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from app.testing import REPO_ROOT, RunningServer, free_port, running
from app.testing import service_command as service_argv
from app.testing import service_environment as service_env
from bench.report import RESULTS_DIR, proc_field, progress

#: What ``make train`` writes and ``make bench`` serves.
DEFAULT_MODEL = REPO_ROOT / "artifacts" / "model.joblib"
Case = TypeVar("Case", bound=Hashable)
Sample = TypeVar("Sample")


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
    """A server under test: the service, an ASGI ``app`` under uvicorn, or an ``image`` of ours."""

    key: str
    label: str
    #: ``module:attribute`` of an ASGI app (a reference, or ours with ``--factory``).
    app: str = ""
    ready_path: str = "/ready"
    has_batch: bool = True
    workers: int = 1
    image: str | None = None
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
        if self.image:  # on the host network, as the project's podman setup and probes use it
            where = ["--network", "host", "-e", f"HEART_PORT={port}", "-e", "HEART_HOST=127.0.0.1"]
            return ["podman", "run", "--rm", "--name", f"heart-bench-{port}", *where, self.image]
        if self.app:
            listen = ["--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
            listen += ["--log-level", "warning"]
            return [sys.executable, "-m", "uvicorn", self.app, *self.options, *listen]
        return service_argv(port, workers=self.workers)


@dataclass
class Server:
    target: Target
    running: RunningServer
    container: str | None = None

    def url(self, path: str) -> str:
        return self.running.url + path

    def check_alive(self) -> None:
        if (status := self.running.process.poll()) is not None:
            tail = "\n".join(self.running.log().splitlines()[-30:])
            raise ServerError(f"{self.target.key} exited with {status}:\n{tail}")

    def workers(self) -> list[int]:
        """The processes that serve requests, whose CPU time tells the cost per request."""
        pid = self.running.process.pid
        if self.container is not None:
            found = podman("inspect", "--format", "{{.State.Pid}}", self.container).strip()
            pid = int(found) if found.isdigit() and int(found) > 0 else 0
        return worker_pids(pid) if pid else []

    def rss_kib(self, key: str = "VmRSS") -> int:
        """Resident memory (``VmHWM``: its peak) of the single serving worker, in KiB."""
        pids = self.workers()
        if len(pids) != 1:
            raise ServerError(f"{self.target.key} has {len(pids)} workers; RSS needs exactly one")
        return status_kib(proc(pids[0], "status"), key)


@contextlib.contextmanager
def started(
    target: Target, artifact: Path, log_dir: Path, cpus: Sequence[int] | None, nice: int = 0
) -> Iterator[Server]:
    """Start ``target`` (pinned to ``cpus``, reniced); yield it once it answers; stop it.
    The time-outs are generous: a busy machine takes tens of seconds to load a model."""
    log_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    container = f"heart-bench-{port}" if target.image else None
    settings = dict(target.settings)
    env = podman_env() if container else service_env(target.artifact or artifact, settings)
    try:
        with running(
            pinned(target.command(port), cpus, nice),
            port=port,
            env=env,
            log_path=log_dir / f"{target.key}-{port}.log",
            ready_path=target.ready_path,
            timeout=120 if container else 60,
        ) as server:
            yield Server(target, server, container)
    finally:
        if container:
            podman("rm", "--force", "--time", "0", container)


def in_rounds(
    rounds: int, cases: Sequence[Case], measure: Callable[[Case], Sample]
) -> dict[Case, list[Sample]]:
    """Measure every case once per round, the order reversed every other round, so that
    medians compare figures taken in both orders, not one case's good minute with another's bad."""
    samples: dict[Case, list[Sample]] = {case: [] for case in cases}
    for round_no in range(rounds):
        for case in cases if round_no % 2 == 0 else reversed(cases):
            progress(f"round {round_no + 1}/{rounds}: {case}")
            samples[case].append(measure(case))
    return samples


def podman_env() -> dict[str, str]:
    """Ours, with the project's podman configuration (scripts/container-lib.sh) if present."""
    conf = REPO_ROOT / ".cache" / "containers"
    files = {"CONTAINERS_STORAGE_CONF": "storage", "CONTAINERS_CONF": "containers"}
    found = {k: str(conf / f"{f}.conf") for k, f in files.items() if (conf / f"{f}.conf").is_file()}
    return found | dict(os.environ)


def podman(*args: str) -> str:
    """Run a podman command; its stdout ("" when podman is missing or fails)."""
    with contextlib.suppress(OSError):
        done = subprocess.run(["podman", *args], capture_output=True, text=True, env=podman_env())
        return done.stdout if done.returncode == 0 else ""
    return ""


def image_description(image: str) -> str | None:
    """``IMAGE, built DATE from REVISION`` (None without podman or the image): which code."""
    label = '{{.Created}} {{index .Labels "org.opencontainers.image.revision"}}'
    parts = podman("image", "inspect", "--format", label, image).split()
    if len(parts) < 2:  # "2026-11-25 10:08:54.26 +0000 UTC <revision>"
        return None
    revision = parts[4][:7] if len(parts) > 4 and parts[4] not in ("unknown", "<no") else ""
    return f"{image}, built {parts[0]} {parts[1][:5]} UTC" + (f" from {revision}" * bool(revision))


def post(url: str, body: bytes, media_type: str | None = None) -> Any:
    """POST ``body`` and return the reply (decoded when JSON); any non-200 is an error."""
    headers = {"Content-Type": media_type or "application/json", "Accept": media_type or "*/*"}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, body, headers), timeout=60) as r:
            return r.read() if media_type else json.loads(r.read())
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
    parser.add_argument("--artifact", type=Path, default=DEFAULT_MODEL, help="model to serve")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR, help="where results go")
    return parser


def model_path(given: Path) -> Path:
    """The artifact to serve: one ``make train`` (or ``python -m training``) wrote."""
    if not given.is_file():
        raise SystemExit(f"no model at {given}: run `make train` or `python -m training --output`")
    return given.resolve()
