"""Distribution metrics over Inception pool3 features: FID, KID and patch-FID.

Features are pytorch-fid's: the 2048-d final average pool ("pool3") of the FID Inception v3 (zoo
"pt-inception-fid"), inputs resized to 299x299 bilinearly and mapped to [-1, 1].

- FID (Heusel et al. 2017): ||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)) in float64, with S the
  unbiased (n - 1) covariance as ``np.cov``. Statistics are accumulated as running sums, so any
  number of images fits in memory; they can be saved, loaded (pytorch-fid's ``.npz`` with ``mu``,
  ``sigma``) and reused as a fixed reference.
- KID (Binkowski et al. 2018): unbiased MMD^2 with the cubic polynomial kernel
  k(x, y) = (x.y / d + 1)^3, averaged over 100 random subsets of min(1000, n1, n2) samples of each set
  (drawn without replacement from a seeded generator), as clean-fid / StyleGAN-ADA.
- Patch-FID (paper 002): FID over 1000 random 128x128 crops of every image (positions from seeded
  generators, one per image set).

Usage::

    fid = metrics.create("fid")
    for pred, gt in loader:
        fid.update(pred, gt)          # either may be None
    score = fid.compute()
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np
import torch

from facerestore.metrics.base import DistributionMetric
from facerestore.nn.backbones import FIDInceptionV3, freeze, load_fid_inception
from facerestore.nn.backbones.weights import WeightsArg

FEATURE_DIM = 2048


# ----------------------------------------------------------------------------------------- math
def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, method: str = "eigen", eps: float = 1e-6
) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

    ``method="eigen"`` computes tr((S1 S2)^(1/2)) as the sum of square roots of the eigenvalues of
    the symmetric PSD matrix L^T S2 L, where S1 = L L^T (Cholesky, or the eigen square root when S1
    is singular): it has the spectrum of S1 S2, and needs one symmetric eigenvalue solve.
    ``method="sqrtm"`` follows pytorch-fid: ``scipy.linalg.sqrtm(S1 @ S2)``, retried with ``eps``
    on the diagonals when not finite, real part kept.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"inconsistent shapes: mu {mu1.shape} {mu2.shape}, sigma {s1.shape} {s2.shape}")
    diff = mu1 - mu2
    if method == "eigen":
        s1 = (s1 + s1.T) / 2
        try:
            factor = np.linalg.cholesky(s1)
        except np.linalg.LinAlgError:  # singular (fewer samples than dimensions): any L with L L^T = S1 will do
            w, v = np.linalg.eigh(s1)
            factor = v * np.sqrt(np.clip(w, 0, None))
        m = factor.T @ s2 @ factor
        tr_covmean = float(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum())
    elif method == "sqrtm":
        from scipy import linalg

        covmean = linalg.sqrtm(s1 @ s2)
        if not np.isfinite(covmean).all():
            offset = np.eye(s1.shape[0]) * eps
            covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
        tr_covmean = float(np.trace(np.real(covmean)))
    else:
        raise ValueError(f"method must be 'eigen' or 'sqrtm', got {method!r}")
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


def polynomial_mmd2(x: np.ndarray, y: np.ndarray, degree: int = 3, coef0: float = 1.0) -> float:
    """Unbiased MMD^2 between samples x (m, d) and y (m', d) with k(a, b) = (a.b / d + coef0)^degree."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    d = x.shape[1]
    kxx = (x @ x.T / d + coef0) ** degree
    kyy = (y @ y.T / d + coef0) ** degree
    kxy = (x @ y.T / d + coef0) ** degree
    m, n = len(x), len(y)
    sxx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    syy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(sxx + syy - 2 * kxy.mean())


def kernel_inception_distance(
    feats1: np.ndarray,
    feats2: np.ndarray,
    num_subsets: int = 100,
    subset_size: int = 1000,
    generator: torch.Generator | None = None,
) -> tuple[float, float]:
    """KID: mean and standard deviation over subsets of the unbiased cubic-kernel MMD^2.

    Each subset takes m = min(subset_size, n1, n2) rows of each set without replacement.
    """
    from facerestore.errors import InputError

    n1, n2 = len(feats1), len(feats2)
    m = min(subset_size, n1, n2)
    if m < 2:
        raise InputError(f"KID needs at least 2 samples in each set, got {n1} and {n2}")
    vals = []
    for _ in range(num_subsets):
        i1 = torch.randperm(n1, generator=generator)[:m].numpy()
        i2 = torch.randperm(n2, generator=generator)[:m].numpy()
        vals.append(polynomial_mmd2(feats1[i1], feats2[i2]))
    return float(np.mean(vals)), float(np.std(vals))


class GaussianStats:
    """Running mean and covariance of feature vectors (float64, on the CPU).

    ``mu`` / ``sigma`` give the statistics (``sigma`` unbiased, as ``np.cov``). ``fixed`` stats
    (loaded or set from precomputed values) cannot be updated.
    """

    def __init__(self, dim: int = FEATURE_DIM) -> None:
        self.dim = dim
        self.reset()

    def reset(self) -> None:
        self.n = 0
        self._mean = torch.zeros(self.dim, dtype=torch.float64)
        self._m2 = torch.zeros(self.dim, self.dim, dtype=torch.float64)  # sum of centred outer products
        self._fixed: tuple[np.ndarray, np.ndarray] | None = None

    @classmethod
    def from_stats(cls, mu: np.ndarray, sigma: np.ndarray, n: int = 0) -> GaussianStats:
        mu, sigma = np.asarray(mu, np.float64).reshape(-1), np.asarray(sigma, np.float64)
        if sigma.shape != (mu.size, mu.size):
            raise ValueError(f"sigma must be ({mu.size}, {mu.size}), got {sigma.shape}")
        s = cls(mu.size)
        s._fixed, s.n = (mu, sigma), n
        return s

    @property
    def fixed(self) -> bool:
        return self._fixed is not None

    def update(self, feats: torch.Tensor) -> None:
        """Add feature vectors (N, dim)."""
        if self.fixed:
            raise RuntimeError("these statistics were loaded from precomputed values and cannot be updated")
        f = feats.detach().to("cpu", torch.float64).reshape(-1, self.dim)
        nb = f.shape[0]
        if nb == 0:
            return
        # Chan et al.'s pairwise merge of (count, mean, centred scatter): no cancellation when the
        # mean is large compared with the spread.
        mean_b = f.mean(0)
        c = f - mean_b
        delta = mean_b - self._mean
        n = self.n + nb
        self._m2 += c.T @ c + torch.outer(delta, delta) * (self.n * nb / n)
        self._mean += delta * (nb / n)
        self.n = n

    @property
    def mu(self) -> np.ndarray:
        if self._fixed is not None:
            return self._fixed[0]
        if self.n < 1:
            raise ValueError("no features accumulated")
        return self._mean.numpy().copy()

    @property
    def sigma(self) -> np.ndarray:
        if self._fixed is not None:
            return self._fixed[1]
        if self.n < 2:
            raise ValueError(f"a covariance needs at least 2 samples, got {self.n}")
        return (self._m2 / (self.n - 1)).numpy()

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``mu``, ``sigma`` (and ``n``) to an ``.npz`` file, pytorch-fid's stats format."""
        from facerestore.io import atomic_write_bytes

        buf = io.BytesIO()
        np.savez_compressed(buf, mu=self.mu, sigma=self.sigma, n=np.int64(self.n))
        return atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path: str | os.PathLike) -> GaussianStats:
        """Read an ``.npz`` with ``mu`` and ``sigma`` (ours or pytorch-fid's ``--save-stats``)."""
        from facerestore.errors import InputError

        try:
            with np.load(Path(path), allow_pickle=False) as f:
                return cls.from_stats(f["mu"], f["sigma"], int(f["n"]) if "n" in f else 0)
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise InputError(f"cannot read FID statistics from {path}: {exc}") from exc


