"""A client generated from openapi.json by openapi-python-client talks to the real server.

The generator runs on the repository's exported document (which another test
keeps equal to the app's), the client is imported from a temporary directory,
and the client example of docs/api.md is run as written.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from app.schemas import PATIENT_EXAMPLE
from app.testing import RunningServer, running_server
from tests._tools import REPO_ROOT, run, run_ok

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PACKAGE = "heart_api_client"
API_KEY = "client-test-key-0123456789"
CONTENT_TYPE_OVERRIDES = {
    "text/csv": "application/octet-stream",
    "application/vnd.apache.arrow.stream": "application/octet-stream",
}


@pytest.fixture(scope="module")
def client_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("generated")
    generator = Path(sys.executable).with_name("openapi-python-client")
    assert generator.exists(), "openapi-python-client is part of the dev extra"
    env = {**os.environ, "PATH": f"{generator.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    # The generator knows no CSV or Arrow bodies: /predict/table takes them as bytes
    # (docs/ says so; the same setting works for anyone generating a client).
    config = out / "generator.json"
    config.write_text(json.dumps({"content_type_overrides": CONTENT_TYPE_OVERRIDES}))
    done = run(
        [
            str(generator),
            "generate",
            "--path",
            str(REPO_ROOT / "openapi.json"),
            "--output-path",
            str(out / PACKAGE),
            "--meta",
            "none",
            "--config",
            str(config),
        ],
        cwd=out,
        env=env,
        timeout=300,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "Warning" not in output, f"the generator could not use all of openapi.json:\n{output}"
    return out


@pytest.fixture(scope="module")
def generated(client_dir: Path) -> Iterator[dict[str, ModuleType]]:
    sys.path.insert(0, str(client_dir))
    try:
        names = [
            "",
            ".models",
            ".api.predictions.predict",
            ".api.predictions.predict_batch",
            ".api.monitoring.get_metrics",
            ".api.model.get_model",
        ]
        yield {name: importlib.import_module(PACKAGE + name) for name in names}
    finally:
        sys.path.remove(str(client_dir))
        for module in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[module]


@pytest.fixture(scope="module")
def servers(
    artifact_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunningServer, RunningServer]]:
    logs = tmp_path_factory.mktemp("client-servers")
    with (
        running_server(artifact_path, log_dir=logs) as open_server,
        running_server(artifact_path, env={"HEART_API_KEY": API_KEY}, log_dir=logs) as keyed,
    ):
        yield open_server, keyed


def test_typed_calls(generated: dict[str, ModuleType], servers: tuple[RunningServer, Any]) -> None:
    server, _ = servers
    models = generated[".models"]
    client = generated[""].Client(base_url=server.url, raise_on_unexpected_status=True)
    patient = models.PatientFeatures.from_dict(PATIENT_EXAMPLE)
    assert patient.thal is models.Thal.NORMAL
    assert patient.sex is models.Sex.MALE

    answer = generated[".api.predictions.predict"].sync(client=client, body=patient)
    assert isinstance(answer, models.Prediction)
    assert 0.0 <= answer.probability <= 1.0
    assert isinstance(answer.label, models.PredictionLabel)
    assert int(answer.prediction) == (answer.probability >= answer.threshold)

    batch = generated[".api.predictions.predict_batch"].sync(
        client=client, body=models.BatchRequest(patients=[patient, patient, patient])
    )
    assert isinstance(batch, models.BatchPrediction)
    assert [p.probability for p in batch.predictions] == pytest.approx([answer.probability] * 3)

    report = generated[".api.monitoring.get_metrics"].sync(client=client)
    assert isinstance(report, models.MetricsReport)
    assert isinstance(report.serving, models.ServingMetrics)
    assert report.serving.predictions_total >= 4
    assert report.model_version == answer.model_version
    assert isinstance(report.serving.drift[0], models.FeatureDrift)

    card = generated[".api.model.get_model"].sync(client=client)
    assert isinstance(card, models.ModelCard)
    assert [f.name for f in card.features] == list(PATIENT_EXAMPLE)


def test_errors_are_typed_too(
    generated: dict[str, ModuleType], servers: tuple[RunningServer, RunningServer]
) -> None:
    server, keyed = servers
    models = generated[".models"]
    predict = generated[".api.predictions.predict"]
    client = generated[""].Client(base_url=server.url)
    bad = models.PatientFeatures.from_dict(PATIENT_EXAMPLE)
    bad.age = 5.0  # the client does not check bounds; the server does
    response = predict.sync_detailed(client=client, body=bad)
    assert response.status_code == 422
    assert isinstance(response.parsed, models.HTTPValidationError)
    assert response.parsed.detail[0].loc == ["body", "age"]

    anonymous = generated[""].Client(base_url=keyed.url)
    denied = predict.sync_detailed(client=anonymous, body=bad)
    assert denied.status_code == 401
    assert isinstance(denied.parsed, models.ErrorMessage)
    allowed = generated[""].Client(base_url=keyed.url, headers={"X-API-Key": API_KEY})
    good = models.PatientFeatures.from_dict(PATIENT_EXAMPLE)
    assert isinstance(predict.sync(client=allowed, body=good), models.Prediction)


def test_readme_client_example_runs(client_dir: Path, servers: tuple[RunningServer, Any]) -> None:
    server, _ = servers
    readme = (REPO_ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Generating a client") :]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, "docs/api.md shows how to use the generated client"
    code = match.group(1).replace("http://localhost:8000", server.url)
    done = run_ok([sys.executable, "-c", code], cwd=client_dir, timeout=60)
    lines = done.stdout.splitlines()
    probability, label = lines[0].split(" ", 1)
    classes, total = lines[1], lines[2]
    assert 0.0 <= float(probability) <= 1.0
    assert label.endswith("heart disease")
    assert classes in ("[0, 0]", "[1, 1]")
    assert int(total) >= 3
