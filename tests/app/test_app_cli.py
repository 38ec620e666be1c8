"""The heart-api command: argument handling, pre-start checks, OpenAPI export."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from app import cli
from app.settings import Settings
from tests._tools import run_ok


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    """No HEART_* from the developer's shell; logging left as pytest set it up.

    (The command's own dictConfig would detach the ``heart`` logger from the
    root logger, where caplog listens; the e2e tests check the real logs.)
    """
    for key in list(os.environ):
        if key.startswith("HEART_"):
            monkeypatch.delenv(key)
    monkeypatch.setattr(cli, "_configure_logging", lambda level: None)


def test_options_without_a_command_mean_serve(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Settings] = []
    monkeypatch.setattr("app.service.load_service", lambda settings: None)
    monkeypatch.setattr(cli, "serve", lambda settings: seen.append(settings) or 0)
    assert cli.main(["--host", "127.0.0.2", "--port", "8123"]) == 0
    assert cli.main([]) == 0
    assert cli.main(["serve", "--workers", "2", "--no-access-log"]) == 0
    assert (seen[0].host, seen[0].port) == ("127.0.0.2", 8123)
    assert seen[1] == Settings()
    assert seen[2].workers == 2 and seen[2].access_log is False


def test_invalid_configuration_exits_2_with_one_line(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("HEART_PORT", "http")
    called: list[Any] = []
    monkeypatch.setattr(cli, "serve", lambda settings: called.append(settings) or 0)
    with caplog.at_level(logging.CRITICAL, logger="heart"):
        assert cli.main(["serve"]) == cli.EXIT_CONFIG_ERROR
    assert not called
    [record] = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert "HEART_PORT='http'" in record.getMessage()


def test_missing_artifact_exits_2_before_uvicorn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    called: list[Any] = []
    monkeypatch.setattr(cli, "serve", lambda settings: called.append(settings) or 0)
    missing = tmp_path / "missing.joblib"
    with caplog.at_level(logging.CRITICAL, logger="heart"):
        assert cli.main(["serve", "--model-path", str(missing)]) == cli.EXIT_CONFIG_ERROR
    assert not called
    [record] = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert str(missing) in record.getMessage()
    assert "python -m training" in record.getMessage()


def test_corrupt_artifact_exits_2(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    corrupt = tmp_path / "corrupt.joblib"
    corrupt.write_bytes(b"\x80\x04 this is not a pickle")
    with caplog.at_level(logging.CRITICAL, logger="heart"):
        assert cli.main(["check", "--model-path", str(corrupt)]) == cli.EXIT_CONFIG_ERROR
    assert "python -m training" in caplog.text


def test_check_passes_with_a_good_artifact(artifact_path: Path) -> None:
    assert cli.main(["check", "--model-path", str(artifact_path)]) == 0


def test_unknown_variables_are_warned_about(
    artifact_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("HEART_MODLE_PATH", "typo")
    with caplog.at_level(logging.WARNING, logger="heart"):
        assert cli.main(["check", "--model-path", str(artifact_path)]) == 0
    assert "HEART_MODLE_PATH" in caplog.text


def test_openapi_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "openapi.json"
    assert cli.main(["openapi", "--output", str(out)]) == 0
    assert cli.main(["openapi"]) == 0
    printed = capsys.readouterr().out
    assert printed == out.read_text()
    assert json.loads(printed) == cli.openapi_document()


def test_asgi_module_builds_the_app_from_the_environment(artifact_path: Path) -> None:
    """``uvicorn app.asgi:app`` works: importing the module builds a configured app."""
    code = (
        "import app.asgi, json; a = app.asgi.app; "
        "print(json.dumps([a.title, a.state.runtime.settings.max_batch_size]))"
    )
    env = {**os.environ, "HEART_MODEL_PATH": str(artifact_path), "HEART_MAX_BATCH_SIZE": "7"}
    done = run_ok([sys.executable, "-c", code], env=env, timeout=60)
    assert json.loads(done.stdout.splitlines()[-1]) == ["Heart disease risk API", 7]
