"""Differentiable surrogates ``f_hat`` of the degradations of paper 002 (robust unsupervised StyleGAN restoration).

Inversion methods compare ``f_hat(G(w))`` with a degraded target, so every surrogate keeps the forward
pass close to the real degradation while giving useful gradients:

- :func:`avgpool_downsample`: average pooling stands in for bilinear / bicubic / Lanczos downsampling.
- :func:`clamp_surrogate`: exact clamp to [0, 1] forward, gradient of sigmoid(2(x - 1/2)) backward (eq. 11).
- :func:`cubic_round`: exact rounding forward, gradient of (1-a) x + a (x - round(x))^3 backward (eq. 15).
- :func:`poisson_gaussian`: Poisson(x * photons) / photons replaced by its Gaussian approximation, with
  mean ``lam - 1/2`` and std ``sqrt(lam + 1e-3)`` in photon units (``lam = x * photons``), divided by
  ``photons`` and clamped with :func:`clamp_surrogate`. The -1/2 and 1e-3 are those of the authors' code.
- :func:`bernoulli_unknown_mask`: dead pixels are treated as an *unknown* mask. The authors' ``f_hat``
  (``AddNoise.degrade_prediction`` in yohan-pg/robust-unsupervised) multiplies the prediction by a
  **freshly drawn** Bernoulli mask (all channels of a pixel dropped with probability p) on every call,
  independent of the mask that produced the target: the optimiser sees the right dropout statistics but
  never the realised dead pixels. Draw a new mask per optimisation step by passing an advancing
  ``torch.Generator`` (or ``None``); passing ``params`` back replays one mask.
- :func:`poisson_bernoulli_surrogate`: the full f_hat of the denoising task in the authors' order:
  clamp_surrogate(x) -> Gaussian approximation -> unknown mask -> clamp_surrogate.
- :func:`known_mask`: inpainting uses the true mask (f_hat = f).
- :func:`diff_jpeg` / :class:`DiffJPEG` (in :mod:`facerestore.degrade.diffjpeg`): differentiable JPEG with
  the file's quantisation tables; its forward pass reproduces libjpeg's decoded output exactly.

Random surrogates follow the engine's convention: ``(y, params)`` with one ``{"seed": ...}`` dict per sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from facerestore.degrade._random import draw_seed, ensure_generator, make_generator, per_sample
from facerestore.errors import InputError

__all__ = [
    "POISSON_EPS",
    "avgpool_downsample",
    "bernoulli_unknown_mask",
    "clamp_surrogate",
    "cubic_round",
    "known_mask",
    "poisson_bernoulli_surrogate",
    "poisson_gaussian",
    "round_half_away",
]

POISSON_EPS = 1e-3  # added to the variance lam so that its square root stays differentiable at lam = 0
CLAMP_SLOPE = 2.0  # k of the surrogate sigmoid(k (x - 1/2))

Params = list[dict[str, Any]]
PerSample = float | int | Sequence[float] | torch.Tensor


def round_half_away(x: torch.Tensor) -> torch.Tensor:
    """Round to the nearest integer, ties away from zero (as libjpeg's quantiser; torch.round ties to even)."""
    return torch.sign(x) * torch.floor(x.abs() + 0.5)


class _ClampSurrogate(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x.clamp(0.0, 1.0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(CLAMP_SLOPE * (x - 0.5))
        return grad * (CLAMP_SLOPE * s * (1.0 - s))


class _CubicRound(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, alpha: float) -> torch.Tensor:
        r = round_half_away(x)
        ctx.save_for_backward(x - r)
        ctx.alpha = alpha
        return r

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (frac,) = ctx.saved_tensors
        a = ctx.alpha
        return grad * ((1.0 - a) + 3.0 * a * frac * frac), None


def clamp_surrogate(x: torch.Tensor) -> torch.Tensor:
    """Clamp to [0, 1]; backward uses d/dx sigmoid(2 (x - 0.5)) = 2 s (1 - s) so saturated pixels keep a gradient."""
    return _ClampSurrogate.apply(x)


def cubic_round(x: torch.Tensor, alpha: float = 0.8) -> torch.Tensor:
    """Exact rounding (ties away from zero) forward; backward d/dx [(1-alpha) x + alpha (x - round(x))^3].

    alpha = 0 is the straight-through estimator, alpha = 1 the pure cubic of Shin & Song (paper 002 eq. 15).
    """
    if not 0.0 <= float(alpha) <= 1.0:
        raise InputError(f"alpha must be in [0, 1], got {alpha}")
    return _CubicRound.apply(x, float(alpha))


def avgpool_downsample(x: torch.Tensor, factor: int, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Average pooling by an integer ``factor`` (paper 002's f_hat for every downsampling filter).

    Output size is floor(H / factor) x floor(W / factor) (trailing rows/columns dropped). With ``size`` (the real
    resize's output, (h, w)) and an image that is not ``factor * size``: adaptive average pooling to ``size``,
    whose windows tile the whole image as the real resize does (dropping the remainder would shift the target
    by up to half a low-resolution pixel towards the top left).
    """
    if int(factor) != factor or factor < 1:
        raise InputError(f"downsampling factor must be a positive integer, got {factor}")
    factor = int(factor)
    if factor == 1:
        return x
    if x.shape[-2] < factor or x.shape[-1] < factor:
        raise InputError(f"image {tuple(x.shape[-2:])} is smaller than the downsampling factor {factor}")
    if size is not None and (x.shape[-2], x.shape[-1]) != (factor * size[0], factor * size[1]):
        return F.adaptive_avg_pool2d(x, (int(size[0]), int(size[1])))
    return F.avg_pool2d(x, factor)


def known_mask(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Inpainting f_hat = f: x * mask, mask (B or 1, 1 or 3, H, W) with 1 = known pixel, 0 = missing."""
    if mask.ndim == 2:
        mask = mask[None, None]
    if mask.ndim != 4 or mask.shape[-2:] != x.shape[-2:]:
        raise InputError(f"mask of shape {tuple(mask.shape)} does not fit images of shape {tuple(x.shape)}")
    return x * mask.to(device=x.device, dtype=x.dtype)


def _params(
    x: torch.Tensor,
    generator: torch.Generator | int | None,
    params: Params | None,
    fields: dict[str, PerSample | None],
) -> Params:
    batch = x.shape[0]
    if params is not None:
        if len(params) != batch:
            raise InputError(f"params has {len(params)} entries for a batch of {batch}")
        for p in params:
            if "seed" not in p or any(k not in p for k in fields):
                raise InputError(f"params entries need seed and {', '.join(fields)}")
        return [dict(p) for p in params]
    g = ensure_generator(generator)
    cols = {}
    for k, v in fields.items():
        if v is None:
            raise InputError(f"{k} is required when params is not given")
        cols[k] = [float(t) for t in per_sample(v, batch, torch.empty(0, dtype=torch.float64))]
    return [{"seed": draw_seed(g), **{k: cols[k][i] for k in fields}} for i in range(batch)]


def _noise_surrogate(x: torch.Tensor, params: Params, *, gaussian: bool, mask: bool, preclamp: bool) -> torch.Tensor:
    b, c, h, w = x.shape
    noises, keeps = [], []
    for p in params:
        # One generator per sample: the Gaussian field first, then the mask, so both replay from the seed.
        g = make_generator(p["seed"])
        if gaussian:
            if p["photons"] < 0:
                raise InputError(f"photons must be >= 0, got {p['photons']}")
            noises.append(torch.randn((c, h, w), generator=g, dtype=torch.float32))
        if mask:
            if not 0.0 <= p["p"] <= 1.0:
                raise InputError(f"dead-pixel probability must be in [0, 1], got {p['p']}")
            keeps.append(torch.rand((1, h, w), generator=g, dtype=torch.float64) >= p["p"])
    if preclamp:
        # The target was made from pixels in [0, 1]: clamp the prediction first, as the authors do.
        x = clamp_surrogate(x)
    y = x
    if gaussian:
        noise = torch.stack(noises).to(device=x.device, dtype=x.dtype)
        k = torch.tensor([p["photons"] for p in params], dtype=x.dtype, device=x.device).view(b, 1, 1, 1)
        lam = x * k
        # Without the pre-clamp a negative prediction would give a negative variance.
        std = ((lam if preclamp else lam.clamp_min(0.0)) + POISSON_EPS).sqrt()
        noisy = (lam - 0.5 + std * noise) / torch.where(k > 0, k, torch.ones_like(k))
        # photons = 0 disables the noise (authors' convention).
        y = torch.where(k > 0, noisy, x)
    if mask:
        y = y * torch.stack(keeps).to(device=x.device, dtype=x.dtype)
    return clamp_surrogate(y) if gaussian else y


def poisson_gaussian(
    x: torch.Tensor,
    photons: PerSample | None,
    *,
    generator: torch.Generator | int | None = None,
    params: Params | None = None,
    preclamp: bool = True,
) -> tuple[torch.Tensor, Params]:
    """Differentiable shot noise: (lam - 1/2 + sqrt(lam + 1e-3) n) / photons, lam = x * photons, then clamp_surrogate.

    n ~ N(0, 1) per pixel and channel from the sample's seed; ``preclamp`` first applies clamp_surrogate to x.
    photons = 0 leaves x unchanged (apart from the clamps).
    """
    params = _params(x, generator, params, {"photons": photons})
    y = _noise_surrogate(x, params, gaussian=True, mask=False, preclamp=preclamp)
    return y, params


def bernoulli_unknown_mask(
    x: torch.Tensor,
    p: PerSample | None,
    *,
    generator: torch.Generator | int | None = None,
    params: Params | None = None,
) -> tuple[torch.Tensor, Params]:
    """Dead pixels as an unknown mask: x times a fresh Bernoulli mask (all channels of a pixel -> 0 w.p. p).

    The mask is drawn from the sample's own seed, not from the target's: call it with a new draw at each
    optimisation step (an advancing generator, or None), as paper 002's code does.
    """
    params = _params(x, generator, params, {"p": p})
    return _noise_surrogate(x, params, gaussian=False, mask=True, preclamp=False), params


def poisson_bernoulli_surrogate(
    x: torch.Tensor,
    photons: PerSample | None,
    p: PerSample | None,
    *,
    generator: torch.Generator | int | None = None,
    params: Params | None = None,
    preclamp: bool = True,
) -> tuple[torch.Tensor, Params]:
    """Paper 002's denoising f_hat: clamp_surrogate(mask * gaussian(clamp_surrogate(x))), mask unknown (fresh).

    Surrogate of ``dead_pixels(poisson_noise(x, photons), p)`` (noise.py); one seed per sample drives both
    the Gaussian field and the mask.
    """
    params = _params(x, generator, params, {"photons": photons, "p": p})
    return _noise_surrogate(x, params, gaussian=True, mask=True, preclamp=preclamp), params