# ----------------------------------------------------------------------------------------- metrics
def _check_images(name: str, x: torch.Tensor) -> None:
    from facerestore.errors import InputError

    if x.dim() != 4 or x.shape[1] != 3:
        raise InputError(f"{name}: expected (B, 3, H, W) images, got shape {tuple(x.shape)}")


class _InceptionMetric(DistributionMetric):
    """Shared part: the FID Inception, batching, and the two image sets ("pred" and "target")."""

    needs_reference = True
    lower_better = True

    def __init__(self, weights: WeightsArg = None, batch_size: int = 50) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.inception: FIDInceptionV3 = freeze(load_fid_inception(weights))

    def train(self, mode: bool = True) -> _InceptionMetric:
        # Batch norm must never switch to batch statistics.
        return super().train(False)

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """pool3 features (N, 2048), float32 on the CPU, of RGB images in [0, 1] (processed in batches)."""
        _check_images(self.name or type(self).__name__, images)
        p = next(self.inception.parameters())
        out = [
            self.inception(images[i : i + self.batch_size].to(p.device, p.dtype)).float().cpu()
            for i in range(0, images.shape[0], self.batch_size)
        ]
        return torch.cat(out) if out else torch.zeros(0, FEATURE_DIM)

    def _set_features(self, images: torch.Tensor, which: str) -> torch.Tensor:
        return self.features(images)

    def update(self, pred: torch.Tensor | None = None, target: torch.Tensor | None = None) -> None:
        """Add a batch of predictions and/or reference images (B, 3, H, W) in [0, 1]."""
        if pred is not None:
            self._add(self._set_features(pred, "pred"), "pred")
        if target is not None:
            self._add(self._set_features(target, "target"), "target")

    def _add(self, feats: torch.Tensor, which: str) -> None:
        raise NotImplementedError


