"""The tutorial's Keras model as a small scikit-learn estimator, for the comparison only.

Wrapping it as an estimator lets it run through exactly the same split,
scaler ``Pipeline`` and cross-validation code as every other model, instead
of a parallel Keras-only evaluation that could drift.

Keras is an optional extra (``pip install '.[keras]'``) and is imported only
inside :func:`import_keras`, never at module import: the service and the
rest of the training code must work without it (a test checks that importing
``app`` and ``model`` never even tries to import it).

The backend is JAX unless ``KERAS_BACKEND`` says otherwise: it installs in
less space than TensorFlow and fits this model faster (measured in
docs/comparison.md, "Keras backend"). Keras 3 itself falls
back to TensorFlow when the variable is unset, which would fail with a bare
"No module named 'tensorflow'" on a JAX install, so we set it before import.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

DEFAULT_BACKEND: Final[str] = "jax"
INSTALL_HINT: Final[str] = "pip install '.[keras]'"
#: The Python module that has to be importable for each Keras 3 backend.
BACKEND_MODULES: Final[dict[str, str]] = {
    "jax": "jax",
    "tensorflow": "tensorflow",
    "torch": "torch",
    "numpy": "numpy",
}
#: Distributions whose versions belong next to a Keras result.
BACKEND_DISTRIBUTIONS: Final[dict[str, tuple[str, ...]]] = {
    "jax": ("jax", "jaxlib"),
    "tensorflow": ("tensorflow-cpu", "tensorflow"),
    "torch": ("torch",),
    "numpy": (),
}


@dataclass(frozen=True)
class KerasStatus:
    """Whether the Keras rows can run here, and if not, what the user should do."""

    available: bool
    backend: str
    message: str
    versions: dict[str, str]


def selected_backend() -> str:
    return os.environ.get("KERAS_BACKEND", DEFAULT_BACKEND)


def _installed_versions(backend: str) -> dict[str, str]:
    versions: dict[str, str] = {}
    for dist in ("keras", *BACKEND_DISTRIBUTIONS.get(backend, ())):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions


def keras_status() -> KerasStatus:
    """Check without importing anything heavy: ``find_spec`` only looks at the files."""
    backend = selected_backend()
    versions = _installed_versions(backend)
    if importlib.util.find_spec("keras") is None:
        return KerasStatus(False, backend, f"not installed: {INSTALL_HINT}", versions)
    module = BACKEND_MODULES.get(backend)
    if module is None:
        return KerasStatus(
            False,
            backend,
            f"KERAS_BACKEND={backend!r} is not a Keras 3 backend "
            f"(one of {', '.join(BACKEND_MODULES)})",
            versions,
        )
    if importlib.util.find_spec(module) is None:
        return KerasStatus(
            False,
            backend,
            f"not installed: keras is, but its {backend} backend is not: {INSTALL_HINT}",
            versions,
        )
    return KerasStatus(True, backend, "", versions)


def import_keras() -> Any:
    """Import Keras on the chosen backend (JAX by default); quiet TensorFlow's C++ logs."""
    os.environ.setdefault("KERAS_BACKEND", DEFAULT_BACKEND)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return importlib.import_module("keras")


class KerasTutorialClassifier(ClassifierMixin, BaseEstimator):
    """``Sequential([Dense(hidden_units, activation), Dense(1, sigmoid)])`` as in the tutorial.

    Parameters
    ----------
    hidden_units : int, default=8
        Width of the hidden ``Dense`` layer.
    hidden_activation : str or None, default=None
        ``None`` is the tutorial's model: no activation, so the two layers
        compose to one affine map and the model is a logistic regression with
        a redundant parametrisation. ``"relu"`` makes it a real hidden layer.
    learning_rate : float, default=0.001
        Adam's step size (the tutorial's ``Adam(0.001)``).
    epochs : int, default=100
        Passes over the training data.
    batch_size : int, default=32
        Keras' default, which the tutorial's ``fit`` call kept.
    random_state : int or None, default=None
        Passed to ``keras.utils.set_random_seed`` before building the model, so
        the same seed gives the same weights. Note that Keras seeds Python's
        and NumPy's global generators too: that is Keras' behaviour, and none of
        this project's code draws from those global generators.
    """

    def __init__(
        self,
        hidden_units: int = 8,
        hidden_activation: str | None = None,
        learning_rate: float = 0.001,
        epochs: int = 100,
        batch_size: int = 32,
        random_state: int | None = None,
    ) -> None:
        self.hidden_units = hidden_units
        self.hidden_activation = hidden_activation
        self.learning_rate = learning_rate
        self.epochs = epochs
        self.batch_size = batch_size
        self.random_state = random_state

    def fit(self, X: npt.ArrayLike, y: npt.ArrayLike) -> KerasTutorialClassifier:
        x, y_raw = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y_raw)
        self.classes_, y_idx = np.unique(y_raw, return_inverse=True)
        if len(self.classes_) != 2:
            raise ValueError(f"binary classification only, got classes {self.classes_.tolist()}")
        keras = import_keras()
        keras.backend.clear_session()  # no graph state left over from the previous fit
        if self.random_state is not None:
            keras.utils.set_random_seed(int(self.random_state))
        model = keras.Sequential(
            [
                keras.Input(shape=(x.shape[1],)),
                keras.layers.Dense(int(self.hidden_units), activation=self.hidden_activation),
                keras.layers.Dense(1, activation="sigmoid"),
            ]
        )
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate=self.learning_rate),
            loss="binary_crossentropy",
        )
        history = model.fit(
            x.astype(np.float32),
            y_idx.astype(np.float32),
            epochs=int(self.epochs),
            batch_size=int(self.batch_size),
            shuffle=True,
            verbose=0,
        )
        self.model_: Any = model
        self.loss_curve_ = [float(v) for v in history.history["loss"]]
        self.backend_ = str(keras.backend.backend())
        return self

    def predict_proba(self, X: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Probabilities (n x 2); a direct call, not ``model.predict``, whose per-call set-up
        would dominate the time on 54 rows."""
        check_is_fitted(self, "model_")
        x = validate_data(self, X, dtype=np.float64, reset=False)
        keras = import_keras()
        out = keras.ops.convert_to_numpy(self.model_(x.astype(np.float32), training=False))
        p = np.asarray(out, dtype=np.float64).reshape(-1)
        return np.column_stack([1.0 - p, p])

    def linear_equivalent(self) -> tuple[npt.NDArray[np.float64], float] | None:
        """The one affine map ``x @ w + b`` that an activation-free hidden layer collapses to.

        ``sigmoid((x W1 + b1) W2 + b2) = sigmoid(x (W1 W2) + (b1 W2 + b2))``: the
        tutorial's model is a logistic regression with 8 x 13 + 8 + 8 + 1 = 121
        parameters standing in for 14. ``None`` when the hidden layer has an activation.
        """
        check_is_fitted(self, "model_")
        if self.hidden_activation not in (None, "linear"):
            return None
        to_numpy = import_keras().ops.convert_to_numpy  # get_weights() warns under NumPy 2
        hidden, output = (
            [np.asarray(to_numpy(v.value), dtype=np.float64) for v in layer.weights]
            for layer in self.model_.layers
        )
        (w1, b1), (w2, b2) = hidden, output
        return (w1 @ w2).ravel(), float((b1 @ w2 + b2)[0])

    def predict(self, X: npt.ArrayLike) -> npt.NDArray[Any]:
        positive = self.predict_proba(X)[:, 1] >= 0.5
        return self.classes_[positive.astype(np.intp)]
