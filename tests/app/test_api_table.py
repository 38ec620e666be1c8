"""``POST /predict/table``: CSV and Arrow bodies, answers per Accept, the batch's 422 shape."""

from __future__ import annotations

import gzip
import io
import logging
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from app import Settings, columnar, create_app
from app.service import PredictionService
from model.artifact import load_artifact
from model.features import FEATURE_NAMES
from scoring.synthetic import registry
from tests._tools import REQUIRED_NOT_A_NUMBER, TEXT_WHERE_MAY_BE_MISSING, text_not_utf8
from tests.scoring.same import assert_same_probabilities

ARROW = "application/vnd.apache.arrow.stream"


@pytest.fixture(scope="module")
def client(artifact_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(model_path=artifact_path))) as c:
        yield c


def arrow_body(df: pd.DataFrame) -> bytes:
    return arrow_body_of(pa.Table.from_pandas(df, preserve_index=False))


def arrow_body_of(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue())


def read_arrow(content: bytes) -> pd.DataFrame:
    return pa.ipc.open_stream(content).read_all().to_pandas()


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return registry(2_000, seed=5, missing=0.05)


def test_arrow_in_arrow_out_equals_the_predictor(
    client: TestClient, artifact_path: Path, frame: pd.DataFrame
) -> None:
    r = client.post("/predict/table", content=arrow_body(frame), headers={"Content-Type": ARROW})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == ARROW
    out = read_arrow(r.content)
    assert list(out.columns) == ["probability", "prediction", "probability_low", "probability_high"]
    predictor = load_artifact(artifact_path)
    expected = predictor.probability(frame[list(FEATURE_NAMES)].to_numpy())
    assert_same_probabilities(out["probability"], expected)
    assert out["prediction"].tolist() == (expected >= predictor.threshold).astype(int).tolist()


def test_csv_in_answers_each_accepted_format_with_the_same_numbers(
    client: TestClient, frame: pd.DataFrame
) -> None:
    body = frame.to_csv(index=False).encode()
    answers = {}
    for accept in (None, "application/json", ARROW, "text/csv;q=0.5, application/json;q=0.9"):
        headers = {"Content-Type": "text/csv"} | ({"Accept": accept} if accept else {})
        r = client.post("/predict/table", content=body, headers=headers)
        assert r.status_code == 200, r.text
        answers[accept] = r
    assert answers[None].headers["content-type"].startswith("text/csv")
    as_csv = pd.read_csv(io.BytesIO(answers[None].content))["probability"]
    as_json = [p["probability"] for p in answers["application/json"].json()["predictions"]]
    as_arrow = read_arrow(answers[ARROW].content)["probability"]
    assert (
        answers["text/csv;q=0.5, application/json;q=0.9"].headers["content-type"]
        == "application/json"
    )
    assert_same_probabilities(as_csv, as_json)
    assert_same_probabilities(as_arrow, as_json)


def test_json_answer_is_the_batch_endpoints_answer(client: TestClient) -> None:
    df = registry(5, seed=9)
    patients = [
        {
            k: (int(v) if float(v).is_integer() and k != "st_depression" else v)
            for k, v in row.items()
        }
        for row in df[list(FEATURE_NAMES)].to_dict("records")
    ]
    batch = client.post("/predict/batch", json={"patients": patients})
    table = client.post(
        "/predict/table",
        content=arrow_body(df),
        headers={"Content-Type": ARROW, "Accept": "application/json"},
    )
    assert batch.status_code == table.status_code == 200, (batch.text, table.text)
    assert table.json() == batch.json()


@pytest.mark.parametrize("sent", ["text/csv", ARROW])
@pytest.mark.parametrize("accept", ["application/json", "text/csv", ARROW])
def test_no_rows_is_an_empty_answer_in_every_format(
    client: TestClient, sent: str, accept: str
) -> None:
    """A header without rows (or an Arrow schema without batches) scores nobody: 200, no rows."""
    empty = registry(0)
    body = empty.to_csv(index=False).encode() if sent == "text/csv" else arrow_body(empty)
    r = client.post(
        "/predict/table", content=body, headers={"Content-Type": sent, "Accept": accept}
    )
    assert r.status_code == 200, r.text
    columns = ["probability", "prediction", "probability_low", "probability_high"]
    if accept == "application/json":
        assert r.json() == {"predictions": []}
    elif accept == "text/csv":
        assert r.text.splitlines() == [",".join(f'"{c}"' for c in columns)]
    else:
        table = pa.ipc.open_stream(r.content).read_all()
        assert table.num_rows == 0 and table.column_names == columns


