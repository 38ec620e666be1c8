"""``POST /predict/table``: a batch as a CSV or Arrow IPC stream body, scores in any of three.

JSON spends almost all of a batch's time on parsing and validating objects;
a columnar body arrives as 13 arrays, checked in one vectorised pass
(:mod:`model.columns`, the domain rule of ``/predict/batch``) and scored in one
NumPy call. The answer's format follows ``Accept``: JSON (exactly the
``/predict/batch`` answer), CSV or Arrow (never one it refuses with q=0, however
broad a wildcard beside it); without ``Accept`` it is the request's own format.
Errors have the batch's 422 shape, each ``loc`` naming the row and column:
``["body", "patients", 3, "age"]``.

CSV and Arrow need pyarrow, from the ``bulk`` extra; a service installed
without it answers these media types with 415 naming the extra (and the restart
it needs: pyarrow is looked for at start-up). The body is
limited by ``HEART_MAX_BODY_BYTES`` like every other body (for an Arrow stream,
also uncompressed), and the table by ``HEART_MAX_TABLE_ROWS`` rows: 413 beyond
either, counted before a compressed batch is decoded.
"""

from __future__ import annotations

import importlib.util
import logging
import traceback
from pathlib import Path
from typing import Any, Final, Literal, NamedTuple

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool

from app import qvalues
from app.logs import APP_LOGGER
from app.openapi import BODY_ERRORS
from app.routes import loaded_service, read_body
from app.runtime import runtime_of
from app.schemas import ErrorMessage
from app.service import PredictionService
from model.arrays import FloatArray
from model.columns import (
    DuplicateColumnsError,
    MissingColumnsError,
    near_hint,
    validate_columns,
)
from scoring.core import score_batch

TABLE_PATH: Final[str] = "/predict/table"
CSV: Final[str] = "text/csv"
ARROW: Final[str] = "application/vnd.apache.arrow.stream"
JSON: Final[str] = "application/json"
FORMATS: Final[dict[str, Literal["csv", "arrow", "json"]]] = {
    CSV: "csv",
    ARROW: "arrow",
    JSON: "json",
}
FORMATS_MEDIA: Final[dict[str, str]] = {fmt: media for media, fmt in FORMATS.items()}
#: At most this many bad cells are listed in a 422: enough to fix a file, bounded for a huge one.
MAX_LISTED_ERRORS: Final[int] = 1000
#: "Then restart": pyarrow is looked for once, at start-up (``HAVE_BULK``), so a service
#: that was not restarted keeps answering 415 after the install.
BULK_HINT: Final[str] = (
    "CSV and Arrow bodies need the service's bulk extra: pip install 'heart-risk[bulk]' "
    "(pyarrow), then restart the service; JSON batches go to /predict/batch."
)
#: Checked once: whether this installation can read columnar bodies at all.
HAVE_BULK: bool = importlib.util.find_spec("pyarrow") is not None

router = APIRouter()
logger = logging.getLogger(APP_LOGGER)

_BINARY: Final[dict[str, Any]] = {"schema": {"type": "string", "format": "binary", "minLength": 1}}
_TEXT: Final[dict[str, Any]] = {"schema": {"type": "string", "minLength": 1}}
_OPENAPI_BODY: Final[dict[str, Any]] = {
    "requestBody": {
        "required": True,
        "description": (
            "One row per patient, one column per feature (named as in the feature table; "
            "other columns are ignored), an empty cell where a value was not measured "
            "and the feature allows it. At most HEART_MAX_TABLE_ROWS rows and "
            "HEART_MAX_BODY_BYTES bytes (an Arrow stream's buffers uncompressed, too)."
        ),
        "content": {CSV: _TEXT, ARROW: _BINARY},
    }
}
_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    200: {
        "description": (
            "One result per row, in request order: probability, prediction and, when the "
            "model has one, probability_low/probability_high. JSON is the /predict/batch "
            "answer. The format follows Accept, else the request's own format."
        ),
        "content": {CSV: {"schema": {"type": "string"}}, ARROW: _BINARY},
    },
    400: BODY_ERRORS[400],
    401: BODY_ERRORS[401],
    406: {
        "model": ErrorMessage,
        "description": "Accept names no format this endpoint writes, or refuses each with q=0.",
    },
    413: {
        "model": ErrorMessage,
        "description": (
            "Body larger than HEART_MAX_BODY_BYTES (as sent, once its Content-Encoding "
            "is decoded, and an Arrow stream's buffers uncompressed), or more rows than "
            "HEART_MAX_TABLE_ROWS."
        ),
    },
    415: {
        "model": ErrorMessage,
        "description": (
            "Body neither text/csv nor Arrow, or the bulk extra is not installed, or a "
            "Content-Encoding other than gzip or deflate."
        ),
    },
    422: {
        "description": "Validation Error: `detail` names each bad cell by row and column.",
        "content": {JSON: {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}},
    },
}


