"""The Open Inference Protocol (KServe V2 REST) beside our own API, under ``/v2``.

KServe, Triton, MLServer and Seldon clients and gateways speak this protocol,
so speaking it lets them use the model without code of their own. The model
is served as ``heart`` and accepts its 13 features in either layout clients
produce:

* one input ``features`` of shape [n, 13] in :data:`model.features.FEATURE_NAMES`
  order (a NumPy matrix, Triton's way);
* 13 inputs of shape [n], one per feature, named after it (the column layout
  MLServer's pandas codec sends).

Tensor data come as JSON (flat row-major or nested) or as raw little-endian
bytes after the JSON header (Triton's binary tensor extension, which
``tritonclient`` uses by default), of any numeric datatype a NumPy or pandas
column has (:data:`app.oip_schemas.DATATYPES`). Every value must fit its input's datatype
and passes the same range and code checks as ``/predict``
(:func:`model.features.invalid_cells`); a refusal is
``{"error": "..."}`` with status 400 naming the input, row and feature.
Outputs are ``probability`` (FP64, [n]) and ``prediction`` (INT64, [n], the
class at the model's threshold), always in JSON.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import numpy as np
from fastapi import APIRouter, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from pydantic_core import to_json
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.oip_schemas import (
    DATATYPES,
    InferenceErrorResponse,
    InferenceRequest,
    InferenceResponse,
    MetadataTensor,
    ModelMetadataResponse,
    ModelReadyResponse,
    RequestInput,
    ServerLiveResponse,
    ServerMetadataResponse,
    ServerReadyResponse,
)
from app.openapi import BODY_ERRORS, ERRORS, PROBE_ERRORS, operation
from app.routes import read_body
from app.routes import validation_error_handler as routes_validation_error_handler
from app.runtime import Runtime, runtime_of
from app.service import InvalidBodyError, PredictionService, refuse_duplicate_keys
from model.arrays import FloatArray
from model.cli_support import package_version
from model.features import FEATURE_NAMES, MAY_BE_MISSING, N_FEATURES, invalid_cells, outside_domain

MODEL_NAME: Final[str] = "heart"
PREFIX: Final[str] = "/v2"
MATRIX_INPUT: Final[str] = "features"
PROBABILITY_OUTPUT: Final[str] = "probability"
PREDICTION_OUTPUT: Final[str] = "prediction"
OUTPUT_NAMES: Final[tuple[str, str]] = (PROBABILITY_OUTPUT, PREDICTION_OUTPUT)
#: Triton's binary extension: the JSON header's length, the rest of the body is tensor bytes.
HEADER_LENGTH: Final[str] = "inference-header-content-length"


def _value_range(datatype: str) -> tuple[float, float, str]:
    """The lowest and highest float64 a value of ``datatype`` may be, and how an error
    message says what the range is.

    For FP32 and FP16 that is every float64 that rounds to a finite value of the
    type, as a tensor of it would hold the value: a JSON number is the nearest
    double to its text, so the float32 maximum's own shortest text,
    ``3.4028235e38``, is a little above the maximum and was refused, with a
    message whose 6-digit bounds (``3.40282e+38``) looked like the value
    itself. Only what would overflow to infinity (from halfway past the
    maximum to the next power of two) is refused now, and the message gives
    the maximum with enough digits (``3.4028235e+38``, ``65504``).
    """
    dtype = np.dtype(DATATYPES[datatype])
    if dtype.kind == "f":
        floats = np.finfo(dtype)
        maximum = dtype.type(floats.max)
        # Half the gap between the maximum and the next power of two, which rounds to
        # infinity (the maximum's last bit is 1, so a tie rounds away from it).
        overflow = float(maximum) + 2.0 ** (floats.maxexp - 2 - floats.nmant)
        high = math.nextafter(overflow, 0.0)
        # Exact where it is a short whole number (FP16's 65504: its shortest text would be
        # 65500), else the shortest text that reads back as the maximum (3.4028235e+38).
        shown = (
            str(int(maximum))
            if float(maximum) < 1e9
            else np.format_float_scientific(maximum, unique=True, trim="-")
        )
        return -high, high, f"-{shown} to {shown}"
    ints = np.iinfo(dtype)
    return float(ints.min), float(ints.max), f"{ints.min} to {ints.max}"


#: The values JSON data (read as float64) of each datatype but FP64 may hold; binary data
#: hold nothing else by construction. The upper bounds of INT64 and UINT64 are 2**63 and
#: 2**64 in float64, so those values themselves pass here: every feature's range refuses
#: them anyway.
_VALUE_RANGES: Final[Mapping[str, tuple[float, float, str]]] = {
    datatype: _value_range(datatype) for datatype in DATATYPES if datatype != "FP64"
}
_MAX_REPORTED: Final[int] = 5
_MAX_SHAPE_TEXT: Final[int] = 60
#: Up to 19 digits: any longer does not fit a body anyway, and int() stays cheap.
_DIGITS: Final = re.compile(r"[0-9]{1,19}")
TAG: Final[str] = "open inference protocol"
TAG_METADATA: Final[dict[str, str]] = {
    "name": TAG,
    "description": "KServe V2 / Open Inference Protocol REST endpoints, for Triton, "
    'KServe, MLServer and Seldon clients. Errors are `{"error": "..."}`.',
}

_ERROR: Final[dict[int | str, dict[str, Any]]] = {
    400: {"model": InferenceErrorResponse, "description": "Invalid request; `error` says why."},
    413: {**BODY_ERRORS[413], "model": InferenceErrorResponse},
    415: {
        "model": InferenceErrorResponse,
        "description": (
            "A Content-Encoding other than gzip or deflate (the answer's Accept-Encoding "
            "lists those)."
        ),
    },
}
#: The service's refusals before routing (app/openapi.py), in the protocol's shape here.
_UNAUTHORIZED: Final[dict[int | str, dict[str, Any]]] = {
    401: {**ERRORS[401], "model": InferenceErrorResponse}
}
_PROBE_ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    400: {**PROBE_ERRORS[400], "model": InferenceErrorResponse}
}


def _status_503(model: type[BaseModel], description: str) -> dict[int | str, dict[str, Any]]:
    """A route's 503 entry: its body differs between the routes that answer one."""
    return {503: {"model": model, "description": description}}


