"""External tools for tests: skip when absent on a developer's machine, fail in CI.

CI installs every tool (.ci/run), so a missing one there means the install
step is broken; letting the test skip would turn a broken check into a green
run that checks nothing.
"""

from __future__ import annotations

import os
import shutil

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_tool(name: str) -> str:
    """Return the path of executable ``name``; skip locally, fail in CI, if it is missing."""
    path = shutil.which(name)
    if path is None:
        message = f"`{name}` is not installed (see .ci/run for how CI installs it)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return path
