"""The tutorial's two-layer network, written from scratch in NumPy, done right.

``input -> dense -> ReLU -> dense -> sigmoid``, trained on binary cross-entropy
with hand-written backpropagation. The code keeps the three concerns of a
production MLP apart, as scikit-learn's ``_multilayer_perceptron.py`` does:

* :func:`forward` computes activations and never mutates them (the tutorial's
  ReLU derivative overwrote the cached pre-activation in place);
* :func:`loss_and_gradients` returns the *mean* loss over the batch plus the L2
  penalty, computed from logits so it never takes ``log(0)``, and its exact
  gradients (the tutorial summed them, so the step size depended on n);
* the optimizers only turn gradients into updates.

The estimator follows scikit-learn's conventions (parameters in ``__init__``,
fitted state with a trailing underscore, ``random_state``) so it drops into
``Pipeline``, ``cross_val_score`` and ``GridSearchCV`` beside ``MLPClassifier``.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data
from threadpoolctl import ThreadpoolController

from model.arrays import FloatArray

#: The BLAS libraries NumPy loaded, found once (limiting through it costs ~10 us a fit).
_BLAS = ThreadpoolController()

Optimizer = Literal["sgd", "adam"]
Init = Literal["he", "glorot", "normal"]


@dataclass
class Params:
    """The network's weights: ``w1`` (n_features x hidden), ``w2`` (hidden x 1)."""

    w1: FloatArray
    b1: FloatArray
    w2: FloatArray
    b2: FloatArray

    def arrays(self) -> list[FloatArray]:
        return [self.w1, self.b1, self.w2, self.b2]

    def copy(self) -> Params:
        return Params(*(a.copy() for a in self.arrays()))


@dataclass
class Activations:
    z1: FloatArray  # hidden pre-activation, kept untouched for the ReLU derivative
    a1: FloatArray  # hidden ReLU output
    logit: FloatArray  # output pre-activation, shape (n,)


def init_params(n_features: int, n_hidden: int, init: Init, rng: np.random.Generator) -> Params:
    """He initialisation suits ReLU; ``normal`` is the tutorial's unit-variance draw."""
    if init == "he":
        w1 = rng.normal(0.0, np.sqrt(2.0 / n_features), (n_features, n_hidden))
        w2 = rng.normal(0.0, np.sqrt(2.0 / n_hidden), (n_hidden, 1))
    elif init == "glorot":
        lim1 = np.sqrt(6.0 / (n_features + n_hidden))
        lim2 = np.sqrt(6.0 / (n_hidden + 1))
        w1 = rng.uniform(-lim1, lim1, (n_features, n_hidden))
        w2 = rng.uniform(-lim2, lim2, (n_hidden, 1))
    elif init == "normal":
        w1 = rng.standard_normal((n_features, n_hidden))
        w2 = rng.standard_normal((n_hidden, 1))
    else:
        raise ValueError(f"init must be 'he', 'glorot' or 'normal', got {init!r}")
    return Params(w1, np.zeros(n_hidden), w2, np.zeros(1))


def forward(params: Params, x: FloatArray) -> Activations:
    z1 = x @ params.w1 + params.b1
    a1 = np.maximum(z1, 0.0)
    logit = (a1 @ params.w2).ravel() + params.b2[0]
    return Activations(z1, a1, logit)


def log_loss_from_logits(logit: FloatArray, y: FloatArray) -> float:
    """Mean binary cross-entropy, ``log(1 + e^z) - y z``: finite for every logit."""
    return float(np.mean(np.logaddexp(0.0, logit) - y * logit))


def loss_and_gradients(
    params: Params, x: FloatArray, y: FloatArray, alpha: float
) -> tuple[float, Params]:
    """Objective (mean BCE + ``alpha / (2 n) * ||W||^2``, as MLPClassifier) and its gradient.

    Biases are not penalised. Gradients are means over the batch, so the
    learning rate means the same thing for any batch size.
    """
    n = x.shape[0]
    act = forward(params, x)
    penalty = 0.5 * alpha / n * (np.sum(params.w1**2) + np.sum(params.w2**2))
    loss = log_loss_from_logits(act.logit, y) + float(penalty)

    d_logit = ((expit(act.logit) - y) / n)[:, None]  # (n, 1)
    g_w2 = act.a1.T @ d_logit + (alpha / n) * params.w2
    g_b2 = d_logit.sum(axis=0)
    d_z1 = (d_logit @ params.w2.T) * (act.z1 > 0.0)
    g_w1 = x.T @ d_z1 + (alpha / n) * params.w1
    g_b1 = d_z1.sum(axis=0)
    return loss, Params(g_w1, g_b1, g_w2, g_b2)


