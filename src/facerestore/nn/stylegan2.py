"""StyleGAN2 (config-f, "skip" generator, "resnet" discriminator) in plain PyTorch, no custom CUDA ops.

The generator follows the StyleGAN2 / StyleGAN2-ADA definition: a mapping network (pixel-norm of z,
``mapping_layers`` equalised-lr FC layers with leaky-ReLU and lr multiplier 0.01, running ``w_avg`` for
truncation) and a synthesis network of blocks at 4, 8, ..., ``img_resolution`` pixels, each made of
modulated 3x3 convolutions (weight demodulation, per-layer noise, bias + leaky-ReLU * sqrt(2)) and a
modulated 1x1 toRGB layer whose outputs are summed across resolutions (FIR-upsampled skip connections).
Resampling uses the [1, 3, 3, 1] FIR filter with the padding of NVIDIA's ``upfirdn2d`` / ``conv2d_resample``.
All weights use the equalised learning rate (stored ~N(0, 1), scaled at run time), so state dicts hold the
same numbers as NVIDIA's stylegan2-ada-pytorch ``G_ema`` (parameter names are the same, minus the FIR
filter buffers; see ``stylegan2_io`` for the loaders).

Output range: the synthesis output is StyleGAN's raw image, approximately in [-1, 1] (not clamped);
``to_unit_range`` maps it to the toolkit's [0, 1] convention.

Latent spaces (paper 002, sec. 4.1)
-----------------------------------
The modulated layers are listed, in execution order, by ``SynthesisNetwork.layer_specs``:
``b4.conv1, b4.torgb, b8.conv0, b8.conv1, b8.torgb, ..., bR.conv0, bR.conv1, bR.torgb``
(``2 * log2(R) - 3`` convolutions and ``log2(R) - 1`` toRGB layers). Each spec has a ``w_index``: the
convolutions are numbered 0, 1, 2, ... and a toRGB layer shares the index of the convolution that
follows it (the last toRGB gets the last index), so ``num_ws = 2 * log2(R) - 2`` (18 at 1024 px),
as in StyleGAN2.

* W   : tensor ``(B, w_dim)``; every layer uses the same w.
* W+  : tensor ``(B, num_ws, w_dim)``; layer ``l`` uses ``ws[:, spec_l.w_index]``.
* W++ : list with one tensor per entry of ``layer_specs``; entry ``l`` is ``(B, C_out_l, w_dim)``,
  where ``C_out_l`` is the layer's number of output filters (``img_channels`` = 3 for toRGB layers).
  Output filter ``o`` of layer ``l`` is modulated by its own style ``s^(o) = A_l(w[l][:, o])``, a
  vector over the layer's *input* channels: the effective weight is ``weight[o, i] * s^(o)_i``,
  then demodulated per ``o`` (eq. 7 of paper 002). The whole layer runs as one grouped convolution
  (no loop over filters). ``SynthesisNetwork.wpp_from_wplus`` expands W / W+ into this layout (each
  filter initialised with the w of its layer), so ``G(w)`` is the same in all three forms.
  The authors' code stores W++ as one dense tensor ``(B, num_ws * 512, w_dim)`` in which the toRGB
  layer and the next block's first convolution share the rows of their common w-index (the toRGB
  layer reading the first 3); ``wpp_from_dense`` turns that tensor into per-layer views, which keeps
  this tying when the dense tensor is the optimised variable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "Conv2dLayer",
    "Discriminator",
    "FullyConnectedLayer",
    "Generator",
    "MappingNetwork",
    "MinibatchStdLayer",
    "StyleLayerSpec",
    "SynthesisLayer",
    "SynthesisNetwork",
    "ToRGBLayer",
    "bias_act",
    "conv2d_resample",
    "downsample2d",
    "fir_filter",
    "latent_dtype",
    "minibatch_stddev",
    "modulated_conv2d",
    "normalize_2nd_moment",
    "render_unit",
    "to_unit_range",
    "upfirdn2d",
    "upsample2d",
]

LRELU_GAIN = math.sqrt(2.0)
NOISE_MODES = ("const", "random", "none")


# --------------------------------------------------------------------------------------------------
# Pure functions
# --------------------------------------------------------------------------------------------------


def fir_filter(taps: Sequence[float] = (1, 3, 3, 1), dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """1-D FIR filter normalised to unit sum; used separably (its outer product is NVIDIA's 2-D filter)."""
    f = torch.as_tensor(taps, dtype=torch.float64)
    return (f / f.sum()).to(dtype)


def to_unit_range(img: torch.Tensor) -> torch.Tensor:
    """Map StyleGAN's raw output (about [-1, 1]) to [0, 1] without clamping (keeps gradients)."""
    return (img + 1.0) * 0.5


def latent_dtype(G: nn.Module) -> torch.dtype:
    """The dtype latents are optimised in for generator ``G``: float64 for a float64 generator, else float32, also
    for a bf16 / fp16 one (its synthesis casts them itself): optimisers' small steps are below bf16's resolution."""
    return torch.float64 if G.mapping.w_avg.dtype == torch.float64 else torch.float32


def render_unit(G: nn.Module, latents: Any, *, noises: Any = None, resolution: int | None = None) -> torch.Tensor:
    """G's image of ``latents`` (W / W+ / W++, 'const' noise unless ``noises``) in [0, 1] and in
    :func:`latent_dtype` (float32 from a bf16 generator: losses and optimisers stay in full precision); at
    ``resolution`` when given (generators that render lower resolutions, e.g. MobileStyleGAN's box averages)."""
    extra = {} if resolution is None else {"resolution": resolution}
    return to_unit_range(G.synthesis(latents, noise_mode="const", noises=noises, **extra).to(latent_dtype(G)))


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Pixel norm: x / sqrt(mean(x^2) + eps) along ``dim``."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def bias_act(
    x: torch.Tensor,
    b: torch.Tensor | None = None,
    act: str = "linear",
    *,
    alpha: float = 0.2,
    gain: float | None = None,
    clamp: float | None = None,
    dim: int = 1,
) -> torch.Tensor:
    """Add bias ``b`` along ``dim``, apply ``act`` ('linear' | 'lrelu' | 'relu'), scale by ``gain``, clamp.

    ``gain`` defaults to sqrt(2) for 'lrelu' / 'relu' and 1 for 'linear' (He-init gain, as in StyleGAN2);
    ``clamp`` bounds the result to [-clamp, clamp].
    """
    if b is not None:
        shape = [1] * x.ndim
        shape[dim] = -1
        x = x + b.to(x.dtype).reshape(shape)
    if act == "lrelu":
        x = F.leaky_relu(x, alpha)
    elif act == "relu":
        x = F.relu(x)
    elif act != "linear":
        raise ValueError(f"unknown activation {act!r}")
    if gain is None:
        gain = 1.0 if act == "linear" else LRELU_GAIN
    if gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: int = 1,
    down: int = 1,
    padding: int | Sequence[int] = 0,
    gain: float = 1.0,
) -> torch.Tensor:
    """Upsample (zero insertion), pad, FIR-filter (true convolution), downsample: NVIDIA's ``upfirdn2d``.

    x: (B, C, H, W). f: 1-D taps (applied separably) or 2-D (kh, kw) filter, or None (no filtering).
    padding: int or (x0, x1, y0, y1) in pixels of the upsampled image; negative values crop.
    gain: overall signal gain (``up**2`` keeps the mean when upsampling).
    Output: (B, C, (H*up + y0 + y1 - kh + 1) // down rounded up, same for W).
    """
    if isinstance(padding, int):
        padding = (padding,) * 4
    px0, px1, py0, py1 = (int(p) for p in padding)
    b, c, h, w = x.shape
    if up > 1:
        x = x.reshape(b, c, h, 1, w, 1)
        x = F.pad(x, (0, up - 1, 0, 0, 0, up - 1))
        x = x.reshape(b, c, h * up, w * up)
    x = F.pad(x, (max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)))
    x = x[:, :, max(-py0, 0) : x.shape[2] - max(-py1, 0), max(-px0, 0) : x.shape[3] - max(-px1, 0)]
    if f is None:
        if gain != 1:
            x = x * gain
        return x[:, :, ::down, ::down] if down > 1 else x
    f = f.to(device=x.device, dtype=x.dtype)
    if f.ndim == 1:
        # Separable: the 2-D filter is outer(f, f); each axis carries sqrt(gain). Flip = convolution.
        k = (f.flip(0) * math.sqrt(gain)).reshape(1, 1, 1, -1).repeat(c, 1, 1, 1)
        x = F.conv2d(x, k, stride=(1, down), groups=c)
        x = F.conv2d(x, k.transpose(2, 3), stride=(down, 1), groups=c)
        return x
    k = (f.flip([0, 1]) * gain)[None, None].repeat(c, 1, 1, 1)
    return F.conv2d(x, k, stride=down, groups=c)


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2) -> torch.Tensor:
    """FIR upsampling by ``up`` keeping the signal level: (B, C, H, W) -> (B, C, H*up, W*up)."""
    fw = f.shape[-1]
    p0 = (fw + up - 1) // 2
    p1 = (fw - up) // 2
    return upfirdn2d(x, f, up=up, padding=(p0, p1, p0, p1), gain=up * up)


