"""The Open Inference Protocol endpoints, in-process: shapes, layouts and every refusal.

(tests/e2e/test_e2e_oip.py drives a live server with tritonclient, a client we
did not write.)
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from fastapi.testclient import TestClient

from app import refusals
from app.main import create_app
from app.oip import is_protocol_path
from app.protocol import SHED_KEY
from app.settings import Settings
from model.artifact import load_artifact
from model.features import FEATURE_NAMES

INFER = "/v2/models/heart/infer"
API_KEY = "test-key-0123456789abcdef"


@pytest.fixture(scope="module")
def client(artifact_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(model_path=artifact_path, max_batch_size=50))) as c:
        yield c


@pytest.fixture(scope="module")
def rows(
    heart_data: tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]],
) -> npt.NDArray[np.float64]:
    return heart_data[0][:20]


def matrix_request(x: npt.NDArray[np.float64], **extra: Any) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": "features", "shape": list(x.shape), "datatype": "FP64", "data": x.tolist()}
        ],
        **extra,
    }


def column_request(x: npt.NDArray[np.float64]) -> dict[str, Any]:
    coded = {"sex", "chest_pain_type", "fasting_blood_sugar", "resting_ecg"}
    return {
        "inputs": [
            {
                "name": name,
                "shape": [len(x)],
                "datatype": "INT64" if name in coded else "FP64",
                "data": [int(v) if name in coded else v for v in x[:, j].tolist()],
            }
            for j, name in enumerate(FEATURE_NAMES)
        ]
    }


def outputs(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    return {o["name"]: o for o in response.json()["outputs"]}


def test_server_and_model_metadata(client: TestClient, artifact_path: Path) -> None:
    assert client.get("/v2").json()["name"] == "heart-risk"
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2/models/heart/ready").json() == {"name": "heart", "ready": True}
    meta = client.get("/v2/models/heart").json()
    assert meta["name"] == "heart"
    assert meta["versions"] == [load_artifact(artifact_path).model_version]
    assert meta["inputs"] == [{"name": "features", "datatype": "FP64", "shape": [-1, 13]}]
    assert [(o["name"], o["datatype"], o["shape"]) for o in meta["outputs"]] == [
        ("probability", "FP64", [-1]),
        ("prediction", "INT64", [-1]),
    ]
    assert meta["parameters"]["feature_order"] == list(FEATURE_NAMES)


@pytest.mark.parametrize("layout", ["matrix", "flat", "columns"])
def test_infer_matches_the_predictor_in_every_layout(
    client: TestClient, artifact_path: Path, rows: npt.NDArray[np.float64], layout: str
) -> None:
    if layout == "columns":
        body = column_request(rows)
    else:
        body = matrix_request(rows, id="req-7")
        if layout == "flat":
            body["inputs"][0]["data"] = rows.reshape(-1).tolist()
    answer = client.post(INFER, json=body)
    got = outputs(answer)
    predictor = load_artifact(artifact_path)
    expected = predictor.probability(rows)
    assert got["probability"]["shape"] == [len(rows)]
    np.testing.assert_allclose(got["probability"]["data"], expected, rtol=0, atol=1e-12)
    assert got["prediction"]["data"] == (expected >= predictor.threshold).astype(int).tolist()
    assert got["prediction"]["datatype"] == "INT64"
    assert answer.json()["model_name"] == "heart"
    assert answer.json().get("id") == (None if layout == "columns" else "req-7")


def test_infer_returns_only_the_requested_outputs(
    client: TestClient, rows: npt.NDArray[np.float64]
) -> None:
    body = matrix_request(rows, outputs=[{"name": "prediction"}])
    assert list(outputs(client.post(INFER, json=body))) == ["prediction"]


def test_an_empty_outputs_list_returns_every_output(
    client: TestClient, rows: npt.NDArray[np.float64]
) -> None:
    """``"outputs": []`` asks for nothing in particular, as no ``outputs`` does: an answer
    without a tensor was of no use (Triton too answers it with every output)."""
    every = outputs(client.post(INFER, json=matrix_request(rows)))
    assert list(every) == ["probability", "prediction"]
    assert outputs(client.post(INFER, json=matrix_request(rows, outputs=[]))) == every


def test_binary_tensor_extension(
    client: TestClient, artifact_path: Path, rows: npt.NDArray[np.float64]
) -> None:
    """Triton's binary data: JSON header, then the raw little-endian FP32 values."""
    raw = rows.astype("<f4").tobytes()
    tensor = {
        "name": "features",
        "shape": [len(rows), 13],
        "datatype": "FP32",
        "parameters": {"binary_data_size": len(raw)},
    }
    header = json.dumps({"inputs": [tensor]}).encode()
    answer = client.post(
        INFER,
        content=header + raw,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    expected = load_artifact(artifact_path).probability(rows.astype(np.float32))
    np.testing.assert_allclose(outputs(answer)["probability"]["data"], expected, atol=1e-12)


def _error(client: TestClient, body: Any, status: int = 400, **kwargs: Any) -> str:
    response = (
        client.post(INFER, json=body, **kwargs)
        if not isinstance(body, bytes)
        else client.post(INFER, content=body, **kwargs)
    )
    assert response.status_code == status, response.text
    payload = response.json()
    assert list(payload) == ["error"], payload
    message: str = payload["error"]
    return message


def test_out_of_range_values_are_refused_naming_row_and_feature(
    client: TestClient, rows: npt.NDArray[np.float64]
) -> None:
    bad = rows.copy()
    bad[3, 0] = 650  # age
    bad[5, 12] = 4  # thal has no code 4
    message = _error(client, matrix_request(bad))
    assert "row 3 column 0 (age): must be between 18 and 110 years, got 650" in message
    assert "row 5 column 12 (thal): must be one of 3 (normal)" in message
    columns = column_request(bad)
    assert "input 'age' element 3: must be between 18 and 110" in _error(client, columns)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"data": "nope"}, "inputs[0] ('features').data: Input should be a valid array"),
        ({"shape": [3, 13]}, "has 26 values but its shape [3, 13] needs 39"),
        ({"shape": [2, 12]}, "has shape [2, 12], expected [n, 13]"),
        ({"datatype": "BYTES"}, "inputs[0] ('features').datatype: Input should be 'FP64'"),
        # The protocol's types that are no NumPy number (see the datatypes test below).
        ({"datatype": "BOOL"}, "inputs[0] ('features').datatype: Input should be 'FP64'"),
        ({"datatype": "BF16"}, "inputs[0] ('features').datatype: Input should be 'FP64'"),
        ({"name": "patients"}, "unknown input 'patients'"),
    ],
)
def test_malformed_inputs_are_refused_naming_the_input(
    client: TestClient, rows: npt.NDArray[np.float64], change: dict[str, Any], expected: str
) -> None:
    body = matrix_request(rows[:2])
    body["inputs"][0].update(change)
    assert expected in _error(client, body)


