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
from tests.clients.npm import npm_bin, npm_project

pytestmark = [pytest.mark.slow]

DOCUMENT = REPO_ROOT / "openapi.json"
#: No usage reports and no update checks: the tests run offline and report nothing.
QUIET = {"REDOCLY_TELEMETRY": "off", "REDOCLY_SUPPRESS_UPDATE_NOTICE": "true"}


def test_redocly_recommended_finds_nothing() -> None:
    project = npm_project()
    done = subprocess.run(
        [
            str(npm_bin("redocly")),
            "lint",
            str(DOCUMENT),
            "--config",
            str(project / "redocly.yaml"),
            "--format",
            "json",
        ],
        cwd=project,
        env={**os.environ, **QUIET},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    report = json.loads(done.stdout)
    problems = [
        f"{p['severity']} {p['ruleId']}: {p['message']} at {p['location'][0]['pointer']}"
        for p in report["problems"]
    ]
    assert problems == [], "\n".join(problems)
    assert report["totals"] == {**report["totals"], "errors": 0, "warnings": 0}
    assert done.returncode == 0, done.stderr


def test_spectral_oas_finds_nothing() -> None:
    project = npm_project()
    done = subprocess.run(
        [
            str(npm_bin("spectral")),
            "lint",
            str(DOCUMENT),
            "--ruleset",
            str(project / ".spectral.yaml"),
            "--format",
            "json",
            "--fail-severity",
            "hint",
        ],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    problems = [
        f"{p['code']}: {p['message']} at {'/'.join(map(str, p['path']))}"
        # The JSON report is followed by a summary line on the same stream.
        for p in json.JSONDecoder().raw_decode(done.stdout)[0]
    ]
    assert problems == [], "\n".join(problems)
    assert done.returncode == 0, done.stdout + done.stderr
