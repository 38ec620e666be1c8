"""The risk interval: one-row and batch paths agree, gaps are marginalised, artifacts checked."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model import uncertainty
from model.artifact import ArtifactError, load_artifact, read_payload, save_artifact
from model.features import FEATURE_NAMES, as_row, example_patient
from model.predictor import Predictor
from model.uncertainty import _MAX_LOGIT, _MAX_TANH, RiskEnsemble
from scoring.synthetic import registry


@pytest.fixture(scope="module")
def predictor(artifact_path: Path) -> Predictor:
    return load_artifact(artifact_path)


def test_the_artifact_carries_an_ensemble_sharing_background_and_calibration(
    predictor: Predictor,
) -> None:
    ensemble = predictor.ensemble
    assert ensemble is not None and ensemble.size >= 2
    assert ensemble.background is not None
    np.testing.assert_array_equal(ensemble.background, np.asarray(predictor.background))


def test_one_row_and_batch_intervals_agree_and_bracket_plausibly(
    predictor: Predictor, heart_data: tuple[np.ndarray, np.ndarray]
) -> None:
    ensemble = predictor.ensemble
    assert ensemble is not None
    x = heart_data[0][:40]
    lo, hi = ensemble.interval(x)
    assert np.all((lo > 0) & (lo < hi) & (hi < 1))
    p = predictor.probability(x)
    for i, row in enumerate(x):
        # /predict's one pass over the served network and the members, against the batch paths.
        one = predictor.risk_one(row)
        assert one == pytest.approx((p[i], lo[i], hi[i], True), abs=1e-12)
    # The band is about the same risk as the point estimate: most points lie inside.
    assert np.mean((lo <= p) & (p <= hi)) >= 0.8


@pytest.mark.parametrize("recalibration", [(0.0, 1.0), (-0.7, 1.4)])
def test_one_row_and_batch_intervals_agree_for_records_with_gaps(
    predictor: Predictor,
    heart_data: tuple[np.ndarray, np.ndarray],
    recalibration: tuple[float, float],
) -> None:
    """/predict's one-row path (distinct fillings cached per pattern, weighted, the served
    network and the members in one pass) against the batch paths (every background row),
    for several patterns, each met twice."""
    assert predictor.ensemble is not None
    a, b = recalibration
    ensemble = dataclasses.replace(predictor.ensemble, calibration_intercept=a, calibration_slope=b)
    recalibrated = dataclasses.replace(
        predictor, calibration_intercept=a, calibration_slope=b, ensemble=ensemble
    )
    x = np.array(heart_data[0][:30], dtype=float)
    rng = np.random.default_rng(7)
    gaps = rng.random(x.shape) < 0.3
    gaps[:, :3] = False  # age, sex and chest pain type are never missing
    gaps[:, FEATURE_NAMES.index("thal")] |= np.arange(len(x)) % 2 == 0
    x[gaps] = np.nan
    x = np.vstack([x, x])
    lo, hi = ensemble.interval(x)
    p = recalibrated.probability(x)
    for i, row in enumerate(x):
        one = recalibrated.risk_one(row)
        assert one == pytest.approx((p[i], lo[i], hi[i], bool(np.isfinite(row).all())), abs=1e-12)


def test_a_missing_value_is_marginalised_like_the_predictor_does(predictor: Predictor) -> None:
    ensemble = predictor.ensemble
    assert ensemble is not None
    row = np.array(as_row(example_patient()))
    row[FEATURE_NAMES.index("thal")] = np.nan
    members = ensemble.member_probabilities(row)[0]
    # Each member averaged over the background rows' thal values, by hand:
    bg = np.asarray(ensemble.background)
    filled = np.repeat(row[None, :], bg.shape[0], axis=0)
    filled[:, FEATURE_NAMES.index("thal")] = bg[:, FEATURE_NAMES.index("thal")]
    by_hand = ensemble.member_probabilities(filled).mean(axis=0)
    if ensemble.calibration_intercept == 0.0 and ensemble.calibration_slope == 1.0:
        np.testing.assert_allclose(members, by_hand, atol=1e-12)
    _, lo, hi, complete = predictor.risk_one(row)
    assert 0 < lo < hi < 1 and not complete


def test_hiding_vessels_and_thal_widens_the_interval_on_average(
    predictor: Predictor, heart_data: tuple[np.ndarray, np.ndarray]
) -> None:
    """The same patients with two tests not done: the background rows that stand in for
    them spread the outputs, and the band must say so (issue 10)."""
    ensemble = predictor.ensemble
    assert ensemble is not None
    x = heart_data[0][:80]
    x = x[~np.isnan(x).any(axis=1)]
    hidden = x.copy()
    hidden[:, [FEATURE_NAMES.index("num_major_vessels"), FEATURE_NAMES.index("thal")]] = np.nan
    lo, hi = ensemble.interval(x)
    hlo, hhi = ensemble.interval(hidden)
    assert len(x) >= 40
    assert float(np.mean(hhi - hlo)) > 1.2 * float(np.mean(hi - lo))
    # ... while a complete record's band is the members' spread alone, as before.
    _, within = ensemble.member_spread(x)
    np.testing.assert_array_equal(within, 0.0)


def test_a_damaged_ensemble_is_refused_on_load(artifact_path: Path, tmp_path: Path) -> None:
    payload: dict[str, Any] = read_payload(artifact_path)
    broken = dict(payload["ensemble"])
    broken["W1"] = np.asarray(broken["W1"])[:, :5]
    path = tmp_path / "broken.joblib"
    with pytest.raises(ArtifactError, match="ensemble W1"):
        save_artifact({**payload, "ensemble": broken}, path)


def test_members_stay_single_networks_beside_the_seed_averaged_point_network(
    artifact_path: Path,
) -> None:
    """The served network averages 2 seeds (16 units); each member is one 8-unit network."""
    payload: dict[str, Any] = read_payload(artifact_path)
    assert np.asarray(payload["weights"]["W1"]).shape == (13, 16)
    members = np.asarray(payload["ensemble"]["W1"])
    assert members.shape[1:] == (13, 8)
    loaded = load_artifact(artifact_path)
    assert loaded.n_hidden == 16 and loaded.ensemble is not None
    assert loaded.ensemble.size == members.shape[0]


def test_no_ensemble_means_no_interval(artifact_path: Path, tmp_path: Path) -> None:
    payload = read_payload(artifact_path)
    payload.pop("ensemble")
    save_artifact(payload, tmp_path / "plain.joblib")
    plain = load_artifact(tmp_path / "plain.joblib")
    assert plain.ensemble is None
    assert dataclasses.replace(plain).probability_one(as_row(example_patient())) > 0


@pytest.mark.parametrize("recalibration", [(0.0, 1.0), (-0.7, 1.4), (0.3, 0.6)])
def test_complete_row_band_equals_the_per_member_band(
    predictor: Predictor, recalibration: tuple[float, float]
) -> None:
    """``band_of_logits`` takes the mean and spread of the raw log-odds and recalibrates
    them; it must equal recalibrating each member first (``_band``), and fall back to
    that when a member's log-odds is beyond the clip (a saturated output)."""
    assert predictor.ensemble is not None
    a, b = recalibration
    ensemble = dataclasses.replace(predictor.ensemble, calibration_intercept=a, calibration_slope=b)
    rng = np.random.default_rng(3)
    cases = [list(rng.normal(rng.normal(0, 4), rng.uniform(0, 2), 10)) for _ in range(200)]
    cases += [[2.5] * 10, [1e3, *rng.normal(0, 1, 9)], [-1e3] * 10]  # equal; saturated
    for logits in cases:
        clipped = [max(-_MAX_LOGIT, min(_MAX_LOGIT, v)) for v in logits]
        by_member = ensemble._band([a + b * v for v in clipped])
        fast = ensemble.band_of_logits(logits)
        assert fast == pytest.approx(by_member, abs=1e-12)
        assert 0.0 <= fast[0] <= fast[1] <= 1.0


