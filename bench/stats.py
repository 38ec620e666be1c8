"""Small statistics helpers shared by the benchmarks: medians and ratios of repeated runs.

Benchmarks on a shared machine are noisy; medians of interleaved rounds are
robust to one disturbed round, and ratios against a reference measured minutes
apart cancel most of what the machine itself contributes.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


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
        return {
            "median": self.median,
            "min": self.minimum,
            "max": self.maximum,
            "n": self.n,
            "spread": self.spread,
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


def paired_ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """Round-by-round ratios of two series measured in the same rounds."""
    if len(numerators) != len(denominators):
        raise ValueError(
            f"paired series differ in length: {len(numerators)} vs {len(denominators)}"
        )
    return [ratio(a, b) for a, b in zip(numerators, denominators, strict=True)]
