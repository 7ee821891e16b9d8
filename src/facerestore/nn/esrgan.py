"""ESRGAN "thick" RRDN super-resolution (UpscalerJS ``@upscalerjs/esrgan-thick``, MIT), a PyTorch port of the
TF.js layers models of the zoo entry ``esrgan-thick`` (x2, x3, x4, x8).

The architecture is idealo's RRDN as the Keras config of each ``model.json`` lists it:

- ``Pre_blocks_conv``: 3x3 conv, 3 -> 64;
- 10 residual-in-residual dense blocks ``RRDB_d`` (d = 1..10), each of 3 residual dense blocks (t = 1..3):
  4 x (3x3 conv ``F_d_t_c`` -> 32 channels + ReLU, concatenated to the block's running input: 64, 96, 128,
  160 channels in), then the local feature fusion ``LFF_d_t`` (3x3 conv, 192 -> 64), scaled by beta
  (``MultiplyBeta``, 0.2) and added to the block's input (``LRL_d_t``); the RRDB's output is its input plus
  beta times the last RDB's output (``RRDB_d_out``);
- ``post_blocks_conv`` (3x3, 64) + the global residual ``GRL`` (added to ``Pre_blocks_conv``'s output);
- ``PreShuffle`` (3x3 conv to 3 * scale^2 channels), ``PixelShuffle{scale}x`` (TF ``depth_to_space``, NHWC:
  the channel index is (row offset, column offset, colour), not PyTorch's pixel_shuffle order (colour first)),
  ``SR`` (3x3 conv, 3 -> 3).

Every convolution is Keras "same" padding at stride 1 (symmetric); weights are ``NAME/kernel`` (HWIO) and
``NAME/bias``. Input and output are RGB in [0, 1] (UpscalerJS's ``inputRange`` / ``outputRange``); the output
is not clipped here. Parameters load strictly by name with shape checks (:func:`load_esrgan`); the Keras
config is checked against the port (layer names, filters, kernel sizes, beta, scale) first. Equal to TensorFlow.js
4.22's Keras layers running the same files, at every scale (tests/nn/test_tfjs.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facerestore.errors import InputError

__all__ = ["ESRGAN_SCALES", "RRDN", "depth_to_space", "load_esrgan"]

ESRGAN_SCALES = (2, 3, 4, 8)
N_RRDB, N_RDB, N_CONV, G0, G = 10, 3, 4, 64, 32


def depth_to_space(x: torch.Tensor, block: int) -> torch.Tensor:
    """TensorFlow's depth_to_space on (B, C * block^2, H, W): output channel c at (h * block + i, w * block + j)
    comes from input channel (i * block + j) * C + c."""
    b, cc, h, w = x.shape
    c = cc // (block * block)
    x = x.view(b, block, block, c, h, w).permute(0, 3, 4, 1, 5, 2)
    return x.reshape(b, c, h * block, w * block)


def _conv(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1)


class _RDB(nn.Module):
    def __init__(self, beta: float) -> None:
        super().__init__()
        self.convs = nn.ModuleList(_conv(G0 + c * G, G) for c in range(N_CONV))
        self.lff = _conv(G0 + N_CONV * G, G0)
        self.beta = beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = x
        for conv in self.convs:
            feats = torch.cat([feats, F.relu(conv(feats))], 1)
        return x + self.lff(feats) * self.beta


class _RRDB(nn.Module):
    def __init__(self, beta: float) -> None:
        super().__init__()
        self.rdbs = nn.ModuleList(_RDB(beta) for _ in range(N_RDB))
        self.beta = beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for rdb in self.rdbs:
            y = rdb(y)
        return x + y * self.beta


class RRDN(nn.Module):
    """(B, 3, H, W) RGB in [0, 1] -> (B, 3, scale * H, scale * W)."""

    def __init__(self, scale: int = 4, beta: float = 0.2) -> None:
        super().__init__()
        if scale not in ESRGAN_SCALES:
            raise InputError(f"ESRGAN-thick comes in scales {ESRGAN_SCALES}, not {scale}")
        self.scale = int(scale)
        self.pre_blocks_conv = _conv(3, G0)
        self.rrdbs = nn.ModuleList(_RRDB(beta) for _ in range(N_RRDB))
        self.post_blocks_conv = _conv(G0, G0)
        self.pre_shuffle = _conv(G0, 3 * scale * scale)
        self.sr = _conv(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise InputError(f"ESRGAN takes (B, 3, H, W) RGB input, got {tuple(x.shape)}")
        pre = self.pre_blocks_conv(x)
        y = pre
        for rrdb in self.rrdbs:
            y = rrdb(y)
        y = self.post_blocks_conv(y) + pre
        return self.sr(depth_to_space(self.pre_shuffle(y), self.scale))


def keras_names(scale: int) -> dict[str, str]:
    """torch conv module path -> Keras layer name."""
    out = {"pre_blocks_conv": "Pre_blocks_conv", "post_blocks_conv": "post_blocks_conv",
           "pre_shuffle": "PreShuffle", "sr": "SR"}
    for d in range(N_RRDB):
        for t in range(N_RDB):
            for c in range(N_CONV):
                out[f"rrdbs.{d}.rdbs.{t}.convs.{c}"] = f"F_{d + 1}_{t + 1}_{c + 1}"
            out[f"rrdbs.{d}.rdbs.{t}.lff"] = f"LFF_{d + 1}_{t + 1}"
    return out


def _check_config(layers: list, scale: int, where: str) -> float:
    """The Keras config is this RRDN at ``scale``; returns its beta."""
    by_name = {layer.name: layer for layer in layers}
    net = RRDN(scale)
    for path, name in keras_names(scale).items():
        layer = by_name.get(name)
        conv = net.get_submodule(path)
        if layer is None or layer.class_name != "Conv2D":
            raise InputError(f"{where}: no Conv2D layer {name}")
        c = layer.config
        if (c.get("filters") != conv.out_channels or list(c.get("kernel_size", [])) != [3, 3]
                or list(c.get("strides", [])) != [1, 1] or c.get("padding") != "same"
                or c.get("activation") != "linear" or not c.get("use_bias", True)):
            raise InputError(f"{where}: layer {name} ({c.get('filters')} filters, {c.get('kernel_size')}, "
                             f"{c.get('padding')}, {c.get('activation')}) differs from the port")
    betas = {float(layer.config.get("beta", 0.2)) for layer in layers if layer.class_name == "MultiplyBeta"}
    n_beta = sum(layer.class_name == "MultiplyBeta" for layer in layers)
    if n_beta != N_RRDB * (N_RDB + 1) or len(betas) != 1:
        raise InputError(f"{where}: {n_beta} MultiplyBeta layers with betas {sorted(betas)}, expected "
                         f"{N_RRDB * (N_RDB + 1)} with one beta")
    shuffles = [layer for layer in layers if layer.class_name.startswith("PixelShuffle")]
    if len(shuffles) != 1 or int(shuffles[0].config.get("scale", 0)) != scale:
        raise InputError(f"{where}: expected one PixelShuffle{scale}x layer")
    kinds = {layer.class_name for layer in layers}
    unknown = kinds - {"InputLayer", "Conv2D", "Activation", "Concatenate", "Add", "MultiplyBeta",
                       shuffles[0].class_name}
    if unknown:
        raise InputError(f"{where}: layer types the port does not implement: {', '.join(sorted(unknown))}")
    return betas.pop()


def state_from_tfjs(weights: dict[str, np.ndarray], scale: int, where: str) -> dict[str, np.ndarray]:
    state = {}
    used = set()
    for path, name in keras_names(scale).items():
        for tf_suffix, t_suffix in (("kernel", "weight"), ("bias", "bias")):
            key = f"{name}/{tf_suffix}"
            if key not in weights:
                raise InputError(f"{where}: no weight {key}")
            used.add(key)
            w = np.asarray(weights[key], np.float32)
            state[f"{path}.{t_suffix}"] = w.transpose(3, 2, 0, 1) if tf_suffix == "kernel" else w
    unused = sorted(set(weights) - used)
    if unused:
        raise InputError(f"{where}: weights not used by the network: {', '.join(unused[:3])}")
    return state


def load_esrgan(path: str | os.PathLike, scale: int | None = None, device: str | torch.device = "cpu") -> RRDN:
    """Build the RRDN of a TF.js ``model.json`` (or ``xN-model.json`` in the zoo's flat folder; give the folder
    and ``scale``), eval mode."""
    from facerestore.nn.tfjs import assign_strict, read_model

    path = Path(path)
    if path.is_dir():
        if scale is None:
            raise InputError("load_esrgan: give the scale with a folder")
        path = path / f"x{int(scale)}-model.json"
    m = read_model(path)
    if m.format != "layers-model":
        raise InputError(f"{path.name}: not a TF.js layers model")
    shuffles = [layer for layer in m.layers if layer.class_name.startswith("PixelShuffle")]
    found = int(shuffles[0].config.get("scale", 0)) if len(shuffles) == 1 else 0
    if scale is not None and found != int(scale):
        raise InputError(f"{path.name}: a x{found} model, not x{scale}")
    if found not in ESRGAN_SCALES:
        raise InputError(f"{path.name}: no PixelShuffle layer of a known scale")
    beta = _check_config(m.layers, found, path.name)
    net = RRDN(found, beta)
    assign_strict(net, state_from_tfjs(m.weights, found, path.name), path.name)
    return net.to(device).eval()
