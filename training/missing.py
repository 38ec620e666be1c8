"""The network for records with gaps: marginal-imputation training, marginalised prediction.

Real records lack expensive tests. Two obvious fixes are traps: filling a gap
with a "normal" value silently invents a test result, and a "value was
missing" input lets the network learn *which hospital* a patient came from
(in Switzerland nearly everything is missing and 93 % are diseased).

So missingness is given no voice of its own:

* **Training** (marginal-imputation augmentation): every training row is
  repeated ``copies`` times; in each copy, every gap, and every present value
  of a feature that may be missing with probability ``mask_rate``, is replaced
  by a value drawn from that feature's observed training values. An imputed
  value looks exactly like a measured one, so the network cannot learn from
  the fact that it was imputed, and it learns what a patient's other values
  say when one is unknown.
* **Prediction** (:class:`model.predictor.Predictor`): a gap is averaged out
  over K background rows drawn from the same marginal distributions, the
  quantity the augmentation trained for. ``predict_proba`` *is* the served
  predictor, so what validation measures is what the service answers.

``NumpyMLPClassifier`` itself stays a plain, NaN-refusing scikit-learn
estimator (``check_estimator`` passes unchanged): it has no basis of its own
for a gap, so the gap handling lives here, in one wrapper that owns both the
augmentation and the background.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from model.arrays import FloatArray
from model.features import EXPENSIVE_TESTS, FEATURE_NAMES, FEATURES, MAY_BE_MISSING, N_FEATURES
from model.network import Init, NumpyMLPClassifier, Optimizer, log_odds_average
from model.predictor import Predictor
from training.evaluate import log_loss_search

#: Where a training copy's imputed value comes from (``MarginalMLPClassifier.draws``).
Draws = Literal["marginal", "outcome"]


#: Background rows a gap is marginalised over, for the network and the trees under its rules.
N_BACKGROUND = 64

#: HistGradientBoosting's grid: ``python -m bench.sites``' reference and the distillation teacher.
TREE_GRID: dict[str, list[Any]] = {"learning_rate": [0.03, 0.1], "max_depth": [2, 3]}


def make_trees(seed: int = 0) -> HistGradientBoostingClassifier:
    """The boosted trees of the comparison, native missing values and all."""
    return HistGradientBoostingClassifier(max_iter=200, random_state=seed)


class MarginalTrees(ClassifierMixin, BaseEstimator):
    """The reference trees under the network's rules for gaps.

    Trained on the network's imputed copies (no gap left to read) and asked
    about a row with gaps by averaging their probability over the same kind of
    background rows the network marginalises over, so they cannot read which
    tests a site does. Context beside the trees reading gaps natively, never a
    candidate: ``bench.recipes`` scores both on the same pooled folds, and
    ``bench.sites`` at each held-out site, to bound how much of the trees'
    lead needs the gaps the network is denied (bound, not isolate: the copies
    also teach the trees imputed values).
    """

    def __init__(
        self,
        learning_rate: float = 0.1,
        max_depth: int | None = None,
        copies: int = 10,
        mask_rate: float = 0.2,
        n_background: int = N_BACKGROUND,
        random_state: int = 0,
    ) -> None:
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.copies = copies
        self.mask_rate = mask_rate
        self.n_background = n_background
        self.random_state = random_state

    def fit(self, X: npt.ArrayLike, y: npt.ArrayLike) -> MarginalTrees:
        x, labels = np.asarray(X, dtype=np.float64), np.asarray(y)
        self.classes_ = np.unique(labels)
        rng = np.random.default_rng(self.random_state)
        self.background_ = marginal_background(x, int(self.n_background), rng)
        xa, ya = augment(x, labels, int(self.copies), float(self.mask_rate), rng)
        trees = make_trees(self.random_state)
        # Early stopping would hold out copies of patients whose other copies it trains on.
        trees.set_params(
            learning_rate=self.learning_rate, max_depth=self.max_depth, early_stopping=False
        )
        self.trees_ = trees.fit(xa, ya)
        return self

    def predict_proba(self, X: npt.ArrayLike) -> FloatArray:
        x = np.asarray(X, dtype=np.float64)
        p = np.empty(len(x))
        gaps = np.isnan(x).any(axis=1)
        if (~gaps).any():
            p[~gaps] = self.trees_.predict_proba(x[~gaps])[:, 1]
        if gaps.any():
            rows = x[gaps][:, None, :]
            filled = np.where(np.isnan(rows), self.background_[None, :, :], rows)
            k = len(self.background_)
            each = self.trees_.predict_proba(filled.reshape(-1, x.shape[1]))[:, 1]
            p[gaps] = each.reshape(-1, k).mean(axis=1)
        return np.column_stack([1.0 - p, p])

    def predict(self, X: npt.ArrayLike) -> npt.NDArray[Any]:
        return np.asarray(self.classes_[(self.predict_proba(X)[:, 1] >= 0.5).astype(int)])


@dataclass(frozen=True)
class Teacher:
    """Boosted trees that label a row's copies without having seen the row (cross-fitting).

    Trees asked about the rows they were fitted on answer with their training
    fit, close to the outcome itself (on outcomes that are pure noise they
    still rank their own rows almost perfectly: a test shows it), so their
    "soft" labels would be the outcome again. Each of the K trees is fitted
    without one fold of the rows and labels the copies of that fold only.
    """

    trees: tuple[HistGradientBoostingClassifier, ...]
    fold_of_row: npt.NDArray[np.intp]

    def probability(self, xa: FloatArray, source_rows: npt.NDArray[np.intp]) -> FloatArray:
        """The disease probability of each copy, from the tree that never saw its source row."""
        p = np.empty(len(xa))
        folds = self.fold_of_row[source_rows]
        for k, tree in enumerate(self.trees):
            at = folds == k
            if at.any():
                p[at] = tree.predict_proba(xa[at])[:, 1]
        return p


def fit_teacher(x: FloatArray, y: npt.NDArray[Any], seed: int, folds: int = 5) -> Teacher:
    """The boosted trees, tuned by inner 5-fold CV on log loss as bench.sites tunes them, then
    refitted once per fold without that fold's rows."""
    search = log_loss_search(make_trees(seed), TREE_GRID, folds=folds, seed=seed)
    best = search.fit(x, y).best_estimator_
    fold_of_row = np.empty(len(y), dtype=np.intp)
    trees = []
    for k, (train, test) in enumerate(search.cv.split(x, y)):
        fold_of_row[test] = k
        trees.append(clone(best).fit(x[train], y[train]))
    return Teacher(tuple(trees), fold_of_row)


