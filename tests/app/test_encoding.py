"""Compressed request bodies (``Content-Encoding``) and answers (``Accept-Encoding``).

What ``tritonclient.http`` sends with ``request_compression_algorithm`` (gzip, or
deflate as zlib writes it), on every endpoint that takes a body; the body limit on
the decoded size; and answers compressed only when asked and large enough.
(tests/e2e/test_e2e_oip.py drives it with tritonclient itself.)
"""

from __future__ import annotations

import gzip
import io
import json
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.testclient import TestClient

from app import Settings, create_app, encoding
from app.schemas import PATIENT_EXAMPLE
from model.artifact import load_artifact

INFER = "/v2/models/heart/infer"
JSON = {"content-type": "application/json"}
ARROW = "application/vnd.apache.arrow.stream"
#: What ``Content-Encoding`` each coding writes, as tritonclient compresses a request.
COMPRESS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": lambda data: gzip.compress(data, mtime=0),
    "deflate": zlib.compress,
}
LIMIT = 65_536


def _client(artifact: Path, **settings: Any) -> TestClient:
    client = TestClient(create_app(Settings(model_path=artifact, **settings)))
    # httpx asks for compressed answers by default; these tests say when they do.
    del client.headers["accept-encoding"]
    return client


@pytest.fixture(scope="module")
def client(artifact_path: Path) -> Iterator[TestClient]:
    with _client(artifact_path) as c:
        yield c


@pytest.fixture(scope="module")
def limited(artifact_path: Path) -> Iterator[TestClient]:
    """A 64 KiB body limit, so a body at and just beyond it is cheap to build."""
    with _client(artifact_path, max_body_bytes=LIMIT) as c:
        yield c


@pytest.fixture(scope="module")
def rows(
    heart_data: tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]],
) -> npt.NDArray[np.float64]:
    return heart_data[0][:40]


def _patients(rows: npt.NDArray[np.float64]) -> list[dict[str, float]]:
    return [dict(zip(PATIENT_EXAMPLE, row.tolist(), strict=True)) for row in rows]


def _coded(coding: str) -> dict[str, str]:
    return {**JSON, "content-encoding": coding}


def _sent(client: TestClient, path: str, body: bytes, coding: str, **headers: str) -> Any:
    """``body`` compressed with ``coding`` and posted to ``path``."""
    sent = {**_coded(coding), **headers}
    return client.post(path, content=COMPRESS[coding](body), headers=sent)


# ----- request bodies: decoded on every endpoint that takes one ---------------------------


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
@pytest.mark.parametrize("path", ["/predict", "/predict/explain", "/predict/batch"])
def test_a_compressed_json_body_is_answered_as_the_plain_one(
    client: TestClient, rows: npt.NDArray[np.float64], path: str, coding: str
) -> None:
    payload = _patients(rows[:1])[0] if "batch" not in path else {"patients": _patients(rows)}
    body = json.dumps(payload).encode()
    plain = client.post(path, content=body, headers=JSON)
    compressed = _sent(client, path, body, coding)
    assert plain.status_code == 200, plain.text
    assert compressed.status_code == 200, compressed.text
    assert compressed.json() == plain.json()


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
@pytest.mark.parametrize("media", ["text/csv", ARROW])
def test_a_compressed_table_is_scored_as_the_plain_one(
    client: TestClient, rows: npt.NDArray[np.float64], media: str, coding: str
) -> None:
    pd = pytest.importorskip("pandas", reason="tables need the bulk extra")
    pa = pytest.importorskip("pyarrow", reason="tables need the bulk extra")
    frame = pd.DataFrame(_patients(rows))
    if media == "text/csv":
        body = frame.to_csv(index=False).encode()
    else:
        sink = io.BytesIO()
        table = pa.Table.from_pandas(frame, preserve_index=False)
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        body = sink.getvalue()
    headers = {"content-type": media, "accept": "application/json"}
    plain = client.post("/predict/table", content=body, headers=headers)
    compressed = _sent(client, "/predict/table", body, coding, **headers)
    assert plain.status_code == 200, plain.text
    assert compressed.status_code == 200, compressed.text
    assert compressed.json() == plain.json()
    assert len(compressed.json()["predictions"]) == len(rows)