@router.post(
    TABLE_PATH,
    operation_id="predict_table",
    summary="Predict heart disease for a table of patients (CSV or Arrow)",
    tags=["predictions"],
    response_model=None,
    response_class=Response,
    responses=_RESPONSES,
    openapi_extra=_OPENAPI_BODY,
)
async def predict_table(request: Request) -> Response:
    """Scores for every row of a CSV or Arrow IPC stream body, in the format ``Accept`` asks.

    One invalid cell fails the request with 422 listing every bad cell (up to
    1000), like ``/predict/batch``.
    """
    media = _media_type(request.headers.get("content-type"))
    if media not in (CSV, ARROW):
        raise HTTPException(415, detail=f"Unsupported media type: send {CSV} or {ARROW}.")
    if not HAVE_BULK:
        raise HTTPException(415, detail=BULK_HINT)
    answer = _negotiate(request.headers.get("accept"), default=media)
    runtime = runtime_of(request)
    service = loaded_service(runtime)
    body = await read_body(request)
    fmt: Literal["csv", "arrow"] = "csv" if media == CSV else "arrow"
    limits = _Limits(runtime.settings.max_table_rows, runtime.settings.max_body_bytes)
    try:
        # Milliseconds to seconds of CPU for a large table: in a worker thread, so the
        # event loop keeps answering /health, /ready and every other request meanwhile.
        body_out, media_out, x, n_positive = await run_in_threadpool(
            _score_table, service, body, fmt, answer, limits
        )
    except (RequestValidationError, HTTPException):
        raise
    except Exception as exc:
        raise _logged_without_values(exc) from None
    # observe_batch takes rows with gaps: every row counts, measured values feed drift.
    runtime.metrics.observe_batch(x, n_positive)
    return Response(
        body_out, media_type=media_out, headers={"X-Model-Version": service.model_version}
    )


class _Limits(NamedTuple):
    """Per request: most rows (``HEART_MAX_TABLE_ROWS``), most uncompressed Arrow bytes
    (``HEART_MAX_BODY_BYTES``, which already bounds the body as sent)."""

    rows: int
    arrow_bytes: int


def _score_table(
    service: PredictionService,
    body: bytes,
    fmt: Literal["csv", "arrow"],
    answer: Literal["csv", "arrow", "json"],
    limits: _Limits,
) -> tuple[bytes, str, FloatArray, int]:
    """Decode, validate, score and serialise a table body: (answer, its media type, the
    validated rows, how many are positive). Raises the 422s naming rows and columns,
    and 413 for a table beyond ``limits``."""
    # pyarrow only now: a service without the bulk extra never imports it.
    from scoring.errors import ColumnTypeError, InputError, RowWidthError
    from scoring.uploads import TableTooLargeError, body_features
    from scoring.writing import scores_batch, serialize

    try:
        features, not_numbers = body_features(
            body, fmt, max_rows=limits.rows, max_bytes=limits.arrow_bytes
        )
        batch = validate_columns(features, not_numbers=not_numbers)
    except TableTooLargeError as exc:
        raise HTTPException(413, detail=f"Table too large: {exc}.") from None
    except RowWidthError as exc:
        # A row, not a cell: the loc of the cell errors, without a column.
        raise RequestValidationError(
            [
                {
                    "type": "value_error",
                    "loc": ("body", "patients", exc.row),
                    "msg": exc.reason,
                    "input": None,
                }
            ]
        ) from None
    except ColumnTypeError as exc:
        raise RequestValidationError(
            [
                {
                    "type": "value_error",
                    "loc": ("body", "columns", exc.column),
                    "msg": str(exc),
                    "input": None,
                }
            ]
        ) from None
    except InputError as exc:
        raise RequestValidationError(
            [{"type": "value_error", "loc": ("body",), "msg": str(exc), "input": None}]
        ) from None
    except DuplicateColumnsError as exc:
        raise RequestValidationError(
            [
                {
                    "type": "duplicate_column",
                    "loc": ("body", "columns", name),
                    "msg": f"Duplicate column {name!r}: send each column once",
                }
                for name in exc.duplicated
            ]
        ) from None
    except MissingColumnsError as exc:
        raise RequestValidationError(
            [
                {
                    "type": "missing",
                    "loc": ("body", "columns", name),
                    "msg": "Field required"
                    + near_hint({name: exc.near[name]} if name in exc.near else {}),
                }
                for name in exc.missing
            ]
        ) from None
    if batch.problems:
        raise RequestValidationError(
            [
                {
                    "type": "value_error",
                    "loc": ("body", "patients", p.row, p.column),
                    "msg": p.reason,
                }
                for p in batch.problems[:MAX_LISTED_ERRORS]
            ]
        )
    if answer == "json":
        payload, n_positive = service.predict_rows(batch.x)
        return payload, JSON, batch.x, n_positive
    scores = score_batch(service.predictor, batch)
    n_positive = int(scores.prediction.sum())
    return serialize(scores_batch(scores), answer), FORMATS_MEDIA[answer], batch.x, n_positive