def downsample2d(x: torch.Tensor, f: torch.Tensor, down: int = 2) -> torch.Tensor:
    """FIR downsampling by ``down``: (B, C, H, W) -> (B, C, H/down, W/down)."""
    fw = f.shape[-1]
    p0 = (fw - down + 1) // 2
    p1 = (fw - down) // 2
    return upfirdn2d(x, f, down=down, padding=(p0, p1, p0, p1))


def conv2d_resample(
    x: torch.Tensor,
    w: torch.Tensor,
    f: torch.Tensor | None = None,
    up: int = 1,
    down: int = 1,
    padding: int = 0,
    groups: int = 1,
) -> torch.Tensor:
    """Convolution (correlation, like ``F.conv2d``) with optional FIR up- or downsampling.

    Same result as NVIDIA's ``conv2d_resample`` with ``flip_weight=(up == 1)`` (the call made by their
    layers): upsampling is a stride-``up`` transposed convolution with the unflipped weight followed by
    the FIR filter (gain ``up**2``); downsampling filters first, then runs a strided convolution.
    ``padding`` is the usual 'same' padding of the kernel (k // 2) in the upsampled / input grid.
    """
    out_ch, in_per_group, kh, kw = w.shape
    if up > 1 and down > 1:
        raise ValueError("conv2d_resample: up- and downsampling at once is not supported")
    if up > 1:
        fw = f.shape[-1] if f is not None else 1
        p0 = padding + (fw + up - 1) // 2 - (kw - 1)
        p1 = padding + (fw - up) // 2 - (kw - up)
        # crop inside the transposed convolution only what both sides would crop (NVIDIA's max(min(-p0, -p1), 0));
        # a side that pads keeps every pixel, the other crops in upfirdn2d (negative padding)
        pt = max(min(-p0, -p1), 0)
        if groups == 1:
            wt = w.transpose(0, 1)
        else:
            wt = w.reshape(groups, out_ch // groups, in_per_group, kh, kw).transpose(1, 2)
            wt = wt.reshape(groups * in_per_group, out_ch // groups, kh, kw)
        x = F.conv_transpose2d(x, wt, stride=up, padding=pt, groups=groups)
        p0, p1 = p0 + pt, p1 + pt
        return upfirdn2d(x, f, padding=(p0, p1, p0, p1), gain=up * up)
    if down > 1:
        fw = f.shape[-1] if f is not None else 1
        p0 = padding + (fw - down + 1) // 2
        p1 = padding + (fw - down) // 2
        x = upfirdn2d(x, f, padding=(p0, p1, p0, p1))
        return F.conv2d(x, w, stride=down, groups=groups)
    return F.conv2d(x, w, padding=padding, groups=groups)


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    *,
    demodulate: bool = True,
    up: int = 1,
    padding: int | None = None,
    resample_filter: torch.Tensor | None = None,
    fused: bool | None = None,
    eps: float = 1e-8,
) -> torch.Tensor:
    """StyleGAN2 modulated convolution.

    x: (B, I, H, W). weight: (O, I, k, k) raw weight (the caller folds any equalised-lr gain into
    ``styles`` when ``demodulate=False``; with demodulation the gain cancels).
    styles: (B, I) -- one style per sample (W / W+), or (B, O, I) -- one style vector per output filter
    (W++): output filter o uses ``weight[o] * styles[:, o]``.
    Demodulation divides each (sample, output filter) weight by its L2 norm (+ eps).
    ``fused``: one grouped convolution with per-sample weights (True) or activation scaling around a
    shared-weight convolution (False; (B, I) styles only). None picks fused for (B, O, I) styles or B == 1.
    Returns (B, O, H*up, W*up).
    """
    b = x.shape[0]
    out_ch, in_ch, kh, kw = weight.shape
    if padding is None:
        padding = kw // 2
    per_filter = styles.ndim == 3
    if per_filter:
        if styles.shape != (b, out_ch, in_ch):
            raise ValueError(f"per-filter styles must be {(b, out_ch, in_ch)}, got {tuple(styles.shape)}")
    elif styles.shape != (b, in_ch):
        raise ValueError(f"styles must be {(b, in_ch)}, got {tuple(styles.shape)}")
    if fused is None:
        fused = per_filter or b == 1
    if per_filter and not fused:
        raise ValueError("per-filter (W++) styles need the fused path")
    styles = styles.to(x.dtype)
    weight = weight.to(x.dtype)

    if x.dtype == torch.float16 and demodulate:
        # Demodulation makes the output invariant to these scales; they keep fp16 sums in range.
        weight = weight * (1.0 / math.sqrt(in_ch * kh * kw)) / weight.abs().amax(dim=[1, 2, 3], keepdim=True)
        styles = styles / styles.abs().amax(dim=-1, keepdim=True)

    if not fused:
        dcoefs = None
        if demodulate:
            w5 = weight.unsqueeze(0) * styles.reshape(b, 1, in_ch, 1, 1)
            dcoefs = (w5.square().sum(dim=[2, 3, 4]) + eps).rsqrt()
        x = x * styles.reshape(b, in_ch, 1, 1)
        x = conv2d_resample(x, weight, resample_filter, up=up, padding=padding)
        if dcoefs is not None:
            x = x * dcoefs.reshape(b, out_ch, 1, 1)
        return x

    s = styles.reshape(b, out_ch if per_filter else 1, in_ch, 1, 1)
    w5 = weight.unsqueeze(0) * s  # (B, O, I, k, k)
    if demodulate:
        w5 = w5 * (w5.square().sum(dim=[2, 3, 4], keepdim=True) + eps).rsqrt()
    h, wd = x.shape[2:]
    y = conv2d_resample(
        x.reshape(1, b * in_ch, h, wd),
        w5.reshape(b * out_ch, in_ch, kh, kw),
        resample_filter,
        up=up,
        padding=padding,
        groups=b,
    )
    return y.reshape(b, out_ch, *y.shape[2:])


def minibatch_stddev(x: torch.Tensor, group_size: int = 4, num_channels: int = 1) -> torch.Tensor:
    """Append the minibatch standard-deviation feature(s): (B, C, H, W) -> (B, C + num_channels, H, W).

    Samples are split into B / G groups of G = ``group_size`` strided samples (sample j belongs to group
    j % (B / G), as in StyleGAN2); the std over each group, averaged over channels (per channel group)
    and pixels, is broadcast as extra channels. If B is not divisible by the group size, the
    largest divisor of B not above ``group_size`` is used (NVIDIA's code would fail there).
    """
    n, c, h, w = x.shape
    g = min(group_size, n) if group_size else n
    while n % g:
        g -= 1
    f = num_channels
    y = x.reshape(g, -1, f, c // f, h, w)
    y = y - y.mean(dim=0)
    y = (y.square().mean(dim=0) + 1e-8).sqrt()
    y = y.mean(dim=[2, 3, 4]).reshape(-1, f, 1, 1)
    y = y.repeat(g, 1, h, w)
    return torch.cat([x, y], dim=1)


# --------------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------------


class FullyConnectedLayer(nn.Module):
    """Equalised-learning-rate linear layer acting on the last dim: y = act(x @ (W*g)^T + b*lr_mul).

    weight (out, in) is stored as N(0, 1) / lr_multiplier and scaled by lr_multiplier / sqrt(in).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        activation: str = "linear",
        lr_multiplier: float = 1.0,
        bias_init: float = 0.0,
    ):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias.to(x.dtype) * self.bias_gain if self.bias is not None else None
        x = F.linear(x, w, b)
        return bias_act(x, None, self.activation, dim=-1)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, act={self.activation}"


class Conv2dLayer(nn.Module):
    """Equalised-learning-rate convolution with optional FIR up/downsampling, bias, activation, clamp."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        bias: bool = True,
        activation: str = "linear",
        up: int = 1,
        down: int = 1,
        conv_clamp: float | None = None,
        resample_filter: Sequence[float] = (1, 3, 3, 1),
    ):
        super().__init__()
        self.activation = activation
        self.up = up
        self.down = down
        self.conv_clamp = conv_clamp
        self.padding = kernel_size // 2
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.register_buffer("resample_filter", fir_filter(resample_filter), persistent=False)

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        x = conv2d_resample(x, w, self.resample_filter, up=self.up, down=self.down, padding=self.padding)
        act_gain = (1.0 if self.activation == "linear" else LRELU_GAIN) * gain
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias, self.activation, gain=act_gain, clamp=clamp)


