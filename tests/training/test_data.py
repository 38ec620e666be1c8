"""Loading heart.dat: the real file, the checksum guard, and every kind of broken file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.data import (
    EXPECTED_SHA256,
    DataError,
    default_data_path,
    file_sha256,
    load_dataset,
    split,
)

GOOD_ROW = "70.0 1.0 4.0 130.0 322.0 0.0 2.0 109.0 0.0 2.4 2.0 3.0 3.0 2"


def test_real_file_loads_with_published_checksum() -> None:
    assert file_sha256(default_data_path()) == EXPECTED_SHA256
    x, y = load_dataset()
    assert x.shape == (270, 13) and x.dtype == np.float64
    assert sorted(np.unique(y).tolist()) == [0, 1]
    assert int((y == 0).sum()) == 150 and int((y == 1).sum()) == 120
    # first row of the file, target 2 -> 1
    np.testing.assert_array_equal(x[0], [float(v) for v in GOOD_ROW.split()[:13]])
    assert y[0] == 1


def test_changed_file_is_refused_unless_accepted(tmp_path: Path) -> None:
    changed = tmp_path / "heart.dat"
    changed.write_text(default_data_path().read_text() + GOOD_ROW + "\n")
    with pytest.raises(DataError, match="accept-data-change"):
        load_dataset(changed)
    x, _ = load_dataset(changed, verify_checksum=False)
    assert x.shape == (271, 13)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (GOOD_ROW + "\n" + " ".join(GOOD_ROW.split()[:13]) + "\n", r"row 2 has 13 columns"),
        (GOOD_ROW.replace("322.0", "?") + "\n", r"row 1, column 5 \(serum_cholesterol\).*'\?'"),
        (
            GOOD_ROW.replace("130.0", "1300.0") + "\n",
            r"row 1, column 4 \(resting_blood_pressure\) = 1300.*between 60 and 260",
        ),
        (GOOD_ROW.replace(" 3.0 2", " 5.0 2") + "\n", r"column 13 \(thal\) = 5.*one of 3"),
        (GOOD_ROW.replace("2.4", "nan") + "\n", r"column 10 \(st_depression\).*finite"),
        (GOOD_ROW[:-1] + "3\n", r"row 1, column 14 \(target\) = 3"),
        ("\n\n", "no data rows"),
    ],
)
def test_broken_files_name_row_and_column(tmp_path: Path, content: str, message: str) -> None:
    bad = tmp_path / "bad.dat"
    bad.write_text(content)
    with pytest.raises(DataError, match=message):
        load_dataset(bad, verify_checksum=False)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_dataset(tmp_path / "nope.dat")


def test_split_is_stratified_and_reproducible() -> None:
    x, y = load_dataset()
    a = split(x, y)
    b = split(x, y)
    x_train, x_test, y_train, y_test = a
    assert x_train.shape == (216, 13) and x_test.shape == (54, 13)
    for u, v in zip(a, b, strict=True):
        np.testing.assert_array_equal(u, v)
    assert abs(y_test.mean() - y.mean()) < 0.01 and abs(y_train.mean() - y.mean()) < 0.01