def distilled_labels(
    y: npt.NDArray[Any], teacher_p: FloatArray, weight: float, rng: np.random.Generator
) -> npt.NDArray[np.intp]:
    """Labels drawn with probability ``(1 - weight) * y + weight * teacher_p`` of the disease.

    A drawn label's expectation is the mixed target, so the network's
    cross-entropy on many copies approaches the cross-entropy on the soft
    target, without a soft-target path in :class:`NumpyMLPClassifier`.
    """
    target = (1.0 - weight) * y + weight * teacher_p
    return (rng.random(y.size) < target).astype(np.intp)


def marginal_background(x: FloatArray, k: int, rng: np.random.Generator) -> FloatArray:
    """K complete rows whose every column follows that feature's observed training values.

    Each column holds the K evenly spaced quantiles (``inverted_cdf``: real
    observed values, codes stay codes) of the observed values, so a 64-row
    background reproduces each marginal distribution closely with no sampling
    luck; the columns are then shuffled independently, so no row pairs values
    of one patient (the features are marginalised independently).
    """
    levels = (np.arange(k) + 0.5) / k
    columns = []
    for j in range(x.shape[1]):
        seen = x[:, j][~np.isnan(x[:, j])]
        if seen.size == 0:
            raise ValueError(f"feature {FEATURES[j].name} is never observed in the training data")
        columns.append(rng.permutation(np.quantile(seen, levels, method="inverted_cdf")))
    return np.column_stack(columns)


def withhold(x: FloatArray, names: tuple[str, ...] = EXPENSIVE_TESTS) -> FloatArray:
    """A copy of ``x`` with the named features not measured, as at a hospital without those tests.

    Validation scores the same patients with and without them: the difference
    is what a site that does not do the tests loses, measured on patients whose
    outcome is known, which no site with real gaps can show.
    """
    out = np.array(x, dtype=np.float64, copy=True)
    out[:, [FEATURE_NAMES.index(n) for n in names]] = np.nan
    return out


def _check_draws(draws: str) -> None:
    if draws not in ("marginal", "outcome"):
        raise ValueError(f"draws must be 'marginal' or 'outcome', got {draws!r}")


def augment(
    x: FloatArray,
    y: npt.NDArray[Any],
    copies: int,
    mask_rate: float,
    rng: np.random.Generator,
    *,
    draws: Draws = "marginal",
) -> tuple[FloatArray, npt.NDArray[Any]]:
    """``copies`` imputed copies of every row: gaps, and randomly masked values, drawn afresh.

    ``draws="outcome"`` draws a row's value only from training rows with the
    same outcome (see :class:`MarginalMLPClassifier`); a feature never
    observed with that outcome falls back to all its observed values.
    """
    xa = np.repeat(x, copies, axis=0)
    ya = np.repeat(y, copies, axis=0)
    hide = np.isnan(xa) | ((rng.random(xa.shape) < mask_rate) & MAY_BE_MISSING)
    _check_draws(draws)
    groups = [np.ones(x.shape[0], dtype=bool)]
    if draws == "outcome":
        groups = [y == c for c in np.unique(y)]
    for j in np.flatnonzero(hide.any(axis=0)):
        observed = ~np.isnan(x[:, j])
        for group in groups:
            seen = x[group & observed, j]
            if seen.size == 0:
                seen = x[observed, j]
            rows = np.flatnonzero(hide[:, j] & np.repeat(group, copies))
            xa[rows, j] = rng.choice(seen, size=rows.size)
    return xa, ya


