"""The UCI Heart Disease site files: checksums, counts, gaps, and the documented facts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model.features import FEATURE_NAMES, FEATURES
from training.data import DataError, file_sha256
from training.sites import (
    SITES,
    UCI_SITES,
    load_site,
    load_sites,
    parse_sites,
    site_path,
    statlog_rows_in,
)

# name -> (patients, with disease, complete records); counted from the files by hand.
FACTS = {
    "cleveland": (303, 139, 297),
    "hungarian": (294, 106, 1),
    "switzerland": (123, 115, 0),
}
COL = {n: j for j, n in enumerate(FEATURE_NAMES)}
GOOD = "63,1,1,145,233,1,2,150,0,2.3,3,0,6,0"


@pytest.mark.parametrize("name", UCI_SITES)
def test_site_file_checksum_counts_and_prevalence(name: str) -> None:
    assert file_sha256(site_path(name)) == SITES[name].sha256
    x, y = load_site(name)
    n, sick, complete = FACTS[name]
    assert x.shape == (n, 13) and y.shape == (n,) and SITES[name].n_patients == n
    assert int(y.sum()) == sick
    assert int((~np.isnan(x).any(axis=1)).sum()) == complete


def test_required_features_are_never_missing_and_gaps_only_where_allowed() -> None:
    for name in UCI_SITES:
        x, _ = load_site(name)
        for j, f in enumerate(FEATURES):
            if not f.may_be_missing:
                assert not np.isnan(x[:, j]).any(), (name, f.name)


def test_every_feature_marked_missing_is_missing_somewhere() -> None:
    """The decision 'may be missing' is taken from the data: no feature is marked without cause."""
    pooled = load_sites(UCI_SITES)
    missing_somewhere = np.isnan(pooled.x).any(axis=0)
    assert missing_somewhere.tolist() == [f.may_be_missing for f in FEATURES]


def test_zero_cholesterol_means_not_measured_and_st_elevation_is_kept() -> None:
    x, _ = load_site("switzerland")
    assert np.isnan(x[:, COL["serum_cholesterol"]]).all()  # all 123 Swiss values are 0
    assert np.nanmin(x[:, COL["st_depression"]]) == pytest.approx(-2.6)
    xh, _ = load_site("hungarian")
    assert np.isnan(xh[:, COL["num_major_vessels"]]).sum() == 291
    assert np.isnan(xh[:, COL["thal"]]).sum() == 266


def test_all_statlog_rows_are_in_cleveland_with_the_same_diagnosis() -> None:
    xs, ys = load_site("statlog")
    xc, yc = load_site("cleveland")
    assert statlog_rows_in(xs, xc).all()
    index = {tuple(r.tolist()): int(t) for r, t in zip(xc, yc, strict=True)}
    assert [index[tuple(r.tolist())] for r in xs] == ys.tolist()


def test_pooling_statlog_with_cleveland_counts_no_patient_twice() -> None:
    both = load_sites(["statlog", "cleveland"])
    assert both.x.shape[0] == 303 and set(both.site.tolist()) == {"cleveland"}
    alone = load_sites(["statlog"])
    assert alone.x.shape[0] == 270
    three = load_sites(list(UCI_SITES))
    assert three.x.shape[0] == 720 and three.sha256["hungarian"] == SITES["hungarian"].sha256


def test_changed_site_file_is_refused_unless_accepted(tmp_path: Path) -> None:
    changed = tmp_path / "h.data"
    changed.write_text(site_path("hungarian").read_text() + GOOD + "\n")
    with pytest.raises(DataError, match="accept-data-change"):
        load_site("hungarian", changed)
    x, _ = load_site("hungarian", changed, verify_checksum=False)
    assert x.shape == (295, 13)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (GOOD.replace("63,", "?,", 1), r"row 1, column 1 \(age\): is missing"),
        (GOOD.replace(",233,", ",abc,"), r"row 1, column 5 \(serum_cholesterol\): 'abc'"),
        (GOOD.replace(",145,", ",1450,"), r"row 1, column 4 \(resting_blood_pressure\) = 1450"),
        (GOOD.replace(",6,0", ",5,0"), r"row 1, column 13 \(thal\) = 5"),
        (GOOD[:-1] + "7", r"row 1, column 14 \(num\) = 7"),
        (GOOD[:-2], r"row 1 has 13 columns"),
        (GOOD.replace(",0", ",?")[:-1] + "?", r"column 14 \(num\): is missing"),
    ],
)
def test_broken_site_rows_name_row_and_column(tmp_path: Path, content: str, message: str) -> None:
    bad = tmp_path / "bad.data"
    bad.write_text(content + "\n")
    with pytest.raises(DataError, match=message):
        load_site("cleveland", bad, verify_checksum=False)


def test_gaps_and_zeros_become_nan(tmp_path: Path) -> None:
    f = tmp_path / "g.data"
    f.write_text(GOOD.replace(",145,233,", ",0,0,").replace(",0,6,", ",?,?,") + "\n")
    x, y = load_site("cleveland", f, verify_checksum=False)
    nan_cols = np.flatnonzero(np.isnan(x[0])).tolist()
    names = ["resting_blood_pressure", "serum_cholesterol", "num_major_vessels", "thal"]
    assert nan_cols == [COL[n] for n in names]
    assert y.tolist() == [0]


def test_site_names_are_checked() -> None:
    assert parse_sites("cleveland, hungarian") == ("cleveland", "hungarian")
    with pytest.raises(DataError, match="unknown site 'mars'"):
        parse_sites("cleveland,mars")
    with pytest.raises(DataError, match="twice"):
        parse_sites("cleveland,cleveland")
