"""Statistics for benchmark tables: paired bootstrap intervals of a mean difference, ROC AUC."""

from __future__ import annotations

import numpy as np

__all__ = ["paired_bootstrap", "roc_auc"]


def paired_bootstrap(diff: np.ndarray, resamples: int = 2000, seed: int = 0,
                     level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the mean of the paired differences ``diff`` (one per item, e.g. a face: row A's score
    minus row B's on the same face) and its interval at ``level``. Non-finite differences are dropped; all-NaN
    gives NaNs, a single item NaN bounds (one item has no interval). An interval that excludes 0 is what the
    benchmarks call a confirmed difference.

    The interval is the wider, on each side, of two: the percentile bootstrap of the mean (items resampled with
    replacement, ``resamples`` times, seeded) with Hesterberg's expansion for small samples (its tails taken at
    ``Phi(-sqrt(n / (n - 1)) t_{n-1})`` instead of ``(1 - level) / 2``), and Student's t interval. A plain
    percentile bootstrap is far too narrow on a few items: on null data it excluded 0 in 21% of 4-item and 50% of
    2-item draws instead of 5%; this one in 5-6% (normal data) and at most 14% (skewed), and both agree within a
    few percent from about 30 items (Hesterberg 2015, "What teachers should know about the bootstrap")."""
    from scipy import stats

    d = np.asarray(diff, dtype=np.float64).ravel()
    d = d[np.isfinite(d)]
    n = len(d)
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(d.mean())
    if n == 1:
        return mean, float("nan"), float("nan")
    t = float(stats.t.ppf(1 - (1 - level) / 2, n - 1))
    tail = 100 * float(stats.norm.sf(np.sqrt(n / (n - 1)) * t))
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, n, (resamples, n))].mean(1)
    half = t * float(d.std(ddof=1)) / np.sqrt(n)
    low = min(float(np.percentile(means, tail)), mean - half)
    high = max(float(np.percentile(means, 100 - tail)), mean + half)
    return mean, low, high


def roc_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(a score of ``pos`` > a score of ``neg``), ties counting half (the Mann-Whitney AUC; 1 = every positive
    above every negative, 0.5 = no separation). For distances, pass them negated. Non-finite scores (a face that
    was not found) are left out, as the bootstrap leaves them out; NaN when a side has none left."""
    p = np.asarray(pos, np.float64).ravel()
    n = np.asarray(neg, np.float64).ravel()
    p, n = p[np.isfinite(p)][:, None], n[np.isfinite(n)][None, :]
    if not p.size or not n.size:
        return float("nan")
    return float(((p > n).sum() + 0.5 * (p == n).sum()) / (p.size * n.size))
