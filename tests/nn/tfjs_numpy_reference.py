"""A tiny numpy interpreter of TF.js models, the reference the PyTorch ports are checked against.

No TF.js runtime fits in this project, so the reference is computed straight from the manifest: the graph
model's node list (or the layers model's Keras config) is executed op by op in float64 NHWC, with the
semantics of TensorFlow's kernels (SAME padding with the extra pixel after, depth_to_space channel order
(row, column, channel), fused BiasAdd/Relu applied in the order listed). It shares no code with the PyTorch
modules: only the manifest reader (``facerestore.nn.tfjs``, tested on its own) feeds both.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def _pad_same(x: np.ndarray, kh: int, kw: int, sh: int, sw: int) -> np.ndarray:
    h, w = x.shape[1:3]
    oh, ow = -(-h // sh), -(-w // sw)
    ph = max((oh - 1) * sh + kh - h, 0)
    pw = max((ow - 1) * sw + kw - w, 0)
    return np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))


def _windows(x: np.ndarray, kh: int, kw: int, sh: int, sw: int, padding: str) -> np.ndarray:
    """(N, OH, OW, C, KH, KW) patches of NHWC ``x``."""
    if padding == "SAME":
        x = _pad_same(x, kh, kw, sh, sw)
    elif padding != "VALID":
        raise NotImplementedError(padding)
    return sliding_window_view(x, (kh, kw), axis=(1, 2))[:, ::sh, ::sw]


def conv2d(x: np.ndarray, k: np.ndarray, stride: tuple[int, int], padding: str) -> np.ndarray:
    """NHWC x HWIO -> NHWC."""
    p = _windows(x, k.shape[0], k.shape[1], stride[0], stride[1], padding)
    return np.einsum("nhwcij,ijco->nhwo", p, k, optimize=True)


def depthwise_conv2d(x: np.ndarray, k: np.ndarray, stride: tuple[int, int], padding: str) -> np.ndarray:
    """NHWC x (H, W, C, M) -> NHWC with C * M channels (channel c * M + m)."""
    p = _windows(x, k.shape[0], k.shape[1], stride[0], stride[1], padding)
    out = np.einsum("nhwcij,ijcm->nhwcm", p, k, optimize=True)
    return out.reshape(*out.shape[:3], -1)


def depth_to_space(x: np.ndarray, b: int) -> np.ndarray:
    """TensorFlow depth_to_space, NHWC: out[n, h*b + i, w*b + j, c] = x[n, h, w, (i*b + j)*C + c]."""
    n, h, w, cc = x.shape
    c = cc // (b * b)
    return x.reshape(n, h, w, b, b, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, h * b, w * b, c)


def run_graph(model, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Execute a graph model (nodes in file order are topologically sorted by the converter; checked)."""
    vals: dict[str, np.ndarray] = {}
    for node in model.nodes:
        args = [vals[i.split(":")[0]] for i in node.inputs if not i.startswith("^")]
        a = node.attr
        op = node.op
        if op == "Placeholder":
            v = np.asarray(inputs[node.name], np.float64)
        elif op == "Const":
            w = model.weights[node.name]
            v = w.astype(np.float64) if w.dtype.kind == "f" else w
        elif op in ("Conv2D", "DepthwiseConv2dNative"):
            assert a.get("data_format", "NHWC") == "NHWC"
            assert a.get("dilations", [1, 1, 1, 1]) == [1, 1, 1, 1]
            s = a["strides"]
            v = (conv2d if op == "Conv2D" else depthwise_conv2d)(args[0], args[1], (s[1], s[2]), a["padding"])
        elif op in ("_FusedConv2D", "FusedDepthwiseConv2dNative"):
            assert a.get("data_format", "NHWC") == "NHWC"
            assert a.get("dilations", [1, 1, 1, 1]) == [1, 1, 1, 1]
            s = a["strides"]
            f = conv2d if op == "_FusedConv2D" else depthwise_conv2d
            v = f(args[0], args[1], (s[1], s[2]), a["padding"])
            extra = iter(args[2:])
            for fused in a.get("fused_ops", []):
                if fused == "BiasAdd":
                    v = v + next(extra)
                elif fused == "Relu":
                    v = np.maximum(v, 0.0)
                else:
                    raise NotImplementedError(fused)
        elif op == "Relu":
            v = np.maximum(args[0], 0.0)
        elif op == "Abs":
            v = np.abs(args[0])
        elif op == "Sub":
            v = args[0] - args[1]
        elif op == "Mul":
            v = args[0] * args[1]
        elif op in ("Add", "AddV2"):
            v = args[0] + args[1]
        elif op == "Square":
            v = args[0] ** 2
        elif op == "Sum":
            axes = tuple(int(i) for i in np.asarray(args[1]).reshape(-1))
            v = args[0].sum(axis=axes, keepdims=bool(a.get("keep_dims", False)))
        elif op == "Maximum":
            v = np.maximum(args[0], args[1])
        elif op == "Minimum":
            v = np.minimum(args[0], args[1])
        elif op == "Pad":
            v = np.pad(args[0], [tuple(int(i) for i in r) for r in np.asarray(args[1])])
        elif op == "Reshape":
            v = args[0].reshape([int(i) for i in np.asarray(args[1]).reshape(-1)])
        elif op == "MatMul":
            assert not a.get("transpose_a") and not a.get("transpose_b")
            v = args[0] @ args[1]
        elif op == "Rsqrt":
            v = 1.0 / np.sqrt(args[0])
        elif op == "Squeeze":
            v = np.squeeze(args[0], axis=tuple(a["squeeze_dims"]))
        else:
            raise NotImplementedError(op)
        vals[node.name] = v
    return {n: vals[n] for n in model.output_names}


def run_layers(model, x: np.ndarray) -> np.ndarray:
    """Execute a Keras functional (layers) model with the layer classes of the ESRGAN-thick models."""
    vals: dict[str, np.ndarray] = {}
    for layer in model.layers:
        c = layer.config
        args = [vals[i] for i in layer.inputs]
        cls = layer.class_name
        if cls == "InputLayer":
            v = np.asarray(x, np.float64)
        elif cls == "Conv2D":
            assert c.get("data_format", "channels_last") == "channels_last"
            assert tuple(c.get("dilation_rate", (1, 1))) == (1, 1) and c.get("groups", 1) == 1
            k = model.weights[f"{layer.name}/kernel"].astype(np.float64)
            v = conv2d(args[0], k, tuple(c["strides"]), c["padding"].upper())
            if c.get("use_bias", True):
                v = v + model.weights[f"{layer.name}/bias"].astype(np.float64)
            act = c.get("activation", "linear")
            if act == "relu":
                v = np.maximum(v, 0.0)
            elif act != "linear":
                raise NotImplementedError(act)
        elif cls == "Activation":
            assert c["activation"] == "relu"
            v = np.maximum(args[0], 0.0)
        elif cls == "Concatenate":
            v = np.concatenate(args, axis=c.get("axis", -1))
        elif cls == "Add":
            v = sum(args[1:], args[0])
        elif cls == "MultiplyBeta":
            v = args[0] * c["beta"]
        elif cls.startswith("PixelShuffle"):
            v = depth_to_space(args[0], int(c["scale"]))
        else:
            raise NotImplementedError(cls)
        vals[layer.name] = v
    (out,) = model.output_names
    return vals[out]
