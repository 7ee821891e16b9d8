"""Statistics for benchmark tables: paired bootstrap intervals of a mean difference, ROC AUC."""

from __future__ import annotations

import numpy as np

__all__ = ["paired_bootstrap", "roc_auc"]


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


def roc_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(a score of ``pos`` > a score of ``neg``), ties counting half (the Mann-Whitney AUC; 1 = every positive
    above every negative, 0.5 = no separation). For distances, pass them negated."""
    p = np.asarray(pos, np.float64).ravel()[:, None]
    n = np.asarray(neg, np.float64).ravel()[None, :]
    return float(((p > n).sum() + 0.5 * (p == n).sum()) / (p.size * n.size))
