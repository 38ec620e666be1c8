"""The prediction core of the service: turn validated input into response bytes, fast.

Kept free of FastAPI so the hot path is plain functions over NumPy arrays:
one patient or a thousand go through the same ``Predictor.probability`` call.
Responses are assembled from byte templates prepared at start-up (everything
but the probability is constant for a given model), which is what lets a
1000-row batch answer without building 1000 response objects.
"""

from __future__ import annotations

import json
import math
from itertools import chain
from typing import Any, Final, TypeVar

import numpy as np
from pydantic import BaseModel, ValidationError
from pydantic_core import to_json

from app.schemas import (
    PATIENT_EXAMPLE,
    Architecture,
    BatchExplainedPrediction,
    BatchRequest,
    ExplainedPrediction,
    FeatureContribution,
    MetricSummary,
    ModelCard,
    PatientFeatures,
    RiskInterval,
    TrainingMetrics,
    batch_request_model,
    batch_types_model,
    explain_batch_request_model,
    feature_cards,
)
from app.settings import Settings, StartupError
from model.arrays import FloatArray
from model.artifact import RETRAIN_HINT, ArtifactError, load_artifact
from model.explain import explain
from model.features import (
    CLASS_LABELS,
    FEATURE_BY_NAME,
    FEATURE_NAMES,
    MINIMUMS,
    N_FEATURES,
    NOT_MEASURED,
    all_in_domain,
    not_measured_hint,
)
from model.predictor import Predictor
from scoring.core import risk_interval

ModelT = TypeVar("ModelT", bound=BaseModel)

_PROBABILITY_KEY: Final[bytes] = b'{"probability":'
#: A valid patient object whose values are all numbers has exactly two quotes per key.
_QUOTES_PER_PATIENT: Final[int] = 2 * N_FEATURES
_INT_FROM_FLOAT_MSG: Final[str] = (
    "Input should be a valid integer, got a number with a fractional part"
)
#: Pydantic's own message for NaN or Infinity in a float field.
_FINITE_MSG: Final[str] = "Input should be a finite number"


