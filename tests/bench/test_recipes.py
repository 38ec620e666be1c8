"""The pre-set rule of ``python -m bench.recipes``, on made-up scores and on a tiny real run."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from bench.recipes import decide, points, score
from training.sites import UCI_SITES, load_sites


def _row(draws: str, losses: list[float], alpha: float = 3.0) -> dict[str, Any]:
    return {
        "params": {"draws": draws, "alpha": alpha, "mask_rate": 0.2},
        "log_loss_repeats": losses,
        "log_loss": float(np.mean(losses)),
        "repeat_spread": max(losses) - min(losses),
    }


def test_every_grid_point_is_scored_under_both_recipes() -> None:
    grid = points()
    assert len(grid) == 12
    assert {p["draws"] for p in grid} == {"marginal", "outcome"}
    assert sum(p["draws"] == "outcome" for p in grid) == 6


@pytest.mark.parametrize(
    ("challenger", "adopt"),
    [([0.390, 0.392], True), ([0.399, 0.400], False), ([0.420, 0.421], False)],
)
def test_a_challenger_must_beat_the_best_baseline_by_more_than_the_repeat_noise(
    challenger: list[float], adopt: bool
) -> None:
    rows = [
        _row("marginal", [0.400, 0.404]),  # the best baseline: 0.402, noise 0.004
        _row("marginal", [0.450, 0.451], alpha=30.0),
        _row("outcome", challenger),
    ]
    decision = decide(rows)
    assert decision["baseline"]["alpha"] == 3.0
    assert decision["noise"] == pytest.approx(0.004)
    assert decision["adopt"] is adopt


def test_scores_are_out_of_fold_and_per_site() -> None:
    pooled = load_sites(UCI_SITES)
    candidate = {"draws": "outcome", "alpha": 3.0, "mask_rate": 0.2, "max_iter": 5}
    (row,) = score(pooled.x, pooled.y, pooled.site, [candidate], repeats=2, folds=3)
    assert len(row["log_loss_repeats"]) == 2 and all(v > 0 for v in row["log_loss_repeats"])
    assert row["repeat_spread"] == pytest.approx(abs(np.subtract(*row["log_loss_repeats"])))
    assert set(row["roc_auc_by_site"]) == set(UCI_SITES)
