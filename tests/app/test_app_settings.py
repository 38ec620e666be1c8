"""HEART_* configuration: parsed and validated once, errors name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.settings import Settings, SettingsError


def test_defaults() -> None:
    s = Settings.from_env({})
    assert s == Settings()
    assert s.model_path == Path("artifacts/model.joblib")
    assert s.api_key is None
    assert (s.host, s.port, s.workers, s.log_level) == ("127.0.0.1", 8000, 1, "info")
    assert s.max_batch_size == 1000
    assert s.max_table_rows == 30_000  # docs/scoring.md: about 30,000 CSV rows fit the body
    assert s.max_body_bytes == 2 * 1024 * 1024


def test_every_field_reads_its_variable() -> None:
    env = {
        "HEART_MODEL_PATH": "/models/m.joblib",
        "HEART_API_KEY": "k" * 20,
        "HEART_HOST": "0.0.0.0",
        "HEART_PORT": "9000",
        "HEART_WORKERS": "3",
        "HEART_LOG_LEVEL": "warning",
        "HEART_ACCESS_LOG": "false",
        "HEART_MAX_BODY_BYTES": "4096",
        "HEART_MAX_BATCH_SIZE": "10",
        "HEART_MAX_TABLE_ROWS": "500",
        "HEART_SHUTDOWN_TIMEOUT": "5",
        "HEART_OPENTELEMETRY": "true",
        "HEART_MAX_HEADER_BYTES": "8192",
        "HEART_HEADER_TIMEOUT": "2.5",
        "HEART_BODY_TIMEOUT": "7",
        "HEART_MAX_CONCURRENT_REQUESTS": "16",
        "HEART_MODEL_SHA256": "AB" * 32,
        "HEART_DRIFT_MIN_PATIENTS": "50",
    }
    assert set(env) == {Settings.env_name(name) for name in Settings.model_fields}
    s = Settings.from_env(env)
    assert s.model_path == Path("/models/m.joblib")
    assert s.api_key is not None and s.api_key.get_secret_value() == "k" * 20
    assert (s.host, s.port, s.workers, s.log_level, s.access_log) == (
        "0.0.0.0",
        9000,
        3,
        "warning",
        False,
    )
    assert (s.max_body_bytes, s.max_batch_size, s.shutdown_timeout) == (4096, 10, 5)
    assert s.opentelemetry is True
    assert (s.max_header_bytes, s.header_timeout, s.body_timeout) == (8192, 2.5, 7.0)
    assert s.max_concurrent_requests == 16
    assert s.model_sha256 == "ab" * 32
    assert s.drift_min_patients == 50
    assert s.max_table_rows == 500
    # to_env reproduces the settings in a worker process
    assert Settings.from_env(s.to_env()) == s


def test_empty_api_key_means_none() -> None:
    assert Settings.from_env({"HEART_API_KEY": ""}).api_key is None


def test_api_key_is_never_shown() -> None:
    s = Settings.from_env({"HEART_API_KEY": "super-secret-value-123"})
    assert "super-secret" not in repr(s)
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"HEART_API_KEY": "short-secret"})
    assert "short-secret" not in str(info.value)
    assert "HEART_API_KEY" in str(info.value)


def test_short_api_key_is_measured_in_characters() -> None:
    """Pydantic's own message said "at least 16 items" and quoted the secret's length."""
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"HEART_API_KEY": "short"})
    message = str(info.value)
    assert message == (
        "invalid configuration: HEART_API_KEY=<hidden>: should have at least 16 characters"
    )
    assert "items" not in message and "5" not in message


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"HEART_PORT": "eighty"}, "HEART_PORT='eighty'"),
        ({"HEART_PORT": "70000"}, "HEART_PORT='70000'"),
        ({"HEART_WORKERS": "0"}, "HEART_WORKERS='0'"),
        ({"HEART_LOG_LEVEL": "loud"}, "HEART_LOG_LEVEL='loud'"),
        ({"HEART_MAX_BATCH_SIZE": "-1"}, "HEART_MAX_BATCH_SIZE"),
        ({"HEART_MAX_TABLE_ROWS": "0"}, "HEART_MAX_TABLE_ROWS='0'"),
        ({"HEART_MAX_BODY_BYTES": "10"}, "HEART_MAX_BODY_BYTES"),
        ({"HEART_ACCESS_LOG": "maybe"}, "HEART_ACCESS_LOG"),
    ],
)
def test_invalid_values_name_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env)
    message = str(info.value)
    assert message.startswith("invalid configuration: ")
    assert named in message
    assert "\n" not in message


def test_all_problems_are_reported_at_once() -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"HEART_PORT": "x", "HEART_WORKERS": "y"})
    assert "HEART_PORT" in str(info.value) and "HEART_WORKERS" in str(info.value)


def test_overrides_win_and_are_named_as_flags() -> None:
    s = Settings.from_env({"HEART_PORT": "9000"}, port=9100, host=None)
    assert s.port == 9100 and s.host == "127.0.0.1"
    with pytest.raises(SettingsError, match="--port=0"):
        Settings.from_env({}, port=0)


def test_unknown_heart_variables_are_listed() -> None:
    env = {"HEART_MODLE_PATH": "x", "HEART_PORT": "1", "OTHER": "y"}
    assert Settings.unknown_variables(env) == ["HEART_MODLE_PATH"]