def test_strict_numbers_like_predict(client: TestClient, rows: npt.NDArray[np.float64]) -> None:
    # (null is "not measured", not a type error: see the two null tests below.)
    for bad_value in (True, "54"):
        body = matrix_request(rows[:1])
        body["inputs"][0]["data"][0][0] = bad_value
        assert "('features').data" in _error(client, body), bad_value
    body = column_request(rows[:2])
    body["inputs"][1]["data"] = [0.5, 1]  # sex is INT64
    assert "input 'sex' is INT64 but holds fractions" in _error(client, body)


#: The example patient, with whole numbers only (an ST depression of 1), so that it fits INT16.
_WHOLE_PATIENT: list[float] = [54, 1, 4, 130, 245, 0, 2, 150, 0, 1, 2, 0, 3]


@pytest.mark.parametrize(
    ("datatype", "column", "value", "expected"),
    [
        # A blood pressure of 130 is one, but no INT8.
        ("INT8", 3, 130, "3 (resting_blood_pressure): 130 is outside the INT8 range (-128 to 127)"),
        ("INT8", 0, -129, "0 (age): -129 is outside the INT8 range (-128 to 127)"),
        ("INT16", 4, 40_000, "4 (serum_cholesterol): 40000 is outside the INT16 range"),
        ("INT32", 4, 2**31, "4 (serum_cholesterol): 2147483648 is outside the INT32 range"),
        ("INT64", 4, 2**64, "4 (serum_cholesterol): 18446744073709551616 is outside the INT64"),
        ("FP32", 4, 1e39, "4 (serum_cholesterol): 1e+39 is outside the FP32 range (-3.4028235e+38"),
        ("FP16", 4, 70_000, "4 (serum_cholesterol): 70000 is outside the FP16 range (-65504 to"),
        # Unsigned: a negative value is out of range, whatever the feature allows.
        ("UINT8", 0, -1, "0 (age): -1 is outside the UINT8 range (0 to 255)"),
        ("UINT8", 4, 256, "4 (serum_cholesterol): 256 is outside the UINT8 range (0 to 255)"),
        ("UINT16", 4, 65_536, "4 (serum_cholesterol): 65536 is outside the UINT16 range"),
        ("UINT32", 9, -1, "9 (st_depression): -1 is outside the UINT32 range (0 to 4294967295)"),
        ("UINT64", 9, -1, "9 (st_depression): -1 is outside the UINT64 range (0 to 18446744"),
    ],
)
def test_values_outside_their_datatype_are_refused_naming_input_and_datatype(
    client: TestClient, datatype: str, column: int, value: float, expected: str
) -> None:
    """JSON numbers are read as float64 whatever the datatype says: an INT8 input held a
    blood pressure of 130 and was scored, though no INT8 tensor (binary, Triton's) can."""
    row = list(_WHOLE_PATIENT)
    row[column] = value
    body = {"inputs": [{"name": "features", "shape": [1, 13], "datatype": datatype, "data": row}]}
    assert _error(client, body).startswith(f"input 'features' row 0 column {expected}")
    column_input = {"name": "serum_cholesterol", "shape": [2, 1], "datatype": "INT8"}
    columns = column_request(np.array([_WHOLE_PATIENT] * 2))
    columns["inputs"][4] = {**column_input, "data": [[127], [245]]}
    assert _error(client, columns) == (
        "input 'serum_cholesterol' element 1: 245 is outside the INT8 range (-128 to 127)"
    )
    body["inputs"][0].update(datatype="INT16", data=_WHOLE_PATIENT)  # a patient fits INT16
    assert outputs(client.post(INFER, json=body))["prediction"]["shape"] == [1]


