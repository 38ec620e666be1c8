"""Human-readable outputs of a training run: a JSON report and the loss-curve plot."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def write_text_atomic(path: Path, text: str) -> Path:
    """Write via a temp file and a rename, like the artifact, so readers never see half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(data: Mapping[str, Any], path: Path) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=2, allow_nan=True) + "\n")


def report_from_payload(payload: Mapping[str, Any]) -> dict[str, Any]:
    """Everything in the artifact except the arrays: what a person wants to read."""
    return {k: v for k, v in payload.items() if k not in ("weights", "scaler")}


def plot_loss(loss_curve: Sequence[float], path: Path, title: str = "Training loss") -> bool:
    """Save the loss curve as PNG (the tutorial's ``plot_loss``); False without matplotlib.

    matplotlib is an optional extra (``pip install '.[plot]'``): the service
    image must not carry a plotting stack it never uses.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot(range(1, len(loss_curve) + 1), loss_curve)
    ax.set_xlabel("epoch")
    ax.set_ylabel("objective (mean BCE + L2)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format="png")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        Path(tmp).unlink(missing_ok=True)
    return True
