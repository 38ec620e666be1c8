"""The from-scratch network: exact gradients, stability, determinism, sklearn compatibility."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks
from threadpoolctl import threadpool_info

from model.network import (
    NumpyMLPClassifier,
    Params,
    forward,
    init_params,
    log_loss_from_logits,
    log_odds_average,
    loss_and_gradients,
)


def _toy(
    n: int = 40, d: int = 5, seed: int = 0
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = (x[:, 0] + 0.5 * x[:, 1] ** 2 > 0.3).astype(np.float64)
    return x, y


@pytest.mark.parametrize("alpha", [0.0, 3.0])
def test_gradients_match_finite_differences(alpha: float) -> None:
    x, y = _toy()
    params = init_params(x.shape[1], 6, "he", np.random.default_rng(1))
    params.b1 += 0.1  # non-zero biases so their gradients are exercised too
    _, grads = loss_and_gradients(params, x, y, alpha)
    eps = 1e-6
    for name, p, g in zip(("w1", "b1", "w2", "b2"), params.arrays(), grads.arrays(), strict=True):
        numeric = np.zeros_like(p)
        for idx in np.ndindex(p.shape):
            saved = p[idx]
            p[idx] = saved + eps
            up, _ = loss_and_gradients(params, x, y, alpha)
            p[idx] = saved - eps
            down, _ = loss_and_gradients(params, x, y, alpha)
            p[idx] = saved
            numeric[idx] = (up - down) / (2 * eps)
        rel = np.abs(numeric - g) / np.maximum(1e-8, np.abs(numeric) + np.abs(g))
        assert rel.max() < 1e-5, f"gradient of {name} is wrong: max relative error {rel.max():.2e}"


def test_gradients_are_means_so_they_do_not_grow_with_n() -> None:
    x, y = _toy(n=30)
    params = init_params(x.shape[1], 4, "he", np.random.default_rng(0))
    _, g_once = loss_and_gradients(params, x, y, 0.0)
    _, g_twice = loss_and_gradients(params, np.vstack([x, x]), np.concatenate([y, y]), 0.0)
    for a, b in zip(g_once.arrays(), g_twice.arrays(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


def test_backprop_does_not_mutate_cached_activations() -> None:
    x, y = _toy()
    params = init_params(x.shape[1], 6, "he", np.random.default_rng(2))
    before = forward(params, x)
    z1 = before.z1.copy()
    loss_and_gradients(params, x, y, 0.0)
    np.testing.assert_array_equal(forward(params, x).z1, z1)
    assert (z1 < 0).any(), "the check needs negative pre-activations to mean anything"


def test_loss_is_finite_for_extreme_logits() -> None:
    logits = np.array([-1e4, -50.0, 0.0, 50.0, 1e4])
    for y in (np.zeros(5), np.ones(5)):
        loss = log_loss_from_logits(logits, y)
        assert np.isfinite(loss)
    # A confidently wrong prediction costs about |z|; a confidently right one about 0.
    assert log_loss_from_logits(np.array([1e4]), np.array([0.0])) == pytest.approx(1e4)
    assert log_loss_from_logits(np.array([1e4]), np.array([1.0])) == pytest.approx(0.0)


def test_predict_proba_is_finite_for_huge_inputs() -> None:
    x, y = _toy()
    clf = NumpyMLPClassifier(max_iter=20, random_state=0).fit(x, y)
    proba = clf.predict_proba(x * 1e6)
    assert np.all(np.isfinite(proba))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


def test_same_seed_gives_identical_weights_and_no_global_rng_use() -> None:
    x, y = _toy()
    state = np.random.get_state()
    a = NumpyMLPClassifier(max_iter=50, batch_size=8, random_state=7).fit(x, y)
    b = NumpyMLPClassifier(max_iter=50, batch_size=8, random_state=7).fit(x, y)
    c = NumpyMLPClassifier(max_iter=50, batch_size=8, random_state=8).fit(x, y)
    after = np.random.get_state()
    for wa, wb, wc in zip(a.coefs_, b.coefs_, c.coefs_, strict=True):
        np.testing.assert_array_equal(wa, wb)
        assert not np.array_equal(wa, wc)
    assert state[0] == after[0] and np.array_equal(state[1], after[1])


def _blas_threads() -> list[int]:
    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]


def test_fit_trains_on_one_blas_thread_and_gives_the_threads_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The limit must reach the BLAS NumPy loaded: threadpoolctl before 3.5 does not find
    NumPy 2's OpenBLAS, and the limit then silently changes nothing."""
    import model.network as network

    during: list[list[int]] = []
    real = network.loss_and_gradients

    def spy(*args: object, **kwargs: object) -> object:
        during.append(_blas_threads())
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(network, "loss_and_gradients", spy)
    before = _blas_threads()
    NumpyMLPClassifier(max_iter=3, random_state=0).fit(*_toy())
    assert before, "threadpoolctl finds no BLAS library in this process"
    assert during == [[1] * len(before)] * 3
    assert _blas_threads() == before


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_loss_decreases(optimizer: str) -> None:
    x, y = _toy()
    clf = NumpyMLPClassifier(
        optimizer=optimizer, learning_rate=0.05, max_iter=200, random_state=0
    ).fit(x, y)
    curve = np.asarray(clf.loss_curve_)
    assert len(curve) == 200 and clf.n_iter_ == 200
    assert curve[-1] < 0.7 * curve[0]
    # full-batch gradient descent with a small step is monotone
    if optimizer == "sgd":
        assert np.all(np.diff(curve) <= 1e-12)