class MappingNetwork(nn.Module):
    """z (B, z_dim) -> w (B, w_dim): pixel norm then ``num_layers`` FC + leaky-ReLU (lr multiplier 0.01).

    ``w_avg`` tracks the mean of W during training (decay ``w_avg_beta``) and is the truncation centre.
    """

    def __init__(
        self,
        z_dim: int = 512,
        w_dim: int = 512,
        num_layers: int = 8,
        layer_features: int | None = None,
        lr_multiplier: float = 0.01,
        w_avg_beta: float | None = 0.995,
    ):
        super().__init__()
        self.z_dim = z_dim
        self.w_dim = w_dim
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta
        feats = [z_dim] + [layer_features or w_dim] * (num_layers - 1) + [w_dim]
        for i in range(num_layers):
            layer = FullyConnectedLayer(feats[i], feats[i + 1], activation="lrelu", lr_multiplier=lr_multiplier)
            setattr(self, f"fc{i}", layer)
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0, update_w_avg: bool | None = None) -> torch.Tensor:
        """(B, z_dim) -> (B, w_dim). ``update_w_avg`` defaults to ``self.training``."""
        x = normalize_2nd_moment(z.to(self.fc0.weight.dtype))
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        if update_w_avg is None:
            update_w_avg = self.training
        if update_w_avg and self.w_avg_beta is not None:
            with torch.no_grad():
                self.w_avg.copy_(x.detach().mean(dim=0).to(self.w_avg.dtype).lerp(self.w_avg, self.w_avg_beta))
        if truncation_psi != 1:
            x = self.w_avg.to(x.dtype).lerp(x, truncation_psi)
        return x


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (optionally 2x up) + noise + bias + leaky-ReLU*sqrt(2) (+ clamp)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        kernel_size: int = 3,
        up: int = 1,
        use_noise: bool = True,
        conv_clamp: float | None = None,
        resample_filter: Sequence[float] = (1, 3, 3, 1),
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.conv_clamp = conv_clamp
        self.padding = kernel_size // 2
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        if use_noise:
            self.register_buffer("noise_const", torch.randn(resolution, resolution))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("resample_filter", fir_filter(resample_filter), persistent=False)

    def forward(
        self,
        x: torch.Tensor,
        w: torch.Tensor,
        noise_mode: str = "const",
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        fused: bool | None = None,
        gain: float = 1.0,
    ) -> torch.Tensor:
        """x (B, I, H, W), w (B, w_dim) or per-filter (B, O, w_dim) -> (B, O, H*up, W*up).

        ``noise`` (broadcastable to (B, 1, R, R)) overrides ``noise_mode``; it is scaled by the learnt
        noise strength like the built-in noise.
        """
        styles = self.affine(w)
        x = modulated_conv2d(
            x, self.weight, styles, up=self.up, padding=self.padding, resample_filter=self.resample_filter, fused=fused
        )
        if self.use_noise:
            n = _layer_noise(self, x, noise_mode, noise, generator)
            if n is not None:
                x = x + n * self.noise_strength.to(x.dtype)
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias, "lrelu", gain=LRELU_GAIN * gain, clamp=clamp)