@pytest.mark.parametrize(
    ("datatype", "largest", "overflows", "bounds"),
    [
        ("FP32", 3.4028235e38, 3.4028236e38, "-3.4028235e+38 to 3.4028235e+38"),
        ("FP16", 65519.99, 65520.0, "-65504 to 65504"),
    ],
)
def test_float_data_is_refused_only_where_its_type_would_overflow(
    client: TestClient, datatype: str, largest: float, overflows: float, bounds: str
) -> None:
    """A JSON number is the double nearest its text, so float32's maximum as its shortest
    text (``3.4028235e38``) is a little above it, though a FP32 tensor holds it: it was
    refused as outside "(-3.40282e+38 to 3.40282e+38)", bounds that read as the value
    itself. A value is refused for its datatype only if it would round to infinity."""
    for sign in (1, -1):
        row = list(_WHOLE_PATIENT)
        row[4] = sign * largest  # the datatype takes it; the feature's own range does not
        body = {"inputs": [{"name": "features", "shape": [1, 13], "datatype": datatype}]}
        body["inputs"][0]["data"] = row
        assert "(serum_cholesterol): must be between 80 and 700 mg/dl" in _error(client, body)
        row[4] = sign * overflows
        shown = repr(sign * overflows).removesuffix(".0")
        assert _error(client, body).endswith(
            f"(serum_cholesterol): {shown} is outside the {datatype} range ({bounds})"
        )


#: Two patients of whole numbers within 0 to 255, so that they fit every datatype but INT8.
_SMALL_PATIENTS = np.array([_WHOLE_PATIENT, [63, 0, 3, 140, 199, 1, 0, 120, 1, 2, 1, 2, 7]])


def _request(
    x: npt.NDArray[Any], datatype: str, *, binary: bool, layout: str
) -> tuple[bytes, dict[str, str]]:
    """``x`` as tritonclient or MLServer send a NumPy array or DataFrame of its dtype: one
    ``features`` input or one input per column, as JSON data or binary (little-endian)."""
    if layout == "matrix":
        named = [("features", x)]
    else:
        named = [(name, x[:, j]) for j, name in enumerate(FEATURE_NAMES)]
    tensors: list[dict[str, Any]] = []
    raw = b""
    for name, values in named:
        tensor: dict[str, Any] = {"name": name, "shape": list(values.shape), "datatype": datatype}
        if binary:
            data = values.astype(values.dtype.newbyteorder("<")).tobytes()
            tensor["parameters"] = {"binary_data_size": len(data)}
            raw += data
        else:
            tensor["data"] = values.tolist()
        tensors.append(tensor)
    header = json.dumps({"inputs": tensors}).encode()
    if not binary:
        return header, {"content-type": "application/json"}
    return header + raw, {"Inference-Header-Content-Length": str(len(header))}