class MarginalMLPClassifier(ClassifierMixin, BaseEstimator):
    """Standardisation + :class:`NumpyMLPClassifier`, trained and used on rows with gaps.

    Parameters
    ----------
    hidden_units, learning_rate, max_iter, alpha, random_state, optimizer, batch_size, init, \
    early_stopping, validation_fraction :
        As for :class:`NumpyMLPClassifier`. ``alpha`` means what
        it means there for the *original* rows: it is multiplied by ``copies``
        because the augmented data has ``copies`` times as many. It is 3, not
        the tutorial network's 10: inner CV on all three UCI sites together
        (by log loss, ``python -m bench.sites``) chooses 3, and the served
        model is what inner CV on its training data picks.
        ``learning_rate`` is 0.01, not the tutorial network's 0.003: the imputed
        copies' noise slows training, and at 0.003 300 epochs stop short of the
        fit 1000 epochs reach (too timid in Hungary, calibration slope 1.31).
    copies : int, default=10
        Imputed copies of every training row.
    mask_rate : float, default=0.2
        Probability that a present value of a feature that may be missing is
        hidden (and imputed) in a copy, so complete training rows also teach the
        network to predict without those tests.
    n_background : int, default=64
        Rows stored to marginalise gaps at prediction time.
    n_networks : int, default=2
        Networks trained from different seeds (each on its own imputed copies
        and from its own initialisation) whose log-odds are averaged. Why:
        the augmentation's draws and the initialisation make one network's
        output vary from seed to seed, a variance that has nothing to do with
        the patients; averaging ``k`` independent fits divides it by ``k``
        (as the bootstrap ensemble's members are not: their spread is the
        interval's subject). It is not tuned on any site: 2
        is the smallest average, chosen for cost, since the average ships as
        one network of ``n_networks * hidden_units`` units
        (:func:`model.network.log_odds_average`) and the exact Shapley
        explanation costs about linearly in hidden units. The standardisation
        is the first network's, shared by all so that they can be folded.
    draws : {"marginal", "outcome"}, default="marginal"
        Where an imputed training value comes from. ``"marginal"``: that
        feature's observed values in all training rows, the distribution
        prediction marginalises over. ``"outcome"``: only those of rows with
        the same outcome, the imputation the clinical prediction literature
        recommends for fitting (Moons et al., J Clin Epidemiol 2006;59:1092),
        because a draw unrelated to the outcome pulls the feature's learned
        effect towards zero, most for the tests a site rarely does. It is
        used only in ``fit``; prediction, which never knows the outcome,
        marginalises as before. Judged by the rule set out in docs/sites.md
        (``python -m bench.recipes``), not by the leave-one-site-out grid.
    distill : float, default=0.0
        Weight of a teacher's probability in each imputed copy's target (0:
        the outcome alone). The teacher is the comparison's boosted trees
        (:func:`fit_teacher`), fitted on the same rows with their native
        missing values (cross-fitted: a row's copies are labelled by trees
        that never saw it) and asked about each *imputed* copy, so the network
        learns the trees' answer for the values the copy shows, not for the
        gaps it had: meant to carry what the trees read from a rarely measured
        test to the network without the dilution of a draw unrelated to the
        outcome, while missingness still has no voice. Each copy's label is drawn from
        the mixed target (:func:`distilled_labels`). Only in ``fit``; the
        teacher is not kept. Judged like ``draws``.
    """

    def __init__(
        self,
        hidden_units: int = 8,
        learning_rate: float = 0.01,
        max_iter: int = 300,
        alpha: float = 3.0,
        copies: int = 10,
        mask_rate: float = 0.2,
        n_background: int = N_BACKGROUND,
        n_networks: int = 2,
        draws: Draws = "marginal",
        distill: float = 0.0,
        random_state: int | None = 0,
        optimizer: Optimizer = "adam",
        batch_size: int | None = None,
        init: Init = "he",
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
    ) -> None:
        self.hidden_units = hidden_units
        self.learning_rate = learning_rate
        self.max_iter = max_iter
        self.alpha = alpha
        self.copies = copies
        self.mask_rate = mask_rate
        self.n_background = n_background
        self.n_networks = n_networks
        self.draws = draws
        self.distill = distill
        self.random_state = random_state
        self.optimizer = optimizer
        self.batch_size = batch_size
        self.init = init
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.classifier_tags.multi_class = False
        return tags

    def fit(self, X: npt.ArrayLike, y: npt.ArrayLike) -> MarginalMLPClassifier:
        """Learn the marginals, train on imputed copies, and build the serving predictor."""
        x, y_raw = validate_data(self, X, y, dtype=np.float64, ensure_all_finite="allow-nan")
        if x.shape[1] != N_FEATURES:
            raise ValueError(f"expected {N_FEATURES} features, got {x.shape[1]}")
        check_classification_targets(y_raw)
        self.classes_, y_idx = np.unique(y_raw, return_inverse=True)
        if len(self.classes_) != 2:
            raise ValueError("Only binary classification is supported")
        bad = np.isnan(x) & ~MAY_BE_MISSING
        if bad.any():
            j = int(np.flatnonzero(bad.any(axis=0))[0])
            raise ValueError(f"feature {FEATURES[j].name} may not be missing")
        rng = np.random.default_rng(self.random_state)
        self.background_ = marginal_background(x, int(self.n_background), rng)
        weight = float(self.distill)
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"distill must be between 0 and 1, got {self.distill}")
        _check_draws(self.draws)
        # The teacher's seed comes from the same stream, only when there is a teacher, so
        # the default recipe's draws stay as they were.
        teacher = fit_teacher(x, y_idx, int(rng.integers(2**31))) if weight else None
        xa, ya = self._copies(x, y_idx, rng, teacher)
        self.mean_ = xa.mean(axis=0)
        scale = xa.std(axis=0)
        self.scale_ = np.where(scale > 0, scale, 1.0)
        if int(self.n_networks) < 1:
            raise ValueError(f"n_networks must be at least 1, got {self.n_networks}")
        networks = []
        for i in range(int(self.n_networks)):
            if i:  # the first network's draws come first, so n_networks=1 is the single network
                xa, ya = self._copies(x, y_idx, rng, teacher)
            network = NumpyMLPClassifier(
                hidden_units=self.hidden_units,
                learning_rate=self.learning_rate,
                max_iter=self.max_iter,
                alpha=self.alpha * self.copies,
                optimizer=self.optimizer,
                batch_size=self.batch_size,
                init=self.init,
                early_stopping=self.early_stopping,
                validation_fraction=self.validation_fraction,
                random_state=int(rng.integers(2**31)),
            )
            networks.append(network.fit((xa - self.mean_) / self.scale_, ya))
        self.network_ = networks[0] if len(networks) == 1 else log_odds_average(networks)
        self.predictor_ = self.make_predictor()
        return self

    def _copies(
        self,
        x: FloatArray,
        y_idx: npt.NDArray[Any],
        rng: np.random.Generator,
        teacher: Teacher | None,
    ) -> tuple[FloatArray, npt.NDArray[Any]]:
        """One network's imputed copies, labelled by the outcome or the teacher's mixed target."""
        xa, ya = augment(x, y_idx, int(self.copies), float(self.mask_rate), rng, draws=self.draws)
        if teacher is not None:
            source_rows = np.repeat(np.arange(len(x)), int(self.copies))
            teacher_p = teacher.probability(xa, source_rows)
            ya = distilled_labels(ya, teacher_p, float(self.distill), rng)
        return xa, ya

    def make_predictor(self, **kwargs: Any) -> Predictor:
        """The serving predictor: scaler folded in, background attached."""
        check_is_fitted(self, "network_")
        net = self.network_
        return Predictor.from_network(
            coefs=(net.coefs_[0], net.coefs_[1]),
            intercepts=(net.intercepts_[0], net.intercepts_[1]),
            mean=self.mean_,
            scale=self.scale_,
            background=self.background_,
            **kwargs,
        )

    @property
    def loss_curve_(self) -> list[float]:
        return list(self.network_.loss_curve_)

    def predict_proba(self, X: npt.ArrayLike) -> FloatArray:
        check_is_fitted(self, "predictor_")
        x = validate_data(self, X, dtype=np.float64, ensure_all_finite="allow-nan", reset=False)
        p = self.predictor_.probability(x)
        return np.column_stack([1.0 - p, p])

    def predict(self, X: npt.ArrayLike) -> npt.NDArray[Any]:
        positive = self.predict_proba(X)[:, 1] >= 0.5
        return self.classes_[positive.astype(np.intp)]

    def decision_function(self, X: npt.ArrayLike) -> FloatArray:
        p = np.clip(self.predict_proba(X)[:, 1], 1e-15, 1.0 - 1e-15)
        return np.asarray(np.log(p) - np.log1p(-p))
