"""``heart-score`` (also ``python -m scoring``): score a whole CSV or Parquet file.

Exit status: 0 every row scored; 1 some rows were refused (the output still
has every row, with empty scores for those, and ``--errors`` lists them);
2 nothing could be scored (usage, unreadable input, missing columns, no
model, no ``bulk`` extra). Never prints a feature value: they are health data.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from model.artifact import ArtifactError, load_artifact
from model.atomic import CannotWriteError, cannot_write, finish_partial, same_file
from model.cli_support import (
    HelpFormatter,
    add_csv_dialect,
    add_version,
    check_csv_dialect,
    prog_name,
)
from model.columns import DuplicateColumnsError, MissingColumnsError, validate_columns

EXIT_OK, EXIT_ROWS_REFUSED, EXIT_UNUSABLE = 0, 1, 2
DEFAULT_MODEL = Path("artifacts/model.joblib")
EXTRA_HINT = "heart-score needs the bulk extra: pip install 'heart-risk[bulk]' (pyarrow)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog_name("heart-score", "scoring"),
        formatter_class=HelpFormatter,
        description="Score every row of a CSV or Parquet file with the heart-disease model. "
        "The input needs the 13 feature columns by name (empty cells where a value was "
        "not measured, for features that allow it); the output has the key column(s), "
        "probability, prediction and, when the model has one, its interval.",
    )
    add_version(parser)
    parser.add_argument(
        "input", type=Path, help="CSV (.csv, .csv.gz, .csv.bz2, .csv.zst) or Parquet file to score"
    )
    parser.add_argument(
        "output", type=Path, help="where to write the scores (.csv, .csv.gz, ... or .parquet)"
    )
    parser.add_argument(
        "--key",
        action="append",
        default=[],
        metavar="COLUMN",
        help="input column copied to the output to identify rows (repeatable, each column "
        "once; default: a 0-based 'row' number)",
    )
    parser.add_argument(
        "--errors", type=Path, help="CSV listing every refused cell: row, key(s), column, reason"
    )
    parser.add_argument(
        "--model",
        type=Path,
        default=Path(os.environ.get("HEART_MODEL_PATH", DEFAULT_MODEL)),
        help="artifact to score with (HEART_MODEL_PATH, default artifacts/model.joblib)",
    )
    parser.add_argument("--input-format", choices=["csv", "parquet"], help="default: from the name")
    add_csv_dialect(parser)
    parser.add_argument(
        "--output-format", choices=["csv", "parquet"], help="default: from the name"
    )
    parser.add_argument(
        "--chunk-rows",
        type=int,
        default=131_072,
        help="rows read and scored at a time; peak memory grows with it",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="pyarrow threads for reading (0: one per core; 1: single-threaded)",
    )
    progress = parser.add_mutually_exclusive_group()
    progress.add_argument(
        "--progress", action="store_true", default=None, help="always show progress"
    )
    progress.add_argument(
        "--quiet", dest="progress", action="store_false", help="never show progress"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_csv_dialect(parser, args)
    try:
        import pyarrow as pa  # noqa: F401  (only to give a clear message when it is missing)
    except ImportError:
        print(f"heart-score: {EXTRA_HINT}", file=sys.stderr)
        return EXIT_UNUSABLE
    from scoring.errors import InputError, TextInNumbersError
    from scoring.formats import detect_format

    if args.chunk_rows < 1:
        print("heart-score: --chunk-rows must be at least 1", file=sys.stderr)
        return EXIT_UNUSABLE
    if repeated := _repeated(args.key):
        # Silently written once, `--key site --key site` (a slip for `--key site --key id`)
        # gave an output whose rows the user could not tell apart as intended.
        print(
            f"heart-score: --key given more than once for: {', '.join(repeated)}; "
            "name each key column once",
            file=sys.stderr,
        )
        return EXIT_UNUSABLE
    if clash := _outputs_problem(args):
        print(f"heart-score: {clash}", file=sys.stderr)
        return EXIT_UNUSABLE
    try:
        in_fmt = detect_format(args.input, args.input_format)
        out_fmt = detect_format(args.output, args.output_format, option="--output-format")
        predictor = load_artifact(args.model)
    except (InputError, ArtifactError) as exc:
        print(f"heart-score: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    if args.threads:
        import pyarrow

        pyarrow.set_cpu_count(args.threads)
    show = sys.stderr.isatty() if args.progress is None else args.progress
    try:
        try:
            summary = _run(args, predictor, in_fmt, out_fmt, show, text_features=False)
        except TextInNumbersError:
            # Some feature cell is text: read again, parsing cell by cell to name them all.
            summary = _run(args, predictor, in_fmt, out_fmt, show, text_features=True)
    except (
        InputError,
        CannotWriteError,
        MissingColumnsError,
        DuplicateColumnsError,
        OSError,
    ) as exc:
        print(f"heart-score: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    rows, refused = summary
    if refused:
        where = f"; listed in {args.errors}" if args.errors else "; pass --errors FILE to list them"
        print(f"heart-score: {refused:,} of {rows:,} rows refused{where}", file=sys.stderr)
        return EXIT_ROWS_REFUSED
    return EXIT_OK


def _outputs_problem(args: argparse.Namespace) -> str | None:
    """Why the files named would overwrite one another (or a directory), if they would.

    Each output replaces its target when complete, so an output named as the input
    (or the two outputs named alike) would silently leave scores where the patients'
    registry was, or the refused cells where the scores were.
    """
    written = [("the output", args.output)]
    if args.errors is not None:
        written.append(("the --errors file", args.errors))
    for what, path in written:
        if same_file(path, args.input):
            return f"{what} {path} is the input file: it would replace the input; name another"
    if args.errors is not None and same_file(args.errors, args.output):
        return f"the --errors file {args.errors} is the output file: name another"
    for _, path in written:
        # Found only when the finished file replaces it, after the whole input is
        # scored, and after the other output may already stand: say so first.
        if reason := cannot_write(path):
            return reason
    return None


def _repeated(keys: Sequence[str]) -> list[str]:
    """The key columns named more than once, in order (refused: see ``main``)."""
    return [k for k, n in Counter(keys).items() if n > 1]


def _run(
    args: argparse.Namespace,
    predictor: Any,
    in_fmt: Any,
    out_fmt: Any,
    show: bool,
    *,
    text_features: bool,
) -> tuple[int, int]:
    """Score the file once; returns (rows, refused rows)."""
    from scoring.core import score_batch
    from scoring.csv_parsing import CsvDialect
    from scoring.reading import count_rows, read_chunks
    from scoring.writing import Writer, empty_batch, output_batch

    keys: list[str] = args.key
    writer = Writer(args.output, out_fmt)  # creates no file until its first batch
    progress = _Progress(count_rows(args.input, in_fmt) if show else None, enabled=show)
    # Last before the try: the finally below is what closes (or removes) it.
    errors = _ErrorsFile(args.errors, keys) if args.errors else None
    rows = refused = 0
    ok = False
    try:
        chunks = read_chunks(
            args.input,
            in_fmt,
            keys,
            chunk_rows=args.chunk_rows,
            threads=args.threads != 1,
            text_features=text_features,
            dialect=CsvDialect(args.delimiter, args.decimal),
        )
        for chunk in chunks:
            batch = validate_columns(
                chunk.features, not_numbers=chunk.not_numbers, row_offset=chunk.offset
            )
            scores = score_batch(predictor, batch)
            writer.write(output_batch(chunk, keys, scores))
            if batch.problems:
                refused += int((~batch.valid).sum())
                if errors is not None:
                    errors.write(batch.problems, chunk)
            rows += chunk.n
            progress.update(rows, refused)
        if rows == 0:
            writer.write(empty_batch(args.input, in_fmt, keys, predictor))
        ok = True
        # The last figures always: a file scored faster than the refresh interval
        # would otherwise show no progress line at all.
        progress.update(rows, refused, force=True)
    finally:
        progress.finish()
        try:
            writer.close(success=ok)
        except Exception:
            ok = False  # no errors file beside an output that was not written
            raise
        finally:
            if errors is not None:
                errors.close(success=ok)
    return rows, refused


class _ErrorsFile:
    """The ``--errors`` CSV: one line per refused cell, the row's keys to find it by."""

    def __init__(self, path: Path, keys: list[str]) -> None:
        from scoring.writing import output_stream

        self.path = path
        self._tmp = path.with_name(f".{path.name}.partial")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # As the scores are: compressed when the name says so (errors.csv.gz).
            stream = output_stream(self._tmp, path)
            self._file: IO[str] = io.TextIOWrapper(stream, encoding="utf-8", newline="")
        except OSError as exc:
            raise CannotWriteError(path, exc) from None
        self._csv = csv.writer(self._file)
        self._csv.writerow(["row", *keys, "column", "reason"])

    def write(self, problems: Sequence[Any], chunk: Any) -> None:
        key_values = [k.to_pylist() for k in chunk.keys]
        try:
            for p in problems:
                local = p.row - chunk.offset
                self._csv.writerow([p.row, *(v[local] for v in key_values), p.column, p.reason])
        except OSError as exc:  # a full disk, a quota
            raise CannotWriteError(self.path, exc) from None

    def close(self, *, success: bool) -> None:
        finish_partial(self._tmp, self.path, self._file.close, success=success)


class _Progress:
    """Rows and rows/s on one rewritten stderr line, at most five times a second."""

    def __init__(self, total: int | None, *, enabled: bool) -> None:
        self.total, self.enabled = total, enabled
        self.start = self.last = time.perf_counter()
        self.shown = False

    def update(self, rows: int, refused: int, *, force: bool = False) -> None:
        now = time.perf_counter()
        if not self.enabled or (now - self.last < 0.2 and not force):
            return
        self.last = now
        rate = rows / max(now - self.start, 1e-9)
        done = f" ({100 * rows / self.total:.0f}%)" if self.total else ""
        sys.stderr.write(f"\rscored {rows:,} rows{done}, {refused:,} refused, {rate:,.0f} rows/s ")
        sys.stderr.flush()
        self.shown = True

    def finish(self) -> None:
        if self.enabled and self.shown:
            sys.stderr.write("\n")
            sys.stderr.flush()


if __name__ == "__main__":
    raise SystemExit(main())