@pytest.mark.parametrize("layout", ["matrix", "columns"])
@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize(
    ("datatype", "dtype"),
    [
        ("UINT8", np.uint8),
        ("UINT16", np.uint16),
        ("UINT32", np.uint32),
        ("UINT64", np.uint64),
        ("FP16", np.float16),
    ],
)
def test_unsigned_and_half_precision_tensors_are_read(
    client: TestClient,
    artifact_path: Path,
    datatype: str,
    dtype: type[np.generic],
    binary: bool,
    layout: str,
) -> None:
    """A pandas or NumPy ``uint8`` (or ``float16``) column, as tritonclient and MLServer's
    pandas codec send it, got a 400 although its values are honest numbers."""
    x = _SMALL_PATIENTS.astype(dtype)
    body, headers = _request(x, datatype, binary=binary, layout=layout)
    expected = load_artifact(artifact_path).probability(x.astype(np.float64))
    answer = outputs(client.post(INFER, content=body, headers=headers))
    np.testing.assert_allclose(answer["probability"]["data"], expected, rtol=0, atol=1e-12)


def test_binary_half_precision_keeps_its_gaps_and_fractions(
    client: TestClient, artifact_path: Path
) -> None:
    """NaN is "not measured" in an FP16 tensor too, and its fractions are read as sent."""
    x = np.array([[*_WHOLE_PATIENT[:9], 0.8, 2, np.nan, np.nan]], dtype=np.float16)
    body, headers = _request(x, "FP16", binary=True, layout="matrix")
    expected = load_artifact(artifact_path).probability(x.astype(np.float64))
    answer = outputs(client.post(INFER, content=body, headers=headers))
    np.testing.assert_allclose(answer["probability"]["data"], expected, rtol=0, atol=1e-12)


#: Every datatype of the protocol's specification ("Tensor Data Types"), with the NumPy
#: type a client's binary data of it come from (None: NumPy has none).
_PROTOCOL_DATATYPES: dict[str, type[np.generic] | None] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BF16": None,
    "BYTES": None,
}


def test_the_metadata_lists_exactly_the_datatypes_accepted(client: TestClient) -> None:
    """The metadata said FP64/FP32/INT64/INT32 while INT16 and INT8 were accepted too: a
    client reading it would convert columns it need not. Each of the protocol's datatypes
    is tried for one column (age 54 fits them all), as JSON and as binary data."""
    listed = client.get("/v2/models/heart").json()["parameters"]["datatypes"]
    assert len(set(listed)) == len(listed)
    assert set(listed) <= set(_PROTOCOL_DATATYPES)
    x = np.array([_WHOLE_PATIENT])
    base, _ = _request(x, "FP64", binary=False, layout="columns")
    accepted = []
    for datatype, dtype in _PROTOCOL_DATATYPES.items():
        body = json.loads(base)
        body["inputs"][0]["datatype"] = datatype
        json_answer = client.post(INFER, json=body)
        if json_answer.status_code == 200:
            accepted.append(datatype)
        else:
            assert json_answer.status_code == 400, json_answer.text
            assert "('age').datatype: Input should be" in json_answer.json()["error"]
        if dtype is not None:  # the same column as binary data of that type
            raw = np.array([54], dtype=dtype).astype(np.dtype(dtype).newbyteorder("<")).tobytes()
            body["inputs"][0] = {
                "name": "age",
                "shape": [1],
                "datatype": datatype,
                "parameters": {"binary_data_size": len(raw)},
            }
            header = json.dumps(body).encode()
            binary_answer = client.post(
                INFER,
                content=header + raw,
                headers={"Inference-Header-Content-Length": str(len(header))},
            )
            assert binary_answer.status_code == json_answer.status_code, datatype
    assert sorted(accepted) == sorted(listed)
    assert "datatypes" in client.get("/v2/models/heart").json()["parameters"]["column_layout"]


