"""The API's request and response models.

``PatientFeatures`` is generated from :data:`model.features.FEATURES`, so the
field names, descriptions, units, bounds, allowed codes and examples in the
OpenAPI document, the validation errors and the README all come from the one
definition the model was trained with.

Numbers are strict on purpose: ``"54"`` (a string), ``true`` and, for the
coded features, ``1.0`` are refused rather than coerced, because a client that
sends them has a bug we should report, not guess around. Continuous features
accept JSON integers and decimals; NaN and Infinity are refused.

Missing values: a feature that may be missing (``Feature.may_be_missing``)
accepts ``null``, meaning "not measured"; every field is still required, so an
omitted field is a 422 ("send null if it was not measured"): a forgotten field
and a test not done are different things, and only the client knows which.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    create_model,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

from model.features import CLASS_LABELS, FEATURES, Feature

__all__ = [
    "MAX_EXPLAIN_BATCH",
    "BatchExplainedPrediction",
    "BatchPrediction",
    "BatchRequest",
    "ErrorMessage",
    "ExplainedPrediction",
    "FeatureCard",
    "FeatureContribution",
    "HealthStatus",
    "MetricsReport",
    "ModelCard",
    "PatientFeatures",
    "Prediction",
    "ReadyStatus",
    "RecordedMetrics",
    "RiskInterval",
    "batch_request_model",
    "explain_batch_request_model",
]

PATIENT_EXAMPLE: Final[dict[str, float | int]] = {
    f.name: int(f.example) if f.codes else f.example for f in FEATURES
}


def _codes_text(feature: Feature) -> str:
    return ", ".join(f"{code} = {meaning}" for code, meaning in sorted(feature.codes.items()))


def _enum_names(feature: Feature) -> list[str]:
    """Identifiers for the codes, so generated clients say ``Thal.FIXED_DEFECT``, not ``VALUE_6``.

    (``x-enum-varnames`` is the OpenAPI extension openapi-python-client and other
    generators read.)
    """
    names = []
    for _, meaning in sorted(feature.codes.items()):
        name = re.sub(r"[^0-9a-zA-Z]+", "_", meaning).strip("_").upper()
        names.append(name if name[:1].isalpha() else f"V_{name}")
    return names


def component_name(feature: Feature) -> str:
    """``chest_pain_type`` -> ``ChestPainType``, the coded feature's schema in the components.

    Generated clients name their enums after it (not ``PatientFeaturesChest_pain_type``).
    """
    return "".join(part.capitalize() for part in feature.name.split("_"))


@dataclass(frozen=True, eq=False)  # hashed by identity: it goes into a Union (nullable)
class _CodedFeature:
    """Validation and named JSON schema of one coded feature.

    Validation is a strict integer within the codes' range, plus a membership
    check where the codes have gaps (``Feature.has_gaps``), raising Pydantic's own
    error types, so clients see the same errors as for any other field. The
    core schema carries a ``ref``, which is what makes Pydantic emit the
    feature as a named definition (``$defs``, then OpenAPI components).
    """

    feature: Feature

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        codes = sorted(self.feature.codes)
        name = component_name(self.feature)
        integer = core_schema.int_schema(strict=True, ge=codes[0], le=codes[-1])
        if not self.feature.has_gaps:
            return core_schema.int_schema(strict=True, ge=codes[0], le=codes[-1], ref=name)
        allowed = frozenset(codes)
        expected = ", ".join(str(c) for c in codes[:-1]) + f" or {codes[-1]}"

        def member(value: int) -> int:
            if value not in allowed:
                raise PydanticCustomError(
                    "enum", "Input should be {expected}", {"expected": expected}
                )
            return value

        return core_schema.no_info_after_validator_function(member, integer, ref=name)

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        reference = handler(schema)
        definition = handler.resolve_ref_schema(reference)
        definition.clear()
        definition.update(
            {
                "title": component_name(self.feature),
                "description": f"Codes of {self.feature.name}: {_codes_text(self.feature)}.",
                "type": "integer",
                "enum": sorted(self.feature.codes),
                "x-enum-varnames": _enum_names(self.feature),
                "x-codes": {str(c): m for c, m in sorted(self.feature.codes.items())},
                "x-kind": self.feature.kind,
            }
        )
        return reference


def _nullable(feature: Feature, annotation: Any) -> Any:
    """``annotation | None`` for a feature that may be missing: null means not measured."""
    return annotation | None if feature.may_be_missing else annotation


def _missing_text(feature: Feature) -> str:
    if feature.missing_because:
        return f" Null if not measured ({feature.missing_because})."
    return " Required: may not be null."


def _field_annotation(feature: Feature) -> Any:
    """The Annotated type of one feature: type, bounds, docs, example, all from ``feature``.

    A feature that may be missing is ``value | None``: the bounds stay on the value
    branch, the documentation (description, example, ``x-`` extensions) on the
    property itself, where readers and client generators look for it.
    """
    constraints: dict[str, Any] = {}
    markers: list[Any] = []
    if feature.codes:
        value_type: Any = int
        # Type, codes, enum names and membership live in the named component schema.
        markers.append(_CodedFeature(feature))
        docs: dict[str, Any] = {
            "description": f"{feature.description} Codes: {_codes_text(feature)}.",
            "examples": [int(feature.example)],
        }
    else:
        value_type = float
        constraints.update(strict=True, ge=feature.minimum, le=feature.maximum, allow_inf_nan=False)
        unit = f" Unit: {feature.unit}." if feature.unit else ""
        docs = {
            "description": f"{feature.description}{unit} Accepted: {feature.describe_domain()}.",
            "examples": [feature.example],
            "json_schema_extra": (
                {"x-unit": feature.unit, "x-kind": feature.kind}
                if feature.unit
                else {"x-kind": feature.kind}
            ),
        }
    docs["description"] += _missing_text(feature)
    if not feature.may_be_missing:
        return Annotated[(value_type, *markers, Field(**constraints, **docs))]
    value = Annotated[(value_type, *markers, Field(**constraints))]
    return Annotated[_nullable(feature, value), Field(**docs)]


_PATIENT_SCHEMA_EXTRA: Final[dict[str, Any]] = {"examples": [PATIENT_EXAMPLE]}
_PATIENT_CONFIG: Final = ConfigDict(
    extra="forbid", title="PatientFeatures", json_schema_extra=_PATIENT_SCHEMA_EXTRA
)

if TYPE_CHECKING:

    class PatientFeatures(BaseModel):
        """Static view for type checkers; the real class is generated below."""

        def __getattr__(self, name: str) -> float: ...

else:
    PatientFeatures = create_model(
        "PatientFeatures",
        __config__=_PATIENT_CONFIG,
        __doc__=(
            "The 13 clinical features of one patient (UCI heart-disease coding). "
            "Every field is required; a feature that may be missing takes null when it "
            "was not measured; unknown fields are refused."
        ),
        __module__=__name__,
        **{f.name: (_field_annotation(f), ...) for f in FEATURES},
    )


_BATCH_SCHEMA_EXTRA: Final[dict[str, Any]] = {
    "examples": [{"patients": [PATIENT_EXAMPLE, PATIENT_EXAMPLE]}]
}


class BatchRequest(BaseModel):
    """Several patients scored in one vectorised call, answered in the same order."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_BATCH_SCHEMA_EXTRA)

    patients: list[PatientFeatures] = Field(
        min_length=1, max_length=1000, description="The patients, at most 1000 by default."
    )