@pytest.mark.parametrize("recalibration", [(0.0, 1.0), (-0.7, 1.4), (20.0, 2.0)])
def test_gap_row_band_equals_the_per_member_band(
    predictor: Predictor, recalibration: tuple[float, float]
) -> None:
    """``band_of_marginals`` recalibrates the mean and spread of the members' log-odds
    when nothing needs the clip; it must equal clipping and recalibrating each member
    (the fallback), for saturated members and a recalibration that pushes past the clip."""
    assert predictor.ensemble is not None
    a, b = recalibration
    ensemble = dataclasses.replace(predictor.ensemble, calibration_intercept=a, calibration_slope=b)
    rng = np.random.default_rng(5)
    for case in range(200):
        logits = rng.normal(rng.normal(0, 4), rng.uniform(0, 2), 10)
        if case % 20 == 0:
            logits[0] = 80.0  # tanh(40) == 1.0 in floats: a saturated member
        mean_tanh = list(np.tanh(logits / 2))
        z_mean = list(rng.normal(0, 2, 10))
        z_square = [m * m + rng.uniform(0, 1) for m in z_mean]
        within = b * b * (sum(z_square) - sum(m * m for m in z_mean)) / 10
        clip_t, clip_z = _MAX_TANH, _MAX_LOGIT
        members = [
            max(-clip_z, min(clip_z, a + 2 * b * math.atanh(max(-clip_t, min(clip_t, t)))))
            for t in mean_tanh
        ]
        expected = ensemble._band(members, within)
        assert ensemble.band_of_marginals(mean_tanh, z_mean, z_square) == pytest.approx(
            expected, abs=1e-12
        )


