"""Differentiable JPEG (DiffJPEG) whose forward pass is libjpeg's codec, bit for bit.

Gradient chain (float, paper 002 / Lomnitz's DiffJPEG), per image in 0-255 units: RGB -> YCbCr (JFIF full
range) -> chroma subsampling (box average) -> 8x8 DCT-II -> ``cubic_round(c / Q)`` -> ``* Q`` -> IDCT ->
chroma upsampling (bilinear x2, half-pixel centres) -> YCbCr -> RGB -> ``clamp_surrogate``. ``cubic_round``
is exact in the forward pass and has the backward ``(1 - alpha) + 3 alpha (x - round x)^2`` (eq. 15,
alpha = 0.8 as in the authors' code); the decoder's [0, 255] range limit passes the gradient through.

Forward values (``exact=True``, the default): an integer emulation of libjpeg-turbo's baseline codec as
Pillow runs it, i.e. 8-bit serialisation (round half up), ``jccolor`` fixed-point RGB -> YCbCr, ``jcsample``
box downsampling with its alternating rounding bias, the ``islow`` integer FDCT, ``jcdctmgr`` quantisation
(round half away from zero), the ``islow`` integer IDCT with range limiting, ``jdsample`` "fancy" triangle
upsampling and ``jdcolor`` fixed-point YCbCr -> RGB. Edges are padded as libjpeg pads them (last column /
row replicated to whole blocks; chroma padded to whole MCUs horizontally before averaging, to the row
group vertically, then to whole blocks; the decoder upsamples only the ``ceil(H/v) x ceil(W/h)`` valid
chroma samples). The output equals :func:`facerestore.degrade.jpeg.jpeg` exactly (tested on every
subsampling, qualities 1..100 and odd sizes). ``exact=False`` gives the float chain's own forward
(0.5-0.85/255 mean absolute error on natural photos, but up to 2.6/255 when re-compressing a JPEG at a
quality whose tables are multiples of the file's, e.g. FFHQ's q75 files at q50: coefficients then sit on
rounding ties that only libjpeg's integer DCT resolves).

Why not ``kornia.enhance.jpeg_codec_differentiable`` (kornia 0.9): it supports only 4:2:0, downsamples
chroma with an antialiased bilinear resize and upsamples bilinearly without libjpeg's integer rounding,
keeps the cubic rounding polynomial (not the exact rounding) in its forward pass, scales the tables with
a differentiable polynomial floor/clip (off by up to a step from libjpeg's), and cannot take a file's
tables with another subsampling. Its mean absolute error against libjpeg is 0.9-1.9/255 on the astronaut
photo and up to 2.6/255 on FFHQ at qualities 6..95, where ours is 0 (tests/degrade/test_surrogates.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from facerestore.degrade.jpeg import SUBSAMPLING, quality_to_tables, read_quant_tables, read_subsampling
from facerestore.degrade.surrogates import clamp_surrogate, cubic_round
from facerestore.errors import InputError

__all__ = [
    "DiffJPEG",
    "block_dct",
    "block_idct",
    "dct_matrix",
    "diff_jpeg",
    "rgb_to_ycbcr_jfif",
    "ycbcr_to_rgb_jfif",
]

Tables = tuple[torch.Tensor, torch.Tensor]


def dct_matrix(
    n: int = 8, *, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None
) -> torch.Tensor:
    """Orthonormal DCT-II matrix D (n, n): coefficients = D @ block @ D.T (JPEG's FDCT for n = 8)."""
    k = torch.arange(n, dtype=torch.float64)
    d = torch.cos((2.0 * k[None, :] + 1.0) * k[:, None] * math.pi / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d.to(device=device, dtype=dtype)


def _block_basis(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """kron(D, D) (64, 64): the 2-D DCT of a row-major flattened 8x8 block is one matrix product."""
    d = dct_matrix(dtype=dtype, device=device)
    return torch.kron(d, d)


def block_dct(p: torch.Tensor) -> torch.Tensor:
    """8x8 block DCT-II (orthonormal) of (B, C, H, W), H and W multiples of 8 -> (B, C, H/8, W/8, 8, 8)."""
    b, c, h, w = p.shape
    blocks = p.reshape(b, c, h // 8, 8, w // 8, 8).transpose(3, 4).reshape(-1, 64)
    coef = blocks @ _block_basis(p.dtype, p.device).T
    return coef.reshape(b, c, h // 8, w // 8, 8, 8)


def block_idct(coef: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`block_dct`: (B, C, H/8, W/8, 8, 8) -> (B, C, H, W)."""
    b, c, nh, nw = coef.shape[:4]
    blocks = coef.reshape(-1, 64) @ _block_basis(coef.dtype, coef.device)
    return blocks.reshape(b, c, nh, nw, 8, 8).transpose(3, 4).reshape(b, c, nh * 8, nw * 8)


def rgb_to_ycbcr_jfif(x: torch.Tensor) -> torch.Tensor:
    """JFIF (full-range BT.601) RGB -> YCbCr on (B, 3, H, W) in 0-255 units (chroma offset 128)."""
    r, g, b = x.unbind(1)
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = -0.168735892 * r - 0.331264108 * g + 0.5 * b + 128.0
    cr = 0.5 * r - 0.418687589 * g - 0.081312411 * b + 128.0
    return torch.stack((y, cb, cr), 1)


def ycbcr_to_rgb_jfif(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_ycbcr_jfif` (0-255 units)."""
    y, cb, cr = x.unbind(1)
    cb = cb - 128.0
    cr = cr - 128.0
    r = y + 1.402 * cr
    g = y - 0.344136286 * cb - 0.714136286 * cr
    b = y + 1.772 * cb
    return torch.stack((r, g, b), 1)


def _pad_to(p: torch.Tensor, mult_h: int, mult_w: int) -> torch.Tensor:
    h, w = p.shape[-2:]
    ph, pw = -h % mult_h, -w % mult_w
    if ph == 0 and pw == 0:
        return p
    return F.pad(p, (0, pw, 0, ph), mode="replicate")


def _range_limit(p: torch.Tensor) -> torch.Tensor:
    """libjpeg clamps decoded samples to [0, 255]; keep the identity gradient (the surrogate has no clamp here)."""
    return p + (p.clamp(0.0, 255.0) - p).detach()


def _forward_as(grad_source: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``value`` in the forward pass, the gradient of ``grad_source`` in the backward pass."""
    return grad_source + (value.to(grad_source.dtype) - grad_source).detach()


def _codec_plane(p: torch.Tensor, table: torch.Tensor, alpha: float) -> torch.Tensor:
    """Float codec of padded planes (B, C, H8, W8) with per-sample tables (B, 8, 8); returns decoded samples."""
    coef = block_dct(p - 128.0)
    t = table[:, None, None, None]
    coef = cubic_round(coef / t, alpha) * t
    return _range_limit(block_idct(coef) + 128.0)


def _float_codec(
    x: torch.Tensor, luma: torch.Tensor, chroma: torch.Tensor, hf: int, vf: int, alpha: float
) -> torch.Tensor:
    """The differentiable chain in floating point: (B, 3, H, W) in [0, 1] -> decoded RGB in 0-255 units."""
    _, _, h, w = x.shape
    ycc = rgb_to_ycbcr_jfif(x * 255.0)
    y = _codec_plane(_pad_to(ycc[:, :1], 8, 8), luma, alpha)[..., :h, :w]
    # libjpeg pads the full-resolution chroma to whole MCUs horizontally and to the row group vertically,
    # averages hf x vf boxes, then pads the subsampled plane to whole blocks.
    c = _pad_to(ycc[:, 1:], vf, 8 * hf)
    if (hf, vf) != (1, 1):
        c = F.avg_pool2d(c, (vf, hf))
    c = _codec_plane(_pad_to(c, 8, 8), chroma, alpha)[..., : -(-h // vf), : -(-w // hf)]
    if (hf, vf) != (1, 1) and c.shape[-1] <= 2:
        # libjpeg replicates a chroma plane at most 2 samples wide (images up to 4 px wide)
        c = c.repeat_interleave(vf, dim=-2).repeat_interleave(hf, dim=-1)
    elif (hf, vf) != (1, 1):
        # libjpeg's "fancy" upsampling (3/4, 1/4 triangle filter, edges replicated) is bilinear x2 with
        # half-pixel centres.
        c = F.interpolate(c, scale_factor=(float(vf), float(hf)), mode="bilinear", align_corners=False)
    return ycbcr_to_rgb_jfif(torch.cat((y, c[..., :h, :w]), 1))


# ----------------------------------------------------------------------------------------------------
# Integer emulation of libjpeg(-turbo)'s baseline codec with the default "islow" DCT (forward values).

_SCALEBITS = 16  # jccolor.c / jdcolor.c fixed point
_CONST_BITS = 13  # jfdctint.c / jidctint.c fixed point
_PASS1_BITS = 2


def _fix(v: float, bits: int) -> int:
    return int(v * (1 << bits) + 0.5)


_F = {
    name: _fix(v, _CONST_BITS)
    for name, v in {
        "0_298631336": 0.298631336,
        "0_390180644": 0.390180644,
        "0_541196100": 0.541196100,
        "0_765366865": 0.765366865,
        "0_899976223": 0.899976223,
        "1_175875602": 1.175875602,
        "1_501321110": 1.501321110,
        "1_847759065": 1.847759065,
        "1_961570560": 1.961570560,
        "2_053119869": 2.053119869,
        "2_562915447": 2.562915447,
        "3_072711026": 3.072711026,
    }.items()
}


def _descale(v: torch.Tensor, n: int) -> torch.Tensor:
    return (v + (1 << (n - 1))) >> n


def _odd_rotations(t0: torch.Tensor, t1: torch.Tensor, t2: torch.Tensor, t3: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The shared odd part of jfdctint / jidctint (Loeffler-Ligtenberg-Moschytz): inputs in FDCT order tmp4..7."""
    z1, z2, z3, z4 = t0 + t3, t1 + t2, t0 + t2, t1 + t3
    z5 = (z3 + z4) * _F["1_175875602"]
    t0 = t0 * _F["0_298631336"]
    t1 = t1 * _F["2_053119869"]
    t2 = t2 * _F["3_072711026"]
    t3 = t3 * _F["1_501321110"]
    z1 = z1 * -_F["0_899976223"]
    z2 = z2 * -_F["2_562915447"]
    z3 = z3 * -_F["1_961570560"] + z5
    z4 = z4 * -_F["0_390180644"] + z5
    return t0 + z1 + z3, t1 + z2 + z4, t2 + z2 + z3, t3 + z1 + z4


def _fdct_islow_1d(d: torch.Tensor, first: bool) -> torch.Tensor:
    """One pass of jpeg_fdct_islow along the last axis (int64)."""
    d = d.unbind(-1)
    tmp = [d[i] + d[7 - i] for i in range(4)] + [d[3 - i] - d[4 + i] for i in range(4)]  # tmp0..3, tmp4..7
    tmp10, tmp13 = tmp[0] + tmp[3], tmp[0] - tmp[3]
    tmp11, tmp12 = tmp[1] + tmp[2], tmp[1] - tmp[2]
    out = [None] * 8
    shift = _CONST_BITS - _PASS1_BITS if first else _CONST_BITS + _PASS1_BITS
    if first:
        out[0], out[4] = (tmp10 + tmp11) << _PASS1_BITS, (tmp10 - tmp11) << _PASS1_BITS
    else:
        out[0], out[4] = _descale(tmp10 + tmp11, _PASS1_BITS), _descale(tmp10 - tmp11, _PASS1_BITS)
    z1 = (tmp12 + tmp13) * _F["0_541196100"]
    out[2] = _descale(z1 + tmp13 * _F["0_765366865"], shift)
    out[6] = _descale(z1 + tmp12 * -_F["1_847759065"], shift)
    # tmp4 = d3 - d4, tmp5 = d2 - d5, tmp6 = d1 - d6, tmp7 = d0 - d7
    o7, o5, o3, o1 = _odd_rotations(tmp[4], tmp[5], tmp[6], tmp[7])
    out[7], out[5], out[3], out[1] = (_descale(v, shift) for v in (o7, o5, o3, o1))
    return torch.stack(out, -1)


def _fdct_islow(blocks: torch.Tensor) -> torch.Tensor:
    """jpeg_fdct_islow on (..., 8, 8) level-shifted samples: 8x the orthonormal DCT, rounded as libjpeg does."""
    rows = _fdct_islow_1d(blocks, first=True)
    return _fdct_islow_1d(rows.transpose(-1, -2), first=False).transpose(-1, -2)


def _idct_islow_1d(c: torch.Tensor, first: bool) -> torch.Tensor:
    """One pass of jpeg_idct_islow along the last axis (int64)."""
    c = c.unbind(-1)
    z1 = (c[2] + c[6]) * _F["0_541196100"]
    tmp2 = z1 + c[6] * -_F["1_847759065"]
    tmp3 = z1 + c[2] * _F["0_765366865"]
    tmp0 = (c[0] + c[4]) << _CONST_BITS
    tmp1 = (c[0] - c[4]) << _CONST_BITS
    tmp10, tmp13, tmp11, tmp12 = tmp0 + tmp3, tmp0 - tmp3, tmp1 + tmp2, tmp1 - tmp2
    o0, o1, o2, o3 = _odd_rotations(c[7], c[5], c[3], c[1])
    shift = _CONST_BITS - _PASS1_BITS if first else _CONST_BITS + _PASS1_BITS + 3
    out = [tmp10 + o3, tmp11 + o2, tmp12 + o1, tmp13 + o0, tmp13 - o0, tmp12 - o1, tmp11 - o2, tmp10 - o3]
    return torch.stack([_descale(v, shift) for v in out], -1)


def _idct_islow(coef: torch.Tensor) -> torch.Tensor:
    """jpeg_idct_islow on dequantised (..., 8, 8) coefficients: level-shifted samples (before range limiting)."""
    cols = _idct_islow_1d(coef.transpose(-1, -2), first=True).transpose(-1, -2)
    return _idct_islow_1d(cols, first=False)


def _int_pad(p: torch.Tensor, mult_h: int, mult_w: int) -> torch.Tensor:
    return _pad_to(p.to(torch.float64), mult_h, mult_w).to(torch.int64)


def _int_codec_plane(p: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Integer codec of padded planes (B, C, H8, W8) int64 with tables (B, 8, 8) int64 -> samples 0..255."""
    b, c, h, w = p.shape
    blocks = p.reshape(b, c, h // 8, 8, w // 8, 8).transpose(3, 4) - 128
    coef = _fdct_islow(blocks)  # 8x the DCT
    div = (table * 8)[:, None, None, None]
    # jcdctmgr.c quantize(): round half away from zero of coef / (8 Q) (exact reciprocal division).
    k = torch.sign(coef) * ((coef.abs() + div // 2) // div)
    samples = _idct_islow(k * table[:, None, None, None]) + 128
    return samples.clamp(0, 255).transpose(3, 4).reshape(b, c, h, w)


def _int_downsample(c: torch.Tensor, hf: int, vf: int) -> torch.Tensor:
    """jcsample.c h2v1 / h2v2 box averaging with the alternating rounding bias."""
    b, n, h, w = c.shape
    s = c.reshape(b, n, h // vf, vf, w // hf, hf).sum((3, 5))
    bias = torch.tensor((0, 1) if vf == 1 else (1, 2), device=c.device).repeat((s.shape[-1] + 1) // 2)
    return (s + bias[: s.shape[-1]]) // (hf * vf)


def _int_upsample(c: torch.Tensor, hf: int, vf: int) -> torch.Tensor:
    """jdsample.c h2v1 / h2v2 fancy upsampling (triangle filter, integer rounding with alternating bias); a
    plane at most 2 samples wide is replicated instead, as libjpeg does (``downsampled_width > 2`` gates fancy)."""
    if c.shape[-1] <= 2:
        return c.repeat_interleave(vf, dim=-2).repeat_interleave(hf, dim=-1)
    if vf == 2:
        near = c.repeat_interleave(2, dim=-2)
        up = F.pad(c, (0, 0, 1, 1), mode="replicate")  # rows above / below, edges replicated
        far = torch.stack((up[..., :-2, :], up[..., 2:, :]), -2).flatten(-3, -2)
        c = 3 * near + far  # column sums, x4
    cp = F.pad(c, (1, 1, 0, 0), mode="replicate")
    near = c.repeat_interleave(2, dim=-1)
    far = torch.stack((cp[..., :-2], cp[..., 2:]), -1).flatten(-2)
    total = 3 * near + far
    scale, bias = (16, (8, 7)) if vf == 2 else (4, (1, 2))
    b = torch.tensor(bias, device=c.device).repeat(total.shape[-1] // 2)
    return (total + b) // scale


def _libjpeg_codec(x: torch.Tensor, luma: torch.Tensor, chroma: torch.Tensor, hf: int, vf: int) -> torch.Tensor:
    """Bit-level emulation of libjpeg-turbo's baseline encode + decode (islow DCT, fancy upsampling).

    x (B, 3, H, W) in [0, 1] is first serialised to 8 bits (round half up); returns int64 RGB 0..255.
    """
    _, _, h, w = x.shape
    rgb = (x.detach().to(torch.float64) * 255.0 + 0.5).floor().clamp(0, 255).to(torch.int64)
    r, g, b = rgb.unbind(1)
    one_half, offset = 1 << (_SCALEBITS - 1), 128 << _SCALEBITS

    def fx(v: float) -> int:
        return _fix(v, _SCALEBITS)

    # jccolor.c rgb_ycc_convert (Cb/Cr round with 0.5 - epsilon).
    y = (fx(0.29900) * r + fx(0.58700) * g + fx(0.11400) * b + one_half) >> _SCALEBITS
    cb = (-fx(0.16874) * r - fx(0.33126) * g + fx(0.5) * b + offset + one_half - 1) >> _SCALEBITS
    cr = (fx(0.5) * r - fx(0.41869) * g - fx(0.08131) * b + offset + one_half - 1) >> _SCALEBITS

    y = _int_codec_plane(_int_pad(y[:, None], 8, 8), luma)[..., :h, :w]
    c = _int_pad(torch.stack((cb, cr), 1), vf, 8 * hf)
    if (hf, vf) != (1, 1):
        c = _int_downsample(c, hf, vf)
    c = _int_codec_plane(_int_pad(c, 8, 8), chroma)[..., : -(-h // vf), : -(-w // hf)]
    if (hf, vf) != (1, 1):
        c = _int_upsample(c, hf, vf)
    y, cb, cr = y[:, 0], c[:, 0, :h, :w] - 128, c[:, 1, :h, :w] - 128

    # jdcolor.c ycc_rgb_convert tables.
    red = y + ((fx(1.40200) * cr + one_half) >> _SCALEBITS)
    green = y + ((-fx(0.34414) * cb + one_half - fx(0.71414) * cr) >> _SCALEBITS)
    blue = y + ((fx(1.77200) * cb + one_half) >> _SCALEBITS)
    return torch.stack((red, green, blue), 1).clamp(0, 255)


def _as_tables(
    quality: int | Sequence[int] | torch.Tensor | None,
    tables: Tables | None,
    batch: int,
    dtype: torch.dtype,
    device: torch.device,
) -> Tables:
    if (quality is None) == (tables is None):
        raise InputError("give exactly one of quality and tables")
    if quality is not None:
        qs = torch.as_tensor(quality).reshape(-1).tolist()
        pairs = [quality_to_tables(q) for q in qs]
        luma = torch.stack([lu for lu, _ in pairs])
        chroma = torch.stack([ch for _, ch in pairs])
    else:
        luma, chroma = (torch.as_tensor(t) for t in tables)
    out = []
    for t in (luma, chroma):
        t = t.to(device=device, dtype=dtype)
        if t.ndim == 2:
            t = t[None]
        if t.shape[-2:] != (8, 8) or t.ndim != 3 or t.shape[0] not in (1, batch):
            raise InputError(f"quantisation tables must be (8, 8) or ({batch}, 8, 8), got {tuple(t.shape)}")
        if not bool((t > 0).all()):
            raise InputError("quantisation table entries must be positive")
        out.append(t.expand(batch, 8, 8))
    return out[0], out[1]


def diff_jpeg(
    x: torch.Tensor,
    quality: int | Sequence[int] | torch.Tensor | None = None,
    *,
    tables: Tables | None = None,
    subsampling: str = "4:2:0",
    alpha: float = 0.8,
    exact: bool = True,
) -> torch.Tensor:
    """Differentiable JPEG round trip of (B, 3, H, W) images in [0, 1]; any size, device and float dtype.

    Give ``quality`` (1..100, one or one per sample; libjpeg's tables) or ``tables`` = (luma, chroma),
    each (8, 8) or (B, 8, 8) in natural order (e.g. :func:`facerestore.degrade.jpeg.read_quant_tables`).
    ``subsampling``: "4:4:4", "4:2:2" or "4:2:0". ``exact=True``: the forward values are those of
    libjpeg's integer codec on the 8-bit image (the gradient is always the float chain's);
    ``exact=False``: float forward as the authors' DiffJPEG. Output: same shape and dtype, in [0, 1].
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 3 or not x.is_floating_point():
        raise InputError(f"expected a float (B, 3, H, W) tensor, got {getattr(x, 'shape', type(x))}")
    if subsampling not in SUBSAMPLING:
        raise InputError(f"subsampling must be one of {', '.join(SUBSAMPLING)}, got {subsampling!r}")
    hf, vf = SUBSAMPLING[subsampling][1]
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    luma, chroma = _as_tables(quality, tables, x.shape[0], work, x.device)

    rgb = _float_codec(x.to(work), luma, chroma, hf, vf, alpha)
    if exact:
        with torch.no_grad():
            if not bool((luma == luma.round()).all() and (chroma == chroma.round()).all()):
                raise InputError("exact=True needs integer quantisation tables")
            rgb_int = _libjpeg_codec(x, luma.to(torch.int64), chroma.to(torch.int64), hf, vf)
        rgb = _forward_as(rgb, rgb_int)
    return clamp_surrogate(rgb / 255.0).to(x.dtype)


class DiffJPEG(nn.Module):
    """Module form of :func:`diff_jpeg` with fixed tables (buffers) and subsampling.

    ``DiffJPEG(quality=12)``, ``DiffJPEG(tables=(luma, chroma), subsampling="4:2:2")``, or
    ``DiffJPEG.from_bytes(jpeg_file_bytes)`` to use a file's own tables and subsampling (paper 002).
    Per-sample qualities / (N, 8, 8) tables need batches of N.
    """

    luma_table: torch.Tensor
    chroma_table: torch.Tensor

    def __init__(
        self,
        quality: int | Sequence[int] | torch.Tensor | None = None,
        *,
        tables: Tables | None = None,
        subsampling: str = "4:2:0",
        alpha: float = 0.8,
        exact: bool = True,
    ) -> None:
        super().__init__()
        if subsampling not in SUBSAMPLING:
            raise InputError(f"subsampling must be one of {', '.join(SUBSAMPLING)}, got {subsampling!r}")
        if not 0.0 <= float(alpha) <= 1.0:
            raise InputError(f"alpha must be in [0, 1], got {alpha}")
        if tables is None:
            n = 1 if quality is None else torch.as_tensor(quality).numel()
        else:
            n = max(torch.as_tensor(t).shape[0] if torch.as_tensor(t).ndim == 3 else 1 for t in tables)
        luma, chroma = _as_tables(quality, tables, n, torch.float64, "cpu")
        integral = bool((luma == luma.round()).all() and (chroma == chroma.round()).all())
        # Integer buffers survive module.half() / .to(dtype) unchanged.
        store = torch.int64 if integral else torch.float64
        self.register_buffer("luma_table", luma.to(store).clone())
        self.register_buffer("chroma_table", chroma.to(store).clone())
        self.subsampling = subsampling
        self.alpha = float(alpha)
        self.exact = bool(exact)

    @classmethod
    def from_bytes(cls, data: bytes, *, alpha: float = 0.8, exact: bool = True) -> DiffJPEG:
        """Surrogate of the codec that produced ``data``: its quantisation tables and chroma subsampling."""
        luma, chroma = read_quant_tables(data)
        subsampling = read_subsampling(data)
        if chroma is None or subsampling not in SUBSAMPLING:
            raise InputError(f"only 3-component 4:4:4 / 4:2:2 / 4:2:0 JPEGs are supported, got {subsampling}")
        return cls(tables=(luma, chroma), subsampling=subsampling, alpha=alpha, exact=exact)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return diff_jpeg(
            x,
            tables=(self.luma_table, self.chroma_table),
            subsampling=self.subsampling,
            alpha=self.alpha,
            exact=self.exact,
        )

    def extra_repr(self) -> str:
        return f"subsampling={self.subsampling!r}, alpha={self.alpha}, exact={self.exact}"
