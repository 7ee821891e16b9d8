"""Paper 002's robust loss (sec. 4.3): multi-resolution LPIPS + 0.1 * L1, with the inpainting noise trick.

``MultiResolutionLoss(pred, target, mask)`` compares a degraded prediction ``f_hat(G(w))`` with the
degraded target ``y`` (both (B, 3, h, w) in about [0, 1]):

* levels: starting at the target's own resolution, a perceptual distance is taken, then both images
  (and the mask) are average-pooled by 2; this repeats while the side is > ``min_side`` (16), with
  equal weights. At 1024 px that gives the paper's k = 6 levels (1024 ... 32). The paper's eq. (9)
  indexes the levels from 2^1, the authors' code starts at full resolution; both give 6 levels at
  1024 px for a 16 px floor and we follow the code.
* L1: ``l1_weight`` (0.1) times the mean absolute difference at the *coarsest* level (the images left
  after the last pooling), as the authors' code does; the paper's text only says "l_L1".
* inpainting: where ``mask`` is 0 (missing pixels), identical noise N(0.5, 1) is added to both images
  before each perceptual term, so the black holes of f_hat(x) and y do not bias it (sec. 5.1).

Perceptual distance: ``kind="lpips"`` uses LPIPS v0.1 VGG16 (paper 002's choice; weights from the
zoo, never downloaded). ``kind="substitute"`` needs no weights: per level ``L1 + (1 - SSIM)`` with an
11-tap Gaussian (sigma 1.5) SSIM window (shrunk for tiny images), which keeps the two properties the
method relies on from LPIPS: it compares local structure (means, contrasts, correlation) rather than
only pixel values, and it is bounded and scale-free, so equal level weights stay balanced. It is a
documented stand-in, not LPIPS: results are not comparable to the paper's numbers.
``make_loss(loss="auto")`` picks LPIPS when its weights are cached, else the substitute, and says so.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "LOSS_KINDS",
    "MultiResolutionLoss",
    "inpainting_noise",
    "make_loss",
    "num_levels",
    "ssim_map",
    "substitute_distance",
]

LOSS_KINDS = ("lpips", "substitute", "auto")
log = logging.getLogger(__name__)


def num_levels(side: int, min_side: int = 16) -> int:
    """Number of perceptual levels for a target of ``side`` px: halvings while the side is > min_side."""
    n = 0
    while side > min_side:
        n += 1
        side //= 2
    return n


def _gauss_window(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    t = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(t**2) / (2 * sigma**2))
    return g / g.sum()


def ssim_map(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Differentiable SSIM map (B, C, H, W) of images in [0, 1] (data range 1), same-size output.

    Gaussian window (shrunk to the largest odd size <= min(H, W)), replicate padding so every pixel
    has a full window; constants C1 = 0.01^2, C2 = 0.03^2.
    """
    side = min(x.shape[-2:])
    window = min(window, side if side % 2 else side - 1)
    window = max(window, 1)
    c = x.shape[1]
    g = _gauss_window(window, sigma, x.dtype, x.device)
    kh = g.view(1, 1, window, 1).expand(c, 1, window, 1)
    kw = g.view(1, 1, 1, window).expand(c, 1, 1, window)
    pad = window // 2

    def filt(z: torch.Tensor) -> torch.Tensor:
        if pad:
            z = F.pad(z, (pad, pad, pad, pad), mode="replicate")
        return F.conv2d(F.conv2d(z, kh, groups=c), kw, groups=c)

    mx, my = filt(x), filt(y)
    sxx = filt(x * x) - mx * mx
    syy = filt(y * y) - my * my
    sxy = filt(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    return ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))


def substitute_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Weight-free perceptual stand-in (B,): mean |x - y| + mean (1 - SSIM(x, y))."""
    return (x - y).abs().mean(dim=(1, 2, 3)) + (1 - ssim_map(x, y)).mean(dim=(1, 2, 3))


def inpainting_noise(
    x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | Sequence[torch.Generator]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Add the same N(0.5, 1) noise to the missing pixels (mask 0) of x and y; mask (B|1, 1, H, W) in [0, 1].
    ``generator``: one for the batch, or one per sample (B of them: each face's noise then does not depend on the
    other faces of its batch)."""
    if isinstance(generator, torch.Generator):
        noise = torch.randn(x.shape, generator=generator, device=generator.device)
    else:
        if len(generator) != x.shape[0]:
            raise ValueError(f"{len(generator)} generators for {x.shape[0]} samples")
        noise = torch.cat([torch.randn((1, *x.shape[1:]), generator=g, device=g.device) for g in generator])
    noise = noise.to(device=x.device, dtype=x.dtype)
    hole = (1 - mask).to(device=x.device, dtype=x.dtype) * (noise + 0.5)
    return x + hole, y + hole


