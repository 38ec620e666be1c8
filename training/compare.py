"""``python -m training.compare`` / ``heart-compare``: our network against scikit-learn and Keras.

Every model goes through the same code: the tutorial's stratified split
(``training.data.split`` defaults), a ``StandardScaler`` fitted on training
data only (inside the pipeline, so also inside every cross-validation fold),
``training.evaluate.classification_metrics`` at threshold 0.5 and
``training.evaluate.cross_validate`` on identical folds. Models that depend on
a random seed are fitted once per seed on the split, and with a different
seed in every cross-validation fold, so each figure carries the seed's
variation instead of one lucky draw.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shlex
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
from scipy.special import expit
from sklearn.pipeline import Pipeline

from model.arrays import FloatArray, IntArray
from model.atomic import write_text_atomic
from model.cli_support import HelpFormatter, add_version, prog_name
from training.compare_models import (
    LOGREG_KEY,
    RECORDED_MLP_PARAMS,
    ModelSpec,
    TuningResult,
    model_specs,
    tune_mlp,
)
from training.compare_report import (
    render_markdown,
    render_terminal,
    update_readme,
)
from training.data import DataError, file_sha256, load_dataset, split
from training.evaluate import classification_metrics, cross_validate, summarise
from training.keras_model import KerasStatus, keras_status
from training.pipeline import TrainingConfig, library_versions
from training.report import write_json_atomic

DEFAULT_OUTPUT_DIR: Final[Path] = Path("results")
SPLIT_METRICS: Final[tuple[str, ...]] = ("accuracy", "roc_auc", "statlog_cost", "log_loss")
QUICK: Final[dict[str, int]] = {"seeds": 2, "cv_folds": 3, "cv_repeats": 1}


@dataclass
class CompareOptions:
    seeds: int = 10
    first_seed: int = 0
    cv_folds: int = 10
    cv_repeats: int = 5
    cv_seed: int = 0
    tune: bool = True
    predict_repeats: int = 5
    models: tuple[str, ...] = ()  # empty: all
    data_path: Path | None = None
    progress: Callable[[str], None] | None = None

    def seed_list(self) -> list[int]:
        return [self.first_seed + i for i in range(self.seeds)]


@dataclass
class Data:
    x: FloatArray
    y: IntArray
    x_train: FloatArray
    x_test: FloatArray
    y_train: IntArray
    y_test: IntArray
    sha256: str

    @classmethod
    def load(cls, path: Path | None) -> Data:
        config = TrainingConfig() if path is None else TrainingConfig(data_path=path)
        x, y = load_dataset(config.data_path)
        return cls(
            x,
            y,
            *split(x, y, config.test_size, config.split_seed),
            sha256=file_sha256(config.data_path),
        )


@dataclass
class ModelRun:
    """What one row measured; ``to_json`` is its entry in comparison.json."""

    spec: ModelSpec
    status: str = "ok"  # "ok" | "not installed" | "error"
    message: str = ""
    seeds: list[int] = field(default_factory=list)
    per_seed: list[dict[str, Any]] = field(default_factory=list)
    cv: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    test_predictions: list[IntArray] = field(default_factory=list)
    first_model: Pipeline | None = None

    def spread(self, part: str, metric: str) -> dict[str, float]:
        return spread([r[part][metric] for r in self.per_seed])

    def to_json(self, reference: ModelRun | None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "key": self.spec.key,
            "label": self.spec.label,
            "status": self.status,
            "message": self.message,
            "note": self.spec.note,
            "badge": self.spec.badge,
            "settings": self.spec.settings,
            "seed_dependent": self.spec.seed_dependent,
            "seeds": self.seeds,
        }
        if self.status != "ok":
            return out
        fit = statistics.median(r["fit_seconds"] for r in self.per_seed)
        pred = statistics.median(r["predict_seconds_per_row"] for r in self.per_seed)
        timing: dict[str, Any] = {"fit_seconds_median": fit, "predict_seconds_per_row_median": pred}
        if reference is not None and reference.status == "ok" and reference.per_seed:
            ref_fit = statistics.median(r["fit_seconds"] for r in reference.per_seed)
            ref_pred = statistics.median(r["predict_seconds_per_row"] for r in reference.per_seed)
            timing["fit_ratio_to_reference"] = fit / ref_fit
            timing["predict_ratio_to_reference"] = pred / ref_pred
        out.update(
            {
                "train": {m: self.spread("train", m) for m in SPLIT_METRICS},
                "test": {m: self.spread("test", m) for m in SPLIT_METRICS},
                "agreement_with_reference": spread(
                    [r["agreement_with_reference"] for r in self.per_seed]
                ),
                **self._linear_summary(),
                "cross_validation": self.cv,
                "timing": timing,
                "per_seed": self.per_seed,
                "warnings": self.warnings,
                "seconds": self.seconds,
            }
        )
        return out

    def _linear_summary(self) -> dict[str, Any]:
        found = [r["linear_equivalent"] for r in self.per_seed if "linear_equivalent" in r]
        if not found:
            return {}
        summary: dict[str, Any] = {
            "max_abs_probability_difference": max(
                f["max_abs_probability_difference"] for f in found
            )
        }
        cosines = [
            f["cosine_with_reference_coefficients"]
            for f in found
            if "cosine_with_reference_coefficients" in f
        ]
        if cosines:
            summary["cosine_with_reference_coefficients"] = spread(cosines)
        return {"linear_equivalent": summary}


def spread(values: Sequence[float]) -> dict[str, float]:
    """Mean and std (as ``training.evaluate.summarise``) plus the extremes over seeds."""
    out = summarise({"v": float(v)} for v in values)["v"]
    arr = np.asarray(values, dtype=np.float64)
    return {**out, "min": float(arr.min()), "max": float(arr.max())}


def seeded_factory(spec: ModelSpec, first_seed: int) -> Callable[[], Pipeline]:
    """A new model per call, seed ``first_seed + i`` for the i-th: one seed per CV fold."""
    counter = itertools.count(first_seed)
    return lambda: spec.make(next(counter))


def _summary_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    seen: dict[str, int] = {}
    for w in caught:
        text = f"{w.category.__name__}: {str(w.message).splitlines()[0][:160]}"
        seen[text] = seen.get(text, 0) + 1
    return [f"{text} (x{n})" for text, n in seen.items()]


@dataclass(frozen=True)
class Reference:
    """What the other rows are measured against: LogisticRegression's test predictions
    and coefficients (for the agreement column and the Keras linear-model check)."""

    predictions: IntArray
    coefficients: FloatArray | None


def run_model(
    spec: ModelSpec,
    data: Data,
    options: CompareOptions,
    keras: KerasStatus,
    reference: Reference | None,
) -> ModelRun:
    run = ModelRun(spec)
    if spec.needs_keras and not keras.available:
        run.status, run.message = "not installed", keras.message
        return run
    start = time.perf_counter()
    run.seeds = options.seed_list() if spec.seed_dependent else []
    # A deterministic model is fitted as often as the others, for a fair median fit time.
    fit_seeds = run.seeds or [options.first_seed] * max(3, options.seeds)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # Untimed warm-up: the first fit in a process pays for lazy imports and
            # (Keras/JAX) compilation caches, which is not what "fit time" should show.
            spec.make(options.first_seed).fit(data.x_train, data.y_train)
            for seed in fit_seeds:
                record, model = _fit_on_split(spec, seed, data, options, reference)
                if not spec.seed_dependent:
                    record["seed"] = None
                run.per_seed.append(record)
                run.test_predictions.append(record.pop("_test_predictions"))
                run.first_model = run.first_model or model
            run.cv = cross_validate(
                seeded_factory(spec, options.first_seed),
                data.x,
                data.y,
                n_splits=options.cv_folds,
                n_repeats=options.cv_repeats,
                random_state=options.cv_seed,
                tune_threshold=False,
            )
        run.warnings = _summary_warnings(caught)
    except Exception as exc:  # one broken model must not hide the others' results
        run.status, run.message = "error", f"{type(exc).__name__}: {exc}"
    run.seconds = time.perf_counter() - start
    return run


def _fit_on_split(
    spec: ModelSpec,
    seed: int,
    data: Data,
    options: CompareOptions,
    reference: Reference | None,
) -> tuple[dict[str, Any], Pipeline]:
    model = spec.make(seed)
    t0 = time.perf_counter()
    model.fit(data.x_train, data.y_train)
    fit_seconds = time.perf_counter() - t0
    proba_test = model.predict_proba(data.x_test)[:, 1]  # also the warm-up call for timing
    timings = []
    for _ in range(max(1, options.predict_repeats)):
        t0 = time.perf_counter()
        model.predict_proba(data.x_test)
        timings.append(time.perf_counter() - t0)
    proba_train = model.predict_proba(data.x_train)[:, 1]
    train = classification_metrics(data.y_train, proba_train)
    test = classification_metrics(data.y_test, proba_test)
    pred = (proba_test >= test["threshold"]).astype(np.int64)
    record: dict[str, Any] = {
        "seed": seed,
        "fit_seconds": fit_seconds,
        "predict_seconds_per_row": statistics.median(timings) / data.y_test.size,
        "train": {m: train[m] for m in SPLIT_METRICS},
        "test": {m: test[m] for m in SPLIT_METRICS},
        "test_confusion_matrix": test["confusion_matrix"],
        "agreement_with_reference": (
            float(np.mean(pred == reference.predictions)) if reference is not None else 1.0
        ),
        "_test_predictions": pred,
    }
    linear = _linear_equivalent(model, data.x_test, proba_test, reference)
    if linear is not None:
        record["linear_equivalent"] = linear
    return record, model


def _linear_equivalent(
    model: Pipeline, x_test: FloatArray, proba: FloatArray, reference: Reference | None
) -> dict[str, Any] | None:
    """Measure that a model is a logistic regression: same probabilities from one affine map."""
    method = getattr(model[-1], "linear_equivalent", None)
    found = method() if callable(method) else None
    if found is None:
        return None
    w, b = found
    z = np.asarray(model[:-1].transform(x_test), dtype=np.float64) @ w + b
    out: dict[str, Any] = {
        "max_abs_probability_difference": float(np.max(np.abs(expit(z) - proba))),
        "coefficients": [float(v) for v in w],
        "intercept": b,
    }
    if reference is not None and reference.coefficients is not None:
        ref = reference.coefficients
        out["cosine_with_reference_coefficients"] = float(
            w @ ref / (np.linalg.norm(w) * np.linalg.norm(ref))
        )
    return out


def versions_with_keras(keras: KerasStatus) -> dict[str, str]:
    versions = library_versions()
    versions.update(keras.versions)
    if keras.available:
        versions["keras_backend"] = keras.backend
    return versions


def run_comparison(options: CompareOptions, *, command: str = "") -> dict[str, Any]:
    """Run every selected model and return the JSON-ready result (nothing is written)."""
    say = options.progress or (lambda _msg: None)
    data = Data.load(options.data_path)
    keras = keras_status()
    if options.tune:
        say("tuning MLPClassifier by grid search on the training split ...")
        tuning = tune_mlp(data.x_train, data.y_train)
    else:
        tuning = TuningResult(dict(RECORDED_MLP_PARAMS), None, "recorded")
    specs = model_specs(tuning.best_params, TrainingConfig())
    known = [s.key for s in specs]
    unknown = sorted(set(options.models) - set(known))
    if unknown:
        raise ValueError(f"unknown model key(s) {unknown}; choose from {known}")
    selected = [s for s in specs if not options.models or s.key in options.models]

    runs: list[ModelRun] = []
    reference_run: ModelRun | None = None
    reference: Reference | None = None
    for i, spec in enumerate(selected, start=1):
        say(f"[{i}/{len(selected)}] {spec.label} ...")
        run = run_model(spec, data, options, keras, reference)
        if spec.key == LOGREG_KEY and run.status == "ok" and run.first_model is not None:
            coef = getattr(run.first_model[-1], "coef_", None)
            reference_run = run
            reference = Reference(
                run.test_predictions[0],
                None if coef is None else np.asarray(coef, dtype=np.float64).ravel(),
            )
        say(f"    {run.message or run.status} ({run.seconds:.1f} s)")
        runs.append(run)

    n_test = int(data.y_test.size)
    return {
        "command": command,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "protocol": {
            "data_sha256": data.sha256,
            "n_patients": int(data.y.size),
            "split": {
                "function": "training.data.split",
                "test_size": TrainingConfig().test_size,
                "random_state": TrainingConfig().split_seed,
                "stratified": True,
                "n_train": int(data.y_train.size),
                "n_test": n_test,
            },
            "one_test_patient_in_accuracy_points": 100.0 / n_test,
            "scaler": "StandardScaler fitted on the training data only "
            "(the training split, or the training folds in cross-validation)",
            "threshold": 0.5,
            "seeds": options.seed_list(),
            "cross_validation": {
                "function": "training.evaluate.cross_validate",
                "data": f"all {int(data.y.size)} patients",
                "n_splits": options.cv_folds,
                "n_repeats": options.cv_repeats,
                "random_state": options.cv_seed,
                "model_seeds": f"fold i (0-based) uses seed {options.first_seed} + i",
            },
            "spread": "mean, population std (ddof=0), min and max over seeds",
            "reference_model": LOGREG_KEY,
        },
        "versions": versions_with_keras(keras),
        "machine": {"platform": platform.platform(), "cpu_count": _cpu_count()},
        "keras": {
            "available": keras.available,
            "backend": keras.backend,
            "message": keras.message,
        },
        "tuning": {"mlp_classifier": tuning.to_json()},
        "models": [r.to_json(reference_run) for r in runs],
    }


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def build_parser() -> argparse.ArgumentParser:
    d = CompareOptions()
    p = argparse.ArgumentParser(
        prog=prog_name("heart-compare", "training.compare"),
        description="Compare our NumPy network with scikit-learn's MLPClassifier, Keras and "
        "LogisticRegression on the same split, scaler and cross-validation folds. Writes "
        "OUTPUT_DIR/comparison.json and comparison.md and prints the table.",
        formatter_class=HelpFormatter,
    )
    add_version(p)
    p.add_argument("--seeds", type=int, default=d.seeds, help="seeds per seed-dependent model")
    p.add_argument("--first-seed", type=int, default=d.first_seed, help="the first of the seeds")
    p.add_argument(
        "--cv-folds", type=int, default=d.cv_folds, help="folds of repeated stratified CV"
    )
    p.add_argument(
        "--cv-repeats", type=int, default=d.cv_repeats, help="repeats of the cross-validation"
    )
    p.add_argument("--cv-seed", type=int, default=d.cv_seed, help="random_state of the folds")
    p.add_argument(
        "--quick",
        action="store_true",
        help="reduced run for CI: --seeds {seeds} --cv-folds {cv_folds} --cv-repeats "
        "{cv_repeats} --no-tune (explicit options still win)".format(**QUICK),
    )
    p.add_argument(
        "--no-tune",
        action="store_true",
        help="reuse the recorded MLPClassifier grid-search result instead of searching again",
    )
    p.add_argument(
        "--models",
        default="",
        help="comma-separated model keys to run (default: all; see comparison.json 'key')",
    )
    p.add_argument("--data", type=Path, default=None, help="heart.dat (default: data/heart.dat)")
    p.add_argument(
        "--output-dir",
        type=Path,
        default=DEFAULT_OUTPUT_DIR,
        help="where comparison.json and comparison.md go",
    )
    p.add_argument("--no-write", action="store_true", help="print the table only")
    p.add_argument(
        "--readme",
        type=Path,
        default=None,
        help="also replace the comparison table between the markers in this Markdown file "
        "(the project keeps it in docs/comparison.md)",
    )
    p.add_argument(
        "--require-keras",
        action="store_true",
        help="fail when Keras is not installed (CI: the Keras path must really run)",
    )
    p.add_argument(
        "--from-json",
        type=Path,
        default=None,
        metavar="JSON",
        help="run nothing: re-render the table (and --readme) from an earlier comparison.json",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    return p


def options_from_args(args: argparse.Namespace, argv: Sequence[str]) -> CompareOptions:
    given = {a.split("=")[0] for a in argv if a.startswith("--")}
    seeds, folds, repeats = args.seeds, args.cv_folds, args.cv_repeats
    if args.quick:
        seeds = args.seeds if "--seeds" in given else QUICK["seeds"]
        folds = args.cv_folds if "--cv-folds" in given else QUICK["cv_folds"]
        repeats = args.cv_repeats if "--cv-repeats" in given else QUICK["cv_repeats"]
    return CompareOptions(
        seeds=seeds,
        first_seed=args.first_seed,
        cv_folds=folds,
        cv_repeats=repeats,
        cv_seed=args.cv_seed,
        tune=not (args.no_tune or args.quick),
        models=tuple(m.strip() for m in args.models.split(",") if m.strip()),
        data_path=args.data,
        progress=None if args.quiet else _stderr,
    )


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    options = options_from_args(args, argv)
    if options.seeds < 1:
        parser.error("--seeds must be at least 1")
    if options.cv_folds < 2 or options.cv_repeats < 1:
        parser.error("--cv-folds must be at least 2 and --cv-repeats at least 1")
    if args.require_keras and not keras_status().available:
        print(f"error: --require-keras: Keras is {keras_status().message}", file=sys.stderr)
        return 1
    command = shlex.join(["python", "-m", "training.compare", *argv])
    try:
        if args.from_json is not None:
            result = json.loads(args.from_json.read_text(encoding="utf-8"))
        else:
            result = run_comparison(options, command=command)
    except (DataError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(render_terminal(result))
    if args.no_write:
        pass
    elif args.from_json is not None:
        markdown = args.from_json.with_suffix(".md")
        write_text_atomic(markdown, render_markdown(result))
        print(f"wrote {markdown}")
    else:
        out: Path = args.output_dir
        write_json_atomic(result, out / "comparison.json")
        write_text_atomic(out / "comparison.md", render_markdown(result))
        print(f"wrote {out / 'comparison.json'} and {out / 'comparison.md'}")
    if args.readme is not None:
        try:
            update_readme(args.readme, result)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"updated the comparison table in {args.readme}")
    failed = [m["label"] for m in result["models"] if m["status"] == "error"]
    if failed:
        print(f"error: {len(failed)} model(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