def _binary_request(rows: npt.NDArray[np.float64]) -> tuple[bytes, int]:
    """Triton's binary tensor extension: the JSON header's length, then raw FP64 values."""
    raw = rows.astype("<f8").tobytes()
    tensor = {
        "name": "features",
        "shape": list(rows.shape),
        "datatype": "FP64",
        "parameters": {"binary_data_size": len(raw)},
    }
    header = json.dumps({"id": "z", "inputs": [tensor]}).encode()
    return header + raw, len(header)


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_a_compressed_inference_request_is_scored(
    client: TestClient,
    artifact_path: Path,
    rows: npt.NDArray[np.float64],
    binary: bool,
    coding: str,
) -> None:
    """Inference-Header-Content-Length counts the decoded body's JSON, as tritonclient
    sends it and Triton reads it."""
    if binary:
        body, header_length = _binary_request(rows)
        extra = {"inference-header-content-length": str(header_length)}
    else:
        data = {"name": "features", "shape": list(rows.shape), "datatype": "FP64"}
        body = json.dumps({"id": "z", "inputs": [{**data, "data": rows.tolist()}]}).encode()
        extra = {}
    answer = _sent(client, INFER, body, coding, **extra)
    assert answer.status_code == 200, answer.text
    outputs = {o["name"]: o["data"] for o in answer.json()["outputs"]}
    expected = load_artifact(artifact_path).probability(rows)
    np.testing.assert_allclose(outputs["probability"], expected, rtol=0, atol=1e-12)
    assert answer.json()["id"] == "z"


def test_the_app_sees_the_decoded_body_without_the_encoded_length(artifact_path: Path) -> None:
    """Content-Length counted the compressed bytes: a handler trusting it for the decoded
    body would cut it short. Nor is Content-Encoding left to decode the body twice."""
    app = create_app(Settings(model_path=artifact_path))
    seen: dict[str, Any] = {}

    async def echo(request: Request) -> JSONResponse:
        seen["headers"] = dict(request.headers)
        seen["body"] = await request.body()
        return JSONResponse({})

    app.add_api_route("/echo", echo, methods=["POST"])
    body = json.dumps({"patients": [PATIENT_EXAMPLE] * 20}).encode()
    with TestClient(app) as c:
        assert (
            c.post("/echo", content=gzip.compress(body), headers=_coded("gzip")).status_code == 200
        )
    assert seen["body"] == body
    assert "content-encoding" not in seen["headers"]
    assert "content-length" not in seen["headers"]
    assert seen["headers"]["content-type"] == "application/json"


@pytest.mark.parametrize("coding", ["identity", "IDENTITY", "", "identity, identity"])
def test_identity_is_no_coding(client: TestClient, coding: str) -> None:
    """The same as no header, where any other unknown coding is refused."""
    body = json.dumps(PATIENT_EXAMPLE).encode()
    answer = client.post("/predict", content=body, headers=_coded(coding))
    assert answer.status_code == 200, answer.text
    other = client.post("/predict", content=body, headers=_coded("x-" + coding))
    assert other.status_code == 415, other.text


@pytest.mark.parametrize("coding", ["GZIP", "Gzip", "x-gzip", "DEFLATE"])
def test_coding_names_are_case_insensitive_and_x_gzip_is_gzip(
    client: TestClient, coding: str
) -> None:
    """RFC 9110 8.4.1: content codings are case-insensitive, and x-gzip is gzip."""
    body = json.dumps(PATIENT_EXAMPLE).encode()
    content = (zlib.compress if coding == "DEFLATE" else gzip.compress)(body)
    answer = client.post("/predict", content=content, headers=_coded(coding))
    assert answer.status_code == 200, answer.text


