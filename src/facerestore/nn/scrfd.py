"""SCRFD-2.5G with 5 keypoints (Guo et al., "Sample and Computation Redistribution for Efficient Face
Detection", 2021; InsightFace's ``scrfd_2.5g_bnkps``), in PyTorch.

The weights are InsightFace's, released for non-commercial research only: the detector that uses them is
optional and research-only. They come from the ONNX export ``models/scrfd.onnx`` inside the source
distribution of ``scrfd==0.3.0`` (zoo entry ``scrfd-2.5g``). Batch norm is folded into the convolutions in that
export, so every layer here is a convolution with a bias. The export's node names hold no module paths
(``Conv_0``), so the weights load by call order (:func:`facerestore.nn.onnx_weights.load_convs_in_order`):
the file's 57 convolutions in graph order against ours in the order our forward pass calls them, each shape
and attribute checked; where the file names a tensor (``neck.lateral_convs.0.conv.weight``,
``bbox_head.stride_cls.(8, 8).weight``) the name must be that of the module it lands in (ours are named as
InsightFace's mmdetection checkpoint), and every initializer of the file must be used (:func:`load_scrfd`).

The network: a ResNet-v1e-style backbone (deep stem of three 3x3 convolutions and a 2x2 max pool; basic blocks
3/5/3/2 of 24/48/48/80 channels; average-pool shortcuts where the stride changes) -> PAFPN neck (24 channels,
strides 8/16/32: lateral 1x1, top-down nearest upsampling, 3x3, bottom-up strided 3x3) -> per stride a head of
two 3x3 convolutions (64 channels) and three 3x3 outputs for 2 anchors per location: a face score (sigmoid),
the 4 distances from the anchor point to the box sides (times a learnt per-stride scale) and 10 keypoint
offsets, distances and offsets in units of the stride. :mod:`facerestore.faces.scrfd` decodes them.

Input: (N, 3, H, W) float32 RGB, ``(pixel - 127.5) / 128``, H and W multiples of 32 (see :func:`preprocess`).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facerestore.errors import InputError
from facerestore.nn.onnx_proto import OnnxModel

__all__ = ["MEAN", "SCRFD", "STD", "STRIDES", "load_scrfd", "preprocess"]

MEAN = 127.5
STD = 128.0
STRIDES = (8, 16, 32)
ANCHORS = 2
_KEYS = tuple(f"({s}, {s})" for s in STRIDES)  # InsightFace's per-stride module keys
# operators of the export (anything else means another architecture)
_OPS = {"Conv", "Relu", "Add", "MaxPool", "AveragePool", "Resize", "Mul", "Sigmoid", "Transpose", "Reshape"}


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride, k // 2)


class _BasicBlock(nn.Module):
    """conv1 (3x3, stride) -> ReLU -> conv2 (3x3), plus the input (or its average-pool + 1x1 shortcut), ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv(cin, cout, 3, stride)
        self.conv2 = _conv(cout, cout, 3)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or cin != cout:
            pool = nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False)
            self.downsample = nn.Sequential(OrderedDict([("0", pool), ("1", _conv(cin, cout, 1))]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(F.relu(self.conv1(x)))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class _Backbone(nn.Module):
    def __init__(self, stem: int = 24, blocks: tuple[int, ...] = (3, 5, 3, 2),
                 planes: tuple[int, ...] = (24, 48, 48, 80)) -> None:
        super().__init__()
        self.stem = nn.Sequential(OrderedDict([
            ("0", _conv(3, stem // 2, 3, 2)), ("2", nn.ReLU()), ("3", _conv(stem // 2, stem // 2)), ("5", nn.ReLU()),
            ("6", _conv(stem // 2, stem)), ("8", nn.ReLU()),
        ]))
        self.maxpool = nn.MaxPool2d(2, 2)
        cin = stem
        for i, (n, c) in enumerate(zip(blocks, planes)):
            stride = 1 if i == 0 else 2
            layer = [_BasicBlock(cin, c, stride)] + [_BasicBlock(c, c) for _ in range(n - 1)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*layer))
            cin = c

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.layer1(self.maxpool(self.stem(x)))
        c2 = self.layer2(x)
        c3 = self.layer3(c2)
        return [c2, c3, self.layer4(c3)]  # strides 8, 16, 32


class _ConvModule(nn.Module):
    """mmcv's ConvModule without norm or activation: the checkpoint's ``.conv`` level of naming."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = _conv(cin, cout, k, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class _PAFPN(nn.Module):
    def __init__(self, channels: tuple[int, ...] = (48, 48, 80), out: int = 24) -> None:
        super().__init__()
        self.lateral_convs = nn.ModuleList(_ConvModule(c, out, 1) for c in channels)
        self.fpn_convs = nn.ModuleList(_ConvModule(out, out, 3) for _ in channels)
        self.downsample_convs = nn.ModuleList(_ConvModule(out, out, 3, 2) for _ in channels[1:])
        self.pafpn_convs = nn.ModuleList(_ConvModule(out, out, 3) for _ in channels[1:])

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        lat = [conv(f) for conv, f in zip(self.lateral_convs, feats)]
        for i in range(len(lat) - 1, 0, -1):
            lat[i - 1] = lat[i - 1] + F.interpolate(lat[i], size=lat[i - 1].shape[-2:], mode="nearest")
        inter = [conv(x) for conv, x in zip(self.fpn_convs, lat)]
        for i, conv in enumerate(self.downsample_convs):
            inter[i + 1] = inter[i + 1] + conv(inter[i])
        return [inter[0]] + [conv(x) for conv, x in zip(self.pafpn_convs, inter[1:])]


class _Scale(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class _Head(nn.Module):
    """Per stride: two 3x3 convolutions with ReLU (``cls_stride_convs``), then the score, box-distance and
    keypoint convolutions, each for 2 anchors per location; the distances are multiplied by a learnt scale."""

    def __init__(self, cin: int = 24, feat: int = 64, stacked: int = 2) -> None:
        super().__init__()
        self.cls_stride_convs = nn.ModuleDict(
            {k: nn.ModuleList(_ConvModule(cin if i == 0 else feat, feat, 3) for i in range(stacked)) for k in _KEYS})
        self.stride_cls = nn.ModuleDict({k: _conv(feat, ANCHORS) for k in _KEYS})
        self.stride_reg = nn.ModuleDict({k: _conv(feat, ANCHORS * 4) for k in _KEYS})
        self.stride_kps = nn.ModuleDict({k: _conv(feat, ANCHORS * 10) for k in _KEYS})
        self.scales = nn.ModuleList(_Scale() for _ in _KEYS)

    def forward(self, feats: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        scores, boxes, kps = [], [], []

        def flat(t: torch.Tensor, per: int) -> torch.Tensor:  # (N, anchors * per, h, w) -> (N, h * w * anchors, per)
            return t.permute(0, 2, 3, 1).reshape(t.shape[0], -1, per)

        for key, scale, x in zip(_KEYS, self.scales, feats):
            for conv in self.cls_stride_convs[key]:
                x = F.relu(conv(x))
            scores.append(torch.sigmoid(flat(self.stride_cls[key](x), 1)))
            boxes.append(flat(scale(self.stride_reg[key](x)), 4))
            kps.append(flat(self.stride_kps[key](x), 10))
        return scores, boxes, kps


class SCRFD(nn.Module):
    """SCRFD-2.5G with keypoints. ``forward(x)`` returns the raw outputs of the reference export, per stride
    8/16/32: ``scores`` (N, A_s, 1) face probabilities, ``boxes`` (N, A_s, 4) distances (left, top, right,
    bottom) from the anchor point in units of the stride, ``kps`` (N, A_s, 10) keypoint offsets (x, y per point)
    in units of the stride; A_s = 2 (H / s) (W / s), row-major locations, 2 anchors each."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = _Backbone()
        self.neck = _PAFPN()
        self.bbox_head = _Head()

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] % 32 or x.shape[3] % 32 or x.shape[2] < 32 or x.shape[3] < 32:
            raise InputError(f"SCRFD expects (N, 3, H, W) input with H and W multiples of 32, got {tuple(x.shape)}")
        return self.bbox_head(self.neck(self.backbone(x)))


def _check_graph(model: OnnxModel, used: set[str], what: str) -> None:
    """The export is the architecture we port: only its operators, every initializer used by a convolution, a
    scale or a shape constant (nearest Resize targets, Reshape to (1, -1, 1 | 4 | 10))."""
    ops = {n.op_type for n in model.nodes}
    if ops - _OPS:
        raise InputError(f"{what}: operators {sorted(ops - _OPS)} are not in SCRFD-2.5G")
    inits = model.initializers
    structural: set[str] = set()
    for n in model.nodes:
        if n.op_type == "Reshape" and n.inputs[1] in inits:
            shape = inits[n.inputs[1]].tolist()
            if len(shape) != 3 or shape[1] != -1 or shape[2] not in (1, 4, 10):
                raise InputError(f"{what}: {n.name} reshapes to {shape}, not to (N, -1, 1 | 4 | 10)")
            structural.add(n.inputs[1])
        elif n.op_type == "Resize":
            if n.attributes.get("mode") != b"nearest":
                raise InputError(f"{what}: {n.name} is not a nearest-neighbour upsampling")
            structural.update(i for i in n.inputs[1:] if i in inits)
    unused = sorted(set(inits) - used - structural)
    if unused:
        raise InputError(f"{what}: {len(unused)} initializers are not used by the architecture: {unused[:3]}")


def load_scrfd(source: str | os.PathLike | bytes | None = None) -> SCRFD:
    """SCRFD with weights from ``source``: ONNX bytes, an ``.onnx`` file, or None for the zoo entry
    ``scrfd-2.5g`` (WeightsMissingError when it is not cached). In eval mode."""
    from facerestore.nn.onnx_weights import (
        conv_sequence,
        initializers,
        load_convs_in_order,
        load_model,
        read_model_file,
    )

    what = "SCRFD weights"
    if source is None:
        from facerestore import zoo

        source = zoo.weights_path("scrfd-2.5g") / "scrfd.onnx"
    if isinstance(source, bytes | bytearray):
        data = bytes(source)
    else:
        what = f"SCRFD weights {Path(source).name}"
        data = read_model_file(source, what)
    model = load_model(data, what)
    net = SCRFD()
    scales = [f"bbox_head.scales.{i}.scale" for i in range(len(STRIDES))]
    convs = conv_sequence(model)
    names = load_convs_in_order(net, convs, torch.zeros(1, 3, 64, 64), what, others=tuple(scales))
    used: set[str] = set()
    for name, node in zip(names, (n for n in model.nodes if n.op_type == "Conv")):
        used.update(node.inputs[1:3])
        # a weight the file names must land in our module of that name (biases are not checked: the exporter
        # shares one tensor between layers whose biases are equal)
        if not node.inputs[1].isdigit() and node.inputs[1] != f"{name}.weight":
            raise InputError(f"{what}: the file's {node.inputs[1]} would load into {name}: the layers are out of order")
    arrays = initializers(model)
    params = dict(net.named_parameters())
    with torch.no_grad():
        for name in scales:
            value = arrays.get(name)
            if value is None or value.size != 1:
                raise InputError(f"{what}: {name} is missing or not a scalar")
            params[name].fill_(float(np.asarray(value, np.float32).reshape(())))
            used.add(name)
    _check_graph(model, used, what)
    return net.eval()


def preprocess(rgb: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (1, 3, H, W) float32 ``(rgb - 127.5) / 128`` (H, W: multiples of 32)."""
    x = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32))
    return ((x - MEAN) / STD).permute(2, 0, 1).unsqueeze(0).contiguous()
