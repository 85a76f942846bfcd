"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import statistics


def mean_spread(values: list[float | None]) -> str:
    """Mean ± sample standard deviation of the non-None values, in percent ("n/a" when none)."""
    vals = [v for v in values if v is not None]
    if not vals:
        return "n/a"
    return f"{100 * statistics.fmean(vals):.1f}" + (
        f" ± {100 * statistics.stdev(vals):.1f}" if len(vals) > 1 else ""
    )
