"""Saving and loading the model artifact: one joblib file, validated on load.

Security: the artifact is a pickle (joblib). Loading a pickle runs code chosen
by whoever wrote the file, so only load artifacts from locations you trust
(the image's own, or a volume you control). We store only plain containers,
strings, numbers and NumPy arrays, and check every one of them on load, but
that check happens *after* unpickling and is no defence against a malicious
file.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import joblib
import numpy as np

from model.atomic import atomic_path
from model.features import FEATURE_NAMES, N_FEATURES
from model.predictor import Predictor
from model.uncertainty import ARRAY_NAMES, RiskEnsemble

FORMAT_VERSION: Final[int] = 1
REQUIRED_KEYS: Final[tuple[str, ...]] = (
    "format_version",
    "model_version",
    "created_at",
    "feature_names",
    "weights",
    "scaler",
    "threshold",
    "hyperparameters",
    "metrics",
    "data_sha256",
    "library_versions",
)
#: Arrays of the payload that are not metadata (the model card leaves them out).
ARRAY_KEYS: Final[tuple[str, ...]] = ("weights", "scaler", "background", "ensemble")
#: Names commands that work outside an activated virtualenv (bare `python` is the system's).
RETRAIN_HINT: Final[str] = (
    "run `heart-train` (in a checkout: `.venv/bin/python -m training`, or `make train`) "
    "to train and write a fresh artifact"
)


class ArtifactError(Exception):
    """The artifact is missing, unreadable or does not match this code."""


def save_artifact(payload: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``payload`` atomically (:func:`model.atomic.atomic_path`), readable by the service.

    A crash or Ctrl-C mid-write leaves the previous artifact (or nothing), never
    half a file.
    """
    target = Path(path)
    _check_payload(dict(payload), target)  # never write what we could not load back
    with atomic_path(target) as tmp:
        joblib.dump(dict(payload), tmp, compress=3)
    return target


def sha256_of(data: bytes) -> str:
    """The content hash operators pin with ``HEART_MODEL_SHA256``."""
    return hashlib.sha256(data).hexdigest()


def read_artifact_bytes(path: str | os.PathLike[str]) -> bytes:
    """The artifact file's bytes, or an :class:`ArtifactError` that says what is wrong.

    Each cause gets its own message: retraining fixes none of "it is a
    directory" or "permission denied", so only a damaged file is told to.
    """
    source = Path(path)
    try:
        return source.read_bytes()
    except FileNotFoundError:
        parent = source.parent
        where = "" if parent.is_dir() else f" (the directory {parent} does not exist either)"
        raise ArtifactError(
            f"model artifact not found at {source}{where}: {RETRAIN_HINT}"
        ) from None
    except IsADirectoryError:
        raise ArtifactError(
            f"model artifact path {source} is a directory, not a file: point "
            "HEART_MODEL_PATH (--model-path) at the .joblib file itself"
        ) from None
    except PermissionError:
        raise ArtifactError(
            f"model artifact at {source} cannot be read: permission denied for user id "
            f"{os.getuid()}; make the file readable by the service's user (e.g. chmod 644)"
        ) from None
    except OSError as exc:
        raise ArtifactError(
            f"model artifact at {source} cannot be read: {exc.strerror or exc}"
        ) from None


def read_payload(
    path: str | os.PathLike[str], *, expected_sha256: str | None = None
) -> dict[str, Any]:
    """Unpickle and validate the artifact's contents, without building a predictor.

    With ``expected_sha256`` (``HEART_MODEL_SHA256``) a file whose bytes hash
    differently is refused *before* it is unpickled: the hash is taken of the
    very bytes that are then loaded, so the file cannot change in between.
    """
    source = Path(path)
    data = read_artifact_bytes(source)
    if expected_sha256 is not None:
        actual = sha256_of(data)
        if actual != expected_sha256.lower():
            raise ArtifactError(
                f"model artifact at {source} has SHA-256 {actual}, not the pinned "
                f"{expected_sha256.lower()} (HEART_MODEL_SHA256): refusing to unpickle it; "
                "deploy the artifact you pinned, or pin this one if you trust it"
            )
    if not data:
        raise ArtifactError(f"model artifact at {source} is an empty file: {RETRAIN_HINT}")
    try:
        payload = joblib.load(io.BytesIO(data))
    except Exception as exc:  # joblib/pickle raise many types for a damaged file
        raise ArtifactError(
            f"model artifact at {source} is unreadable: not a complete joblib file "
            f"(truncated or corrupt: {type(exc).__name__}: {exc}): {RETRAIN_HINT}"
        ) from exc
    if not isinstance(payload, dict):
        raise ArtifactError(
            f"model artifact at {source} holds a {type(payload).__name__}, not a model: "
            f"{RETRAIN_HINT}"
        )
    _check_payload(payload, source)
    return payload


def load_artifact(path: str | os.PathLike[str], *, expected_sha256: str | None = None) -> Predictor:
    """Load, validate and return the ready predictor (raises :class:`ArtifactError`)."""
    payload = read_payload(path, expected_sha256=expected_sha256)
    weights, scaler = payload["weights"], payload["scaler"]
    metadata = {k: v for k, v in payload.items() if k not in ARRAY_KEYS}
    recalibration = payload.get("recalibration") or {}
    background = payload.get("background")
    intercept = float(recalibration.get("intercept", 0.0))
    slope = float(recalibration.get("slope", 1.0))
    ensemble = None
    if payload.get("ensemble") is not None and background is not None:
        ensemble = RiskEnsemble.from_arrays(
            payload["ensemble"],
            np.asarray(background, dtype=np.float64),
            coverage=float(payload["ensemble"]["coverage"]),
            calibration_intercept=intercept,
            calibration_slope=slope,
        )
    return Predictor.from_network(
        coefs=(weights["W1"], weights["W2"]),
        intercepts=(weights["b1"], weights["b2"]),
        mean=scaler["mean"],
        scale=scaler["scale"],
        threshold=float(payload["threshold"]),
        model_version=str(payload["model_version"]),
        metadata=metadata,
        background=None if background is None else np.asarray(background, dtype=np.float64),
        calibration_intercept=intercept,
        calibration_slope=slope,
        ensemble=ensemble,
    )