def _layer_noise(
    layer: SynthesisLayer,
    x: torch.Tensor,
    mode: str,
    noise: torch.Tensor | None,
    generator: torch.Generator | None,
) -> torch.Tensor | None:
    if noise is not None:
        return noise.to(device=x.device, dtype=x.dtype)
    if mode == "const":
        return layer.noise_const.to(x.dtype)
    if mode == "random":
        if generator is None:
            raise ValueError("noise_mode='random' needs an explicit torch.Generator")
        r = layer.resolution
        draw = torch.randn((x.shape[0], 1, r, r), generator=generator, device=generator.device)
        return draw.to(device=x.device, dtype=x.dtype)
    if mode == "none":
        return None
    raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {mode!r}")


class ToRGBLayer(nn.Module):
    """Modulated 1x1 conv without demodulation + bias (+ clamp): features -> image channels."""

    def __init__(
        self, in_channels: int, out_channels: int, w_dim: int, kernel_size: int = 1, conv_clamp: float | None = None
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused: bool | None = None) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused=fused)
        return bias_act(x, self.bias, "linear", clamp=self.conv_clamp)


@dataclass(frozen=True)
class StyleLayerSpec:
    """One modulated layer of the synthesis network (an entry of the W++ list).

    name: module path under ``synthesis`` ('b8.conv0', 'b8.torgb', ...); kind: 'conv' or 'torgb';
    w_index: row of W+ it reads; in_channels / out_channels: its weight's I / O (O = number of W++
    latents of this layer); resolution: output size in pixels.
    """

    name: str
    kind: str
    w_index: int
    in_channels: int
    out_channels: int
    resolution: int


