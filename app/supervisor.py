"""The process that runs the workers: one model for all of them, reloads, clean exits.

``heart-api serve`` always runs its workers (one or more) under this
supervisor, a small extension of uvicorn's own ``Multiprocess``, because
issue 11 found what a bare ``uvicorn --workers`` does with a model file:

* **One model, by content.** The artifact is read once, copied into a private
  run directory as a *snapshot* named by its SHA-256, validated there, and
  every worker loads that snapshot with the hash pinned
  (``HEART_MODEL_SHA256``). A worker restarted after a crash therefore loads
  the same bytes, whatever happened to the original file since; a damaged
  snapshot is refused by the hash, never unpickled.
* **Reload without downtime** (``SIGHUP``). The supervisor reads and validates
  the artifact at ``HEART_MODEL_PATH`` again. If it is invalid, nothing
  changes and the reason is logged and published in ``/metrics``
  (``heart_model_reloads_total{result="failed"}``, ``heart_model_reload_info``).
  Otherwise it starts a complete new set of workers on the new snapshot and
  waits until every one of them has loaded and self-tested it; only then are
  the old workers stopped gracefully (they finish their in-flight requests and
  answer requests already on their connections with ``Connection: close``).
  If any new worker fails, the new ones are stopped and the old ones keep
  serving: all switch or none.
* **Exit status.** A worker that cannot start (exit status 3) stops the
  service, and ``heart-api serve`` then exits 3 instead of uvicorn's 0, so
  ``restart: on-failure`` and Kubernetes see the failure.
* **Worker gauge.** A worker that dies without stopping cleanly (SIGKILL, OOM)
  is marked dead in the shared metrics, so ``heart_worker_processes`` stays
  right.
* **Draining.** On SIGTERM the supervisor closes its copy of the listening
  socket before stopping the workers, which close theirs at once: new
  connections are refused while in-flight requests finish.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from prometheus_client.multiprocess import mark_process_dead
from uvicorn.config import STARTUP_FAILURE, Config
from uvicorn.supervisors.multiprocess import Multiprocess, Process

from app.logs import APP_LOGGER
from app.reload_status import ReloadStatus
from app.settings import Settings
from model.artifact import ArtifactError, read_artifact_bytes, sha256_of

logger = logging.getLogger(APP_LOGGER)

#: Seconds a new set of workers gets to load and self-test the model on reload.
RELOAD_READY_TIMEOUT: Final[float] = 120.0


class SnapshotError(RuntimeError):
    """The artifact cannot become the served model; the message says why."""


@dataclass(frozen=True)
class Snapshot:
    path: Path
    sha256: str
    model_version: str


class ModelSnapshots:
    """Validated private copies of the artifact, named by content hash."""

    def __init__(self, run_dir: Path, settings: Settings) -> None:
        self.run_dir = run_dir
        self.settings = settings
        self.current: Snapshot | None = None

    def take(self) -> Snapshot:
        """Copy and validate ``HEART_MODEL_PATH`` now; raise :class:`SnapshotError`."""
        from app.service import load_service
        from app.settings import StartupError

        source = self.settings.model_path
        try:
            data = read_artifact_bytes(source)
        except ArtifactError as exc:
            raise SnapshotError(str(exc)) from None
        digest = sha256_of(data)
        pinned = self.settings.model_sha256
        if pinned is not None and digest != pinned:
            raise SnapshotError(
                f"model artifact at {source} has SHA-256 {digest}, not the pinned {pinned} "
                "(HEART_MODEL_SHA256): refusing to unpickle it"
            )
        path = self.run_dir / f"model-{digest}.joblib"
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.chmod(0o444)
            os.replace(tmp, path)
        try:
            service = load_service(
                self.settings.model_copy(update={"model_path": path, "model_sha256": digest})
            )
        except StartupError as exc:
            path.unlink(missing_ok=True)
            raise SnapshotError(str(exc).replace(str(path), str(source))) from None
        reason = service.self_test()
        if reason is not None:
            path.unlink(missing_ok=True)
            raise SnapshotError(f"model artifact at {source} fails its self-test: {reason}")
        return Snapshot(path=path, sha256=digest, model_version=service.model_version)

    def publish(self, snapshot: Snapshot) -> None:
        """Make ``snapshot`` what workers started from now on load."""
        old = self.current
        self.current = snapshot
        os.environ[Settings.env_name("model_path")] = str(snapshot.path)
        os.environ[Settings.env_name("model_sha256")] = snapshot.sha256
        if old is not None and old.path != snapshot.path:
            old.path.unlink(missing_ok=True)


class Supervisor(Multiprocess):
    """uvicorn's ``Multiprocess`` with the behaviour described in the module docstring."""

    def __init__(
        self,
        config: Config,
        sockets: list[socket.socket],
        *,
        snapshots: ModelSnapshots,
        metrics_dir: str | None,
    ) -> None:
        super().__init__(config, sockets)
        self.snapshots = snapshots
        self.metrics_dir = metrics_dir
        self.status = ReloadStatus(snapshots.run_dir)
        self.startup_failed = False

    def keep_subprocess_alive(self) -> None:
        before = {id(p): p for p in self.processes}
        super().keep_subprocess_alive()
        for process in before.values():
            if process.exitcode is not None:  # died (and was replaced, or stops us)
                self._forget(process)
        if any(p.exitcode == STARTUP_FAILURE for p in self.processes):
            self.startup_failed = True

    def terminate_all(self) -> None:
        # Close our copy of the listening socket first; the workers close theirs as
        # their shutdown begins, so new connections are refused from then on.
        for sock in self.sockets:
            sock.close()
        super().terminate_all()

    def join_all(self) -> None:
        super().join_all()
        for process in self.processes:
            self._forget(process)

    def handle_hup(self) -> None:
        logger.info("SIGHUP: reloading the model", extra={"pid": os.getpid()})
        self.reload()

    def reload(self) -> bool:
        """Validate the artifact again and switch every worker to it, or none."""
        current = self.snapshots.current
        assert current is not None
        try:
            snapshot = self.snapshots.take()
        except SnapshotError as exc:
            logger.error(f"model reload failed, keeping {current.model_version}: {exc}")
            self.status.record("failed", current.model_version, str(exc))
            return False
        if snapshot.sha256 == current.sha256:
            logger.info(
                "model reload: the artifact is unchanged", extra={"sha256": snapshot.sha256}
            )
            self.status.record("unchanged", current.model_version)
            return True
        self.snapshots.publish(snapshot)
        new = [Process(self.config, self.sockets) for _ in self.processes]
        for process in new:
            process.start()
        deadline = time.monotonic() + RELOAD_READY_TIMEOUT
        ready = all(
            p.wait_until_ready(max(0.1, deadline - time.monotonic()), self.should_exit) for p in new
        )
        if not ready:
            for process in new:
                process.kill()
                process.join()
                self._forget(process)
            self.snapshots.publish(current)
            reason = "a new worker did not become ready (see its log lines above)"
            logger.error(f"model reload failed, keeping {current.model_version}: {reason}")
            self.status.record("failed", current.model_version, reason)
            return False
        old, self.processes = self.processes, new
        for process in old:
            process.terminate()
        for process in old:
            process.join()
            self._forget(process)
        logger.info(
            "model reloaded",
            extra={
                "model_version": snapshot.model_version,
                "previous_model_version": current.model_version,
                "sha256": snapshot.sha256,
            },
        )
        self.status.record("success", snapshot.model_version)
        return True

    def _forget(self, process: Process) -> None:
        """Drop a dead worker's live gauges (a SIGKILLed worker cannot do it itself)."""
        if self.metrics_dir and process.pid is not None:
            mark_process_dead(process.pid, self.metrics_dir)  # type: ignore[no-untyped-call]