def test_concatenated_gzip_streams_are_one_body(client: TestClient) -> None:
    """``gzip -c a >> file; gzip -c b >> file`` is one file to gzip -d, and so here."""
    body = json.dumps({"patients": [PATIENT_EXAMPLE] * 3}).encode()
    half = len(body) // 2
    parts = gzip.compress(body[:half]) + gzip.compress(body[half:])
    answer = client.post("/predict/batch", content=parts, headers=_coded("gzip"))
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["predictions"]) == 3


def test_a_body_of_many_empty_streams_is_refused(client: TestClient) -> None:
    """An empty gzip stream is 20 bytes of nothing: a body of thousands never met the
    decoded limit and held the event loop while each was set up and read."""
    members = gzip.compress(b"", mtime=0) * (encoding.MAX_STREAMS + 1)
    answer = client.post("/predict/batch", content=members, headers=_coded("gzip"))
    assert answer.status_code == 400, answer.text
    assert f"more than {encoding.MAX_STREAMS} concatenated streams" in answer.json()["detail"]
    # At the cap, the streams are one body (here an empty one, which is no JSON).
    at_cap = gzip.compress(b"", mtime=0) * (encoding.MAX_STREAMS - 1) + gzip.compress(b"{}")
    assert client.post("/predict/batch", content=at_cap, headers=_coded("gzip")).status_code == 422


def test_a_file_served_with_byte_ranges_is_not_compressed(client: TestClient) -> None:
    """A /docs asset compressed on GET differed from its HEAD (which has no body to
    measure) and still offered byte ranges of the uncompressed file."""
    headers = {"accept-encoding": "gzip"}
    get = client.get("/docs-assets/swagger-ui-bundle.js", headers=headers)
    head = client.head("/docs-assets/swagger-ui-bundle.js", headers=headers)
    assert get.status_code == head.status_code == 200
    assert len(get.content) >= encoding.MIN_COMPRESSED_BYTES  # large enough to compress
    assert "content-encoding" not in get.headers and "content-encoding" not in head.headers
    assert get.headers["content-length"] == head.headers["content-length"]
    assert get.headers["etag"] == head.headers["etag"]
    assert get.headers["accept-ranges"] == "bytes"


@pytest.mark.parametrize("accept_encoding", ["gzip", "deflate", None])
def test_a_docs_asset_304_carries_the_etag_of_its_200(
    client: TestClient, accept_encoding: str | None
) -> None:
    """RFC 9110 15.4.5: a 304 carries the ETag and Vary its request's 200 would have.

    A compressed answer's ETag is made weak (``W/``), and StaticFiles' 304 keeps the
    file's strong one, so a compressed asset's 200 and 304 would disagree. Assets are
    sent as they are (byte ranges), so both carry the strong ETag; If-None-Match
    compares weakly (13.1.2), so the weak form of it matches as well.
    """
    asset = "/docs-assets/swagger-ui.css"
    asked = {"accept-encoding": accept_encoding} if accept_encoding else {}
    full = client.get(asset, headers=asked)
    assert full.status_code == 200
    assert len(full.content) >= encoding.MIN_COMPRESSED_BYTES  # large enough to compress
    etag = full.headers["etag"]
    for validators in (etag, f"W/{etag.removeprefix('W/')}", f'"another", {etag}'):
        again = client.get(asset, headers={**asked, "if-none-match": validators})
        assert again.status_code == 304, validators
        assert again.headers["etag"] == etag
        assert again.headers.get("vary") == full.headers.get("vary")
        assert again.content == b""
    changed = client.get(asset, headers={**asked, "if-none-match": '"another"'})
    assert changed.status_code == 200
    assert changed.headers["etag"] == etag


def test_a_chunked_compressed_body_is_decoded(client: TestClient) -> None:
    """Without Content-Length (a streamed upload): decoded as its chunks arrive."""
    data = gzip.compress(json.dumps({"patients": [PATIENT_EXAMPLE] * 50}).encode())
    chunks = iter([data[i : i + 100] for i in range(0, len(data), 100)])
    answer = client.post("/predict/batch", content=chunks, headers=_coded("gzip"))
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["predictions"]) == 50