class InvalidBodyError(Exception):
    """The request body failed validation; ``errors`` are in FastAPI's error format."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(errors)} validation error(s)")
        self.errors = errors


class PredictionService:
    """A loaded model plus everything derived from it once: templates, model card, validator."""

    def __init__(self, predictor: Predictor, *, max_batch_size: int = 1000) -> None:
        self.predictor = predictor
        self.threshold = float(predictor.threshold)
        self.model_version = predictor.model_version
        self.max_batch_size = max_batch_size
        self._batch_model = batch_request_model(max_batch_size)
        self._batch_types = batch_types_model(max_batch_size)
        self._explain_batch_model = explain_batch_request_model(max_batch_size)
        # Everything after the probability, per class: constant for a complete record.
        self._tail_cache: dict[tuple[int, tuple[str, ...]], bytes] = {}
        self._tails: tuple[bytes, bytes] = (self._tail(0, ()), self._tail(1, ()))
        self._ensemble = predictor.ensemble
        # The end of the interval object (constant for this model).
        coverage = predictor.ensemble.coverage if predictor.ensemble is not None else 0.0
        self._coverage = b',"coverage":%r}' % coverage
        self.model_card = build_model_card(predictor)
        self.model_card_json: bytes = self.model_card.model_dump_json().encode()

    def _tail(self, cls: int, missing: tuple[str, ...]) -> bytes:
        """The response after the probability, for class ``cls`` and these missing features.

        Cached: there are at most 2 x 2^10 of them, and a clinic sends a handful.
        """
        key = (cls, missing)
        cached = self._tail_cache.get(key)
        if cached is not None:
            return cached
        rest = {
            "prediction": cls,
            "label": CLASS_LABELS[cls],
            "threshold": self.threshold,
            "model_version": self.model_version,
            "missing_features": list(missing),
        }
        tail = ("," + json.dumps(rest, separators=(",", ":"))[1:]).encode()
        self._tail_cache[key] = tail
        return tail

    def _tail_of(self, cls: int, row: FloatArray) -> bytes:
        """:meth:`_tail` for this row's gaps (none: the precomputed complete tail)."""
        missing = missing_names(row)
        return self._tail(cls, missing) if missing else self._tails[cls]

    # -- single patient -------------------------------------------------------------------

    def parse_one(self, body: bytes) -> FloatArray:
        """Validate a ``PatientFeatures`` JSON body straight from bytes into a row of 13.

        ``model_validate_json`` parses and validates in one Rust pass; FastAPI's
        own body handling (``json.loads``, then validation of the Python objects)
        costs markedly more per request (bench/PROFILE.md, framework costs).
        """
        try:
            patient = PatientFeatures.model_validate_json(body)
        except ValidationError as exc:
            patient = validate_slowly(PatientFeatures, body, exc)
        else:
            if body.count(b'"') != _QUOTES_PER_PATIENT:
                refuse_duplicate_keys(body)
        return np.fromiter(patient.__dict__.values(), np.float64, N_FEATURES)

    def predict_one(self, row: FloatArray) -> tuple[bytes, int]:
        """JSON body of the prediction for one row, and the predicted class (1: positive)."""
        if self._ensemble is None:
            probability = self.predictor.probability_one(row)
            prediction = int(probability >= self.threshold)
            body = b"%s%r%s" % (_PROBABILITY_KEY, probability, self._tail_of(prediction, row))
            return body, prediction
        probability, lo, hi, complete = self.predictor.risk_one(row)
        prediction = int(probability >= self.threshold)
        tail = self._tails[prediction] if complete else self._tail_of(prediction, row)
        body = b'%s%r,"risk_interval":{"lower":%r,"upper":%r%s%s' % (
            _PROBABILITY_KEY,
            probability,
            lo,
            hi,
            self._coverage,
            tail,
        )
        return body, prediction

    def explain_one(self, row: FloatArray) -> tuple[bytes, int]:
        """JSON body of ``ExplainedPrediction`` for one row, and its class.

        Rare and hundreds of times dearer than /predict (8,192 coalitions), so
        it is built through the Pydantic model: clarity over microseconds.
        """
        answer = self._explained(row)
        return answer.model_dump_json().encode(), answer.prediction

    def explain_rows(self, x: FloatArray) -> tuple[bytes, int]:
        """JSON body of ``BatchExplainedPrediction``, and how many rows are positive."""
        answers = [self._explained(row) for row in x]
        body = BatchExplainedPrediction(predictions=answers).model_dump_json().encode()
        return body, sum(a.prediction for a in answers)

    def _explained(self, row: FloatArray) -> ExplainedPrediction:
        explained = explain(self.predictor, row)
        interval = None
        if self._ensemble is None:
            probability = self.predictor.probability_one(row)
        else:
            probability, lo, hi, _ = self.predictor.risk_one(row)
            interval = RiskInterval(lower=lo, upper=hi, coverage=self._ensemble.coverage)
        positive = int(probability >= self.threshold)
        contributions = [
            FeatureContribution(
                feature=name,
                description=FEATURE_BY_NAME[name].description,
                value=None if np.isnan(value := float(row[FEATURE_NAMES.index(name)])) else value,
                value_meaning=FEATURE_BY_NAME[name].codes.get(int(value))
                if FEATURE_BY_NAME[name].codes and not np.isnan(value)
                else None,
                unit=FEATURE_BY_NAME[name].unit,
                contribution=contribution,
            )
            for name, contribution in explained.ranked()
        ]
        return ExplainedPrediction(
            probability=probability,
            prediction=positive,
            label=CLASS_LABELS[positive],
            threshold=self.threshold,
            model_version=self.model_version,
            missing_features=list(missing_names(row)),
            risk_interval=interval,
            base_value=explained.base_value,
            contributions=contributions,
        )

    # -- batch ------------------------------------------------------------------------------

    def parse_batch(self, body: bytes) -> FloatArray:
        """Validate a ``BatchRequest`` JSON body straight from bytes into an n x 13 matrix.

        Fast path: one Pydantic call checks JSON types and field names for the whole
        list in Rust, the matrix is filled without per-value Python work, and the
        ranges and codes are checked on the matrix in one vectorised pass. Any
        failure falls back to the full ``BatchRequest`` model (the same field
        definitions as ``/predict``), which reports the exact errors.
        """
        try:
            matrix = _matrix(self._batch_types.model_validate_json(body).patients)  # type: ignore[attr-defined]
        except ValidationError:
            matrix = None
        if matrix is None or not all_in_domain(_gaps_filled(matrix)):
            return _validated_batch(self._batch_model, body)
        return _keys_counted(body, matrix)

    def parse_explain_batch(self, body: bytes) -> FloatArray:
        """An ``ExplainBatchRequest`` body as an n x 13 matrix, through the full model:
        the explanations cost far more than any validation shortcut would save."""
        return _validated_batch(self._explain_batch_model, body)

    def predict_rows(self, x: FloatArray) -> tuple[bytes, int]:
        """JSON body of ``BatchPrediction`` for the rows of ``x``, and how many are positive.

        No rows (a table upload of only a header) is an empty list, as the
        table's CSV and Arrow answers are empty: the rendering below would pair
        one empty probability with no class.
        """
        if not len(x):
            return b'{"predictions":[]}', 0
        probabilities = self.predictor.probability(x)
        is_positive = probabilities >= self.threshold
        # pydantic-core renders the floats in Rust: shortest round-trip form, valid JSON.
        rendered = to_json(probabilities.tolist())[1:-1].split(b",")
        interval = risk_interval(self.predictor, x)
        if interval is not None:
            lower, upper = (to_json(v.tolist())[1:-1].split(b",") for v in interval)
            rendered = [
                b'%s,"risk_interval":{"lower":%s,"upper":%s%s' % (p, lo, hi, self._coverage)
                for p, lo, hi in zip(rendered, lower, upper, strict=True)
            ]
        tail0, tail1 = self._tails
        items = [
            p + (tail1 if c else tail0) for p, c in zip(rendered, is_positive.tolist(), strict=True)
        ]
        for i in np.flatnonzero(np.isnan(x).any(axis=1)).tolist():
            items[i] = rendered[i] + self._tail(int(is_positive[i]), missing_names(x[i]))
        body = b'{"predictions":[' + _PROBABILITY_KEY + (b"," + _PROBABILITY_KEY).join(items)
        return body + b"]}", int(is_positive.sum())

    # -- readiness ------------------------------------------------------------------------

    def self_test(self) -> str | None:
        """Predict the documented example patient; return why that failed, or None."""
        try:
            row = [float(PATIENT_EXAMPLE[name]) for name in FEATURE_NAMES]
            probability = self.predictor.probability_one(row)
        except Exception as exc:  # any failure means "not ready", reported, not raised
            return f"self-test prediction failed: {type(exc).__name__}: {exc}"
        if not (math.isfinite(probability) and 0.0 <= probability <= 1.0):
            return f"self-test prediction returned {probability!r}, not a probability"
        return None


