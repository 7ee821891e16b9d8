"""MobileFaceNet (192-d face identity embedding), a PyTorch port of the TF.js graph model of the zoo entry
``mobilefacenet`` (sirius-ai's MobileFaceNet_TF, converted to TF.js by the Human library's author).

Licence: the npm package is MIT but the model's own licence is not stated: **evaluation use only** (the
``id_mfn`` metric and the pipeline's identity report), never a training loss.

The layer order, strides, padding and activations are those of the graph's node list (``mobilefacenet.json``):

- every convolution is a ``_FusedConv2D`` / ``FusedDepthwiseConv2dNative`` with its batch norm folded into the
  kernel and a bias (``*_bn_offset``); TF "SAME" padding, which is asymmetric for stride 2 on even sizes
  (112 -> 56 pads 0 before and 1 after), so it is computed per call (:func:`same_pad`);
- PReLU appears as ``relu(x) + m * (x - |x|)`` with ``m = alpha / 2`` (the ``.../mul`` constants);
- every depthwise 3x3 has ``Relu`` fused into it by the converter *before* its PReLU, so its PReLU acts on
  non-negative values (an identity): kept as in the graph;
- stem: Conv2d_0 (3x3/2, 64, PReLU), SeparableConv2d (dw 3x3, ReLU, PReLU), Conv (1x1, 64, linear);
- inverted residual blocks (expand 1x1 + PReLU, dw 3x3 + ReLU + PReLU, project 1x1 linear; residual add
  when the stride is 1 and the channels match): Conv2d_2 x5 (128/64, first stride 2), Conv2d_3 x1 (256/128,
  stride 2), Conv2d_4 x6 (256/128), Conv2d_5 x1 (512/128, stride 2), Conv2d_6 x2 (256/128);
- Conv2d_7 (1x1, 512, PReLU), Logits: dw 7x7 VALID (GDConv), 1x1 512 VALID, LinearConv1x1 192, squeeze,
  ``x * rsqrt(max(sum(x^2), eps))`` with the graph's eps (1e-10).

Input: (B, 3, 112, 112) RGB, float, in the range the embedder feeds (see ``facerestore.faces.identity``).
Equal to TensorFlow.js 4.22 running the same files (relative difference under 1e-6, tests/nn/test_tfjs.py).
Parameters load strictly by the graph's constant names with shape checks (:func:`load_mobilefacenet`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facerestore.errors import InputError

__all__ = ["MobileFaceNet", "load_mobilefacenet", "same_pad"]

_P = "MobileFaceNet/MobileFaceNet/"
_L = "MobileFaceNet/Logits/"
INPUT_SIZE = 112
EMBEDDING_DIM = 192

# (scope, number of blocks, expanded channels, output channels, stride of the first block)
STAGES = (("Conv2d_2", 5, 128, 64, 2), ("Conv2d_3", 1, 256, 128, 2), ("Conv2d_4", 6, 256, 128, 1),
          ("Conv2d_5", 1, 512, 128, 2), ("Conv2d_6", 2, 256, 128, 1))


def same_pad(x: torch.Tensor, k: int, s: int) -> torch.Tensor:
    """Zero-pad (B, C, H, W) as TensorFlow's "SAME" padding for kernel ``k`` and stride ``s`` (extra pixel
    after, not before)."""
    pads = []
    for size in (x.shape[3], x.shape[2]):
        out = -(-size // s)
        total = max((out - 1) * s + k - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads) if any(pads) else x


class _Conv(nn.Module):
    """Fused conv (BN folded) + bias, TF padding; ``depthwise`` for FusedDepthwiseConv2dNative."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, depthwise: bool = False,
                 padding: str = "SAME", relu: bool = False, prelu: bool = False) -> None:
        super().__init__()
        self.k, self.stride, self.padding, self.relu = k, stride, padding, relu
        self.groups = cin if depthwise else 1
        self.weight = nn.Parameter(torch.zeros(cout, cin // self.groups, k, k))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.alpha = nn.Parameter(torch.zeros(cout)) if prelu else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding == "SAME":
            x = same_pad(x, self.k, self.stride)
        x = F.conv2d(x, self.weight, self.bias, self.stride, 0, 1, self.groups)
        if self.relu:
            x = F.relu(x)
        if self.alpha is not None:
            x = F.prelu(x, self.alpha)
        return x


class _InvRes(nn.Module):
    def __init__(self, cin: int, mid: int, cout: int, stride: int) -> None:
        super().__init__()
        self.expand = _Conv(cin, mid, 1, prelu=True)
        self.dw = _Conv(mid, mid, 3, stride, depthwise=True, relu=True, prelu=True)
        self.project = _Conv(mid, cout, 1)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.dw(self.expand(x)))
        return y + x if self.residual else y


class MobileFaceNet(nn.Module):
    """(B, 3, 112, 112) -> (B, 192) unit-norm identity embeddings."""

    def __init__(self) -> None:
        super().__init__()
        self.conv0 = _Conv(3, 64, 3, 2, prelu=True)
        self.dw0 = _Conv(64, 64, 3, 1, depthwise=True, relu=True, prelu=True)
        self.conv0b = _Conv(64, 64, 1)
        blocks = []
        cin = 64
        for _scope, n, mid, cout, stride in STAGES:
            for i in range(n):
                blocks.append(_InvRes(cin, mid, cout, stride if i == 0 else 1))
                cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.conv7 = _Conv(128, 512, 1, prelu=True)
        self.gdconv = _Conv(512, 512, 7, depthwise=True, padding="VALID")
        self.conv_logits = _Conv(512, 512, 1, padding="VALID")
        self.linear = _Conv(512, EMBEDDING_DIM, 1)
        self.register_buffer("norm_eps", torch.tensor(1e-10))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 192) embeddings before the L2 normalisation."""
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] != INPUT_SIZE or x.shape[3] != INPUT_SIZE:
            raise InputError(f"MobileFaceNet takes (B, 3, 112, 112) input, got {tuple(x.shape)}")
        x = self.conv0b(self.dw0(self.conv0(x)))
        for b in self.blocks:
            x = b(x)
        x = self.linear(self.conv_logits(self.gdconv(self.conv7(x))))
        return x.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        return f * torch.rsqrt(torch.clamp((f * f).sum(1, keepdim=True), min=self.norm_eps))


def _tf_scopes(model: MobileFaceNet) -> dict[str, str]:
    """torch module path of every _Conv -> its TF scope in the graph."""
    out = {"conv0": _P + "Conv2d_0", "dw0": _P + "SeparableConv2d", "conv0b": _P + "Conv",
           "conv7": _P + "Conv2d_7", "gdconv": _L + "SeparableConv2d", "conv_logits": _L + "Conv",
           "linear": _L + "LinearConv1x1"}
    i = 0
    for scope, n, *_ in STAGES:
        for j in range(n):
            base = f"{_P}{scope}_InvResBlock_{j}/"
            out[f"blocks.{i}.expand"] = base + "Conv"
            out[f"blocks.{i}.dw"] = base + "SeparableConv2d"
            out[f"blocks.{i}.project"] = base + "Conv_1"
            i += 1
    return out


def state_from_tfjs(weights: dict[str, np.ndarray], model: MobileFaceNet, where: str) -> dict[str, np.ndarray]:
    """The graph's constants as a state dict of ``model``; every constant must be used (InputError else)."""
    from facerestore.nn.tfjs import GraphConstants

    consts = GraphConstants(weights, where)
    state: dict[str, np.ndarray] = {}

    def take(name: str) -> np.ndarray:
        return consts.take(name).astype(np.float32)

    for path, scope in _tf_scopes(model).items():
        conv = model.get_submodule(path)
        depthwise = conv.groups > 1
        w = take(scope + ("/depthwise_weights" if depthwise else "/Conv2D_weights"))
        b = take(scope + ("/depthwise_bn_offset" if depthwise else "/Conv2D_bn_offset"))
        if w.ndim != 4:
            raise InputError(f"{where}: {scope} kernel has shape {w.shape}, expected 4 dimensions")
        # TF HWIO (depthwise: H, W, C, multiplier) -> torch OIHW (depthwise: C * multiplier, 1, H, W)
        state[path + ".weight"] = w.transpose(2, 3, 0, 1).reshape(-1, 1, *w.shape[:2]) if depthwise \
            else w.transpose(3, 2, 0, 1)
        state[path + ".bias"] = b
        if conv.alpha is not None:
            state[path + ".alpha"] = 2.0 * take(scope + "/mul")  # the graph stores alpha / 2
    eps = take("embeddings/Maximum/y")
    axis = consts.take("embeddings/Sum/reduction_indices")
    if int(axis.reshape(-1)[0]) not in (1, -1):
        raise InputError(f"{where}: the embedding is not normalised over its channel axis")
    state["norm_eps"] = eps.reshape(())
    consts.check_all_used()
    return state


