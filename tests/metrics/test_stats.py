import numpy as np

from facerestore.metrics.stats import paired_bootstrap


def test_constant_differences_give_a_point_interval():
    assert paired_bootstrap(np.full(30, 0.25)) == (0.25, 0.25, 0.25)


def test_interval_matches_the_normal_approximation_for_many_items():
    d = np.random.default_rng(3).normal(0.1, 1.0, 4000)
    mean, lo, hi = paired_bootstrap(d, resamples=4000, seed=1)
    half = 1.96 * d.std(ddof=1) / np.sqrt(len(d))
    assert mean == d.mean()
    assert abs((hi - lo) / 2 - half) < 0.1 * half
    assert lo < mean < hi


def test_non_finite_items_are_dropped_and_seed_is_deterministic():
    d = np.array([1.0, np.nan, 2.0, np.inf, 3.0])
    assert paired_bootstrap(d, seed=5) == paired_bootstrap(np.array([1.0, 2.0, 3.0]), seed=5)
    assert all(np.isnan(paired_bootstrap(np.array([np.nan]))))


def test_few_items_keep_the_stated_coverage():
    """On null data (mean difference 0) a 95% interval must exclude 0 in about 5% of draws, also on 2-8 items where
    the plain percentile bootstrap excluded it in 13-50%; a single item has no interval."""
    rng = np.random.default_rng(0)
    for n in (2, 4, 8):
        hits = sum(lo > 0 or hi < 0 for _, lo, hi in (paired_bootstrap(rng.normal(size=n), resamples=500, seed=k)
                                                       for k in range(300)))
        assert hits / 300 < 0.09, (n, hits)
    mean, lo, hi = paired_bootstrap(np.array([0.3]))
    assert mean == 0.3 and np.isnan(lo) and np.isnan(hi)
    d = np.array([1.0, 2.0, 4.0])  # at least Student's t interval (t_2 at 97.5%: 4.3026527297)
    _, lo, hi = paired_bootstrap(d)
    half = 4.3026527297 * d.std(ddof=1) / np.sqrt(3)
    assert lo <= d.mean() - half + 1e-9 and hi >= d.mean() + half - 1e-9


def test_level_widens_the_interval():
    d = np.random.default_rng(0).normal(size=200)
    _, lo90, hi90 = paired_bootstrap(d, level=0.90)
    _, lo99, hi99 = paired_bootstrap(d, level=0.99)
    assert lo99 < lo90 < hi90 < hi99


def test_roc_auc_counts_ordered_pairs_and_ties_half():
    from facerestore.metrics.stats import roc_auc

    # a face that was not found (NaN distance) is left out, not counted as a loss
    assert roc_auc(np.array([1.0, np.nan]), np.array([0.0])) == 1.0
    assert np.isnan(roc_auc(np.array([np.nan]), np.array([0.0])))

    assert roc_auc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert roc_auc(np.array([1.0, 2.0]), np.array([3.0, 4.0])) == 0.0
    # pairs (pos, neg): (1, 1) tie = 0.5, (1, 0) = 1, (3, 1) = 1, (3, 0) = 1 -> 3.5 / 4
    assert roc_auc(np.array([1.0, 3.0]), np.array([1.0, 0.0])) == 0.875