def load_service(settings: Settings) -> PredictionService:
    """Load the artifact and derive the service from it, or raise :class:`StartupError`.

    Shared by the lifespan and ``heart-api check``/``serve``, which call it before
    uvicorn starts so a bad artifact ends the command with one line.
    """
    try:
        predictor = load_artifact(settings.model_path, expected_sha256=settings.model_sha256)
        return PredictionService(predictor, max_batch_size=settings.max_batch_size)
    except ArtifactError as exc:
        raise StartupError(str(exc)) from None
    except ValidationError as exc:
        raise StartupError(
            f"model artifact at {settings.model_path} has metadata this service cannot "
            f"read ({exc.error_count()} problem(s), first: {exc.errors()[0]['msg']} at "
            f"{'.'.join(map(str, exc.errors()[0]['loc']))}): {RETRAIN_HINT}"
        ) from None


def _gaps_filled(matrix: FloatArray) -> FloatArray:
    """The matrix for the range check: a null (NaN) is fine where the types model allowed it.

    ``batch_types_model`` accepts null only for features that may be missing, so
    every NaN here is legitimate; each is replaced by the feature's minimum, which
    is always inside its domain, so ``all_in_domain`` judges the real values only.
    """
    gaps = np.isnan(matrix)
    return np.where(gaps, MINIMUMS, matrix) if gaps.any() else matrix


