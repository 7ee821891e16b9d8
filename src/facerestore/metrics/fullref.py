"""Full-reference pixel metrics: PSNR, SSIM and MS-SSIM, batched, float64 inside.

Conventions (images (B, C, H, W) in [0, 1]; C is 3 for RGB or 1 for a luma channel):

* PSNR: ``10 log10(data_range^2 / MSE)`` with the MSE over all channels and pixels of each image, as
  ``skimage.metrics.peak_signal_noise_ratio``; ``inf`` for identical images.
* SSIM (Wang et al. 2004, reference MATLAB ``ssim_index.m`` without its automatic downsampling):
  11x11 Gaussian window with sigma 1.5 (normalised), K1 = 0.01, K2 = 0.03, C_i = (K_i * data_range)^2,
  biased (population) local variances, "valid" filtering (no padding: the map is (H-10) x (W-10)),
  mean of the map; per channel, then averaged over channels. Identical to BasicSR's ``calculate_ssim``
  and to ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False)`` (whose mean over the map cropped by 5 pixels equals the valid mean).
* MS-SSIM (Wang et al. 2003, reference MATLAB ``msssim.m``): 5 scales with weights
  (0.0448, 0.2856, 0.3001, 0.2363, 0.1333); the mean contrast-structure term at scales 1-4 and the full
  SSIM at scale 5, combined as a weighted product; between scales a 2x2 mean filter ("symmetric"
  border, i.e. the last row/column repeated for odd sizes) followed by taking every second pixel,
  which is a 2x2 average pooling. Per-scale means are clamped at 0 before the fractional powers
  (only matters for anti-correlated images, where MATLAB would return a complex number).
  ``method="wtd_sum"`` is msssim.m's other pooling: the weights are normalised to sum to 1 (they sum to
  1.0001) and the same five per-scale means are summed with them instead of multiplied as powers. That
  pooling, on ``rgb2gray`` (uint8) images, is what reproduces the official ms_ssim calibration row.
* ``y_channel=True`` first converts RGB to BT.601 Y (BasicSR ``test_y_channel``, see
  :func:`facerestore.metrics.color.rgb_to_y_bt601`); ``crop_border`` removes that many pixels from each
  side first (BasicSR ``crop_border``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from facerestore.errors import InputError
from facerestore.metrics.base import Metric
from facerestore.metrics.color import rgb_to_gray_matlab, rgb_to_y_bt601

__all__ = ["MSSSIM", "MS_SSIM_METHODS", "MS_SSIM_WEIGHTS", "PSNR", "SSIM", "gaussian_kernel1d", "ms_ssim", "psnr",
           "rgb_to_y_bt601", "ssim"]

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
MS_SSIM_METHODS = ("product", "wtd_sum")
_WIN, _SIGMA, _K1, _K2 = 11, 1.5, 0.01, 0.03


def _work_dtype(device: torch.device) -> torch.dtype:
    # MPS has no float64; everywhere else the statistics are accumulated in double precision
    return torch.float32 if device.type == "mps" else torch.float64


_CHUNK_ELEMS = 1 << 20


def _chunks(x: torch.Tensor) -> list[slice]:
    """Batch slices of about 1M values (CPU) or 64M (GPU): batching gains nothing on a CPU once the
    temporaries leave the cache; results do not depend on the chunking."""
    per_image = max(1, x[0].numel()) if x.shape[0] else 1
    budget = _CHUNK_ELEMS if x.device.type == "cpu" else 64 * _CHUNK_ELEMS
    step = max(1, budget // per_image)
    return [slice(i, i + step) for i in range(0, x.shape[0], step)]


def _prepare(x: torch.Tensor, crop_border: int, y_channel: bool, data_range: float = 1.0) -> torch.Tensor:
    if x.dim() != 4:
        raise InputError(f"expected (B, C, H, W) images, got shape {tuple(x.shape)}")
    x = x.to(_work_dtype(x.device))
    if crop_border:
        if crop_border < 0 or 2 * crop_border >= min(x.shape[-2:]):
            raise InputError(f"crop_border={crop_border} leaves nothing of a {x.shape[-2]}x{x.shape[-1]} image")
        x = x[..., crop_border:-crop_border, crop_border:-crop_border]
    if y_channel:
        if x.shape[1] != 3:
            raise InputError(f"y_channel needs RGB images, got {x.shape[1]} channels")
        # the BT.601 conversion adds 16/255 of a [0, 1] range: convert in that range (an offset in other units
        # would shift SSIM's luminance term)
        x = rgb_to_y_bt601(x / data_range) * data_range
    return x


def _pair(pred: torch.Tensor, target: torch.Tensor, crop_border: int, y_channel: bool, data_range: float = 1.0):
    if pred.shape != target.shape:
        raise InputError(f"prediction {tuple(pred.shape)} and reference {tuple(target.shape)} differ in size")
    return (_prepare(pred, crop_border, y_channel, data_range),
            _prepare(target.to(pred.device), crop_border, y_channel, data_range))


def psnr(
    pred: torch.Tensor,
    target: torch.Tensor,
    data_range: float = 1.0,
    crop_border: int = 0,
    y_channel: bool = False,
) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, (B,) float64 (float32 on MPS); ``inf`` where pred == target.

    pred, target: (B, C, H, W) in [0, data_range].
    """
    if pred.shape != target.shape:
        raise InputError(f"prediction {tuple(pred.shape)} and reference {tuple(target.shape)} differ in size")
    mse = []
    for i in _chunks(pred):  # cache-sized chunks: the float64 copies of a whole batch would not fit
        x, y = _pair(pred[i], target[i], crop_border, y_channel, data_range)
        mse.append((x - y).square_().flatten(1).mean(dim=1))
    return 10.0 * torch.log10(data_range**2 / torch.cat(mse))  # mse == 0 gives +inf, as skimage


