"""FID / KID / patch-FID: Frechet distance against closed forms and an independent scipy computation,
KID against brute force, streaming statistics against numpy, and the metrics end to end on an
Inception with random weights (the real ones are not needed to test the pipeline)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import linalg

from facerestore import metrics
from facerestore.errors import InputError, WeightsMissingError
from facerestore.metrics import fid as fidmod
from facerestore.metrics.fid import (
    FID,
    KID,
    GaussianStats,
    PatchFID,
    frechet_distance,
    kernel_inception_distance,
    polynomial_mmd2,
)
from facerestore.nn.backbones import FIDInceptionV3

# ----------------------------------------------------------------------------- Frechet distance


def pytorch_fid_formula(mu1, s1, mu2, s2):
    """The textbook computation (as pytorch-fid): scipy sqrtm of S1 S2."""
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def random_spd(d: int, rng: np.random.Generator, rank: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    a = rng.standard_normal((d, rank or 2 * d)) / np.sqrt(d)
    return a @ a.T, a


@pytest.mark.parametrize("method", ["eigen", "sqrtm"])
def test_identical_gaussians_give_zero(method):
    rng = np.random.default_rng(0)
    s, _ = random_spd(20, rng)
    mu = rng.standard_normal(20)
    assert abs(frechet_distance(mu, s, mu, s, method=method)) < 1e-10


@pytest.mark.parametrize("method", ["eigen", "sqrtm"])
def test_shifted_gaussians_give_squared_mean_distance(method):
    rng = np.random.default_rng(1)
    s, _ = random_spd(16, rng)
    mu1, mu2 = rng.standard_normal(16), rng.standard_normal(16)
    assert frechet_distance(mu1, s, mu2, s, method=method) == pytest.approx(((mu1 - mu2) ** 2).sum(), rel=1e-9)


def test_commuting_covariances_closed_form():
    rng = np.random.default_rng(2)
    a, b = rng.uniform(0.1, 3, 12), rng.uniform(0.1, 3, 12)
    mu1, mu2 = rng.standard_normal(12), rng.standard_normal(12)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    for method in ("eigen", "sqrtm"):
        assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b), method=method) == pytest.approx(expected, rel=1e-10)


def test_general_covariances_against_scipy():
    rng = np.random.default_rng(3)
    s1, _ = random_spd(40, rng)
    s2, _ = random_spd(40, rng)
    mu1, mu2 = rng.standard_normal(40), rng.standard_normal(40)
    ref = pytorch_fid_formula(mu1, s1, mu2, s2)
    assert frechet_distance(mu1, s1, mu2, s2, method="eigen") == pytest.approx(ref, rel=1e-9)
    assert frechet_distance(mu1, s1, mu2, s2, method="sqrtm") == pytest.approx(ref, rel=1e-9)


def test_singular_covariances_nuclear_norm_identity():
    # S_i = A_i A_i^T of rank 5 in 30-d (fewer samples than dimensions, as FID on small sets):
    # tr((S1 S2)^(1/2)) = nuclear norm of A1^T A2.
    rng = np.random.default_rng(4)
    s1, a1 = random_spd(30, rng, rank=5)
    s2, a2 = random_spd(30, rng, rank=5)
    mu = np.zeros(30)
    expected = np.trace(s1) + np.trace(s2) - 2 * np.linalg.svd(a1.T @ a2, compute_uv=False).sum()
    assert frechet_distance(mu, s1, mu, s2, method="eigen") == pytest.approx(expected, rel=1e-8, abs=1e-10)


def test_frechet_rejects_bad_input():
    with pytest.raises(ValueError, match="shapes"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="method"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(2), method="fast")


# ----------------------------------------------------------------------------- statistics


def test_streaming_stats_equal_numpy(tmp_path):
    rng = np.random.default_rng(5)
    feats = rng.standard_normal((57, 8)) * 3 + 1
    s = GaussianStats(8)
    for chunk in np.array_split(feats, 4):
        s.update(torch.from_numpy(chunk).float())
    f32 = feats.astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(s.mu, f32.mean(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(s.sigma, np.cov(f32, rowvar=False), rtol=1e-10, atol=1e-12)
    s.save(tmp_path / "stats.npz")
    t = GaussianStats.load(tmp_path / "stats.npz")
    np.testing.assert_array_equal(t.mu, s.mu)
    np.testing.assert_array_equal(t.sigma, s.sigma)
    assert t.fixed and t.n == 57
    with pytest.raises(RuntimeError, match="cannot be updated"):
        t.update(torch.zeros(1, 8))
    np.savez(tmp_path / "pytorch_fid.npz", mu=s.mu, sigma=s.sigma)  # pytorch-fid's --save-stats format
    np.testing.assert_array_equal(GaussianStats.load(tmp_path / "pytorch_fid.npz").sigma, s.sigma)
    with pytest.raises(InputError, match="cannot read"):
        GaussianStats.load(tmp_path / "missing.npz")


def test_streaming_stats_without_cancellation():
    # a mean 10^6 times the spread: sum-of-squares formulas would lose every digit
    rng = np.random.default_rng(8)
    feats = rng.standard_normal((300, 6)) * 1e-2 + 1e4
    s = GaussianStats(6)
    for chunk in np.array_split(feats, 7):
        s.update(torch.from_numpy(chunk))
    ref = np.cov(feats, rowvar=False)
    np.testing.assert_allclose(s.sigma, ref, rtol=1e-6, atol=1e-6 * np.abs(ref).max())


# ----------------------------------------------------------------------------- KID


def brute_force_mmd2(x, y):
    d = x.shape[1]

    def k(a, b):
        return (float(a @ b) / d + 1) ** 3

    m, n = len(x), len(y)
    sxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    syy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    sxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return sxx + syy - 2 * sxy


def test_polynomial_mmd_against_brute_force():
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((12, 5)), rng.standard_normal((9, 5)) + 0.5
    assert polynomial_mmd2(x, y) == pytest.approx(brute_force_mmd2(x, y), rel=1e-12)


def test_kid_subsets(monkeypatch):
    rng = np.random.default_rng(7)
    x, y = rng.standard_normal((30, 4)), rng.standard_normal((20, 4)) + 1
    # one subset of the size of the smaller set, drawn without replacement: permutation-invariant
    _, std = kernel_inception_distance(x, y[:20], num_subsets=1, subset_size=1000)
    assert std == 0
    seen = []
    monkeypatch.setattr(
        fidmod, "polynomial_mmd2", lambda a, b: seen.append((len(a), len(b), len(set(map(tuple, a))))) or 0.0
    )
    kernel_inception_distance(x, y, num_subsets=3, subset_size=1000, generator=torch.Generator().manual_seed(0))
    kernel_inception_distance(x, y, num_subsets=2, subset_size=10, generator=torch.Generator().manual_seed(0))
    assert seen == [(20, 20, 20)] * 3 + [(10, 10, 10)] * 2
    monkeypatch.undo()
    full = kernel_inception_distance(x[:20], y, num_subsets=2, subset_size=1000)[0]
    assert full == pytest.approx(brute_force_mmd2(x[:20], y), rel=1e-10)
    a = kernel_inception_distance(x, y, 5, 10, torch.Generator().manual_seed(1))
    assert a == kernel_inception_distance(x, y, 5, 10, torch.Generator().manual_seed(1))
    with pytest.raises(InputError, match="at least 2"):
        kernel_inception_distance(x[:1], y)


# ----------------------------------------------------------------------------- metrics end to end


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    torch.manual_seed(0)
    net = FIDInceptionV3()
    g = torch.Generator().manual_seed(0)
    sd = net.state_dict()
    for k, v in sd.items():  # non-trivial batch-norm statistics
        if k.endswith("running_mean"):
            sd[k] = 0.1 * torch.randn(v.shape, generator=g)
        elif k.endswith("running_var"):
            sd[k] = 0.5 + torch.rand(v.shape, generator=g)
    path = tmp_path_factory.mktemp("inception") / "pt_inception.pth"
    torch.save(sd, path)
    return path


def fast(m):
    m.inception.resize_input = False  # small inputs keep the CPU tests fast; the resize is tested in tests/nn
    return m


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(1)
    base = torch.rand(1, 3, 75, 78, generator=g)  # 75 px: the smallest input the Inception takes
    pred = (base + 0.3 * torch.rand(4, 3, 75, 78, generator=g)).clamp(0, 1)
    target = (base + 0.3 * torch.rand(3, 3, 75, 78, generator=g) ** 2).clamp(0, 1)
    return pred, target


@pytest.fixture(scope="module")
def fid_metric(inception_file):
    return fast(FID(weights=inception_file))


@pytest.fixture(scope="module")
def feats(fid_metric, images):
    """Features of the pred and target images, one image at a time (float64)."""
    return tuple(torch.cat([fid_metric.features(x[None]) for x in imgs]).double().numpy() for imgs in images)


def nuclear_reference(fp: np.ndarray, ft: np.ndarray) -> float:
    """FID of two feature sets via S = A A^T, A = centred features^T / sqrt(n - 1):
    tr((S1 S2)^(1/2)) = nuclear norm of A1^T A2 (an n1 x n2 matrix: cheap and independent)."""
    a1 = (fp - fp.mean(0)).T / np.sqrt(len(fp) - 1)
    a2 = (ft - ft.mean(0)).T / np.sqrt(len(ft) - 1)
    d = fp.mean(0) - ft.mean(0)
    return float(d @ d + (a1**2).sum() + (a2**2).sum() - 2 * np.linalg.svd(a1.T @ a2, compute_uv=False).sum())


def test_fid_accumulates_statistics_and_delegates(fid_metric, images, feats, monkeypatch):
    m = fid_metric
    m.reset()
    pred, target = images
    m.update(pred[:3], target)  # batching must not matter
    m.update(pred[3:])
    fp, ft = feats
    assert fp.shape == (4, 2048) and m.pred_stats.n == 4 and m.target_stats.n == 3
    np.testing.assert_allclose(m.pred_stats.mu, fp.mean(0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(m.pred_stats.sigma, np.cov(fp, rowvar=False), rtol=1e-4, atol=1e-8)
    np.testing.assert_allclose(m.target_stats.sigma, np.cov(ft, rowvar=False), rtol=1e-4, atol=1e-8)
    calls = []
    monkeypatch.setattr(fidmod, "frechet_distance", lambda *a, **k: calls.append((a, k)) or 1.5)
    assert m.compute() == 1.5
    (mu1, _s1, _mu2, s2), kw = calls[0]
    assert kw == {"method": "eigen"}
    np.testing.assert_array_equal(mu1, m.pred_stats.mu)
    np.testing.assert_array_equal(s2, m.target_stats.sigma)


@pytest.mark.slow  # two eigendecompositions of 2048 x 2048 (seconds; a minute on a busy 2-core machine)
def test_fid_end_to_end_value(fid_metric, images, feats):
    m = fid_metric
    m.reset()
    m.update(*images)
    assert m.compute() == pytest.approx(nuclear_reference(*feats), rel=1e-5)


def test_fid_cached_reference_statistics(fid_metric, feats, tmp_path, monkeypatch):
    m = fid_metric
    fp, ft = feats
    m.reset()
    m.target_stats.update(torch.from_numpy(ft))
    m.target_stats.save(tmp_path / "ref.npz")
    mu, sigma = m.target_stats.mu, m.target_stats.sigma
    seen = []
    monkeypatch.setattr(fidmod, "frechet_distance", lambda m1, s1, m2, s2, **k: seen.append((m2, s2)) or 0.0)
    for setup in (lambda: m.load_target_stats(tmp_path / "ref.npz"), lambda: m.set_target_stats(mu, sigma)):
        m.reset()
        setup()
        m.pred_stats.update(torch.from_numpy(fp))
        m.compute()
    assert len(seen) == 2
    for m2, s2 in seen:
        np.testing.assert_array_equal(m2, mu)
        np.testing.assert_array_equal(s2, sigma)
    with pytest.raises(RuntimeError, match="cannot be updated"):
        m.target_stats.update(torch.from_numpy(ft))
    m.reset()


def test_fid_errors(fid_metric, tmp_path, monkeypatch):
    m = fid_metric
    m.reset()
    m.pred_stats.update(torch.rand(1, 2048))
    with pytest.raises(InputError, match="at least 2 pred"):
        m.compute()
    with pytest.raises(InputError, match=r"\(B, 3, H, W\)"):
        m.update(torch.rand(3, 80, 80))
    with pytest.raises(TypeError, match="update"):
        m(torch.rand(1, 3, 80, 80), torch.rand(1, 3, 80, 80))
    monkeypatch.setenv("FACERESTORE_HOME", str(tmp_path))
    with pytest.raises(WeightsMissingError) as exc:
        FID()
    msg = str(exc.value)
    assert "pt_inception-2015-12-05-6726825d.pth" in msg and "github.com/mseitzer/pytorch-fid" in msg
    assert str(tmp_path / "weights") in msg and "\n" not in msg


def test_fid_reference_statistics_errors_and_small_samples(fid_metric, tmp_path, monkeypatch):
    m = fid_metric
    m.reset()
    (tmp_path / "zip.npz").write_bytes(b"PK\x03\x04garbage")  # a torn download
    with pytest.raises(InputError, match="cannot read FID statistics"):
        m.load_target_stats(tmp_path / "zip.npz")
    with pytest.raises(InputError, match="have 8 features; the Inception pool features have 2048"):
        m.set_target_stats(np.zeros(8), np.eye(8))
    np.savez(tmp_path / "small.npz", mu=np.zeros(8), sigma=np.eye(8))
    with pytest.raises(InputError, match="have 8 features"):
        m.load_target_stats(tmp_path / "small.npz")
    # fewer images than features: said; the rounding of equal sets is not a negative distance
    monkeypatch.setattr(fidmod, "frechet_distance", lambda *a, **k: -4.6e-6)
    m.pred_stats.update(torch.rand(3, 2048))
    m.target_stats.update(torch.rand(3, 2048))
    with pytest.warns(UserWarning, match="3 images .* strongly biased"):
        assert m.compute() == 0.0
    m.reset()


def test_kid_metric(inception_file, images, feats):
    m = fast(KID(weights=inception_file, num_subsets=7, subset_size=3, seed=3))
    m.update(*images)
    fp, ft = m.stacked("pred"), m.stacked("target")
    np.testing.assert_allclose(fp, feats[0], rtol=1e-5, atol=1e-6)
    ref = kernel_inception_distance(fp, ft, 7, 3, torch.Generator().manual_seed(3))
    assert m.compute_with_std() == ref
    assert m.compute() == m.compute() == ref[0]  # re-seeded at every call
    m.reset()
    assert m.stacked("pred").shape == (0, 2048)


def test_patch_fid(inception_file):
    m = fast(PatchFID(weights=inception_file, num_patches=3, patch_size=75, seed=11))
    g = torch.Generator().manual_seed(2)
    pred = torch.rand(1, 3, 80, 84, generator=g)
    target = torch.rand(1, 3, 78, 90, generator=g)
    m.update(pred, target)
    assert m.pred_stats.n == 3 and m.target_stats.n == 3

    def positions(imgs, seed):
        # the documented protocol: per image, all tops then all lefts from the stream's generator
        gen = torch.Generator().manual_seed(seed)
        out = []
        for img in imgs:
            h, w = img.shape[-2:]
            top = torch.randint(0, h - 75 + 1, (3,), generator=gen)
            left = torch.randint(0, w - 75 + 1, (3,), generator=gen)
            out.append(list(zip(top.tolist(), left.tolist())))
        return out

    def crops(imgs, seed):
        return torch.stack(
            [img[:, t : t + 75, l : l + 75] for img, pos in zip(imgs, positions(imgs, seed)) for t, l in pos]
        )

    fp = m.features(crops(pred, 11)).double().numpy()
    ft = m.features(crops(target, 12)).double().numpy()
    np.testing.assert_allclose(m.pred_stats.mu, fp.mean(0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(m.pred_stats.sigma, np.cov(fp, rowvar=False), rtol=1e-4, atol=1e-8)
    np.testing.assert_allclose(m.target_stats.sigma, np.cov(ft, rowvar=False), rtol=1e-4, atol=1e-8)
    m.reset()  # generators restart: the same crops again
    assert [m.crop_positions(80, 84).tolist()] == [list(map(list, p)) for p in positions(pred, 11)]
    pos = m.crop_positions(200, 300)
    assert pos.shape == (3, 2) and (pos[:, 0] <= 125).all() and (pos[:, 1] <= 225).all() and (pos >= 0).all()
    with pytest.raises(InputError, match="smaller than"):
        m.update(torch.rand(1, 3, 64, 200))


def test_registry_defaults(inception_file):
    m = metrics.create("pfid", weights=inception_file)
    assert isinstance(m, PatchFID) and m.num_patches == 1000 and m.patch_size == 128
    assert m.name == "pfid" and not m.inception.training
    k = metrics.create("kid", weights=inception_file)
    assert k.num_subsets == 100 and k.subset_size == 1000 and k.score_range[0] < 0
