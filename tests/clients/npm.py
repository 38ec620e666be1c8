"""The npm tools some tests drive, installed from tests/clients/ts/package-lock.json.

Node is not a dependency of the service; it is how TypeScript users and the
OpenAPI linters run. Outside CI a machine without Node skips these tests with
the reason; in CI (CI=true) a missing Node fails them, because there a skip
would hide a broken install.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests._tools import require_tool

PROJECT = Path(__file__).with_name("ts")


def npm_project() -> Path:
    """The npm project with its pinned packages installed (``npm ci``, once per lock change)."""
    require_tool("node")
    npm = require_tool("npm")
    installed = PROJECT / "node_modules" / ".package-lock.json"
    lock = PROJECT / "package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        # --ignore-scripts: no package's install script runs (one would phone home).
        subprocess.run(
            [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=PROJECT,
            check=True,
            timeout=900,
        )
    return PROJECT


def npm_bin(name: str) -> Path:
    """An installed package's command, e.g. ``tsc`` or ``redocly``."""
    path = npm_project() / "node_modules" / ".bin" / name
    assert path.exists(), f"{name} is missing from {PROJECT / 'package.json'}"
    return path
