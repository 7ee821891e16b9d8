"""MediaPipe Face Mesh (468 landmarks) as a PyTorch module, loaded from the TFLite flatbuffer.

The network (``face_landmark.tflite``, "facemesh_facecontours_faceflag-blaze_shift30-2019_01_14"): a
BlazeNet-style trunk of residual blocks (3x3 depthwise conv -> 1x1 conv, plus a skip that is max-pooled 2x2
when the block strides and zero-padded in channels when it widens, then PReLU) from a 192x192 RGB crop in
[0, 1] down to 6x6x128, and two heads: the landmark head (1404 = 468 x (x, y, z) values, x and y in pixels
of the 192 px input crop, z in the same scale relative to the face centre) and the face-flag head (one logit:
sigmoid > 0.5 means a face is in the crop).

Every layer is named after its TFLite tensor (``conv2d_20``, ``depthwise_conv2d_3``, ``p_re_lu_7``) and
:func:`load_facemesh` loads the flatbuffer's constants strictly by those names: a missing or unexpected array,
a shape that differs, or an operator whose stride, padding or activation differs from this port fails with one
:class:`~facerestore.errors.InputError` line. TensorFlow "SAME" padding is reproduced exactly (extra pixel at
the bottom/right when the total is odd).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facerestore.errors import InputError

__all__ = ["INPUT_SIZE", "NUM_LANDMARKS", "FaceMesh", "load_facemesh", "weights_from_tflite"]

INPUT_SIZE = 192
NUM_LANDMARKS = 468

# residual blocks: (depthwise conv, 1x1 conv, PReLU, stride, in channels, out channels)
_Block = tuple[str, str, str, int, int, int]


def _blocks(first_dw: int, first_pw: int, first_act: int, plan: Sequence[tuple[int, int, int]]) -> list[_Block]:
    out = []
    dw, pw, act = first_dw, first_pw, first_act
    for stride, cin, cout in plan:
        out.append((f"depthwise_conv2d_{dw}" if dw else "depthwise_conv2d", f"conv2d_{pw}", f"p_re_lu_{act}",
                    stride, cin, cout))
        dw, pw, act = dw + 1, pw + 1, act + 1
    return out


TRUNK: list[_Block] = _blocks(0, 1, 1, [
    (1, 16, 16), (1, 16, 16), (2, 16, 32), (1, 32, 32), (1, 32, 32), (2, 32, 64), (1, 64, 64), (1, 64, 64),
    (2, 64, 128), (1, 128, 128), (1, 128, 128), (2, 128, 128), (1, 128, 128), (1, 128, 128),
])
LANDMARK_BLOCKS: list[_Block] = _blocks(14, 15, 15, [(2, 128, 128), (1, 128, 128), (1, 128, 128)])
LANDMARK_PROJ = ("conv2d_18", "p_re_lu_18")
LANDMARK_TAIL: list[_Block] = [("depthwise_conv2d_17", "conv2d_19", "p_re_lu_19", 1, 32, 32)]
LANDMARK_OUT = "conv2d_20"
FLAG_BLOCKS: list[_Block] = [("depthwise_conv2d_22", "conv2d_27", "p_re_lu_25", 2, 128, 128)]
FLAG_PROJ = ("conv2d_28", "p_re_lu_26")
FLAG_TAIL: list[_Block] = [("depthwise_conv2d_23", "conv2d_29", "p_re_lu_27", 1, 32, 32)]
FLAG_OUT = "conv2d_30"


def _same_pad(x: torch.Tensor, k: int, stride: int) -> torch.Tensor:
    """TensorFlow 'SAME' padding for a k x k window: total max((ceil(n/s)-1)*s + k - n, 0), the odd pixel at
    the end."""
    pads = []
    for n in (x.shape[-1], x.shape[-2]):
        out = -(-n // stride)
        total = max((out - 1) * stride + k - n, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads) if any(pads) else x


class FaceMesh(nn.Module):
    """(N, 3, 192, 192) RGB in [0, 1] -> (landmarks (N, 468, 3) in input-crop pixels, face logit (N,))."""

    def __init__(self) -> None:
        super().__init__()
        layers: dict[str, nn.Module] = {
            "conv2d": nn.Conv2d(3, 16, 3, stride=2),
            "p_re_lu": nn.PReLU(16),
        }
        for dw, pw, act, stride, cin, cout in TRUNK + LANDMARK_BLOCKS + LANDMARK_TAIL + FLAG_BLOCKS + FLAG_TAIL:
            layers[dw] = nn.Conv2d(cin, cin, 3, stride=stride, groups=cin)
            layers[pw] = nn.Conv2d(cin, cout, 1)
            layers[act] = nn.PReLU(cout)
        for conv, act in (LANDMARK_PROJ, FLAG_PROJ):
            layers[conv] = nn.Conv2d(128, 32, 1)
            layers[act] = nn.PReLU(32)
        layers[LANDMARK_OUT] = nn.Conv2d(32, NUM_LANDMARKS * 3, 3, stride=3)
        layers[FLAG_OUT] = nn.Conv2d(32, 1, 3, stride=3)
        self.layers = nn.ModuleDict(layers)

    def _block(self, x: torch.Tensor, spec: _Block) -> torch.Tensor:
        dw, pw, act, stride, cin, cout = spec
        y = self.layers[dw](_same_pad(x, 3, stride))
        y = self.layers[pw](y)
        skip = F.max_pool2d(x, 2, 2) if stride == 2 else x
        if cout > cin:
            skip = F.pad(skip, (0, 0, 0, 0, 0, cout - cin))
        return self.layers[act](skip + y)

    def _run(self, x: torch.Tensor, blocks: Sequence[_Block]) -> torch.Tensor:
        for spec in blocks:
            x = self._block(x, spec)
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers["p_re_lu"](self.layers["conv2d"](_same_pad(x, 3, 2)))
        return self._run(x, TRUNK)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[2:]) != (INPUT_SIZE, INPUT_SIZE):
            raise InputError(f"FaceMesh takes (N, 3, {INPUT_SIZE}, {INPUT_SIZE}) crops, got {tuple(x.shape)}")
        f = self.features(x)
        lm = self._run(f, LANDMARK_BLOCKS)
        lm = self.layers[LANDMARK_PROJ[1]](self.layers[LANDMARK_PROJ[0]](lm))
        lm = self.layers[LANDMARK_OUT](self._run(lm, LANDMARK_TAIL))
        fl = self._run(f, FLAG_BLOCKS)
        fl = self.layers[FLAG_PROJ[1]](self.layers[FLAG_PROJ[0]](fl))
        fl = self.layers[FLAG_OUT](self._run(fl, FLAG_TAIL))
        return lm.reshape(x.shape[0], NUM_LANDMARKS, 3), fl.reshape(x.shape[0])


# --------------------------------------------------------------------------------------------------
# loading from the TFLite flatbuffer


def _tflite_name(key: str, module: nn.Module) -> str:
    """State-dict key ('layers.conv2d_3.weight') -> TFLite tensor name ('conv2d_3/Kernel')."""
    _, layer, param = key.split(".")
    if isinstance(module, nn.PReLU):
        return f"{layer}/Alpha"
    return f"{layer}/{'Kernel' if param == 'weight' else 'Bias'}"


def _to_torch(array: np.ndarray, module: nn.Module, param: str) -> np.ndarray:
    """TFLite layouts -> PyTorch: conv OHWI -> OIHW, depthwise 1HWC -> C1HW, PReLU alpha (1, 1, C) -> (C,)."""
    if isinstance(module, nn.PReLU):
        return array.reshape(-1) if array.ndim == 3 and array.shape[:2] == (1, 1) else array
    if param == "bias":
        return array
    if array.ndim != 4:
        return array
    if isinstance(module, nn.Conv2d) and module.groups > 1:
        return array.transpose(3, 0, 1, 2)
    return array.transpose(0, 3, 1, 2)


def _expected_ops(model: FaceMesh) -> dict[str, tuple[str, int, int]]:
    """Output tensor name -> (builtin, stride, padding 0 SAME / 1 VALID) for every conv of the port."""
    ops: dict[str, tuple[str, int, int]] = {"conv2d": ("CONV_2D", 2, 0)}
    for dw, pw, _act, stride, _cin, _cout in TRUNK + LANDMARK_BLOCKS + LANDMARK_TAIL + FLAG_BLOCKS + FLAG_TAIL:
        ops[dw] = ("DEPTHWISE_CONV_2D", stride, 0)
        ops[pw] = ("CONV_2D", 1, 1)
    for conv, _act in (LANDMARK_PROJ, FLAG_PROJ):
        ops[conv] = ("CONV_2D", 1, 1)
    ops[LANDMARK_OUT] = ops[FLAG_OUT] = ("CONV_2D", 3, 1)
    return ops


def weights_from_tflite(graph, model: FaceMesh, where: str = "face_landmark.tflite") -> dict[str, torch.Tensor]:
    """The state dict of ``model`` from a :class:`~facerestore.nn.tflite_reader.TFLiteGraph`, strictly by name."""
    consts = {k: v for k, v in graph.constants().items() if not k.endswith("/Paddings")}
    modules = dict(model.named_modules())
    state = model.state_dict()
    wanted = {_tflite_name(k, modules[k.rsplit(".", 1)[0]]): k for k in state}
    missing = sorted(set(wanted) - set(consts))
    extra = sorted(set(consts) - set(wanted))
    if missing or extra:
        raise InputError(f"{where}: not the Face Mesh network: missing {missing[:3]}, unexpected {extra[:3]}")
    out = {}
    for name, key in wanted.items():
        module = modules[key.rsplit(".", 1)[0]]
        arr = _to_torch(np.asarray(consts[name]), module, key.rsplit(".", 1)[1])
        if tuple(arr.shape) != tuple(state[key].shape):
            raise InputError(f"{where}: {name} has shape {tuple(consts[name].shape)}, the port expects "
                             f"{tuple(state[key].shape)} (as {key})")
        if arr.dtype != np.float32:
            raise InputError(f"{where}: {name} is {arr.dtype}, expected float32 (quantised models are not ported)")
        out[key] = torch.from_numpy(np.array(arr, dtype=np.float32))
    # the graph must compute what the port computes: each conv's stride, padding and (no) fused activation
    by_output = {graph.tensors[op.outputs[0]].name: op for op in graph.ops if op.outputs}
    for tensor, (builtin, stride, padding) in _expected_ops(model).items():
        op = by_output.get(tensor)
        if op is None or op.builtin != builtin:
            raise InputError(f"{where}: no {builtin} operator writes {tensor!r}")
        o = op.options
        got = (o.get("StrideH"), o.get("StrideW"), o.get("Padding"), o.get("FusedActivationFunction", 0),
               o.get("DilationHFactor", 1), o.get("DepthMultiplier", 1))
        if got != (stride, stride, padding, 0, 1, 1):
            raise InputError(f"{where}: operator {tensor!r} has stride/padding/activation/dilation/multiplier "
                             f"{got}, the port expects {(stride, stride, padding, 0, 1, 1)}")
    if len(graph.inputs) != 1 or graph.tensors[graph.inputs[0]].shape != (1, INPUT_SIZE, INPUT_SIZE, 3):
        raise InputError(f"{where}: expected one (1, {INPUT_SIZE}, {INPUT_SIZE}, 3) input")
    return out


def load_facemesh(path: str | os.PathLike | None = None, *, device: str | torch.device = "cpu") -> FaceMesh:
    """The Face Mesh network in eval mode. ``path``: the ``.tflite`` file or the zoo folder holding it; None
    uses the zoo entry ``facemesh-468`` (WeightsMissingError when it has not been downloaded)."""
    from facerestore.nn.tflite_reader import read_tflite

    if path is None:
        from facerestore import zoo

        path = zoo.weights_path("facemesh-468")
    p = os.fspath(path)
    if os.path.isdir(p):
        p = os.path.join(p, "face_landmark.tflite")
    graph = read_tflite(p)
    model = FaceMesh()
    model.load_state_dict(weights_from_tflite(graph, model, where=p), strict=True)
    return model.eval().to(device)
