"""``heart-train recalibrate``: round trip, what it keeps, what it records, bad input."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from model.artifact import load_artifact, read_payload
from model.columns import MISSING_MARKERS
from model.features import FEATURE_NAMES
from training.calibration import calibration_intercept_slope, recalibrate, slope_interval
from training.cli import main as cli
from training.data import DataError, file_sha256
from training.recalibrate import (
    MIN_CELL,
    OUTCOME,
    base_predictor,
    by_sex,
    read_local_csv,
    recalibrated_version,
)
from training.sites import load_site


def write_csv(path: Path, x: np.ndarray, y: np.ndarray) -> Path:  # type: ignore[type-arg]
    lines = [",".join((*FEATURE_NAMES, OUTCOME))]
    for row, label in zip(x, y, strict=True):
        cells = ["" if np.isnan(v) else f"{v:g}" for v in row]
        lines.append(",".join([*cells, str(int(label))]))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def hungarian_half(tmp_path_factory: pytest.TempPathFactory) -> Path:
    x, y = load_site("hungarian")  # blanks: almost every row lacks vessels and thal
    return write_csv(tmp_path_factory.mktemp("local") / "local.csv", x[::2], y[::2])


def test_round_trip_keeps_weights_and_records_the_recalibration(
    artifact_path: Path, hungarian_half: Path, tmp_path: Path
) -> None:
    out = tmp_path / "local.joblib"
    assert cli(["recalibrate", "--model", str(artifact_path), "--data", str(hungarian_half),
                "--output", str(out), "--tune-threshold"]) == 0  # fmt: skip
    before, after = read_payload(artifact_path), read_payload(out)
    for key, value in before["weights"].items():
        np.testing.assert_array_equal(value, after["weights"][key])
    np.testing.assert_array_equal(before["background"], after["background"])
    r = after["recalibration"]
    assert r["data_sha256"] == file_sha256(hungarian_half) and r["data_file"] == "local.csv"
    assert after["model_version"] == recalibrated_version(
        before["model_version"], r["intercept"], r["slope"], r["threshold"], r["data_sha256"]
    )
    assert after["threshold"] == r["threshold"] and r["threshold_tuned"]
    assert after["threshold_strategy"] == "tuned-locally" and r["earlier"] == []

    # The served predictor applies exactly the recorded intercept and slope.
    x, y = load_site("hungarian")
    x, y = x[::2], y[::2]
    base = load_artifact(artifact_path).probability(x)
    served = load_artifact(out).probability(x)
    np.testing.assert_allclose(served, recalibrate(base, r["intercept"], r["slope"]), rtol=1e-9)
    # Logistic recalibration with an intercept matches the mean on the data it was fitted on,
    # and leaves nothing to recalibrate: intercept 0, slope 1.
    assert served.mean() == pytest.approx(y.mean(), abs=1e-4)
    a, b = calibration_intercept_slope(y, served)
    assert a == pytest.approx(0.0, abs=1e-3) and b == pytest.approx(1.0, abs=1e-3)
    assert r["after"]["mean_predicted"] == pytest.approx(served.mean(), abs=1e-9)
    assert r["before"]["mean_predicted"] == pytest.approx(base.mean(), abs=1e-9)
    # The per-sex check: each sex's mean risk through the served path, before and after.
    sex = x[:, FEATURE_NAMES.index("sex")]
    for name, rows in (("women", sex == 0), ("men", sex == 1)):
        g = r["by_sex"][name]
        assert g["n"] == int(rows.sum())
        assert min(y[rows].sum(), (1 - y[rows]).sum()) >= MIN_CELL
        assert g["observed"] == pytest.approx(y[rows].mean())
        assert g["mean_predicted_before"] == pytest.approx(base[rows].mean(), abs=1e-9)
        assert g["mean_predicted_after"] == pytest.approx(served[rows].mean(), abs=1e-9)

    # Recalibrating the recalibrated model refits from the network's own output: same fit.
    again = tmp_path / "again.joblib"
    assert cli(["recalibrate", "--model", str(out), "--data", str(hungarian_half),
                "--output", str(again)]) == 0  # fmt: skip
    r2 = read_payload(again)["recalibration"]
    assert r2["intercept"] == pytest.approx(r["intercept"]) and r2["slope"] == pytest.approx(
        r["slope"]
    )
    assert read_payload(again)["base_model_version"] == before["model_version"]
    np.testing.assert_allclose(base_predictor(again).probability(x), base, rtol=1e-12)
    # ... and lists the recalibration it replaced.
    assert [e["model_version"] for e in r2["earlier"]] == [after["model_version"]]


def blank_first_age(text: str) -> str:
    header, first, rest = text.split("\n", 2)
    return "\n".join([header, "," + first.split(",", 1)[1], rest])


def edit_line(number: int, change: object) -> object:
    """An edit of the file's line ``number`` (1 = the header) by ``change(line)``."""

    def edit(text: str) -> str:
        lines = text.split("\n")
        lines[number - 1] = change(lines[number - 1])  # type: ignore[operator]
        return "\n".join(lines)

    return edit


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace(",outcome", ",result"), "lacks the column"),
        # Rows counted as heart-score counts them (from 0, no header), the file's line beside.
        (blank_first_age, r"row 0 \(line 2 of the file\), column age: must be a finite number"),
        (lambda t: t[: t.rindex(",")] + ",2\n", r"column outcome: must be 0 \(no disease\) or 1"),
        (edit_line(1, lambda h: h.replace(",sex,", ",age,")), r"names the column\(s\) age more"),
        (edit_line(5, lambda row: row + ",7"), r"row 3 \(line 5 of the file\) has 15 cells, more"),
        (edit_line(5, lambda row: row.rsplit(",", 1)[0]), r"row 3 \(line 5 .* fewer than the"),
        (
            edit_line(5, lambda row: "?" + row[row.index(",") :]),
            r"age: is not a number; the feature is required: it may not be missing",
        ),
        (lambda t: t.replace(",", ";"), "has no ',' between the column names but has ';': pass"),
        (lambda t: t.replace("age,", "Age,", 1), r"the header has 'Age': names must match"),
        (edit_line(3, lambda row: row.replace(",", "\xe9,", 1)), "line 3 of the file is not UTF-8"),
    ],
)
def test_bad_local_files_are_refused_with_row_and_column(
    artifact_path: Path, hungarian_half: Path, tmp_path: Path, edit: object, message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    bad = tmp_path / "bad.csv"
    bad.write_bytes(edit(hungarian_half.read_text()).encode("utf-8"))  # type: ignore[operator]
    if "UTF-8" in message:
        bad.write_bytes(bad.read_bytes().replace("\xe9".encode(), b"\xe9"))
    code = cli(["recalibrate", "--model", str(artifact_path), "--data", str(bad),
                "--output", str(tmp_path / "x.joblib")])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and "Traceback" not in err
    assert not (tmp_path / "x.joblib").exists()


def test_what_spreadsheets_write_is_read_as_the_plain_file(
    hungarian_half: Path, tmp_path: Path
) -> None:
    """A byte-order mark, ", " separators, CRLF, empty lines and trailing empty cells."""
    want_x, want_y = read_local_csv(hungarian_half)
    lines = hungarian_half.read_text().rstrip("\n").split("\n")
    excel = "\ufeff" + "\r\n".join(
        [lines[0].replace(",", ", "), "", *(line.replace(",", " , ") + ",," for line in lines[1:])]
    )
    excel += "\r\n,,,,,,,,,,,,,,\r\n\r\n"  # an empty row, then an empty line
    (tmp_path / "excel.csv").write_bytes(excel.encode("utf-8"))
    x, y = read_local_csv(tmp_path / "excel.csv")
    np.testing.assert_array_equal(x, want_x)
    np.testing.assert_array_equal(y, want_y)


def test_missing_markers_are_heart_scores(hungarian_half: Path, tmp_path: Path) -> None:
    """The one list, model.columns.MISSING_MARKERS, in a column that may be missing."""
    header, *rows = hungarian_half.read_text().rstrip("\n").split("\n")
    col = FEATURE_NAMES.index("serum_cholesterol")
    cells = [*MISSING_MARKERS, *(f" {m} " for m in MISSING_MARKERS)]
    edited = []
    for i, row in enumerate(rows):
        values = row.split(",")
        values[col] = cells[i % len(cells)]
        edited.append(",".join(values))
    (tmp_path / "marked.csv").write_text("\n".join([header, *edited]) + "\n")
    x, _ = read_local_csv(tmp_path / "marked.csv")
    assert np.isnan(x[:, col]).all()
    # float() reads them all; heart-score does not (model.columns.csv_number)
    for text in ("NAN", "1_000", "\u0661\u0663\u0660", "\uff11\uff13\uff10", "inf"):
        edited[0] = ",".join([*rows[0].split(",")[:col], text, *rows[0].split(",")[col + 1 :]])
        (tmp_path / "marked.csv").write_text("\n".join([header, *edited]) + "\n")
        with pytest.raises(DataError, match="column serum_cholesterol: is not a number") as e:
            read_local_csv(tmp_path / "marked.csv")
        assert text not in str(e.value)  # never the cell itself
    # A number too large for a double is a number, out of range (not "must be finite").
    edited[0] = ",".join([*rows[0].split(",")[:col], "1" * 400, *rows[0].split(",")[col + 1 :]])
    (tmp_path / "marked.csv").write_text("\n".join([header, *edited]) + "\n")
    with pytest.raises(DataError, match="serum_cholesterol: must be between 80 and 700 mg/dl"):
        read_local_csv(tmp_path / "marked.csv")


def test_repeated_splits_use_each_split_both_ways_and_score_the_served_path() -> None:
    """Seed 0 one way is split_demo's report half; every gap is recomputable by hand."""
    from dataclasses import replace

    from sklearn.model_selection import train_test_split

    from training.missing import MarginalMLPClassifier
    from training.recalibrate import repeated_split_gaps, split_demo
    from training.sites import UCI_SITES, load_sites

    pooled = load_sites(UCI_SITES)
    train = pooled.site != "hungarian"
    base = (
        MarginalMLPClassifier(n_networks=1, max_iter=30)
        .fit(pooled.x[train], pooled.y[train])
        .predictor_
    )
    x, y = pooled.x[~train], pooled.y[~train]
    r = repeated_split_gaps(base, x, y, seeds=3)
    assert r["n_fits"] == len(r["report_half_gaps"]) == 6
    demo = split_demo({"hungarian": base}, pooled)["hungarian"]
    after = demo["after"]
    assert r["report_half_gaps"][0] == pytest.approx(
        after["mean_predicted"] - after["observed"], abs=1e-9
    )
    # The second fit of seed 1 by hand: fit on B, report on A, through the predictor.
    a_half, b_half = train_test_split(np.arange(y.size), test_size=0.5, random_state=1, stratify=y)
    a, b = calibration_intercept_slope(y[b_half], base.probability(x[b_half]))
    served = replace(base, calibration_intercept=a, calibration_slope=b)
    assert r["report_half_gaps"][3] == pytest.approx(
        served.probability(x[a_half]).mean() - y[a_half].mean(), abs=1e-12
    )
    gaps = np.array(r["report_half_gaps"])
    assert np.ptp(gaps) > 1e-3  # different splits do give different gaps
    assert r["median"] == pytest.approx(np.median(gaps))
    assert r["share_within_bar"] == pytest.approx(np.mean(np.abs(gaps) <= 0.05))
    assert r["p5"] <= r["median"] <= r["p95"]
    # On its own fit half the unpenalised fit matches the mean: the gaps are the split's.
    assert r["max_abs_fit_half_gap"] < 1e-3


def test_no_sex_is_reported_when_one_has_too_few_patients(
    artifact_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    x, y = load_site("hungarian")
    women = np.flatnonzero(x[:, FEATURE_NAMES.index("sex")] == 0)
    keep = np.concatenate([np.flatnonzero(x[:, FEATURE_NAMES.index("sex")] == 1), women[:5]])
    data = write_csv(tmp_path / "few-women.csv", x[keep], y[keep])
    out = tmp_path / "local.joblib"
    assert cli(["recalibrate", "--model", str(artifact_path), "--data", str(data),
                "--output", str(out)]) == 0  # fmt: skip
    # Neither sex: the men's figures and the whole file's would give the women's away.
    note = "not reported: a sex has fewer than 5 patients with or without disease"
    by_sex = read_payload(out)["recalibration"]["by_sex"]
    assert by_sex == {"women": {"n": None, "note": note}, "men": {"n": None, "note": note}}
    printed = capsys.readouterr().out
    assert f"women  {note}" in printed and f"men    {note}" in printed
    assert "mean predicted" in printed and " before, " not in printed


@pytest.mark.parametrize(
    ("women_with", "women_without", "reported"), [(5, 5, True), (4, 30, False), (30, 4, False)]
)
def test_each_sex_needs_five_patients_with_and_five_without_the_disease(
    women_with: int, women_without: int, reported: bool
) -> None:
    assert MIN_CELL == 5
    sex = np.array([0] * (women_with + women_without) + [1] * 40)
    y = np.array([1] * women_with + [0] * women_without + [1, 0] * 20)
    x = np.zeros((sex.size, len(FEATURE_NAMES)))
    x[:, FEATURE_NAMES.index("sex")] = sex
    p = np.linspace(0.1, 0.9, sex.size)
    figures = by_sex(x, y, p, p / 2)
    if not reported:
        assert {g["n"] for g in figures.values()} == {None}
        return
    women = sex == 0
    assert figures["women"] == {
        "n": 10,
        "observed": 0.5,
        "mean_predicted_before": pytest.approx(p[women].mean()),
        "mean_predicted_after": pytest.approx(p[women].mean() / 2),
    }
    assert figures["men"]["n"] == 40 and figures["men"]["observed"] == 0.5


def recal(artifact: Path, data: Path, out: Path, *flags: str) -> dict[str, object]:
    assert cli(["recalibrate", "--model", str(artifact), "--data", str(data),
                "--output", str(out), *flags]) == 0  # fmt: skip
    return read_payload(out)


def test_the_version_changes_with_everything_that_changes_the_answers(
    artifact_path: Path, hungarian_half: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue: the suffix was the data file's hash alone, so these shared one version."""
    x, y = load_site("switzerland")
    swiss = write_csv(tmp_path / "swiss.csv", x, y)
    fixed = recal(artifact_path, hungarian_half, tmp_path / "fixed.joblib")
    tuned = recal(artifact_path, hungarian_half, tmp_path / "tuned.joblib", "--tune-threshold")
    assert fixed["threshold"] != tuned["threshold"]
    assert fixed["model_version"] != tuned["model_version"]
    assert fixed["threshold_strategy"] == "fixed" and tuned["threshold_strategy"] == "tuned-locally"
    capsys.readouterr()

    # Swiss after the Hungarian-tuned artifact keeps the Hungarian threshold, and says so.
    chained = recal(tmp_path / "tuned.joblib", swiss, tmp_path / "chained.joblib")
    out, err = capsys.readouterr()
    direct = recal(artifact_path, swiss, tmp_path / "direct.joblib")
    assert chained["threshold"] == tuned["threshold"] != direct["threshold"]
    assert chained["model_version"] != direct["model_version"]
    r = chained["recalibration"]
    assert r["threshold_origin"] == {  # type: ignore[index]
        "chosen_by": "heart-train recalibrate --tune-threshold",
        "data_file": hungarian_half.name,
        "data_sha256": file_sha256(hungarian_half),
        "model_version": tuned["model_version"],
    }
    assert chained["threshold_strategy"] == "tuned-locally"  # the kept one was tuned, elsewhere
    assert f"kept from {tmp_path / 'tuned.joblib'}: tuned on {hungarian_half.name}" in out
    assert f"was tuned on another file, {hungarian_half.name}, not on these patients" in err
    assert f"replaces the recalibration of {tuned['model_version']}" in out
    # The a, b are refitted on the network's own output: the same as recalibrating directly.
    d = direct["recalibration"]
    assert (r["intercept"], r["slope"]) == (d["intercept"], d["slope"])  # type: ignore[index]
    assert d["threshold_origin"] == {"chosen_by": "training", "strategy": "fixed"}  # type: ignore[index]
    # The same fit of the same file on the same network: the same answers, the same version.
    again = recal(artifact_path, swiss, tmp_path / "again.joblib")
    assert again["model_version"] == direct["model_version"]


def test_a_tuned_threshold_that_calls_everyone_diseased_is_reported(
    artifact_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Like Switzerland (115 of 123 diseased): every diseased patient and the five healthy
    ones the network rates highest, so calling everyone diseased is cheapest."""
    x, y = load_site("hungarian")
    risk = base_predictor(artifact_path).probability(x)
    healthy = np.flatnonzero(y == 0)
    keep = np.concatenate([np.flatnonzero(y == 1), healthy[np.argsort(risk[healthy])[-5:]]])
    data = write_csv(tmp_path / "mostly-diseased.csv", x[keep], y[keep])
    out = tmp_path / "local.joblib"
    payload = recal(artifact_path, data, out, "--tune-threshold")
    served = load_artifact(out).probability(x[keep])
    lowest = float(served.min())
    # Not 1e-6: 1/6 (the cost-optimal threshold of a calibrated risk) when the local patients
    # leave it there, else halfway between 0 and the lowest local risk.
    assert payload["threshold"] == pytest.approx(1 / 6 if lowest >= 1 / 6 else lowest / 2)
    assert (served >= payload["threshold"]).all()
    assert payload["recalibration"]["threshold_classes_everyone_as"] == "diseased"  # type: ignore[index]
    assert load_artifact(out).metadata["threshold_strategy"] == "tuned-locally"
    err = capsys.readouterr().err
    n = keep.size
    assert (
        f"warning: the tuned threshold {payload['threshold']:.3f} classes every one of the {n} "
        f"local patients as diseased: on this file ({int(y.sum())} of {n} with the disease)"
    ) in err


def test_the_service_reports_the_recalibrated_version_and_the_tuned_threshold(
    artifact_path: Path, hungarian_half: Path, tmp_path: Path
) -> None:
    from fastapi.testclient import TestClient

    from app import Settings, create_app
    from app.schemas import PATIENT_EXAMPLE

    out = tmp_path / "local.joblib"
    payload = recal(artifact_path, hungarian_half, out, "--tune-threshold")
    with TestClient(create_app(Settings(model_path=out))) as client:
        card = client.get("/model").json()
        ready = client.get("/ready").json()
        answer = client.post("/predict", json=PATIENT_EXAMPLE).json()
    version = payload["model_version"]
    assert card["model_version"] == ready["model_version"] == answer["model_version"] == version
    assert card["threshold"] == payload["threshold"]
    assert card["threshold_strategy"] == "tuned-locally"
    assert card["recalibration"]["threshold_tuned"] is True
    assert card["recalibration"]["threshold_origin"]["data_file"] == hungarian_half.name


def test_the_slope_interval_covers_the_true_slope_about_95_percent_of_the_time() -> None:
    """Simulated hospitals whose outcome follows logit P = 0.5 + 0.8 logit p exactly:
    over 300 of them, the Wald interval must hold 0.8 in about 95% (binomial sd 1.3%)."""
    rng = np.random.default_rng(0)
    covered = 0
    for _ in range(300):
        p = 1.0 / (1.0 + np.exp(-rng.normal(0.0, 1.5, 400)))
        truth = 1.0 / (1.0 + np.exp(-(0.5 + 0.8 * np.log(p / (1.0 - p)))))
        y = (rng.random(400) < truth).astype(np.int64)
        a, b = calibration_intercept_slope(y, p)
        low, high = slope_interval(p, a, b)
        covered += low <= 0.8 <= high
    assert 0.91 <= covered / 300 <= 0.99


def test_few_patients_of_one_outcome_get_a_warning_and_the_slope_interval(
    artifact_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    x, y = load_site("switzerland")  # 8 of 123 without the disease
    data = write_csv(tmp_path / "swiss.csv", x, y)
    out = tmp_path / "local.joblib"
    assert cli(["recalibrate", "--model", str(artifact_path), "--data", str(data),
                "--output", str(out)]) == 0  # fmt: skip
    r = read_payload(out)["recalibration"]
    low, high = r["slope_95ci"]
    assert low < r["slope"] < high and high - low > 0.5  # eight patients decide it
    captured = capsys.readouterr()
    assert f"(95% CI {low:.2f} to {high:.2f})" in captured.out
    assert "only 8 local patients of one outcome" in captured.err
    x, y = load_site("hungarian")  # 106 with, 188 without: enough of each
    data = write_csv(tmp_path / "hungarian.csv", x, y)
    assert cli(["recalibrate", "--model", str(artifact_path), "--data", str(data),
                "--output", str(out)]) == 0  # fmt: skip
    assert "local patients of one outcome" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("local.csv", "--output {dir}/local.csv is the --data file: it would replace"),
        ("local.csv/new.joblib", "cannot write {dir}/local.csv/new.joblib: Not a directory"),
        ("a-directory", "cannot write {dir}/a-directory: Is a directory"),
    ],
)
def test_an_output_that_cannot_be_written_or_replaces_the_data_is_exit_2(
    artifact_path: Path,
    hungarian_half: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    output: str,
    message: str,
) -> None:
    """Refused by name, no traceback; the patients' file is never replaced by the artifact
    (it was, with exit status 0, when --output named it)."""
    data = tmp_path / "local.csv"
    data.write_bytes(hungarian_half.read_bytes())
    (tmp_path / "a-directory").mkdir()
    code = cli(["recalibrate", "--model", str(artifact_path), "--data", str(data),
                "--output", str(tmp_path / output)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert message.format(dir=tmp_path) in err
    assert data.read_bytes() == hungarian_half.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-directory", "local.csv"]


def test_outcomes_the_risks_order_apart_have_no_fit_and_are_refused(
    artifact_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A handful of patients whose risks put every diseased one above every healthy one:
    the fit has no maximum, and the solver's stopping point (a slope of 7.7 for five
    such Hungarian patients, the fitted data's mean not even matched) was written as
    the hospital's recalibration with exit status 0."""
    x, y = load_site("hungarian")
    p = load_artifact(artifact_path).probability(x)
    order = np.argsort(p)
    healthy = [i for i in order if y[i] == 0][:3]
    diseased = [i for i in order if y[i] == 1][-2:]
    keep = np.array(healthy + diseased)
    data = write_csv(tmp_path / "five.csv", x[keep], y[keep])
    out = tmp_path / "five.joblib"
    code = cli(["recalibrate", "--model", str(artifact_path), "--data", str(data),
                "--output", str(out)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "order these 5 patients' outcomes completely apart" in err
    assert not out.exists()
    # With the riskiest healthy patient and the least risky diseased one, the outcomes'
    # risks overlap (the model ranks the site imperfectly): a fit exists, and is written.
    ends = [next(i for i in order[::-1] if y[i] == 0), next(i for i in order if y[i] == 1)]
    overlap = np.concatenate([keep, ends])
    data = write_csv(tmp_path / "six.csv", x[overlap], y[overlap])
    assert cli(["recalibrate", "--model", str(artifact_path), "--data", str(data),
                "--output", str(out)]) == 0  # fmt: skip


@pytest.mark.parametrize(
    ("y", "p", "apart"),
    [
        ([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4], True),
        ([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4], True),  # the wrong way round: apart too
        ([0, 0, 1, 1], [0.1, 0.3, 0.3, 0.4], True),  # a tie at the boundary: still no fit
        ([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4], False),
        ([1, 1, 1, 1], [0.1, 0.2, 0.3, 0.4], False),  # one outcome: refused elsewhere
    ],
)
def test_separated(y: list[int], p: list[float], apart: bool) -> None:
    from training.calibration import separated

    assert separated(np.array(y), np.array(p)) is apart


@pytest.mark.parametrize(
    ("cell", "column", "said"),
    [
        ("1,5", "st_depression", "is not a number; it has a decimal comma: pass --decimal ','"),
        ("132,0", "serum_cholesterol", "is not a number; it has a decimal comma"),
        ("-", "serum_cholesterol", "is not a number; a value not measured is an empty cell, NA"),
        ("N/A", "thal", "is not a number; a value not measured is an empty cell, NA or null"),
        # Other outcome codings: refused, never read as 0/1, and the codings to recode named.
        (
            "2",
            OUTCOME,
            "must be 0 (no disease) or 1 (disease); recode another coding first: "
            "Statlog's 1 (absence) and 2 (presence) as 0 and 1, the UCI files' num",
        ),
        ("4", OUTCOME, "must be 0 (no disease) or 1 (disease); recode"),
        ("yes", OUTCOME, "must be 0 (no disease) or 1 (disease); recode"),
        ("0.5", OUTCOME, "must be 0 (no disease) or 1 (disease); recode"),
    ],
)
def test_a_refused_cell_is_named_by_row_and_column_never_quoted(
    hungarian_half: Path, tmp_path: Path, cell: str, column: str, said: str
) -> None:
    """The cell is a patient's value (or diagnosis): the message says what is wrong with its
    form and where, as heart-score's do, and not what it held."""
    header, *rows = hungarian_half.read_text().rstrip("\n").split("\n")
    at = header.split(",").index(column)
    values = rows[2].split(",")
    values[at] = f'"{cell}"' if "," in cell else cell
    rows[2] = ",".join(values)
    (tmp_path / "local.csv").write_text("\n".join([header, *rows]) + "\n")
    with pytest.raises(DataError) as refused:
        read_local_csv(tmp_path / "local.csv")
    message = str(refused.value)
    assert f"row 2 (line 4 of the file), column {column}: {said}" in message
    assert f"'{cell}'" not in message and f": {cell}" not in message


@pytest.mark.parametrize("written", ["1.0", " 1 ", "1e0"])
def test_an_outcome_written_as_a_number_equal_to_0_or_1_is_read(
    hungarian_half: Path, tmp_path: Path, written: str
) -> None:
    """pandas writes an outcome column with a gap in it as 0.0 and 1.0."""
    want_x, want_y = read_local_csv(hungarian_half)
    text = hungarian_half.read_text().replace(",1\n", f",{written}\n").replace(",0\n", ",0.0\n")
    (tmp_path / "local.csv").write_text(text)
    x, y = read_local_csv(tmp_path / "local.csv")
    np.testing.assert_array_equal(x, want_x)
    np.testing.assert_array_equal(y, want_y)


def test_a_european_excel_export_reads_as_the_plain_file_with_its_dialect(
    hungarian_half: Path, tmp_path: Path
) -> None:
    """';' between cells and decimal commas, as Excel writes CSV where the decimal mark is
    a comma, with a byte-order mark, CRLF and a quoted cell holding a comma."""
    want_x, want_y = read_local_csv(hungarian_half)
    header, *rows = hungarian_half.read_text().rstrip("\n").split("\n")
    eu = [f"name;{header.replace(',', ';')}"]
    eu += [f'"Doe, J.";{row.replace(",", ";").replace(".", ",")}' for row in rows]
    assert any("," in row.split(";", 1)[1] for row in eu[1:])  # decimal commas present
    (tmp_path / "eu.csv").write_bytes(("\ufeff" + "\r\n".join(eu) + "\r\n").encode())
    x, y = read_local_csv(tmp_path / "eu.csv", delimiter=";", decimal=",")
    np.testing.assert_array_equal(x, want_x)
    np.testing.assert_array_equal(y, want_y)
    # Excel writes a 1.0 outcome as 1,0 there: the same patients.
    outcomes = [row.rsplit(";", 1) for row in eu[1:]]
    eu_outcomes = [eu[0]] + [f"{cells};{label},0" for cells, label in outcomes]
    (tmp_path / "eu-outcomes.csv").write_text("\r\n".join(eu_outcomes))
    x, y = read_local_csv(tmp_path / "eu-outcomes.csv", delimiter=";", decimal=",")
    np.testing.assert_array_equal(y, want_y)
    # The delimiter alone: a decimal comma is refused, with the option that reads it.
    with pytest.raises(DataError, match="is not a number; it has a decimal comma: pass --decimal"):
        read_local_csv(tmp_path / "eu.csv", delimiter=";")
    # With a decimal comma, a point is no decimal mark (1.234 is a thousand and more).
    (tmp_path / "eu.csv").write_text("\r\n".join([eu[0], eu[1].replace(";0;", ";1.5;", 1)]))
    with pytest.raises(DataError, match=r"is not a number; it has a point, which is no decimal"):
        read_local_csv(tmp_path / "eu.csv", delimiter=";", decimal=",")


@pytest.mark.parametrize(
    ("data", "said"),
    [
        (b"PAR1\x15\x04", "is a Parquet file, not CSV text: save it as CSV UTF-8\n"),
        (b"\x1f\x8b\x08\x00", "is gzip-compressed, not CSV text: save it as CSV UTF-8 (decompr"),
        (b"PK\x03\x04\x14\x00", "is a ZIP archive (an .xlsx or .ods workbook is one), not CSV"),
    ],
)
def test_a_data_file_in_another_format_says_what_it_is(
    artifact_path: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    data: bytes,
    said: str,
) -> None:
    """It said 'line 1 of the file is not UTF-8 text', or named a header of garbled bytes."""
    (tmp_path / "local.csv").write_bytes(data + bytes(range(256)))
    code = cli(["recalibrate", "--model", str(artifact_path), "--data",
                str(tmp_path / "local.csv"), "--output", str(tmp_path / "x.joblib")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"error: {tmp_path / 'local.csv'} {said}")