def _check_payload(payload: dict[str, Any], source: Path) -> None:
    def fail(why: str) -> ArtifactError:
        return ArtifactError(f"model artifact at {source} is invalid: {why}; {RETRAIN_HINT}")

    missing = [k for k in REQUIRED_KEYS if k not in payload]
    if missing:
        raise fail(f"missing keys {missing}")
    if payload["format_version"] != FORMAT_VERSION:
        raise fail(
            f"format version {payload['format_version']!r} is not the supported {FORMAT_VERSION}"
        )
    if list(payload["feature_names"]) != list(FEATURE_NAMES):
        raise fail(
            f"its features {list(payload['feature_names'])} differ from this code's "
            f"{list(FEATURE_NAMES)}"
        )
    weights, scaler = payload["weights"], payload["scaler"]
    if not isinstance(weights, dict) or not isinstance(scaler, dict):
        raise fail("weights and scaler must be mappings of arrays")
    arrays: dict[str, Any] = {}
    for group, keys in ((weights, ("W1", "b1", "W2", "b2")), (scaler, ("mean", "scale"))):
        for key in keys:
            if key not in group:
                raise fail(f"array {key!r} is missing")
            try:
                value = np.asarray(group[key], dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise fail(f"array {key!r} is not numeric") from exc
            if not np.all(np.isfinite(value)):
                raise fail(f"array {key!r} has NaN or infinite values")
            arrays[key] = value
    w1 = arrays["W1"]
    if w1.ndim != 2 or w1.shape[0] != N_FEATURES or w1.shape[1] < 1:
        raise fail(f"W1 has shape {w1.shape}, expected ({N_FEATURES}, hidden)")
    hidden = w1.shape[1]
    expected = {
        "b1": (hidden,),
        "W2": (hidden, 1),
        "b2": (1,),
        "mean": (N_FEATURES,),
        "scale": (N_FEATURES,),
    }
    for key, shape in expected.items():
        if arrays[key].shape != shape:
            raise fail(f"{key} has shape {arrays[key].shape}, expected {shape}")
    if np.any(arrays["scale"] <= 0):
        raise fail("scaler scale must be positive")
    background = payload.get("background")
    if background is not None:
        bg = np.asarray(background, dtype=np.float64)
        if bg.ndim != 2 or bg.shape[1] != N_FEATURES or bg.shape[0] < 1:
            raise fail(f"background has shape {bg.shape}, expected (K, {N_FEATURES})")
        if not np.all(np.isfinite(bg)):
            raise fail("background rows must be complete and finite")
    ensemble = payload.get("ensemble")
    if ensemble is not None:
        why = _ensemble_problem(ensemble, background is not None)
        if why is not None:
            raise fail(why)
    recalibration = payload.get("recalibration")
    if recalibration is not None and not (
        isinstance(recalibration, dict)
        and all(
            isinstance(recalibration.get(k), int | float) and np.isfinite(recalibration[k])
            for k in ("intercept", "slope")
        )
    ):
        raise fail("recalibration must hold a finite intercept and slope")
    threshold = payload["threshold"]
    if not isinstance(threshold, int | float) or not 0.0 < float(threshold) < 1.0:
        raise fail(f"threshold {threshold!r} must be a number strictly between 0 and 1")
    if not isinstance(payload["model_version"], str) or not payload["model_version"]:
        raise fail("model_version must be a non-empty string")


def _ensemble_problem(ensemble: Any, has_background: bool) -> str | None:
    """Why the stored bootstrap ensemble is unusable, or ``None`` when it is fine.

    The members share one width, which need not be the point network's: the
    served network averages two seeds (``n_networks``, twice as wide) while each
    member stays one network, since the members' spread is the interval's subject.
    """
    if not isinstance(ensemble, dict) or not has_background:
        return "ensemble must be a mapping of arrays, stored with background rows"
    try:
        arrays = {k: np.asarray(ensemble[k], dtype=np.float64) for k in ARRAY_NAMES}
        coverage = float(ensemble["coverage"])
    except (KeyError, TypeError, ValueError) as exc:
        return f"ensemble is incomplete or not numeric ({type(exc).__name__}: {exc})"
    n = arrays["b2"].shape[0] if arrays["b2"].ndim else 0
    if arrays["W1"].ndim != 3 or arrays["W1"].shape[2] < 1:
        shape = arrays["W1"].shape
        return f"ensemble W1 has shape {shape}, expected (members, {N_FEATURES}, hidden)"
    hidden = arrays["W1"].shape[2]
    expected = {
        "W1": (n, N_FEATURES, hidden),
        "b1": (n, hidden),
        "W2": (n, hidden, 1),
        "b2": (n, 1),
        "mean": (n, N_FEATURES),
        "scale": (n, N_FEATURES),
    }
    for key, shape in expected.items():
        if arrays[key].shape != shape:
            return f"ensemble {key} has shape {arrays[key].shape}, expected {shape}"
        if not np.all(np.isfinite(arrays[key])):
            return f"ensemble {key} has NaN or infinite values"
    if n < 2 or np.any(arrays["scale"] <= 0) or not 0.0 < coverage < 1.0:
        return "ensemble needs two or more members, positive scales and 0 < coverage < 1"
    return None