class _GradientDescent:
    """Plain (mini-)batch gradient descent: the tutorial's update rule."""

    def __init__(self, learning_rate: float) -> None:
        self.learning_rate = learning_rate

    def step(self, params: Params, grads: Params) -> None:
        for p, g in zip(params.arrays(), grads.arrays(), strict=True):
            p -= self.learning_rate * g


class _Adam:
    """Adam (Kingma & Ba, 2015) with bias correction."""

    def __init__(
        self, params: Params, learning_rate: float, beta_1: float, beta_2: float, epsilon: float
    ) -> None:
        self.learning_rate, self.beta_1, self.beta_2, self.epsilon = (
            learning_rate,
            beta_1,
            beta_2,
            epsilon,
        )
        self.m = [np.zeros_like(p) for p in params.arrays()]
        self.v = [np.zeros_like(p) for p in params.arrays()]
        self.t = 0

    def step(self, params: Params, grads: Params) -> None:
        self.t += 1
        lr = self.learning_rate * np.sqrt(1.0 - self.beta_2**self.t) / (1.0 - self.beta_1**self.t)
        for p, g, m, v in zip(params.arrays(), grads.arrays(), self.m, self.v, strict=True):
            m *= self.beta_1
            m += (1.0 - self.beta_1) * g
            v *= self.beta_2
            v += (1.0 - self.beta_2) * g * g
            p -= lr * m / (np.sqrt(v) + self.epsilon)