def test_layout_errors(client: TestClient, rows: npt.NDArray[np.float64]) -> None:
    columns = column_request(rows[:2])
    assert "missing input(s) 'thal'" in _error(client, {"inputs": columns["inputs"][:-1]})
    columns["inputs"][0]["data"] = [60.0]
    columns["inputs"][0]["shape"] = [1]
    assert "different lengths [1, 2]" in _error(client, columns)
    both = {"inputs": [*matrix_request(rows[:1])["inputs"], column_request(rows[:1])["inputs"][0]]}
    assert "not both" in _error(client, both)
    assert "shape [2, 13, 1]" in _error(
        client,
        {"inputs": [{"name": "features", "shape": [2, 13, 1], "datatype": "FP64",
                     "data": rows[:2].reshape(-1).tolist()}]},
    )  # fmt: skip
    assert "unknown output 'class'" in _error(
        client, matrix_request(rows[:1], outputs=[{"name": "class"}])
    )
    twice = [{"name": "prediction"}, {"name": "probability"}, {"name": "prediction"}]
    assert _error(client, matrix_request(rows[:1], outputs=twice)) == (
        "output 'prediction' is requested twice"
    )


def test_limits_and_bad_bodies(client: TestClient, heart_data: Any) -> None:
    too_many = heart_data[0][:51]
    assert "51 rows exceed the limit of 50" in _error(client, matrix_request(too_many))
    assert "not valid JSON" in _error(client, b"{nope")
    assert "no body" in _error(client, b"")
    assert "does not fit" in _error(
        client, b"{}", headers={"Inference-Header-Content-Length": "99"}
    )
    # Python's int() reads these; a proxy would not, and would split the body elsewhere.
    for odd in ("1_0", "+10", "1e3", "-1", "9" * 30):
        assert "Inference-Header-Content-Length must be a number of bytes" in _error(
            client, b"{}" * 10, headers={"Inference-Header-Content-Length": odd}
        ), odd
    header = b'{"inputs":[{"name":"features","shape":[1,13],"datatype":"FP64",'
    header += b'"parameters":{"binary_data_size":104}}]}'
    short = header + struct.pack("<12d", *range(12))
    assert "binary_data_size 104 does not fit" in _error(
        client, short, headers={"Inference-Header-Content-Length": str(len(header))}
    )


@pytest.mark.parametrize(
    ("size", "shown"), [(True, "true"), (104.0, "104.0"), ("104", '"104"'), (-8, "-8")]
)
def test_binary_data_size_must_be_an_integer(client: TestClient, size: Any, shown: str) -> None:
    """JSON's true is a Python int, so it used to pass as 1 byte ("True bytes are not...")."""
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "features",
                    "shape": [1, 13],
                    "datatype": "FP64",
                    "parameters": {"binary_data_size": size},
                }
            ]
        }
    ).encode()
    message = _error(
        client,
        header + struct.pack("<13d", *range(13)),
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert message == (
        f"input 'features': binary_data_size must be a non-negative integer "
        f"(a number of bytes), got {shown}"
    )


def _raw(template: str) -> str:
    """A JSON text json.dumps cannot write; TENSOR and ROW stand for a valid input's parts."""
    tensor = '"name": "features", "shape": [1, 13], "datatype": "FP64"'
    return template.replace("TENSOR", tensor).replace(
        "ROW", "[54, 1, 4, 130, 245, 0, 2, 150, 0, 0.8, 2, 0, 3]"
    )


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            _raw('{"inputs": [{TENSOR, "data": [1], "data": ROW}]}'),
            "inputs[0] ('features').data: Duplicate key 'data'",
        ),
        (
            _raw('{"inputs": [], "inputs": [{TENSOR, "data": ROW}]}'),
            "inputs: Duplicate key 'inputs'",
        ),
        (
            _raw(
                '{"inputs": [{TENSOR, "data": ROW}], "outputs": [{"name": "prediction", "name": '
                '"probability"}]}'
            ),
            "outputs[0].name: Duplicate key 'name'",
        ),
        (
            _raw('{"inputs": [{TENSOR, "data": ROW, "parameters": {"a": 1, "a": 2}}]}'),
            "inputs[0] ('features').parameters.a: Duplicate key 'a'",
        ),
        # Escaped quotes in the kept value balance the duplicate's: the quote count alone
        # would miss it.
        (
            _raw('{"id": "x", "id": "QQQQ", "inputs": [{TENSOR, "data": ROW}]}').replace(
                "Q", "\\u0022"
            ),
            "id: Duplicate key 'id'",
        ),
        # Invalid as the last value says, but the duplicate is the first thing to fix.
        (
            _raw('{"inputs": [{TENSOR, "data": ROW, "data": "x"}]}'),
            "inputs[0] ('features').data: Duplicate key 'data'",
        ),
    ],
    ids=["data", "inputs", "output name", "parameter", "escaped quotes", "invalid last"],
)
def test_duplicate_keys_are_refused_like_predict_does(
    client: TestClient, body: str, expected: str
) -> None:
    """The parser keeps a duplicated key's last value: what a proxy judged is not scored."""
    assert _error(client, body.encode()) == f"{expected}: send each field once"