def gaussian_kernel1d(size: int = _WIN, sigma: float = _SIGMA, dtype: torch.dtype = torch.float64,
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """Normalised 1-D Gaussian of odd ``size``; its outer product is MATLAB's ``fspecial('gaussian')``."""
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2.0 * sigma**2))
    return (g / g.sum()).to(dtype=dtype, device=device)


def _filter_valid(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' correlation of every channel of (B, C, H, W) with the 1-D kernel k.

    Shifted-slice multiply-adds rather than conv2d: CPU conv2d has no fast float64 path, and this is
    exact, device-agnostic and a few times faster for the short kernels used here.
    """
    n = k.numel()
    taps = [float(t) for t in k.detach().cpu().double()]
    w = x.shape[-1] - n + 1
    z = x[..., :w] * taps[0]
    for i in range(1, n):
        z.add_(x[..., i : i + w], alpha=taps[i])
    h = x.shape[-2] - n + 1
    y = z[..., :h, :] * taps[0]
    for i in range(1, n):
        y.add_(z[..., i : i + h, :], alpha=taps[i])
    return y


def _ssim_cs(x: torch.Tensor, y: torch.Tensor, data_range: float, k: torch.Tensor):
    """Per-image, per-channel means of the SSIM map and of the contrast-structure map, each (B, C)."""
    n = k.numel()
    if min(x.shape[-2:]) < n:
        raise InputError(f"SSIM needs images of at least {n}x{n} pixels, got {x.shape[-2]}x{x.shape[-1]}")
    # a few images at a time: the 5 filtered statistics of a whole batch would not stay in cache and
    # the batch gains nothing on a CPU (on a GPU one chunk usually holds the whole batch)
    outs = [_ssim_cs_chunk(x[i], y[i], data_range, k) for i in _chunks(x)]
    return torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])


def _ssim_cs_chunk(x: torch.Tensor, y: torch.Tensor, data_range: float, k: torch.Tensor):
    c = x.shape[1]
    stats = _filter_valid(torch.cat([x, y, x * x, y * y, x * y], dim=1), k)
    mu_x, mu_y, e_xx, e_yy, e_xy = stats.split(c, dim=1)
    c1, c2 = (_K1 * data_range) ** 2, (_K2 * data_range) ** 2
    mu_xy = mu_x * mu_y
    mu_xx = mu_x.square_()
    mu_yy = mu_y.square_()
    # cs = (2 cov + C2) / (var_x + var_y + C2), in place on the filtered statistics
    num = e_xy.sub_(mu_xy).mul_(2).add_(c2)
    den = e_xx.sub_(mu_xx).add_(e_yy.sub_(mu_yy)).add_(c2)
    cs_map = num.div_(den)
    lum = mu_xy.mul_(2).add_(c1).div_(mu_xx.add_(mu_yy).add_(c1))
    ssim_map = lum.mul_(cs_map)
    return ssim_map.mean(dim=(-2, -1)), cs_map.mean(dim=(-2, -1))


def ssim(
    pred: torch.Tensor,
    target: torch.Tensor,
    data_range: float = 1.0,
    crop_border: int = 0,
    y_channel: bool = False,
) -> torch.Tensor:
    """Mean SSIM per image, (B,) float64 (float32 on MPS), channels averaged.

    pred, target: (B, C, H, W) in [0, data_range], at least 11x11 after cropping. See the module
    docstring for the exact convention (Gaussian 11x11 sigma 1.5, valid window, population variances).
    """
    x, y = _pair(pred, target, crop_border, y_channel, data_range)
    k = gaussian_kernel1d(dtype=x.dtype, device=x.device)
    s, _ = _ssim_cs(x, y, data_range, k)
    return s.mean(dim=1)


def _downsample2(x: torch.Tensor) -> torch.Tensor:
    # msssim.m: imfilter(ones(2)/4, 'symmetric', 'same') then (1:2:end); for an odd size the missing
    # neighbour of the last row/column is its mirror, i.e. itself
    h, w = x.shape[-2:]
    if h % 2 or w % 2:
        x = F.pad(x, (0, w % 2, 0, h % 2), mode="replicate")
    return F.avg_pool2d(x, 2)


def ms_ssim(
    pred: torch.Tensor,
    target: torch.Tensor,
    data_range: float = 1.0,
    crop_border: int = 0,
    y_channel: bool = False,
    weights: tuple[float, ...] = MS_SSIM_WEIGHTS,
    method: str = "product",
) -> torch.Tensor:
    """Multi-scale SSIM per image, (B,) float64 (float32 on MPS), channels averaged.

    pred, target: (B, C, H, W) in [0, data_range]; the coarsest scale must still hold the 11x11 window,
    so min(H, W) >= 11 * 2**(len(weights) - 1) (176 pixels for 5 scales). ``method``: "product" (the
    paper's weighted product of powers, msssim.m's default) or "wtd_sum" (msssim.m's weighted sum with
    the weights normalised to sum to 1; see the module docstring).
    """
    if method not in MS_SSIM_METHODS:
        raise InputError(f"MS-SSIM method must be one of {', '.join(MS_SSIM_METHODS)}, got {method!r}")
    x, y = _pair(pred, target, crop_border, y_channel, data_range)
    levels = len(weights)
    need = _WIN * 2 ** (levels - 1)
    if min(x.shape[-2:]) < need:
        raise InputError(f"MS-SSIM with {levels} scales needs images of at least {need}x{need} pixels, "
                         f"got {x.shape[-2]}x{x.shape[-1]}")
    k = gaussian_kernel1d(dtype=x.dtype, device=x.device)
    product = method == "product"
    total = math.fsum(weights)
    out = torch.full(x.shape[:2], 1.0 if product else 0.0, dtype=x.dtype, device=x.device)
    for i, w in enumerate(weights):
        s, cs = _ssim_cs(x, y, data_range, k)
        term = s if i == levels - 1 else cs
        out = out * term.clamp(min=0) ** w if product else out + term * (w / total)
        if i < levels - 1:
            x, y = _downsample2(x), _downsample2(y)
    return out.mean(dim=1)


class _FullRef(Metric):
    needs_reference = True
    lower_better = False

    def __init__(self, y_channel: bool = False, crop_border: int = 0, data_range: float = 1.0,
                 gray: bool = False) -> None:
        super().__init__()
        if crop_border < 0:
            raise InputError(f"crop_border must be >= 0, got {crop_border}")
        if gray and y_channel:
            raise InputError("choose one of gray (MATLAB rgb2gray) and y_channel (BT.601 Y)")
        self.y_channel = bool(y_channel)
        self.crop_border = int(crop_border)
        self.data_range = float(data_range)
        self.gray = bool(gray)

    def _gray(self, x: torch.Tensor) -> torch.Tensor:
        """MATLAB ``rgb2gray`` of 8-bit data (the official IQA convention) when ``gray``, else ``x``."""
        if not self.gray:
            return x
        return rgb_to_gray_matlab(x / self.data_range) * self.data_range

    def extra_repr(self) -> str:
        return (f"y_channel={self.y_channel}, gray={self.gray}, crop_border={self.crop_border}, "
                f"data_range={self.data_range}")


class PSNR(_FullRef):
    """PSNR in dB (higher is better); ``forward(pred, target) -> (B,)``."""

    name = "psnr"
    score_range = (0.0, math.inf)

    def forward(self, pred: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        self.check_inputs(pred, target)
        return psnr(self._gray(pred), self._gray(target), self.data_range, self.crop_border, self.y_channel)


class SSIM(_FullRef):
    """SSIM (Gaussian 11x11, sigma 1.5, valid window; higher is better); ``forward(pred, target) -> (B,)``."""

    name = "ssim"
    score_range = (-1.0, 1.0)

    def forward(self, pred: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        self.check_inputs(pred, target)
        return ssim(self._gray(pred), self._gray(target), self.data_range, self.crop_border, self.y_channel)


class MSSSIM(_FullRef):
    """MS-SSIM (5 scales, 2x2 average pooling; higher is better); ``forward(pred, target) -> (B,)``.

    ``method``: "product" (default, the paper's pooling) or "wtd_sum" (msssim.m's weighted sum).
    """

    name = "ms_ssim"
    score_range = (0.0, 1.0)

    def __init__(self, y_channel: bool = False, crop_border: int = 0, data_range: float = 1.0,
                 method: str = "product", gray: bool = False) -> None:
        super().__init__(y_channel, crop_border, data_range, gray)
        if method not in MS_SSIM_METHODS:
            raise InputError(f"MS-SSIM method must be one of {', '.join(MS_SSIM_METHODS)}, got {method!r}")
        self.method = method

    def forward(self, pred: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        self.check_inputs(pred, target)
        return ms_ssim(self._gray(pred), self._gray(target), self.data_range, self.crop_border, self.y_channel,
                       method=self.method)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, method={self.method!r}"