class SynthesisBlock(nn.Module):
    """One resolution of the skip generator: [const | up-conv0], conv1, toRGB (+ upsampled skip image)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        img_channels: int,
        use_noise: bool = True,
        conv_clamp: float | None = None,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.resolution = resolution
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(
                in_channels, out_channels, w_dim, resolution, up=2, use_noise=use_noise, conv_clamp=conv_clamp
            )
        self.conv1 = SynthesisLayer(
            out_channels, out_channels, w_dim, resolution, use_noise=use_noise, conv_clamp=conv_clamp
        )
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
        self.register_buffer("resample_filter", fir_filter(), persistent=False)

    def conv_layers(self) -> list[SynthesisLayer]:
        return [self.conv1] if self.in_channels == 0 else [self.conv0, self.conv1]


class LatentLayouts:
    """W / W+ / W++ handling shared by every StyleGAN-like synthesis network (ours and MobileStyleGAN).

    The class using it sets ``layer_specs`` (the modulated layers in execution order), ``num_ws`` and ``w_dim``.
    """

    layer_specs: tuple[StyleLayerSpec, ...]
    num_ws: int
    w_dim: int

    # -- latent layouts ------------------------------------------------------------------------------

    def wpp_from_wplus(self, ws: torch.Tensor) -> list[torch.Tensor]:
        """W (B, w_dim) or W+ (B, num_ws, w_dim) -> W++ list (fresh contiguous tensors, see module doc)."""
        per_layer = self._per_layer_latents(ws)
        return [w.unsqueeze(1).expand(-1, s.out_channels, -1).clone() for s, w in zip(self.layer_specs, per_layer)]

    def wpp_from_dense(self, dense: torch.Tensor) -> list[torch.Tensor]:
        """Authors' dense W++ -> per-layer views (differentiable; shared rows stay tied).

        dense: (B, num_ws, N, w_dim) or (B, num_ws * N, w_dim) with N >= the widest layer; layer l
        reads ``dense[:, w_index_l, :C_out_l]``.
        """
        if dense.ndim == 3:
            if dense.shape[1] % self.num_ws:
                raise ValueError(f"dense W++ rows ({dense.shape[1]}) must be a multiple of num_ws={self.num_ws}")
            dense = dense.reshape(dense.shape[0], self.num_ws, -1, dense.shape[-1])
        if dense.ndim != 4 or dense.shape[1] != self.num_ws or dense.shape[-1] != self.w_dim:
            raise ValueError(f"dense W++ must be (B, {self.num_ws}, N, {self.w_dim}), got {tuple(dense.shape)}")
        widest = max(s.out_channels for s in self.layer_specs)
        if dense.shape[2] < widest:
            raise ValueError(f"dense W++ needs at least {widest} rows per w-index, got {dense.shape[2]}")
        return [dense[:, s.w_index, : s.out_channels] for s in self.layer_specs]

    def noise_shapes(self) -> list[tuple[int, int]]:
        """(H, W) of the noise map of each conv layer, in layer order (``noises=`` of ``forward``)."""
        return [(s.resolution, s.resolution) for s in self.layer_specs if s.kind == "conv"]

    def _per_layer_latents(self, ws) -> list[torch.Tensor]:
        specs = self.layer_specs
        if isinstance(ws, (list, tuple)):
            if len(ws) != len(specs):
                raise ValueError(f"W++ needs {len(specs)} per-layer tensors, got {len(ws)}")
            for s, w in zip(specs, ws):
                if w.ndim != 3 or w.shape[1] != s.out_channels or w.shape[2] != self.w_dim:
                    raise ValueError(
                        f"W++ entry for {s.name} must be (B, {s.out_channels}, {self.w_dim}), got {tuple(w.shape)}"
                    )
            return list(ws)
        if ws.ndim == 2 and ws.shape[1] == self.w_dim:
            return [ws] * len(specs)
        if ws.ndim == 3 and ws.shape[1:] == (self.num_ws, self.w_dim):
            return [ws[:, s.w_index] for s in specs]
        raise ValueError(
            f"latents must be W (B, {self.w_dim}), W+ (B, {self.num_ws}, {self.w_dim}) or a W++ list, "
            f"got {tuple(ws.shape)}"
        )


class SynthesisNetwork(LatentLayouts, nn.Module):
    """W / W+ / W++ latents -> raw image (B, img_channels, R, R), about [-1, 1]. See the module doc."""

    def __init__(
        self,
        w_dim: int = 512,
        img_resolution: int = 1024,
        img_channels: int = 3,
        channel_base: int = 32768,
        channel_max: int = 512,
        conv_clamp: float | None = None,
        use_noise: bool = True,
    ):
        super().__init__()
        if img_resolution < 4 or img_resolution & (img_resolution - 1):
            raise ValueError(f"img_resolution must be a power of two >= 4, got {img_resolution}")
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.channel_base = channel_base
        self.channel_max = channel_max
        self.block_resolutions = [2**i for i in range(2, int(math.log2(img_resolution)) + 1)]
        self.channels = {r: min(channel_base // r, channel_max) for r in self.block_resolutions}
        if min(self.channels.values()) < 1:
            raise ValueError("channel_base too small: some resolution would have no channels")
        specs: list[StyleLayerSpec] = []
        w_idx = 0
        for r in self.block_resolutions:
            cin = self.channels[r // 2] if r > 4 else 0
            cout = self.channels[r]
            block = SynthesisBlock(cin, cout, w_dim, r, img_channels, use_noise=use_noise, conv_clamp=conv_clamp)
            setattr(self, f"b{r}", block)
            if cin:
                specs.append(StyleLayerSpec(f"b{r}.conv0", "conv", w_idx, cin, cout, r))
                w_idx += 1
            specs.append(StyleLayerSpec(f"b{r}.conv1", "conv", w_idx, cout, cout, r))
            w_idx += 1
            # The toRGB layer shares its w with the next block's first conv (StyleGAN2's layout).
            specs.append(StyleLayerSpec(f"b{r}.torgb", "torgb", w_idx, cout, img_channels, r))
        self.num_ws = w_idx + 1
        self.layer_specs: tuple[StyleLayerSpec, ...] = tuple(specs)
        self.num_conv_layers = sum(s.kind == "conv" for s in specs)

    def const_noises(self) -> list[torch.Tensor]:
        """Copies of the constant noise maps as (1, 1, H, W) tensors, in conv-layer order."""
        return [self._module(s.name).noise_const.detach().clone()[None, None] for s in self._conv_specs()]

    def _conv_specs(self) -> list[StyleLayerSpec]:
        return [s for s in self.layer_specs if s.kind == "conv"]

    def _module(self, name: str) -> nn.Module:
        return self.get_submodule(name)

    # -- forward -------------------------------------------------------------------------------------

    def forward(
        self,
        ws,
        noise_mode: str = "const",
        noises: Sequence[torch.Tensor | None] | None = None,
        generator: torch.Generator | None = None,
        fused: bool | None = None,
    ) -> torch.Tensor:
        """Synthesise images from W, W+ or W++ latents.

        noise_mode: 'const' (stored maps, deterministic), 'random' (drawn from ``generator``), 'none'.
        noises: optional per-conv-layer maps (see ``noise_shapes``) overriding ``noise_mode``; None entries
        fall back to it. Returns (B, img_channels, R, R) in StyleGAN's raw range (about [-1, 1]).
        """
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        dtype = self.b4.const.dtype
        latents = [w.to(dtype) for w in self._per_layer_latents(ws)]
        if noises is not None and len(noises) != self.num_conv_layers:
            raise ValueError(f"noises must list {self.num_conv_layers} maps (one per conv layer), got {len(noises)}")
        noise_iter = iter(noises) if noises is not None else None
        lat = iter(latents)
        batch = latents[0].shape[0]
        x = img = None
        for r in self.block_resolutions:
            block: SynthesisBlock = getattr(self, f"b{r}")
            if block.in_channels == 0:
                x = block.const.unsqueeze(0).expand(batch, -1, -1, -1)
            for layer in block.conv_layers():
                n = next(noise_iter) if noise_iter is not None else None
                x = layer(x, next(lat), noise_mode=noise_mode, noise=n, generator=generator, fused=fused)
            y = block.torgb(x, next(lat), fused=fused)
            img = y if img is None else upsample2d(img, block.resample_filter) + y
        return img


class GeneratorSampling:
    """z -> W -> image, truncation and W sampling shared by every StyleGAN-like generator (ours and
    MobileStyleGAN). The class using it has ``mapping`` (with ``w_avg`` and ``forward(z, truncation_psi,
    update_w_avg)``), ``synthesis``, ``z_dim``, ``w_dim`` and ``num_ws``."""

    def truncate(self, ws: torch.Tensor, psi: float = 1.0, cutoff: int | None = None) -> torch.Tensor:
        """Pull W (B, w_dim) or W+ (B, num_ws, w_dim) towards ``w_avg``; ``cutoff`` limits W+ rows."""
        if psi == 1:
            return ws
        avg = self.mapping.w_avg.to(ws.dtype)
        if ws.ndim == 2 or cutoff is None:
            return avg.lerp(ws, psi)
        head = avg.lerp(ws[:, :cutoff], psi)
        return torch.cat([head, ws[:, cutoff:]], dim=1)

    def forward(
        self,
        z: torch.Tensor,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        noise_mode: str = "const",
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """z (B, z_dim) -> raw image (B, C, R, R), about [-1, 1]."""
        w = self.mapping(z)
        ws = w.unsqueeze(1).repeat(1, self.num_ws, 1)
        ws = self.truncate(ws, truncation_psi, truncation_cutoff)
        return self.synthesis(ws, noise_mode=noise_mode, generator=generator)

    @torch.no_grad()
    def sample_w(
        self, n: int, generator: torch.Generator, truncation_psi: float = 1.0, batch_size: int = 4096
    ) -> torch.Tensor:
        """``n`` samples of W (n, w_dim) from z ~ N(0, I) drawn with ``generator`` (does not touch w_avg)."""
        device = self.mapping.w_avg.device
        out = []
        for i in range(0, n, batch_size):
            m = min(batch_size, n - i)
            z = torch.randn((m, self.z_dim), generator=generator, device=generator.device).to(device)
            out.append(self.mapping(z, truncation_psi=truncation_psi, update_w_avg=False))
        return torch.cat(out) if out else torch.empty(0, self.w_dim, device=device)

    @torch.no_grad()
    def estimate_w_avg(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Set ``mapping.w_avg`` to the mean of ``n`` W samples (accumulated in float64) and return it (for
        weights without one)."""
        total = torch.zeros(self.w_dim, dtype=torch.float64, device=self.mapping.w_avg.device)
        for i in range(0, n, 8192):
            total += self.sample_w(min(8192, n - i), generator).to(torch.float64).sum(0)
        avg = (total / max(n, 1)).to(self.mapping.w_avg.dtype)
        self.mapping.w_avg.copy_(avg)
        return avg


