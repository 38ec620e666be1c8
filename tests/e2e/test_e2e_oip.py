"""A client we did not write, tritonclient, speaks the Open Inference Protocol to a live server.

It exercises what Triton users run: server and model probes, model metadata,
inference with JSON and with binary tensors (its default), FP64, FP32 and FP16,
integer columns signed and unsigned, and its error path, against ``heart-api serve``
in a subprocess.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from app.testing import RunningServer, running_server
from model.artifact import load_artifact
from tests._tools import assert_example_patient_answer, doc_python_block

httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient is in the dev extra")
InferenceServerException = pytest.importorskip("tritonclient.utils").InferenceServerException
triton_to_np_dtype = pytest.importorskip("tritonclient.utils").triton_to_np_dtype

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def server(artifact_path: Path) -> Iterator[RunningServer]:
    with running_server(artifact_path) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: RunningServer) -> Iterator[Any]:
    triton = httpclient.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    yield triton
    triton.close()


def test_probes_and_metadata(client: Any, artifact_path: Path) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("heart")
    assert not client.is_model_ready("resnet")
    metadata = client.get_model_metadata("heart")
    assert metadata["versions"] == [load_artifact(artifact_path).model_version]
    assert metadata["inputs"][0] == {"name": "features", "datatype": "FP64", "shape": [-1, 13]}
    assert {"FP16", "INT8", "UINT8"} <= set(metadata["parameters"]["datatypes"])
    assert client.get_server_metadata()["name"] == "heart-risk"


_FLOATS = {"FP64": np.float64, "FP32": np.float32, "FP16": np.float16}


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("datatype", list(_FLOATS))
def test_infer_every_patient(
    client: Any,
    artifact_path: Path,
    heart_data: tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]],
    binary: bool,
    datatype: str,
) -> None:
    x = heart_data[0].astype(_FLOATS[datatype])
    features = httpclient.InferInput("features", list(x.shape), datatype)
    features.set_data_from_numpy(x, binary_data=binary)
    requested = [
        httpclient.InferRequestedOutput("probability", binary_data=binary),
        httpclient.InferRequestedOutput("prediction", binary_data=binary),
    ]
    result = client.infer("heart", [features], outputs=requested, request_id="batch-1")
    predictor = load_artifact(artifact_path)
    expected = predictor.probability(x.astype(np.float64))
    probability = result.as_numpy("probability")
    assert probability.shape == (len(x),)
    np.testing.assert_allclose(probability, expected, rtol=0, atol=1e-12)
    assert (result.as_numpy("prediction") == (expected >= predictor.threshold)).all()
    assert result.get_response()["id"] == "batch-1"


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("codes", ["INT64", "UINT8"])
def test_column_inputs_as_the_pandas_codec_sends_them(
    client: Any,
    artifact_path: Path,
    heart_data: tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]],
    codes: str,
    binary: bool,
) -> None:
    """Coded columns as int64 (pandas' default) or uint8 (a compact DataFrame's)."""
    from model.features import FEATURES

    x = heart_data[0][:30]
    inputs = []
    for j, feature in enumerate(FEATURES):
        datatype = codes if feature.codes else "FP64"
        column = x[:, j].astype(triton_to_np_dtype(datatype))
        tensor = httpclient.InferInput(feature.name, [len(x)], datatype)
        tensor.set_data_from_numpy(column, binary_data=binary)
        inputs.append(tensor)
    result = client.infer("heart", inputs)
    expected = load_artifact(artifact_path).probability(x)
    np.testing.assert_allclose(result.as_numpy("probability"), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("sent", "asked"), [("gzip", "gzip"), ("deflate", "deflate"), ("gzip", None)]
)
def test_compressed_requests_and_answers(
    client: Any,
    artifact_path: Path,
    heart_data: tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]],
    sent: str,
    asked: str | None,
) -> None:
    """``request_compression_algorithm`` compresses the body (binary tensors included) and
    sends Content-Encoding; ``response_compression_algorithm`` asks for a compressed answer,
    which tritonclient decodes itself."""
    x = heart_data[0]
    features = httpclient.InferInput("features", list(x.shape), "FP64")
    features.set_data_from_numpy(x, binary_data=True)
    result = client.infer(
        "heart",
        [features],
        request_compression_algorithm=sent,
        response_compression_algorithm=asked,
    )
    expected = load_artifact(artifact_path).probability(x)
    np.testing.assert_allclose(result.as_numpy("probability"), expected, rtol=0, atol=1e-12)


def test_a_decompression_bomb_is_refused_and_the_server_serves_on(server: RunningServer) -> None:
    """10 MB of zeros gzip to 10 kB: 413 in the protocol's shape, the connection closed,
    and the worker answers the next request."""
    bomb = gzip.compress(b"0" * 10_000_000)
    request = urllib.request.Request(
        f"{server.url}/v2/models/heart/infer",
        data=bomb,
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 413
    assert refused.value.headers["Connection"] == "close"
    assert "HEART_MAX_BODY_BYTES" in json.loads(refused.value.read())["error"]
    with urllib.request.urlopen(f"{server.url}/v2/health/ready", timeout=10) as ready:
        assert ready.status == 200


def test_errors_reach_the_client_with_our_message(
    client: Any, heart_data: tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]
) -> None:
    x = heart_data[0][:2].copy()
    x[1, 4] = 2400.0  # serum cholesterol, a typo
    features = httpclient.InferInput("features", list(x.shape), "FP64")
    features.set_data_from_numpy(x, binary_data=False)
    with pytest.raises(InferenceServerException) as info:
        client.infer("heart", [features])
    assert info.value.status() == "400"
    assert "row 1 column 4 (serum_cholesterol): must be between 80 and 700 mg/dl" in str(
        info.value.message()
    )


def test_the_docs_example_runs_as_written(server: RunningServer, artifact_path: Path) -> None:
    code = doc_python_block("open-inference-protocol.md", "With tritonclient")
    code = code.replace("localhost:8000", f"127.0.0.1:{server.port}")
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert_example_patient_answer(done.stdout, artifact_path)
