"""Property-based fuzzing of the running API with schemathesis (every check, bounded).

Schemathesis reads the served OpenAPI document and sends generated valid and
invalid requests to every operation, failing on any 5xx, undocumented status
code or content type, response that violates its schema, invalid input that is
accepted or valid input that is refused. Run with the API key too, so the
documented 401s and the ``ignored_auth`` check are exercised.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app.testing import running_server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

API_KEY = "schemathesis-key-0123456789"
#: Cases per operation and phase: about 10 s per run on a 2-core machine.
MAX_EXAMPLES = "100"
#: Per-operation settings, each with its reason.
CONFIG = Path(__file__).with_name("schemathesis.toml")


def schemathesis(url: str, workdir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    cli = Path(sys.executable).with_name("schemathesis")
    assert cli.exists(), "schemathesis is part of the dev extra"
    return subprocess.run(
        [
            str(cli),
            "--config-file",
            str(CONFIG),
            "run",
            f"{url}/openapi.json",
            "--max-examples",
            MAX_EXAMPLES,
            "--seed",
            "20240101",
            "--workers",
            "2",
            "--generation-database",
            "none",
            "--request-timeout",
            "10",
            "--no-color",
            *extra,
        ],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.mark.parametrize("with_key", [False, True], ids=["open", "api-key"])
def test_schemathesis_finds_nothing(artifact_path: Path, tmp_path: Path, with_key: bool) -> None:
    env = {"HEART_API_KEY": API_KEY} if with_key else {}
    extra = ("--header", f"X-API-Key: {API_KEY}") if with_key else ()
    with running_server(artifact_path, env=env, log_dir=tmp_path) as server:
        done = schemathesis(server.url, tmp_path, *extra)
        log = server.log()
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "No issues found" in done.stdout
    assert '"status":500' not in log