def _check_graph(nodes: list, where: str) -> None:
    """The graph's convolutions have the strides, padding and fused activations this port implements."""
    model = MobileFaceNet()
    scopes = _tf_scopes(model)
    convs = {n.name: n for n in nodes if n.op in ("_FusedConv2D", "FusedDepthwiseConv2dNative")}
    if len(convs) != len(scopes):
        raise InputError(f"{where}: the graph has {len(convs)} convolutions, MobileFaceNet has {len(scopes)}")
    for path, scope in scopes.items():
        conv = model.get_submodule(path)
        node = next((n for name, n in convs.items() if name.startswith(scope + "/")
                     and name[len(scope) + 1:].count("/") <= 1), None)
        if node is None:
            raise InputError(f"{where}: no convolution in scope {scope}")
        stride = node.attr.get("strides", [1, 1, 1, 1])[1]
        fused = list(node.attr.get("fused_ops", []))
        if stride != conv.stride or node.attr.get("padding") != conv.padding \
                or fused != (["BiasAdd", "Relu"] if conv.relu else ["BiasAdd"]):
            raise InputError(f"{where}: {node.name} (stride {stride}, {node.attr.get('padding')}, {fused}) differs "
                             "from the port")


def load_mobilefacenet(path: str | os.PathLike, device: str | torch.device = "cpu") -> MobileFaceNet:
    """Build MobileFaceNet from a TF.js ``mobilefacenet.json`` (and its ``.bin`` next to it), eval mode."""
    from facerestore.nn.tfjs import assign_strict, read_graph_model

    m = read_graph_model(path, "mobilefacenet.json", ("img_inputs",), ("embeddings",), "MobileFaceNet")
    where = Path(path).name if Path(path).suffix == ".json" else "mobilefacenet.json"
    _check_graph(m.nodes, where)
    net = MobileFaceNet()
    assign_strict(net, state_from_tfjs(m.weights, net, where), where)
    return net.to(device).eval()