_NOT_LOADED: Final[dict[int | str, dict[str, Any]]] = _status_503(
    InferenceErrorResponse, "Model not loaded."
)


class ProtocolError(Exception):
    """A request the protocol endpoints refuse; becomes ``{"error": message}``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def error_response(message: str, status: int) -> Response:
    return Response(to_json({"error": message}), status_code=status, media_type="application/json")


# -- decoding -----------------------------------------------------------------------------------


def decode_request(
    body: bytes, header_length: int | None, *, max_rows: int
) -> tuple[FloatArray, InferenceRequest]:
    """Validate an inference request and return its n x 13 feature matrix and header.

    Raises :class:`ProtocolError` with a message that names the input at fault.
    """
    if header_length is not None and not 0 < header_length <= len(body):
        raise ProtocolError(
            f"Inference-Header-Content-Length {header_length} does not fit a body "
            f"of {len(body)} bytes"
        )
    header = body if header_length is None else body[:header_length]
    binary = b"" if header_length is None else body[header_length:]
    try:
        request = InferenceRequest.model_validate_json(header)
    except ValidationError as exc:
        _refuse_duplicate_keys(header)  # a duplicate may be why: say so first
        raise ProtocolError(_describe_validation_error(exc, header)) from None
    if header.count(b'"') != _quotes(request) or b"\\" in header:
        _refuse_duplicate_keys(header)
    tensors = _tensors(request.inputs, binary, max_rows=max_rows)
    if MATRIX_INPUT in tensors:
        if len(tensors) != 1:
            raise ProtocolError(
                f"send either the input '{MATRIX_INPUT}' alone or the {N_FEATURES} feature "
                f"inputs, not both (got {', '.join(repr(n) for n in tensors)})"
            )
        x = _matrix_input(tensors[MATRIX_INPUT])
    else:
        x = _column_inputs(tensors)
    if x.shape[0] == 0:
        raise ProtocolError("the inputs hold no rows: send at least one patient")
    if x.shape[0] > max_rows:
        raise ProtocolError(
            f"{x.shape[0]} rows exceed the limit of {max_rows} per request "
            "(HEART_MAX_BATCH_SIZE); send fewer rows per request"
        )
    # A gap (null, or NaN in a binary tensor) is "not measured", as in /predict: fine
    # for the features that may be missing, refused for the others.
    bad = outside_domain(x)
    gaps = np.isnan(x)
    if gaps.any():
        bad &= ~(gaps & MAY_BE_MISSING)
    if bad.any():
        raise ProtocolError(_describe_bad_cells(x, matrix=MATRIX_INPUT in tensors))
    if request.outputs is not None:
        names = [o.name for o in request.outputs]
        unknown = [name for name in names if name not in OUTPUT_NAMES]
        if unknown:
            raise ProtocolError(
                f"unknown output {_cut(repr(unknown[0]))}: this model has the outputs "
                f"{PROBABILITY_OUTPUT!r} and {PREDICTION_OUTPUT!r}"
            )
        # Else the answer would hold the same tensor twice, which clients index by name.
        twice = [name for name in OUTPUT_NAMES if names.count(name) > 1]
        if twice:
            raise ProtocolError(f"output {twice[0]!r} is requested twice")
    return x, request


def _tensors(
    inputs: Sequence[RequestInput], binary: bytes, *, max_rows: int
) -> dict[str, np.ndarray[Any, Any]]:
    """Each input's data as an array of its declared shape, checked against that shape."""
    tensors: dict[str, np.ndarray[Any, Any]] = {}
    offset = 0
    for tensor in inputs:
        name = tensor.name
        if name != MATRIX_INPUT and name not in FEATURE_NAMES:
            raise ProtocolError(
                f"unknown input {name!r}: send '{MATRIX_INPUT}' [n, {N_FEATURES}] or one "
                f"input of shape [n] per feature ({', '.join(FEATURE_NAMES)})"
            )
        if name in tensors:
            raise ProtocolError(f"input {name!r} is given twice")
        _check_shape(name, tensor.shape, max_rows)
        size = tensor.parameters.get("binary_data_size") if tensor.parameters else None
        if size is not None:
            if tensor.data is not None:
                raise ProtocolError(f"input {name!r} has both data and binary_data_size")
            # type(), not isinstance(): JSON's true is a Python int (True == 1) too.
            if type(size) is not int or size < 0:
                raise ProtocolError(
                    f"input {name!r}: binary_data_size must be a non-negative integer "
                    f"(a number of bytes), got {_cut(json.dumps(size))}"
                )
            if offset + size > len(binary):
                raise ProtocolError(
                    f"input {name!r}: binary_data_size {_cut(str(size))} does not fit the "
                    f"{len(binary)} bytes after the JSON header"
                )
            dtype = np.dtype(DATATYPES[tensor.datatype])
            if size % dtype.itemsize:
                raise ProtocolError(
                    f"input {name!r}: {size} bytes are not a whole number of "
                    f"{tensor.datatype} values"
                )
            values = np.frombuffer(binary, dtype, size // dtype.itemsize, offset)
            offset += size
        elif tensor.data is None:
            raise ProtocolError(f"input {name!r} has no data")
        else:
            try:
                values = np.asarray(tensor.data, dtype=np.float64)
            except ValueError:  # ragged nested lists
                raise ProtocolError(f"input {name!r}: nested data rows differ in length") from None
        expected = math.prod(tensor.shape)
        if values.size != expected:
            raise ProtocolError(
                f"input {name!r} has {values.size} values but its shape "
                f"{_shape_text(tensor.shape)} needs {expected}"
            )
        values = values.reshape(tensor.shape)
        if size is None:  # JSON numbers, read as float64 whatever the datatype
            _check_datatype(name, tensor.datatype, values)
        tensors[name] = values
    if offset != len(binary):
        raise ProtocolError(
            f"{len(binary) - offset} bytes after the JSON header belong to no input"
        )
    return tensors


def _check_datatype(name: str, datatype: str, values: np.ndarray[Any, Any]) -> None:
    """Refuse JSON values that a tensor of ``datatype`` cannot hold.

    JSON numbers are read as float64 whatever the declared type, so an INT8
    input could hold a blood pressure of 130, a UINT8 one -1 and a FP32 one
    1e39: the client meant another type or sent the wrong column, and Triton
    or a binary tensor of the same type could not carry these values.
    Fractions in an integer type are refused too; null (NaN) is "not
    measured" in every type. ``values`` has the input's shape (checked by
    :func:`_check_shape`).
    """
    integer = np.dtype(DATATYPES[datatype]).kind in "iu"
    if integer:
        whole = (values == np.floor(values)) | np.isnan(values)
        if not bool(np.all(whole)):
            raise ProtocolError(f"input {name!r} is {datatype} but holds fractions")
    bounds = _VALUE_RANGES.get(datatype)
    if bounds is None:
        return
    low, high, text = bounds
    outside = (values < low) | (values > high)
    if bool(outside.any()):
        row, *column = (int(i) for i in np.argwhere(outside)[0])
        value = values[outside][0]
        # A float as sent (its shortest text), not rounded to 6 digits like the bounds were.
        shown = str(int(value)) if integer else repr(float(value)).removesuffix(".0")
        raise ProtocolError(
            f"{_cell(name, row, column[0] if column else 0)}: {shown} is outside the "
            f"{datatype} range ({text})"
        )


def _check_shape(name: str, shape: Sequence[int], max_rows: int) -> None:
    """Refuse a shape this model cannot take before NumPy sees it.

    The schema only makes each dimension a non-negative integer. NumPy itself
    fails on what a hostile client can still send, as a 500: more than 64
    dimensions, or dimensions whose product is 0 (so the data length matches)
    while one of them overflows 64 bits. Our tensors are [n, 13], or [n] (or
    [n, 1]) per feature, with n within the batch limit: anything else is
    refused here, naming the input.
    """
    if name == MATRIX_INPUT:
        fits = len(shape) == 2 and shape[1] == N_FEATURES
        expected = f"[n, {N_FEATURES}] with the features in this order: {', '.join(FEATURE_NAMES)}"
    else:
        fits = len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)
        expected = "[n] (or [n, 1])"
    if not fits:
        raise ProtocolError(f"input {name!r} has shape {_shape_text(shape)}, expected {expected}")
    if shape[0] > max_rows:
        raise ProtocolError(
            f"input {name!r}: {_cut(str(shape[0]))} rows exceed the limit of {max_rows} "
            "per request (HEART_MAX_BATCH_SIZE); send fewer rows per request"
        )


