"""When the model has an uncertainty interval, every output gains its two columns."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import numpy.typing as npt

from model.artifact import load_artifact
from model.columns import validate_columns
from model.features import FEATURE_NAMES
from model.predictor import Predictor
from scoring.core import HIGH, LOW, output_columns, score_batch
from scoring.frame import score_frame
from scoring.synthetic import registry


@dataclasses.dataclass(frozen=True, eq=False)
class WithInterval(Predictor):
    """A stand-in for issue 10's ensemble: a fixed band around the probability."""

    def probability_interval(
        self, rows: npt.NDArray[np.float64]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        p = self.probability(rows)
        return np.clip(p - 0.05, 0, 1), np.clip(p + 0.05, 0, 1)


def test_interval_columns_appear_only_when_the_model_has_one(artifact_path: Path) -> None:
    plain = load_artifact(artifact_path)
    fields = {f.name: getattr(plain, f.name) for f in dataclasses.fields(plain) if f.init}
    banded = WithInterval(**fields)
    assert output_columns(plain) == ["probability", "prediction"]
    assert output_columns(banded) == ["probability", "prediction", LOW, HIGH]

    df = registry(30, seed=8)
    df.loc[4, "age"] = 500
    batch = validate_columns({n: df[n].to_numpy() for n in FEATURE_NAMES})
    scores = score_batch(banded, batch)
    assert scores.low is not None and scores.high is not None
    valid = batch.valid
    assert np.allclose(scores.low[valid], np.clip(scores.probability[valid] - 0.05, 0, 1))
    assert np.isnan(scores.low[4]) and np.isnan(scores.high[4])

    out = score_frame(df, banded)
    assert list(out.columns) == ["probability", "prediction", LOW, HIGH, "error"]
    assert (out[HIGH].dropna() >= out["probability"].dropna()).all()
