"""Building blocks of FRSNet / MFPSNet (paper 001): candidate operations, resampling, dense blocks.

- :class:`ConvBR`: convolution (no bias) -> BatchNorm -> ReLU, the unit of every candidate operation and of
  the 1x1 preprocessing of each cell (section 3.1.1).
- :data:`PRIMITIVES`: the candidate set O = {skip, conv 3x3, conv 5x5, conv 7x7}, in the index order of the
  released genotypes (``[edge, op]`` pairs use these indices).
- :func:`resample`: bilinear resizing between the four levels of a search space (level k has side
  ``S / 2**k``; level 0 is the output resolution).
- :class:`ResidualDenseBlock`: 5 densely connected 3x3 convolutions (growth 32), LeakyReLU 0.2, output
  scaled by 0.2 and added to the input (the RDB of the backbone and of the reconstruction).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["NUM_LEVELS", "PRIMITIVES", "ConvBR", "ResidualDenseBlock", "make_op", "resample", "scale_side"]

PRIMITIVES: tuple[str, ...] = ("skip", "conv3", "conv5", "conv7")
NUM_LEVELS = 4  # rates 1, 2, 4, 8 (upsampling space) or 1, 1/2, 1/4, 1/8 (prior / fusion spaces)
_KERNEL = {"conv3": 3, "conv5": 5, "conv7": 7}


class ConvBR(nn.Module):
    """``relu(bn(conv(x)))`` with a bias-free k x k convolution ("same" padding); ``bn``/``relu`` switch
    the two stages off (the last 1x1 projection of a searched module has neither)."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, *, bn: bool = True, relu: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout) if bn else None
        self.relu = relu
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.relu else x


def make_op(name: str, channels: int) -> nn.Module:
    """The candidate operation ``name`` (one of :data:`PRIMITIVES`) on ``channels`` -> ``channels``."""
    if name == "skip":
        return nn.Identity()
    if name in _KERNEL:
        return ConvBR(channels, channels, _KERNEL[name])
    raise ValueError(f"unknown operation {name!r}; candidates: {', '.join(PRIMITIVES)}")


def scale_side(side: int, factor: float) -> int:
    """The side of a feature map after resampling by ``factor`` (2 or 0.5; odd sides: ``(side - 1) * f + 1``)."""
    if side % 2 == 1:
        return int((side - 1) * factor + 1)
    return int(side * factor)


def resample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resizing (corners aligned) to ``size``; a no-op at the same size."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


class ResidualDenseBlock(nn.Module):
    """``x + 0.2 * conv5([x, x1, x2, x3, x4])`` with ``x_i = lrelu(conv_i([x, x1, ..., x_{i-1}]))``."""

    def __init__(self, channels: int = 64, growth: int = 32) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(channels + i * growth, growth if i < 4 else channels, 3, padding=1) for i in range(5)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for i, conv in enumerate(self.convs):
            y = conv(torch.cat(feats, 1))
            if i < 4:
                feats.append(F.leaky_relu(y, 0.2))
        return x + 0.2 * y