def _shape_text(shape: Sequence[int]) -> str:
    """A shape for an error message, cut short: a client may send thousands of digits."""
    return _cut("[" + ", ".join(map(str, shape)) + "]")


def _cut(text: str) -> str:
    return text if len(text) <= _MAX_SHAPE_TEXT else text[: _MAX_SHAPE_TEXT - 3] + "..."


def _matrix_input(values: np.ndarray[Any, Any]) -> FloatArray:
    """The [n, 13] matrix (its shape was checked by :func:`_check_shape`)."""
    return np.ascontiguousarray(values, dtype=np.float64)


def _column_inputs(tensors: Mapping[str, np.ndarray[Any, Any]]) -> FloatArray:
    missing = [name for name in FEATURE_NAMES if name not in tensors]
    if missing:
        raise ProtocolError(
            f"missing input(s) {', '.join(repr(n) for n in missing)}: send all "
            f"{N_FEATURES} feature inputs of shape [n], or one input '{MATRIX_INPUT}' "
            f"[n, {N_FEATURES}]"
        )
    columns = []
    for name in FEATURE_NAMES:
        column = tensors[name]
        if column.ndim == 2:  # [n, 1] is the pandas codec's shape too (see _check_shape)
            column = column[:, 0]
        columns.append(column)
    lengths = {len(c) for c in columns}
    if len(lengths) != 1:
        raise ProtocolError(
            f"the feature inputs have different lengths {sorted(lengths)}: each needs one "
            "value per patient"
        )
    return np.column_stack(columns).astype(np.float64, copy=False)


