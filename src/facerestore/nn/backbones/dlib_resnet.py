"""dlib's face recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) in PyTorch.

The network of dlib's ``dnn_face_recognition_ex.cpp`` (29 convolutions, 128-d metric embedding, 150 px
chips), rebuilt layer by layer and filled from dlib's own serialised file, so that the embeddings equal
``dlib.face_recognition_model_v1.compute_face_descriptor`` (the FED metric's network) while being
differentiable, batched and GPU-ready: usable as an identity loss for training.

dlib particulars reproduced here (checked against the file's layer fields when loading):

- input: RGB, ``(pixel - mean) / 256`` with per-channel means stored in the file (about 122.8, 117.0, 104.3);
- stride-2 convolutions and pools have no padding; stride-1 3x3 convolutions pad 1;
- ``affine`` layers (frozen batch norm): ``gamma * x + beta`` per channel;
- residual sums (``add_prev``) of tensors of different sizes are zero-padded to the larger size in every
  dimension, aligned at the top-left corner (downsampling blocks add a 64-channel branch to a 32-channel
  average-pooled skip, and at 8 px a 3x3 branch to a 4x4 skip);
- the head averages over all positions and applies a bias-free 256 -> 128 linear layer.

The ``.dat`` reader parses dlib's stream format (integers: a size byte, sign in bit 7, then little-endian
bytes; tensors: version 2, four sizes, raw little-endian float32) and never executes anything from the file.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from facerestore.errors import InputError, WeightsMissingError
from facerestore.nn.backbones._base import freeze

__all__ = ["DLIB_CHIP_SIZE", "DlibFaceResNet", "load_dlib_face_resnet", "read_dlib_face_resnet"]

DLIB_CHIP_SIZE = 150
# (width, downsample) of the residual blocks, input side first: alevel4 .. alevel0 of dlib's example.
_BLOCKS: tuple[tuple[int, bool], ...] = (
    (32, False), (32, False), (32, False),
    (64, True), (64, False), (64, False), (64, False),
    (128, True), (128, False), (128, False),
    (256, True), (256, False), (256, False),
    (256, True),
)


class _Affine(nn.Module):
    """dlib's ``affine_`` layer: per-channel ``gamma * x + beta`` (a frozen batch norm)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma.view(1, -1, 1, 1) + self.beta.view(1, -1, 1, 1)