#: Most patients one ``/predict/explain/batch`` request may carry: each costs
#: milliseconds of CPU (8,192 coalitions), not the microseconds of /predict.
MAX_EXPLAIN_BATCH: Final[int] = 64


@lru_cache(maxsize=8)
def batch_request_model(max_batch_size: int) -> type[BatchRequest]:
    """``BatchRequest`` with the configured size limit (``HEART_MAX_BATCH_SIZE``).

    Built once per limit: creating a model compiles a validator, which is far
    too slow to do per request or per test.
    """
    if max_batch_size == 1000:
        return BatchRequest
    return _limited_batch("BatchRequest", max_batch_size, None)


@lru_cache(maxsize=8)
def explain_batch_request_model(max_batch_size: int) -> type[BatchRequest]:
    """The body of ``/predict/explain/batch``: a ``BatchRequest`` of at most
    :data:`MAX_EXPLAIN_BATCH` patients (or the batch limit, if lower)."""
    return _limited_batch(
        "ExplainBatchRequest",
        min(max_batch_size, MAX_EXPLAIN_BATCH),
        "Patients to explain, answered in the same order; fewer than a prediction batch, "
        "since each explanation costs milliseconds.",
    )


def _limited_batch(name: str, limit: int, doc: str | None) -> type[BatchRequest]:
    model = create_model(
        name,
        __base__=BatchRequest,
        __module__=__name__,
        patients=(
            list[PatientFeatures],
            Field(min_length=1, max_length=limit, description=f"The patients, at most {limit}."),
        ),
    )
    if doc is not None:
        model.__doc__ = doc
    return model


