"""A TypeScript client generated from openapi.json type-checks strictly and works (issue 12).

openapi-typescript turns the repository's openapi.json into types,
openapi-fetch makes the calls, ``tsc --strict`` must accept
tests/clients/ts/src/client.ts without a cast, and Node runs it against a live
server; its answers are compared with the model's own.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from app.testing import REPO_ROOT, running_server
from model.artifact import load_artifact
from model.features import FEATURE_NAMES
from tests.clients.npm import npm_bin, npm_project

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _run(argv: list[str], cwd: Path) -> str:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, f"{argv[0]} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def compiled() -> Path:
    project = npm_project()
    build = project / "build"
    schema = build / "schema.d.ts"
    _run(
        [str(npm_bin("openapi-typescript")), str(REPO_ROOT / "openapi.json"), "-o", str(schema)],
        project,
    )
    types = schema.read_text(encoding="utf-8")
    # Named enums for coded features, and the metrics JSON without a `| string` to narrow.
    assert "ChestPainType: 1 | 2 | 3 | 4;" in types
    _run([str(npm_bin("tsc")), "--project", str(project / "tsconfig.json")], project)
    script = build / "js" / "src" / "client.js"
    assert script.exists()
    return script


def test_generated_typescript_client_against_a_live_server(
    compiled: Path, artifact_path: Path
) -> None:
    node = "node"
    with running_server(artifact_path) as server:
        seen = json.loads(_run([node, str(compiled), server.url], compiled.parent).strip())
    predictor = load_artifact(artifact_path)
    example = [54, 1, 4, 130, 245, 0, 2, 150, 0, 0.8, 2, 0, 3]
    expected = float(predictor.probability([example])[0])
    assert len(example) == len(FEATURE_NAMES)
    assert seen["probability"] == pytest.approx(expected, abs=1e-12)
    assert seen["batch"] == pytest.approx([expected, expected], abs=1e-12)
    assert seen["oip_probability"] == pytest.approx(expected, abs=1e-12)
    assert seen["oip_id"] == "ts-1"
    assert seen["refused_status"] == 422
    assert seen["refused_locations"] == ["body.age"]
    assert seen["model_version"] == predictor.model_version
    assert seen["predictions_total"] == 3  # 1 + 2 scored (not the refused one) before it was read
    assert (seen["health"], seen["ready"]) == ("ok", "ready")