class Generator(GeneratorSampling, nn.Module):
    """StyleGAN2 generator: ``mapping`` (z -> w) + ``synthesis`` (W / W+ / W++ -> raw image).

    Defaults are FFHQ config-f at 1024 px; any power-of-two resolution and channel width work, e.g.
    ``Generator(img_resolution=64, channel_base=4096, channel_max=256)`` for a small CPU-trained prior.
    ``conv_clamp`` clamps conv outputs (StyleGAN2-ADA option; None for the original networks).
    """

    def __init__(
        self,
        z_dim: int = 512,
        w_dim: int = 512,
        img_resolution: int = 1024,
        img_channels: int = 3,
        mapping_layers: int = 8,
        channel_base: int = 32768,
        channel_max: int = 512,
        conv_clamp: float | None = None,
        mapping_lr_multiplier: float = 0.01,
        w_avg_beta: float | None = 0.995,
        use_noise: bool = True,
    ):
        super().__init__()
        self.config = {
            "z_dim": z_dim,
            "w_dim": w_dim,
            "img_resolution": img_resolution,
            "img_channels": img_channels,
            "mapping_layers": mapping_layers,
            "channel_base": channel_base,
            "channel_max": channel_max,
            "conv_clamp": conv_clamp,
            "mapping_lr_multiplier": mapping_lr_multiplier,
            "w_avg_beta": w_avg_beta,
            "use_noise": use_noise,
        }
        self.z_dim = z_dim
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.synthesis = SynthesisNetwork(
            w_dim, img_resolution, img_channels, channel_base, channel_max, conv_clamp=conv_clamp, use_noise=use_noise
        )
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(
            z_dim, w_dim, mapping_layers, lr_multiplier=mapping_lr_multiplier, w_avg_beta=w_avg_beta
        )

    @classmethod
    def from_config(cls, config: dict) -> Generator:
        return cls(**config)


