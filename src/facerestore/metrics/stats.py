"""Statistics for benchmark tables: paired bootstrap intervals of a mean difference."""

from __future__ import annotations

import numpy as np

__all__ = ["paired_bootstrap"]


def paired_bootstrap(diff: np.ndarray, resamples: int = 2000, seed: int = 0,
                     level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the mean of the paired differences ``diff`` (one per item, e.g. a face: row A's score
    minus row B's on the same face) and its percentile bootstrap interval at ``level`` (items resampled with
    replacement, ``resamples`` times, seeded). Non-finite differences are dropped; all-NaN gives NaNs.
    An interval that excludes 0 is what the benchmarks call a confirmed difference."""
    d = np.asarray(diff, dtype=np.float64).ravel()
    d = d[np.isfinite(d)]
    if len(d) == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), (resamples, len(d)))].mean(1)
    tail = 100 * (1 - level) / 2
    return float(d.mean()), float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))
