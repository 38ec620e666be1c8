"""How the supervisor tells every worker's ``/metrics`` about model reloads.

The supervisor is not a worker: it serves no requests and has no metrics of
its own, so it writes the outcome of each reload to a small JSON file in the
run directory, and whichever worker answers a scrape publishes it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Final

#: The environment variable through which workers find the run directory.
RUN_DIR_ENV: Final[str] = "HEART_RUN_DIR"
RELOAD_STATUS_FILE: Final[str] = "reload.json"
RESULTS: Final[tuple[str, ...]] = ("success", "failed", "unchanged")


class ReloadStatus:
    """What the supervisor tells the workers' ``/metrics`` about reloads (a JSON file)."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / RELOAD_STATUS_FILE
        self.counts = dict.fromkeys(RESULTS, 0)

    def record(self, result: str, model_version: str, reason: str = "") -> None:
        self.counts[result] += 1
        status = {
            "counts": self.counts,
            "last": {
                "result": result,
                "model_version": model_version,
                "reason": reason,
                "time": time.time(),
            },
        }
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(status), encoding="utf-8")
        os.replace(tmp, self.path)


def read_reload_status() -> dict[str, Any] | None:
    """The supervisor's reload status for this worker's metrics, if there is one."""
    run_dir = os.environ.get(RUN_DIR_ENV)
    if not run_dir:
        return None
    try:
        status: dict[str, Any] = json.loads((Path(run_dir) / RELOAD_STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return status
