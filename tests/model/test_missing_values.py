"""Missing values in the predictor: exact marginalisation that carries no signal of its own."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score

from model.features import FEATURE_NAMES, MAY_BE_MISSING
from model.predictor import Predictor
from training import missing
from training.missing import (
    MarginalMLPClassifier,
    Teacher,
    augment,
    distilled_labels,
    fit_teacher,
    make_trees,
    marginal_background,
)
from training.sites import UCI_SITES, load_sites

COL = {n: j for j, n in enumerate(FEATURE_NAMES)}


def tiny_predictor(**kwargs: float) -> Predictor:
    rng = np.random.default_rng(1)
    background = rng.normal(size=(3, 13)) * 5 + 50
    return Predictor.from_network(
        coefs=(rng.normal(size=(13, 4)) / 30, rng.normal(size=(4, 1))),
        intercepts=(rng.normal(size=4), np.array([0.3])),
        mean=np.full(13, 50.0),
        scale=np.full(13, 5.0),
        background=background,
        **kwargs,  # type: ignore[arg-type]
    )


def brute_force(predictor: Predictor, row: npt.NDArray[np.float64]) -> float:
    """Fill the gaps from each background row in turn, score complete rows, average."""
    assert predictor.background is not None
    base = replace_calibration(predictor)
    filled = np.where(np.isnan(row), predictor.background, row)
    p = float(np.mean([base.probability_one(r) for r in filled]))
    a, b = predictor.calibration_intercept, predictor.calibration_slope
    return float(1.0 / (1.0 + np.exp(-(a + b * np.log(p / (1.0 - p))))))


def replace_calibration(predictor: Predictor) -> Predictor:
    from dataclasses import replace

    return replace(predictor, calibration_intercept=0.0, calibration_slope=1.0)


@pytest.mark.parametrize("calibration", [(0.0, 1.0), (-0.7, 1.3)])
def test_marginalised_probability_is_the_brute_force_average(
    calibration: tuple[float, float],
) -> None:
    predictor = tiny_predictor(
        calibration_intercept=calibration[0], calibration_slope=calibration[1]
    )
    rng = np.random.default_rng(2)
    rows = rng.normal(size=(6, 13)) * 5 + 50
    rows[0, [11, 12]] = np.nan
    rows[1, 3] = np.nan
    rows[2, :] = np.nan
    rows[3, [4, 9, 10]] = np.nan  # rows 4 and 5 stay complete
    batch = predictor.probability(rows)
    for i, row in enumerate(rows):
        expected = (
            brute_force(predictor, row) if np.isnan(row).any() else predictor.probability_one(row)
        )
        assert predictor.probability_one(row) == pytest.approx(expected, rel=1e-12)
        assert batch[i] == pytest.approx(expected, rel=1e-12)


def test_rows_grouped_by_pattern_keep_their_own_answer() -> None:
    """Interleaved patterns, repeated background values: each row as if scored alone.

    The batch groups rows by which features they lack and scores each pattern
    against its distinct background fillings; order, grouping and the merging
    of equal background values must not change any row's probability.
    """
    base = tiny_predictor()
    assert base.background is not None
    # Repeated background rows, as coded features have: 3 distinct among 5, counted 3, 1, 1.
    predictor = Predictor(
        w1=base.w1, b1=base.b1, w2=base.w2, b2=base.b2,
        background=np.vstack([base.background, base.background[:1], base.background[:1]]),
    )  # fmt: skip
    rng = np.random.default_rng(4)
    rows = rng.normal(size=(300, 13)) * 5 + 50
    patterns = [[], [12], [11, 12], [3], [3, 12]]
    chosen = rng.integers(0, len(patterns), size=len(rows))
    for i, k in enumerate(chosen):
        rows[i, patterns[k]] = np.nan
    batch = predictor.probability(rows)
    for i in range(0, len(rows), 7):
        expected = (
            brute_force(predictor, rows[i]) if chosen[i] else predictor.probability_one(rows[i])
        )
        assert batch[i] == pytest.approx(expected, rel=1e-12)
        assert predictor.probability(rows[i : i + 1])[0] == pytest.approx(batch[i], abs=1e-15)


def test_complete_rows_never_touch_the_background() -> None:
    with_bg = tiny_predictor()
    without = Predictor(w1=with_bg.w1, b1=with_bg.b1, w2=with_bg.w2, b2=with_bg.b2, background=None)
    rows = np.random.default_rng(3).normal(size=(5, 13)) * 5 + 50
    np.testing.assert_array_equal(with_bg.probability(rows), without.probability(rows))
    with pytest.raises(ValueError, match="no background rows"):
        without.probability_one(np.where(np.arange(13) == 12, np.nan, rows[0]))


def test_background_follows_each_observed_marginal() -> None:
    pooled = load_sites(UCI_SITES)
    bg = marginal_background(pooled.x, 64, np.random.default_rng(0))
    assert bg.shape == (64, 13) and np.isfinite(bg).all()
    thal = pooled.x[:, COL["thal"]]
    seen = thal[~np.isnan(thal)]
    for code in (3.0, 6.0, 7.0):  # each code's share within 1/64 of its observed share
        assert abs(np.mean(bg[:, COL["thal"]] == code) - np.mean(seen == code)) <= 1 / 64 + 1e-12


def test_augmentation_fills_every_gap_with_observed_values_only() -> None:
    pooled = load_sites(UCI_SITES)
    xa, ya = augment(pooled.x, pooled.y, 3, 0.5, np.random.default_rng(0))
    assert xa.shape == (3 * 720, 13) and not np.isnan(xa).any()
    assert (ya == np.repeat(pooled.y, 3)).all()
    # Required features are never masked.
    required = ~MAY_BE_MISSING
    np.testing.assert_array_equal(xa[:, required], np.repeat(pooled.x[:, required], 3, axis=0))
    for j in np.flatnonzero(MAY_BE_MISSING):
        seen = set(pooled.x[:, j][~np.isnan(pooled.x[:, j])].tolist())
        assert set(xa[:, j].tolist()) <= seen


def test_outcome_draws_come_from_rows_with_the_same_outcome() -> None:
    """Thal 7 is seen only with disease and 3 only without: each copy keeps its class's value."""
    x = np.full((40, 13), 1.0)
    y = np.repeat([0, 1], 20)
    thal = COL["thal"]
    x[:, thal] = np.where(y == 1, 7.0, 3.0)
    x[::2, thal] = np.nan  # half of each class not measured
    xa, ya = augment(x, y, 5, 0.0, np.random.default_rng(0), draws="outcome")
    np.testing.assert_array_equal(xa[:, thal], np.where(ya == 1, 7.0, 3.0))
    # The marginal draws mix the two codes in both classes, which is what dilutes the effect.
    xm, ym = augment(x, y, 5, 0.0, np.random.default_rng(0))
    filled = np.repeat(np.isnan(x[:, thal]), 5)
    assert set(xm[filled & (ym == 0), thal].tolist()) == {3.0, 7.0}


