"""Benchmark results: medians of repeated runs, ratios, Markdown tables and result files.

Benchmarks on a shared machine are noisy: medians of interleaved rounds are
robust to one disturbed round, and ratios against a reference measured minutes
apart cancel most of what the machine itself contributes.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.atomic import write_text_atomic

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Summary:
    """Median and spread of one figure over several runs."""

    median: float
    minimum: float
    maximum: float
    n: int

    @property
    def spread(self) -> float:
        """(max - min) / median: how much the runs disagreed, as a fraction of the median."""
        if self.n == 0 or self.median == 0 or math.isnan(self.median):
            return math.nan
        return (self.maximum - self.minimum) / abs(self.median)

    def as_dict(self) -> dict[str, float | int]:
        median, spread = self.median, self.spread
        return {"median": median, "min": self.minimum, "max": self.maximum, "n": self.n} | {
            "spread": spread
        }


def summarize(values: Iterable[float]) -> Summary:
    """Median, min and max of ``values`` ignoring NaN; all NaN when there is nothing left."""
    clean = [float(v) for v in values if not math.isnan(float(v))]
    if not clean:
        return Summary(math.nan, math.nan, math.nan, 0)
    return Summary(statistics.median(clean), min(clean), max(clean), len(clean))


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, NaN when either is missing or the denominator is zero."""
    if math.isnan(numerator) or math.isnan(denominator) or denominator == 0:
        return math.nan
    return numerator / denominator


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub Markdown table; every row must have one cell per header."""
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"row has {len(row)} cells, table has {len(headers)} columns")
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def number(value: float, digits: int = 0) -> str:
    """``12345.6`` -> ``'12,346'``; missing values as ``n/a``."""
    return "n/a" if value is None or math.isnan(value) else f"{value:,.{digits}f}"


def milliseconds(us: float) -> str:
    """Microseconds as milliseconds with precision suited to the magnitude."""
    if us is None or math.isnan(us):
        return "n/a"
    ms = us / 1000
    return f"{ms:.3f} ms" if ms < 1 else f"{ms:.2f} ms" if ms < 10 else f"{ms:.1f} ms"


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
    return [_clean(v) for v in value] if isinstance(value, list | tuple) else value


def write_results(stem: str, markdown: str, data: dict[str, Any], directory: Path) -> list[Path]:
    """``<stem>.md`` and ``<stem>.json`` in ``directory``."""
    text = json.dumps(_clean(data), indent=2, allow_nan=False) + "\n"
    return [
        write_text_atomic(directory / f"{stem}.md", markdown.rstrip() + "\n"),
        write_text_atomic(directory / f"{stem}.json", text),
    ]
