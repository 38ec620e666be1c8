"""``python -m training`` / ``heart-train``: train the default model and write the artifact.

``heart-train recalibrate ...`` refits a trained model's output to local patients
(``training/recalibrate.py``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from model.artifact import save_artifact, sha256_of
from model.atomic import CannotWriteError, cannot_write, same_file
from model.cli_support import HelpFormatter, add_version, prog_name
from training.data import DataError, default_data_path
from training.pipeline import TrainingConfig, train
from training.report import (
    plot_loss,
    plot_reliability,
    report_from_payload,
    write_json_atomic,
)
from training.sites import SITES, parse_sites

DEFAULT_OUTPUT = Path("artifacts") / "model.joblib"


def build_parser() -> argparse.ArgumentParser:
    d = TrainingConfig()
    prog = prog_name("heart-train", "training")
    p = argparse.ArgumentParser(
        prog=prog,
        description="Train the NumPy heart-disease network on UCI heart-disease sites, evaluate "
        "it and write the model artifact (joblib), a JSON report, a loss plot and a reliability "
        "diagram.",
        epilog=f"Other commands: '{prog} recalibrate --help' (refit a model to a hospital's own "
        f"patients), '{prog} export --help' (the trained model as ONNX).",
        formatter_class=HelpFormatter,
    )
    add_version(p)
    io = p.add_argument_group("input and output")
    io.add_argument(
        "--sites",
        default=",".join(d.sites),
        help="comma-separated sites to train on, any of "
        + ", ".join(SITES)
        + " (Statlog rows are all in Cleveland: pooled with it they count once)",
    )
    io.add_argument(
        "--data",
        type=Path,
        default=None,
        help="Statlog heart.dat file, with --sites statlog (default: data/heart.dat of the "
        "source tree)",
    )
    io.add_argument(
        "--accept-data-change",
        action="store_true",
        help="train even if the data file's SHA-256 differs from the published one",
    )
    io.add_argument(
        "--output",
        "-o",
        type=Path,
        default=DEFAULT_OUTPUT,
        help="artifact path (written atomically)",
    )
    io.add_argument(
        "--report", type=Path, help="JSON report path (default: OUTPUT with .report.json)"
    )
    io.add_argument(
        "--plot", type=Path, help="loss-curve PNG path (default: OUTPUT with .loss.png)"
    )
    io.add_argument("--no-plot", action="store_true", help="do not draw the loss curve")
    io.add_argument("--quiet", "-q", action="store_true", help="no progress display or summary")

    net = p.add_argument_group("network")
    _value(net, "--hidden-units", int, d.hidden_units, "hidden layer width (tutorial: 8, or 10)")
    _value(
        net,
        "--networks",
        int,
        d.n_networks,
        "seeds whose networks' log-odds are averaged, served as one network of "
        "NETWORKS x HIDDEN_UNITS units (network for gaps only)",
    )
    _value(
        net,
        "--learning-rate",
        float,
        d.learning_rate,
        "step size of each update (default: 0.003 with --no-missing-values, else 0.01)",
    )
    _value(net, "--epochs", int, d.epochs, "passes over the training data")
    _value(net, "--batch-size", int, 0, "rows per update; 0 = full batch")
    net.add_argument(
        "--optimizer",
        choices=["sgd", "adam"],
        default=d.optimizer,
        help="sgd is plain gradient descent, as in the tutorial",
    )
    _value(
        net,
        "--alpha",
        float,
        d.alpha,
        "L2 weight decay, MLPClassifier units (default: 10 with --no-missing-values, else 3)",
    )
    net.add_argument(
        "--init",
        choices=["he", "glorot", "normal"],
        default=d.init,
        help="weight initialisation",
    )
    net.add_argument(
        "--early-stopping",
        action="store_true",
        help="stop when the loss on a held-out validation fraction stops improving",
    )
    _value(
        net,
        "--validation-fraction",
        float,
        d.validation_fraction,
        "share of the training data --early-stopping holds out",
    )
    _value(net, "--seed", int, d.seed, "random_state of the network")
    gaps = p.add_argument_group("missing values")
    gaps.add_argument(
        "--no-missing-values",
        action="store_true",
        help="train the tutorial's plain scaler + network (needs all 13 values; the served "
        "model then refuses null)",
    )
    _value(gaps, "--copies", int, d.copies, "imputed copies per row")
    _value(
        gaps,
        "--mask-rate",
        float,
        d.mask_rate,
        "chance that a present value which may be missing is hidden in a copy",
    )
    _value(
        gaps,
        "--background-rows",
        int,
        d.n_background,
        "rows stored to marginalise missing values at prediction",
    )
    gaps.add_argument(
        "--ensemble-size",
        type=int,
        default=d.ensemble_size,
        help="bootstrap networks behind the risk interval, each one more training run "
        "(0: no interval)",
    )

    ev = p.add_argument_group("split, threshold and evaluation")
    _value(ev, "--test-size", float, d.test_size, "share of the data held out for testing")
    _value(
        ev, "--split-seed", int, d.split_seed, "random_state of the stratified split (tutorial: 2)"
    )
    _value(
        ev, "--threshold", float, d.threshold, "decision threshold with --threshold-strategy fixed"
    )
    ev.add_argument(
        "--threshold-strategy",
        choices=["fixed", "min-cost"],
        default=d.threshold_strategy,
        help="min-cost: choose the threshold minimising the StatLog cost on "
        "out-of-fold predictions of the training data",
    )
    _value(
        ev,
        "--cv-folds",
        int,
        d.cv_folds,
        "folds of the repeated stratified cross-validation (0 = skip)",
    )
    _value(ev, "--cv-repeats", int, d.cv_repeats, "repeats of the cross-validation")
    _value(ev, "--cv-seed", int, d.cv_seed, "random_state of the cross-validation folds")
    return p


def _value(
    group: argparse._ArgumentGroup,
    flag: str,
    kind: type[int] | type[float],
    default: float | None,
    text: str,
) -> None:
    """Add a typed option: most of this command's options are one number with a default."""
    group.add_argument(flag, type=kind, default=default, help=text)