def _type_only_annotation(feature: Feature) -> Any:
    """The feature's JSON type, strict, without bounds: ranges are checked on the matrix."""
    if feature.codes:
        return _nullable(feature, Annotated[int, Field(strict=True)])
    return _nullable(feature, Annotated[float, Field(strict=True, allow_inf_nan=False)])


if TYPE_CHECKING:
    PatientTypes = PatientFeatures
else:
    PatientTypes = create_model(
        "PatientTypes",
        __config__=ConfigDict(extra="forbid"),
        __doc__="PatientFeatures' types without bounds: the batch fast path, never documented.",
        __module__=__name__,
        **{f.name: (_type_only_annotation(f), ...) for f in FEATURES},
    )


@lru_cache(maxsize=8)
def batch_types_model(max_batch_size: int) -> type[BaseModel]:
    """The batch body with types checked and bounds left to one vectorised pass.

    Pydantic's per-value ``ge``/``le`` and membership checks are a visible share
    of a 1000-patient batch (bench/PROFILE.md, "/predict/batch");
    ``model.features.all_in_domain`` does them on the whole matrix at once. A
    body that fails either is validated again with :func:`batch_request_model`,
    so its errors are exactly those of ``/predict``.
    """
    return create_model(
        "BatchTypes",
        __config__=ConfigDict(extra="forbid"),
        __module__=__name__,
        patients=(list[PatientTypes], Field(min_length=1, max_length=max_batch_size)),
    )


_LABELS: Final[list[str]] = [CLASS_LABELS[k] for k in sorted(CLASS_LABELS)]


def _enum(values: list[Any]) -> dict[str, Any]:
    """Document the allowed output values (responses are built by us, not validated)."""
    return {"enum": values}


class RiskInterval(BaseModel):
    """Band of the probability across a bootstrap ensemble (model/uncertainty.py)."""

    lower: float = Field(ge=0.0, le=1.0, description="Lower end of the band.")
    upper: float = Field(ge=0.0, le=1.0, description="Upper end of the band.")
    coverage: float = Field(
        gt=0.0,
        lt=1.0,
        description="Share of the ensemble's fitted log-odds distribution inside the band "
        "(0.9: mean +- 1.645 sd). It describes how much other training data of the same "
        "size could move the probability, not the patient's outcome.",
    )


#: The example answer of /predict, which /predict/explain's example extends.
_PREDICTION_EXAMPLE: Final[dict[str, Any]] = {
    "probability": 0.1379,
    "prediction": 0,
    "label": _LABELS[0],
    "threshold": 0.5,
    "model_version": "mlp-16h-0123456789ab",
    "missing_features": [],
}


class Prediction(BaseModel):
    """The model's answer for one patient."""

    model_config = ConfigDict(json_schema_extra={"examples": [_PREDICTION_EXAMPLE]})

    probability: float = Field(
        ge=0.0, le=1.0, description="Estimated probability of heart disease, 0 to 1."
    )
    prediction: int = Field(
        ge=0,
        le=1,
        description="1 when the probability reaches the threshold (disease), else 0.",
    )
    label: str = Field(description="The prediction in words.", json_schema_extra=_enum(_LABELS))
    threshold: float = Field(
        ge=0.0, le=1.0, description="Decision threshold chosen at training time."
    )
    model_version: str = Field(description="Version of the model that answered.")
    missing_features: list[str] = Field(
        description="Features sent as null (not measured): the probability is averaged over "
        "their training distribution. Empty when every value was given."
    )
    risk_interval: RiskInterval | None = Field(
        default=None,
        description="How much the training data could move the probability (null when the "
        "loaded model has no ensemble).",
    )