def _cell(name: str, row: int, column: int) -> str:
    """Where a value of input ``name`` is, as the client sent it: a feature input's
    ``column`` is 0 (its one column), the matrix's names the feature."""
    if name == MATRIX_INPUT:
        return f"input '{MATRIX_INPUT}' row {row} column {column} ({FEATURE_NAMES[column]})"
    return f"input '{name}' element {row}"


def _describe_bad_cells(x: FloatArray, *, matrix: bool) -> str:
    problems = invalid_cells(x, allow_missing=True)
    parts = []
    for row, column, reason in problems[:_MAX_REPORTED]:
        where = _cell(MATRIX_INPUT if matrix else FEATURE_NAMES[column], row, column)
        value = x[row, column]
        got = "null" if np.isnan(value) else f"{value:g}"
        parts.append(f"{where}: {reason}, got {got}")
    more = len(problems) - _MAX_REPORTED
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def _quotes(value: Any) -> int:
    """How many ``"`` the JSON text of a validated request holds, if no key came twice.

    Two per key and per string: counting the header's quotes (microseconds)
    tells whether it could hold a duplicate key, so only then is it parsed
    again to find it, as /predict does (``app.service``). Tensor data are
    numbers (``data`` is skipped: it is the bulk of a request). A string can
    only hold a quote escaped (``\\"``, or ``\\u0022`` which hides it from the
    count), so the caller sends any header with a backslash to the full check.
    """
    if isinstance(value, str):
        return 2
    if isinstance(value, BaseModel):
        return sum(
            2 + (0 if field == "data" else _quotes(getattr(value, field)))
            for field in value.model_fields_set
        )
    if isinstance(value, dict):
        return sum(_quotes(k) + _quotes(v) for k, v in value.items())
    if isinstance(value, list):
        return sum(_quotes(v) for v in value)
    return 0