def test_a_header_without_its_line_end_is_a_table_of_no_rows(client: TestClient) -> None:
    header = registry(0).to_csv(index=False).rstrip("\n").encode()
    assert not header.endswith(b"\n")
    r = client.post(
        "/predict/table",
        content=header,
        headers={"Content-Type": "text/csv", "Accept": "application/json"},
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": []}
    one = registry(1).to_csv(index=False).rstrip("\n").encode()  # and a last row without one
    r = client.post("/predict/table", content=one, headers={"Content-Type": "text/csv"})
    assert r.status_code == 200 and len(r.text.splitlines()) == 2


def test_bad_cells_get_the_batch_422_shape(client: TestClient) -> None:
    df = registry(10, seed=2).astype({"serum_cholesterol": object})
    df.loc[2, "age"] = 650
    df.loc[7, "serum_cholesterol"] = "high"
    df.loc[8, "sex"] = np.nan
    r = client.post(
        "/predict/table",
        content=df.to_csv(index=False).encode(),
        headers={"Content-Type": "text/csv"},
    )
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert [d["loc"] for d in detail] == [
        ["body", "patients", 2, "age"],
        ["body", "patients", 7, "serum_cholesterol"],
        ["body", "patients", 8, "sex"],
    ]
    assert detail[1]["msg"] == TEXT_WHERE_MAY_BE_MISSING
    assert "650" not in r.text and "high" not in r.text


def test_an_ignored_column_that_turns_to_text_after_the_first_block_is_ignored(
    client: TestClient,
) -> None:
    """heart-score once crashed on a key that read as integers in the first block and held
    text later (pyarrow streams a file, fixing each type from its first block). The upload
    has no key: it reads its body whole, and that read settles an ignored column's type
    over every block, in both reads of the features (as numbers, then as text to name a
    text cell). A guard: a streaming read here would bring the crash back."""
    df = registry(17_000, seed=6).astype({"patient_id": str, "thal": object})
    df.loc[16_500, "patient_id"] = "A17"
    body = df.to_csv(index=False).encode()
    assert 1 << 20 < len(body) < 2 << 20  # beyond one block, within HEART_MAX_BODY_BYTES
    r = client.post("/predict/table", content=body, headers={"Content-Type": "text/csv"})
    assert r.status_code == 200, r.text
    assert len(pd.read_csv(io.BytesIO(r.content))) == 17_000
    df.loc[16_600, "thal"] = "high"
    body = df.to_csv(index=False).encode()
    r = client.post("/predict/table", content=body, headers={"Content-Type": "text/csv"})
    assert r.status_code == 422, r.text
    assert [d["loc"] for d in r.json()["detail"]] == [["body", "patients", 16_600, "thal"]]


def test_missing_column_and_garbage_body_are_422(client: TestClient) -> None:
    r = client.post(
        "/predict/table",
        content=registry(3).drop(columns=["thal"]).to_csv(index=False).encode(),
        headers={"Content-Type": "text/csv"},
    )
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "columns", "thal"]
    r = client.post(
        "/predict/table", content=b"\x00\x01 not arrow", headers={"Content-Type": ARROW}
    )
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body"]
    assert r.json()["detail"][0]["msg"].startswith("the body is not a valid Arrow IPC stream: ")


def with_second(df: pd.DataFrame, name: str, fmt: str) -> bytes:
    """``df`` with a second column called ``name`` at the end (pandas cannot hold one)."""
    if fmt == "csv":
        header, *rows = df.to_csv(index=False).splitlines()
        return "\n".join([f"{header},{name}", *(f"{row},1" for row in rows)]).encode()
    table = pa.Table.from_pandas(df, preserve_index=False)
    return arrow_body_of(table.append_column(name, pa.array([1.0] * len(df))))


@pytest.mark.parametrize("fmt", ["csv", "arrow"])
def test_a_duplicated_feature_column_is_422_naming_it(client: TestClient, fmt: str) -> None:
    media = {"csv": "text/csv", "arrow": ARROW}[fmt]
    r = client.post(
        "/predict/table",
        content=with_second(registry(3), "age", fmt),
        headers={"Content-Type": media},
    )
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == [
        {
            "type": "duplicate_column",
            "loc": ["body", "columns", "age"],
            "msg": "Duplicate column 'age': send each column once",
        }
    ]
    # A repeated column the service ignores changes nothing: it is not scored.
    r = client.post(
        "/predict/table",
        content=with_second(registry(3).assign(note=1.0), "note", fmt),
        headers={"Content-Type": media},
    )
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    "body",
    [b"\xff" * 100, arrow_body(registry(50))[:700], arrow_body(registry(50))[:-100]],
    ids=["garbage", "truncated-early", "truncated-late"],
)
def test_a_malformed_arrow_stream_is_422(client: TestClient, body: bytes) -> None:
    r = client.post("/predict/table", content=body, headers={"Content-Type": ARROW})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail[0]["loc"] == ["body"]
    assert detail[0]["msg"].startswith("the body is not a valid Arrow IPC stream")


def test_wrong_media_types(client: TestClient) -> None:
    r = client.post("/predict/table", json={"patients": []})
    assert r.status_code == 415 and "text/csv" in r.json()["detail"]
    r = client.post(
        "/predict/table", content=b"a", headers={"Content-Type": "text/csv", "Accept": "image/png"}
    )
    assert r.status_code == 406
    r = client.post("/predict/batch", content=b"age\n1", headers={"Content-Type": "text/csv"})
    assert r.status_code == 415  # the JSON endpoint still refuses CSV


