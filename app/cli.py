"""``heart-api`` (also ``python -m app``): serve the API, export its OpenAPI document, check.

``serve`` validates the configuration and loads the artifact *before* any
worker starts, so a bad setting or a missing model ends the command with one
clear line and exit status 2 instead of workers that crash and get restarted.
It then runs the workers under :mod:`app.supervisor` (one model for all of
them by content hash, SIGHUP reloads, exit status 3 when a worker cannot
start, draining on SIGTERM); several workers get a private
``PROMETHEUS_MULTIPROC_DIR`` (created empty, removed on exit) so the metrics
add up across workers and survive a worker's replacement.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import logging.config
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from app.logs import APP_LOGGER, logging_config
from app.settings import Settings, SettingsError, StartupError
from model.cli_support import HelpFormatter, add_version, prog_name

logger = logging.getLogger(APP_LOGGER)

EXIT_CONFIG_ERROR = 2
#: A worker failed to start (uvicorn's STARTUP_FAILURE), after the checks had passed.
EXIT_WORKER_FAILED = 3
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Thread counts of the BLAS builds NumPy may use (OpenBLAS in the wheels, OpenMP or MKL).
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog_name("heart-api", "app"),
        description="Heart-disease risk prediction API. Every option defaults to its "
        "HEART_* environment variable (see docs/api.md, Configuration).",
        formatter_class=HelpFormatter,
    )
    add_version(parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser(
        "serve", help="run the API with uvicorn (default command)", formatter_class=HelpFormatter
    )
    check = commands.add_parser(
        "check",
        help="validate configuration and artifact, print the model's version, path and "
        "SHA-256, then exit",
        formatter_class=HelpFormatter,
    )
    for sub in (serve, check):
        add_version(sub)
        sub.add_argument(
            "--model-path",
            type=Path,
            help="artifact (HEART_MODEL_PATH, default artifacts/model.joblib)",
        )
        sub.add_argument("--host", help="interface (HEART_HOST, default 127.0.0.1)")
        sub.add_argument("--port", type=int, help="TCP port (HEART_PORT, default 8000)")
        sub.add_argument("--workers", type=int, help="processes (HEART_WORKERS, default 1)")
        sub.add_argument(
            "--log-level",
            choices=["critical", "error", "warning", "info", "debug"],
            help="HEART_LOG_LEVEL, default info",
        )
        sub.add_argument(
            "--no-access-log",
            dest="access_log",
            action="store_const",
            const=False,
            help="no per-request log lines (HEART_ACCESS_LOG=false)",
        )

    openapi = commands.add_parser(
        "openapi",
        help="print the OpenAPI document of the default configuration "
        "(regenerate the repository's copy with: heart-api openapi --output openapi.json)",
        formatter_class=HelpFormatter,
    )
    add_version(openapi)
    openapi.add_argument(
        "--output", "-o", type=Path, help="write to a file instead (default: standard output)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    # `heart-api` alone, or `python -m app --host H --port P`, means `serve`.
    if not arguments or (
        arguments[0].startswith("-") and arguments[0] not in ("-h", "--help", "--version")
    ):
        arguments.insert(0, "serve")
    args = build_parser().parse_args(arguments)
    command: str = args.command
    if command == "openapi":
        return export_openapi(args.output)
    overrides = {
        name: getattr(args, name)
        for name in ("model_path", "host", "port", "workers", "log_level", "access_log")
    }
    try:
        settings = Settings.from_env(**overrides)
    except SettingsError as exc:
        _configure_logging("info")
        logger.critical(str(exc))
        return EXIT_CONFIG_ERROR
    _configure_logging(settings.log_level)
    unknown = Settings.unknown_variables()
    if unknown:
        logger.warning("ignoring unknown HEART_* variables: %s", ", ".join(unknown))

    from app.service import load_service  # imports the model stack: only when needed

    try:
        service = load_service(settings)
    except StartupError as exc:
        logger.critical(f"cannot start: {exc}")
        return EXIT_CONFIG_ERROR
    if command == "check":
        path = Path(settings.model_path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        logger.info(
            "configuration and model artifact are valid",
            extra={"model_version": service.model_version, "model_path": str(path)},
        )
        # The answer to "which model did it check?", for people and for scripts.
        print(f"model_version {service.model_version}")
        print(f"model_path {path}")
        print(f"model_sha256 {digest}")
        return 0
    return serve(settings)


def serve(settings: Settings) -> int:
    """Run the workers under :class:`app.supervisor.Supervisor`; see that module.

    Every worker rebuilds the settings from the environment, where the model
    path is the validated snapshot and its hash is pinned.
    """
    import uvicorn

    from app.protocol import HardenedHttpToolsProtocol
    from app.reload_status import RUN_DIR_ENV
    from app.supervisor import ModelSnapshots, SnapshotError, Supervisor

    os.environ.update(settings.to_env())
    # One BLAS thread per worker unless the operator says otherwise: a second
    # OpenBLAS thread doubled the CPU of a batch with gaps for a 9% lower p50, and
    # two workers on two cores served half the batches (BENCHMARKS.md, "BLAS
    # threads in the workers"); scale with --workers instead. NumPy's BLAS reads
    # it when a worker imports NumPy, so it goes into the environment they inherit.
    for name in BLAS_THREAD_VARIABLES:
        os.environ.setdefault(name, "1")
    run_dir = Path(tempfile.mkdtemp(prefix="heart-api-run-"))
    # One worker keeps its metrics in memory: multiprocess mode costs about 10 us per
    # request (locked memory-map writes), and Prometheus' rate() handles the counter
    # reset when a reload or a crash replaces the worker.
    own_metrics_dir = settings.workers > 1 and not os.environ.get(MULTIPROC_ENV)
    try:
        if own_metrics_dir:
            (run_dir / "metrics").mkdir()
            os.environ[MULTIPROC_ENV] = str(run_dir / "metrics")
        if os.environ.get(MULTIPROC_ENV):
            logger.info(
                "metrics shared by the workers (prometheus_client multiprocess mode)",
                extra={"metrics_dir": os.environ[MULTIPROC_ENV], "workers": settings.workers},
            )
        os.environ[RUN_DIR_ENV] = str(run_dir)
        snapshots = ModelSnapshots(run_dir, settings)
        try:
            snapshots.publish(snapshots.take())
        except SnapshotError as exc:
            logger.critical(f"cannot start: {exc}")
            return EXIT_CONFIG_ERROR
        # uvicorn's supervisor handles SIGTERM/SIGINT itself; these no-op handlers
        # only cover the moments before it installs its own.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, frame: None)
        config = uvicorn.Config(
            "app.main:create_app",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_config=logging_config(settings.log_level),
            log_level=settings.log_level,
            access_log=False,  # app.middleware writes a cheaper JSON line per request
            timeout_graceful_shutdown=settings.shutdown_timeout,
            server_header=False,
            # Header size limit, read timeouts and load shedding (see app/protocol.py).
            http=HardenedHttpToolsProtocol,
            # asyncio's loop, not uvloop: under a saturating load uvloop serves no new
            # connection until the load ends (a /health probe waited 5-8 s at 500
            # connections, with asyncio 0.2-0.4 s; bench/hardening.py measures both).
            loop="asyncio",
        )
        supervisor = Supervisor(
            config,
            [config.bind_socket()],
            snapshots=snapshots,
            metrics_dir=os.environ.get(MULTIPROC_ENV),
        )
        supervisor.run()
        if supervisor.startup_failed:
            logger.critical("a worker could not start: stopped the service (exit status 3)")
            return EXIT_WORKER_FAILED
        return 0
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
        os.environ.pop(RUN_DIR_ENV, None)
        if own_metrics_dir:
            os.environ.pop(MULTIPROC_ENV, None)


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document of the default configuration (no environment involved)."""
    from app.main import create_app

    return create_app(Settings()).openapi()


def export_openapi(output: Path | None) -> int:
    text = json.dumps(openapi_document(), indent=2, ensure_ascii=False) + "\n"
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
    return 0


def _configure_logging(level: str) -> None:
    logging.config.dictConfig(logging_config(level))