def test_learns_xor_which_a_linear_model_cannot() -> None:
    rng = np.random.default_rng(0)
    centres = np.array([[1, 1], [-1, -1], [1, -1], [-1, 1]], dtype=float)
    labels = np.array([0, 0, 1, 1])
    idx = rng.integers(0, 4, size=400)
    x = centres[idx] + rng.normal(scale=0.2, size=(400, 2))
    y = labels[idx]
    linear = LogisticRegression().fit(x, y).score(x, y)
    net = (
        NumpyMLPClassifier(hidden_units=8, learning_rate=0.01, max_iter=500, random_state=0)
        .fit(x, y)
        .score(x, y)
    )
    assert linear < 0.7
    assert net > 0.97


def test_tutorial_architectures_are_expressible() -> None:
    x, y = _toy(d=13)
    for hidden in (8, 10):
        clf = NumpyMLPClassifier(
            hidden_units=hidden,
            optimizer="sgd",
            init="normal",
            learning_rate=0.01,
            max_iter=5,
            random_state=2,
        ).fit(x, y)
        assert clf.coefs_[0].shape == (13, hidden) and clf.coefs_[1].shape == (hidden, 1)


def test_early_stopping_keeps_best_weights_and_stops() -> None:
    x, y = _toy(n=120)
    clf = NumpyMLPClassifier(
        hidden_units=32,
        learning_rate=0.05,
        max_iter=2000,
        early_stopping=True,
        n_iter_no_change=10,
        random_state=0,
    ).fit(x, y)
    assert clf.n_iter_ < 2000
    assert len(clf.validation_loss_curve_) == clf.n_iter_
    assert clf.best_validation_loss_ == pytest.approx(min(clf.validation_loss_curve_), abs=1e-4)


def test_minibatches_cover_every_row_each_epoch() -> None:
    x, y = _toy(n=50)
    full = NumpyMLPClassifier(max_iter=1, random_state=0, learning_rate=1e-9).fit(x, y)
    mini = NumpyMLPClassifier(max_iter=1, batch_size=7, random_state=0, learning_rate=1e-9).fit(
        x, y
    )
    # with a negligible step every batch sees the same weights: the epoch's mean
    # batch loss must equal the full-batch loss, so no row was dropped or doubled
    assert mini.loss_curve_[0] == pytest.approx(full.loss_curve_[0], rel=1e-6)