class NumpyMLPClassifier(ClassifierMixin, BaseEstimator):
    """Binary classifier: one ReLU hidden layer and a sigmoid output, in plain NumPy.

    Parameters
    ----------
    hidden_units : int, default=8
        Width of the hidden layer. The tutorial's ``[13, 8, 1]`` is ``hidden_units=8``,
        its ``[13, 10, 1]`` variant ``hidden_units=10``.
    learning_rate : float, default=0.01
        Step size of gradient descent or Adam.
    max_iter : int, default=500
        Number of epochs (full passes over the training data).
    batch_size : int or None, default=None
        Rows per update; ``None`` is full-batch gradient descent, as in the tutorial.
    optimizer : {"sgd", "adam"}, default="adam"
        ``"sgd"`` is plain gradient descent (no momentum), as in the tutorial.
    alpha : float, default=0.0
        L2 weight decay, in the same units as ``MLPClassifier(alpha=...)``.
    init : {"he", "glorot", "normal"}, default="he"
        Weight initialisation. ``"normal"`` reproduces the tutorial's ``randn`` draw.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the training data (stratified), stop when
        its loss has not improved by ``tol`` for ``n_iter_no_change`` epochs, and keep
        the best weights seen.
    random_state : int, numpy Generator or None, default=None
        Seeds a private ``numpy.random.Generator`` for initialisation, shuffling and
        the validation split. Nothing touches NumPy's global random state.
    verbose : bool, default=False
        Print epoch and loss to stderr while training.
    """

    def __init__(
        self,
        hidden_units: int = 8,
        learning_rate: float = 0.01,
        max_iter: int = 500,
        batch_size: int | None = None,
        optimizer: Optimizer = "adam",
        alpha: float = 0.0,
        init: Init = "he",
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 20,
        tol: float = 1e-4,
        shuffle: bool = True,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        random_state: int | np.random.Generator | None = None,
        verbose: bool = False,
    ) -> None:
        self.hidden_units = hidden_units
        self.learning_rate = learning_rate
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.alpha = alpha
        self.init = init
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.shuffle = shuffle
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.random_state = random_state
        self.verbose = verbose

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False  # one sigmoid output: binary only
        return tags

    # ------------------------------------------------------------------ fitting
    def _validate_hyperparameters(self) -> None:
        checks = [
            (
                isinstance(self.hidden_units, int | np.integer) and self.hidden_units >= 1,
                "hidden_units must be a positive integer",
            ),
            (self.learning_rate > 0, "learning_rate must be positive"),
            (
                isinstance(self.max_iter, int | np.integer) and self.max_iter >= 1,
                "max_iter must be a positive integer",
            ),
            (
                self.batch_size is None or self.batch_size >= 1,
                "batch_size must be None or a positive integer",
            ),
            (self.optimizer in ("sgd", "adam"), "optimizer must be 'sgd' or 'adam'"),
            (self.alpha >= 0, "alpha must be non-negative"),
            (self.init in ("he", "glorot", "normal"), "init must be 'he', 'glorot' or 'normal'"),
            (0.0 < self.validation_fraction < 1.0, "validation_fraction must be in (0, 1)"),
            (self.n_iter_no_change >= 1, "n_iter_no_change must be at least 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"{message}; got {self.get_params()}")

    def _rng(self) -> np.random.Generator:
        if isinstance(self.random_state, np.random.RandomState):
            # Accept the legacy object sklearn helpers sometimes pass, without touching globals.
            return np.random.default_rng(self.random_state.randint(np.iinfo(np.int32).max))
        return np.random.default_rng(self.random_state)

    def fit(self, X: npt.ArrayLike, y: npt.ArrayLike) -> NumpyMLPClassifier:
        """Train from scratch on ``X`` (n x d, already scaled) and binary labels ``y``.

        On one BLAS thread: the products are thin (n x 13 by 13 x 8), so the threads
        OpenBLAS starts for them cost more than they share. ``python -m training``
        on 2 cores took 172 s of wall time and 338 s of CPU with the default 2
        threads, 147 s and 146 s with one (BENCHMARKS.md, "Training on one BLAS
        thread"), and every other process on the machine gets its cores back. The
        weights also no longer depend on the machine's core count.
        """
        with _BLAS.limit(limits=1, user_api="blas"):
            return self._fit(X, y)

    def _fit(self, X: npt.ArrayLike, y: npt.ArrayLike) -> NumpyMLPClassifier:
        self._validate_hyperparameters()
        x, y_raw = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y_raw)
        self.classes_, y_idx = np.unique(y_raw, return_inverse=True)
        if len(self.classes_) != 2:
            raise ValueError(
                f"Only binary classification is supported: y must hold exactly 2 classes, "
                f"got {len(self.classes_)} class(es): {self.classes_.tolist()}"
            )
        target = y_idx.astype(np.float64)
        rng = self._rng()

        x_val = y_val = None
        if self.early_stopping:
            train_idx, val_idx = _stratified_holdout(y_idx, self.validation_fraction, rng)
            x, x_val = x[train_idx], x[val_idx]
            target, y_val = target[train_idx], target[val_idx]

        params = init_params(x.shape[1], int(self.hidden_units), self.init, rng)
        opt: _GradientDescent | _Adam = (
            _GradientDescent(self.learning_rate)
            if self.optimizer == "sgd"
            else _Adam(params, self.learning_rate, self.beta_1, self.beta_2, self.epsilon)
        )
        n = x.shape[0]
        batch = n if self.batch_size is None else min(int(self.batch_size), n)
        order = np.arange(n)

        self.loss_curve_: list[float] = []
        self.validation_loss_curve_: list[float] = []
        best_val, best_params, stale = np.inf, params.copy(), 0
        for epoch in range(1, int(self.max_iter) + 1):
            if self.shuffle and batch < n:
                rng.shuffle(order)
            epoch_loss = 0.0
            for start in range(0, n, batch):
                idx = order[start : start + batch] if batch < n else slice(None)
                loss, grads = loss_and_gradients(params, x[idx], target[idx], self.alpha)
                opt.step(params, grads)
                epoch_loss += loss * (x[idx].shape[0] if batch < n else n)
            self.loss_curve_.append(epoch_loss / n)
            self.n_iter_ = epoch
            if x_val is not None and y_val is not None:
                val_loss = log_loss_from_logits(forward(params, x_val).logit, y_val)
                self.validation_loss_curve_.append(val_loss)
                if val_loss < best_val - self.tol:
                    best_val, best_params, stale = val_loss, params.copy(), 0
                else:
                    stale += 1
                if stale >= self.n_iter_no_change:
                    break
            if self.verbose:
                _progress(epoch, int(self.max_iter), self.loss_curve_[-1])
        if self.verbose:
            sys.stderr.write("\n")
        if x_val is not None:
            params = best_params
            self.best_validation_loss_ = float(best_val)
        self.params_ = params
        self.coefs_ = [params.w1, params.w2]
        self.intercepts_ = [params.b1, params.b2]
        return self

    # ---------------------------------------------------------------- inference
    def decision_function(self, X: npt.ArrayLike) -> FloatArray:
        """The output logit: positive means the second class of ``classes_``."""
        check_is_fitted(self, "params_")
        x = validate_data(self, X, dtype=np.float64, reset=False)
        return forward(self.params_, x).logit

    def predict_proba(self, X: npt.ArrayLike) -> FloatArray:
        """Class probabilities, shape (n, 2), columns ordered as ``classes_``."""
        p = expit(self.decision_function(X))
        return np.column_stack([1.0 - p, p])

    def predict(self, X: npt.ArrayLike) -> npt.NDArray[Any]:
        positive = self.decision_function(X) > 0.0
        return self.classes_[positive.astype(np.intp)]


def log_odds_average(networks: Sequence[NumpyMLPClassifier]) -> NumpyMLPClassifier:
    """One fitted network whose log-odds are exactly the mean of ``networks``' log-odds.

    Why one network and not a list: every consumer of a fitted network (the
    artifact's four arrays, :class:`model.predictor.Predictor`, the exact
    Shapley explanation) already handles any hidden width, so an average of
    ``k`` networks of ``H`` units ships as one network of ``k * H`` units with
    no change to the artifact format or the serving code. The output is linear
    in the hidden layer, so concatenating the hidden layers, dividing the output
    weights by ``k`` and averaging the output biases gives
    ``z = sum_i relu(x W1_i + b1_i) W2_i / k + mean_i b2_i = mean_i z_i``.

    The networks must share their inputs' scaling and the order of
    ``classes_``. ``loss_curve_`` is the members' mean training loss per epoch
    (over the epochs all of them ran), a description of their training, not
    the folded network's own loss.
    """
    if not networks:
        raise ValueError("log_odds_average needs at least one network")
    for net in networks:
        check_is_fitted(net, "params_")
    first = networks[0]
    for net in networks[1:]:
        if net.coefs_[0].shape[0] != first.coefs_[0].shape[0] or not np.array_equal(
            net.classes_, first.classes_
        ):
            raise ValueError("networks to average must share their inputs and classes")
    k = len(networks)
    params = Params(
        np.hstack([n.params_.w1 for n in networks]),
        np.concatenate([n.params_.b1 for n in networks]),
        np.vstack([n.params_.w2 for n in networks]) / k,
        np.mean([n.params_.b2 for n in networks], axis=0),
    )
    folded = copy.deepcopy(first)
    folded.hidden_units = int(params.w1.shape[1])
    folded.params_ = params
    folded.coefs_ = [params.w1, params.w2]
    folded.intercepts_ = [params.b1, params.b2]
    epochs = min(len(n.loss_curve_) for n in networks)
    folded.loss_curve_ = np.mean([n.loss_curve_[:epochs] for n in networks], axis=0).tolist()
    folded.n_iter_ = max(int(n.n_iter_) for n in networks)
    return folded


def _stratified_holdout(
    y_idx: npt.NDArray[np.intp], fraction: float, rng: np.random.Generator
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Split indices so the validation part keeps each class's share (at least one row each)."""
    val: list[npt.NDArray[np.intp]] = []
    train: list[npt.NDArray[np.intp]] = []
    for cls in np.unique(y_idx):
        members = rng.permutation(np.flatnonzero(y_idx == cls))
        k = min(max(1, round(fraction * len(members))), len(members) - 1)
        if k < 1:
            raise ValueError("early_stopping needs at least two samples of each class")
        val.append(members[:k])
        train.append(members[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def _progress(epoch: int, total: int, loss: float) -> None:
    every = max(1, total // 50)
    if epoch % every == 0 or epoch == total:
        sys.stderr.write(f"\repoch {epoch:>5}/{total}  loss {loss:.4f}")
        sys.stderr.flush()
