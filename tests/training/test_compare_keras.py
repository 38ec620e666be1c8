"""The Keras wrapper of the comparison, where Keras is installed.

The main virtualenv has no Keras, so these skip there; CI runs them in its
Keras virtualenv with ``HEART_REQUIRE_KERAS=1``, which turns a skip into a
failure, so a broken Keras install cannot pass as "skipped".
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.preprocessing import StandardScaler

from model.arrays import FloatArray, IntArray
from training.data import load_dataset, split
from training.evaluate import cross_validate
from training.keras_model import KerasTutorialClassifier, keras_status

STATUS = keras_status()
if not STATUS.available:
    if os.environ.get("HEART_REQUIRE_KERAS") == "1":
        raise RuntimeError(f"HEART_REQUIRE_KERAS=1 but Keras is {STATUS.message}")
    pytest.skip(f"Keras is {STATUS.message}", allow_module_level=True)

# Few epochs: these tests check the wrapper, not the model's quality.
EPOCHS = 10


@pytest.fixture(scope="module")
def data() -> tuple[FloatArray, FloatArray, IntArray]:
    x, y = load_dataset()
    x_train, x_test, y_train, _ = split(x, y)
    scaler = StandardScaler().fit(x_train)
    return scaler.transform(x_train), scaler.transform(x_test), y_train


def test_same_seed_same_model_other_seed_other_model(
    data: tuple[FloatArray, FloatArray, IntArray],
) -> None:
    x_train, x_test, y_train = data
    a = KerasTutorialClassifier(random_state=1, epochs=EPOCHS).fit(x_train, y_train)
    b = KerasTutorialClassifier(random_state=1, epochs=EPOCHS).fit(x_train, y_train)
    c = KerasTutorialClassifier(random_state=2, epochs=EPOCHS).fit(x_train, y_train)
    np.testing.assert_array_equal(a.predict_proba(x_test), b.predict_proba(x_test))
    assert not np.allclose(a.predict_proba(x_test), c.predict_proba(x_test))
    assert a.backend_ == STATUS.backend
    assert len(a.loss_curve_) == EPOCHS


def test_tutorial_model_is_a_logistic_regression(
    data: tuple[FloatArray, FloatArray, IntArray],
) -> None:
    x_train, x_test, y_train = data
    model = KerasTutorialClassifier(random_state=0, epochs=EPOCHS).fit(x_train, y_train)
    found = model.linear_equivalent()
    assert found is not None
    w, b = found
    assert w.shape == (13,)
    linear = 1.0 / (1.0 + np.exp(-(x_test @ w + b)))
    np.testing.assert_allclose(model.predict_proba(x_test)[:, 1], linear, atol=1e-5)


def test_relu_model_is_not_linear(data: tuple[FloatArray, FloatArray, IntArray]) -> None:
    x_train, _, y_train = data
    model = KerasTutorialClassifier(hidden_activation="relu", random_state=0, epochs=EPOCHS)
    assert model.fit(x_train, y_train).linear_equivalent() is None


def test_estimator_protocol(data: tuple[FloatArray, FloatArray, IntArray]) -> None:
    x_train, x_test, y_train = data
    model = KerasTutorialClassifier(hidden_units=4, random_state=0, epochs=EPOCHS)
    copy = clone(model)
    assert copy.get_params() == model.get_params()
    copy.fit(x_train, y_train)
    proba = copy.predict_proba(x_test)
    assert proba.shape == (x_test.shape[0], 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert set(copy.predict(x_test)) <= {0, 1}
    with pytest.raises(ValueError, match="binary"):
        clone(model).fit(x_train, np.arange(x_train.shape[0]) % 3)


def test_runs_through_the_shared_cross_validation(
    data: tuple[FloatArray, FloatArray, IntArray],
) -> None:
    x_train, _, y_train = data
    cv = cross_validate(
        lambda: KerasTutorialClassifier(random_state=0, epochs=EPOCHS),
        x_train,
        y_train,
        n_splits=2,
        n_repeats=1,
        tune_threshold=False,
    )
    assert cv["protocol"]["n_folds"] == 2
    assert 0.5 < cv["accuracy"]["mean"] <= 1.0
