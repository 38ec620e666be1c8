"""Human-readable outputs of a training run: a JSON report and the loss-curve plot."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from model.artifact import ARRAY_KEYS
from model.atomic import atomic_path, write_text_atomic

# write_text_atomic lives in model.atomic; re-exported for callers written before the move.
__all__ = [
    "markdown_table",
    "plot_loss",
    "plot_reliability",
    "report_from_payload",
    "write_json_atomic",
    "write_text_atomic",
]


def write_json_atomic(data: Mapping[str, Any], path: Path) -> Path:
    """Readable JSON (NaN allowed: a metric can be undefined), written atomically."""
    return write_text_atomic(path, json.dumps(data, indent=2, allow_nan=True) + "\n")


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A GitHub Markdown table: the one way every report and benchmark writes one.

    Every row must have one cell per header (a short row would shift its columns).
    """
    cells = [list(headers), *map(list, rows)]
    if any(len(row) != len(headers) for row in cells):
        raise ValueError(f"every row of this table needs {len(headers)} cells")
    lines = ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join([lines[0], "|" + "---|" * len(headers), *lines[1:]])


def report_from_payload(payload: Mapping[str, Any]) -> dict[str, Any]:
    """Everything in the artifact except the arrays: what a person wants to read."""
    return {k: v for k, v in payload.items() if k not in ARRAY_KEYS}


def plot_loss(loss_curve: Sequence[float], path: Path, title: str = "Training loss") -> bool:
    """Save the loss curve as PNG (the tutorial's ``plot_loss``); False without matplotlib.

    matplotlib is an optional extra (``pip install '.[plot]'``): the service
    image must not carry a plotting stack it never uses.
    """

    def draw(ax: Any) -> None:
        ax.plot(range(1, len(loss_curve) + 1), loss_curve)
        ax.set_xlabel("epoch")
        ax.set_ylabel("objective (mean BCE + L2)")
        ax.set_title(title)

    return _save_plot(path, draw)


def plot_reliability(bins: Sequence[Mapping[str, Any]], path: Path) -> bool:
    """Reliability diagram of the test split: observed share against mean predicted risk."""

    def draw(ax: Any) -> None:
        ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="perfect calibration")
        ax.plot(
            [b["mean_predicted"] for b in bins],
            [b["observed"] for b in bins],
            marker="o",
            label="model (test split, 10 bins)",
        )
        ax.set_xlabel("mean predicted risk")
        ax.set_ylabel("observed share with disease")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title("Reliability diagram")
        ax.legend()

    return _save_plot(path, draw)


def _save_plot(path: Path, draw: Callable[[Any], None]) -> bool:
    """One figure, drawn by ``draw`` and written atomically; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    draw(ax)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return True