class FID(_InceptionMetric):
    """Frechet Inception distance between the "pred" and "target" image sets.

    Args:
        weights: path of the FID Inception weights (default: zoo "pt-inception-fid" from the cache).
        batch_size: images per Inception forward pass.
        method: "eigen" (default) or "sqrtm" (pytorch-fid's computation), see ``frechet_distance``.

    ``pred_stats`` / ``target_stats`` are ``GaussianStats``; ``set_target_stats`` (or
    ``load_target_stats``) fixes precomputed reference statistics.
    """

    name = "fid"
    score_range = (0.0, float("inf"))

    def __init__(self, weights: WeightsArg = None, batch_size: int = 50, method: str = "eigen") -> None:
        super().__init__(weights, batch_size)
        if method not in ("eigen", "sqrtm"):
            raise ValueError(f"method must be 'eigen' or 'sqrtm', got {method!r}")
        self.method = method
        self.pred_stats = GaussianStats()
        self.target_stats = GaussianStats()

    def _add(self, feats: torch.Tensor, which: str) -> None:
        getattr(self, f"{which}_stats").update(feats)

    def reset(self) -> None:
        """Forget accumulated predictions and references (fixed reference statistics included)."""
        self.pred_stats = GaussianStats()
        self.target_stats = GaussianStats()

    def set_target_stats(self, mu: np.ndarray, sigma: np.ndarray) -> None:
        """Use precomputed reference statistics (e.g. of FFHQ) instead of target images."""
        from facerestore.errors import InputError

        try:
            stats = GaussianStats.from_stats(mu, sigma)
        except ValueError as exc:
            raise InputError(f"{self.name} reference statistics: {exc}") from None
        self._check_dim(stats, "given")
        self.target_stats = stats

    def load_target_stats(self, path: str | os.PathLike) -> None:
        stats = GaussianStats.load(path)
        self._check_dim(stats, str(path))
        self.target_stats = stats

    def _check_dim(self, stats: GaussianStats, where: str) -> None:
        from facerestore.errors import InputError

        if stats.dim != self.pred_stats.dim:
            raise InputError(f"{self.name} reference statistics ({where}) have {stats.dim} features; the Inception "
                             f"pool features have {self.pred_stats.dim}")

    def compute(self) -> float:
        from facerestore.errors import InputError

        for which in ("pred", "target"):
            s = getattr(self, f"{which}_stats")
            if not s.fixed and s.n < 2:
                raise InputError(f"{self.name}: needs at least 2 {which} images (or patches), got {s.n}")
        p, t = self.pred_stats, self.target_stats
        if not p.fixed and p.n < p.dim:
            import warnings

            warnings.warn(f"{self.name} of {p.n} images (fewer than the {p.dim} features: a rank-deficient covariance) "
                          "is strongly biased upwards; compare only runs with the same number of images",
                          stacklevel=2)
        d = frechet_distance(p.mu, p.sigma, t.mu, t.sigma, method=self.method)
        return 0.0 if -1e-3 < d < 0.0 else d  # the rounding of equal sets (-5e-6 seen at n = 50), not a distance


