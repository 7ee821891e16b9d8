"""Shared convolution blocks: spectral-norm convolutions, normalisation factory, residual blocks.

``SNConv2d`` is a spectrally normalised convolution whose state-dict layout is the one written by
the classic ``torch.nn.utils.spectral_norm`` hook (``weight_orig`` parameter, ``weight_u`` and
``weight_v`` buffers, optional ``bias``), the layout of most released GAN checkpoints (SPADE,
HiFaceGAN, pix2pixHD). Unlike the hook it is a plain module: it deep-copies (EMA), pickles and
behaves the same under ``torch.compile``; power iteration runs only in ``train()`` mode, so
``eval()`` output is a deterministic function of the weights and the input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ResBlock",
    "ResidualDown",
    "SNConv2d",
    "conv2d",
    "make_norm",
    "power_iteration",
    "spectral_sigma",
]


def power_iteration(
    weight_mat: torch.Tensor, u: torch.Tensor, v: torch.Tensor, n_iterations: int = 1, eps: float = 1e-12
) -> tuple[torch.Tensor, torch.Tensor]:
    """Power-iteration update of the singular-vector estimates of ``weight_mat`` (out, in).

    Same order as ``torch.nn.utils.spectral_norm``: v <- normalize(W^T u), then u <- normalize(W v).
    Returns new (u, v); no gradient is tracked.
    """
    with torch.no_grad():
        for _ in range(n_iterations):
            v = F.normalize(weight_mat.t() @ u, dim=0, eps=eps)
            u = F.normalize(weight_mat @ v, dim=0, eps=eps)
    return u, v


def spectral_sigma(weight_mat: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Estimate of the largest singular value, sigma = u^T W v (differentiable w.r.t. W only)."""
    return torch.dot(u, weight_mat @ v)


class SNConv2d(nn.Module):
    """``nn.Conv2d`` with spectral normalisation of its weight (W / sigma_max).

    State dict: ``weight_orig`` (out, in/groups, kh, kw), ``weight_u`` (out,), ``weight_v`` (in*kh*kw,),
    and ``bias`` (out,) when ``bias=True``: identical to a conv wrapped by the classic
    ``torch.nn.utils.spectral_norm``. In ``train()`` mode each forward runs ``n_power_iterations``
    steps and stores u, v; in ``eval()`` mode the stored u, v are used unchanged. sigma is computed
    in float32 whatever the module dtype.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = True,
        n_power_iterations: int = 1,
        eps: float = 1e-12,
    ) -> None:
        super().__init__()
        conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = conv.kernel_size, conv.stride, conv.padding
        self.dilation, self.groups = conv.dilation, conv.groups
        self.n_power_iterations, self.eps = n_power_iterations, eps
        self.weight_orig = nn.Parameter(conv.weight.detach().clone())
        self.bias = nn.Parameter(conv.bias.detach().clone()) if bias else None
        h = out_channels
        w = self.weight_orig[0].numel()
        self.register_buffer("weight_u", F.normalize(torch.randn(h), dim=0, eps=eps))
        self.register_buffer("weight_v", F.normalize(torch.randn(w), dim=0, eps=eps))

    @property
    def weight(self) -> torch.Tensor:
        """The normalised weight W / sigma with the stored u, v (no power iteration)."""
        return self._normalized_weight(update=False)

    def _normalized_weight(self, update: bool) -> torch.Tensor:
        w = self.weight_orig
        mat = w.reshape(w.shape[0], -1).float()
        # Clones: autograd must not see the buffers, which a later train-mode call updates in place.
        u, v = self.weight_u.float().clone(), self.weight_v.float().clone()
        if update:
            u, v = power_iteration(mat.detach(), u, v, self.n_power_iterations, self.eps)
            with torch.no_grad():
                self.weight_u.copy_(u)
                self.weight_v.copy_(v)
        sigma = spectral_sigma(mat, u, v)
        return (w.float() / sigma).to(w.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self._normalized_weight(update=self.training and self.n_power_iterations > 0)
        bias = self.bias
        return F.conv2d(x, w.to(x.dtype), None if bias is None else bias.to(x.dtype), self.stride, self.padding,
                        self.dilation, self.groups)  # fmt: skip

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, bias={self.bias is not None}"
        )


def conv2d(
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    stride: int = 1,
    padding: int | None = None,
    bias: bool = True,
    spectral: bool = False,
) -> nn.Module:
    """A conv with "same" padding by default; ``spectral`` gives an ``SNConv2d`` (upstream key layout)."""
    if padding is None:
        padding = kernel_size // 2
    if spectral:
        return SNConv2d(in_channels, out_channels, kernel_size, stride, padding, bias=bias)
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=bias)


def make_norm(kind: str, channels: int, affine: bool = False) -> nn.Module:
    """Normalisation layer by name: "instance" (default choice: batch-independent), "batch", "none"."""
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=affine)
    if kind == "batch":
        return nn.BatchNorm2d(channels, affine=affine)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; use 'instance', 'batch' or 'none'")


class ResBlock(nn.Module):
    """Pre-activation residual block: x + conv(act(norm(conv(act(norm(x)))))), 1x1 shortcut if C changes.

    Args:
        in_channels, out_channels: channel counts (the shortcut is a learned 1x1 conv without bias
            when they differ).
        norm: "instance", "batch" or "none" (affine norms).
        spectral: spectral-normalised convolutions.
        negative_slope: LeakyReLU slope (0 gives ReLU).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        norm: str = "instance",
        spectral: bool = False,
        negative_slope: float = 0.2,
    ) -> None:
        super().__init__()
        out_channels = out_channels or in_channels
        mid = min(in_channels, out_channels)
        self.negative_slope = negative_slope
        self.norm_0 = make_norm(norm, in_channels, affine=True)
        self.conv_0 = conv2d(in_channels, mid, 3, spectral=spectral)
        self.norm_1 = make_norm(norm, mid, affine=True)
        self.conv_1 = conv2d(mid, out_channels, 3, spectral=spectral)
        self.conv_s = (
            conv2d(in_channels, out_channels, 1, bias=False, spectral=spectral) if in_channels != out_channels else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = lambda t: F.leaky_relu(t, self.negative_slope)  # noqa: E731
        dx = self.conv_0(act(self.norm_0(x)))
        dx = self.conv_1(act(self.norm_1(dx)))
        return (x if self.conv_s is None else self.conv_s(x)) + dx


class ResidualDown(nn.Module):
    """Residual block that halves the resolution: two 3x3 convolutions (the second strided, LeakyReLU 0.2 between
    and after) plus a 2x2-average-pooled 1x1 skip; (B, cin, H, W) -> (B, cout, H/2, W/2). No normalisation: the
    encoders that use it (prior-sft, the W encoder) regress latents whose scale the batch statistics would blur."""

    def __init__(self, cin: int, cout: int, negative_slope: float = 0.2) -> None:
        super().__init__()
        self.negative_slope = negative_slope
        self.conv0, self.conv1 = nn.Conv2d(cin, cin, 3, 1, 1), nn.Conv2d(cin, cout, 3, 2, 1)
        self.skip = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(F.leaky_relu(self.conv0(x), self.negative_slope))
        return F.leaky_relu(y + self.skip(F.avg_pool2d(x, 2)), self.negative_slope)