def _padded_add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev``: sum of (B, C, H, W) tensors, each zero-padded (bottom/right) to the larger size."""
    c, h, w = max(a.shape[1], b.shape[1]), max(a.shape[2], b.shape[2]), max(a.shape[3], b.shape[3])

    def pad(t: torch.Tensor) -> torch.Tensor:
        if t.shape[1:] == (c, h, w):
            return t
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return pad(a) + pad(b)


class _ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, down: bool) -> None:
        super().__init__()
        self.down = down
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=2 if down else 1, padding=0 if down else 1)
        self.bn1 = _Affine(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.bn2 = _Affine(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        skip = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(_padded_add(skip, h))


class DlibFaceResNet(nn.Module):
    """dlib's 128-d face recognition ResNet.

    ``forward(x)``: x (B, 3, 150, 150) RGB in [0, 1] — a dlib face chip (``dlib.get_face_chip``, padding
    0.25) — to (B, 128) embeddings; same person when the Euclidean distance is below about 0.6.
    Other sizes run but leave the domain dlib trained on.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("pixel_mean", torch.tensor([122.782, 117.001, 104.298]).view(1, 3, 1, 1))
        self.conv = nn.Conv2d(3, 32, 7, stride=2, padding=0)
        self.bn = _Affine(32)
        blocks, cin = [], 32
        for cout, down in _BLOCKS:
            blocks.append(_ResBlock(cin, cout, down))
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(256, 128, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = (x * 255.0 - self.pixel_mean.to(x.dtype)) / 256.0
        h = F.max_pool2d(F.relu(self.bn(self.conv(h))), 3, 2)
        h = self.blocks(h)
        return self.fc(h.mean(dim=(2, 3)))


# ---- dlib's serialisation format ------------------------------------------------------------------


@dataclass
class _Conv:
    params: torch.Tensor
    filters: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def int(self) -> int:
        if self.pos >= len(self.data):
            raise ValueError(f"corrupt dlib stream: it ends at offset {self.pos}, inside an integer")
        head = self.data[self.pos]
        size, negative = head & 0x0F, bool(head & 0x80)
        if size > 8:
            raise ValueError(f"corrupt dlib stream: integer of {size} bytes at offset {self.pos}")
        value = int.from_bytes(self.data[self.pos + 1:self.pos + 1 + size], "little")
        self.pos += 1 + size
        return -value if negative else value

    def tensor(self) -> torch.Tensor:
        start = self.pos
        if self.int() != 2:
            raise ValueError(f"unsupported dlib tensor version at offset {start}")
        shape = [self.int() for _ in range(4)]
        n = shape[0] * shape[1] * shape[2] * shape[3]
        raw = self.data[self.pos:self.pos + 4 * n]
        if len(raw) != 4 * n:
            raise ValueError("truncated dlib file")
        self.pos += 4 * n
        return torch.tensor(struct.unpack(f"<{n}f", raw)).view(shape)

    def float(self) -> float:
        mantissa, exponent = self.int(), self.int()
        return mantissa * 2.0 ** exponent

    def seek_name(self, name: str) -> None:
        """Move past the next serialised string ``name`` (a size-prefixed layer name)."""
        key = bytes([1, len(name)]) + name.encode()
        i = self.data.find(key, self.pos)
        if i < 0:
            raise ValueError(f"layer {name!r} not found after offset {self.pos}: not dlib's face ResNet file")
        self.pos = i + len(key)


def read_dlib_face_resnet(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """State dict of ``DlibFaceResNet`` read from ``dlib_face_recognition_resnet_model_v1.dat``.

    Raises ValueError when the file's layers do not have the expected structure.
    """
    r = _Reader(Path(path).read_bytes())
    r.seek_name("input_rgb_image_sized")
    mean = [r.float() for _ in range(3)]
    chip = (r.int(), r.int())
    if chip != (DLIB_CHIP_SIZE, DLIB_CHIP_SIZE):
        raise ValueError(f"expected a {DLIB_CHIP_SIZE} px input layer, the file has {chip}")

    def conv() -> _Conv:
        r.seek_name("con_4")
        params = r.tensor().flatten()
        filters, kh, kw, sy, sx, py, px = (r.int() for _ in range(7))
        return _Conv(params, filters, (kh, kw), (sy, sx), (py, px))

    def affine() -> torch.Tensor:
        r.seek_name("affine_")
        return r.tensor().flatten()

    net = DlibFaceResNet()
    state: dict[str, torch.Tensor] = {"pixel_mean": torch.tensor(mean).view(1, 3, 1, 1)}

    def fill(prefix: str, module: nn.Conv2d, bn_prefix: str) -> None:
        c = conv()
        expected = (module.out_channels, module.kernel_size, module.stride, module.padding)
        if (c.filters, c.kernel, c.stride, c.padding) != expected:
            raise ValueError(f"{prefix}: file has {c}, expected {expected}")
        n_w = module.weight.numel()
        if c.params.numel() != n_w + module.out_channels:
            raise ValueError(f"{prefix}: {c.params.numel()} parameters, expected {n_w + module.out_channels}")
        state[f"{prefix}.weight"] = c.params[:n_w].view_as(module.weight)
        state[f"{prefix}.bias"] = c.params[n_w:]
        ab = affine()
        if ab.numel() != 2 * module.out_channels:
            raise ValueError(f"{bn_prefix}: {ab.numel()} parameters, expected {2 * module.out_channels}")
        state[f"{bn_prefix}.gamma"], state[f"{bn_prefix}.beta"] = ab.chunk(2)

    fill("conv", net.conv, "bn")
    r.seek_name("max_pool_2")
    if [r.int() for _ in range(6)] != [3, 3, 2, 2, 0, 0]:
        raise ValueError("unexpected max-pool layer")
    for i, block in enumerate(net.blocks):
        fill(f"blocks.{i}.conv1", block.conv1, f"blocks.{i}.bn1")
        fill(f"blocks.{i}.conv2", block.conv2, f"blocks.{i}.bn2")
    r.seek_name("fc_2")
    outputs, inputs = r.int(), r.int()
    weight = r.tensor()
    if (outputs, inputs) != (128, 256) or weight.numel() != 128 * 256:
        raise ValueError(f"unexpected head: {inputs} -> {outputs}")
    state["fc.weight"] = weight.reshape(256, 128).t().contiguous()  # dlib stores (inputs, outputs)
    missing = set(net.state_dict()) - set(state)
    if missing:  # pragma: no cover - guarded by the structure above
        raise ValueError(f"parameters not found in the file: {sorted(missing)}")
    return state


def load_dlib_face_resnet(path: str | os.PathLike | None = None) -> DlibFaceResNet:
    """``DlibFaceResNet`` in eval mode with frozen weights from dlib's file (default: the installed
    ``face_recognition_models`` copy, or ``$FACERESTORE_DLIB_MODELS``)."""
    if path is None:
        from facerestore.zoo.dlib_files import model_path

        path = model_path("dlib_face_recognition_resnet_model_v1.dat")
    if not Path(path).is_file():
        raise WeightsMissingError(f"dlib face recognition model not found: {path}")
    net = DlibFaceResNet()
    try:
        state = read_dlib_face_resnet(path)
    except (ValueError, IndexError, struct.error) as exc:  # a cut or foreign .dat: one line, not a traceback
        raise InputError(f"{path} is not dlib's face recognition model ({exc})") from None
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise InputError(f"{path} does not hold dlib's face recognition ResNet ({str(exc).splitlines()[0]})") \
            from None
    return freeze(net)