class FeatureContribution(BaseModel):
    """One feature's share in moving this patient's risk away from the base value."""

    feature: str = Field(description="Feature name, as in the request.")
    description: str = Field(description="What the feature means (model/features.py).")
    value: float | None = Field(description="The value sent; null if it was not measured.")
    value_meaning: str | None = Field(
        default=None, description="For coded features, what the code means; else null."
    )
    unit: str | None = Field(default=None, description="Unit of the value, if it has one.")
    contribution: float = Field(
        description="Exact Shapley value: change of the probability this feature accounts "
        "for (positive raises the risk). Exactly 0 for a feature that was not measured."
    )


class ExplainedPrediction(BaseModel):
    """The prediction with its interval and why: the contributions sum to probability - base."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                _PREDICTION_EXAMPLE
                | {
                    "probability": 0.4833,
                    "model_version": "mlp-16h-0123456789ab",
                    "risk_interval": {"lower": 0.31, "upper": 0.64, "coverage": 0.9},
                    "base_value": 0.5058,
                    "contributions": [
                        {
                            "feature": "chest_pain_type",
                            "description": "Type of chest pain experienced.",
                            "value": 4,
                            "value_meaning": "asymptomatic",
                            "unit": None,
                            "contribution": 0.1391,
                        }
                    ],
                }
            ]
        }
    )

    probability: float = Field(ge=0.0, le=1.0, description="As in /predict.")
    prediction: int = Field(ge=0, le=1, description="As in /predict.")
    label: str = Field(description="As in /predict.", json_schema_extra=_enum(_LABELS))
    threshold: float = Field(ge=0.0, le=1.0, description="As in /predict.")
    model_version: str = Field(description="As in /predict.")
    missing_features: list[str] = Field(description="As in /predict.")
    risk_interval: RiskInterval | None = Field(default=None, description="As in /predict.")
    base_value: float = Field(
        description="The model's answer with every feature averaged over the background rows "
        "(the starting point of the contributions)."
    )
    contributions: list[FeatureContribution] = Field(
        description="All 13 features, largest |contribution| first."
    )


class BatchExplainedPrediction(BaseModel):
    """One explained prediction per patient, in request order."""

    predictions: list[ExplainedPrediction]


class BatchPrediction(BaseModel):
    """One prediction per patient, in request order."""

    predictions: list[Prediction]


class ErrorMessage(BaseModel):
    """FastAPI's error shape for errors that concern the whole request."""

    detail: str = Field(description="What went wrong and how to fix it.")


class HealthStatus(BaseModel):
    status: Literal["ok"] = Field(description="Always `ok`: the process answers.")


class ReadyStatus(BaseModel):
    status: Literal["ready", "not ready"]
    model_version: str | None = Field(default=None, description="Loaded model, when ready.")
    reason: str | None = Field(default=None, description="Why the service is not ready.")


# ----- model card (/model) -------------------------------------------------------------


class FeatureCard(BaseModel):
    """One input feature as the model understands it."""

    name: str
    description: str
    unit: str | None
    kind: Literal["continuous", "binary", "ordinal", "nominal"]
    minimum: float
    maximum: float
    allowed_values: dict[str, str] | None = Field(
        description="For coded features: code -> meaning. Null for continuous ones."
    )
    example: float
    may_be_missing: bool = Field(description="Whether requests may send null (not measured).")
    missing_because: str | None = Field(
        description="Why real records lack it (null for features that may not be missing)."
    )


class EvaluationMetrics(BaseModel):
    """Classification quality on one data split, as recorded at training time."""

    model_config = ConfigDict(extra="allow")

    accuracy: float | None = None
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    roc_auc: float | None = None
    log_loss: float | None = None
    brier: float | None = None
    statlog_cost: float | None = Field(
        default=None, description="Mean misclassification cost with Statlog's cost matrix."
    )
    threshold: float | None = Field(default=None, description="Threshold these used.")
    n: int | None = Field(default=None, description="Number of patients evaluated.")
    confusion_matrix: list[list[int]] | None = Field(
        default=None,
        description="[[true negatives, false positives], [false negatives, true positives]].",
    )


class MetricSummary(BaseModel):
    mean: float
    std: float


