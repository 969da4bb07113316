"""Percentiles by nearest rank: one definition for the benchmarks and the console's charts."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The value at quantile `q` (0..1] of already sorted values; nan when there are none."""
    if not sorted_values:
        return math.nan
    return sorted_values[min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))]