def test_requests_without_duplicates_skip_the_second_parse(
    client: TestClient, rows: npt.NDArray[np.float64], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a header whose quote count is off (or with a backslash) is parsed again."""

    def fail(body: bytes) -> None:
        raise AssertionError(f"parsed again: {body[:80]!r}")

    monkeypatch.setattr("app.oip.refuse_duplicate_keys", fail)
    matrix = matrix_request(rows[:3], id="q-1", parameters={"k": ["v", {"w": None}]})
    matrix["outputs"] = [{"name": "probability", "parameters": {"binary_data": False}}]
    for body in (matrix, column_request(rows[:3])):
        outputs(client.post(INFER, content=json.dumps(body, indent=1)))
    raw = rows[:1].astype("<f8").tobytes()
    size = {"binary_data_size": len(raw)}
    tensor = {"name": "features", "shape": [1, 13], "datatype": "FP64", "parameters": size}
    header = json.dumps({"inputs": [tensor]}).encode()
    headers = {"Inference-Header-Content-Length": str(len(header))}
    answer = client.post(INFER, content=header + raw, headers=headers)
    assert answer.status_code == 200, answer.text
    monkeypatch.undo()
    escaped = json.dumps(matrix_request(rows[:1], id="caf\u00e9"), ensure_ascii=True)
    assert "\\u00e9" in escaped
    assert outputs(client.post(INFER, content=escaped))


#: Shapes NumPy itself cannot take (a 500 before they were checked): more than 64
#: dimensions, and dimensions whose product is 0 while one overflows 64 bits.
_HOSTILE_SHAPES = [[1] * 65, [9223372036854775808, 0], [2147483648, 8589934592, 0]]


def _binary(tensors: list[dict[str, Any]]) -> tuple[bytes, dict[str, str]]:
    """A binary-extension request whose inputs all have binary_data_size 0 and no bytes."""
    for tensor in tensors:
        del tensor["data"]
        tensor["parameters"] = {"binary_data_size": 0}
    header = json.dumps({"inputs": tensors}).encode()
    return header, {"Inference-Header-Content-Length": str(len(header))}


@pytest.mark.parametrize("shape", _HOSTILE_SHAPES, ids=["65 dims", "huge", "overflow"])
@pytest.mark.parametrize("layout", ["matrix", "binary", "columns"])
def test_shapes_numpy_cannot_take_are_refused_naming_the_input(
    client: TestClient, shape: list[int], layout: str
) -> None:
    names = FEATURE_NAMES if layout == "columns" else ("features",)
    data: list[float] = [1] if len(shape) == 65 else []
    tensors = [{"name": n, "shape": shape, "datatype": "FP64", "data": data} for n in names]
    if layout == "binary":
        body, headers = _binary(tensors)
        message = _error(client, body, headers=headers)
    else:
        message = _error(client, {"inputs": tensors})
    assert message.startswith(f"input {names[0]!r} has shape ["), message
    assert "expected [n" in message
    assert len(message) < 400  # 65 dimensions (or 4,000 digits) are not echoed in full


def test_rows_beyond_the_limit_are_refused_from_the_shape(client: TestClient) -> None:
    """A row count over the batch limit is refused before any data is read, digits cut."""
    huge = 10**4000
    message = _error(
        client,
        {"inputs": [{"name": "features", "shape": [huge, 13], "datatype": "FP64", "data": []}]},
    )
    assert message.startswith("input 'features': 100000000"), message
    assert "rows exceed the limit of 50" in message
    assert len(message) < 200
    tensors = [{"name": n, "shape": [51], "datatype": "FP64", "data": []} for n in FEATURE_NAMES]
    assert "input 'age': 51 rows exceed the limit of 50" in _error(client, {"inputs": tensors})


def test_unknown_models_get_the_protocol_error_shape(client: TestClient) -> None:
    response = client.post("/v2/models/resnet/infer", json={"inputs": []})
    assert response.status_code == 404
    assert response.json() == {"error": "model 'resnet' is not served here; the model is 'heart'"}
    assert client.get("/v2/models/resnet").status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "status", "message", "allow"),
    [
        ("OPTIONS", "/v2/models/heart", 405, "method OPTIONS not allowed; use GET", "GET"),
        ("GET", INFER, 405, "method GET not allowed; use POST", "POST"),
        ("DELETE", INFER, 405, "method DELETE not allowed; use POST", "POST"),
        ("PUT", "/v2", 405, "method PUT not allowed; use GET", "GET"),
        ("POST", "/v2/health/live", 405, "method POST not allowed; use GET", "GET"),
        ("OPTIONS", "/v2/models/resnet", 404, "model 'resnet' is not served here", None),
        ("TRACE", "/v2/models/resnet/infer", 404, "model 'resnet' is not served here", None),
        ("GET", "/v2/models/heart/versions/1", 404, "no such endpoint: /v2/models/heart/", None),
        ("GET", "/v2/repository/index", 404, "no such endpoint: /v2/repository/index", None),
        ("GET", "/v2/models/", 404, "no such endpoint: /v2/models/", None),
    ],
)
def test_routing_errors_below_v2_get_the_protocol_error_shape(
    client: TestClient, method: str, path: str, status: int, message: str, allow: str | None
) -> None:
    """The protocol requires {"error": ...} of every failure; the router says {"detail": ...}."""
    answer = client.request(method, path)
    assert answer.status_code == status
    assert list(answer.json()) == ["error"]
    assert answer.json()["error"].startswith(message)
    assert answer.headers.get("allow") == allow


def test_refusals_before_routing_get_the_protocol_error_shape(artifact_path: Path) -> None:
    """413 (declared or counted while reading a chunked body) and 400 come from the middleware."""
    with TestClient(create_app(Settings(model_path=artifact_path, max_body_bytes=4096))) as c:
        for body in (b"x" * 5000, iter([b"x" * 3000, b"x" * 3000])):
            answer = c.post(INFER, content=body)
            assert answer.status_code == 413
            assert "exceeds the limit of 4096 bytes" in answer.json()["error"]
        assert c.post("/predict", content=b"x" * 5000).json().keys() == {"detail"}
        answer = c.get("/v2/models/heart", headers={"content-length": "nope"})
        assert (answer.status_code, answer.json()) == (
            400,
            {"error": "Invalid Content-Length header."},
        )


def test_overload_refusals_below_v2_get_the_protocol_error_shape(artifact_path: Path) -> None:
    """A request shed by app.protocol while an earlier one on its connection is still being
    answered gets its 503 from the middleware; the protocol's own 503, 431 and 408 take the
    shape the app tells it (tests/app/test_protocol.py has them on a socket)."""
    app = create_app(Settings(model_path=artifact_path))

    async def shedding(scope: Any, receive: Any, send: Any) -> None:
        await app({**scope, SHED_KEY: True} if scope["type"] == "http" else scope, receive, send)

    with TestClient(shedding) as c:
        answer = c.get("/v2/models/heart")
        assert (answer.status_code, answer.headers["retry-after"]) == (503, "1")
        assert answer.json()["error"].startswith("The service is at its concurrency limit")
        assert list(c.get("/model").json()) == ["detail"]
    assert refusals.oip_path is is_protocol_path


def test_server_errors_below_v2_get_the_protocol_error_shape(
    artifact_path: Path, rows: npt.NDArray[np.float64], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr("app.oip.encode_response", broken)
    app = create_app(Settings(model_path=artifact_path))
    with TestClient(app, raise_server_exceptions=False) as c:
        answer = c.post(INFER, json=matrix_request(rows[:1]))
    assert (answer.status_code, answer.json()) == (500, {"error": "Internal server error."})


def test_parameter_validation_below_v2_gets_the_protocol_error_shape(
    artifact_path: Path,
) -> None:
    """No protocol route has a parameter FastAPI validates yet; one that does keeps the shape."""
    app = create_app(Settings(model_path=artifact_path))

    async def counted(n: int) -> dict[str, int]:
        return {"n": n}

    app.add_api_route("/v2/counted", counted)
    app.add_api_route("/counted", counted)
    with TestClient(app) as c:
        answer = c.get("/v2/counted", params={"n": "many"})
        assert answer.status_code == 422
        assert answer.json()["error"].startswith("query.n: Input should be a valid integer")
        assert c.get("/counted", params={"n": "many"}).json()["detail"][0]["loc"] == ["query", "n"]


def test_predictions_are_counted_in_metrics(
    client: TestClient, rows: npt.NDArray[np.float64]
) -> None:
    before = client.get("/metrics").json()["serving"]["predictions_total"]
    outputs(client.post(INFER, json=matrix_request(rows[:7])))
    assert client.get("/metrics").json()["serving"]["predictions_total"] == before + 7


def test_api_key_guards_inference_but_not_the_probes(
    artifact_path: Path, rows: npt.NDArray[np.float64]
) -> None:
    settings = Settings(model_path=artifact_path, api_key=API_KEY)
    with TestClient(create_app(settings)) as client:
        assert client.get("/v2/health/ready").status_code == 200
        assert client.get("/v2/health/live").status_code == 200
        refused = client.post(INFER, json=matrix_request(rows[:1]))
        assert refused.status_code == 401
        assert list(refused.json()) == ["error"]  # the protocol's shape, even here
        assert client.get("/v2/models/heart").status_code == 401
        assert client.get("/predict").json().keys() == {"detail"}  # ours elsewhere
        answer = client.post(INFER, json=matrix_request(rows[:1]), headers={"X-API-Key": API_KEY})
        assert answer.status_code == 200


def test_probes_document_the_only_refusal_they_can_give(client: TestClient) -> None:
    """The 400 the OpenAPI document lists for the probes is real: it comes from the middleware."""
    for path in ("/v2/health/live", "/v2/health/ready"):
        answer = client.get(path, headers={"content-length": "nope"})
        assert answer.status_code == 400
        assert answer.json() == {"error": "Invalid Content-Length header."}
    document = client.get("/openapi.json").json()
    for path in ("/v2/health/live", "/v2/health/ready"):
        assert "400" in document["paths"][path]["get"]["responses"]


def test_null_is_not_measured_where_predict_allows_it(
    client: TestClient, artifact_path: Path, rows: npt.NDArray[np.float64]
) -> None:
    """The protocol takes gaps as /predict does: null in JSON, NaN in a binary tensor."""
    gappy = rows[:4].copy()
    vessels, thal = FEATURE_NAMES.index("num_major_vessels"), FEATURE_NAMES.index("thal")
    gappy[0, vessels] = gappy[1, thal] = np.nan
    gappy[2, [vessels, thal]] = np.nan
    expected = load_artifact(artifact_path).probability(gappy)
    as_json = [[None if np.isnan(v) else v for v in row] for row in gappy.tolist()]
    matrix = matrix_request(gappy)
    matrix["inputs"][0]["data"] = as_json
    columns = column_request(np.nan_to_num(gappy))
    for j in (vessels, thal):
        columns["inputs"][j]["data"] = [None if np.isnan(v) else v for v in gappy[:, j]]
    for body in (matrix, columns):
        got = outputs(client.post(INFER, json=body))["probability"]["data"]
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    # The complete row is untouched by its neighbours' gaps.
    assert got[3] == pytest.approx(load_artifact(artifact_path).probability_one(gappy[3]))


def test_null_for_a_required_feature_is_refused_naming_it(
    client: TestClient, rows: npt.NDArray[np.float64]
) -> None:
    body = matrix_request(rows[:3])
    body["inputs"][0]["data"][1][FEATURE_NAMES.index("age")] = None
    message = _error(client, body)
    assert "row 1 column 0 (age)" in message
    assert "may not be missing" in message
    assert "got null" in message