def _validated_batch(model: type[BatchRequest], body: bytes) -> FloatArray:
    """A batch body through the full Pydantic ``model``: its errors are /predict's."""
    try:
        matrix = _matrix(model.model_validate_json(body).patients)
    except ValidationError as exc:
        # The slow validation has refused duplicate keys itself.
        return _matrix(validate_slowly(model, body, exc).patients)
    return _keys_counted(body, matrix)


def _keys_counted(body: bytes, matrix: FloatArray) -> FloatArray:
    """``matrix``, once the body's quotes show no key given twice (else a 422 naming it)."""
    if body.count(b'"') != 2 + _QUOTES_PER_PATIENT * len(matrix):
        refuse_duplicate_keys(body)
    return matrix


def missing_names(row: FloatArray) -> tuple[str, ...]:
    """The features a row lacks (NaN: sent as null), in feature order."""
    return tuple(name for name, v in zip(FEATURE_NAMES, row.tolist(), strict=True) if v != v)


def _explain(error: dict[str, Any]) -> dict[str, Any]:
    """Say what null means where Pydantic's message cannot: per feature, from model.features."""
    loc = error["loc"]
    feature = FEATURE_BY_NAME.get(loc[-1]) if loc and isinstance(loc[-1], str) else None
    if feature is None:
        return error
    kind = error["type"]
    if kind == "missing":
        hint = NOT_MEASURED if feature.may_be_missing else "it may not be null"
        return {**error, "msg": f"Field required; {hint}"}
    if "input" in error and error["input"] is None:  # null where it may not be missing
        return {**error, "msg": f"{error['msg']}: {feature.name} may not be null (required)"}
    if kind == "greater_than_equal" and error.get("input") == 0 and feature.may_be_missing:
        return {**error, "msg": f"{error['msg']}; 0 is not a measurement: {NOT_MEASURED}"}
    if kind in ("int_type", "float_type") and _is_marker(error.get("input")):
        # "?", "NA", "" or "-": an export's "not measured", which JSON says with null.
        return {**error, "msg": f"{error['msg']}; {not_measured_hint(feature)}"}
    return error


#: Longest text read as an export's "not measured" marker (``N/A``, ``missing``).
_MARKER_CHARS: Final[int] = 16


def _is_marker(value: Any) -> bool:
    """Short text without a digit: how exports write "not measured" (``?``, ``NA``,
    ``-``, ``""``). Text with a digit is a measurement in another form (``"54"``,
    ``"1,5"``, ``"130 mmHg"``), and telling its sender about null would name the wrong
    mistake; long text is neither, and is not looked at further."""
    return (
        isinstance(value, str)
        and len(value) <= _MARKER_CHARS
        and not any(c.isdigit() for c in value)
    )


def _matrix(patients: list[Any]) -> FloatArray:
    """Validated patient models -> n x 13 float matrix (field order is feature order)."""
    values = chain.from_iterable([p.__dict__.values() for p in patients])
    return np.fromiter(values, np.float64, len(patients) * N_FEATURES).reshape(
        len(patients), N_FEATURES
    )


# -- the slow path: duplicate keys and integral floats ---------------------------------------
#
# Both need the JSON as Python objects, which costs several times the validation
# itself, so the hot path never pays for them: a body that validated is only
# re-parsed when its quote count says it could hold a duplicate key (a valid
# patient object whose values are numbers has exactly two quotes per key), and
# integral floats are only looked for in a body that failed validation.


