"""MobileStyleGAN (Belousov 2021) in plain PyTorch, filled from the OpenVINO IR of the ``random-face`` wheel.

MobileStyleGAN is StyleGAN2 (FFHQ, 1024 px) distilled into a smaller generator whose synthesis network works
in the Haar-wavelet domain. The modules here follow the exported graph op for op (see ``load_mobilestylegan``
for where every parameter comes from):

* ``MappingNetwork``: z (B, 512) -> pixel norm -> 8 x [linear 512 -> 512, leaky-ReLU(0.2) * sqrt(2)] -> w.
  The stored weights already include StyleGAN2's equalised-lr gains. The IR has no ``w_avg``; the loader
  sets it to the mean of mapping outputs over many seeded z.
* ``SynthesisNetwork``: a learnt constant (512, 4, 4), then
    - ``b4.conv1``: modulated 3x3 convolution (``ModulatedConv``),
    - for R = 8, 16, ..., 512 a block ``bR``:
        ``up``: per-channel modulation then an inverse Haar DWT (``ModulatedIDWT``): C channels at R/2 px
        are read as C/4 groups of (LL, LH, HL, HH) wavelet bands and become C/4 channels at R px;
        ``conv0``, ``conv1``: depthwise-separable modulated 3x3 convolutions (``ModulatedDWConv``:
        modulation, depthwise 3x3, pointwise 1x1),
    - ``b512.torgb``: a modulated 1x1 convolution (``ToWavelets``, no demodulation, + bias) to 12 channels
      = the (LL, LH, HL, HH) bands of R, G, B at 512 px,
    - a final inverse Haar DWT to the RGB image at 1024 px, about [-1, 1] (not clamped).
  Each convolution adds its noise map (strength x map), a bias, and a leaky-ReLU(0.2) (no sqrt(2) gain).
  Demodulation in MobileStyleGAN does not depend on the style (it uses a fixed buffer), so the export
  folded it into the convolution weights; the style gain 1 / sqrt(fan_in) multiplies the affine output.
  Because nothing depends on the sample except the per-channel modulation, W / W+ batches run as plain
  shared-weight convolutions (no grouped per-sample convolutions).

Haar filters: with a = 1/sqrt(2), g0 = (a, a) and g1 = (a, -a) (the 'db1' synthesis filters), the inverse
DWT of bands (LL, LH, HL, HH) gives, at output pixel (2y + p, 2x + q) with s_0 = +1, s_1 = -1:
``0.5 * (LL + s_p LH + s_q HL + s_p s_q HH)`` (LH is filtered vertically with g1, HL horizontally).
The high bands of channel c are channels C + 3c + k (k = 0, 1, 2 for LH, HL, HH) of a (B, 4C, H, W) tensor.

Latent spaces (paper 002, sec. 4.1), same conventions as ``facerestore.nn.stylegan2``
-------------------------------------------------------------------------------------
``SynthesisNetwork.layer_specs`` lists the 23 modulated layers in execution order:
``b4.conv1, b8.up, b8.conv0, b8.conv1, ..., b512.up, b512.conv0, b512.conv1, b512.torgb``; layer l reads
row l of W+ (``w_index = l``, ``num_ws = 23``; no rows are shared).

* W   : (B, 512), every layer uses the same w.
* W+  : (B, 23, 512).
* W++ : list of 23 tensors (B, C_out_l, 512). Output filter o of layer l has its own style vector
  ``s^(o) = A_l(w[l][:, o])`` over the layer's modulated (input) channels:
    - convolutions: output channel o uses ``weight[o, i] * s^(o)_i`` (for the depthwise-separable layers
      this is exact because the per-channel modulation commutes with the depthwise 3x3 convolution:
      the pointwise weight becomes per-sample, per-filter); the fixed demodulation is unchanged;
    - ``up`` layers: output channel o (C_out = C_in / 4) is the inverse DWT of input channels o (LL) and
      C_out + 3o + k (LH, HL, HH), modulated by those four entries of ``s^(o)``;
    - ``torgb``: the 12 wavelet channels, as for convolutions.
  C_out per layer: 512 | 128, 512, 512 (x4 blocks, 8..64 px) | 128, 256, 256 | 64, 128, 128 | 32, 64, 64 | 12
  (6252 latents in all). ``wpp_from_wplus`` expands W / W+ to this layout, ``wpp_from_dense`` reads the
  authors' dense layout ``(B, 23, N, 512)``.

Noise: 15 noise maps (``b4.conv1`` and both convolutions of every block), in that order; the IR stores
``strength * map`` folded into one constant, which the loader splits into ``noise_strength`` (the map's
standard deviation) and a unit-variance ``noise_const`` (exact to float rounding). ``noise_mode='const'``
reproduces the exported network; 'random' draws fresh maps; 'none' drops them.

Lower output resolutions: ``set_resolution(r)`` (or ``resolution=`` of ``SynthesisNetwork.forward`` /
``load_mobilestylegan``) returns, for r = 512, half the LL band of the final wavelet output, which is
exactly the 2x2 box average of the 1024 px image; for r < 512 further 2x2 box averages of that (= the
(1024/r)^2 box average of the full image). The intermediate RGB heads of MobileStyleGAN were pruned from
the export (only the last one feeds the output), so every resolution costs the full network up to 512 px;
only the last inverse DWT is skipped. The gain is in what follows (losses on 512 / 256 px images).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import NoReturn

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facerestore.errors import InputError
from facerestore.nn.openvino_ir import IRGraph, IRLayer, read_ir
from facerestore.nn.stylegan2 import (
    NOISE_MODES,
    GeneratorSampling,
    LatentLayouts,
    StyleLayerSpec,
    modulated_conv2d,
    normalize_2nd_moment,
)

__all__ = [
    "CHANNELS",
    "Generator",
    "MappingNetwork",
    "ModulatedConv",
    "ModulatedDWConv",
    "ModulatedIDWT",
    "SynthesisNetwork",
    "ToWavelets",
    "haar_idwt",
    "load_mobilestylegan",
]

CHANNELS: tuple[int, ...] = (512, 512, 512, 512, 512, 256, 128, 64)  # at 4, 8, ..., 512 px (FFHQ model)
LRELU_SLOPE = 0.2


def haar_idwt(bands: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
    """Inverse Haar DWT: (B, 4C, H, W) in our band layout (module doc) -> (B, C, 2H, 2W).

    Output pixel (2y + p, 2x + q) = 0.5 * (LL + s_p LH + s_q HL + s_p s_q HH), s_0 = 1, s_1 = -1.
    ``scale`` (B, C, 4) multiplies the (LL, LH, HL, HH) bands of each channel first (``ModulatedIDWT``).
    Works on pixel-major (channels-last) data and returns a channels-last tensor.
    """
    n, c4, h, w = bands.shape
    c = c4 // 4
    pix = bands.permute(0, 2, 3, 1)  # (B, H, W, 4C); a view for channels-last input
    ll, high = pix[..., :c], pix[..., c:].reshape(n, h, w, c, 3)
    if scale is not None:
        ll, high = ll * scale[:, None, None, :, 0], high * scale[:, None, None, :, 1:]
    lh, hl, hh = high.unbind(-1)
    top, bottom, right_top, right_bottom = ll + lh, ll - lh, hl + hh, hl - hh  # vertical step, then horizontal
    rows = [torch.stack([top + right_top, top - right_top], dim=3),  # p = 0: (B, H, W, q, C)
            torch.stack([bottom + right_bottom, bottom - right_bottom], dim=3)]  # p = 1
    out = torch.stack(rows, dim=2)  # (B, H, p, W, q, C)
    return out.mul_(0.5).view(n, 2 * h, 2 * w, c).permute(0, 3, 1, 2)


def _pixel_matmul(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """1x1 convolution with per-sample weights (B, O, I) on (B, I, H, W) -> (B, O, H, W), channels-last."""
    n, i, h, w = x.shape
    pix = x.permute(0, 2, 3, 1).reshape(n, h * w, i)  # a view for channels-last input
    out = torch.matmul(pix, weight.transpose(1, 2))  # (B, HW, O)
    return out.view(n, h, w, -1).permute(0, 3, 1, 2)


class StyleAffine(nn.Linear):
    """w (B, w_dim) -> style (B, C); a W++ latent (B, O, w_dim) gives one style per output filter (B, O, C)."""


class _NoiseMixin(nn.Module):
    """Noise map (strength x unit map) added after a convolution, before its bias."""

    resolution: int

    def _init_noise(self, resolution: int) -> None:
        self.resolution = resolution
        self.register_buffer("noise_const", torch.zeros(resolution, resolution))
        self.noise_strength = nn.Parameter(torch.zeros([]))

    def _noise(self, x: torch.Tensor, mode: str, noise: torch.Tensor | None,
               generator: torch.Generator | None) -> torch.Tensor | None:
        if noise is not None:
            n = noise.to(device=x.device, dtype=x.dtype)
        elif mode == "const":
            n = self.noise_const.to(x.dtype)
        elif mode == "random":
            if generator is None:
                raise ValueError("noise_mode='random' needs an explicit torch.Generator")
            r = self.resolution
            n = torch.randn((x.shape[0], 1, r, r), generator=generator, device=generator.device)
            n = n.to(device=x.device, dtype=x.dtype)
        elif mode == "none":
            return None
        else:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {mode!r}")
        return n * self.noise_strength.to(x.dtype)

    def _finish(self, x: torch.Tensor, noise_mode: str, noise: torch.Tensor | None,
                generator: torch.Generator | None, bias: torch.Tensor) -> torch.Tensor:
        n = self._noise(x, noise_mode, noise, generator)
        shift = bias.to(x.dtype).reshape(1, -1, 1, 1)
        if n is not None:  # noise (.., 1, H, W) + bias (1, C, 1, 1), added in one pass
            # built pixel-major like x (channels-last): an add of two tensors in different memory layouts
            # is a strided loop several times slower than the whole convolution layer in bf16
            n = n.reshape(-1, 1, *n.shape[-2:])
            shift = (n.permute(0, 2, 3, 1) + bias.to(x.dtype)).permute(0, 3, 1, 2)
        if x.requires_grad:  # in place on this (permuted) view, autograd would copy the whole tensor back
            return F.leaky_relu(x + shift, LRELU_SLOPE)
        return F.leaky_relu_(x.add_(shift), LRELU_SLOPE)  # x is a fresh tensor: in place saves allocations


def _per_filter_styles(affine: StyleAffine, w: torch.Tensor, gain: float) -> torch.Tensor:
    """Styles for W / W+ (B, w_dim) -> (B, I) or W++ (B, O, w_dim) -> (B, O, I), times ``gain``."""
    return F.linear(w, affine.weight.to(w.dtype), affine.bias.to(w.dtype)) * gain


class ModulatedConv(_NoiseMixin):
    """Modulated k x k convolution (demodulation folded into ``weight``) + noise + bias + leaky-ReLU."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, kernel_size: int = 3):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.affine = StyleAffine(w_dim, in_channels)
        self.weight = nn.Parameter(torch.zeros(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self._init_noise(resolution)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "const", noise: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        styles = _per_filter_styles(self.affine, w.to(x.dtype), self.gain)
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused=styles.ndim == 3)
        return self._finish(x, noise_mode, noise, generator, self.bias)


class ModulatedDWConv(_NoiseMixin):
    """Depthwise-separable modulated 3x3 convolution: modulate, depthwise 3x3, pointwise 1x1 (demodulation
    folded into ``weight_pw``), + noise + bias + leaky-ReLU."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, kernel_size: int = 3):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.affine = StyleAffine(w_dim, in_channels)
        self.weight_dw = nn.Parameter(torch.zeros(in_channels, 1, kernel_size, kernel_size))
        self.weight_pw = nn.Parameter(torch.zeros(out_channels, in_channels))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self._init_noise(resolution)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "const", noise: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        # The per-channel modulation commutes with the depthwise convolution, so it is applied to the columns
        # of the pointwise weight instead: one shared depthwise conv, then per-sample (B, O, I) 1x1 weights.
        # W / W+ styles (B, I) scale every filter alike; W++ styles (B, O, I) give each filter its own.
        styles = _per_filter_styles(self.affine, w.to(x.dtype), self.gain)
        dw = self.weight_dw.to(x.dtype)
        y = F.conv2d(x, dw, padding=dw.shape[-1] // 2, groups=self.in_channels)
        pw = self.weight_pw.to(x.dtype) * (styles.unsqueeze(1) if styles.ndim == 2 else styles)
        return self._finish(_pixel_matmul(y, pw), noise_mode, noise, generator, self.bias)


class ModulatedIDWT(nn.Module):
    """Per-channel modulation (no gain) then inverse Haar DWT: (B, 4C, H, W) -> (B, C, 2H, 2W)."""

    def __init__(self, in_channels: int, w_dim: int):
        super().__init__()
        if in_channels % 4:
            raise ValueError(f"the inverse DWT needs a multiple of 4 channels, got {in_channels}")
        self.in_channels, self.out_channels = in_channels, in_channels // 4
        self.affine = StyleAffine(w_dim, in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        w = w.to(x.dtype)
        c = self.out_channels
        weight, bias = self.affine.weight.to(x.dtype), self.affine.bias.to(x.dtype)
        if w.ndim == 2:  # style (B, 4C) in band layout -> (B, C, 4)
            s = w @ weight.t() + bias
            scale = torch.cat([s[:, :c, None], s[:, c:].reshape(-1, c, 3)], dim=2)
        else:  # W++: output channel o reads entries o (LL) and c + 3o + k (LH, HL, HH) of its own style
            s_low = torch.einsum("bod,od->bo", w, weight[:c]) + bias[:c]
            s_high = torch.einsum("bod,okd->bok", w, weight[c:].reshape(c, 3, -1)) + bias[c:].reshape(c, 3)
            scale = torch.cat([s_low[:, :, None], s_high], dim=2)
        return haar_idwt(x, scale)


class ToWavelets(nn.Module):
    """Modulated 1x1 convolution without demodulation, + bias: features -> 12 wavelet channels (4 bands x RGB)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.gain = 1.0 / math.sqrt(in_channels)
        self.affine = StyleAffine(w_dim, in_channels)
        self.weight = nn.Parameter(torch.zeros(out_channels, in_channels))
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = _per_filter_styles(self.affine, w.to(x.dtype), self.gain)
        weight = self.weight.to(x.dtype)
        x = _pixel_matmul(x, weight * (styles.unsqueeze(1) if styles.ndim == 2 else styles))
        bias = self.bias.to(x.dtype).reshape(1, -1, 1, 1)
        return x + bias if x.requires_grad else x.add_(bias)


class MappingNetwork(nn.Module):
    """z (B, z_dim) -> w (B, w_dim): pixel norm, ``num_layers`` x [linear, leaky-ReLU(0.2) * sqrt(2)]."""

    def __init__(self, z_dim: int = 512, w_dim: int = 512, num_layers: int = 8):
        super().__init__()
        self.z_dim, self.w_dim, self.num_layers = z_dim, w_dim, num_layers
        for i in range(num_layers):
            setattr(self, f"fc{i}", nn.Linear(z_dim if i == 0 else w_dim, w_dim))
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0, update_w_avg: bool | None = None) -> torch.Tensor:
        """(B, z_dim) -> (B, w_dim). ``update_w_avg`` is accepted for interface compatibility (w_avg is fixed)."""
        x = normalize_2nd_moment(z.to(self.fc0.weight.dtype))
        for i in range(self.num_layers):
            x = F.leaky_relu(getattr(self, f"fc{i}")(x), LRELU_SLOPE) * math.sqrt(2.0)
        if truncation_psi != 1:
            x = self.w_avg.to(x.dtype).lerp(x, truncation_psi)
        return x


