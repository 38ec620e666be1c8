"""The four sites of the UCI Heart Disease data: one loader per file, one way to pool them.

Statlog (``heart.dat``, 270 complete rows) is what the tutorial trained on. The
three "processed" files of the UCI Heart Disease database (Cleveland, Budapest,
Zurich/Basel) add real patients with real gaps. Their loader keeps a gap a gap:
``?`` becomes NaN, and so does a cholesterol or blood pressure of 0, which in
these files means "not measured" (all 123 Swiss cholesterol values are 0). A
gap is never filled here: what to do about it is the model's business.

Every file is verified against its published SHA-256 before it is parsed, as
``heart.dat`` is, so results stay comparable with the committed report.

All 270 Statlog patients also occur in the Cleveland file with the same
diagnosis (``data/README.md``); :func:`load_sites` therefore drops them from
Statlog when both are asked for, so no patient is counted twice.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from model.arrays import FloatArray, IntArray
from model.features import FEATURE_NAMES, FEATURES, N_FEATURES
from training.data import DataError, check_cells, default_data_path, file_sha256, load_dataset

TARGET_NAME: Final[str] = "num"
#: Columns where 0 in the source files means "not measured" (a living patient has neither).
ZERO_MEANS_MISSING: Final[tuple[str, ...]] = ("resting_blood_pressure", "serum_cholesterol")


@dataclass(frozen=True)
class Site:
    """One source file: where it comes from, how many patients, and its published digest."""

    name: str
    place: str
    filename: str
    sha256: str
    n_patients: int


SITES: Final[dict[str, Site]] = {
    "statlog": Site(
        "statlog",
        "Statlog (Heart): a 270-patient subset of Cleveland",
        "heart.dat",
        "f5f3b4204c285bafadd85cb735f38b47689f2be7047feb172dcbeab648110bf9",
        270,
    ),
    "cleveland": Site(
        "cleveland",
        "Cleveland Clinic Foundation",
        "processed.cleveland.data",
        "a74b7efa387bc9d108d7d0115d831fe9b414b29ae7124f331b622b4efa0427c8",
        303,
    ),
    "hungarian": Site(
        "hungarian",
        "Hungarian Institute of Cardiology, Budapest",
        "processed.hungarian.data",
        "d1ad108f785768cd3d7e82dc522e6f5a61eea93cccfb3a46ee8076f73fc3d796",
        294,
    ),
    "switzerland": Site(
        "switzerland",
        "University Hospitals of Zurich and Basel",
        "processed.switzerland.data",
        "834a405ccf5b66ab4056bb77794adc8df0b7125186454c0a1d002d33c6c3b314",
        123,
    ),
}
#: The three sites of the UCI Heart Disease database, the leave-one-site-out protocol's.
UCI_SITES: Final[tuple[str, ...]] = ("cleveland", "hungarian", "switzerland")


def site_path(name: str) -> Path:
    """The site's file in ``data/`` of the source tree (or of the working directory)."""
    if name == "statlog":
        return default_data_path()
    return default_data_path().parent / SITES[_known(name)].filename


def _known(name: str) -> str:
    if name not in SITES:
        raise DataError(f"unknown site {name!r}: choose from {', '.join(SITES)}")
    return name


