"""Markdown and JSON output of benchmark results."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from model.atomic import write_text_atomic

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub Markdown table; every row must have one cell per header."""
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"row has {len(row)} cells, table has {len(headers)} columns")
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---" for _ in headers) + "|",
    ]
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return "\n".join(lines)


def number(value: float, digits: int = 0) -> str:
    """``12345.6`` -> ``'12,346'``; missing values as ``n/a``."""
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:,.{digits}f}"


def milliseconds(us: float) -> str:
    """Microseconds as milliseconds with precision suited to the magnitude."""
    if us is None or math.isnan(us):
        return "n/a"
    ms = us / 1000
    if ms < 1:
        return f"{ms:.3f} ms"
    if ms < 10:
        return f"{ms:.2f} ms"
    return f"{ms:.1f} ms"


def times(value: float) -> str:
    """A ratio as ``0.74x``."""
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:.2f}x" if value < 100 else f"{value:,.0f}x"


def duration(seconds: float) -> str:
    """A per-call time with a unit that keeps 3 significant digits."""
    if math.isnan(seconds):
        return "n/a"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def _clean(value: Any) -> Any:
    """JSON cannot hold NaN: store it as null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def write_results(stem: str, markdown: str, data: dict[str, Any], directory: Path) -> list[Path]:
    """``<stem>.md`` and ``<stem>.json`` in ``directory``."""
    return [
        write_text_atomic(directory / f"{stem}.md", markdown.rstrip() + "\n"),
        write_text_atomic(
            directory / f"{stem}.json", json.dumps(_clean(data), indent=2, allow_nan=False) + "\n"
        ),
    ]
