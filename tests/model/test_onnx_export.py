"""The ONNX export scores every patient exactly as the served predictor does.

onnxruntime is an independent implementation of the graph, so agreement on
all 270 patients to 1e-6 shows the scaler folding, the layer order and the
output are right, not just that the file parses.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from model.artifact import load_artifact
from model.features import FEATURE_NAMES
from model.onnx_export import INPUT_NAME, ONNX_LIMITATIONS, OUTPUT_NAME
from tests._tools import assert_example_patient_answer, doc_python_block, run
from training.cli import main as train_main

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is in the onnx and dev extras")


@pytest.fixture(scope="module")
def onnx_path(artifact_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    status = train_main(
        ["export", "--format", "onnx", "--model-path", str(artifact_path), "-o", str(out)]
    )
    assert status == 0
    return out


def test_onnxruntime_scores_every_patient_like_the_predictor(
    onnx_path: Path,
    artifact_path: Path,
    heart_data: tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]],
) -> None:
    x, _ = heart_data
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (ours_onnx,) = session.run([OUTPUT_NAME], {INPUT_NAME: x.astype(np.float64)})
    ours = load_artifact(artifact_path).probability(x)
    assert ours_onnx.shape == (len(x),) == ours.shape
    np.testing.assert_allclose(ours_onnx, ours, rtol=0, atol=1e-6)
    # Not a constant: the patients span both classes.
    assert ours_onnx.min() < 0.2 and ours_onnx.max() > 0.8


def test_metadata_says_what_the_file_does_not_do(onnx_path: Path, artifact_path: Path) -> None:
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    predictor = load_artifact(artifact_path)
    assert meta["model_version"] == predictor.model_version
    assert float(meta["threshold"]) == predictor.threshold
    assert json.loads(meta["feature_names"]) == list(FEATURE_NAMES)
    assert json.loads(meta["not_included"]) == list(ONNX_LIMITATIONS)
    (inp,) = session.get_inputs()
    assert (inp.name, inp.type, inp.shape[1]) == (INPUT_NAME, "tensor(double)", 13)


def test_export_of_a_missing_artifact_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = train_main(["export", "--model-path", str(tmp_path / "nope.joblib")])
    assert status == 2
    assert "not found" in capsys.readouterr().err
    assert not (tmp_path / "nope.onnx").exists()


def test_the_docs_example_runs_as_written(
    onnx_path: Path, artifact_path: Path, tmp_path: Path
) -> None:
    code = doc_python_block("onnx.md", "Scoring with onnxruntime")
    (tmp_path / "artifacts").mkdir()
    shutil.copy(onnx_path, tmp_path / "artifacts" / "model.onnx")
    done = run([sys.executable, "-c", code], cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert_example_patient_answer(done.stdout, artifact_path)