def test_multiclass_and_bad_hyperparameters_are_refused() -> None:
    x, _ = _toy()
    with pytest.raises(ValueError, match="Only binary"):
        NumpyMLPClassifier().fit(x, np.arange(len(x)) % 3)
    with pytest.raises(ValueError, match="optimizer"):
        NumpyMLPClassifier(optimizer="rmsprop").fit(x, np.arange(len(x)) % 2)  # type: ignore[arg-type]


def test_string_labels_round_trip() -> None:
    x, y = _toy()
    labels = np.where(y == 1, "presence", "absence")
    clf = NumpyMLPClassifier(max_iter=100, random_state=0).fit(x, labels)
    assert list(clf.classes_) == ["absence", "presence"]
    assert set(clf.predict(x)) <= {"absence", "presence"}


def test_works_in_pipeline_cross_val_score_and_grid_search(
    heart_data: tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]],
) -> None:
    x, y = heart_data
    pipe = make_pipeline(
        StandardScaler(), NumpyMLPClassifier(alpha=10.0, max_iter=200, random_state=0)
    )
    cv = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
    scores = cross_val_score(pipe, x, y, cv=cv, scoring="roc_auc")
    assert scores.mean() > 0.85
    grid = GridSearchCV(pipe, {"numpymlpclassifier__alpha": [0.0, 10.0]}, cv=cv).fit(x, y)
    assert grid.best_params_["numpymlpclassifier__alpha"] in (0.0, 10.0)
    assert grid.predict_proba(x).shape == (len(x), 2)


# check_estimator's whole battery. Skipped by sklearn itself (not by us): the array-API
# check (needs SCIPY_ARRAY_API) and the pandas check (pandas is not a dependency).
@parametrize_with_checks([NumpyMLPClassifier(max_iter=50, random_state=0)])
def test_sklearn_estimator_checks(estimator: NumpyMLPClassifier, check: object) -> None:
    check(estimator)  # type: ignore[operator]


def test_params_copy_is_deep() -> None:
    p = init_params(3, 2, "glorot", np.random.default_rng(0))
    q: Params = p.copy()
    q.w1 += 1.0
    assert not np.array_equal(p.w1, q.w1)


def test_log_odds_average_is_one_wider_network_with_the_mean_log_odds() -> None:
    """Three networks of 4 units fold into one of 12 whose logit is their mean, to 1e-12."""
    x, y = _toy(n=60)
    nets = [
        NumpyMLPClassifier(hidden_units=4, max_iter=60, random_state=seed).fit(x, y)
        for seed in (0, 1, 2)
    ]
    folded = log_odds_average(nets)
    assert folded.coefs_[0].shape == (x.shape[1], 12) and folded.hidden_units == 12
    mean_logit = np.mean([n.decision_function(x) for n in nets], axis=0)
    assert np.ptp(mean_logit) > 1.0  # the members say something, so the check can fail
    np.testing.assert_allclose(folded.decision_function(x), mean_logit, rtol=0, atol=1e-12)
    np.testing.assert_allclose(
        folded.predict_proba(x)[:, 1], 1.0 / (1.0 + np.exp(-mean_logit)), rtol=0, atol=1e-12
    )
    # The members are left untouched, and one network folds into itself.
    assert nets[0].coefs_[0].shape == (x.shape[1], 4)
    np.testing.assert_array_equal(
        log_odds_average(nets[:1]).decision_function(x), nets[0].decision_function(x)
    )
    assert folded.loss_curve_ == pytest.approx(np.mean([n.loss_curve_ for n in nets], axis=0))


def test_log_odds_average_refuses_what_cannot_be_folded() -> None:
    x, y = _toy()
    a = NumpyMLPClassifier(hidden_units=3, max_iter=5, random_state=0).fit(x, y)
    b = NumpyMLPClassifier(hidden_units=3, max_iter=5, random_state=0).fit(x[:, :4], y)
    with pytest.raises(ValueError, match="share their inputs"):
        log_odds_average([a, b])
    with pytest.raises(ValueError, match="at least one"):
        log_odds_average([])