class _JSONObject(dict[str, Any]):
    """A JSON object that remembers which of its keys appeared more than once."""

    duplicates: list[str]


def _object_pairs(pairs: list[tuple[str, Any]]) -> _JSONObject:
    obj = _JSONObject()
    obj.duplicates = []
    for key, value in pairs:
        if key in obj and key not in obj.duplicates:
            obj.duplicates.append(key)
        obj[key] = value
    return obj


def _parse_with_duplicates(body: bytes) -> tuple[Any, list[dict[str, Any]]] | None:
    """The body as Python objects and one error per duplicated key; None if not JSON.

    Pydantic, like most JSON parsers, keeps the last of duplicated keys, so
    ``{"age": 500, ..., "age": 54}`` would be scored as 54 while a proxy, a log
    or a WAF may have judged the 500: such a body is refused, naming the key.
    Every object is looked at, however deep (the Open Inference Protocol's
    inputs sit two levels down), in document order.
    """
    try:
        doc = json.loads(body, object_pairs_hook=_object_pairs)
    except (ValueError, RecursionError):
        return None
    errors: list[dict[str, Any]] = []
    # An explicit stack: json.loads takes nesting deeper than Python's recursion limit allows.
    stack: list[tuple[Any, tuple[str | int, ...]]] = []
    if isinstance(doc, (dict, list)):
        stack.append((doc, ("body",)))
    while stack:
        obj, loc = stack.pop()
        if isinstance(obj, _JSONObject):
            errors.extend(
                {
                    "type": "duplicate_key",
                    "loc": (*loc, key),
                    "msg": f"Duplicate key {key!r}: send each field once",
                    "input": None,
                }
                for key in obj.duplicates
            )
        items = obj.items() if isinstance(obj, dict) else enumerate(obj)
        stack.extend(reversed([(v, (*loc, k)) for k, v in items if isinstance(v, (dict, list))]))
    return doc, errors


def refuse_duplicate_keys(body: bytes) -> None:
    """Raise :class:`InvalidBodyError` naming each duplicated key of ``body``."""
    parsed = _parse_with_duplicates(body)
    if parsed is not None and parsed[1]:
        raise InvalidBodyError(parsed[1])


def _integral_floats_as_ints(doc: Any, exc: ValidationError) -> bool:
    """Turn the integral floats that failed an integer field into ints, in place.

    ``"sex": 1.0`` is an integer to JSON Schema (and what ``json.dumps`` of a
    float or a pandas column with a blank writes), so it is accepted; ``1.5``
    keeps its error. Returns whether anything changed.
    """
    changed = False
    for error in exc.errors(include_url=False):
        value = error.get("input")
        if error["type"] != "int_type" or not isinstance(value, float):
            continue
        if not (math.isfinite(value) and value.is_integer()):
            continue
        *path, last = error["loc"]
        container = doc
        for step in path:
            container = container[step]
        container[last] = int(value)
        changed = True
    return changed


#: UTF-8's byte order mark, which Notepad and PowerShell write at the start of a "UTF-8" file.
_BOM: Final[bytes] = b"\xef\xbb\xbf"


def validate_slowly(model: type[ModelT], body: bytes, exc: ValidationError) -> ModelT:
    """After ``exc`` from the fast path: refuse duplicate keys, accept integral floats,
    and read past a byte order mark.

    A file saved as UTF-8 by Notepad or PowerShell starts with a byte order mark, which
    JSON parsers refuse as "expected value at line 1 column 1" without naming it; RFC
    8259 (8.1) lets a parser ignore it, so a body sent with ``curl -d @file`` is read
    as the same JSON without one. Raises :class:`InvalidBodyError` with the errors a
    client should see.
    """
    if body.startswith(_BOM):
        body = body[len(_BOM) :]
        try:
            validated = model.model_validate_json(body)
        except ValidationError as again:
            exc = again
        else:
            refuse_duplicate_keys(body)
            return validated
    parsed = _parse_with_duplicates(body)
    if parsed is None:
        raise InvalidBodyError(request_errors(exc)) from None
    doc, duplicates = parsed
    if duplicates:
        raise InvalidBodyError(duplicates) from None
    if not _integral_floats_as_ints(doc, exc):
        raise InvalidBodyError(request_errors(exc)) from None
    try:
        return model.model_validate(doc)
    except ValidationError as again:
        raise InvalidBodyError(request_errors(again)) from None


