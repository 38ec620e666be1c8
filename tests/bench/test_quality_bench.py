"""The quality benchmark runs end to end and its target check can fail."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.quality import check_targets
from tests._tools import run

REPO = Path(__file__).resolve().parents[2]


def _result(acc: float, auc: float, cost: float) -> dict[str, Any]:
    return {
        "accuracy": {"mean": acc},
        "roc_auc": {"mean": auc},
        "statlog_cost_tuned": {"mean": cost},
    }


def test_target_check_reports_each_failure() -> None:
    ours, ref = "NumpyMLPClassifier (our default)", "LogisticRegression"
    good = {
        "10-fold x 5": {ours: _result(0.85, 0.91, 0.5), ref: _result(0.83, 0.9, 0.5)},
        "9-fold (StatLog) x 5": {ours: _result(0.85, 0.91, 0.39), ref: _result(0, 0, 0)},
    }
    assert check_targets(good) == []
    bad = {
        "10-fold x 5": {ours: _result(0.82, 0.90, 0.5), ref: _result(0.83, 0.9, 0.5)},
        "9-fold (StatLog) x 5": {ours: _result(0.85, 0.91, 0.41), ref: _result(0, 0, 0)},
    }
    assert len(check_targets(bad)) == 3


@pytest.mark.slow
def test_quality_benchmark_smoke(tmp_path: Path) -> None:
    out = tmp_path / "quality"
    argv = [sys.executable, "-m", "bench.quality", "--repeats", "1", "--output", str(out)]
    proc = run(argv, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.with_suffix(".json").read_text())
    assert set(data["results"]) == {"10-fold x 1", "9-fold (StatLog) x 1"}
    folds = {r["protocol"]["n_folds"] for r in data["results"]["10-fold x 1"].values()}
    assert folds == {10}  # every model on the same protocol
    assert "| LogisticRegression |" in out.with_suffix(".md").read_text()
