"""The servers under test: started through ``app.testing``, pinned, and read from ``/proc``.

:mod:`app.testing` is the one way to start, wait for and stop a server; this
adds what a measurement needs: the reference apps and the container image as
targets beside the service, pinning to one core with ``taskset`` (inherited by
uvicorn's workers) and renicing, and the serving processes' CPU time and
memory from ``/proc`` (no psutil needed).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.testing import REPO_ROOT, RunningServer, clean_environment, free_port, running
from app.testing import running_server as running_service

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
            return "no pinning: server and wrk share the CPU"
        return f"server on core {self.server}, wrk on core {self.client} (taskset)"


def pinned(argv: Sequence[str], cpus: Sequence[int] | None, nice: int = 0) -> list[str]:
    """Prefix ``argv`` with ``taskset -c`` when ``cpus`` is given, ``nice -n`` when ``nice``."""
    niced = ["nice", "-n", str(nice), *argv] if nice else list(argv)
    return ["taskset", "-c", ",".join(str(c) for c in cpus), *niced] if cpus else niced


@dataclass(frozen=True)
class Target:
    """A server under test: the service, a reference app (``app``) or an ``image`` of ours."""

    key: str
    label: str
    #: ``module:attribute`` of a reference ASGI app, served by plain uvicorn.
    app: str = ""
    ready_path: str = "/ready"
    has_batch: bool = True
    workers: int = 1
    image: str | None = None
    #: Serve this artifact instead of the run's (``bench.load --without-interval``).
    artifact: Path | None = None

    @property
    def is_service(self) -> bool:
        return not self.app


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
        return status_kib(Path(f"/proc/{pids[0]}/status").read_text(), key)


@contextlib.contextmanager
def started(
    target: Target, artifact: Path, log_dir: Path, cpus: Sequence[int] | None, nice: int = 0
) -> Iterator[Server]:
    """Start ``target`` (pinned to ``cpus``, reniced); yield it once it answers; stop it."""
    prefix, port = pinned([], cpus, nice), free_port()
    log = log_dir / f"{target.key}-{port}.log"
    if target.image:
        # On the host network, as the project's podman setup and probes use it: no
        # port-forwarding proxy in the path. conmon and the container inherit taskset.
        name = f"heart-bench-{port}"
        where = ["--network", "host", "-e", f"HEART_PORT={port}", "-e", "HEART_HOST=127.0.0.1"]
        command = [*prefix, "podman", "run", "--rm", "--name", name, *where]
        try:
            with running(
                [*command, target.image], port=port, env=podman_env(), log_path=log, timeout=120
            ) as server:
                yield Server(target, server, name)
        finally:
            podman("rm", "--force", "--time", "0", name)
    elif target.app:
        command = [*prefix, sys.executable, "-m", "uvicorn", target.app, "--host", "127.0.0.1"]
        command += ["--port", str(port), "--no-access-log", "--log-level", "warning"]
        ready, env = target.ready_path, clean_environment()
        with running(command, port=port, env=env, log_path=log, ready_path=ready, timeout=60) as s:
            yield Server(target, s)
    else:  # a busy shared machine can take tens of seconds to import and load the model
        workers = target.workers
        with running_service(
            target.artifact or artifact, workers=workers, log_dir=log_dir, prefix=prefix, timeout=60
        ) as s:
            yield Server(target, s)


def podman_env() -> dict[str, str]:
    """Ours, with the project's podman configuration (scripts/container-lib.sh) if present."""
    env, conf = dict(os.environ), REPO_ROOT / ".cache" / "containers"
    for variable, name in (
        ("CONTAINERS_STORAGE_CONF", "storage"),
        ("CONTAINERS_CONF", "containers"),
    ):
        if variable not in env and (conf / f"{name}.conf").is_file():
            env[variable] = str(conf / f"{name}.conf")
    return env


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


def post_json(url: str, body: bytes) -> Any:
    """POST ``body`` and return the decoded JSON reply; any non-200 is an error."""
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        raise ServerError(f"POST {url} answered {exc.code}: {exc.read()[:500]!r}") from exc


def status_kib(status_text: str, key: str) -> int:
    """A ``kB`` field (``VmRSS``, ``VmHWM``...) of a ``/proc/PID/status`` text, in KiB."""
    for name, _, value in (line.partition(":") for line in status_text.splitlines()):
        if name == key and value.split()[1:] == ["kB"]:
            return int(value.split()[0])
    raise ServerError(f"no {key} in process status")


def worker_pids(pid: int) -> list[int]:
    """The processes that serve requests: uvicorn's spawned workers, or ``pid`` itself.

    A plain ``uvicorn`` with one worker serves in the main process; ``heart-api
    serve`` (always) and ``uvicorn --workers N`` supervise children started by
    multiprocessing's ``spawn``
    (``spawn_main`` on their command line), next to helpers like the resource
    tracker that serve nothing.
    """
    children, spawned = [], []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            children += (task / "children").read_text().split()
    for child in children:
        with contextlib.suppress(OSError):
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                spawned.append(int(child))
    return spawned or [pid]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far (from /proc/PID/stat); 0 once it is gone."""
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


def model_path(given: Path) -> Path:
    """The artifact to serve: one ``make train`` (or ``python -m training``) wrote."""
    if not given.is_file():
        raise SystemExit(f"no model at {given}: run `make train` or `python -m training --output`")
    return given.resolve()