def test_outcome_draws_fall_back_to_every_observed_value_when_a_class_has_none() -> None:
    x = np.full((20, 13), 1.0)
    y = np.repeat([0, 1], 10)
    thal = COL["thal"]
    x[:, thal] = np.where(y == 0, 3.0, np.nan)  # never measured in the diseased
    xa, ya = augment(x, y, 3, 0.0, np.random.default_rng(0), draws="outcome")
    assert (xa[ya == 1, thal] == 3.0).all()
    with pytest.raises(ValueError, match="draws must be"):
        augment(x, y, 3, 0.0, np.random.default_rng(0), draws="label")  # type: ignore[arg-type]


def test_marginal_draws_keep_the_served_recipes_random_stream() -> None:
    """The option must not move the served recipe's figures: same draws as one pool per feature."""
    pooled = load_sites(UCI_SITES)
    xa, _ = augment(pooled.x, pooled.y, 4, 0.2, np.random.default_rng(7))
    rng = np.random.default_rng(7)  # the draws as they were made before the option existed
    expected = np.repeat(pooled.x, 4, axis=0)
    hide = np.isnan(expected) | ((rng.random(expected.shape) < 0.2) & MAY_BE_MISSING)
    for j in np.flatnonzero(hide.any(axis=0)):
        seen = pooled.x[:, j][~np.isnan(pooled.x[:, j])]
        rows = np.flatnonzero(hide[:, j])
        expected[rows, j] = rng.choice(seen, size=rows.size)
    np.testing.assert_array_equal(xa, expected)
    outcome, _ = augment(pooled.x, pooled.y, 4, 0.2, np.random.default_rng(7), draws="outcome")
    assert not np.array_equal(xa, outcome)


