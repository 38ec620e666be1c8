"""The trained network as an ONNX graph, so tools that cannot unpickle our artifact can run it.

The graph is built from the :class:`~model.predictor.Predictor` the service
itself serves, whose first layer already holds the scaler, so the ONNX model
takes the 13 *raw* feature values (in :data:`model.features.FEATURE_NAMES`
order) and returns the probability of disease, in float64 like our own
arithmetic, which is what lets a test require agreement to 1e-6.

What the graph deliberately does not contain (``ONNX_LIMITATIONS``, also
written into the file's metadata and the docs): input validation (ranges and
codes), missing-value handling, the decision threshold and any calibration.
Those live in the service; an ONNX runtime only multiplies matrices.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

import numpy as np

from model.features import FEATURE_NAMES, N_FEATURES
from model.predictor import Predictor

#: Opset 17 is read by every onnxruntime since 1.12 and by Triton's ONNX backend.
OPSET: Final[int] = 17
INPUT_NAME: Final[str] = "features"
OUTPUT_NAME: Final[str] = "probability"
ONNX_LIMITATIONS: Final[tuple[str, ...]] = (
    "no input validation: out-of-range values and unknown codes are scored, not refused",
    "no missing-value handling: every one of the 13 features must be a number (NaN in, NaN out)",
    "no decision threshold: the output is the probability; compare it with the "
    "'threshold' metadata entry to get the class",
    "no calibration beyond what the network learnt",
)


class OnnxUnavailableError(RuntimeError):
    """The optional ``onnx`` package is missing; the message says how to install it."""


def _onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise OnnxUnavailableError(
            "ONNX export needs the optional onnx package: pip install '.[onnx]'"
        ) from None
    return onnx


def build_onnx_model(predictor: Predictor) -> Any:
    """An ``onnx.ModelProto``: ``sigmoid(relu(x @ W1 + b1) @ w2 + b2)`` on raw features.

    ``x`` is ``features`` (float64, shape [n, 13]); the output ``probability``
    has shape [n]. Metadata records the model version, the threshold, the
    feature order and the limitations above.
    """
    onnx = _onnx()
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    double = onnx.TensorProto.DOUBLE
    initializers = [
        numpy_helper.from_array(np.asarray(predictor.w1, dtype=np.float64), "W1"),
        numpy_helper.from_array(np.asarray(predictor.b1, dtype=np.float64), "b1"),
        numpy_helper.from_array(np.asarray(predictor.w2, dtype=np.float64), "w2"),
        numpy_helper.from_array(np.asarray(predictor.b2, dtype=np.float64), "b2"),
    ]
    nodes = [
        helper.make_node("Gemm", [INPUT_NAME, "W1", "b1"], ["hidden_pre"], name="layer1"),
        helper.make_node("Relu", ["hidden_pre"], ["hidden"], name="relu"),
        helper.make_node("MatMul", ["hidden", "w2"], ["logit_pre"], name="layer2"),
        helper.make_node("Add", ["logit_pre", "b2"], ["logit"], name="layer2_bias"),
        helper.make_node("Sigmoid", ["logit"], [OUTPUT_NAME], name="sigmoid"),
    ]
    graph = helper.make_graph(
        nodes,
        "heart_risk",
        [helper.make_tensor_value_info(INPUT_NAME, double, ["n", N_FEATURES])],
        [helper.make_tensor_value_info(OUTPUT_NAME, double, ["n"])],
        initializer=initializers,
        doc_string="Probability of heart disease from the 13 raw Statlog (Heart) features, "
        "in this order: " + ", ".join(FEATURE_NAMES),
    )
    model = helper.make_model(
        graph,
        producer_name="heart-risk",
        opset_imports=[helper.make_opsetid("", OPSET)],
    )
    # The IR version of the opset, not of the installed onnx: older runtimes refuse newer IRs.
    model.ir_version = 8
    model.doc_string = "heart-risk network, scaler folded into the first layer"
    helper.set_model_props(
        model,
        {
            "model_version": predictor.model_version,
            "threshold": repr(float(predictor.threshold)),
            "feature_names": json.dumps(list(FEATURE_NAMES)),
            "not_included": json.dumps(list(ONNX_LIMITATIONS)),
        },
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def export_onnx(predictor: Predictor, output: Path) -> Path:
    """Write the ONNX file (atomically enough for a CLI: a temp name, then a rename)."""
    model = build_onnx_model(predictor)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.name}.tmp")
    partial.write_bytes(model.SerializeToString())
    partial.replace(output)
    return output