def parse_site_rows(lines: Sequence[str], *, source: str = "<data>") -> tuple[FloatArray, IntArray]:
    """Parse comma-separated UCI rows into ``(X, y)`` with NaN for every gap.

    A problem names its row and column. ``?`` is accepted only where the
    feature may be missing (``Feature.may_be_missing``); anything else must be a
    number inside the feature's domain. The target ``num`` (0 to 4) becomes
    disease = ``num > 0``.
    """
    names = (*FEATURE_NAMES, TARGET_NAME)
    zero_cols = [FEATURE_NAMES.index(n) for n in ZERO_MEANS_MISSING]
    rows: list[list[float]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.split(",")
        if len(fields) != N_FEATURES + 1:
            raise DataError(
                f"{source}: row {number} has {len(fields)} columns, expected {N_FEATURES + 1}"
            )
        values: list[float] = []
        for col, text in enumerate(fields):
            text = text.strip()
            if text == "?":
                if col == N_FEATURES or not FEATURES[col].may_be_missing:
                    raise DataError(
                        f"{source}: row {number}, column {col + 1} ({names[col]}): "
                        "is missing ('?'), which this column may not be"
                    )
                values.append(float("nan"))
                continue
            try:
                values.append(float(text))
            except ValueError:
                raise DataError(
                    f"{source}: row {number}, column {col + 1} ({names[col]}): "
                    f"{text!r} is not a number or '?'"
                ) from None
        for col in zero_cols:
            if values[col] == 0.0:
                values[col] = float("nan")
        rows.append(values)
    if not rows:
        raise DataError(f"{source}: no data rows")
    table = np.array(rows, dtype=np.float64)
    x, num = table[:, :N_FEATURES], table[:, N_FEATURES]
    check_cells(source, x, allow_missing=True)
    bad = np.flatnonzero(~np.isin(num, [0.0, 1.0, 2.0, 3.0, 4.0]))
    if bad.size:
        row = int(bad[0])
        raise DataError(
            f"{source}: row {row + 1}, column {N_FEATURES + 1} ({TARGET_NAME}) = {num[row]:g}: "
            "must be 0 (no disease) to 4"
        )
    return x, (num > 0).astype(np.int64)


def load_site(
    name: str, path: str | os.PathLike[str] | None = None, *, verify_checksum: bool = True
) -> tuple[FloatArray, IntArray]:
    """``(X, y)`` of one site; ``statlog`` is ``heart.dat``, the others keep NaN for gaps."""
    site = SITES[_known(name)]
    if name == "statlog":
        return load_dataset(path, verify_checksum=verify_checksum)
    source = Path(path) if path is not None else site_path(name)
    if not source.is_file():
        raise DataError(f"data file not found: {source}")
    if verify_checksum:
        digest = file_sha256(source)
        if digest != site.sha256:
            raise DataError(
                f"data file {source} has SHA-256 {digest}, not the published {site.sha256}; "
                "pass --accept-data-change to train on a modified file on purpose"
            )
    return parse_site_rows(source.read_text(encoding="utf-8").splitlines(), source=str(source))


def parse_sites(text: str) -> tuple[str, ...]:
    """``"cleveland,hungarian"`` -> ``("cleveland", "hungarian")``, each known, none twice."""
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    if not names:
        raise DataError("no site given: choose from " + ", ".join(SITES))
    for n in names:
        _known(n)
    if len(set(names)) != len(names):
        raise DataError(f"a site is listed twice in {text!r}")
    return names


@dataclass(frozen=True)
class Pooled:
    """Rows of several sites, with the site of each row (for leave-one-site-out splits)."""

    x: FloatArray
    y: IntArray
    site: npt.NDArray[np.str_]
    sha256: dict[str, str]


def statlog_rows_in(x_statlog: FloatArray, x_other: FloatArray) -> npt.NDArray[np.bool_]:
    """Which Statlog rows also occur (all 13 values equal) among ``x_other``'s rows."""
    other = {tuple(np.nan_to_num(r, nan=-1.0).tolist()) for r in x_other}
    return np.array([tuple(r.tolist()) in other for r in x_statlog], dtype=bool)


def load_sites(
    names: Sequence[str],
    *,
    verify_checksum: bool = True,
    statlog_path: str | os.PathLike[str] | None = None,
) -> Pooled:
    """Pool the named sites; Statlog rows already present in Cleveland are left out."""
    paths = {n: (Path(statlog_path) if n == "statlog" and statlog_path else None) for n in names}
    parts: dict[str, tuple[FloatArray, IntArray]] = {
        n: load_site(n, paths[n], verify_checksum=verify_checksum) for n in names
    }
    if "statlog" in parts and "cleveland" in parts:
        xs, ys = parts["statlog"]
        keep = ~statlog_rows_in(xs, parts["cleveland"][0])
        parts["statlog"] = (xs[keep], ys[keep])
    xs_all = [parts[n][0] for n in names]
    ys_all = [parts[n][1] for n in names]
    site = np.concatenate([np.full(parts[n][1].size, n) for n in names])
    digests = {n: file_sha256(paths[n] or site_path(n)) for n in names}
    return Pooled(np.vstack(xs_all), np.concatenate(ys_all), site, digests)