def test_distilled_labels_follow_the_mixed_target() -> None:
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 50_000)
    teacher_p = np.full(y.size, 0.3)
    np.testing.assert_array_equal(distilled_labels(y, teacher_p, 0.0, rng), y)
    labels = distilled_labels(y, teacher_p, 0.5, rng)
    # Targets 0.15 and 0.65; a mean of 50,000 draws has a standard error under 0.0023.
    assert abs(labels[y == 0].mean() - 0.15) < 0.01
    assert abs(labels[y == 1].mean() - 0.65) < 0.01


class _Teacher:
    """Says 1 for every copy, and fails the test if it is ever shown a gap."""

    def probability(
        self, xa: npt.NDArray[np.float64], source_rows: npt.NDArray[np.intp]
    ) -> npt.NDArray[np.float64]:
        assert not np.isnan(xa).any(), "the teacher must see imputed copies, never gaps"
        assert len(source_rows) == len(xa)
        return np.ones(len(xa))


def test_the_teacher_labels_the_imputed_copies_not_the_rows_with_gaps() -> None:
    pooled = load_sites(UCI_SITES)
    model = MarginalMLPClassifier(distill=1.0)
    rng = np.random.default_rng(0)
    xa, ya = model._copies(pooled.x, pooled.y, rng, _Teacher())  # type: ignore[arg-type]
    assert not np.isnan(xa).any() and (ya == 1).all()  # weight 1: the teacher alone decides


def test_the_teacher_never_labels_a_row_it_was_fitted_on() -> None:
    """On outcomes that are pure noise, trees rank their own training rows far above chance;
    cross-fitted, each row's label comes from trees that never saw it, so chance it is."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 13))
    y = rng.integers(0, 2, size=400)
    teacher = fit_teacher(x, y, seed=0)
    assert sorted(np.bincount(teacher.fold_of_row).tolist()) == [80] * 5
    in_sample = make_trees().set_params(max_depth=3, learning_rate=0.1).fit(x, y)
    assert roc_auc_score(y, in_sample.predict_proba(x)[:, 1]) > 0.9
    # Under no signal the AUC of 400 rows has a standard error of about 0.03: 0.62 is 4 of them.
    crossed = teacher.probability(x, np.arange(400))
    assert abs(roc_auc_score(y, crossed) - 0.5) < 0.12


def test_distill_0_fits_no_teacher_and_a_bad_draws_is_refused_before_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pooled = load_sites(UCI_SITES)

    def no_teacher(*args: object, **kwargs: object) -> None:
        raise AssertionError("a teacher was fitted")

    monkeypatch.setattr(missing, "fit_teacher", no_teacher)
    MarginalMLPClassifier(max_iter=2).fit(pooled.x, pooled.y)
    with pytest.raises(ValueError, match="draws must be"):
        MarginalMLPClassifier(distill=0.5, draws="label").fit(pooled.x, pooled.y)  # type: ignore[arg-type]


def test_a_distilled_network_fits_keeps_no_teacher_and_refuses_a_weight_outside_0_to_1() -> None:
    pooled = load_sites(UCI_SITES)
    model = MarginalMLPClassifier(distill=0.5, max_iter=5).fit(pooled.x, pooled.y)
    p = model.predict_proba(pooled.x)[:, 1]
    assert np.isfinite(p).all()
    kept = [
        v for v in vars(model).values() if isinstance(v, (Teacher, HistGradientBoostingClassifier))
    ]
    assert kept == []  # the artifact must not carry the trees
    with pytest.raises(ValueError, match="distill must be between 0 and 1"):
        MarginalMLPClassifier(distill=1.5).fit(pooled.x, pooled.y)


@pytest.fixture(scope="module")
def served_on_all() -> tuple[Predictor, npt.NDArray[np.float64]]:
    """The default model fitted on all 720 patients, and those patients' values."""
    pooled = load_sites(UCI_SITES)
    return MarginalMLPClassifier().fit(pooled.x, pooled.y).predictor_, pooled.x