class SynthesisBlock(nn.Module):
    """One resolution R: ``up`` (modulated inverse DWT from R/2), ``conv0``, ``conv1`` (depthwise-separable);
    the last block also has the wavelet head ``torgb`` (``wavelet_channels`` > 0)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, wavelet_channels: int = 0):
        super().__init__()
        self.resolution = resolution
        self.up = ModulatedIDWT(in_channels, w_dim)
        self.conv0 = ModulatedDWConv(in_channels // 4, out_channels, w_dim, resolution)
        self.conv1 = ModulatedDWConv(out_channels, out_channels, w_dim, resolution)
        if wavelet_channels:
            self.torgb = ToWavelets(out_channels, wavelet_channels, w_dim)


class _Block4(nn.Module):
    def __init__(self, channels: int, w_dim: int):
        super().__init__()
        self.conv1 = ModulatedConv(channels, channels, w_dim, 4)


class SynthesisNetwork(LatentLayouts, nn.Module):
    """W / W+ / W++ latents -> raw image (B, 3, R, R), about [-1, 1]. See the module doc."""

    def __init__(self, w_dim: int = 512, channels: Sequence[int] = CHANNELS, wavelet_channels: int = 12):
        super().__init__()
        if len(channels) < 2:
            raise ValueError("MobileStyleGAN needs channel counts for 4 px and at least one block")
        self.w_dim = w_dim
        self.channels = tuple(int(c) for c in channels)
        self.img_channels = wavelet_channels // 4
        self.block_resolutions = [4 * 2**i for i in range(1, len(self.channels))]
        self.wavelet_resolution = self.block_resolutions[-1]
        self.full_resolution = 2 * self.wavelet_resolution
        self.img_resolution = self.full_resolution
        self.const = nn.Parameter(torch.zeros(self.channels[0], 4, 4))
        self.b4 = _Block4(self.channels[0], w_dim)
        specs = [StyleLayerSpec("b4.conv1", "conv", 0, self.channels[0], self.channels[0], 4)]
        for r, cin, cout in zip(self.block_resolutions, self.channels[:-1], self.channels[1:]):
            head = wavelet_channels if r == self.wavelet_resolution else 0
            setattr(self, f"b{r}", SynthesisBlock(cin, cout, w_dim, r, head))
            specs += [
                StyleLayerSpec(f"b{r}.up", "up", len(specs), cin, cin // 4, r),
                StyleLayerSpec(f"b{r}.conv0", "conv", len(specs) + 1, cin // 4, cout, r),
                StyleLayerSpec(f"b{r}.conv1", "conv", len(specs) + 2, cout, cout, r),
            ]
        last = self.wavelet_resolution
        specs.append(StyleLayerSpec(f"b{last}.torgb", "torgb", len(specs), self.channels[-1], wavelet_channels, last))
        self.layer_specs: tuple[StyleLayerSpec, ...] = tuple(specs)
        self.num_ws = len(specs)
        self.num_conv_layers = sum(s.kind == "conv" for s in specs)

    def const_noises(self) -> list[torch.Tensor]:
        """Copies of the constant (unit-variance) noise maps as (1, 1, H, W) tensors, in conv-layer order."""
        return [m.noise_const.detach().clone()[None, None] for m in self._conv_modules()]

    def _conv_modules(self) -> list[_NoiseMixin]:
        return [self.get_submodule(s.name) for s in self.layer_specs if s.kind == "conv"]  # type: ignore[misc]

    def check_resolution(self, resolution: int) -> int:
        """``resolution`` if it is a power of two in [4, full resolution], else ValueError."""
        r = int(resolution)
        if r < 4 or r > self.full_resolution or r & (r - 1):
            raise ValueError(f"resolution must be a power of two in [4, {self.full_resolution}], got {resolution}")
        return r

    # -- forward -------------------------------------------------------------------------------------

    def wavelets(self, ws, noise_mode: str = "const", noises: Sequence[torch.Tensor | None] | None = None,
                 generator: torch.Generator | None = None,
                 modulate: Callable[[int, torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """The 12-channel wavelet output (B, 12, 512, 512): LL (RGB), then LH, HL, HH of R, G, B as 3 + 3c + k.

        ``modulate(R, x)``, when given, replaces the features x (B, C_R, R, R) that leave each block's ``conv1``
        (R = 8 .. 512) before the next block reads them: the hook of restorers that steer the prior with spatial
        features of an input face (``methods.prior_sft``)."""
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        dtype = self.const.dtype
        latents = iter([w.to(dtype) for w in self._per_layer_latents(ws)])
        if noises is not None and len(noises) != self.num_conv_layers:
            raise ValueError(f"noises must list {self.num_conv_layers} maps (one per conv layer), got {len(noises)}")
        noise_iter = iter(noises if noises is not None else [None] * self.num_conv_layers)
        first = next(latents)
        x = self.const.unsqueeze(0).expand(first.shape[0], -1, -1, -1)
        x = self.b4.conv1(x, first, noise_mode, next(noise_iter), generator)
        for r in self.block_resolutions:
            block: SynthesisBlock = getattr(self, f"b{r}")
            x = block.up(x, next(latents))
            x = block.conv0(x, next(latents), noise_mode, next(noise_iter), generator)
            x = block.conv1(x, next(latents), noise_mode, next(noise_iter), generator)
            if modulate is not None:
                x = modulate(r, x)
        return getattr(self, f"b{self.wavelet_resolution}").torgb(x, next(latents))

    def forward(self, ws, noise_mode: str = "const", noises: Sequence[torch.Tensor | None] | None = None,
                generator: torch.Generator | None = None, fused: bool | None = None,
                resolution: int | None = None,
                modulate: Callable[[int, torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """Synthesise images (B, 3, R, R) from W, W+ or W++ latents; R = ``resolution`` or ``img_resolution``.

        noise_mode: 'const' (stored maps, the exported network), 'random' (from ``generator``), 'none'.
        noises: optional per-conv-layer maps (see ``noise_shapes``) overriding ``noise_mode``; None entries
        fall back to it. ``fused`` is accepted for interface compatibility (there is nothing to fuse).
        R below the full resolution: box averages of the full image computed from the LL band (module doc).
        """
        r = self.check_resolution(resolution if resolution is not None else self.img_resolution)
        bands = self.wavelets(ws, noise_mode, noises, generator, modulate)
        if r == self.full_resolution:
            return haar_idwt(bands).contiguous()
        img = bands[:, : self.img_channels].contiguous() * 0.5  # = 2x2 box average of the full image
        if r < self.wavelet_resolution:
            img = F.avg_pool2d(img, self.wavelet_resolution // r)
        return img


class Generator(GeneratorSampling, nn.Module):
    """MobileStyleGAN: ``mapping`` (z -> w) + ``synthesis`` (W / W+ / W++ -> raw image about [-1, 1]).

    Same interface as ``facerestore.nn.stylegan2.Generator`` (``mapping.w_avg``, ``w_dim``, ``num_ws``,
    ``img_resolution``, ``sample_w``, ``truncate``); build it with :func:`load_mobilestylegan`.
    """

    def __init__(self, z_dim: int = 512, w_dim: int = 512, mapping_layers: int = 8,
                 channels: Sequence[int] = CHANNELS, resolution: int | None = None):
        super().__init__()
        self.config = {"architecture": "mobilestylegan", "z_dim": z_dim, "w_dim": w_dim,
                       "mapping_layers": mapping_layers, "channels": list(channels)}
        self.z_dim, self.w_dim = z_dim, w_dim
        self.mapping = MappingNetwork(z_dim, w_dim, mapping_layers)
        self.synthesis = SynthesisNetwork(w_dim, channels)
        self.num_ws = self.synthesis.num_ws
        self.img_channels = self.synthesis.img_channels
        self.img_resolution = self.synthesis.img_resolution
        if resolution is not None:
            self.set_resolution(resolution)

    def set_resolution(self, resolution: int) -> Generator:
        """Make ``synthesis`` (and ``img_resolution``) return images at ``resolution`` (module doc); returns self."""
        r = self.synthesis.check_resolution(resolution)
        self.synthesis.img_resolution = self.img_resolution = r
        return self


# --------------------------------------------------------------------------------------------------
# Loading from the OpenVINO IR
# --------------------------------------------------------------------------------------------------

IR_FILES = ("MappingNetwork.xml", "MappingNetwork.bin", "SynthesisNetwork.xml", "SynthesisNetwork.bin")
_W_AVG_CACHE: dict[tuple, torch.Tensor] = {}


class _GraphWalker:
    """Follows the exported graph from named constants; records every Const it reads (``used``)."""

    def __init__(self, graph: IRGraph, where: str):
        self.g, self.where = graph, where
        self.used: set[int] = set()
        self.by_name = {layer.name: layer for layer in graph.layers.values() if layer.type == "Const"}

    def fail(self, msg: str) -> NoReturn:
        raise InputError(f"{self.where}: {msg}")

    def named(self, name: str) -> IRLayer:
        if name not in self.by_name:
            self.fail(f"no constant named {name!r} (not a MobileStyleGAN export?)")
        return self.by_name[name]

    def take(self, layer: IRLayer, shape: tuple[int, ...] | None = None) -> np.ndarray:
        if layer.type != "Const":
            self.fail(f"layer {layer.name!r} should be a constant, is {layer.type}")
        self.used.add(layer.id)
        a = self.g.constants[layer.id]
        if a.dtype != np.float32:
            self.fail(f"constant {layer.name!r} is {a.dtype}, expected float32")
        if shape is not None:
            if a.size != math.prod(shape):
                self.fail(f"constant {layer.name!r} has shape {a.shape}, expected {shape}")
            a = a.reshape(shape)
        return a

    def scalar(self, layer: IRLayer, expected: float, what: str) -> None:
        a = self.take(layer)
        if a.size != 1 or not math.isclose(float(a.reshape(())), expected, rel_tol=1e-6):
            self.fail(f"{what} is {a.ravel()[:4].tolist()}, expected {expected:.8g}")

    def next(self, layer: IRLayer, layer_type: str | None = None) -> IRLayer:
        """The single non-ShapeOf consumer of ``layer`` (of type ``layer_type`` when given)."""
        users = [u for u in self.g.consumers(layer.id) if u.type != "ShapeOf"]
        if len(users) != 1 or (layer_type is not None and users[0].type != layer_type):
            found = ", ".join(f"{u.type} {u.name!r}" for u in users) or "nothing"
            self.fail(f"after {layer.type} {layer.name!r} expected one {layer_type or 'layer'}, found {found}")
        return users[0]

    def const_input(self, layer: IRLayer, name: str | None = None) -> IRLayer:
        consts = [s for s in self.g.input_layers(layer.id) if s.type == "Const"]
        if len(consts) != 1 or (name is not None and consts[0].name != name):
            self.fail(f"{layer.type} {layer.name!r} should read one constant{f' {name!r}' if name else ''}")
        return consts[0]

    def check_all_used(self) -> None:
        left = [layer.name for i, layer in self.g.layers.items()
                if layer.type == "Const" and i not in self.used
                and self.g.constants[i].dtype.kind == "f" and self.g.constants[i].size > 1]
        if left:
            self.fail(f"{len(left)} weight constants are not mapped to the network: {left[:4]}")


def _mapping_state(g: IRGraph, where: str) -> dict[str, np.ndarray]:
    walk = _GraphWalker(g, where)
    state: dict[str, np.ndarray] = {}
    for i, mm in enumerate(g.of_type("MatMul")):
        if mm.data.get("transpose_b") != "true":
            walk.fail(f"MatMul {mm.name!r} is not x @ W^T")
        weight = walk.take(walk.const_input(mm))
        add = walk.next(mm, "Add")
        src = next(s for s in g.input_layers(add.id) if s.id != mm.id)
        if src.type == "Reshape":
            src = g.input_layers(src.id)[0]
        state[f"fc{i}.weight"] = weight
        state[f"fc{i}.bias"] = walk.take(src).reshape(-1)
        act = walk.next(add, "PReLU")
        walk.scalar(walk.const_input(act), LRELU_SLOPE, f"leaky-ReLU slope of {act.name!r}")
        walk.scalar(walk.const_input(walk.next(act, "Multiply")), math.sqrt(2.0), f"gain after {act.name!r}")
    walk.check_all_used()
    return state


def _affine(walk: _GraphWalker, prefix: str, gain: float | None, out: dict, key: str) -> IRLayer:
    """Read ``prefix.modulation.{weight,bias}`` into ``out[key + '.affine.*']``; return the x * style Multiply."""
    weight_layer = walk.named(f"{prefix}.modulation.weight")
    mm = walk.next(weight_layer, "MatMul")
    if mm.data.get("transpose_b") != "true":
        walk.fail(f"MatMul {mm.name!r} is not w @ A^T")
    add = walk.next(mm, "Add")
    out[f"{key}.affine.weight"] = walk.take(weight_layer)
    out[f"{key}.affine.bias"] = walk.take(walk.const_input(add, f"{prefix}.modulation.bias")).reshape(-1)
    node = walk.next(add)
    if node.type == "Reshape":
        node = walk.next(node)
    if gain is not None:
        if node.type != "Multiply":
            walk.fail(f"style gain of {prefix!r} not found")
        walk.scalar(walk.const_input(node), gain, f"style gain of {prefix!r}")
        node = walk.next(node)
    if node.type != "Multiply":
        walk.fail(f"modulation of {prefix!r} not found (found {node.type} {node.name!r})")
    return node


def _noise_bias_act(walk: _GraphWalker, conv: IRLayer, prefix: str, out: dict, key: str) -> None:
    """conv -> Add(noise) -> Add(bias) -> PReLU(0.2); the folded noise is split into strength x unit map."""
    noise_add = walk.next(conv, "Add")
    noise = walk.take(walk.const_input(noise_add)).astype(np.float64)
    h, w = noise.shape[-2:]
    strength = float(noise.std())
    out[f"{key}.noise_strength"] = np.asarray(strength, dtype=np.float32)
    unit = noise / strength if strength > 0 else np.zeros_like(noise)
    out[f"{key}.noise_const"] = unit.reshape(h, w).astype(np.float32)
    bias_add = walk.next(noise_add, "Add")
    out[f"{key}.bias"] = walk.take(walk.const_input(bias_add, f"{prefix}.bias")).reshape(-1)
    act = walk.next(bias_add, "PReLU")
    walk.scalar(walk.const_input(act), LRELU_SLOPE, f"leaky-ReLU slope of {prefix!r}")


def _check_idwt_filters(walk: _GraphWalker) -> int:
    """Every transposed convolution of the graph must be a Haar synthesis filter (a, a) or (a, -a)."""
    a = 1.0 / math.sqrt(2.0)
    count = 0
    for layer in walk.g.of_type("GroupConvolutionBackpropData"):
        f = walk.take(walk.const_input(layer))
        taps = f.reshape(f.shape[0], 2)
        ok = any(np.allclose(taps, np.array(t, dtype=np.float32), atol=1e-6) for t in ((a, a), (a, -a)))
        if not ok or layer.attr_ints("pads_begin") != (0, 0) or sorted(layer.attr_ints("strides")) != [1, 2]:
            walk.fail(f"transposed convolution {layer.name!r} is not a Haar inverse-DWT step")
        count += 1
    return count


def _synthesis_state(g: IRGraph, where: str) -> tuple[list[int], int, dict[str, np.ndarray]]:
    """(channels per resolution, wavelet channels, our state dict) from the synthesis graph."""
    walk = _GraphWalker(g, where)
    const_in = walk.named("m.input.input")
    c0 = int(g.constants[const_in.id].shape[1])
    channels = [c0]
    while f"m.layers.{len(channels) - 1}.up.modulation.weight" in walk.by_name:
        i = len(channels) - 1
        channels.append(int(g.constants[walk.named(f"m.layers.{i}.conv2.bias").id].size))
    nblocks = len(channels) - 1
    if nblocks < 1:
        walk.fail("no synthesis blocks (m.layers.0.up) found")
    out: dict[str, np.ndarray] = {"const": walk.take(const_in, (c0, 4, 4))}

    mod = _affine(walk, "m.conv1.conv", 1.0 / math.sqrt(c0 * 9), out, "b4.conv1")
    conv = walk.next(mod, "Convolution")
    out["b4.conv1.weight"] = walk.take(walk.const_input(conv))
    _noise_bias_act(walk, conv, "m.conv1", out, "b4.conv1")

    for i in range(nblocks):
        r, cin, cout = 8 * 2**i, channels[i], channels[i + 1]
        mod = _affine(walk, f"m.layers.{i}.up", None, out, f"b{r}.up")
        split = walk.next(mod, "VariadicSplit")
        lengths = g.constants[g.source(split.id, split.inputs[2].id)[0]]
        if lengths.tolist() != [cin // 4, 3 * cin // 4]:
            walk.fail(f"inverse DWT of m.layers.{i}.up splits {lengths.tolist()}, expected {[cin // 4, 3 * cin // 4]}")
        for name, key, width in (("conv1", "conv0", cin // 4), ("conv2", "conv1", cout)):
            prefix = f"m.layers.{i}.{name}"
            mod = _affine(walk, f"{prefix}.conv", 1.0 / math.sqrt(width * 9), out, f"b{r}.{key}")
            dw = walk.next(mod, "GroupConvolution")
            out[f"b{r}.{key}.weight_dw"] = walk.take(walk.const_input(dw, f"{prefix}.conv.weight_dw"), (width, 1, 3, 3))
            pw = walk.next(dw, "Convolution")
            out[f"b{r}.{key}.weight_pw"] = walk.take(walk.const_input(pw), (cout, width))
            _noise_bias_act(walk, pw, prefix, out, f"b{r}.{key}")

    prefix = f"m.layers.{nblocks - 1}.to_img"
    last = channels[-1]
    head = f"b{8 * 2 ** (nblocks - 1)}.torgb"
    mod = _affine(walk, f"{prefix}.conv", 1.0 / math.sqrt(last), out, head)
    conv = walk.next(mod, "Convolution")
    weight = walk.take(walk.const_input(conv, f"{prefix}.conv.weight"))
    out[f"{head}.weight"] = weight.reshape(weight.shape[0], last)
    out[f"{head}.bias"] = walk.take(walk.const_input(walk.next(conv, "Add"), f"{prefix}.bias")).reshape(-1)
    expected_idwt = 6 * (nblocks + 1)
    if _check_idwt_filters(walk) != expected_idwt:
        walk.fail(f"expected {expected_idwt} inverse-DWT transposed convolutions")
    walk.check_all_used()
    return channels, int(weight.shape[0]), out


def _fill(module: nn.Module, state: dict[str, np.ndarray], where: str, skip: tuple[str, ...] = ()) -> None:
    """Copy ``state`` into ``module``: every entry of its state dict (but ``skip``) must be there, same shape."""
    own = {k: v for k, v in module.state_dict().items() if k not in skip}
    missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or extra:
        raise InputError(f"{where}: IR does not match the network: missing {missing[:3]}, unexpected {extra[:3]}")
    for k, target in own.items():
        if tuple(state[k].shape) != tuple(target.shape):
            raise InputError(f"{where}: {k} has shape {tuple(state[k].shape)} in the IR, "
                             f"the network expects {tuple(target.shape)}")
    # the IR's arrays are read-only views of its .bin file: one copy each, into the parameters
    module.load_state_dict({k: torch.from_numpy(np.array(v, copy=True)) for k, v in state.items()}, strict=False)


def load_mobilestylegan(folder: str | os.PathLike, *, resolution: int | None = None, w_avg_samples: int = 50_000,
                        w_avg_seed: int = 0) -> Generator:
    """MobileStyleGAN from a folder holding ``MappingNetwork.{xml,bin}`` and ``SynthesisNetwork.{xml,bin}``.

    Every parameter comes from the IR (named constants, or unnamed ones reached through the graph from them);
    a missing, unmapped or mis-shaped array fails with one InputError line. ``mapping.w_avg`` (not in the
    IR) is the mean of ``w_avg_samples`` mapping outputs for z drawn with seed ``w_avg_seed``, memoised per
    process. ``resolution`` sets the output size (module doc); default the full 1024 px. Float32, eval mode.
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise InputError(f"MobileStyleGAN folder not found: {folder}")
    missing = [f for f in IR_FILES if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        raise InputError(f"MobileStyleGAN folder {folder} lacks {', '.join(missing)}")
    mapping_xml, synthesis_xml = (os.path.join(folder, f) for f in ("MappingNetwork.xml", "SynthesisNetwork.xml"))
    try:
        mapping_state = _mapping_state(read_ir(mapping_xml), os.path.basename(mapping_xml))
        channels, wavelet_channels, synthesis_state = _synthesis_state(read_ir(synthesis_xml), "SynthesisNetwork.xml")
    except (ValueError, TypeError, IndexError) as exc:  # an array of an unexpected size met a reshape or index
        raise InputError(f"MobileStyleGAN folder {folder}: the IR does not have this network's layout ({exc})") \
            from None
    z_dim = int(mapping_state["fc0.weight"].shape[1])
    w_dim = int(mapping_state["fc0.weight"].shape[0])
    if wavelet_channels != 12:
        raise InputError(f"SynthesisNetwork.xml: the wavelet head has {wavelet_channels} channels, expected 12 (RGB)")
    G = Generator(z_dim, w_dim, len(mapping_state) // 2, channels)
    _fill(G.mapping, mapping_state, "MappingNetwork.xml", skip=("w_avg",))
    _fill(G.synthesis, synthesis_state, "SynthesisNetwork.xml")
    G.eval().requires_grad_(False)

    st = os.stat(os.path.join(folder, "MappingNetwork.bin"))
    key = (os.path.realpath(folder), st.st_size, st.st_mtime_ns, int(w_avg_samples), int(w_avg_seed))
    if key not in _W_AVG_CACHE:
        _W_AVG_CACHE[key] = G.estimate_w_avg(int(w_avg_samples), torch.Generator().manual_seed(int(w_avg_seed)))
    G.mapping.w_avg.copy_(_W_AVG_CACHE[key])
    if resolution is not None:
        G.set_resolution(resolution)
    return G