# --------------------------------------------------------------------------------------------------
# Discriminator
# --------------------------------------------------------------------------------------------------


class DiscriminatorBlock(nn.Module):
    """Residual block: [fromRGB], conv0 3x3, conv1 3x3 down 2, 1x1 down-2 skip; sum scaled by sqrt(1/2)."""

    def __init__(
        self, in_channels: int, tmp_channels: int, out_channels: int, img_channels: int, conv_clamp: float | None = None
    ):
        super().__init__()
        self.in_channels = in_channels
        if in_channels == 0:
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, 1, activation="lrelu", conv_clamp=conv_clamp)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, 3, activation="lrelu", conv_clamp=conv_clamp)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, 3, activation="lrelu", down=2, conv_clamp=conv_clamp)
        self.skip = Conv2dLayer(tmp_channels, out_channels, 1, bias=False, down=2)

    def forward(self, x: torch.Tensor | None, img: torch.Tensor) -> torch.Tensor:
        if self.in_channels == 0:
            x = self.fromrgb(img)
        y = self.skip(x, gain=math.sqrt(0.5))
        x = self.conv1(self.conv0(x), gain=math.sqrt(0.5))
        return y + x


class MinibatchStdLayer(nn.Module):
    def __init__(self, group_size: int = 4, num_channels: int = 1):
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return minibatch_stddev(x, self.group_size, self.num_channels)