def _refuse_duplicate_keys(header: bytes) -> None:
    """/predict's check (:func:`app.service.refuse_duplicate_keys`), in the protocol's words.

    A duplicated key is silently resolved to its last value by the parser, so
    what a proxy or a log judged is not what would be scored.
    """
    try:
        refuse_duplicate_keys(header)
    except InvalidBodyError as exc:
        error = exc.errors[0]
        raise ProtocolError(f"{_locate(error['loc'][1:], header)}: {error['msg']}") from None


def _describe_validation_error(exc: ValidationError, header: bytes) -> str:
    """The first problem of a malformed request, located as ``inputs[2] ('age').data[5]``."""
    error = exc.errors(include_url=False)[0]
    if error["type"] == "json_invalid":
        return f"the request is not valid JSON: {error['msg']}"
    loc = [part for part in error["loc"] if not (isinstance(part, str) and "[" in part)]
    return f"{_locate(loc, header)}: {error['msg']}"


def _locate(loc: Sequence[str | int], header: bytes) -> str:
    """Where ``loc`` points in the request, with each input's name: ``inputs[2] ('age').data``."""
    names: list[Any] = []
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        names = [i.get("name") for i in json.loads(header).get("inputs", [])]
    where = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            where += f"[{part}]"
            if i > 0 and loc[i - 1] == "inputs" and part < len(names) and names[part]:
                where += f" ({names[part]!r})"
        else:
            where += f".{part}" if where else str(part)
    return where or "request"


# -- encoding -----------------------------------------------------------------------------------


def encode_response(
    service: PredictionService, x: FloatArray, request: InferenceRequest
) -> tuple[bytes, int]:
    """The inference response's JSON bytes, and how many rows were predicted positive."""
    probabilities = service.predictor.probability(x)
    positive = probabilities >= service.threshold
    # The protocol: "if not specified all outputs ... will be returned". An empty list
    # specifies none, and an answer without tensors is of no use: all, as Triton answers
    # it (MLServer's runtimes take it for no list too; docs/open-inference-protocol.md).
    requested = request.outputs
    wanted = tuple(o.name for o in requested) if requested else OUTPUT_NAMES
    n = len(probabilities)
    outputs = []
    for name in wanted:
        if name == PROBABILITY_OUTPUT:
            data, datatype = probabilities.tolist(), "FP64"
        else:
            data, datatype = positive.astype(np.int64).tolist(), "INT64"
        outputs.append({"name": name, "datatype": datatype, "shape": [n], "data": data})
    response: dict[str, Any] = {
        "model_name": MODEL_NAME,
        "model_version": service.model_version,
        "outputs": outputs,
    }
    if request.id is not None:
        response["id"] = request.id
    return to_json(response), int(positive.sum())