# ----- the body limit is on the decoded body -----------------------------------------------


def _padded(size: int) -> bytes:
    """A valid /predict body of exactly ``size`` bytes (JSON allows trailing whitespace)."""
    body = json.dumps(PATIENT_EXAMPLE).encode()
    return body + b" " * (size - len(body))


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
def test_the_limit_counts_decoded_bytes_at_it_200_beyond_it_413(
    limited: TestClient, coding: str
) -> None:
    at_limit = _sent(limited, "/predict", _padded(LIMIT), coding)
    assert at_limit.status_code == 200, at_limit.text
    beyond = _sent(limited, "/predict", _padded(LIMIT + 1), coding)
    assert beyond.status_code == 413, beyond.text
    assert len(COMPRESS[coding](_padded(LIMIT + 1))) < LIMIT // 50  # small as sent
    assert beyond.json() == {
        "detail": f"Request body exceeds the limit of {LIMIT} bytes (HEART_MAX_BODY_BYTES) "
        "once its Content-Encoding is decoded; send fewer patients per request."
    }
    assert beyond.headers["connection"] == "close"


_DECOMPRESSOBJ = zlib.decompressobj


class _Recording:
    """zlib's decompressor, recording how much each call was allowed and gave."""

    def __init__(self, calls: list[tuple[int, int]], wbits: int) -> None:
        self._inflate = _DECOMPRESSOBJ(wbits)
        self._calls = calls

    def decompress(self, data: bytes, max_length: int = 0) -> bytes:
        out = self._inflate.decompress(data, max_length)
        self._calls.append((max_length, len(out)))
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inflate, name)


@pytest.mark.parametrize(
    ("path", "key", "media"),
    [
        ("/predict/batch", "detail", "application/json"),
        ("/predict/table", "detail", "text/csv"),
        (INFER, "error", "application/json"),
    ],
)
def test_a_decompression_bomb_is_413_without_inflating_it(
    client: TestClient,
    monkeypatch: pytest.MonkeyPatch,
    path: str,
    key: str,
    media: str,
) -> None:
    """10 MB of zeros gzip to 10 kB: refused as the plain 10 MB, never held in memory."""
    if path == "/predict/table":
        pytest.importorskip("pyarrow", reason="tables need the bulk extra")
    bomb = gzip.compress(b"0" * 10_000_000)
    assert len(bomb) < 20_000
    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(encoding.zlib, "decompressobj", lambda wbits: _Recording(calls, wbits))
    answer = client.post(
        path, content=bomb, headers={"content-type": media, "content-encoding": "gzip"}
    )
    assert answer.status_code == 413, answer.text
    assert list(answer.json()) == [key]
    assert "HEART_MAX_BODY_BYTES" in answer.json()[key]
    assert answer.headers["connection"] == "close"
    limit = 2 * 1024 * 1024
    assert calls, "nothing was inflated"
    assert all(0 < allowed <= encoding.INFLATE_SLICE + 1 for allowed, _ in calls)
    assert sum(given for _, given in calls) <= limit + 1  # the limit and one byte, no more
    # The service is as it was: it answers the next request on a new connection.
    assert client.get("/health").status_code == 200
    assert client.post("/predict", json=PATIENT_EXAMPLE).status_code == 200


def test_a_chunked_bomb_is_413(client: TestClient) -> None:
    bomb = gzip.compress(b" " * 10_000_000)
    chunks = iter([bomb[i : i + 1000] for i in range(0, len(bomb), 1000)])
    answer = client.post("/predict/batch", content=chunks, headers=_coded("gzip"))
    assert answer.status_code == 413, answer.text
    assert "once its Content-Encoding is decoded" in answer.json()["detail"]


# ----- corrupt data and unknown codings ----------------------------------------------------

_BODY = json.dumps(PATIENT_EXAMPLE).encode()