class KID(_InceptionMetric):
    """Kernel Inception distance (unbiased, cubic polynomial kernel) between "pred" and "target".

    Keeps every feature vector (8 KiB per image). ``compute()`` returns the mean over subsets,
    ``compute_with_std()`` also the standard deviation. The subsets come from a generator seeded
    with ``seed`` at every call, so repeated calls agree.
    """

    name = "kid"
    score_range = (-float("inf"), float("inf"))

    def __init__(
        self,
        weights: WeightsArg = None,
        batch_size: int = 50,
        num_subsets: int = 100,
        subset_size: int = 1000,
        seed: int = 0,
    ) -> None:
        super().__init__(weights, batch_size)
        self.num_subsets, self.subset_size, self.seed = num_subsets, subset_size, seed
        self.reset()

    def _add(self, feats: torch.Tensor, which: str) -> None:
        self._feats[which].append(feats)

    def reset(self) -> None:
        self._feats: dict[str, list[torch.Tensor]] = {"pred": [], "target": []}

    def stacked(self, which: str) -> np.ndarray:
        """All features of ``which`` ("pred" or "target") as (N, 2048) float64."""
        f = self._feats[which]
        return torch.cat(f).double().numpy() if f else np.zeros((0, FEATURE_DIM))

    def compute_with_std(self) -> tuple[float, float]:
        g = torch.Generator().manual_seed(self.seed)
        return kernel_inception_distance(
            self.stacked("pred"), self.stacked("target"), self.num_subsets, self.subset_size, g
        )

    def compute(self) -> float:
        return self.compute_with_std()[0]


class PatchFID(FID):
    """Patch FID (paper 002): FID over ``num_patches`` random ``patch_size`` crops of every image.

    Crop corners are uniform over the valid positions, drawn from two generators (one for
    predictions, one for references) seeded from ``seed`` at construction and ``reset``, so the
    score depends only on the images and their order. Crops are resized to 299 px like whole
    images. Images smaller than ``patch_size`` raise InputError. The paper's low-resolution variant
    is ``num_patches=250, patch_size=64``.
    """

    name = "pfid"

    def __init__(
        self,
        weights: WeightsArg = None,
        batch_size: int = 50,
        method: str = "eigen",
        num_patches: int = 1000,
        patch_size: int = 128,
        seed: int = 0,
    ) -> None:
        super().__init__(weights, batch_size, method)
        self.num_patches, self.patch_size, self.seed = num_patches, patch_size, seed
        self._reset_generators()

    def _reset_generators(self) -> None:
        self._gen = {
            "pred": torch.Generator().manual_seed(self.seed),
            "target": torch.Generator().manual_seed(self.seed + 1),
        }

    def reset(self) -> None:
        super().reset()
        self._reset_generators()

    def crop_positions(self, height: int, width: int, which: str = "pred") -> torch.Tensor:
        """Next ``num_patches`` (top, left) corners (num_patches, 2) for an image of that size."""
        from facerestore.errors import InputError

        ps = self.patch_size
        if height < ps or width < ps:
            raise InputError(f"{self.name}: images of {height}x{width} px are smaller than the {ps} px patches")
        g = self._gen[which]
        top = torch.randint(0, height - ps + 1, (self.num_patches,), generator=g)
        left = torch.randint(0, width - ps + 1, (self.num_patches,), generator=g)
        return torch.stack([top, left], 1)

    @torch.no_grad()
    def _set_features(self, images: torch.Tensor, which: str) -> torch.Tensor:
        _check_images(self.name, images)
        ps = self.patch_size
        out = []
        for img in images:
            pos = self.crop_positions(img.shape[-2], img.shape[-1], which).tolist()
            for i in range(0, len(pos), self.batch_size):
                crops = torch.stack([img[:, t : t + ps, l : l + ps] for t, l in pos[i : i + self.batch_size]])
                out.append(self.features(crops))
        return torch.cat(out) if out else torch.zeros(0, FEATURE_DIM)