@pytest.mark.parametrize("q", ["nan", "inf", "-inf", "-1", "2", "1.5", "0.1234", "1_0", "abc", ""])
def test_a_range_with_an_invalid_q_is_ignored(client: TestClient, q: str) -> None:
    """RFC 9110 12.4.2: q is 0 to 1 with at most 3 decimals. Python's float read ``nan`` and
    ``inf`` (ranked first), ``2`` (above 1) and ``-1`` (kept, last): each made its range win
    or count; now such a range is ignored, and alone it is a 406 that names it."""
    body = registry(2, seed=3).to_csv(index=False).encode()
    headers = {"Content-Type": "text/csv", "Accept": f"text/csv;q={q}, application/json;q=0.5"}
    r = client.post("/predict/table", content=body, headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    headers["Accept"] = f"text/csv;q={q}"
    r = client.post("/predict/table", content=body, headers=headers)
    assert r.status_code == 406, r.text
    assert f"'text/csv;q={q}' was ignored: its q must be a number from 0 to 1" in r.json()["detail"]


def test_valid_q_values_rank_the_answer(client: TestClient) -> None:
    """The qvalues RFC 9110 allows, however spelled: ``Q=`` is ``q=``, ``1.000`` is 1."""
    body = registry(2, seed=3).to_csv(index=False).encode()
    for accept, answer in [
        ("application/json;Q=0.1, text/csv;q=0.5", "text/csv; charset=utf-8"),
        ("text/csv;q=0.999, application/json;q=1.000", "application/json"),
        ("text/csv;q=0, application/json;q=1.", "application/json"),
        ("text/csv ; q=0.5 , application/json;q=0.25", "text/csv; charset=utf-8"),
    ]:
        headers = {"Content-Type": "text/csv", "Accept": accept}
        r = client.post("/predict/table", content=body, headers=headers)
        assert r.status_code == 200, (accept, r.text)
        assert r.headers["content-type"] == answer, accept


CSV_OUT = "text/csv; charset=utf-8"


@pytest.mark.parametrize(
    ("accept", "answer"),
    [
        # A wildcard answers the best format that Accept does not refuse (RFC 9110 12.5.1:
        # the most specific range decides): the request's own, then JSON, then the other.
        ("text/csv;q=0, */*", "application/json"),
        ("text/csv;q=0, text/csv;q=1, */*", "application/json"),  # the first equal range
        ("*/*, text/csv;q=0", "application/json"),  # more specific wins wherever it is listed
        ("text/csv;q=0, application/json;q=0, */*", ARROW),
        ("text/csv;q=0, application/vnd.apache.arrow.stream;q=0, */*", "application/json"),
        ("text/csv;q=0, application/*", "application/json"),
        ("application/json;q=0, application/*", ARROW),
        ("application/*;q=0, */*", CSV_OUT),
        ("*/*;q=0, application/json", "application/json"),
        ("text/csv;q=0.1, */*", "application/json"),  # least wanted is not refused, only last
        ("text/csv;q=0.1, application/json;q=0", CSV_OUT),
        ("text/*, */*;q=0.5", CSV_OUT),
        ("*/*", CSV_OUT),
    ],
)
def test_a_wildcard_answers_no_format_refused_with_q_0(
    client: TestClient, accept: str, answer: str
) -> None:
    """``text/csv;q=0, */*`` on a CSV upload was answered in CSV: the wildcard answered the
    request's own format, which the client had just called not acceptable."""
    body = registry(2, seed=3).to_csv(index=False).encode()
    headers = {"Content-Type": "text/csv", "Accept": accept}
    r = client.post("/predict/table", content=body, headers=headers)
    assert r.status_code == 200, (accept, r.text)
    assert r.headers["content-type"] == answer, accept


@pytest.mark.parametrize(
    ("accept", "refused"),
    [
        ("text/csv;q=0, text/*", "Accept refuses text/csv (q=0) and names none of the others"),
        (
            "*/*;q=0",
            "Accept refuses (q=0) every format this endpoint writes: text/csv, "
            f"{ARROW} or application/json",
        ),
        (
            "text/*;q=0, application/*;q=0, */*",
            "Accept refuses (q=0) every format this endpoint writes",
        ),
        (
            "application/*;q=0, text/csv;q=0",
            "Accept refuses (q=0) every format this endpoint writes",
        ),
        ("application/json;q=0", "Accept refuses application/json (q=0)"),
    ],
)
def test_accept_that_refuses_every_format_it_names_is_a_406_that_says_so(
    client: TestClient, accept: str, refused: str
) -> None:
    body = registry(2, seed=3).to_csv(index=False).encode()
    headers = {"Content-Type": "text/csv", "Accept": accept}
    r = client.post("/predict/table", content=body, headers=headers)
    assert r.status_code == 406, (accept, r.text)
    assert refused in r.json()["detail"], r.json()


@pytest.mark.parametrize(
    ("accept", "default", "answer"),
    [
        ("*/*", ARROW, "arrow"),
        (f"{ARROW};q=0, */*", ARROW, "json"),
        (f"{ARROW};q=0, application/json;q=0, */*", ARROW, "csv"),
        ("application/*", ARROW, "arrow"),
        (f"{ARROW};q=0, application/*", ARROW, "json"),
        ("application/*", "text/csv", "json"),
        ("application/json;q=0, application/*", "text/csv", "arrow"),
        ("text/*", ARROW, "csv"),
        ("text/csv;q=0.5, application/json;q=0.5", "text/csv", "csv"),  # a tie: first listed
        ("image/png, */*;q=0.2", "text/csv", "csv"),
    ],
)
def test_negotiation_per_request_format(accept: str, default: str, answer: str) -> None:
    """The rule for both request formats, without a request: Arrow has its own preferences."""
    assert columnar._negotiate(accept, default=default) == answer


def test_without_the_bulk_extra_415_names_it(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(columnar, "HAVE_BULK", False)
    r = client.post("/predict/table", content=b"age\n54", headers={"Content-Type": "text/csv"})
    assert r.status_code == 415 and "heart-risk[bulk]" in r.json()["detail"]
    # pyarrow is looked for once, at start-up: installing it alone changes nothing.
    assert "then restart the service" in r.json()["detail"]


def test_body_limit_applies(artifact_path: Path) -> None:
    with TestClient(create_app(Settings(model_path=artifact_path, max_body_bytes=4096))) as small:
        body = registry(500).to_csv(index=False).encode()
        r = small.post("/predict/table", content=body, headers={"Content-Type": "text/csv"})
    assert r.status_code == 413 and "HEART_MAX_BODY_BYTES" in r.json()["detail"]


def test_the_service_does_not_import_pyarrow_until_a_table_arrives() -> None:
    import subprocess
    import sys

    code = "import sys, app.main; app.main.create_app; print('pyarrow' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "False"


# ----- hostile bodies: 4xx naming the column, and no cell value in the answer or the log ---

SECRET = 987_654_321_987  # a cell value that must never be echoed or logged


def everything_logged(capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> str:
    """What reached stderr and every log record, with its extra fields and traceback."""
    records = [
        f"{r.getMessage()} {r.__dict__} {logging.Formatter().formatException(r.exc_info)}"
        if r.exc_info
        else f"{r.getMessage()} {r.__dict__}"
        for r in caplog.records
    ]
    return "".join(capfd.readouterr()) + "\n".join(records)


def _sent(client: TestClient, body: bytes, media: str = ARROW) -> Any:
    return client.post("/predict/table", content=body, headers={"Content-Type": media})


def _with_column(name: str, values: pa.Array) -> bytes:
    """Three valid patients whose column ``name`` is replaced by ``values``."""
    table = pa.Table.from_pandas(registry(3, seed=3), preserve_index=False)
    index = table.schema.get_field_index(name)
    return arrow_body_of(table.set_column(index, name, values))


@pytest.mark.parametrize(
    "values",
    [
        pa.array([200, 9_007_199_254_740_993, 210], pa.int64()),  # above 2**53
        pa.array([200, 2**64 - 1, 210], pa.uint64()),
        pa.array([200, -(2**63), 210], pa.int64()),
    ],
    ids=["int64-above-2^53", "uint64-max", "int64-min"],
)
def test_integers_beyond_doubles_are_refused_by_row_and_column(
    client: TestClient,
    values: pa.Array,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    r = _sent(client, _with_column("serum_cholesterol", values))
    assert r.status_code == 422, r.text
    assert [d["loc"] for d in r.json()["detail"]] == [["body", "patients", 1, "serum_cholesterol"]]
    shown = str(values[1].as_py())
    logged = everything_logged(capfd, caplog)
    assert shown not in r.text and shown not in logged


HOSTILE_COLUMNS: dict[str, pa.Array] = {
    "int64": pa.array([SECRET] * 3, pa.int64()),
    "uint64": pa.array([SECRET] * 3, pa.uint64()),
    "float16": pa.array([1.0, None, 2.0], pa.float16()),
    "float32": pa.array([float(SECRET)] * 3, pa.float32()),
    "decimal": pa.array([SECRET] * 3, pa.decimal128(20, 0)),
    "string": pa.array([str(SECRET)] * 3),
    "large_string": pa.array([f"x{SECRET}"] * 3, pa.large_string()),
    "string_view": pa.array([f"x{SECRET}"] * 3, pa.string_view()),
    "binary": pa.array([str(SECRET).encode()] * 3, pa.binary()),
    "dictionary": pa.array([f"x{SECRET}"] * 3).dictionary_encode(),
    "timestamp": pa.array([SECRET] * 3, pa.timestamp("s")),
    "duration": pa.array([SECRET] * 3, pa.duration("s")),
    "list": pa.array([[SECRET]] * 3, pa.list_(pa.int64())),
    "struct": pa.array([{"v": SECRET}] * 3, pa.struct([("v", pa.int64())])),
    "null": pa.nulls(3),
}


@pytest.mark.parametrize("values", HOSTILE_COLUMNS.values(), ids=HOSTILE_COLUMNS.keys())
def test_no_column_type_is_a_500_or_leaks_its_cells(
    client: TestClient,
    values: pa.Array,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every Arrow type in a feature column is answered with 200 or a 422 naming the column
    or its cells, and no cell value reaches the answer or the log (no traceback either)."""
    r = _sent(client, _with_column("serum_cholesterol", values))
    assert r.status_code in (200, 422), r.text
    if r.status_code == 422:
        for problem in r.json()["detail"]:
            assert problem["loc"][-1] == "serum_cholesterol", problem
    logged = everything_logged(capfd, caplog)
    assert str(SECRET) not in r.text and str(SECRET) not in logged
    assert "Traceback" not in logged


def _encoded(df: pd.DataFrame, encode: str) -> pa.Table:
    """``df`` as Arrow with three feature columns dictionary-encoded, or as decimals."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    for name in ("age", "serum_cholesterol", "thal"):
        column = table.column(name)
        if encode == "dictionary":
            column = column.dictionary_encode()
        else:
            column = column.cast(pa.decimal128(12, 2))
        table = table.set_column(table.schema.get_field_index(name), name, column)
    return table


@pytest.mark.parametrize("encode", ["dictionary", "decimal"])
def test_dictionary_and_decimal_columns_are_numbers(client: TestClient, encode: str) -> None:
    """pandas' category and a database's NUMERIC are numbers written another way: scored
    as the plain column is, and range-checked like it; no longer 'is not a number' for every
    cell."""
    df = registry(60, seed=9, missing=0.1)
    plain = _sent(client, arrow_body(df))
    r = _sent(client, arrow_body_of(_encoded(df, encode)))
    assert r.status_code == 200, r.text
    got, want = read_arrow(r.content), read_arrow(plain.content)
    assert got["prediction"].tolist() == want["prediction"].tolist()
    for name in ("probability", "probability_low", "probability_high"):
        assert_same_probabilities(got[name], want[name])
    df.loc[4, "serum_cholesterol"] = 7_000
    r = _sent(client, arrow_body_of(_encoded(df, encode)))
    assert r.status_code == 422, r.text
    assert [(d["loc"], d["msg"]) for d in r.json()["detail"]] == [
        (["body", "patients", 4, "serum_cholesterol"], "must be between 80 and 700 mg/dl")
    ]


NO_NUMBERS: dict[str, pa.Array] = {
    "timestamp": pa.array([1, 2, 3], pa.timestamp("s")),
    "date": pa.array([1, 2, 3], pa.date32()),
    "time": pa.array([1, 2, 3], pa.time32("s")),
    "duration": pa.array([1, 2, 3], pa.duration("s")),
    "binary": pa.array([b"245"] * 3, pa.binary()),
    "list": pa.array([[245]] * 3, pa.list_(pa.int64())),
    "struct": pa.array([{"v": 245}] * 3, pa.struct([("v", pa.int64())])),
    "map": pa.array([[("v", 245)]] * 3, pa.map_(pa.string(), pa.int64())),
    "dictionary-of-timestamps": pa.array([1, 2, 3], pa.timestamp("s")).dictionary_encode(),
}


@pytest.mark.parametrize("values", NO_NUMBERS.values(), ids=NO_NUMBERS.keys())
def test_a_column_of_a_type_without_numbers_is_refused_once(
    client: TestClient, values: pa.Array
) -> None:
    """Not a 'not a number' for every row: one error, naming the column and its type."""
    r = _sent(client, _with_column("serum_cholesterol", values))
    assert r.status_code == 422, r.text
    [problem] = r.json()["detail"]
    assert problem["loc"] == ["body", "columns", "serum_cholesterol"]
    assert problem["msg"].startswith(
        f"column 'serum_cholesterol' has the type {values.type}, which holds no numbers"
    )


def test_a_string_view_column_is_read_as_text(client: TestClient) -> None:
    table = pa.Table.from_pandas(registry(3, seed=3), preserve_index=False)
    text = pa.array(["245", " 180 ", "high"], pa.string_view())
    index = table.schema.get_field_index("serum_cholesterol")
    r = _sent(client, arrow_body_of(table.set_column(index, "serum_cholesterol", text)))
    assert r.status_code == 422, r.text
    assert [(d["loc"], d["msg"]) for d in r.json()["detail"]] == [
        (["body", "patients", 2, "serum_cholesterol"], TEXT_WHERE_MAY_BE_MISSING)
    ]


def test_a_csv_number_beyond_a_double_is_out_of_range_not_text(client: TestClient) -> None:
    """pyarrow reads a 400-digit integer as inf, as it reads the text 'inf': the first is a
    number out of range, the second text, and only the cell's text tells them apart."""
    header, *rows = registry(4, seed=4).to_csv(index=False).splitlines()
    column = header.split(",").index("serum_cholesterol")
    digits = "9" * 395 + "98765"

    def with_cell(row: str, cell: str) -> str:
        cells = row.split(",")
        cells[column] = cell
        return ",".join(cells)

    cells = [digits, f"-{digits}", "1e400", "inf"]
    body = "\n".join([header, *map(with_cell, rows, cells)]).encode()
    r = _sent(client, body, "text/csv")
    assert r.status_code == 422, r.text
    assert [(d["loc"], d["msg"]) for d in r.json()["detail"]] == [
        (["body", "patients", 0, "serum_cholesterol"], "must be between 80 and 700 mg/dl"),
        (["body", "patients", 1, "serum_cholesterol"], "must be between 80 and 700 mg/dl"),
        (["body", "patients", 2, "serum_cholesterol"], "must be between 80 and 700 mg/dl"),
        (["body", "patients", 3, "serum_cholesterol"], TEXT_WHERE_MAY_BE_MISSING),
    ]
    assert "98765" not in r.text


@pytest.mark.parametrize(("row", "cells"), [(1, 15), (2_500, 13)])
def test_a_csv_row_of_the_wrong_width_is_named_not_echoed(
    client: TestClient, row: int, cells: int
) -> None:
    """pyarrow's message quotes the whole row and, parsing on several threads, has no row
    number: the answer names the row as the cell errors do (0-based, header not counted)."""
    header, *rows = registry(3_000, seed=8).to_csv(index=False).splitlines()
    rows[row] = f"{rows[row]},{SECRET}" if cells == 15 else rows[row].rsplit(",", 1)[0]
    r = _sent(client, "\n".join([header, *rows]).encode(), "text/csv")
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == [
        {
            "type": "value_error",
            "loc": ["body", "patients", row],
            "msg": f"has {cells} cells where the header has 14",
            "input": None,
        }
    ]
    assert str(SECRET) not in r.text


def test_an_unforeseen_error_is_a_500_logged_without_its_message(
    client: TestClient,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(self: object, x: object) -> tuple[bytes, int]:
        raise ValueError(f"could not score {SECRET}")

    monkeypatch.setattr(PredictionService, "predict_rows", broken)
    r = client.post(
        "/predict/table",
        content=registry(3).to_csv(index=False).encode(),
        headers={"Content-Type": "text/csv", "Accept": "application/json"},
    )
    assert r.status_code == 500 and r.json() == {"detail": "Internal server error."}
    logged = everything_logged(capfd, caplog)
    [failure] = [r for r in caplog.records if r.getMessage() == "table scoring failed"]
    assert failure.__dict__["error"] == "ValueError"
    assert failure.__dict__["at"].startswith("test_api_table.py:")
    assert str(SECRET) not in logged and "Traceback" not in logged


# ----- size: rows and uncompressed bytes are limited before decoding; the loop stays free ---


def compressed_stream(df: pd.DataFrame, *, chunk: int = 1_000, codec: str = "zstd") -> bytes:
    table = pa.Table.from_pandas(df, preserve_index=False)
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression=codec)
    with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table, max_chunksize=chunk)
    return bytes(sink.getvalue())


@pytest.fixture(scope="module")
def limited(artifact_path: Path) -> Iterator[TestClient]:
    """At most 100 rows, and (Arrow) 64 KiB uncompressed."""
    settings = Settings(model_path=artifact_path, max_table_rows=100, max_body_bytes=65_536)
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.mark.parametrize("fmt", ["csv", "arrow", "arrow-zstd", "arrow-lz4"])
def test_rows_beyond_the_limit_are_413_and_at_it_200(limited: TestClient, fmt: str) -> None:
    def body(n: int) -> bytes:
        df = registry(n, seed=6)
        if fmt == "csv":
            return df.to_csv(index=False).encode()
        if fmt == "arrow":
            return arrow_body(df)
        return compressed_stream(df, chunk=30, codec=fmt.removeprefix("arrow-"))

    media = "text/csv" if fmt == "csv" else ARROW
    r = limited.post("/predict/table", content=body(100), headers={"Content-Type": media})
    assert r.status_code == 200, r.text
    r = limited.post("/predict/table", content=body(101), headers={"Content-Type": media})
    assert r.status_code == 413
    assert r.json()["detail"].startswith("Table too large: more than 100 rows")
    assert "HEART_MAX_TABLE_ROWS" in r.json()["detail"]


def test_a_compressed_stream_is_refused_before_it_is_decoded(
    artifact_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 2 MB zstd body held 3.9M rows: the rows are counted from the batches' metadata."""
    n = 1_000_000
    example = registry(1, seed=1)
    table = pa.table({name: pa.array(np.full(n, example[name][0])) for name in FEATURE_NAMES})
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression="zstd")
    with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table, max_chunksize=n)  # one batch of a million rows
    body = bytes(sink.getvalue())
    assert len(body) < 2 * 1024 * 1024  # within the default body limit as sent

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("the stream was decoded")

    monkeypatch.setattr(pa.ipc, "open_stream", no_decoding)
    with TestClient(create_app(Settings(model_path=artifact_path, max_table_rows=100))) as c:
        r = c.post("/predict/table", content=body, headers={"Content-Type": ARROW})
    assert r.status_code == 413 and "more than 100 rows" in r.json()["detail"]


def test_a_stream_that_inflates_beyond_the_body_limit_is_413(limited: TestClient) -> None:
    """Rows within the limit can still hold megabytes once uncompressed (long strings)."""
    df = registry(50, seed=2).assign(note="x" * 10_000)  # 500 kB of text, zstd'd to ~1 kB
    body = compressed_stream(df)
    assert len(body) < 65_536
    r = limited.post("/predict/table", content=body, headers={"Content-Type": ARROW})
    assert r.status_code == 413
    assert "more than 65,536 bytes uncompressed (HEART_MAX_BODY_BYTES" in r.json()["detail"]


def test_scoring_a_table_leaves_the_event_loop_free(
    artifact_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a table is being scored, /health still answers at once."""
    entered, release = threading.Event(), threading.Event()
    real = columnar._score_table

    def slow(*args: Any) -> Any:
        entered.set()
        release.wait(10)  # on the event loop, /health would wait for this too
        return real(*args)

    monkeypatch.setattr(columnar, "_score_table", slow)
    answers: dict[str, Any] = {}
    with TestClient(create_app(Settings(model_path=artifact_path))) as c:
        upload = threading.Thread(
            target=lambda: answers.update(
                table=c.post(
                    "/predict/table",
                    content=registry(10).to_csv(index=False).encode(),
                    headers={"Content-Type": "text/csv"},
                )
            )
        )
        upload.start()
        try:
            assert entered.wait(10)
            started = time.perf_counter()
            health = c.get("/health")
            waited = time.perf_counter() - started
        finally:
            release.set()
            upload.join(30)
    assert health.status_code == 200 and waited < 5, waited
    assert answers["table"].status_code == 200


# ----- what "not measured" is: the documented markers, the same rule as the JSON API ------


def test_csv_not_measured_is_empty_na_or_null_and_nan_text_is_refused(
    client: TestClient, artifact_path: Path
) -> None:
    """docs/scoring.md: a CSV cell may be empty, NA or null; 'NaN' is no measurement (the
    JSON API refuses NaN), nor 'N/A', 'NULL' or 'inf'."""
    df = registry(3, seed=12)
    header, *rows = df.to_csv(index=False).splitlines()
    thal = header.split(",").index("thal")

    def with_thal(row: str, cell: str) -> str:
        cells = row.split(",")
        cells[thal] = cell
        return ",".join(cells)

    missing = [with_thal(row, cell) for row, cell in zip(rows, ["", "NA", "null"], strict=True)]
    r = _sent(client, "\n".join([header, *missing]).encode(), "text/csv")
    assert r.status_code == 200, r.text
    expected = load_artifact(artifact_path).probability(
        df[list(FEATURE_NAMES)].assign(thal=np.nan).to_numpy()
    )
    assert_same_probabilities(pd.read_csv(io.BytesIO(r.content))["probability"], expected)

    # "?" is the UCI files' marker: refused like the others, each saying what to write.
    refused = ["NaN", "nan", "N/A", "NULL", "inf", "?", "-"]
    body = "\n".join([header, *(with_thal(rows[0], cell) for cell in refused)]).encode()
    r = _sent(client, body, "text/csv")
    assert r.status_code == 422
    assert [(d["loc"], d["msg"]) for d in r.json()["detail"]] == [
        (["body", "patients", i, "thal"], TEXT_WHERE_MAY_BE_MISSING) for i in range(len(refused))
    ]


def test_csv_question_mark_says_empty_where_it_may_be_missing_and_required_where_not(
    client: TestClient,
) -> None:
    """A "?" cell was only "is not a number": now the reason says how a value not measured
    is written (an empty cell, NA or null: what the reader accepts), and for age or sex,
    which may not be missing, that they are required. The loc names row and column."""
    header, *rows = registry(3, seed=14).to_csv(index=False).splitlines()
    rows[0] = _with_cell(header, rows[0], "thal", "?")
    rows[1] = _with_cell(header, rows[1], "age", "?")
    rows[2] = _with_cell(header, rows[2], "sex", "?")
    r = _sent(client, "\n".join([header, *rows]).encode(), "text/csv")
    assert r.status_code == 422, r.text
    assert [(d["loc"], d["msg"]) for d in r.json()["detail"]] == [
        (["body", "patients", 0, "thal"], TEXT_WHERE_MAY_BE_MISSING),
        (["body", "patients", 1, "age"], REQUIRED_NOT_A_NUMBER),
        (["body", "patients", 2, "sex"], REQUIRED_NOT_A_NUMBER),
    ]


def test_arrow_nan_is_null_but_booleans_are_not_numbers(client: TestClient) -> None:
    df = registry(3, seed=13)
    table = pa.Table.from_pandas(df, preserve_index=False)
    thal = table.schema.get_field_index("thal")
    # A NaN float is how some writers store null (pandas' from_pandas turns it into null).
    nan = pa.array([np.nan, 3.0, np.nan], pa.float64(), from_pandas=False)
    assert nan.null_count == 0
    r = _sent(client, arrow_body_of(table.set_column(thal, "thal", nan)))
    assert r.status_code == 200, r.text
    sex = table.schema.get_field_index("sex")
    booleans = table.set_column(sex, "sex", pa.array([True, False, None]))
    r = _sent(client, arrow_body_of(booleans))
    assert r.status_code == 422
    assert [(d["loc"], d["msg"]) for d in r.json()["detail"]] == [
        (["body", "patients", 0, "sex"], REQUIRED_NOT_A_NUMBER),
        (["body", "patients", 1, "sex"], REQUIRED_NOT_A_NUMBER),
        (
            ["body", "patients", 2, "sex"],
            "must be a finite number: it is required and may not be missing",
        ),
    ]


# ----- text that is not UTF-8: a cell that is no number, a column ignored, a row named -----


def _with_cell(header: str, row: str, column: str, cell: str) -> str:
    cells = row.split(",")
    cells[header.split(",").index(column)] = cell
    return ",".join(cells)


def test_a_csv_feature_cell_that_is_not_utf8_is_not_a_number(
    client: TestClient,
    unraisable: list[str],
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A Latin-1 export with "24é" (the byte 0xE9, which no UTF-8 text starts with) in a
    feature: pyarrow refused the whole column when it was read again as text, and the
    upload answered 500. The cell is one more cell that is not a number."""
    header, *rows = registry(4, seed=9).to_csv(index=False).splitlines()
    rows[2] = _with_cell(header, rows[2], "serum_cholesterol", "24\xe9")
    rows[3] = _with_cell(header, rows[3], "thal", "high")  # and a cell of plain text
    r = _sent(client, "\n".join([header, *rows]).encode("latin-1"), "text/csv")
    assert r.status_code == 422, r.text
    assert [(d["loc"], d["msg"]) for d in r.json()["detail"]] == [
        (["body", "patients", 2, "serum_cholesterol"], TEXT_WHERE_MAY_BE_MISSING),
        (["body", "patients", 3, "thal"], TEXT_WHERE_MAY_BE_MISSING),
    ]
    logged = everything_logged(capfd, caplog)
    assert unraisable == [] and "Traceback" not in logged and "\ufffd" not in r.text + logged


@pytest.mark.parametrize("encode", ["string", "large_string", "dictionary"])
def test_an_arrow_text_feature_cell_that_is_not_utf8_is_not_a_number(
    client: TestClient, encode: str
) -> None:
    """pyarrow checks an Arrow text column's UTF-8 lazily, so a stream carries such a cell
    unchecked; its text functions then refused the whole column (a 422 naming it). The
    cell is refused alone, as in CSV."""
    values = text_not_utf8([b"245", b"24\xe9", b"300"], large=encode == "large_string")
    if encode == "dictionary":
        values = pa.DictionaryArray.from_arrays(pa.array([2, 1, 0], pa.int8()), values)
    r = _sent(client, _with_column("serum_cholesterol", values))
    assert r.status_code == 422, r.text
    assert [(d["loc"], d["msg"]) for d in r.json()["detail"]] == [
        (["body", "patients", 1, "serum_cholesterol"], TEXT_WHERE_MAY_BE_MISSING)
    ]


@pytest.mark.parametrize("fmt", ["csv", "arrow"])
@pytest.mark.parametrize("part", ["name", "cells"])
def test_an_extra_column_is_ignored_whatever_its_name_or_cells_hold(
    client: TestClient, fmt: str, part: str
) -> None:
    """A Windows-1252 header ("Bemerkung ä"), or an Arrow field named by such bytes:
    pyarrow decodes all names at once, and one it could not decode answered 500. A
    column that is not a feature is ignored, as any other extra column is, without
    decoding its name; and its cells (a Latin-1 "Müller") were ignored and still are."""
    df = registry(3, seed=10)
    name, cell = ("Bemerkung \xe4", "x") if part == "name" else ("name", "M\xfcller")
    if fmt == "csv":
        header, *rows = df.to_csv(index=False).splitlines()
        lines = [f"{header},{name}", *(f"{row},{cell}" for row in rows)]
        body, media = "\n".join(lines).encode("cp1252"), "text/csv"
    else:
        table = pa.Table.from_pandas(df, preserve_index=False)
        field = pa.field(name.encode("cp1252"), pa.string())  # pyarrow takes a name as bytes
        values = text_not_utf8([cell.encode("cp1252")] * 3)
        body, media = arrow_body_of(table.append_column(field, values)), ARROW
    r = client.post(
        "/predict/table", content=body, headers={"Content-Type": media, "Accept": "text/csv"}
    )
    assert r.status_code == 200, r.text
    assert len(pd.read_csv(io.BytesIO(r.content))) == 3


@pytest.mark.parametrize("row", [1, 2_500])
def test_a_row_of_the_wrong_width_that_is_not_utf8_is_named_as_any_other(
    client: TestClient,
    row: int,
    unraisable: list[str],
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """pyarrow decodes a bad row's text before it calls the invalid-row handler; for a
    Latin-1 row that failed inside pyarrow, which printed "Exception ignored" and a
    traceback (with a byte position that tells cell lengths) on the server's stderr,
    and the answer lost the row's number."""
    header, *rows = registry(3_000, seed=8).to_csv(index=False).splitlines()
    rows = [f"{line},Anna" for line in rows]
    rows[row] = f"{rows[row].removesuffix(',Anna')},M\xfcller,{SECRET}"
    r = _sent(client, "\n".join([f"{header},name", *rows]).encode("latin-1"), "text/csv")
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == [
        {
            "type": "value_error",
            "loc": ["body", "patients", row],
            "msg": "has 16 cells where the header has 15",
            "input": None,
        }
    ]
    logged = everything_logged(capfd, caplog)
    assert unraisable == [] and "Traceback" not in logged
    assert str(SECRET) not in r.text + logged


def test_a_gzip_body_sent_as_csv_is_refused_without_noise(
    client: TestClient,
    unraisable: list[str],
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Compressed bytes read as CSV are rows of the wrong width that are not UTF-8: a 422,
    and nothing on stderr but JSON (the probe saw pyarrow's "Exception ignored" there)."""
    body = gzip.compress(registry(50, seed=1).to_csv(index=False).encode(), mtime=0)
    r = _sent(client, body, "text/csv")
    assert r.status_code == 422, r.text
    for problem in r.json()["detail"]:
        assert problem["loc"][0] == "body", problem
        if problem["loc"][:2] == ["body", "patients"]:  # the row counted as a cell's row
            assert re.fullmatch(r"has \d+ cells where the header has \d+", problem["msg"])
    logged = everything_logged(capfd, caplog)
    assert unraisable == [] and "Traceback" not in logged


def test_a_wide_row_that_quotes_pyarrows_words_is_still_a_wide_row(client: TestClient) -> None:
    """pyarrow's message quotes the row (its first 100 bytes), and the error was told by
    the words in it: a row with an extra cell reading "CSV conversion error" was taken
    for a cell of text, read again, and answered 500. Only the message's start counts."""
    header, *rows = registry(3, seed=11).to_csv(index=False).splitlines()
    rows[1] = f"In CSV column #4: CSV conversion error to double,{rows[1]}"
    r = _sent(client, "\n".join([header, *rows]).encode(), "text/csv")
    assert r.status_code == 422, r.text
    assert [(d["loc"], d["msg"]) for d in r.json()["detail"]] == [
        (["body", "patients", 1], "has 15 cells where the header has 14")
    ]


def _backwards_offsets() -> pa.Array:
    offsets = np.array([0, 5, 2, 9], np.int32)  # the second cell ends before it starts
    buffers = [None, pa.py_buffer(offsets.tobytes()), pa.py_buffer(b"245300123")]
    return pa.Array.from_buffers(pa.string(), 3, buffers)


@pytest.mark.parametrize(
    "values",
    [
        _backwards_offsets(),
        pa.DictionaryArray.from_arrays(
            pa.array([0, 7, 1], pa.int8()), pa.array(["245", "300", "250"]), safe=False
        ),
    ],
    ids=["offsets-backwards", "dictionary-index-beyond"],
)
def test_a_text_column_whose_layout_is_broken_is_refused_as_a_column(
    client: TestClient, values: pa.Array
) -> None:
    """The Arrow reader checks a text column's buffer sizes, not each cell's offsets, nor
    that every index is inside its dictionary: text is checked whole before a cell is
    read (offsets running backwards were read as whatever bytes they pointed at), and a
    text dictionary is checked as bytes, so that the UTF-8 of its entries is judged
    entry by entry, and its indices still are."""
    r = _sent(client, _with_column("serum_cholesterol", values))
    assert r.status_code == 422, r.text
    assert [d["loc"] for d in r.json()["detail"]] == [["body", "columns", "serum_cholesterol"]]


def _parquet_of(df: pd.DataFrame) -> bytes:
    sink = io.BytesIO()
    df.to_parquet(sink, index=False)
    return sink.getvalue()


@pytest.mark.parametrize(
    ("body", "msg"),
    [
        (
            registry(5, seed=2).to_csv(index=False, sep=";", decimal=",").encode(),
            "the body's header has no ',' between the column names but has ';': send "
            "comma-separated CSV, with a decimal point",
        ),
        (
            _parquet_of(registry(5, seed=2)),
            "the body is a Parquet file, not CSV text: send the table as CSV (UTF-8, "
            "uncompressed), or as an Arrow IPC stream with Content-Type "
            "application/vnd.apache.arrow.stream",
        ),
        (arrow_body(registry(5, seed=2)), "the body is an Arrow IPC stream, not CSV text: "),
        (  # the service reads gzip when the header says so: the message names the header
            gzip.compress(registry(5).to_csv(index=False).encode()),
            "the body is gzip-compressed, not CSV text: send it with the header "
            "Content-Encoding: gzip, or send the CSV uncompressed",
        ),
    ],
)
def test_a_csv_body_in_another_format_or_separator_says_what_it_is(
    client: TestClient, body: bytes, msg: str
) -> None:
    """Each was 'row 0 has 2 cells where the header has 1' (or a row of garbled bytes), which
    sent the client looking for the wrong mistake."""
    r = _sent(client, body, "text/csv")
    assert r.status_code == 422, r.text
    [problem] = r.json()["detail"]
    assert problem["loc"] == ["body"] and problem["msg"].startswith(msg)


def test_a_missing_column_names_the_header_name_that_differs_only_in_case(
    client: TestClient,
) -> None:
    body = registry(3).rename(columns={"age": " Age "}).to_csv(index=False).encode()
    r = _sent(client, body, "text/csv")
    assert r.status_code == 422
    assert r.json()["detail"] == [
        {
            "type": "missing",
            "loc": ["body", "columns", "age"],
            "msg": "Field required; the header has ' Age ': names must match exactly (lower "
            "case, no spaces)",
        }
    ]
