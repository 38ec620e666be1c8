"""The pre-set rule of ``python -m bench.recipes``, on made-up scores and on a tiny real run."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from bench import recipes
from bench.recipes import (
    BASELINE,
    QUESTIONS,
    REFERENCE,
    decide,
    points,
    score,
)
from training.sites import UCI_SITES, load_sites


def _row(group: str, losses: list[float], alpha: float = 3.0) -> dict[str, Any]:
    return {
        "group": group,
        "params": {"alpha": alpha, "mask_rate": 0.2},
        "log_loss_repeats": losses,
        "log_loss": float(np.mean(losses)),
        "repeat_spread": max(losses) - min(losses),
    }


def test_the_served_grid_comes_first_then_each_questions_challengers() -> None:
    everything = points()
    assert [g for g, _ in everything[:6]] == [BASELINE] * 6
    assert {p["alpha"] for _, p in everything[:6]} == {3.0, 10.0, 30.0}
    assert len(everything) == 6 + sum(len(c) for c in QUESTIONS.values()) + 3
    only = points(["outcome draws"])
    assert len(only) == 15 and all(p["draws"] == "outcome" for _, p in only[6:12])
    assert [p["model"] for g, p in only[12:]] == ["hgb", "hgb-marginal", "logistic"]


@pytest.mark.parametrize(
    ("challenger", "adopt"),
    [([0.390, 0.392], True), ([0.399, 0.400], False), ([0.420, 0.421], False)],
)
def test_a_challenger_must_beat_the_best_baseline_by_more_than_the_repeat_noise(
    challenger: list[float], adopt: bool
) -> None:
    rows = [
        _row(BASELINE, [0.400, 0.404]),  # the best baseline: 0.402, noise 0.004
        _row(BASELINE, [0.450, 0.451], alpha=30.0),
        _row("q", challenger),
        _row("other", [0.500, 0.501]),
        _row(REFERENCE, [0.300, 0.350]),  # context only: neither a verdict nor the noise
    ]
    verdicts = decide(rows)
    assert set(verdicts) == {"q", "other"}  # the reference is not judged
    assert verdicts["q"]["baseline"]["alpha"] == 3.0
    assert verdicts["q"]["noise"] == pytest.approx(0.004)
    assert verdicts["q"]["adopt"] is adopt
    assert verdicts["other"]["adopt"] is False


def test_scores_are_out_of_fold_and_per_site(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every patient is scored once per repeat, by a fit that never saw them."""
    pooled = load_sites(UCI_SITES)
    n = pooled.y.size
    seen: list[tuple[np.ndarray, np.ndarray]] = []

    def marker(params: dict[str, Any], x: Any, y: Any, train: Any, test: Any) -> Any:
        seen.append((train, test))
        return (test + 1) / (n + 1)  # each patient's own number as its "probability"

    monkeypatch.setattr(recipes, "_fold", marker)
    (row,) = score(pooled.x, pooled.y, pooled.site, [("q", {})], repeats=2, folds=3)
    assert row["group"] == "q" and len(seen) == 2 * 3
    for repeat in (seen[:3], seen[3:]):
        tested = np.concatenate([test for _, test in repeat])
        assert sorted(tested.tolist()) == list(range(n))  # each patient once per repeat
        for train, test in repeat:
            assert not set(train.tolist()) & set(test.tolist())
    # The assembled out-of-fold "probabilities" are the markers, in the patients' order.
    expected = (np.arange(n) + 1) / (n + 1)
    assert row["log_loss"] == pytest.approx(log_loss(pooled.y, expected))
    cleveland = pooled.site == "cleveland"
    by_hand = roc_auc_score(pooled.y[cleveland], expected[cleveland])
    assert row["roc_auc_by_site"]["cleveland"] == pytest.approx(by_hand)
    assert row["repeat_spread"] == pytest.approx(0.0)  # same markers in both repeats


def test_a_real_fit_scores_every_site() -> None:
    pooled = load_sites(UCI_SITES)
    candidate = {"alpha": 3.0, "mask_rate": 0.2, "max_iter": 5}
    (row,) = score(pooled.x, pooled.y, pooled.site, [("q", candidate)], repeats=1, folds=3)
    assert 0 < row["log_loss"] < 1 and set(row["roc_auc_by_site"]) == set(UCI_SITES)


def test_a_reference_is_tuned_and_scored_out_of_fold() -> None:
    pooled = load_sites(UCI_SITES)
    (row,) = score(pooled.x, pooled.y, pooled.site, [(REFERENCE, {"model": "logistic"})], repeats=1)
    assert 0 < row["log_loss"] < 1 and row["group"] == REFERENCE


def test_a_negative_gain_is_written_as_higher() -> None:
    rows = [_row(BASELINE, [0.400, 0.404]), _row("q", [0.410, 0.412])]
    text = recipes.markdown(
        [r | {"roc_auc": 0.9, "roc_auc_by_site": dict.fromkeys(UCI_SITES, 0.9)} for r in rows],
        decide(rows),
    )
    assert "log loss higher by 0.0090" in text and "not adopted" in text
