"""Structured logs: one JSON object per line on stderr, for every logger including uvicorn's.

Per-request lines do not go through :mod:`logging`: a ``LogRecord``, the
caller lookup and a formatter cost more than the rest of a prediction, so
:class:`AccessLog` writes a line assembled from constant pieces with a single
``write`` (one syscall on line-buffered stderr, so workers sharing the stream
never interleave inside a line). While other requests are in flight in the
worker, the lines of one event-loop turn are joined into one ``write`` of at
most ``PIPE_BUF`` bytes, so they still never interleave; a lone request's line
is written at once. It still honours the level of the ``heart.access`` logger.
Request and response bodies are never logged: they are health data.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from typing import Any, Final

ACCESS_LOGGER: Final[str] = "heart.access"
APP_LOGGER: Final[str] = "heart"
#: Writes up to this size reach a pipe whole (POSIX PIPE_BUF on Linux).
_PIPE_BUF: Final[int] = 4096

#: LogRecord attributes that are not user-supplied ``extra`` fields.
_RESERVED: Final[frozenset[str]] = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys() | {"message", "asctime"}
)


def utc_timestamp(epoch: float) -> str:
    """ISO-8601 UTC with milliseconds, the ``ts`` field of every line."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch % 1 * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", ...extra, "exc"?}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": utc_timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and key != "color_message" and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False, separators=(",", ":"))


def logging_config(level: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` document, also handed to uvicorn for its workers."""
    upper = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "app.logs.JsonFormatter"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            APP_LOGGER: {"handlers": ["stderr"], "level": upper, "propagate": False},
            "uvicorn": {"handlers": ["stderr"], "level": upper, "propagate": False},
            "uvicorn.error": {"level": upper},
            # Our own access line replaces uvicorn's; keep uvicorn's off even if enabled.
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
    }


def ensure_logging(level: str) -> None:
    """Make the service's own logs usable however the app was started.

    ``heart-api serve`` configures every logger (``logging_config``). Under
    another server, or in a test, the ``heart`` loggers still get the
    configured level (the access line checks it) and, when nothing at all is
    configured (no handler on ``heart`` nor on the root logger), our JSON handler.
    """
    logger = logging.getLogger(APP_LOGGER)
    if logger.level == logging.NOTSET:
        logger.setLevel(level.upper())
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
        logger.propagate = False


class AccessLog:
    """Writes the per-request JSON line cheaply; see the module docstring for why."""

    def __init__(self, enabled: bool = True) -> None:
        self._logger = logging.getLogger(ACCESS_LOGGER)
        self.enabled = enabled
        self._second = -1
        self._second_text = ""
        self._paths: dict[str, str] = {}
        #: Lines of this event-loop turn, written together by :meth:`flush`.
        self._pending: list[str] = []

    def _timestamp(self, now: float) -> str:
        second = int(now)
        if second != self._second:
            self._second = second
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._second_text}.{int((now - second) * 1000):03d}Z"

    def _path(self, path: str) -> str:
        quoted = self._paths.get(path)
        if quoted is None:
            quoted = json.dumps(path, ensure_ascii=False)
            if len(self._paths) < 512:  # bounded: scanners send endless distinct paths
                self._paths[path] = quoted
        return quoted

    def write(
        self,
        method: str,
        path: str,
        status: int,
        seconds: float,
        request_id: str,
        *,
        defer: bool = False,
    ) -> None:
        """One request's line; ``defer`` (in a running event loop only) joins it with the
        other lines of this loop turn: the middleware sets it when other requests are
        in flight, so the turn has more lines coming and none waits for long."""
        if not self.enabled or not self._logger.isEnabledFor(logging.INFO):
            return
        level = "info" if status < 500 else "error"
        line = (
            f'{{"ts":"{self._timestamp(time.time())}","level":"{level}",'
            f'"logger":"{ACCESS_LOGGER}","msg":"request","method":"{method}",'
            f'"path":{self._path(path)},"status":{status},'
            f'"latency_ms":{seconds * 1000.0:.3f},"request_id":"{request_id}"}}\n'
        )
        if defer or self._pending:  # (a pending line goes first: lines stay in order)
            self._pending.append(line)
            if len(self._pending) == 1:
                asyncio.get_running_loop().call_soon(self.flush)
        else:
            sys.stderr.write(line)

    def flush(self) -> None:
        """Write the pending lines: one ``write`` per ``PIPE_BUF`` bytes of whole lines."""
        lines, self._pending = self._pending, []
        chunk: list[str] = []
        size = 0
        for line in lines:
            if chunk and size + len(line) > _PIPE_BUF:
                sys.stderr.write("".join(chunk))
                chunk, size = [], 0
            chunk.append(line)
            size += len(line)
        if chunk:
            sys.stderr.write("".join(chunk))
