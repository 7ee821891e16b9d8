"""Resizing that reproduces PIL's ``Image.resize``, PULSE's bicubic downsampler, and block mosaic.

PIL resamples separably: output pixel ``i`` of an axis of length ``n_in -> n_out`` is centred at
``(i + 0.5) * scale`` input pixels (``scale = n_in / n_out``); when downsampling the filter is stretched
by ``scale`` (antialiasing), taps outside the image are dropped and the rest renormalised. We build those
(out, in) weight matrices once per (size, method) and apply them with matmuls in PIL's pass order,
clamping to [0, 1] after each pass as PIL's 8-bit path does. PIL also rounds to 8 bits between the passes;
we stay in float, so results agree with PIL within one 8-bit level.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import torch

from facerestore.degrade.kernels import reflect101_indices
from facerestore.errors import InputError

__all__ = [
    "METHODS", "downsample_pulse_bicubic", "mosaic", "project_area", "project_pulse_bicubic", "project_resize",
    "resize", "resize_weights",
]

METHODS = ("nearest", "bilinear", "bicubic", "lanczos", "area")


# ----------------------------------------------------------------------------------------------- filters
# PIL's filter definitions (Resample.c): support in input pixels at scale 1.


def _box(t: np.ndarray) -> np.ndarray:
    return ((t > -0.5) & (t <= 0.5)).astype(np.float64)


def _triangle(t: np.ndarray) -> np.ndarray:
    return np.clip(1.0 - np.abs(t), 0.0, None)


def _cubic(t: np.ndarray, a: float = -0.5) -> np.ndarray:
    t = np.abs(t)
    near = ((a + 2.0) * t - (a + 3.0)) * t * t + 1.0
    far = (((t - 5.0) * t + 8.0) * t - 4.0) * a
    return np.where(t < 1.0, near, np.where(t < 2.0, far, 0.0))


def _lanczos3(t: np.ndarray) -> np.ndarray:
    return np.where((t >= -3.0) & (t < 3.0), np.sinc(t) * np.sinc(t / 3.0), 0.0)


_FILTERS = {"area": (_box, 0.5), "bilinear": (_triangle, 1.0), "bicubic": (_cubic, 2.0), "lanczos": (_lanczos3, 3.0)}


@functools.lru_cache(maxsize=256)
def _weights_np(n_in: int, n_out: int, method: str, antialias: bool) -> np.ndarray:
    if method == "nearest":
        # PIL maps nearest-neighbour resizes through an affine transform that steps the sample position
        # by `scale` with repeated float additions from the first pixel centre; reproduce that sequence.
        scale = n_in / n_out
        pos = np.empty(n_out)
        acc = scale * 0.5
        for i in range(n_out):
            pos[i] = acc
            acc += scale
        src = np.clip(np.floor(pos).astype(np.int64), 0, n_in - 1)
        w = np.zeros((n_out, n_in))
        w[np.arange(n_out), src] = 1.0
        return w
    fn, support = _FILTERS[method]
    scale = n_in / n_out
    filterscale = max(scale, 1.0) if antialias else 1.0
    support = support * filterscale
    centre = (np.arange(n_out) + 0.5) * scale
    # PIL truncates towards zero after adding 0.5 (a rounding of the window ends)
    lo = np.maximum(np.trunc(centre - support + 0.5), 0)
    hi = np.minimum(np.trunc(centre + support + 0.5), n_in)
    j = np.arange(n_in, dtype=np.float64)
    w = fn((j[None, :] - centre[:, None] + 0.5) / filterscale)
    w = np.where((j[None, :] >= lo[:, None]) & (j[None, :] < hi[:, None]), w, 0.0)
    total = w.sum(axis=1, keepdims=True)
    return np.divide(w, total, out=w, where=total != 0)


def resize_weights(n_in: int, n_out: int, method: str = "bicubic", antialias: bool = True) -> torch.Tensor:
    """The float64 (n_out, n_in) matrix that resizes one axis as PIL does (rows sum to 1)."""
    method = _check_method(method)
    return torch.from_numpy(_weights_np(int(n_in), int(n_out), method, bool(antialias)).copy())


@functools.lru_cache(maxsize=256)
def _nearest_index(n_in: int, n_out: int) -> np.ndarray:
    return _weights_np(n_in, n_out, "nearest", True).argmax(axis=1)


def _check_method(method: str) -> str:
    m = str(method).lower()
    m = {"box": "area", "linear": "bilinear", "cubic": "bicubic", "lanczos3": "lanczos"}.get(m, m)
    if m not in METHODS:
        raise InputError(f"unknown resize method {method!r}; choose from {', '.join(METHODS)}")
    return m


def _check_image(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise InputError(f"expected a (B, C, H, W) tensor, got {getattr(x, 'shape', type(x))}")


def _target_size(h: int, w: int, size: int | Sequence[int] | None, scale: float | Sequence[float] | None):
    if (size is None) == (scale is None):
        raise InputError("give exactly one of size=(H, W) and scale=")
    if size is not None:
        oh, ow = (size, size) if isinstance(size, int) else tuple(size)
    else:
        sh, sw = (scale, scale) if isinstance(scale, int | float) else tuple(scale)
        # round half up; the epsilon absorbs binary noise such as 100 * 0.29 = 28.999999999999996
        oh, ow = math.floor(h * sh + 0.5 + 1e-9), math.floor(w * sw + 0.5 + 1e-9)
    oh, ow = int(oh), int(ow)
    if oh < 1 or ow < 1:
        raise InputError(f"resize target {oh}x{ow} is empty (input {h}x{w})")
    return oh, ow


def resize(
    x: torch.Tensor,
    size: int | Sequence[int] | None = None,
    scale: float | Sequence[float] | None = None,
    method: str = "bicubic",
    antialias: bool = True,
    *,
    clamp: bool = True,
) -> torch.Tensor:
    """Resize (B, C, H, W) images to ``size`` = (H', W') (PIL takes (W, H)); an int means square; or by ``scale``.

    Matches ``PIL.Image.resize`` (NEAREST, BILINEAR, BICUBIC a=-0.5, LANCZOS a=3, BOX for "area") within
    one 8-bit level. ``scale`` (a float or (sh, sw)) gives round(H * sh) x round(W * sw), halves rounded
    up. ``antialias=False`` keeps the filter unstretched when downsampling (plain interpolation).
    ``clamp`` clips to [0, 1] after each pass like PIL's 8-bit path (cubic/Lanczos overshoot); turn it off
    for data outside [0, 1]. Linear in x (apart from the clamp), hence differentiable.
    """
    _check_image(x)
    method = _check_method(method)
    h, w = x.shape[-2:]
    oh, ow = _target_size(h, w, size, scale)
    if method == "nearest":
        if ow != w:
            x = x.index_select(-1, torch.from_numpy(_nearest_index(w, ow)).to(x.device))
        if oh != h:
            x = x.index_select(-2, torch.from_numpy(_nearest_index(h, oh)).to(x.device))
        return x
    passes = []
    if ow != w:
        mw = resize_weights(w, ow, method, antialias).to(device=x.device, dtype=x.dtype)
        passes.append(lambda t: torch.matmul(t, mw.T))
    if oh != h:
        mh = resize_weights(h, oh, method, antialias).to(device=x.device, dtype=x.dtype)
        passes.append(lambda t: torch.matmul(mh, t))
    # Pillow (checked against 13.0) runs the vertical pass first when the height shrinks by more than twice the
    # number of pixels the width does; otherwise horizontal first. The order matters only via the clamp.
    if len(passes) == 2 and (h - oh) > 0 and (h - oh) > 2 * (w - ow):
        passes.reverse()
    y = x
    for apply in passes:
        y = apply(y)
        if clamp:
            y = y.clamp(0.0, 1.0)
    return y


# ----------------------------------------------------------------------------------------------- PULSE


def _pulse_kernel(factor: int) -> np.ndarray:
    """PULSE's 1-D bicubic (a=-0.5) taps: 4 * factor samples at (i - 2 * factor + 0.5) / factor, sum 1."""
    taps = 4 * factor
    t = (np.arange(taps) - taps // 2 + 0.5) / factor
    k = _cubic(t, a=-0.5)
    return k / k.sum()


@functools.lru_cache(maxsize=64)
def _pulse_matrix(n_in: int, factor: int) -> np.ndarray:
    taps = 4 * factor
    pad = taps - factor
    before = pad // 2
    n_out = (n_in + pad - taps) // factor + 1
    src = reflect101_indices(n_in, before, pad - before).numpy()
    k = _pulse_kernel(factor)
    m = np.zeros((n_out, n_in))
    for o in range(n_out):
        # output o reads padded samples o * factor .. o * factor + taps - 1 (stride = factor)
        np.add.at(m[o], src[o * factor : o * factor + taps], k)
    return m


def downsample_pulse_bicubic(x: torch.Tensor, factor: int) -> torch.Tensor:
    """PULSE/RLS ``BicubicDownSample``: separable bicubic (a=-0.5) over 4 * factor taps, stride factor.

    Reflect (reflect-101) padding of 3 * factor pixels split floor/ceil before/after, so an H x W input
    gives floor(H / factor) x floor(W / factor). No clamping (the upstream op is a plain convolution).
    """
    _check_image(x)
    if int(factor) != factor or factor < 1:
        raise InputError(f"PULSE downsampling needs a positive integer factor, got {factor!r}")
    factor = int(factor)
    h, w = x.shape[-2:]
    if h < factor or w < factor:
        raise InputError(f"image {h}x{w} is smaller than the downsampling factor {factor}")
    mh = torch.from_numpy(_pulse_matrix(h, factor)).to(device=x.device, dtype=x.dtype)
    mw = torch.from_numpy(_pulse_matrix(w, factor)).to(device=x.device, dtype=x.dtype)
    return torch.matmul(torch.matmul(mh, x), mw.T)


# ----------------------------------------------------------------------------------------------- projections
# Moving an image x onto the images whose downsampling A is an observation y: x' = x + C (y - A x), with one
# correction matrix C per axis (A is separable). C = L (A L)^-1 for a "lift" L from the low to the high resolution,
# so that A C = I and A x' = y exactly: L = A^T gives the least-squares (nearest) image, the range-null-space split
# of DDNM (Wang et al. 2023); a smooth L (bicubic upsampling) gives smooth corrections where A^T is blocky (box).


@functools.lru_cache(maxsize=64)
def _pulse_correction(n_in: int, factor: int) -> np.ndarray:
    # the PULSE matrix's rows are shifted copies of one kernel: full row rank, so the pseudo-inverse is its exact
    # right inverse A^T (A A^T)^-1 (float64; the matrices are at most a few hundred wide)
    return np.linalg.pinv(_pulse_matrix(n_in, factor))


@functools.lru_cache(maxsize=64)
def _resize_correction(n_in: int, n_out: int, method: str, antialias: bool) -> np.ndarray:
    a = _weights_np(n_in, n_out, method, antialias)  # the axis's reduction, as resize applies it
    lift = _weights_np(n_out, n_in, "bicubic", True)  # PIL's bicubic enlargement (rows sum to 1)
    # A L is well conditioned for PIL's reductions (condition number 2 to 2.5 at factors 8-32)
    return lift @ np.linalg.inv(a @ lift)


def _check_projection(x: torch.Tensor, y: torch.Tensor, expected: Sequence[int], reduction: str,
                      strength: float) -> None:
    _check_image(x)
    _check_image(y)
    if not 0.0 <= float(strength) <= 1.0:
        raise InputError(f"projection strength must lie in [0, 1], got {strength!r}")
    if tuple(y.shape[-2:]) != tuple(expected) or y.shape[:-2] != x.shape[:-2]:
        raise InputError(f"observation {tuple(y.shape)} does not match {tuple(x.shape)} {reduction}: "
                         f"expected {(*x.shape[:-2], *expected)}")


def _lift(residual: torch.Tensor, ch: np.ndarray, cw: np.ndarray) -> torch.Tensor:
    """C r per axis: a low-resolution float64 image through the correction matrices (ch, cw)."""
    ch_t, cw_t = torch.from_numpy(ch).to(residual.device), torch.from_numpy(cw).to(residual.device)
    return torch.matmul(torch.matmul(ch_t, residual), cw_t.T)


def _apply_correction(x: torch.Tensor, residual: torch.Tensor, ch: np.ndarray, cw: np.ndarray,
                      strength: float) -> torch.Tensor:
    return (x.double() + float(strength) * _lift(residual, ch, cw)).to(x.dtype)


def project_pulse_bicubic(x: torch.Tensor, y: torch.Tensor, factor: int, strength: float = 1.0) -> torch.Tensor:
    """Move ``x`` (B, C, H, W) toward the images whose PULSE bicubic downsampling by ``factor`` is ``y``
    (B, C, H // factor, W // factor): ``x + strength * A^+ (y - A x)``, A = :func:`downsample_pulse_bicubic`.

    strength 1 gives the image nearest to x (least squares) that reproduces y exactly, the range-null-space
    split of DDNM (Wang et al. 2023): the observation's content is y's, the rest (the null space of A, the detail
    the downsampling destroyed) is x's. In between, the mismatch shrinks linearly: ``A x' - y = (1 - strength)
    (A x - y)``. Linear in x and y, no clamping (the caller clamps to [0, 1] if it needs an image); computed in
    float64 and returned in x's dtype.
    """
    factor = int(factor)
    if x.device.type == "mps":  # Apple GPUs have no float64: the projection is done on the CPU
        return project_pulse_bicubic(x.cpu(), y.cpu(), factor, strength).to(x.device)
    _check_projection(x, y, [_pulse_matrix(int(n), factor).shape[0] for n in x.shape[-2:]], f"downsampled x{factor}",
                      strength)
    h, w = x.shape[-2:]
    residual = y.to(x.device, torch.float64) - downsample_pulse_bicubic(x.double(), factor)
    return _apply_correction(x, residual, _pulse_correction(h, factor), _pulse_correction(w, factor), strength)


def project_resize(x: torch.Tensor, y: torch.Tensor, method: str = "bicubic", strength: float = 1.0,
                   antialias: bool = True, detail: float = 1.0) -> torch.Tensor:
    """Move ``x`` (B, C, H, W) toward the images whose :func:`resize` to y's size with ``method`` (without the clamp)
    is ``y`` (B, C, h, w), h <= H and w <= W: ``x + strength * C (y - A x)``, C = L (A L)^-1 with L PIL's bicubic
    enlargement, so that strength 1 reproduces y exactly with a smooth correction (what the reduction keeps comes
    from y, what it destroys from x). The mismatch shrinks linearly with strength, as in
    :func:`project_pulse_bicubic`; any sizes (non-integer factors too); linear, no clamping, float64 inside,
    returned in x's dtype.

    ``detail`` in [0, 1] scales the part of x that the reduction destroys, ``(I - C A) x`` (A (I - C A) = 0, so
    the reduction of the result, and its match with y, do not depend on it): 1 keeps it whole (the formula above),
    0 removes it, which at strength 1 leaves ``C y``, the smooth image whose reduction is y. In between, a
    perception-distortion knob for a prior's invented detail (the part no observation can confirm):
    ``x + strength * C (y - A x) - (1 - detail) (I - C A) x``.
    """
    method = _check_method(method)
    if x.device.type == "mps":  # Apple GPUs have no float64: the projection is done on the CPU
        return project_resize(x.cpu(), y.cpu(), method, strength, antialias, detail).to(x.device)
    _check_image(y)  # before reading its size; _check_projection checks both images, the batch and the strength
    _check_projection(x, y, y.shape[-2:], f"reduced with {method}", strength)
    if not 0.0 <= float(detail) <= 1.0:
        raise InputError(f"projection detail must lie in [0, 1], got {detail!r}")
    (h, w), (oh, ow) = x.shape[-2:], y.shape[-2:]
    if oh > h or ow > w:
        raise InputError(f"observation {tuple(y.shape)} is larger than the image {tuple(x.shape)}: a projection "
                         "needs a reduction")
    ah, aw = (torch.from_numpy(_weights_np(n, m, method, bool(antialias))).to(x.device) for n, m in ((h, oh), (w, ow)))
    ch, cw = (_resize_correction(n, m, method, bool(antialias)) for n, m in ((h, oh), (w, ow)))
    reduced = torch.matmul(torch.matmul(ah, x.double()), aw.T)
    out = _apply_correction(x.double(), y.to(x.device, torch.float64) - reduced, ch, cw, strength)
    if float(detail) != 1.0:  # minus (1 - detail) (x - C A x)
        out = out - (1.0 - float(detail)) * (x.double() - _lift(reduced, ch, cw))
    return out.to(x.dtype)


def project_area(x: torch.Tensor, y: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    """:func:`project_resize` onto ``y``, the box average of ``x`` by an integer factor (``F.avg_pool2d``, "area"
    resizing: PIL's BOX reduction at integer factors)."""
    h, w = x.shape[-2:]
    factor = h // y.shape[-2] if y.shape[-2] else 0
    if factor < 1 or h % y.shape[-2] or w != factor * y.shape[-1]:
        raise InputError(f"observation {tuple(y.shape)} is not {tuple(x.shape)} box-averaged by an integer factor")
    return project_resize(x, y, "area", strength)


# ----------------------------------------------------------------------------------------------- mosaic


@functools.lru_cache(maxsize=64)
def _block_matrices(n: int, block: int) -> tuple[np.ndarray, np.ndarray]:
    nb = -(-n // block)
    member = np.zeros((nb, n))
    member[np.arange(n) // block, np.arange(n)] = 1.0
    return member / member.sum(axis=1, keepdims=True), member.T.copy()


def mosaic(x: torch.Tensor, block: int | Sequence[int] = 16) -> torch.Tensor:
    """Replace each block x block tile (anchored top-left; partial tiles at the right/bottom edge too)
    by its mean; output has x's shape. ``block`` may be (bh, bw)."""
    _check_image(x)
    bh, bw = (block, block) if isinstance(block, int) else tuple(block)
    if bh < 1 or bw < 1:
        raise InputError(f"mosaic block must be >= 1, got {block!r}")
    h, w = x.shape[-2:]
    avg_h, up_h = (torch.from_numpy(m).to(device=x.device, dtype=x.dtype) for m in _block_matrices(h, int(bh)))
    avg_w, up_w = (torch.from_numpy(m).to(device=x.device, dtype=x.dtype) for m in _block_matrices(w, int(bw)))
    means = torch.matmul(torch.matmul(avg_h, x), avg_w.T)
    return torch.matmul(torch.matmul(up_h, means), up_w.T)