@pytest.mark.parametrize("feature", ["num_major_vessels", "thal", "serum_cholesterol"])
def test_missingness_carries_no_signal(
    served_on_all: tuple[Predictor, npt.NDArray[np.float64]], feature: str
) -> None:
    """With a value missing, the served answer is the average over that value's distribution.

    Reference: the average of the complete-record prediction over *every* observed
    training value of the feature (its empirical distribution). The predictor
    uses the 64 quantiles stored in the artifact instead; for a function of
    bounded variation V along the feature, replacing a distribution by one whose
    CDF is within d of it moves the expectation by at most V * d (Koksma's
    inequality in one dimension). Here d <= 1/64 (each stored value stands for
    1/64 of the mass), and V is measured exactly for each patient over the sorted
    observed values, so the tolerance is a proof, not a guess. A missingness
    signal (e.g. "missing means a Swiss, so diseased") would break it at once.
    """
    predictor, x = served_on_all
    j = COL[feature]
    values = x[:, j][~np.isnan(x[:, j])]  # the training distribution of the feature
    grid = np.unique(values)
    patients = x[~np.isnan(x).any(axis=1)][:40]
    for row in patients:
        filled = np.repeat(row[None, :], values.size, axis=0)
        filled[:, j] = values
        reference = float(predictor.probability(filled).mean())
        along = np.repeat(row[None, :], grid.size, axis=0)
        along[:, j] = grid
        variation = float(np.abs(np.diff(predictor.probability(along))).sum())
        gap = row.copy()
        gap[j] = np.nan
        answer = predictor.probability_one(gap)
        assert abs(answer - reference) <= variation / 64 + 1e-9, (feature, answer, reference)


def test_wrapper_refuses_a_gap_in_a_required_feature() -> None:
    pooled = load_sites(UCI_SITES)
    x = pooled.x.copy()
    x[0, COL["age"]] = np.nan
    with pytest.raises(ValueError, match="age may not be missing"):
        MarginalMLPClassifier(max_iter=2).fit(x, pooled.y)


def test_seed_average_ships_as_one_wider_network_whose_first_part_is_the_single_one() -> None:
    """``n_networks=2``: one 16-unit network; its first 8 units are the ``n_networks=1`` fit.

    So adding networks only adds seeds' draws after the first network's: the
    single network is not changed by the averaging, only averaged with others.
    """
    pooled = load_sites(UCI_SITES)
    one = MarginalMLPClassifier(n_networks=1, max_iter=20).fit(pooled.x, pooled.y)
    two = MarginalMLPClassifier(n_networks=2, max_iter=20).fit(pooled.x, pooled.y)
    assert one.predictor_.n_hidden == 8 and two.predictor_.n_hidden == 16
    np.testing.assert_array_equal(two.network_.coefs_[0][:, :8], one.network_.coefs_[0])
    np.testing.assert_array_equal(two.network_.coefs_[1][:8] * 2, one.network_.coefs_[1])
    assert not np.array_equal(two.network_.coefs_[0][:, 8:], one.network_.coefs_[0])
    np.testing.assert_array_equal(two.mean_, one.mean_)
    np.testing.assert_array_equal(two.background_, one.background_)
    with pytest.raises(ValueError, match="n_networks must be at least 1"):
        MarginalMLPClassifier(n_networks=0, max_iter=2).fit(pooled.x, pooled.y)


def test_the_trees_under_the_networks_rules_never_read_a_gap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Trained on imputed copies, and a gap averaged over the background rows."""
    seen: list[npt.NDArray[np.float64]] = []

    class Recording(HistGradientBoostingClassifier):
        def fit(self, X: npt.ArrayLike, y: npt.ArrayLike, **kw: object) -> Recording:
            seen.append(np.asarray(X))
            return super().fit(X, y, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(missing, "make_trees", lambda seed: Recording(random_state=seed))
    pooled = load_sites(UCI_SITES)
    trees = missing.MarginalTrees(max_depth=2, copies=3).fit(pooled.x, pooled.y)
    (fitted,) = seen
    assert fitted.shape == (3 * len(pooled.x), pooled.x.shape[1])
    assert not np.isnan(fitted).any()  # every gap of the 720 patients was filled first
    assert trees.trees_.get_params()["early_stopping"] is False
    row = pooled.x[np.isnan(pooled.x).any(axis=1)][0]
    by_hand = np.where(np.isnan(row), trees.background_, row)  # the 64 fillings of its gaps
    expected = trees.trees_.predict_proba(by_hand)[:, 1].mean()
    assert trees.predict_proba(row[None, :])[0, 1] == pytest.approx(expected)
    complete = pooled.x[~np.isnan(pooled.x).any(axis=1)][:3]
    np.testing.assert_allclose(
        trees.predict_proba(complete)[:, 1], trees.trees_.predict_proba(complete)[:, 1]
    )