def request_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """Pydantic errors of a body validated from raw JSON, as FastAPI reports body errors.

    Locations get the ``body`` prefix; invalid JSON gets FastAPI's ``json_invalid``
    shape; and the list of patients is not echoed back in its own errors.
    """
    errors: list[dict[str, Any]] = []
    for error in exc.errors(include_url=False):
        item: dict[str, Any] = dict(error)
        item["loc"] = ("body", *error["loc"])
        if error["type"] == "json_invalid":
            item = {
                "type": "json_invalid",
                "loc": ("body",),
                "msg": "JSON decode error",
                "input": {},
                "ctx": {"error": error.get("ctx", {}).get("error", error["msg"])},
            }
        elif error["loc"] == ("patients",) and isinstance(error.get("input"), list):
            item["input"] = None  # a too long or malformed list of patients
        elif error["type"] == "int_type" and isinstance(error.get("input"), float):
            # Integral floats were accepted before this point: say what is wrong. NaN and
            # Infinity (which Pydantic's JSON parser reads) have no fractional part to speak
            # of: a coded field says of them what a continuous one does.
            if math.isfinite(error["input"]):
                item["type"], item["msg"] = "int_from_float", _INT_FROM_FLOAT_MSG
            else:
                item["type"], item["msg"] = "finite_number", _FINITE_MSG
        errors.append(_explain(item))
    return errors


def build_model_card(predictor: Predictor) -> ModelCard:
    """The ``/model`` document: the artifact's metadata, checked against the schema."""
    meta = dict(predictor.metadata)
    metrics = meta.get("metrics") or {}
    return ModelCard(
        model_version=predictor.model_version,
        created_at=str(meta.get("created_at", "")),
        format_version=int(meta.get("format_version", 0)),
        architecture=Architecture(
            n_features=N_FEATURES,
            n_hidden=predictor.n_hidden,
            layers=f"{N_FEATURES} inputs -> {predictor.n_hidden} ReLU -> 1 sigmoid",
        ),
        threshold=predictor.threshold,
        threshold_strategy=meta.get("threshold_strategy"),
        hyperparameters=_plain(meta.get("hyperparameters") or {}),
        features=feature_cards(),
        data_sha256=str(meta.get("data_sha256", "")),
        library_versions={str(k): str(v) for k, v in (meta.get("library_versions") or {}).items()},
        split=_plain(meta["split"]) if isinstance(meta.get("split"), dict) else None,
        metrics=_training_metrics(_plain(metrics)),
        sites=_plain(meta["sites"]) if isinstance(meta.get("sites"), dict) else None,
        recalibration=(
            _plain(meta["recalibration"]) if isinstance(meta.get("recalibration"), dict) else None
        ),
    )


def _training_metrics(metrics: dict[str, Any]) -> TrainingMetrics:
    """Split cross-validation entries into summaries ({mean, std}) and the protocol."""
    cv = metrics.get("cross_validation") or {}
    summaries = {
        str(k): MetricSummary(mean=v["mean"], std=v["std"])
        for k, v in cv.items()
        if isinstance(v, dict) and {"mean", "std"} <= v.keys()
    }
    protocol = cv.get("protocol")
    return TrainingMetrics(
        train=metrics.get("train"),
        test=metrics.get("test"),
        cross_validation=summaries,
        cross_validation_protocol=protocol if isinstance(protocol, dict) else None,
    )


def _plain(value: Any) -> Any:
    """NumPy scalars/arrays from the artifact as JSON-ready Python values."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