def config_from_args(args: argparse.Namespace, *, verbose: bool) -> TrainingConfig:
    return TrainingConfig(
        hidden_units=args.hidden_units,
        n_networks=args.networks,
        learning_rate=args.learning_rate,
        epochs=args.epochs,
        batch_size=args.batch_size or None,
        optimizer=args.optimizer,
        alpha=args.alpha,
        init=args.init,
        early_stopping=args.early_stopping,
        validation_fraction=args.validation_fraction,
        seed=args.seed,
        test_size=args.test_size,
        split_seed=args.split_seed,
        threshold=args.threshold,
        threshold_strategy=args.threshold_strategy,
        cv_folds=args.cv_folds,
        cv_repeats=args.cv_repeats,
        cv_seed=args.cv_seed,
        data_path=args.data if args.data is not None else default_data_path(),
        accept_data_change=args.accept_data_change,
        verbose=verbose,
        sites=parse_sites(args.sites),
        missing_values=not args.no_missing_values,
        copies=args.copies,
        mask_rate=args.mask_rate,
        n_background=args.background_rows,
        ensemble_size=args.ensemble_size,
    )


def _summary(payload: dict[str, Any]) -> str:
    test, m = payload["metrics"]["test"], payload["metrics"]
    lines = [
        f"model {payload['model_version']}  threshold {payload['threshold']:.3f}",
        f"test  accuracy {test['accuracy']:.3f}  roc_auc {test['roc_auc']:.3f}  "
        f"statlog_cost {test['statlog_cost']:.3f}  (n={test['n']})",
        f"test  calibration intercept {test['calibration_intercept']:.2f}  "
        f"slope {test['calibration_slope']:.2f}",
    ]
    if "cross_validation" in m:
        cv = m["cross_validation"]
        lines.append(
            f"cv    accuracy {cv['accuracy']['mean']:.3f} +- {cv['accuracy']['std']:.3f}  "
            f"roc_auc {cv['roc_auc']['mean']:.3f} +- {cv['roc_auc']['std']:.3f}  "
            f"({cv['protocol']['n_splits']}-fold x {cv['protocol']['n_repeats']})"
        )
    return "\n".join(lines)


def _unwritable(args: argparse.Namespace, output: Path, report: Path) -> str | None:
    """Why the files this run writes could not be written, checked before minutes of training.

    An ``--output`` named as the ``--data`` file would replace the patients'
    file with the artifact.
    """
    if args.data is not None:
        for what, path in (("--output", output), ("the report", report)):
            if same_file(path, args.data):
                return f"{what} {path} is the --data file: it would replace it; name another"
    for path in (output, report):
        reason = cannot_write(path)
        if reason is not None:
            return reason
    return None


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    prog = prog_name("heart-train", "training")
    if arguments[:1] == ["export"]:
        from training.export import main as export_main

        return export_main(arguments[1:], prog=f"{prog} export")
    if arguments[:1] == ["recalibrate"]:
        from training.recalibrate import main as recalibrate_main

        return recalibrate_main(arguments[1:], prog=f"{prog} recalibrate")
    args = build_parser().parse_args(arguments)
    if args.batch_size < 0:
        build_parser().error("--batch-size must be 0 (full batch) or positive")
    verbose = not args.quiet and sys.stderr.isatty()
    if args.data is not None and "statlog" not in args.sites.split(","):
        build_parser().error("--data names the Statlog file: add statlog to --sites to use it")
    output: Path = args.output
    report = args.report or output.with_suffix(".report.json")
    refusal = _unwritable(args, output, report)
    if refusal is not None:
        print(f"error: {refusal}", file=sys.stderr)
        return 2
    try:
        config = config_from_args(args, verbose=verbose)
        result = train(config)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # invalid hyperparameters, reported by the estimator
        print(f"error: {exc}", file=sys.stderr)
        return 2
    written = output
    try:  # checked before training; a disk can still fill up meanwhile
        save_artifact(result.payload, output)
        written = report
        write_json_atomic(report_from_payload(result.payload), report)
    except OSError as exc:
        print(f"error: {CannotWriteError(written, exc)}", file=sys.stderr)
        return 2
    plotted = False
    if not args.no_plot:
        plot_path = args.plot or output.with_suffix(".loss.png")
        plotted = plot_loss(result.loss_curve, plot_path)
        plot_reliability(
            result.payload["metrics"]["test"]["reliability"],
            plot_path.with_name(output.with_suffix("").name + ".reliability.png"),
        )
    if not args.quiet:
        print(_summary(result.payload))
        print(f"wrote {output} and {report}" + (" and the loss plot" if plotted else ""))
        if not plotted and not args.no_plot:
            print("loss plot skipped: matplotlib is not installed (pip install '.[plot]')")
        # What an operator pins the service to (HEART_MODEL_SHA256).
        digest = sha256_of(output.read_bytes())
        print(f"sha256 {digest}  (to serve only this file: HEART_MODEL_SHA256={digest})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