class MultiResolutionLoss(nn.Module):
    """Paper 002's loss ``sum_levels d(x_l, y_l) + l1_weight * L1(x_L, y_L)``, per sample (B,).

    kind: "lpips" (``lpips`` must be a callable ``(x, y) -> (B,)``, e.g. ``metrics.lpips.LPIPS("vgg")``)
    or "substitute" (see the module doc). min_side: last level side (16). Levels are weighted equally.
    """

    def __init__(
        self, kind: str = "substitute", lpips: nn.Module | None = None, *, min_side: int = 16, l1_weight: float = 0.1
    ) -> None:
        super().__init__()
        if kind not in ("lpips", "substitute"):
            raise ValueError(f"kind must be 'lpips' or 'substitute', got {kind!r}")
        if kind == "lpips" and lpips is None:
            raise ValueError("kind='lpips' needs an LPIPS module")
        self.kind = kind
        self.lpips = lpips
        self.min_side = int(min_side)
        self.l1_weight = float(l1_weight)

    def distance(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.kind == "lpips":
            assert self.lpips is not None
            return self.lpips(x, y).reshape(x.shape[0])
        return substitute_distance(x, y)

    def forward(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        mask: torch.Tensor | None = None,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
    ) -> torch.Tensor:
        """pred, target (B, 3, h, w); mask (B|1, 1, h, w), 1 = known (inpainting), or None. Returns (B,)."""
        if pred.shape != target.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
        x, y = pred, target.to(pred.dtype)
        m = None if mask is None else mask.to(device=x.device, dtype=x.dtype)
        if m is not None and generator is None:
            generator = torch.Generator().manual_seed(0)
        total = x.new_zeros(x.shape[0])
        while min(x.shape[-2:]) > self.min_side:
            xa, ya = (x, y) if m is None else inpainting_noise(x, y, m, generator)
            total = total + self.distance(xa, ya)
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
            if m is not None:
                m = F.avg_pool2d(m, 2)
        return total + self.l1_weight * (x - y).abs().mean(dim=(1, 2, 3))


def make_loss(
    loss: str = "auto",
    *,
    lpips_weights=None,
    device: torch.device | str = "cpu",
    min_side: int = 16,
    l1_weight: float = 0.1,
) -> MultiResolutionLoss:
    """Build the loss: "lpips" (VGG LPIPS, raises WeightsMissingError when absent), "substitute", or "auto".

    "auto" uses LPIPS when its weights are available and otherwise the substitute, with a warning and a
    log line: the choice is never silent (``.kind`` tells which one was built).
    """
    from facerestore.errors import InputError, WeightsMissingError

    if loss not in LOSS_KINDS:
        raise InputError(f"loss must be one of {', '.join(LOSS_KINDS)}, got {loss!r}")
    if loss == "substitute":
        log.info("robust inversion: using the weight-free substitute loss (multi-resolution L1 + SSIM)")
        return MultiResolutionLoss("substitute", min_side=min_side, l1_weight=l1_weight).to(device)
    from facerestore.metrics.lpips import LPIPS

    try:
        net = LPIPS("vgg", weights=lpips_weights).to(device)
    except WeightsMissingError as exc:
        if loss == "lpips":
            raise
        msg = (
            "robust inversion: LPIPS-VGG weights are missing, falling back to the substitute loss "
            f"(multi-resolution L1 + SSIM); results differ from paper 002 ({str(exc).splitlines()[0]})"
        )
        warnings.warn(msg, stacklevel=2)
        return MultiResolutionLoss("substitute", min_side=min_side, l1_weight=l1_weight).to(device)
    return MultiResolutionLoss("lpips", net, min_side=min_side, l1_weight=l1_weight)