@pytest.mark.parametrize(
    ("coding", "data", "problem"),
    [
        ("gzip", b"this is not gzip", "is not valid gzip data"),
        ("gzip", gzip.compress(_BODY)[:-8], "ends within its gzip data (truncated)"),
        ("gzip", gzip.compress(_BODY) + b"trailing junk", "is not valid gzip data"),
        ("deflate", zlib.compress(_BODY)[:-4], "ends within its deflate data (truncated)"),
        # Raw deflate without the zlib wrapper: not what HTTP's "deflate" is, nor Triton's.
        ("deflate", zlib.compress(_BODY)[2:-4], "is not valid deflate data"),
        ("gzip", _BODY, "is not valid gzip data"),  # labelled, never compressed
    ],
)
@pytest.mark.parametrize(("path", "key"), [("/predict", "detail"), (INFER, "error")])
def test_corrupt_data_is_400_naming_content_encoding(
    client: TestClient, coding: str, data: bytes, problem: str, path: str, key: str
) -> None:
    answer = client.post(path, content=data, headers=_coded(coding))
    assert answer.status_code == 400, answer.text
    assert list(answer.json()) == [key]
    message = answer.json()[key]
    assert message.startswith(f"The request body {problem} (Content-Encoding: {coding}):")
    assert client.get("/health").status_code == 200


@pytest.mark.parametrize("coding", ["br", "compress", "x-foo", "gzip, br", "gzip, gzip", "zstd"])
@pytest.mark.parametrize(
    ("path", "key"), [("/predict", "detail"), ("/predict/table", "detail"), (INFER, "error")]
)
def test_an_unknown_coding_is_415_listing_what_is_read(
    client: TestClient, coding: str, path: str, key: str
) -> None:
    """RFC 9110 15.5.16 and RFC 7694: 415 with Accept-Encoding, as Triton answers it."""
    answer = client.post(path, content=_BODY, headers=_coded(coding))
    assert answer.status_code == 415, answer.text
    assert answer.headers["accept-encoding"] == "gzip, deflate"
    message = answer.json()[key]
    assert message.startswith(f"Unsupported Content-Encoding {coding!r}: ")
    assert "gzip or deflate" in message


def test_codings_in_two_header_lines_are_both_counted(client: TestClient) -> None:
    """A list split over lines is one list (RFC 9110 5.3): "gzip" then "br" is gzip, br."""
    headers = [("content-type", "application/json"), ("content-encoding", "gzip")]
    headers.append(("content-encoding", "br"))
    answer = client.post("/predict", content=gzip.compress(_BODY), headers=headers)
    assert answer.status_code == 415, answer.text
    assert "'gzip,br'" in answer.json()["detail"]


def test_a_coding_header_without_a_body_is_not_refused(client: TestClient) -> None:
    """Nothing to decode: /predict's own 422 says the body is missing (with one: 415)."""
    answer = client.post("/predict", headers=_coded("br"))
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["body"]
    with_body = client.post("/predict", content=_BODY, headers=_coded("br"))
    assert with_body.status_code == 415


# ----- compressed answers ----------------------------------------------------------------


def _raw(client: TestClient, path: str, payload: Any, accept_encoding: str) -> tuple[Any, bytes]:
    """The answer's headers and its bytes as sent (httpx would decode them)."""
    with client.stream(
        "POST", path, json=payload, headers={"accept-encoding": accept_encoding}
    ) as answer:
        return answer, b"".join(answer.iter_raw())


@pytest.mark.parametrize(
    ("coding", "decode"), [("gzip", gzip.decompress), ("deflate", zlib.decompress)]
)
def test_a_large_answer_is_compressed_in_the_coding_asked_for(
    client: TestClient,
    rows: npt.NDArray[np.float64],
    coding: str,
    decode: Callable[[bytes], bytes],
) -> None:
    """deflate as zlib writes it: what tritonclient (zlib.decompress) and browsers read."""
    batch = {"patients": _patients(rows)}
    plain = client.post("/predict/batch", json=batch)
    answer, raw = _raw(client, "/predict/batch", batch, coding)
    assert answer.status_code == 200
    assert answer.headers["content-encoding"] == coding
    assert answer.headers["vary"] == "Accept-Encoding"
    assert int(answer.headers["content-length"]) == len(raw) < len(plain.content) // 4
    assert decode(raw) == plain.content


