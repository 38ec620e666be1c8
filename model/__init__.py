"""The heart-disease model: feature definitions, the NumPy network, inference and artifacts.

``NumpyMLPClassifier`` is imported lazily: the service only needs the
predictor and the artifact loader, and should not pay for importing
scikit-learn's estimator machinery at start-up.
"""

from typing import TYPE_CHECKING, Any

from model.artifact import ArtifactError, load_artifact, save_artifact
from model.features import FEATURE_NAMES, FEATURES, Feature
from model.predictor import Predictor

if TYPE_CHECKING:
    from model.network import NumpyMLPClassifier

__all__ = [
    "FEATURES",
    "FEATURE_NAMES",
    "ArtifactError",
    "Feature",
    "NumpyMLPClassifier",
    "Predictor",
    "load_artifact",
    "save_artifact",
]


def __getattr__(name: str) -> Any:
    if name == "NumpyMLPClassifier":
        from model.network import NumpyMLPClassifier

        return NumpyMLPClassifier
    raise AttributeError(f"module 'model' has no attribute {name!r}")
