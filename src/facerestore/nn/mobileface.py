"""MobileFace (256-d face identity embedding), a PyTorch port of the TF.js graph model ``mobileface.json`` of the
zoo entry ``mobileface`` (becauseofAI's MobileFace identification network, trained in MXNet, converted to TF.js
by the Human library's author).

Licence: the npm package is MIT; the network's own repository states no licence: **evaluation use only** (the
``id_mobileface`` metric and the pipeline's identity report), never a training loss.

What the graph's node list says (``_check_graph`` verifies it when loading):

- the input is RGB in 0-255 and the graph normalises it itself: ``(x - 127.5) * 0.0078125`` (its constants
  ``minusscalar0_second`` / ``mulscalar0_second``, kept as buffers);
- no convolution has a bias (the batch norms were folded away or trained without shift);
- PReLU is written ``max(0, x) + gamma * min(0, x)``;
- stem: zero-pad 1, 3x3 convolution, stride 2, 3 -> 32 channels, PReLU;
- four stages of one unit each, channels 32, 32, 64, 128: a 1x1 convolution (no activation), a depthwise 3x3
  with stride 2 and PReLU, then two depthwise 3x3 (stride 1, PReLU) whose result is added to the output of the
  strided one (112 -> 56 -> 28 -> 14 -> 7 -> 4 pixels);
- head: flatten in TensorFlow's (row, column, channel) order, 2048 -> 256 matrix product without bias, then the
  folded batch norm ``y * scale + shift``. The embedding is not normalised: compare by cosine.

Input: (B, 3, 112, 112) RGB in 0-255, warped onto ArcFace's 112 px template. Equal to TensorFlow.js 4.22
running the same files (relative difference under 1e-6, tests/nn/test_tfjs.py). Parameters load strictly by the
graph's constant names with shape checks (:func:`load_mobileface`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from facerestore.errors import InputError

__all__ = ["MobileFace", "load_mobileface"]

INPUT_SIZE = 112
EMBEDDING_DIM = 256
STAGE_CHANNELS = (32, 32, 64, 128)  # output channels of stages 1-4 (the stem gives 32)


def _depthwise(channels: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, 3, stride, padding=1, groups=channels, bias=False)


class _Unit(nn.Module):
    """1x1 -> depthwise 3x3 / 2 + PReLU -> two depthwise 3x3 + PReLU, added to the strided output."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(cin, cout, 1, bias=False)
        self.down = _depthwise(cout, 2)
        self.act_down = nn.PReLU(cout)
        self.dw1 = _depthwise(cout, 1)
        self.act1 = nn.PReLU(cout)
        self.dw2 = _depthwise(cout, 1)
        self.act2 = nn.PReLU(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act_down(self.down(self.reduce(x)))
        return self.act2(self.dw2(self.act1(self.dw1(y)))) + y


class MobileFace(nn.Module):
    """(B, 3, 112, 112) RGB 0-255 -> (B, 256) identity embeddings (not normalised)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("input_mean", torch.tensor(127.5))
        self.register_buffer("input_scale", torch.tensor(0.0078125))
        self.stem = nn.Conv2d(3, STAGE_CHANNELS[0], 3, 2, padding=1, bias=False)
        self.act_stem = nn.PReLU(STAGE_CHANNELS[0])
        cins = (STAGE_CHANNELS[0], *STAGE_CHANNELS[:-1])
        self.stages = nn.ModuleList(_Unit(i, o) for i, o in zip(cins, STAGE_CHANNELS))
        self.dense = nn.Linear(4 * 4 * STAGE_CHANNELS[-1], EMBEDDING_DIM, bias=False)
        self.bn_scale = nn.Parameter(torch.ones(EMBEDDING_DIM))
        self.bn_shift = nn.Parameter(torch.zeros(EMBEDDING_DIM))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] != INPUT_SIZE or x.shape[3] != INPUT_SIZE:
            raise InputError(f"MobileFace takes (B, 3, 112, 112) input, got {tuple(x.shape)}")
        x = self.act_stem(self.stem((x - self.input_mean) * self.input_scale))
        for stage in self.stages:
            x = stage(x)
        # TensorFlow flattens NHWC: (row, column, channel) order
        x = self.dense(x.permute(0, 2, 3, 1).flatten(1))
        return x * self.bn_scale + self.bn_shift


def _tf_names(model: MobileFace) -> dict[str, str]:
    """torch parameter name -> graph constant name."""
    out = {"stem.weight": "conv1_weight", "act_stem.weight": "prelu1_gamma", "dense.weight": "dense/kernel",
           "bn_scale": "batchnorm0/mul", "bn_shift": "batchnorm0/sub"}
    for i in range(len(model.stages)):
        s = f"stage{i + 1}_unit1_"
        out.update({f"stages.{i}.reduce.weight": s + "conv0_0_weight", f"stages.{i}.down.weight": s + "conv0_1_df",
                    f"stages.{i}.act_down.weight": s + "prelu0_gamma",
                    f"stages.{i}.dw1.weight": s + "conv1_df", f"stages.{i}.act1.weight": s + "prelu1_gamma",
                    f"stages.{i}.dw2.weight": s + "conv2_df", f"stages.{i}.act2.weight": s + "prelu2_gamma"})
    return out


def state_from_tfjs(weights: dict[str, np.ndarray], model: MobileFace, where: str) -> dict[str, np.ndarray]:
    """The graph's constants as a state dict of ``model``. Structural constants (the PReLU zeros, the paddings,
    the flatten shape) must hold the values the port hard-codes; every constant must be used (InputError else)."""
    from facerestore.nn.tfjs import GraphConstants

    consts = GraphConstants(weights, where)
    take = consts.take
    state: dict[str, np.ndarray] = {}
    for path, name in _tf_names(model).items():
        w = take(name).astype(np.float32)
        if path == "dense.weight":
            w = w.T  # (in, out) -> torch (out, in)
        elif w.ndim == 4 and w.shape[3] == 1 and "_df" in name:
            w = w.transpose(2, 3, 0, 1)  # depthwise (H, W, C, 1) -> (C, 1, H, W)
        elif w.ndim == 4:
            w = w.transpose(3, 2, 0, 1)  # HWIO -> OIHW
        state[path] = w
    state["input_mean"] = take("minusscalar0_second").astype(np.float32).reshape(())
    state["input_scale"] = take("mulscalar0_second").astype(np.float32).reshape(())
    for name in weights:
        if name.startswith(("Maximum", "Minimum")) and name.endswith("/x"):
            if float(np.abs(take(name)).max()) != 0.0:
                raise InputError(f"{where}: {name} is not 0: not the PReLU this port implements")
        elif name.startswith("Pad") and name.endswith("/paddings"):
            if take(name).reshape(-1).tolist() != [0, 0, 1, 1, 1, 1, 0, 0]:
                raise InputError(f"{where}: {name} is not a 1-pixel spatial zero padding")
    flat = take("flatten/Const").reshape(-1).tolist()
    if flat != [-1, model.dense.in_features]:
        raise InputError(f"{where}: flatten shape {flat}, expected [-1, {model.dense.in_features}]")
    consts.check_all_used()
    return state


def _check_graph(nodes: list, where: str) -> None:
    """The graph's convolutions come in the port's order, with its strides and VALID padding after a Pad."""
    model = MobileFace()
    names = _tf_names(model)
    want = [(names["stem.weight"], 2)]
    for i in range(len(model.stages)):
        want += [(names[f"stages.{i}.{k}.weight"], s) for k, s in (("reduce", 1), ("down", 2), ("dw1", 1), ("dw2", 1))]
    got = [(n.inputs[1], n.attr.get("strides", [1, 1, 1, 1])[1], n.attr.get("padding"))
           for n in nodes if n.op in ("Conv2D", "DepthwiseConv2dNative")]
    if [(w, s) for w, s, _ in got] != want or any(p != "VALID" for *_, p in got):
        raise InputError(f"{where}: the graph's convolutions differ from the port ({len(got)} found)")
    ops = {n.op for n in nodes}
    extra = ops - {"Placeholder", "Const", "Sub", "Mul", "AddV2", "Pad", "Conv2D", "DepthwiseConv2dNative",
                   "Maximum", "Minimum", "Reshape", "MatMul"}
    if extra:
        raise InputError(f"{where}: the graph has ops the port does not implement: {', '.join(sorted(extra))}")


def load_mobileface(path: str | os.PathLike, device: str | torch.device = "cpu") -> MobileFace:
    """Build MobileFace from a TF.js ``mobileface.json`` (and its ``.bin`` next to it), eval mode."""
    from facerestore.nn.tfjs import assign_strict, read_graph_model

    m = read_graph_model(path, "mobileface.json", ("data",), ("batchnorm0/add_1",), "MobileFace")
    where = Path(path).name if Path(path).suffix == ".json" else "mobileface.json"
    _check_graph(m.nodes, where)
    net = MobileFace()
    assign_strict(net, state_from_tfjs(m.weights, net, where), where)
    return net.to(device).eval()