class TrainingMetrics(BaseModel):
    """Evaluation recorded in the artifact by the training command."""

    train: EvaluationMetrics | None = None
    test: EvaluationMetrics | None = None
    cross_validation: dict[str, MetricSummary] = Field(
        default_factory=dict, description="Metric -> mean and std over the folds."
    )
    cross_validation_protocol: dict[str, Any] | None = Field(
        default=None, description="How the folds were made."
    )


class Architecture(BaseModel):
    n_features: int
    n_hidden: int
    layers: str = Field(description="The network, input to output.")


class ModelCard(BaseModel):
    """What the loaded model is, how it was trained and how well it did."""

    model_config = ConfigDict(protected_namespaces=())

    model_version: str
    created_at: str = Field(description="Training time, ISO-8601 UTC.")
    format_version: int
    architecture: Architecture
    threshold: float
    threshold_strategy: str | None = Field(
        default=None,
        description="How the threshold was chosen: 'fixed' (the training configuration's, 0.5 "
        "by default), 'min-cost' (lowest StatLog cost on out-of-fold predictions of the "
        "training data) or 'tuned-locally' (lowest StatLog cost on a hospital's own patients, "
        "`heart-train recalibrate --tune-threshold`; recalibration.threshold_origin names the "
        "file).",
    )
    hyperparameters: dict[str, Any]
    features: list[FeatureCard]
    data_sha256: str
    library_versions: dict[str, str]
    split: dict[str, Any] | None = None
    metrics: TrainingMetrics
    sites: dict[str, Any] | None = Field(
        default=None,
        description="Sites trained on, their data checksums and the calibration of this "
        "training recipe at each validation site (trained on the other sites, leave one out).",
    )
    recalibration: dict[str, Any] | None = Field(
        default=None,
        description="Local recalibration (heart-train recalibrate): intercept, slope, "
        "threshold, data checksum and figures before/after; null if none.",
    )


def feature_cards() -> list[FeatureCard]:
    return [
        FeatureCard(
            name=f.name,
            description=f.description,
            unit=f.unit,
            kind=f.kind,
            minimum=f.minimum,
            maximum=f.maximum,
            allowed_values=({str(c): m for c, m in sorted(f.codes.items())} if f.codes else None),
            example=f.example,
            may_be_missing=f.may_be_missing,
            missing_because=f.missing_because,
        )
        for f in FEATURES
    ]


# ----- /metrics --------------------------------------------------------------------------


class LatencySummary(BaseModel):
    """Latency percentiles estimated from the Prometheus histogram's buckets."""

    count: int
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None


class FeatureDrift(BaseModel):
    """How far the served inputs have moved from the training data, per feature."""

    feature: str
    training_mean: float
    training_std: float
    served_mean: float | None = Field(
        description=(
            "Mean over the most recent window of at least `drift_window_min_patients` "
            "patients (null until one is complete): never one patient's value."
        )
    )
    drift_std: float | None = Field(
        description=(
            "(served_mean - training_mean) / training_std: 0 means no drift; "
            "|value| > 1 deserves a look."
        )
    )


class ServingMetrics(BaseModel):
    """Live figures of the running service, summed over all worker processes."""

    uptime_seconds: float
    worker_processes: int
    requests_total: int
    requests_by_route: dict[str, int]
    predictions_total: int = Field(description="Patients scored (batch rows count).")
    positive_predictions: int
    positive_share: float | None = Field(description="Share of predictions that are 1.")
    errors_total: int
    errors_by_kind: dict[str, int]
    latency: dict[str, LatencySummary] = Field(description="Per route.")
    drift: list[FeatureDrift]
    drift_window_min_patients: int = Field(
        description=(
            "Fewest patients a published drift figure aggregates (HEART_DRIFT_MIN_PATIENTS)."
        )
    )


class RecordedMetrics(BaseModel):
    """The loaded model's quality as measured at training time."""

    test: EvaluationMetrics | None = Field(description="On the held-out test split.")
    cross_validation: dict[str, MetricSummary] = Field(
        description="Mean and standard deviation over the cross-validation folds."
    )
    cross_validation_protocol: dict[str, Any] | None = Field(
        default=None, description="How the folds were made."
    )


class MetricsReport(BaseModel):
    """Model quality (from training) and service behaviour (live)."""

    model_config = ConfigDict(protected_namespaces=())

    model_version: str
    training: RecordedMetrics
    serving: ServingMetrics