def brute_force_spread(ensemble: RiskEnsemble, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The reference ``member_spread`` replaced: every row repeated over all K background
    rows (a complete row too), its gaps filled from them, plain means over the K rows."""
    background = ensemble.background
    k, b, h = len(background), ensemble.size, ensemble.w1.shape[1] // ensemble.size
    filled = np.repeat(x, k, axis=0)
    gaps = np.isnan(filled)
    filled[gaps] = np.tile(background, (len(x), 1))[gaps]
    hidden = np.maximum(filled @ ensemble.w1 + ensemble.b1, 0.0).reshape(-1, b, h)
    z = (np.einsum("rbh,bh->rb", hidden, ensemble.w2) + ensemble.b2).reshape(len(x), k, b)
    p = (1.0 / (1.0 + np.exp(-z))).mean(axis=1)
    a, slope = ensemble.calibration_intercept, ensemble.calibration_slope
    q = np.clip(p, 1e-15, 1.0 - 1e-15)
    p = 1.0 / (1.0 + np.exp(-(a + slope * np.log(q / (1.0 - q)))))
    within = slope**2 * np.clip(z, -_MAX_LOGIT, _MAX_LOGIT).var(axis=1).mean(axis=1)
    return p, within


@pytest.mark.parametrize("recalibration", [(0.0, 1.0), (-0.7, 1.4)])
def test_member_spread_equals_repeating_every_row_over_the_background(
    predictor: Predictor,
    heart_data: tuple[np.ndarray, np.ndarray],
    recalibration: tuple[float, float],
) -> None:
    """Complete rows evaluated once, gapped rows grouped by pattern over their distinct
    weighted fillings (in parts smaller than a group): the same probabilities and
    within-filling variance as the brute force, on a mix of complete rows and many
    patterns (the sites' three, random ones, every optional feature missing)."""
    assert predictor.ensemble is not None
    a, b = recalibration
    ensemble = dataclasses.replace(predictor.ensemble, calibration_intercept=a, calibration_slope=b)
    x = np.array(heart_data[0][:120], dtype=float)
    rng = np.random.default_rng(11)
    gaps = rng.random(x.shape) < 0.25
    gaps[:, :3] = False  # age, sex and chest pain type are never missing
    gaps[::3] = False  # a third of the rows complete
    thal, vessels = FEATURE_NAMES.index("thal"), FEATURE_NAMES.index("num_major_vessels")
    gaps[1::6, :] = False
    gaps[1::6, [vessels, thal]] = True  # one pattern met 20 times
    gaps[5::12, 3:] = True  # everything optional missing: the most fillings
    x[gaps] = np.nan
    rng.shuffle(x)
    expected_p, expected_within = brute_force_spread(ensemble, x)
    for filled_rows in (uncertainty._FILLED_ROWS, 50):  # 50: groups split into parts
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(uncertainty, "_FILLED_ROWS", filled_rows)
            p, within = dataclasses.replace(ensemble).member_spread(x)
        np.testing.assert_allclose(p, expected_p, rtol=0, atol=1e-12)
        np.testing.assert_allclose(within, expected_within, rtol=0, atol=1e-12)
        assert np.all(within[np.isfinite(x).all(axis=1)] == 0.0)
        assert np.all(within[~np.isfinite(x).all(axis=1)] > 0.0)
    # One row at a time (the /predict/batch of one) and all complete rows: the same.
    for i in range(0, len(x), 17):
        one_p, one_within = ensemble.member_spread(x[i])
        np.testing.assert_allclose(one_p[0], expected_p[i], rtol=0, atol=1e-12)
        assert one_within[0] == pytest.approx(expected_within[i], abs=1e-12)
    complete = np.isfinite(x).all(axis=1)
    p, within = ensemble.member_spread(x[complete])
    np.testing.assert_allclose(p, expected_p[complete], rtol=0, atol=1e-12)
    assert not within.any()


@pytest.mark.parametrize("recalibration", [(0.0, 1.0), (-0.7, 1.4)])
def test_complete_rows_interval_takes_the_members_log_odds_directly(
    predictor: Predictor, recalibration: tuple[float, float]
) -> None:
    """A complete row's band comes from its members' output log-odds, recalibrated, as
    ``/predict`` computes it, not through the probability and back (which lost up to
    ~1e-9 at the low end with this recalibration); the block size changes nothing
    beyond summation order."""
    assert predictor.ensemble is not None
    a, b = recalibration
    ensemble = dataclasses.replace(predictor.ensemble, calibration_intercept=a, calibration_slope=b)
    recalibrated = dataclasses.replace(
        predictor, calibration_intercept=a, calibration_slope=b, ensemble=ensemble
    )
    x = registry(3000, seed=4)[list(FEATURE_NAMES)].to_numpy(dtype=float)
    lo, hi = ensemble.interval(x)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(uncertainty, "_BLOCK_ROWS", 7)
        np.testing.assert_allclose(ensemble.interval(x), (lo, hi), rtol=0, atol=1e-14)
    for i in range(0, len(x), 13):
        _, one_lo, one_hi, _ = recalibrated.risk_one(x[i])
        assert (one_lo, one_hi) == pytest.approx((lo[i], hi[i]), abs=1e-13)
