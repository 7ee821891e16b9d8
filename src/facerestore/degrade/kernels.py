"""Blur kernels (Gaussian family, plateau, motion) and reflect-101 filtering of image batches.

Kernel coordinates: a (k, k) kernel is indexed [row, col]; its centre is at ((k - 1) / 2, (k - 1) / 2),
so even sizes are centred between pixels. ``x`` is the column offset (to the right) and ``y`` the row
offset (downwards). ``theta`` rotates the ``sigma_x`` axis from +x towards +y (clockwise on screen),
the convention of Real-ESRGAN's ``bivariate_Gaussian``; ``blur`` correlates like ``cv2.filter2D``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from facerestore.degrade._random import choice, draw_seed, ensure_generator, make_generator, uniform
from facerestore.errors import InputError

__all__ = [
    "KERNEL_KINDS",
    "blur",
    "gaussian_blur",
    "gaussian_kernel",
    "generalized_gaussian_kernel",
    "kernel_from_params",
    "motion_kernel",
    "plateau_kernel",
    "random_kernel",
]

KERNEL_KINDS = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")

Number = float | int | Sequence[float] | torch.Tensor


# ----------------------------------------------------------------------------------------------- helpers


def reflect101_indices(n: int, before: int, after: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Source indices of a length-n axis padded with reflect-101 borders (cv2 BORDER_REFLECT_101).

    Works for pads larger than the axis (the reflection repeats, as in cv2 and scipy's "mirror").
    """
    idx = torch.arange(-before, n + after, device=device)
    if n == 1:
        return torch.zeros_like(idx)
    period = 2 * (n - 1)
    idx = torch.remainder(idx, period)
    return torch.where(idx >= n, period - idx, idx)


