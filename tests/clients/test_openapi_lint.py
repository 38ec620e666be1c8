"""openapi.json passes the two linters API teams run, with nothing to excuse (issue 12).

Redocly's ``recommended`` rules and Spectral's ``spectral:oas`` rules, unmodified
(tests/clients/ts/redocly.yaml and .spectral.yaml), on the repository's copy
of the document (another test keeps it equal to the app's): zero errors and
zero warnings.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from app.testing import REPO_ROOT
from tests._tools import run
from tests.clients.npm import npm_bin, npm_project

pytestmark = [pytest.mark.slow]

DOCUMENT = REPO_ROOT / "openapi.json"
#: No usage reports and no update checks: the tests run offline and report nothing.
QUIET = {"REDOCLY_TELEMETRY": "off", "REDOCLY_SUPPRESS_UPDATE_NOTICE": "true"}


def _lint(
    tool: str, config_option: str, config: str, *options: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``tool lint`` of the document with its configuration from the npm project, as JSON."""
    project = npm_project()
    argv = [str(npm_bin(tool)), "lint", str(DOCUMENT), config_option, str(project / config)]
    return run([*argv, "--format", "json", *options], cwd=project, env=env, timeout=300)


def test_redocly_recommended_finds_nothing() -> None:
    done = _lint("redocly", "--config", "redocly.yaml", env={**os.environ, **QUIET})
    report = json.loads(done.stdout)
    problems = [
        f"{p['severity']} {p['ruleId']}: {p['message']} at {p['location'][0]['pointer']}"
        for p in report["problems"]
    ]
    assert problems == [], "\n".join(problems)
    assert report["totals"] == {**report["totals"], "errors": 0, "warnings": 0}
    assert done.returncode == 0, done.stderr


def test_spectral_oas_finds_nothing() -> None:
    done = _lint("spectral", "--ruleset", ".spectral.yaml", "--fail-severity", "hint")
    problems = [
        f"{p['code']}: {p['message']} at {'/'.join(map(str, p['path']))}"
        # The JSON report is followed by a summary line on the same stream.
        for p in json.JSONDecoder().raw_decode(done.stdout)[0]
    ]
    assert problems == [], "\n".join(problems)
    assert done.returncode == 0, done.stdout + done.stderr
