"""``heart-train export``: write a trained artifact in a format other tools can load.

The artifact is a pickle, readable only by this code (and dangerous to load
from strangers); ONNX is read by onnxruntime, Triton, KServe, OpenVINO and
most model servers. The exported network is exactly the served one: the
weights come from the artifact's ``Predictor``, scaler already folded in.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from model.artifact import ArtifactError, load_artifact
from model.cli_support import HelpFormatter, add_version
from model.onnx_export import ONNX_LIMITATIONS, OnnxUnavailableError, export_onnx

DEFAULT_ARTIFACT = Path("artifacts") / "model.joblib"


def build_parser(prog: str = "heart-train export") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Export a trained model artifact as ONNX (scaler folded in, float64, "
        "input 'features' [n, 13] of raw values in feature order, output 'probability' [n]).",
        epilog="Not in the ONNX file: " + "; ".join(ONNX_LIMITATIONS) + ".",
        formatter_class=HelpFormatter,
    )
    add_version(parser)
    parser.add_argument(
        "--format", choices=["onnx"], default="onnx", help="output format (default: %(default)s)"
    )
    parser.add_argument(
        "--model-path",
        type=Path,
        default=DEFAULT_ARTIFACT,
        help="trained artifact to export (default: %(default)s)",
    )
    parser.add_argument(
        "--output",
        "-o",
        type=Path,
        default=None,
        help="file to write (default: MODEL_PATH with the suffix .onnx)",
    )
    return parser


def main(argv: Sequence[str] | None = None, *, prog: str = "heart-train export") -> int:
    args = build_parser(prog).parse_args(argv)
    model_path: Path = args.model_path
    output: Path = args.output or model_path.with_suffix(".onnx")
    try:
        predictor = load_artifact(model_path)
        export_onnx(predictor, output)
    except (ArtifactError, OnnxUnavailableError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {output} (model {predictor.model_version}, threshold {predictor.threshold:g})")
    return 0