def test_a_table_answer_is_compressed(client: TestClient, rows: npt.NDArray[np.float64]) -> None:
    pd = pytest.importorskip("pandas", reason="tables need the bulk extra")
    pytest.importorskip("pyarrow", reason="tables need the bulk extra")
    body = pd.DataFrame(_patients(rows)).to_csv(index=False).encode()
    headers = {"content-type": "text/csv", "accept-encoding": "gzip"}
    answer = client.post("/predict/table", content=body, headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-encoding"] == "gzip"
    assert answer.headers["content-type"].startswith("text/csv")
    assert len(answer.text.splitlines()) == len(rows) + 1  # httpx decoded it


def test_a_small_predict_answer_is_never_compressed(
    client: TestClient, rows: npt.NDArray[np.float64]
) -> None:
    """/predict is latency-critical and its answer fits one packet: no coding, no Vary;
    a batch's answer, above the threshold, is compressed for the same client."""
    answer, raw = _raw(client, "/predict", PATIENT_EXAMPLE, "gzip, deflate")
    assert answer.status_code == 200
    assert "content-encoding" not in answer.headers
    assert "vary" not in answer.headers
    assert json.loads(raw)["prediction"] in (0, 1)
    assert len(raw) < encoding.MIN_COMPRESSED_BYTES
    batch, _ = _raw(client, "/predict/batch", {"patients": _patients(rows)}, "gzip, deflate")
    assert batch.headers["content-encoding"] == "gzip"


@pytest.mark.parametrize(
    "accept_encoding",
    [None, "", "identity", "br", "gzip;q=0", "gzip;q=0, deflate;q=0", "*;q=0"],
)
def test_an_answer_is_plain_unless_a_coding_we_write_is_accepted(
    client: TestClient, rows: npt.NDArray[np.float64], accept_encoding: str | None
) -> None:
    batch = {"patients": _patients(rows)}
    if accept_encoding is None:  # no header at all
        answer = client.post("/predict/batch", json=batch)
        raw = answer.content
    else:
        answer, raw = _raw(client, "/predict/batch", batch, accept_encoding)
    assert answer.status_code == 200
    assert "content-encoding" not in answer.headers
    assert len(json.loads(raw)["predictions"]) == len(rows)
    if accept_encoding is not None:  # the answer depends on the header: caches must know
        assert answer.headers["vary"] == "Accept-Encoding"
    else:  # (and asked for, the same answer is compressed)
        asked, _ = _raw(client, "/predict/batch", batch, "gzip")
        assert asked.headers["content-encoding"] == "gzip"


def test_accept_encoding_in_two_lines_is_one_list(
    client: TestClient, rows: npt.NDArray[np.float64]
) -> None:
    """Lines "gzip" then "br" accept gzip: the second adds to the list (RFC 9110 5.3)."""
    headers = [("accept-encoding", "gzip"), ("accept-encoding", "br")]
    answer = client.post("/predict/batch", json={"patients": _patients(rows)}, headers=headers)
    assert answer.status_code == 200
    assert answer.headers["content-encoding"] == "gzip"


def test_errors_are_never_compressed(client: TestClient, rows: npt.NDArray[np.float64]) -> None:
    """tritonclient reads an error body without decoding it; this 422 is kilobytes long,
    and a success as long is compressed."""
    bad = {"patients": [{**PATIENT_EXAMPLE, "age": 5}] * 40}
    answer, raw = _raw(client, "/predict/batch", bad, "gzip")
    assert answer.status_code == 422
    assert len(raw) >= encoding.MIN_COMPRESSED_BYTES
    assert "content-encoding" not in answer.headers
    assert len(json.loads(raw)["detail"]) == 40
    good, _ = _raw(client, "/predict/batch", {"patients": _patients(rows)}, "gzip")
    assert good.headers["content-encoding"] == "gzip"


@pytest.mark.parametrize(
    ("accept_encoding", "chosen"),
    [
        ("gzip", "gzip"),
        ("deflate", "deflate"),
        ("gzip, deflate, br, zstd", "gzip"),
        ("deflate, gzip", "gzip"),
        ("GZIP", "gzip"),
        ("x-gzip", "gzip"),
        ("gzip;q=0.5, deflate", "deflate"),
        ("gzip;Q=0.5, deflate;q=0.6", "deflate"),
        ("*", "gzip"),
        ("*;q=0.5, gzip;q=0", "deflate"),
        ("br, *;q=0.1", "gzip"),
        ("gzip;q=2, deflate", "deflate"),  # q=2 is not a qvalue: that element is ignored
        ("gzip;q=nan", None),
        ("identity", None),
        ("br, zstd", None),
        ("gzip;q=0", None),
        ("", None),
    ],
)
def test_negotiation_follows_rfc_9110(accept_encoding: str, chosen: str | None) -> None:
    assert encoding.negotiate(accept_encoding.encode()) == chosen


def test_already_encoded_and_streamed_media_are_left_alone(artifact_path: Path) -> None:
    """An event stream must reach its reader as it comes; gzip bytes would only grow.
    The same bytes as text are compressed."""
    app = create_app(Settings(model_path=artifact_path))
    big = b"x" * 50_000

    def route(path: str, answer: Response) -> None:
        async def endpoint() -> Response:
            return answer

        app.add_api_route(path, endpoint, methods=["GET"])

    route("/stream", Response(big, media_type="text/event-stream"))
    route("/packed", Response(gzip.compress(big), headers={"content-encoding": "gzip"}))
    route("/text", Response(big, media_type="text/plain"))
    asked = {"accept-encoding": "gzip"}
    with TestClient(app) as c:
        streamed = c.get("/stream", headers=asked)
        assert "content-encoding" not in streamed.headers
        assert streamed.content == big
        packed = c.get("/packed", headers=asked)
        assert packed.headers["content-encoding"] == "gzip"
        assert packed.content == big  # decoded once by httpx: it was compressed once
        text = c.get("/text", headers=asked)
        assert text.headers["content-encoding"] == "gzip"
        assert text.content == big


def test_a_streamed_answer_is_compressed_as_it_goes(artifact_path: Path) -> None:
    """A body in parts (a file, a streamed table): each part is flushed whole."""
    app: FastAPI = create_app(Settings(model_path=artifact_path))
    parts = [b"row,%d\n" % i * 50 for i in range(100)]

    async def rows_out() -> StreamingResponse:
        async def generate() -> Any:
            for part in parts:
                yield part

        return StreamingResponse(generate(), media_type="text/csv")

    app.add_api_route("/rows", rows_out, methods=["GET"])
    with TestClient(app) as c, c.stream("GET", "/rows", headers={"accept-encoding": "gzip"}) as r:
        assert r.headers["content-encoding"] == "gzip"
        assert "content-length" not in r.headers
        raw = b"".join(r.iter_raw())
    assert gzip.decompress(raw) == b"".join(parts)


def test_each_streamed_part_is_readable_when_it_is_sent() -> None:
    """Each part sent must decode to that part at once, not wait in the compressor for
    the next one: a client reading a long streamed answer sees rows as they come."""
    import asyncio

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    parts = [b"row,%d\n" % i * 200 for i in range(5)]
    compressed = encoding.compressing(send, b"gzip")

    async def stream() -> None:
        start = {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/csv")],
        }
        await compressed(start)
        for i, part in enumerate(parts):
            await compressed({"type": "http.response.body", "body": part, "more_body": i < 4})

    asyncio.run(stream())
    inflate = zlib.decompressobj(zlib.MAX_WBITS | 16)
    bodies = [m["body"] for m in sent if m["type"] == "http.response.body"]
    assert [inflate.decompress(body) for body in bodies] == parts
    assert inflate.eof


# ----- counted in /metrics -----------------------------------------------------------------

_COUNTERS = ("heart_http_compressed_requests", "heart_http_compressed_responses")


def _compression_counts(client: TestClient) -> dict[tuple[str, ...], float]:
    """The compression counters' series, as ``(direction, *label values) -> value``."""
    from prometheus_client.parser import text_string_to_metric_families

    text = client.get("/metrics", headers={"accept": "text/plain"}).text
    counts: dict[tuple[str, ...], float] = {}
    for family in text_string_to_metric_families(text):
        if family.name in _COUNTERS:
            direction = family.name.rsplit("_", 1)[1]
            for sample in family.samples:
                counts[(direction, *sample.labels.values())] = sample.value
    return counts


def _increments(
    before: dict[tuple[str, ...], float], after: dict[tuple[str, ...], float]
) -> dict[tuple[str, ...], float]:
    assert set(after) == set(before), "a series appeared: labels must come from a fixed set"
    return {key: after[key] - before[key] for key in after if after[key] != before[key]}


@pytest.fixture(scope="module")
def counted(artifact_path: Path) -> Iterator[TestClient]:
    """A client of its own, so the counts are this section's alone (and a cheap 413)."""
    with _client(artifact_path, max_body_bytes=LIMIT) as c:
        yield c


def test_the_compression_series_exist_from_the_start_with_fixed_labels(
    artifact_path: Path,
) -> None:
    """At 0 before anything is compressed (a rate over an absent series is no rate), and
    only these label values: none comes from a request."""
    with _client(artifact_path) as fresh:
        counts = _compression_counts(fresh)
    expected = {("requests", c, o) for c in COMPRESS for o in ("decoded", "corrupt", "too_large")}
    expected |= {("requests", "other", "unsupported")}
    expected |= {("responses", c) for c in COMPRESS}
    assert counts == dict.fromkeys(expected, 0.0)


def test_compressed_bodies_are_counted_by_coding_and_outcome(counted: TestClient) -> None:
    before = _compression_counts(counted)
    for coding in COMPRESS:
        assert _sent(counted, "/predict", _BODY, coding).status_code == 200
    corrupt = counted.post("/predict", content=b"not gzip", headers=_coded("gzip"))
    truncated = counted.post(
        "/predict", content=zlib.compress(_BODY)[:-4], headers=_coded("deflate")
    )
    assert corrupt.status_code == truncated.status_code == 400
    assert _sent(counted, "/predict", _padded(LIMIT + 1), "gzip").status_code == 413
    assert counted.post("/predict", content=_BODY, headers=_coded("br")).status_code == 415
    # Not compressed bodies: a plain one, and a coding header without a body.
    assert counted.post("/predict", content=_BODY, headers=JSON).status_code == 200
    assert counted.post("/predict", headers=_coded("gzip")).status_code == 422
    assert _increments(before, _compression_counts(counted)) == {
        ("requests", "gzip", "decoded"): 1,
        ("requests", "deflate", "decoded"): 1,
        ("requests", "gzip", "corrupt"): 1,
        ("requests", "deflate", "corrupt"): 1,
        ("requests", "gzip", "too_large"): 1,
        ("requests", "other", "unsupported"): 1,
    }


def test_compressed_answers_are_counted_by_coding(counted: TestClient) -> None:
    """Only answers sent compressed: not a short /predict answer, an error, or a file
    served with byte ranges, though each of them was asked for with gzip."""
    before = _compression_counts(counted)
    for coding in COMPRESS:
        answer = counted.get("/openapi.json", headers={"accept-encoding": coding})
        assert answer.headers["content-encoding"] == coding
    gzip_ok = {"accept-encoding": "gzip"}
    assert counted.post("/predict", json=PATIENT_EXAMPLE, headers=gzip_ok).status_code == 200
    assert counted.get("/no-such-page", headers=gzip_ok).status_code == 404
    asset = counted.get("/docs-assets/swagger-ui-bundle.js", headers=gzip_ok)
    assert asset.status_code == 200 and "content-encoding" not in asset.headers
    assert _increments(before, _compression_counts(counted)) == {
        ("responses", "gzip"): 1,
        ("responses", "deflate"): 1,
    }