def pad_reflect101(x: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    """Pad the last two dims of x with reflect-101 borders of any width (differentiable gather)."""
    h, w = x.shape[-2:]
    if max(top, bottom) < h and max(left, right) < w and x.dim() >= 2:
        # torch's "reflect" is reflect-101 and far faster than a gather, but needs pads < size
        lead = x.shape[:-2]
        y = F.pad(x.reshape(1, -1, h, w), (left, right, top, bottom), mode="reflect")
        return y.reshape(*lead, h + top + bottom, w + left + right)
    if top or bottom:
        x = x.index_select(-2, reflect101_indices(h, top, bottom, x.device))
    if left or right:
        x = x.index_select(-1, reflect101_indices(w, left, right, x.device))
    return x


def _per_sample(*values: Any, device: torch.device | str | None = None) -> tuple[int, list[torch.Tensor]]:
    """Broadcast numbers / sequences / tensors to float64 (B,) tensors sharing one batch size."""
    ts = []
    for v in values:
        if isinstance(v, torch.Tensor):
            t = v.to(dtype=torch.float64).reshape(-1)
            if device is None:
                device = v.device
        else:
            t = torch.as_tensor(v, dtype=torch.float64).reshape(-1)
        ts.append(t)
    batch = max(t.numel() for t in ts)
    out = []
    for t in ts:
        if t.numel() not in (1, batch):
            raise InputError(f"per-sample parameters disagree on the batch size ({t.numel()} vs {batch})")
        out.append(t.to(device).expand(batch))
    return batch, out


def _output_dtype(values: Sequence[Any], dtype: torch.dtype | None) -> torch.dtype:
    if dtype is not None:
        return dtype
    for v in values:
        if isinstance(v, torch.Tensor) and v.is_floating_point():
            return v.dtype
    return torch.float32


def _check_size(size: int) -> int:
    if int(size) != size or size < 1:
        raise InputError(f"kernel size must be a positive integer, got {size!r}")
    return int(size)


def _quadratic_form(size: int, sigma_x: torch.Tensor, sigma_y: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """(B, k, k) values of p^T Sigma^-1 p on the kernel grid (Sigma = R diag(sx^2, sy^2) R^T)."""
    ax = torch.arange(size, dtype=torch.float64, device=sigma_x.device) - (size - 1) / 2.0
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")
    c = torch.cos(theta)[:, None, None]
    s = torch.sin(theta)[:, None, None]
    # coordinates along the rotated principal axes (R^T p)
    u = c * xx + s * yy
    v = -s * xx + c * yy
    sx = sigma_x.clamp_min(1e-6)[:, None, None]
    sy = sigma_y.clamp_min(1e-6)[:, None, None]
    return (u / sx) ** 2 + (v / sy) ** 2


def _normalise(k: torch.Tensor) -> torch.Tensor:
    return k / k.sum(dim=(-2, -1), keepdim=True)


def _exp_from_peak(e: torch.Tensor) -> torch.Tensor:
    """exp(-0.5 * e) up to a per-kernel factor: the exponent is taken from its smallest value, so the largest tap
    is 1. The same kernel once normalised, but an even-sized or very narrow kernel (no tap at the centre) no longer
    underflows to all zeros and a NaN sum."""
    return torch.exp(-0.5 * (e - e.amin(dim=(-2, -1), keepdim=True)))


# ----------------------------------------------------------------------------------------------- kernels


def gaussian_kernel(
    size: int,
    sigma_x: Number,
    sigma_y: Number | None = None,
    theta: Number = 0.0,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """(B, size, size) anisotropic Gaussian kernels summing to 1.

    sigma_x, sigma_y: standard deviations in pixels (sigma_y defaults to sigma_x); theta: rotation of the
    sigma_x axis in radians. Each accepts a number, B numbers or a (B,) tensor.
    """
    size = _check_size(size)
    sigma_y = sigma_x if sigma_y is None else sigma_y
    _, (sx, sy, th) = _per_sample(sigma_x, sigma_y, theta, device=device)
    q = _quadratic_form(size, sx, sy, th)
    return _normalise(_exp_from_peak(q)).to(_output_dtype((sigma_x, sigma_y, theta), dtype))


def generalized_gaussian_kernel(
    size: int,
    sigma_x: Number,
    sigma_y: Number,
    theta: Number,
    beta: Number,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """(B, k, k) generalized Gaussian kernels exp(-0.5 * (p^T Sigma^-1 p) ** beta), summing to 1.

    Real-ESRGAN's ``bivariate_generalized_Gaussian``; beta = 1 is the Gaussian, beta < 1 heavier tails,
    beta > 1 flatter tops.
    """
    size = _check_size(size)
    _, (sx, sy, th, b) = _per_sample(sigma_x, sigma_y, theta, beta, device=device)
    # the floor keeps the gradient of q ** beta finite at the centre for beta < 1
    q = _quadratic_form(size, sx, sy, th).clamp_min(1e-30)
    k = _exp_from_peak(q ** b[:, None, None])
    return _normalise(k).to(_output_dtype((sigma_x, sigma_y, theta, beta), dtype))


def plateau_kernel(
    size: int,
    sigma_x: Number,
    sigma_y: Number,
    theta: Number,
    beta: Number,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """(B, k, k) plateau kernels 1 / (1 + (p^T Sigma^-1 p) ** beta), summing to 1 (Real-ESRGAN)."""
    size = _check_size(size)
    _, (sx, sy, th, b) = _per_sample(sigma_x, sigma_y, theta, beta, device=device)
    q = _quadratic_form(size, sx, sy, th).clamp_min(1e-30)
    k = 1.0 / (q ** b[:, None, None] + 1.0)
    return _normalise(k).to(_output_dtype((sigma_x, sigma_y, theta, beta), dtype))


def motion_kernel(
    size: int,
    length: Number,
    angle: Number,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """(B, size, size) linear motion-blur kernels summing to 1.

    A centred, antialiased line segment ``length`` pixels long (clipped to ``size``) and one pixel wide,
    at ``angle`` degrees counter-clockwise from the +x axis as displayed (y points down), like imgaug's
    ``MotionBlur`` with direction 0. At angle 0 and odd length in an odd kernel it is exactly ``length``
    ones on the centre row.
    """
    size = _check_size(size)
    _, (ln, ang) = _per_sample(length, angle, device=device)
    ln = ln.clamp(1.0, float(size))
    ax = torch.arange(size, dtype=torch.float64, device=ln.device) - (size - 1) / 2.0
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")
    rad = torch.deg2rad(ang)
    c = torch.cos(rad)[:, None, None]
    s = torch.sin(rad)[:, None, None]
    # screen direction (cos a, -sin a) in (x, y) coordinates with y pointing down
    along = c * xx - s * yy
    across = s * xx + c * yy
    # tent profile across the line; along it each pixel is weighted by its overlap with [-L/2, L/2]
    w_across = (1.0 - across.abs()).clamp_min(0.0)
    w_along = (ln[:, None, None] / 2.0 + 0.5 - along.abs()).clamp(0.0, 1.0)
    k = w_across * w_along
    return _normalise(k).to(_output_dtype((length, angle), dtype))


# ----------------------------------------------------------------------------------------------- random


def _draw_beta(g: torch.Generator, lo: float, hi: float) -> float:
    # Real-ESRGAN: half the draws below 1, half above, when the range straddles 1
    if lo < 1.0 < hi:
        return uniform(g, lo, 1.0) if uniform(g, 0.0, 1.0) < 0.5 else uniform(g, 1.0, hi)
    return uniform(g, lo, hi)


def random_kernel(
    generator: torch.Generator | int | None,
    size: int = 41,
    kinds: Sequence[str] = ("iso", "aniso"),
    probs: Sequence[float] | None = None,
    sigma_range: tuple[float, float] = (0.1, 10.0),
    beta_gaussian_range: tuple[float, float] = (0.5, 4.0),
    beta_plateau_range: tuple[float, float] = (1.0, 2.0),
) -> tuple[torch.Tensor, dict[str, Any]]:
    """One random blur kernel (Real-ESRGAN's ``random_mixed_kernels``) and the params that rebuild it.

    kinds: any of ``KERNEL_KINDS``; sigmas are uniform in ``sigma_range`` (pixels), theta uniform in
    [-pi, pi) for anisotropic kinds. Returns a float32 (size, size) kernel and a JSON-serialisable dict
    {"kind", "size", "sigma_x", "sigma_y", "theta", "beta", "seed"} for ``kernel_from_params``.
    """
    size = _check_size(size)
    bad = [k for k in kinds if k not in KERNEL_KINDS]
    if bad or not kinds:
        raise InputError(f"unknown kernel kind(s) {bad or kinds!r}; choose from {', '.join(KERNEL_KINDS)}")
    if probs is not None and len(probs) != len(kinds):
        raise InputError(f"probs has {len(probs)} entries for {len(kinds)} kinds")
    seed = draw_seed(ensure_generator(generator))
    g = make_generator(seed)
    kind = choice(g, list(kinds), probs)
    sigma_x = uniform(g, *sigma_range)
    if kind.endswith("aniso"):
        sigma_y = uniform(g, *sigma_range)
        theta = uniform(g, -math.pi, math.pi)
    else:
        sigma_y, theta = sigma_x, 0.0
    beta = 1.0
    if kind.startswith("generalized"):
        beta = _draw_beta(g, *beta_gaussian_range)
    elif kind.startswith("plateau"):
        beta = _draw_beta(g, *beta_plateau_range)
    params = {
        "kind": kind,
        "size": size,
        "sigma_x": sigma_x,
        "sigma_y": sigma_y,
        "theta": theta,
        "beta": beta,
        "seed": seed,
    }
    return kernel_from_params(params), params


def kernel_from_params(params: dict[str, Any]) -> torch.Tensor:
    """The float32 (k, k) kernel described by a ``random_kernel`` params dict."""
    kind = params["kind"]
    size = int(params["size"])
    sx, sy, th = float(params["sigma_x"]), float(params["sigma_y"]), float(params["theta"])
    if kind in ("iso", "aniso", "gaussian"):
        k = gaussian_kernel(size, sx, sy, th)
    elif kind.startswith("generalized"):
        k = generalized_gaussian_kernel(size, sx, sy, th, float(params["beta"]))
    elif kind.startswith("plateau"):
        k = plateau_kernel(size, sx, sy, th, float(params["beta"]))
    elif kind == "motion":
        k = motion_kernel(size, float(params["length"]), float(params["angle"]))
    else:
        raise InputError(f"unknown kernel kind {kind!r}")
    return k[0]


# ----------------------------------------------------------------------------------------------- filtering


# above this many taps an FFT product beats direct convolution on CPU (measured: 4x faster at 41x41)
_FFT_TAPS = 15 * 15


def _correlate(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Reflect-101 'same' correlation of (B, C, H, W) with a (Bk, kh, kw) kernel, Bk in {1, B}."""
    b, c, h, w = x.shape
    kh, kw = kernel.shape[-2:]
    xp = pad_reflect101(x, kh // 2, kh - 1 - kh // 2, kw // 2, kw - 1 - kw // 2)
    if kh * kw > _FFT_TAPS:
        work = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
        xp = xp.to(work)
        hp, wp = xp.shape[-2:]
        kf = torch.fft.rfft2(kernel.to(device=x.device, dtype=work).flip(-2, -1), s=(hp, wp))
        y = torch.fft.irfft2(torch.fft.rfft2(xp) * kf[:, None], s=(hp, wp))
        # the full linear convolution ends kh - 1 rows later; the valid part is the 'same' output
        return y[..., kh - 1 : kh - 1 + h, kw - 1 : kw - 1 + w].to(x.dtype)
    kernel = kernel.to(dtype=x.dtype, device=x.device)
    if kernel.shape[0] == 1:
        weight = kernel.expand(c, kh, kw).unsqueeze(1)
        return F.conv2d(xp, weight, groups=c)
    weight = kernel.repeat_interleave(c, dim=0).unsqueeze(1)
    y = F.conv2d(xp.reshape(1, b * c, *xp.shape[-2:]), weight, groups=b * c)
    return y.reshape(b, c, h, w)


def _as_kernel_batch(kernel: torch.Tensor, batch: int) -> torch.Tensor:
    if kernel.dim() == 2:
        kernel = kernel.unsqueeze(0)
    if kernel.dim() != 3 or kernel.shape[0] not in (1, batch):
        raise InputError(f"kernel must be (k, k), (1, k, k) or ({batch}, k, k); got {tuple(kernel.shape)}")
    return kernel


def _check_image(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise InputError(f"expected a (B, C, H, W) tensor, got {getattr(x, 'shape', type(x))}")


def blur(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Filter (B, C, H, W) images with a (k, k) or per-sample (B, k, k) kernel; output has x's size.

    Correlation (no kernel flip) with reflect-101 borders and anchor at (k // 2, k // 2): the semantics
    of ``cv2.filter2D`` with its default border. No clipping (a sum-1 non-negative kernel keeps [0, 1]).
    """
    _check_image(x)
    return _correlate(x, _as_kernel_batch(torch.as_tensor(kernel), x.shape[0]))


def gaussian_blur(x: torch.Tensor, sigma: Number, size: int | None = None) -> torch.Tensor:
    """Isotropic Gaussian blur with per-sample sigma (pixels); size defaults to 2 * ceil(3 * max sigma) + 1.

    Applied separably (rows then columns), equal to ``blur`` with ``gaussian_kernel(size, sigma)``.
    """
    _check_image(x)
    b = x.shape[0]
    nb, (s,) = _per_sample(sigma, device=x.device)
    if nb not in (1, b):
        raise InputError(f"got {nb} sigmas for a batch of {b}")
    if size is None:
        size = 2 * math.ceil(3.0 * float(s.max())) + 1
    size = _check_size(size)
    ax = torch.arange(size, dtype=torch.float64, device=x.device) - (size - 1) / 2.0
    g = torch.exp(-0.5 * (ax[None, :] / s.clamp_min(1e-6)[:, None]) ** 2)
    g = (g / g.sum(dim=1, keepdim=True)).to(x.dtype)
    if nb == 1:
        g = g[:1]
    y = _correlate(x, g[:, None, :])
    return _correlate(y, g[:, :, None])
