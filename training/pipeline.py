"""The training run: data -> split -> scaler + network -> evaluation -> artifact payload.

Kept free of argument parsing and file output so that tests, the comparison
command and the benchmark scripts all train exactly the model the CLI trains.
"""

from __future__ import annotations

import hashlib
import platform
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import numpy as np
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from model.artifact import FORMAT_VERSION
from model.features import FEATURE_NAMES
from model.network import NumpyMLPClassifier
from training.data import default_data_path, file_sha256, load_dataset, split
from training.evaluate import choose_threshold_by_cv, classification_metrics, cross_validate

ThresholdStrategy = Literal["fixed", "min-cost"]


@dataclass
class TrainingConfig:
    """Every choice of a training run; the defaults are the documented default model.

    The network defaults were chosen by ``python -m training.tune`` (grid search
    by cross-validation on the training split only): strong L2 decay matters far
    more than width or epochs on 216 patients.
    """

    hidden_units: int = 8
    learning_rate: float = 0.003
    epochs: int = 300
    batch_size: int | None = None
    optimizer: Literal["sgd", "adam"] = "adam"
    alpha: float = 10.0
    init: Literal["he", "glorot", "normal"] = "he"
    early_stopping: bool = False
    validation_fraction: float = 0.1
    seed: int = 0
    test_size: float = 0.2
    split_seed: int = 2
    threshold: float = 0.5
    threshold_strategy: ThresholdStrategy = "fixed"
    cv_folds: int = 10
    cv_repeats: int = 5
    cv_seed: int = 0
    data_path: Path = field(default_factory=default_data_path)
    accept_data_change: bool = False
    verbose: bool = False

    def network_params(self) -> dict[str, Any]:
        return {
            "hidden_units": self.hidden_units,
            "learning_rate": self.learning_rate,
            "max_iter": self.epochs,
            "batch_size": self.batch_size,
            "optimizer": self.optimizer,
            "alpha": self.alpha,
            "init": self.init,
            "early_stopping": self.early_stopping,
            "validation_fraction": self.validation_fraction,
            "random_state": self.seed,
        }


def make_pipeline(config: TrainingConfig, *, verbose: bool = False) -> Pipeline:
    """Scaler + network: the scaler is fitted on whatever data the pipeline is fitted on."""
    return Pipeline(
        [
            ("scaler", StandardScaler()),
            ("network", NumpyMLPClassifier(**config.network_params(), verbose=verbose)),
        ]
    )


@dataclass
class TrainingResult:
    payload: dict[str, Any]
    pipeline: Pipeline
    loss_curve: list[float]


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for dist in ("numpy", "scikit-learn", "joblib", "heart-risk"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "unknown"
    return versions


def train(config: TrainingConfig) -> TrainingResult:
    """Run the whole training protocol and build the artifact payload."""
    x, y = load_dataset(config.data_path, verify_checksum=not config.accept_data_change)
    x_train, x_test, y_train, y_test = split(x, y, config.test_size, config.split_seed)

    if config.threshold_strategy == "min-cost":
        threshold = choose_threshold_by_cv(make_pipeline(config), x_train, y_train)
    else:
        threshold = float(config.threshold)

    pipe = make_pipeline(config, verbose=config.verbose)
    pipe.fit(x_train, y_train)
    network: NumpyMLPClassifier = pipe.named_steps["network"]
    scaler: StandardScaler = pipe.named_steps["scaler"]
    network.verbose = False  # the progress display belongs to this one fit only

    metrics: dict[str, Any] = {
        "train": classification_metrics(y_train, pipe.predict_proba(x_train)[:, 1], threshold),
        "test": classification_metrics(y_test, pipe.predict_proba(x_test)[:, 1], threshold),
    }
    if config.cv_folds >= 2 and config.cv_repeats >= 1:
        metrics["cross_validation"] = cross_validate(
            lambda: make_pipeline(config),
            x,
            y,
            n_splits=config.cv_folds,
            n_repeats=config.cv_repeats,
            random_state=config.cv_seed,
        )

    w1, w2 = network.coefs_
    b1, b2 = network.intercepts_
    weights = {"W1": w1.copy(), "b1": b1.copy(), "W2": w2.copy(), "b2": b2.copy()}
    digest = hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in weights.values()))
    hyper = asdict(config)
    hyper.pop("verbose")
    # The file name only: the artifact is served (GET /model) and must not leak the
    # training machine's directory layout; data_sha256 identifies the data exactly.
    hyper["data_path"] = Path(config.data_path).name
    payload: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "model_version": f"mlp-{config.hidden_units}h-{digest.hexdigest()[:12]}",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "feature_names": list(FEATURE_NAMES),
        "weights": weights,
        "scaler": {"mean": scaler.mean_.copy(), "scale": scaler.scale_.copy()},
        "threshold": threshold,
        "threshold_strategy": config.threshold_strategy,
        "hyperparameters": hyper,
        "metrics": metrics,
        "data_sha256": file_sha256(config.data_path),
        "library_versions": library_versions(),
        "split": {
            "test_size": config.test_size,
            "random_state": config.split_seed,
            "stratified": True,
            "n_train": int(y_train.size),
            "n_test": int(y_test.size),
        },
        "loss_curve": [float(v) for v in network.loss_curve_],
        "n_iter": int(network.n_iter_),
    }
    return TrainingResult(payload, pipe, list(network.loss_curve_))
