"""Named degradation tasks of the papers: sample per-image parameters, apply real degradations, build f_hat.

A task (see :func:`list_tasks` and docs/degradations.md) turns a generator into one *record* per sample:
``{"task", "level", "input_size", "ops": [...]}`` (+ ``"order"`` when the paper applies its degradations
in random order). The ops are JSON-serialisable dicts holding every drawn value and the integer seed of
each random field, so ``apply(x, task, params=records)`` replays the exact output and ``apply(x[i:i+1],
task, params=[records[i]])`` replays one sample. :func:`surrogate` builds the differentiable ``f_hat``
of a record (the paper's surrogate where it defines one, else the exact differentiable ops with the
recorded noise, DiffJPEG and straight-through rounding).

Ops are executed batch-wise: at each step the samples whose op and current size agree are stacked and
run through the primitive together (sizes differ once per-sample random resizes happen).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch

from facerestore.degrade._random import ensure_generator, make_generator
from facerestore.degrade.color import adjust_color, grayscale
from facerestore.degrade.diffjpeg import diff_jpeg
from facerestore.degrade.jpeg import jpeg
from facerestore.degrade.kernels import blur, kernel_from_params, motion_kernel, reflect101_indices
from facerestore.degrade.masks import apply_mask, stroke_mask
from facerestore.degrade.noise import (
    dead_pixels,
    gaussian_noise,
    laplacian_noise,
    poisson_noise,
    random_sign_poisson_noise,
    salt_and_pepper,
)
from facerestore.degrade.presets import ispl, mfpsnet, realworld, rls, robust
from facerestore.degrade.presets._common import LEVELS, TaskInfo, cached_kernel, remember_kernel
from facerestore.degrade.resize import downsample_pulse_bicubic, mosaic, resize, resize_weights
from facerestore.degrade.surrogates import avgpool_downsample, clamp_surrogate, known_mask, poisson_bernoulli_surrogate
from facerestore.errors import InputError, did_you_mean

__all__ = ["LEVELS", "TaskInfo", "apply", "get_task", "list_tasks", "surrogate"]

Record = dict[str, Any]
Op = dict[str, Any]

# ----------------------------------------------------------------------------------------------- registry

_TASKS: dict[str, TaskInfo] = {}
for _module in (ispl, mfpsnet, robust, rls, realworld):
    for _info in _module.TASKS:
        if _info.name in _TASKS:  # pragma: no cover - a programming error in the preset tables
            raise RuntimeError(f"duplicate task name {_info.name}")
        _TASKS[_info.name] = _info
_ALIASES: dict[str, str] = dict(robust.ALIASES)


def list_tasks() -> list[TaskInfo]:
    """Every task (name, paper, description, levels, source, surrogate, output), in registry order."""
    return list(_TASKS.values())


def get_task(name: str) -> TaskInfo:
    """The TaskInfo of ``name`` (case-insensitive; paper-002 letter aliases such as "robust-UNA" work)."""
    key = str(name).strip()
    for candidate in (key, key.lower(), _ALIASES.get(key), _ALIASES.get(key.upper().replace("ROBUST-", "robust-"))):
        if candidate in _TASKS:
            return _TASKS[candidate]
    hint = did_you_mean(key, [*_TASKS, *_ALIASES])
    raise InputError(f"unknown degradation task {name!r}{hint}; see `facerestore degrade --list`")


def _resolve_level(info: TaskInfo, level: str | int | None) -> str | None:
    if not info.levels:
        if level is not None:
            raise InputError(f"task {info.name} has no levels (got level {level!r})")
        return None
    if level is None:
        return info.default_level
    if isinstance(level, str) and level.strip().isdigit():  # "--level 2" reaches here as a string
        level = int(level.strip())
    if isinstance(level, int) and not isinstance(level, bool):
        if 0 <= level < len(LEVELS) and LEVELS[level] in info.levels:
            return LEVELS[level]
    elif str(level).strip().upper() in info.levels:
        return str(level).strip().upper()
    raise InputError(f"task {info.name} has levels {', '.join(info.levels)} (or 0..{len(LEVELS) - 1}); got {level!r}")


# ----------------------------------------------------------------------------------------------- ops

@dataclass(frozen=True)
class _OpSpec:
    run: Callable[[torch.Tensor, list[Op]], torch.Tensor]  # batched real degradation
    sur: Callable[[torch.Tensor, Op, torch.Generator], torch.Tensor]  # f_hat of one op (broadcast over batch)
    key: Callable[[Op], Any] = lambda op: None  # ops with equal keys (and input sizes) run as one batch


def _strip(op: Op, *drop: str) -> dict[str, Any]:
    return {k: v for k, v in op.items() if k not in ("op", "surrogate", *drop)}


def _kernel(spec: dict[str, Any]) -> torch.Tensor:
    if spec["kind"] == "motion":
        return motion_kernel(int(spec["size"]), float(spec["length"]), float(spec["angle"]))[0]
    return kernel_from_params(spec)


def _kernel_of(op: Op) -> torch.Tensor:
    spec = op["kernel"]
    k = cached_kernel(spec)
    if k is None:
        k = _kernel(spec)
        remember_kernel(spec, k)
    return k


def _run_resize(x: torch.Tensor, ops: list[Op]) -> torch.Tensor:
    op = ops[0]
    size = (int(op["size"][0]), int(op["size"][1]))
    if _FAST and op["method"] == "bilinear" and x.shape[-2:] != size:
        return _fast_bilinear(x, size, op["antialias"])
    return resize(x, size=size, method=op["method"], antialias=op["antialias"])


def _sur_resize(x: torch.Tensor, op: Op, g: torch.Generator) -> torch.Tensor:
    if op.get("surrogate") == "avgpool":
        return avgpool_downsample(x, int(op["factor"]), size=(int(op["size"][0]), int(op["size"][1])))
    return resize(x, size=tuple(op["size"]), method=op["method"], antialias=op["antialias"])


def _run_blur(x: torch.Tensor, ops: list[Op]) -> torch.Tensor:
    kernels = torch.stack([_kernel_of(op) for op in ops])
    if _FAST and kernels.shape[-1] >= _FFT_MIN_KERNEL and bool((kernels >= 0).all()):
        # one sample at a time: the spectra of a whole batch do not fit in cache
        return torch.cat([_fft_blur(x[i : i + 1], kernels[i : i + 1]) for i in range(x.shape[0])])
    return blur(x, kernels)


def _sur_blur(x: torch.Tensor, op: Op, g: torch.Generator) -> torch.Tensor:
    return blur(x, _kernel_of(op))


def _additive(fn: Callable[..., tuple[torch.Tensor, Any]]) -> tuple[Callable, Callable]:
    def run(x: torch.Tensor, ops: list[Op]) -> torch.Tensor:
        return fn(x, None, params=[_strip(op) for op in ops])[0]

    def sur(x: torch.Tensor, op: Op, g: torch.Generator) -> torch.Tensor:
        # the recorded noise field, added to every sample of the batch; the clamp gets a surrogate gradient
        y = fn(x, None, params=[_strip(op)] * x.shape[0], clip=False)[0]
        return clamp_surrogate(y)

    return run, sur


def _run_poisson_dead(x: torch.Tensor, ops: list[Op]) -> torch.Tensor:
    y, _ = poisson_noise(x, None, params=[{"seed": op["seed"], "photons": op["photons"]} for op in ops])
    y, _ = dead_pixels(y, None, params=[{"seed": op["mask_seed"], "p": op["p"]} for op in ops])
    return y


def _sur_poisson_dead(x: torch.Tensor, op: Op, g: torch.Generator) -> torch.Tensor:
    # a fresh Gaussian field and dead-pixel mask at every call (g advances), as paper 002's code
    return poisson_bernoulli_surrogate(x, op["photons"], op["p"], generator=g)[0]


def _run_salt(x: torch.Tensor, ops: list[Op]) -> torch.Tensor:
    return salt_and_pepper(x, None, params=[_strip(op) for op in ops])[0]


def _sur_salt(x: torch.Tensor, op: Op, g: torch.Generator) -> torch.Tensor:
    return salt_and_pepper(x, None, params=[_strip(op)] * x.shape[0])[0]


def _run_jpeg(x: torch.Tensor, ops: list[Op]) -> torch.Tensor:
    return jpeg(x, [int(op["quality"]) for op in ops], ops[0]["subsampling"])


def _sur_jpeg(x: torch.Tensor, op: Op, g: torch.Generator) -> torch.Tensor:
    return diff_jpeg(x, int(op["quality"]), subsampling=op["subsampling"])


def _quantize(x: torch.Tensor, bits: int) -> torch.Tensor:
    levels = float(2 ** int(bits) - 1)
    return (x * levels).add_(0.5).floor_().clamp_(0.0, levels).div_(levels)


def _sur_quantize(x: torch.Tensor, op: Op, g: torch.Generator) -> torch.Tensor:
    return x + (_quantize(x, op["bits"]) - x).detach()  # straight-through


@functools.lru_cache(maxsize=64)
def _stroke_mask_cached(size: tuple[int, int], n_strokes: int, width: float, seed: int) -> torch.Tensor:
    mask, _ = stroke_mask(size, n_strokes, width=width, generator=make_generator(seed))
    return mask


def _stroke_mask(op: Op) -> torch.Tensor:
    # cached: f_hat is called at every optimisation step and rasterising strokes at 4x is not free
    return _stroke_mask_cached(tuple(op["size"]), int(op["n_strokes"]), float(op["width"]), int(op["seed"]))


def _run_mask(x: torch.Tensor, ops: list[Op]) -> torch.Tensor:
    masks = torch.cat([_stroke_mask(op) for op in ops]).to(device=x.device, dtype=x.dtype)
    return apply_mask(x, masks)


def _sur_mask(x: torch.Tensor, op: Op, g: torch.Generator) -> torch.Tensor:
    return known_mask(x, _stroke_mask(op))


def _color_shift(x: torch.Tensor, ops: list[Op]) -> torch.Tensor:
    shift = torch.tensor([op["shift"] for op in ops], dtype=x.dtype, device=x.device)
    return x + shift[:, :, None, None]


def _adjust(x: torch.Tensor, op: Op) -> torch.Tensor:
    return adjust_color(x, **_strip(op))


def _same(fn: Callable[[torch.Tensor, Op], torch.Tensor], clamp: bool = False) -> tuple[Callable, Callable]:
    """A deterministic op whose surrogate is itself (run sample by sample when parameters differ)."""

    def run(x: torch.Tensor, ops: list[Op]) -> torch.Tensor:
        if all(op == ops[0] for op in ops):
            y = fn(x, ops[0])
        else:
            y = torch.cat([fn(x[i : i + 1], op) for i, op in enumerate(ops)])
        return y.clamp(0.0, 1.0) if clamp else y

    def sur(x: torch.Tensor, op: Op, g: torch.Generator) -> torch.Tensor:
        y = fn(x, op)
        return clamp_surrogate(y) if clamp else y

    return run, sur


def _identity_sur(spec: _OpSpec) -> _OpSpec:
    """Wrap a spec so that ``"surrogate": "identity"`` ops (corruptions unknown to the method) pass through."""

    def sur(x: torch.Tensor, op: Op, g: torch.Generator) -> torch.Tensor:
        return x if op.get("surrogate") == "identity" else spec.sur(x, op, g)

    return _OpSpec(spec.run, sur, spec.key)


_gauss_run, _gauss_sur = _additive(gaussian_noise)
_lap_run, _lap_sur = _additive(laplacian_noise)
_rsp_run, _rsp_sur = _additive(random_sign_poisson_noise)
_pulse_run, _pulse_sur = _same(lambda x, op: downsample_pulse_bicubic(x, int(op["factor"])))
_mosaic_run, _mosaic_sur = _same(lambda x, op: mosaic(x, int(op["block"])))
_shift_run, _shift_sur = _same(lambda x, op: _color_shift(x, [op]), clamp=True)
_adjust_run, _adjust_sur = _same(_adjust, clamp=True)
_gray_run, _gray_sur = _same(lambda x, op: grayscale(x))

_OPS: dict[str, _OpSpec] = {
    name: _identity_sur(spec)
    for name, spec in {
        "resize": _OpSpec(_run_resize, _sur_resize, lambda op: (tuple(op["size"]), op["method"], op["antialias"])),
        "pulse_bicubic": _OpSpec(lambda x, ops: _pulse_run(x, ops).clamp(0.0, 1.0), _pulse_sur,
                                 lambda op: op["factor"]),
        "mosaic": _OpSpec(_mosaic_run, _mosaic_sur, lambda op: op["block"]),
        "blur": _OpSpec(lambda x, ops: _run_blur(x, ops).clamp(0.0, 1.0), _sur_blur,
                        lambda op: int(op["kernel"]["size"])),
        "gaussian_noise": _OpSpec(_gauss_run, _gauss_sur, lambda op: bool(op.get("gray", False))),
        "laplacian_noise": _OpSpec(_lap_run, _lap_sur, lambda op: bool(op.get("gray", False))),
        "random_sign_poisson_noise": _OpSpec(_rsp_run, _rsp_sur, lambda op: bool(op.get("per_channel", True))),
        "poisson_dead_pixels": _OpSpec(_run_poisson_dead, _sur_poisson_dead),
        "salt_and_pepper": _OpSpec(_run_salt, _sur_salt, lambda op: bool(op.get("per_channel", False))),
        "jpeg": _OpSpec(_run_jpeg, _sur_jpeg, lambda op: op["subsampling"]),
        "quantize": _OpSpec(lambda x, ops: _quantize(x, ops[0]["bits"]), _sur_quantize, lambda op: op["bits"]),
        "mask": _OpSpec(_run_mask, _sur_mask),
        "color_shift": _OpSpec(_shift_run, _shift_sur),
        "adjust_color": _OpSpec(_adjust_run, _adjust_sur, lambda op: tuple(sorted(_strip(op)))),
        "grayscale": _OpSpec(_gray_run, _gray_sur),
    }.items()
}


# ----------------------------------------------------------------------------------------------- fast paths
# Private replacements of blur / resize / blur + resize that compute the same linear maps as the primitives
# (differences are float rounding: < 2e-5 for FFT and fused blur, ~1e-7 for OpenCV's bilinear resize,
# < 1e-4 for torch's); used when cheaper, compared with the primitives in the tests. _FAST = False turns
# them off. CPU float32 FFT blurs use OpenCV's DFT (about 25% faster than torch.fft here, and its inverse
# can skip the rows it does not keep).

_FAST = True
_FFT_MIN_KERNEL = 15  # below this the direct convolution is cheap enough
_RANK_TOL = 1e-6  # bound on the max abs error from truncating the kernel's SVD
_BAND_STEP = 1.0  # input rows per block of the fused path, in support lengths
_FFT_COST_PER_POINT = 5.0  # multiply-add equivalents per point and log2(points) (tuned on a 2-core CPU)
_FUSED_OVERHEAD = 8e6  # fixed cost of the fused path (band construction, copies) in multiply-adds


def _good_fft_size(n: int) -> int:
    """Smallest 2^a 3^b 5^c 7^d >= n (sizes pocketfft transforms fastest)."""
    m = max(1, n)
    while True:
        r = m
        for p in (2, 3, 5, 7):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 1


def _cv2_fft_planes(xi: torch.Tensor, kernel: torch.Tensor) -> list[np.ndarray]:
    """blur of one CPU float32 (C, H, W) image as C (H, W) float32 views, with OpenCV's real DFT.

    Same linear map as _fft_blur: the channel is padded reflect-101 straight to the transform size (the
    extra rows and columns are never read by the kept outputs, so their content does not matter), its
    packed spectrum is multiplied by the kernel's conjugate spectrum (correlation) and the inverse
    computes only the H output rows it keeps.
    """
    _, h, w = xi.shape
    kh, kw = kernel.shape[-2:]
    n_h, n_w = _good_fft_size(h + kh - 1), _good_fft_size(w + kw - 1)
    top, left = kh // 2, kw // 2
    kpad = np.zeros((n_h, n_w), dtype=np.float32)
    kpad[:kh, :kw] = kernel.detach().to(device="cpu", dtype=torch.float32).numpy()
    spec_k = cv2.dft(kpad, nonzeroRows=kh)
    planes = []
    for plane in xi.detach().numpy():
        xp = cv2.copyMakeBorder(plane, top, n_h - h - top, left, n_w - w - left, cv2.BORDER_REFLECT_101)
        spec = cv2.mulSpectrums(cv2.dft(xp), spec_k, 0, conjB=True)
        y = cv2.idft(spec, flags=cv2.DFT_REAL_OUTPUT | cv2.DFT_SCALE, nonzeroRows=h)
        planes.append(y[:h, :w])
    return planes


def _use_cv2_fft(x: torch.Tensor, kernels: torch.Tensor) -> bool:
    _, _, h, w = x.shape
    kh, kw = kernels.shape[-2:]
    # copyMakeBorder's reflect-101 needs pads smaller than the image
    return x.device.type == "cpu" and x.dtype == torch.float32 and max(kh, kw) < min(h, w)


def _fft_blur(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """blur(x, kernels) (reflect-101 correlation) computed with real FFTs: exact up to float rounding."""
    b, _, h, w = x.shape
    if _use_cv2_fft(x, kernels):
        ks = kernels.expand(b, -1, -1) if kernels.shape[0] == 1 else kernels
        return torch.stack([torch.from_numpy(np.stack(_cv2_fft_planes(x[i], ks[i]))) for i in range(b)])
    kh, kw = kernels.shape[-2:]
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    xp = _pad101(_pad101(x.to(work), kh, dim=-2), kw, dim=-1)
    n_h, n_w = _good_fft_size(xp.shape[-2]), _good_fft_size(xp.shape[-1])
    spec_x = torch.fft.rfft2(xp, s=(n_h, n_w))
    spec_k = torch.fft.rfft2(kernels.to(device=x.device, dtype=work), s=(n_h, n_w))
    if spec_k.shape[0] == 1 < b:
        spec_k = spec_k.expand(b, -1, -1)
    # correlation: multiply by the conjugate spectrum; output i reads padded samples i .. i + k - 1
    y = torch.fft.irfft2(spec_x * spec_k.conj()[:, None], s=(n_h, n_w))
    return y[..., :h, :w].to(x.dtype)


def _low_rank(kernel: torch.Tensor, tol: float) -> tuple[torch.Tensor, torch.Tensor]:
    """kernel ~= sum_r u_r v_r^T with max abs error <= tol on [0, 1] images: (R, kh) and (R, kw) float64."""
    key = (kernel.data_ptr(), tuple(kernel.shape), kernel._version, float(tol))
    hit = _SVD_CACHE.get(key)
    if hit is not None and hit[0] is kernel:
        return hit[1]
    split = _svd_split(kernel, tol)
    _SVD_CACHE[key] = (kernel, split)
    while len(_SVD_CACHE) > 64:
        _SVD_CACHE.pop(next(iter(_SVD_CACHE)))
    return split


_SVD_CACHE: dict[Any, tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]] = {}


def _svd_split(kernel: torch.Tensor, tol: float) -> tuple[torch.Tensor, torch.Tensor]:
    u, s, vh = torch.linalg.svd(kernel.detach().cpu().to(torch.float64))
    bound = s * u.abs().sum(0) * vh.abs().sum(1)
    tail = torch.flip(torch.cumsum(torch.flip(bound, [0]), 0), [0])  # error if components r.. are dropped
    rank = max(1, int((tail > tol).sum()))
    return (u[:, :rank] * s[:rank]).T.contiguous(), vh[:rank].contiguous()


@dataclass(frozen=True)
class _Bands:
    """M_r = weights @ Corr(taps_r) cut into blocks that read padded input rows [q * step, q * step + span).

    blocks: (n_blocks, slots, R, span) float64; slot s of block q computes output row index[q * slots + s]
    (outputs are dealt to the block holding the start of their support; unused slots are zero).
    order: for each output row, its flat (block, slot) position.
    """

    blocks: torch.Tensor
    order: torch.Tensor
    step: int
    rows_needed: int


def _bands(weights: torch.Tensor, taps: torch.Tensor) -> _Bands:
    n_out, n_in = weights.shape
    rank, k = taps.shape
    rows, cols = torch.nonzero(weights, as_tuple=True)
    vals = weights[rows, cols]
    # support of each output in padded input coordinates: [first, last]
    first = torch.full((n_out,), n_in + k, dtype=torch.long).scatter_reduce(0, rows, cols, "amin")
    last = torch.full((n_out,), -1, dtype=torch.long).scatter_reduce(0, rows, cols + k - 1, "amax")
    # blocks advance by _BAND_STEP supports; every slot of a block multiplies its whole span
    step = max(1, round(_BAND_STEP * (int((last - first).max()) + 1)))
    block = first // step
    n_blocks = int(block.max()) + 1
    block_first = torch.full((n_blocks,), n_out, dtype=torch.long).scatter_reduce(0, block, torch.arange(n_out), "amin")
    slot = torch.arange(n_out) - block_first[block]  # outputs of a block are consecutive rows
    slots = int(slot.max()) + 1
    span = int((last - block * step).max()) + 1
    out = torch.zeros(n_blocks, slots, rank, span, dtype=torch.float64)
    t = torch.arange(k)
    local = (cols - block[rows] * step)[:, None] + t  # (nnz, k)
    b_idx, s_idx = block[rows][:, None].expand(-1, k), slot[rows][:, None].expand(-1, k)
    for r in range(rank):
        out[:, :, r].index_put_((b_idx, s_idx, local), vals[:, None] * taps[r], accumulate=True)
    return _Bands(out, block * slots + slot, step, (n_blocks - 1) * step + span)


def _windows(z: torch.Tensor, bands: _Bands) -> torch.Tensor:
    """Overlapping (n_blocks, span * components, features) views of z (rows, components, features)."""
    n_blocks, span = bands.blocks.shape[0], bands.blocks.shape[-1]
    _, q, f = z.shape
    return z.as_strided((n_blocks, span * q, f), (bands.step * q * f, f, 1))


def _pad_rows(n: int, k: int, needed: int, device: torch.device) -> torch.Tensor:
    """Row indices of a reflect-101 padding for k taps, extended (with any valid row) to ``needed`` rows."""
    idx = reflect101_indices(n, k // 2, k - 1 - k // 2, device)
    if needed > idx.numel():
        idx = torch.cat([idx, idx[-1:].expand(needed - idx.numel())])
    return idx


def _fused_cost(rank: int, h: int, w: int, oh: int, ow: int, kh: int, kw: int, c: int) -> float:
    """Multiply-adds of _fused_blur_resize (both banded passes)."""
    rows = rank * oh * (1 + _BAND_STEP) * (kh + 1) * c * w
    cols = rank * ow * (1 + _BAND_STEP) * (kw + 1) * c * oh
    return _FUSED_OVERHEAD + rows + cols


def _fft_cost(h: int, w: int, kh: int, kw: int, c: int) -> float:
    """Multiply-add equivalents of _fft_blur for one image (forward + inverse real FFTs)."""
    n = _good_fft_size(h + kh - 1) * _good_fft_size(w + kw - 1)
    return _FFT_COST_PER_POINT * c * n * math.log2(n)


def _fused_blur_resize(x: torch.Tensor, kernel: torch.Tensor, size: tuple[int, int], method: str,
                       antialias: bool) -> torch.Tensor:
    """resize(blur(x, kernel), size, method) for one sample as banded matmuls at the output resolution.

    The kernel's SVD (truncated at a max abs error of _RANK_TOL) splits the blur into rank-1 separable
    parts; each composes with the separable resize into banded (out, in) matrices, applied block by
    block to overlapping strided views of the padded input (no copies of the windows). Valid for a
    non-negative kernel and a convex resize (bilinear / area: the primitive never clamps).
    """
    _, c, h, w = x.shape
    oh, ow = size
    kh, kw = kernel.shape
    u, v = _low_rank(kernel, _RANK_TOL)
    rank = u.shape[0]
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    bv = _bands(resize_weights(h, oh, method, antialias), u)
    bh = _bands(resize_weights(w, ow, method, antialias), v)
    # vertical: padded rows (rows, 1, c * w) -> per (block, slot): R rows -> (oh, R, c, w)
    rows = x[0].to(work).permute(1, 0, 2).index_select(0, _pad_rows(h, kh, bv.rows_needed, x.device))
    rows = rows.reshape(-1, 1, c * w)  # (rows, 1, c * w), one copy
    wv = bv.blocks.reshape(bv.blocks.shape[0], -1, bv.blocks.shape[-1]).to(device=x.device, dtype=work)
    t = torch.bmm(wv, _windows(rows, bv)).reshape(-1, rank, c, w)  # (n_blocks * slots, R, c, w)
    t = t.index_select(0, bv.order.to(x.device))  # (oh, R, c, w)
    # horizontal: padded columns (cols, R, oh * c); one copy does the transpose and the padding
    cols = t.permute(3, 1, 0, 2).index_select(0, _pad_rows(w, kw, bh.rows_needed, x.device))
    cols = cols.reshape(cols.shape[0], rank, oh * c)
    wh = bh.blocks.permute(0, 1, 3, 2).reshape(bh.blocks.shape[0], bh.blocks.shape[1], -1)  # span-major
    out = torch.bmm(wh.to(device=x.device, dtype=work), _windows(cols, bh)).reshape(-1, oh, c)
    out = out.index_select(0, bh.order.to(x.device))  # (ow, oh, c)
    return out.permute(2, 1, 0)[None].contiguous().to(x.dtype)


def _pad101(x: torch.Tensor, k: int, dim: int) -> torch.Tensor:
    """Reflect-101 padding for a k-tap 'same' filter along dim (k // 2 before, k - 1 - k // 2 after)."""
    before, after = k // 2, k - 1 - k // 2
    n = x.shape[dim]
    if x.ndim == 4 and dim in (-1, -2, 2, 3) and max(before, after) < n:
        pad = (before, after, 0, 0) if dim in (-1, 3) else (0, 0, before, after)
        return torch.nn.functional.pad(x, pad, mode="reflect")  # torch's "reflect" is reflect-101
    return x.index_select(dim, reflect101_indices(n, before, after, x.device))


def _fast_bilinear(x: torch.Tensor, size: tuple[int, int], antialias: bool, bits: int | None = None) -> torch.Tensor:
    """resize(x, size, "bilinear", antialias) through OpenCV (CPU float32) or torch's interpolation.

    Same weights as the primitive (PIL's triangle filter): OpenCV's INTER_LINEAR and torch's half-pixel
    bilinear without antialiasing (torch's antialiased kernel when upsampling, where both coincide).
    OpenCV agrees with the primitive to ~1e-7, torch (float32 source coordinates) to < 1e-4.
    ``bits``: also run the following quantize op (same float32 arithmetic, while the image is in cache).
    """
    up = size[0] >= x.shape[-2] and size[1] >= x.shape[-1]
    if x.device.type == "cpu" and x.dtype == torch.float32 and (up or not antialias):
        # plane by plane straight into a (B, C, H, W) buffer: no channel-last copies on either side
        y = torch.empty((*x.shape[:2], *size), dtype=torch.float32)
        src, dst = x.detach().contiguous().numpy(), y.numpy()
        for b in range(src.shape[0]):
            for c in range(src.shape[1]):
                cv2.resize(src[b, c], (size[1], size[0]), dst=dst[b, c], interpolation=cv2.INTER_LINEAR)
        if bits is not None:
            _quantize_np(dst, bits)
        return y
    low = x.dtype in (torch.float16, torch.bfloat16) and x.device.type == "cpu"  # no CPU antialias kernel for these
    y = torch.nn.functional.interpolate(x.float() if low else x, size=size, mode="bilinear", align_corners=False,
                                        antialias=bool(antialias or up))
    y = y.clamp_(0.0, 1.0).to(x.dtype)
    return y if bits is None else _quantize(y, bits)


def _fast_bilinear_many(xs: list[torch.Tensor], size: tuple[int, int], antialias: bool,
                        bits: int | None = None) -> torch.Tensor:
    """_fast_bilinear of (1, C, h_i, w_i) samples of any sizes, stacked into one (N, C, H, W) tensor."""
    cpu = all(t.device.type == "cpu" and t.dtype == torch.float32 for t in xs)
    if not cpu or (antialias and not all(size[0] >= t.shape[-2] and size[1] >= t.shape[-1] for t in xs)):
        return torch.cat([_fast_bilinear(t, size, antialias, bits) for t in xs])
    y = torch.empty((len(xs), xs[0].shape[1], *size), dtype=torch.float32)
    dst = y.numpy()
    for b, t in enumerate(xs):
        src = t.detach().contiguous().numpy()[0]
        for c in range(src.shape[0]):
            cv2.resize(src[c], (size[1], size[0]), dst=dst[b, c], interpolation=cv2.INTER_LINEAR)
            if bits is not None:
                _quantize_np(dst[b, c], bits)  # while the plane is in cache
    return y


def _quantize_np(dst: np.ndarray, bits: int) -> None:
    """_quantize in place on a float32 array (the same float32 arithmetic)."""
    levels = np.float32(2 ** int(bits) - 1)
    np.multiply(dst, levels, out=dst)
    np.add(dst, np.float32(0.5), out=dst)
    np.floor(dst, out=dst)
    np.clip(dst, np.float32(0.0), levels, out=dst)
    np.divide(dst, levels, out=dst)


def _large_kernel(blur_op: Op) -> bool:
    """Whether the fast paths handle this blur (big, non-negative kernel: FFT or fused with the resize)."""
    if not _FAST:
        return False
    kernel = _kernel_of(blur_op)
    return min(kernel.shape[-2:]) >= _FFT_MIN_KERNEL and not bool((kernel < 0).any())


def _use_fused(x: torch.Tensor, blur_op: Op, resize_op: Op) -> bool:
    if not _large_kernel(blur_op) or resize_op["op"] != "resize" or resize_op["method"] not in ("bilinear", "area"):
        return False
    kernel = _kernel_of(blur_op)
    kh, kw = kernel.shape[-2:]
    _, c, h, w = x.shape
    oh, ow = resize_op["size"]
    rank = _low_rank(kernel, _RANK_TOL)[0].shape[0]
    return _fused_cost(rank, h, w, oh, ow, kh, kw, c) < _fft_cost(h, w, kh, kw, c)


# ----------------------------------------------------------------------------------------------- engine


def _check_image(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 3 or not x.is_floating_point():
        raise InputError(f"expected a float (B, 3, H, W) tensor, got {getattr(x, 'shape', type(x))}")
    if x.shape[0] == 0:
        raise InputError("empty batch: no image to degrade")


def _run(x: torch.Tensor, op_lists: Sequence[Sequence[Op]]) -> torch.Tensor:
    """Run each sample's ops, batching the samples whose next op and current size agree."""
    cur = [x[i : i + 1] for i in range(x.shape[0])]
    pos = [0] * len(cur)
    whole: tuple[torch.Tensor, list[torch.Tensor]] | None = None
    for ops in op_lists:
        for op in ops:
            if op.get("op") not in _OPS:
                raise InputError(f"unknown op {op.get('op')!r} in params")
    while True:
        groups: dict[Any, list[int]] = {}
        for i, ops in enumerate(op_lists):
            if pos[i] >= len(ops):
                continue
            op = ops[pos[i]]
            nxt = ops[pos[i] + 1] if pos[i] + 1 < len(ops) else None
            if op["op"] == "blur" and nxt is not None and nxt["op"] == "resize" and _large_kernel(op):
                key: Any = ("fused" if _use_fused(cur[i], op, nxt) else "fft_resize", i)
            elif _FAST and op["op"] == "resize" and op["method"] == "bilinear" and nxt is not None \
                    and nxt["op"] == "quantize" and tuple(cur[i].shape[-2:]) != tuple(op["size"]):
                # input sizes may differ: each sample is resized on its own, into one output batch
                key = ("resize_quantize", cur[i].shape[1], cur[i].dtype, cur[i].device, tuple(op["size"]),
                       op["antialias"], nxt["bits"])
            else:
                key = (op["op"], tuple(cur[i].shape), _OPS[op["op"]].key(op))
            groups.setdefault(key, []).append(i)
        if not groups:
            break
        for key, idx in groups.items():
            if key[0] == "fused":
                (i,) = idx
                op, nxt = op_lists[i][pos[i]], op_lists[i][pos[i] + 1]
                y = _fused_blur_resize(cur[i], _kernel_of(op), tuple(nxt["size"]), nxt["method"], nxt["antialias"])
                cur[i] = y.clamp(0.0, 1.0)
                pos[i] += 2
                continue
            if key[0] == "fft_resize":
                (i,) = idx
                op, nxt = op_lists[i][pos[i]], op_lists[i][pos[i] + 1]
                kernel = _kernel_of(op)
                size = (int(nxt["size"][0]), int(nxt["size"][1]))
                if _use_cv2_fft(cur[i], kernel[None]) and nxt["method"] == "bilinear" \
                        and (not nxt["antialias"] or (size[0] >= cur[i].shape[-2] and size[1] >= cur[i].shape[-1])):
                    # resize each blurred plane where it lies (OpenCV's INTER_LINEAR, as _fast_bilinear)
                    planes = [cv2.resize(p, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
                              for p in _cv2_fft_planes(cur[i][0], kernel)]
                    cur[i] = torch.from_numpy(np.stack(planes))[None].clamp_(0.0, 1.0)
                else:
                    y = _fft_blur(cur[i], kernel[None])
                    cur[i] = _OPS["resize"].run(y, [nxt]).clamp_(0.0, 1.0)
                pos[i] += 2
                continue
            if key[0] == "resize_quantize":
                yb = _fast_bilinear_many([cur[i] for i in idx], key[4], key[5], bits=key[6])
                for j, i in enumerate(idx):
                    cur[i] = yb[j : j + 1]
                    pos[i] += 2
                if idx == list(range(len(cur))):
                    whole = (yb, list(cur))
                continue
            ops = [op_lists[i][pos[i]] for i in idx]
            xb = cur[idx[0]] if len(idx) == 1 else torch.cat([cur[i] for i in idx])
            yb = _OPS[ops[0]["op"]].run(xb, ops)
            for j, i in enumerate(idx):
                cur[i] = yb[j : j + 1]
                pos[i] += 1
    shapes = {tuple(t.shape) for t in cur}
    if len(shapes) != 1:
        raise InputError(f"the samples' params lead to different output sizes {sorted(shapes)}")
    if whole is not None and all(a is b for a, b in zip(cur, whole[1])):
        return whole[0]  # the last op wrote the whole batch into one tensor: no final copy
    return cur[0].contiguous() if len(cur) == 1 else torch.cat(cur)


def _check_records(
    info: TaskInfo, params: Sequence[Record] | Record, batch: int, size: tuple[int, int]
) -> list[Record]:
    recs = [params] * batch if isinstance(params, dict) else list(params)
    if len(recs) != batch:
        raise InputError(f"params has {len(recs)} records for a batch of {batch}")
    for r in recs:
        if not isinstance(r, dict) or "ops" not in r:
            raise InputError("params must be the records returned by apply() (dicts with 'ops')")
        if get_task(r.get("task", info.name)).name != info.name:
            raise InputError(f"params were made for task {r.get('task')!r}, not {info.name!r}")
        if "input_size" in r and tuple(r["input_size"]) != size:
            raise InputError(f"params were made for {tuple(r['input_size'])} inputs, got {size}")
        for op in r["ops"] if isinstance(r["ops"], list) else [None]:
            if not isinstance(op, dict) or op.get("op") not in _OPS:
                raise InputError(f"unknown op {op.get('op') if isinstance(op, dict) else op!r} in params")
    return recs


@contextlib.contextmanager
def _malformed_ops() -> Iterator[None]:
    """A record op that lacks a key its operation reads (hand-edited params): one line, not a KeyError."""
    try:
        yield
    except KeyError as exc:
        raise InputError(f"params: an op lacks the key {exc} (use the records apply() returned)") from None


def apply(
    x: torch.Tensor,
    task: str,
    level: str | int | None = None,
    generator: torch.Generator | int | None = None,
    params: Sequence[Record] | Record | None = None,
) -> tuple[torch.Tensor, list[Record]]:
    """Degrade a (B, 3, H, W) batch in [0, 1] with a named task; returns (y, one record per sample).

    level: "XS".."XL" (or 0..4) for tasks with levels, default their default level (M); None otherwise.
    generator: torch.Generator, int seed or None; each sample's parameters are drawn in batch order.
    params: records from a previous call (or one record for the whole batch) to replay exactly; level and
    generator are then ignored. Outputs are in [0, 1] on x's device and dtype; their size is given by
    ``get_task(task).output``.
    """
    info = get_task(task)
    _check_image(x)
    b, _, h, w = x.shape
    if params is None:
        lvl = _resolve_level(info, level)
        g = ensure_generator(generator)
        records = []
        for _ in range(b):
            drawn = info.sampler(g, h, w, lvl)
            records.append({"task": info.name, "level": lvl, "input_size": [h, w], **drawn})
    else:
        records = copy.deepcopy(_check_records(info, params, b, (h, w)))
    with torch.no_grad(), _malformed_ops():
        y = _run(x.detach(), [r["ops"] for r in records])
    return y, records


def record_seed(record: Record) -> int:
    """A seed (0 <= s < 2**62) that is a function of the record's operations alone: a sample's stochastic
    surrogate draws (and the inversion's inpainting noise) do not depend on its position in a batch."""
    digest = hashlib.sha256(repr(record.get("ops")).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 2


def surrogate(task: str, params: Sequence[Record] | Record) -> Callable[[torch.Tensor], torch.Tensor]:
    """The differentiable f_hat of ``task`` for the given record(s) (from :func:`apply`).

    The callable maps a prediction of the task's input size (B, 3, H, W) to the degraded target's size.
    With one record it applies to the whole batch; with a list it needs one sample per record.
    Stochastic surrogates (paper 002's shot noise, unknown dead pixels) draw fresh noise at every call
    from a generator seeded by the record, so an optimisation is reproducible.
    """
    info = get_task(task)
    recs = [params] if isinstance(params, dict) else list(params)
    for r in recs:
        _check_records(info, [r], 1, tuple(r.get("input_size", (0, 0))))
    gens = [make_generator(record_seed(r)) for r in recs]

    def run_one(x: torch.Tensor, rec: Record, g: torch.Generator) -> torch.Tensor:
        if "input_size" in rec and tuple(x.shape[-2:]) != tuple(rec["input_size"]):
            expected = tuple(rec["input_size"])
            raise InputError(f"f_hat of this record expects {expected} inputs, got {tuple(x.shape[-2:])}")
        with _malformed_ops():
            for op in rec["ops"]:
                x = _OPS[op["op"]].sur(x, op, g)
        return x

    def f_hat(x: torch.Tensor) -> torch.Tensor:
        _check_image(x)
        if len(recs) == 1:
            return run_one(x, recs[0], gens[0])
        if x.shape[0] != len(recs):
            raise InputError(f"f_hat built for {len(recs)} records got a batch of {x.shape[0]}")
        return torch.cat([run_one(x[i : i + 1], r, g) for i, (r, g) in enumerate(zip(recs, gens))])

    f_hat.task = info.name  # type: ignore[attr-defined]
    return f_hat