def _logged_without_values(exc: Exception) -> HTTPException:
    """A 500 for an error nobody foresaw, logged by type and place only.

    Left to propagate, the server would log its traceback, and the message of an
    exception raised while reading a table (pyarrow's among them) may quote a
    cell: a patient's value in the log. The type and the line where it was
    raised are enough to find the bug.
    """
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    logger.error(
        "table scoring failed",
        extra={
            "error": type(exc).__name__,
            "at": f"{Path(frame.filename).name}:{frame.lineno}" if frame else "?",
        },
    )
    return HTTPException(500, detail="Internal server error.")


def _media_type(header: str | None) -> str:
    return (header or "").split(";", 1)[0].strip().lower()


def _negotiate(accept: str | None, *, default: str) -> Literal["csv", "arrow", "json"]:
    """The format ``Accept`` prefers among those we write, else 406.

    Each format takes the q of the most specific range that names it (RFC
    9110 12.5.1): ``text/csv;q=0, */*`` refuses CSV however broad the wildcard
    after it, and ``*/*`` read alone (as it once was, by the first range of the
    highest q) answered CSV to exactly that header. The highest q above 0 wins;
    a tie goes to the range listed first, then to what that range prefers
    (:func:`_range_formats`). When every format a range names is refused with
    q=0, or none is named, the 406 says so.

    A media range whose q is not a qvalue of RFC 9110 12.4.2 (0 to 1, at most
    three decimals: ``q=nan``, ``q=inf``, ``q=-1``, ``q=2``, ``q=abc``) is
    ignored, as a non-numeric q always was: Python's ``float`` read ``nan`` and
    ``inf``, which sorted first, so ``text/csv;q=nan, application/json;q=0.5``
    was answered in CSV. Ignoring the range rather than the whole header (or
    the parameter alone, which would make it q=1) keeps the client's valid
    choices; when nothing valid is left, the 406 says which q was refused.
    ``Q=`` counts as ``q=``: parameter names are case-insensitive (RFC 9110 5.6.6).
    """
    if not accept:
        return FORMATS[default]
    # Per format: (specificity, q, position, rank) of the range that decides its q.
    decided: dict[Literal["csv", "arrow", "json"], tuple[int, float, int, int]] = {}
    invalid: list[str] = []
    for position, (media, quality, element) in enumerate(qvalues.elements(accept)):
        if quality is None:
            invalid.append(element)
            continue
        specificity = 2 if media in FORMATS else 0 if media == "*/*" else 1
        for rank, fmt in enumerate(_range_formats(media, default)):
            if fmt not in decided or specificity > decided[fmt][0]:
                decided[fmt] = (specificity, quality, position, rank)
    acceptable = [
        (-q, position, rank, fmt) for fmt, (_, q, position, rank) in decided.items() if q > 0
    ]
    if acceptable:
        return min(acceptable)[3]
    writes = f"{CSV}, {ARROW} or {JSON}"
    refused = [media for media, fmt in FORMATS.items() if fmt in decided]
    if len(refused) == len(FORMATS):
        reason = f"Accept refuses (q=0) every format this endpoint writes: {writes}"
    elif refused:
        reason = f"this endpoint writes {writes}, and Accept refuses {' and '.join(refused)} (q=0)"
        reason += " and names none of the others"
    else:
        reason = f"this endpoint writes {writes}"
    ignored = (
        f" (Accept's {invalid[0][:40]!r} was ignored: its q must be a number from 0 to 1 "
        "with at most 3 decimals)"
        if invalid
        else ""
    )
    raise HTTPException(406, detail=f"Not acceptable: {reason}{ignored}.")


_JSON_FIRST: Final[tuple[Literal["csv", "arrow", "json"], ...]] = ("json", "csv", "arrow")


def _range_formats(media: str, default: str) -> tuple[Literal["csv", "arrow", "json"], ...]:
    """The formats a media range names, the one to answer first when it wins.

    ``*/*`` prefers the request's own format, then JSON, then the other one;
    ``application/*`` JSON (Arrow for an Arrow request): a client that refuses
    its own upload's format may have no reader for a third, and every client
    reads JSON.
    """
    if media in FORMATS:
        return (FORMATS[media],)
    if media == "text/*":
        return ("csv",)
    if media == "application/*":
        return ("arrow", "json") if default == ARROW else ("json", "arrow")
    if media == "*/*":
        own = FORMATS[default]
        return (own, *(fmt for fmt in _JSON_FIRST if fmt != own))
    return ()