# -- routes -------------------------------------------------------------------------------------

router = APIRouter(prefix=PREFIX, tags=[TAG])


def _json(model: Any, status: int = 200) -> Response:
    return Response(model.model_dump_json(), status_code=status, media_type="application/json")


def _readiness(request: Request, answer: Callable[[bool], BaseModel]) -> Response:
    """Both readiness routes: 200 when the model answers, else 503, in the route's own body."""
    ready = runtime_of(request).ready
    return _json(answer(ready), 200 if ready else 503)


def _service_or_error(runtime: Runtime) -> PredictionService:
    if runtime.service is None:
        raise ProtocolError("the model is not loaded yet; see /v2/health/ready", status=503)
    return runtime.service


def _metadata(service: PredictionService) -> ModelMetadataResponse:
    return ModelMetadataResponse(
        name=MODEL_NAME,
        versions=[service.model_version],
        platform="heart-risk/numpy",
        inputs=[MetadataTensor(name=MATRIX_INPUT, datatype="FP64", shape=[-1, N_FEATURES])],
        outputs=[
            MetadataTensor(name=PROBABILITY_OUTPUT, datatype="FP64", shape=[-1]),
            MetadataTensor(name=PREDICTION_OUTPUT, datatype="INT64", shape=[-1]),
        ],
        parameters={
            "feature_order": list(FEATURE_NAMES),
            "threshold": service.threshold,
            # The input above says FP64, the model's own type, but clients send their
            # columns' types: list the ones read, from the table the schema checks.
            "datatypes": list(DATATYPES),
            "column_layout": f"or one input of shape [-1] per feature, named after it "
            f"({N_FEATURES} inputs); any input may have any of the 'datatypes'",
        },
    )


@router.get(
    "",
    **operation(
        "oip_server_metadata",
        "Server metadata (Open Inference Protocol)",
        ServerMetadataResponse,
        _UNAUTHORIZED,
    ),
)
async def server_metadata() -> Response:
    """Name and version of this server; no protocol extensions beyond binary tensor data."""
    return _json(
        ServerMetadataResponse(
            name="heart-risk", version=package_version(), extensions=["binary_tensor_data"]
        )
    )


@router.get(
    "/health/live",
    **operation(
        "oip_server_live", "Liveness (Open Inference Protocol)", ServerLiveResponse, _PROBE_ERRORS
    ),
)
async def server_live() -> Response:
    """Always 200 while the process runs; never needs the API key."""
    return _json(ServerLiveResponse(live=True))


@router.get(
    "/health/ready",
    **operation(
        "oip_server_ready",
        "Readiness (Open Inference Protocol)",
        ServerReadyResponse,
        {**_PROBE_ERRORS, **_status_503(ServerReadyResponse, "Not ready.")},
    ),
)
async def server_ready(request: Request) -> Response:
    """200 when the model is loaded and passed its self-test (like /ready), else 503."""
    return _readiness(request, lambda ready: ServerReadyResponse(ready=ready))


@router.get(
    f"/models/{MODEL_NAME}",
    **operation(
        "oip_model_metadata",
        "Model metadata: inputs and outputs (Open Inference Protocol)",
        ModelMetadataResponse,
        {**_UNAUTHORIZED, **_NOT_LOADED},
    ),
)
async def model_metadata(request: Request) -> Response:
    """The model's inputs and outputs with name, datatype and shape (-1: any size)."""
    try:
        service = _service_or_error(runtime_of(request))
    except ProtocolError as exc:
        return error_response(str(exc), exc.status)
    return _json(_metadata(service))


@router.get(
    f"/models/{MODEL_NAME}/ready",
    **operation(
        "oip_model_ready",
        "Model readiness (Open Inference Protocol)",
        ModelReadyResponse,
        {**_UNAUTHORIZED, **_status_503(ModelReadyResponse, "Not ready.")},
    ),
)
async def model_ready(request: Request) -> Response:
    """200 when the model answers (its self-test passed), 503 otherwise."""
    return _readiness(request, lambda ready: ModelReadyResponse(name=MODEL_NAME, ready=ready))


