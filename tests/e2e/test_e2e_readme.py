"""Run the docs' curl examples (README.md, docs/api.md) against a real server, as written.

Every ```bash block of an API section that calls curl is run by bash (with
``localhost:8000`` pointed at the test server's port) and its output compared
with the block that follows: JSON answers must have the README's structure
(same keys and value types; ``"...": "..."`` in an object and ``"..."`` at the
end of a list mark parts the README leaves out), and every line of a
``text`` block must appear in the output with the same metric and labels.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.settings import Settings
from app.testing import RunningServer, running_server
from scripts.readme_examples import README_HOST, Example, api_key, api_section, curl_examples
from tests._tools import REPO_ROOT, require_tool, run_ok

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ELLIPSIS = "..."


def readme_api_key() -> str:
    key = api_key()
    assert key, "docs/api.md shows how to start the server with an API key"
    return key


def same_shape(expected: Any, actual: Any, path: str = "$") -> list[str]:
    """Differences in structure between a README answer and a real one."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{path}: expected an object, got {actual!r:.60}"]
        problems = []
        keys = [k for k in expected if k != ELLIPSIS]
        missing = [k for k in keys if k not in actual]
        if missing:
            problems.append(f"{path}: missing keys {missing}")
        extra = [k for k in actual if k not in expected]
        if extra and ELLIPSIS not in expected:
            problems.append(f"{path}: keys not shown in the README {extra}")
        for k in keys:
            if k in actual:
                problems += same_shape(expected[k], actual[k], f"{path}.{k}")
        return problems
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return [f"{path}: expected a list, got {actual!r:.60}"]
        shown = expected[:-1] if expected and expected[-1] == ELLIPSIS else expected
        if len(shown) == len(expected) and len(actual) != len(expected):
            return [f"{path}: {len(actual)} items, the README shows {len(expected)}"]
        if len(actual) < len(shown):
            return [f"{path}: only {len(actual)} items"]
        problems = []
        for i, item in enumerate(shown):
            problems += same_shape(item, actual[i], f"{path}[{i}]")
        return problems
    if isinstance(expected, bool) or expected is None or isinstance(actual, bool):
        same = type(expected) is type(actual)
        return [] if same else [f"{path}: {actual!r} where the README has {expected!r}"]
    if isinstance(expected, int | float):
        number = isinstance(actual, int | float) and not isinstance(actual, bool)
        return [] if number else [f"{path}: {actual!r} is not a number"]
    if isinstance(expected, str):
        return [] if isinstance(actual, str) else [f"{path}: {actual!r} is not a string"]
    return [f"{path}: unexpected README value {expected!r}"]


def run(example: Example, server: RunningServer) -> str:
    command = example.command.replace(README_HOST, f"127.0.0.1:{server.port}")
    done = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", command],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, f"{example.where} failed: {done.stderr}"
    return done.stdout


def check_answer(example: Example, output: str) -> None:
    where = example.where
    if example.expected_kind == "json":
        actual = json.loads(output)
        problems = same_shape(json.loads(example.expected), actual)
        assert not problems, f"{where}: the real answer differs: {problems}\nreal: {output}"
        return
    for line in example.expected.splitlines():
        series = line.rsplit(" ", 1)[0]
        assert any(o.startswith(series + " ") for o in output.splitlines()), (
            f"{where}: no line for {series!r} in:\n{output}"
        )


@pytest.fixture(scope="module")
def servers(
    artifact_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[bool, RunningServer]]:
    logs = tmp_path_factory.mktemp("readme-servers")
    key = {"HEART_API_KEY": readme_api_key()}
    with (
        running_server(artifact_path, log_dir=logs) as open_server,
        running_server(artifact_path, env=key, log_dir=logs) as keyed_server,
    ):
        yield {False: open_server, True: keyed_server}


def test_readme_has_curl_examples_for_every_endpoint() -> None:
    commands = "\n".join(e.command for e in curl_examples())
    for path in ("/predict ", "/predict/batch", "/model", "/metrics", "/health", "/ready"):
        assert f"localhost:8000{path}" in commands, path


def test_readme_curl_examples(servers: dict[bool, RunningServer]) -> None:
    """All examples, in README order: later answers (the metrics) count earlier requests."""
    require_tool("curl")
    for example in curl_examples():
        check_answer(example, run(example, servers[example.needs_key]))


def test_readme_configuration_table_lists_every_setting() -> None:
    section, _ = api_section()
    rows = {
        m.group(1): m.group(2)
        for m in re.finditer(r"^\| `(HEART_[A-Z0-9_]+)` \| ([^|]+) \|", section, re.MULTILINE)
    }
    defaults = Settings()
    assert set(rows) == {Settings.env_name(name) for name in Settings.model_fields}
    for name in Settings.model_fields:
        value = getattr(defaults, name)
        shown = rows[Settings.env_name(name)].strip()
        if value is None:
            assert shown == "unset"
        else:
            text = str(value).lower() if isinstance(value, bool) else str(value)
            assert shown == f"`{text}`", (name, shown)


def test_readme_layout_names_every_module_on_the_predict_path(artifact_path: Path) -> None:
    """Every app/ and model/ module a prediction loads is named in the README's layout."""
    code = f"""
import json, sys
from fastapi.testclient import TestClient
from app import Settings, create_app
from app.schemas import PATIENT_EXAMPLE
with TestClient(create_app(Settings(model_path={str(artifact_path)!r}))) as c:
    assert c.post("/predict", json=PATIENT_EXAMPLE).status_code == 200
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("app", "model"))))
"""
    loaded = json.loads(run_ok([sys.executable, "-c", code]).stdout.splitlines()[-1])
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    layout = readme[readme.index("## Layout") : readme.index("## Data")]
    rows = {line.split("|")[1].strip(" `"): line for line in layout.splitlines() if "| `" in line}
    modules = [m for m in loaded if "." in m]  # the packages' __init__ are not modules to name
    assert "app.routes" in modules and "model.predictor" in modules  # the check sees the path
    missing = [
        m
        for m in modules
        if f"`{m.replace('.', '/')}.py`" not in layout
        and f"`{m.split('.')[1]}.py`" not in rows.get(m.split(".")[0] + "/", "")
    ]
    assert not missing, f"README's layout does not name {missing}"