class DiscriminatorEpilogue(nn.Module):
    """4x4 head: minibatch-stddev, conv 3x3, FC, FC -> one logit."""

    def __init__(
        self,
        in_channels: int,
        resolution: int = 4,
        mbstd_group_size: int = 4,
        mbstd_num_channels: int = 1,
        conv_clamp: float | None = None,
    ):
        super().__init__()
        self.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels > 0 else None
        extra = mbstd_num_channels if mbstd_num_channels > 0 else 0
        self.conv = Conv2dLayer(in_channels + extra, in_channels, 3, activation="lrelu", conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(in_channels * resolution * resolution, in_channels, activation="lrelu")
        self.out = FullyConnectedLayer(in_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)
        return self.out(self.fc(x.flatten(1)))


class Discriminator(nn.Module):
    """StyleGAN2 residual discriminator (unconditional): image (B, C, R, R) in the generator's raw range
    (about [-1, 1]) -> logits (B, 1). Parameter names follow NVIDIA's (b{res}.conv0 ..., b4.fc, b4.out).
    """

    def __init__(
        self,
        img_resolution: int = 1024,
        img_channels: int = 3,
        channel_base: int = 32768,
        channel_max: int = 512,
        mbstd_group_size: int = 4,
        mbstd_num_channels: int = 1,
        conv_clamp: float | None = None,
    ):
        super().__init__()
        if img_resolution < 8 or img_resolution & (img_resolution - 1):
            raise ValueError(f"img_resolution must be a power of two >= 8, got {img_resolution}")
        self.config = {
            "img_resolution": img_resolution,
            "img_channels": img_channels,
            "channel_base": channel_base,
            "channel_max": channel_max,
            "mbstd_group_size": mbstd_group_size,
            "mbstd_num_channels": mbstd_num_channels,
            "conv_clamp": conv_clamp,
        }
        self.img_resolution = img_resolution
        self.block_resolutions = [2**i for i in range(int(math.log2(img_resolution)), 2, -1)]
        ch = {r: min(channel_base // r, channel_max) for r in [*self.block_resolutions, 4]}
        for r in self.block_resolutions:
            cin = ch[r] if r < img_resolution else 0
            setattr(self, f"b{r}", DiscriminatorBlock(cin, ch[r], ch[r // 2], img_channels, conv_clamp=conv_clamp))
        self.b4 = DiscriminatorEpilogue(ch[4], 4, mbstd_group_size, mbstd_num_channels, conv_clamp=conv_clamp)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = None
        img = img.to(self.b4.out.weight.dtype)
        for r in self.block_resolutions:
            x = getattr(self, f"b{r}")(x, img)
        return self.b4(x)