INFER_PATH: Final[str] = f"{PREFIX}/models/{MODEL_NAME}/infer"


@router.post(
    f"/models/{MODEL_NAME}/infer",
    **operation(
        "oip_model_infer",
        "Predict (Open Inference Protocol)",
        InferenceResponse,
        {**_ERROR, **_UNAUTHORIZED, **_NOT_LOADED},
    ),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"$ref": "#/components/schemas/InferenceRequest"},
                }
            },
        }
    },
)
async def model_infer(request: Request) -> Response:
    """Probabilities and classes for the rows of ``features`` [n, 13] (or 13 feature inputs
    of shape [n]); the request's ``id`` is echoed."""
    runtime = runtime_of(request)
    try:
        service = _service_or_error(runtime)
        header_length = _header_length(request.headers.get(HEADER_LENGTH))
        body = await read_body(request, required=False)
        if not body:
            raise ProtocolError("the request has no body: send an inference request")
        x, parsed = decode_request(body, header_length, max_rows=service.max_batch_size)
    except ProtocolError as exc:
        return error_response(str(exc), exc.status)
    payload, positive = encode_response(service, x, parsed)
    runtime.metrics.observe_batch(x, positive)
    return Response(payload, media_type="application/json")


def _header_length(raw: str | None) -> int | None:
    """The Inference-Header-Content-Length header as a number of bytes, digits only.

    Python's ``int`` also reads ``1_0``, ``+10`` and non-ASCII digits, which a
    proxy in front would not: the two would split the body differently.
    """
    if raw is None:
        return None
    if _DIGITS.fullmatch(raw) is None:
        raise ProtocolError(
            f"Inference-Header-Content-Length must be a number of bytes, got {_cut(repr(raw))}"
        )
    return int(raw)


# -- errors outside the routes' own code ---------------------------------------------------------


def is_protocol_path(path: str) -> bool:
    """Whether ``path`` is the protocol's: its every error is ``{"error": ...}``."""
    return path == PREFIX or path.startswith(f"{PREFIX}/")


_MODELS: Final[str] = f"{PREFIX}/models/"


async def http_error_handler(request: Request, exc: Exception) -> Response:
    """Starlette's and FastAPI's HTTP errors (404, 405, a chunked body's 413, ...), in the
    protocol's shape below /v2 and in FastAPI's ``detail`` shape elsewhere.

    The protocol requires ``{"error": ...}`` of every failed request; the router's
    own 404 and 405 would otherwise answer ``{"detail": ...}`` (``OPTIONS
    /v2/models/heart``). Under /v2/models/ a 404 or 405 names what is wrong: a
    model not served here (any method), a path the model does not have, or the
    method to use.
    """
    assert isinstance(exc, StarletteHTTPException)
    path = request.url.path
    if not is_protocol_path(path):
        return await http_exception_handler(request, exc)
    status, headers, message = exc.status_code, dict(exc.headers or {}), str(exc.detail)
    if status in (404, 405):
        model = path.removeprefix(_MODELS).partition("/")[0]
        if path.startswith(_MODELS) and model not in ("", MODEL_NAME):
            status, headers = 404, {}
            message = f"model {model!r} is not served here; the model is {MODEL_NAME!r}"
        elif status == 404:
            message = f"no such endpoint: {path}"
        else:
            message = f"method {request.method} not allowed; use {headers.get('Allow', '')}"
    response = error_response(message, status)
    response.headers.update(headers)
    return response


async def validation_error_handler(request: Request, exc: Exception) -> Response:
    """FastAPI's 422 for a parameter, as ``{"error": ...}`` below /v2 (routes.py's elsewhere).

    No protocol route declares a parameter FastAPI validates today; this keeps
    the shape right for one that does.
    """
    assert isinstance(exc, RequestValidationError)
    if not is_protocol_path(request.url.path):
        return await routes_validation_error_handler(request, exc)
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error.get("loc", ())) or "request"
    return error_response(f"{where}: {error.get('msg', 'invalid')}", 422)
