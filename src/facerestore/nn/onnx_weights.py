"""Named weights from ONNX files (initializers and convolution layers), read without any ONNX package.

No ONNX runtime or ``onnx`` package is needed: :mod:`facerestore.nn.onnx_proto` decodes the file's protobuf
(its nodes and initializers), the initializers become numpy arrays, and the ``Conv`` nodes are listed with
their attributes under the module path the PyTorch exporter recorded in the node name
(``/fx/stage1/stage1.0/stage1.0.0/Conv`` -> ``fx.stage1.0.0``). Our PyTorch ports name their convolutions by
those paths and load them with :func:`load_convs_strict`: every convolution of the file must match one of ours
(shape, stride, padding, groups, dilation) and every one of ours must be in the file, or one one-line
:class:`facerestore.errors.InputError` says what differs.

Exports whose node names carry no module path (``Conv_0``, older exporters) are loaded by call order instead:
:func:`conv_sequence` lists every ``Conv`` node in graph order (the order the exporter traced them) and
:func:`load_convs_in_order` pairs them with the order in which our module calls its convolutions.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from facerestore.errors import InputError
from facerestore.nn.onnx_proto import OnnxFormatError, OnnxModel, OnnxNode, parse_model

__all__ = ["ConvLayer", "OnnxModel", "call_order", "conv_layers", "conv_sequence", "initializers",
           "load_convs_in_order", "load_convs_strict", "load_model", "module_path", "read_model_file"]

# the two graphs read here (RetinaFace mobilenet-0.25, SCRFD-2.5G) are 1.7 and 3.3 MB; the parser holds a
# file's bytes and its arrays at once, so the cap bounds memory as well as time
MAX_MODEL_BYTES = 64 << 20


def read_model_file(path: str | os.PathLike, what: str) -> bytes:
    """The bytes of an ONNX file, its size checked before it is read (one InputError line otherwise)."""
    try:
        size = os.stat(path).st_size
        if size > MAX_MODEL_BYTES:
            raise InputError(f"{what}: {size} bytes, over the {MAX_MODEL_BYTES}-byte limit of this reader")
        with open(path, "rb") as f:
            return f.read(MAX_MODEL_BYTES + 1)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None


def load_model(data: bytes, what: str = "ONNX model") -> OnnxModel:
    """The nodes and initializers of the ONNX model in ``data`` (bytes); a malformed file is one InputError."""
    if not isinstance(data, bytes | bytearray) or not data:
        raise InputError(f"{what}: no ONNX bytes")
    if len(data) > MAX_MODEL_BYTES:
        raise InputError(f"{what}: {len(data)} bytes, over the {MAX_MODEL_BYTES}-byte limit")
    try:
        model = parse_model(bytes(data))
    except OnnxFormatError as exc:
        raise InputError(f"{what}: not a readable ONNX model ({exc})") from None
    if not model.nodes:
        raise InputError(f"{what}: the ONNX graph has no nodes")
    return model


def initializers(model: OnnxModel) -> dict[str, np.ndarray]:
    """Every initializer as a numpy array, plus the names that ``Identity`` nodes give to initializers (the
    exporter's way of sharing one tensor between two calls of a layer)."""
    out = dict(model.initializers)
    changed = True
    while changed:  # chains of Identity nodes resolve in a few passes
        changed = False
        for n in model.nodes:
            if n.op_type == "Identity" and n.inputs and n.inputs[0] in out and n.outputs[0] not in out:
                out[n.outputs[0]] = out[n.inputs[0]]
                changed = True
    return out


_REPEAT = re.compile(r"_\d+$")


def module_path(node_name: str) -> str:
    """The PyTorch module path of an exported node: ``/fpn/output1/output1.0/Conv`` -> ``fpn.output1.0``.

    The exporter writes the top-level child, then each nested module's path relative to that child, then the
    op; the second and later calls of one module get a ``_N`` suffix (stripped here).
    """
    parts = [p for p in node_name.split("/") if p][:-1]
    if not parts:
        return ""
    name = parts[0] if len(parts) == 1 else f"{parts[0]}.{parts[-1]}"
    return _REPEAT.sub("", name) if len(parts) > 1 and _REPEAT.search(parts[-1]) else name


@dataclass(frozen=True)
class ConvLayer:
    """One ``Conv`` of an ONNX graph: the module path, its weight and bias arrays and its attributes."""

    module: str
    weight: np.ndarray
    bias: np.ndarray | None
    stride: tuple[int, ...]
    padding: tuple[int, ...]  # ONNX pads: begins then ends
    groups: int
    dilation: tuple[int, ...]


def _conv_layer(n: OnnxNode, arrays: dict[str, np.ndarray], module: str) -> ConvLayer:
    attrs = n.attributes
    if attrs.get("auto_pad", b"NOTSET") != b"NOTSET":
        raise InputError(f"ONNX Conv {n.name}: auto_pad is not supported")
    try:
        w = arrays[n.inputs[1]]
        b = arrays[n.inputs[2]] if len(n.inputs) > 2 and n.inputs[2] else None
    except (KeyError, IndexError):
        raise InputError(f"ONNX Conv {n.name}: its weights are not initializers") from None
    k = w.ndim - 2
    return ConvLayer(
        module=module,
        weight=w,
        bias=b,
        stride=tuple(int(v) for v in attrs.get("strides", [1] * k)),
        padding=tuple(int(v) for v in attrs.get("pads", [0] * (2 * k))),
        groups=int(attrs.get("group", 1)),
        dilation=tuple(int(v) for v in attrs.get("dilations", [1] * k)),
    )


def conv_sequence(model: OnnxModel) -> list[ConvLayer]:
    """Every ``Conv`` node of ``model`` in graph order, one per node; ``module`` is the node's weight
    initializer name (for exports whose node names hold no module path: see :func:`load_convs_in_order`)."""
    arrays = initializers(model)
    return [_conv_layer(n, arrays, n.inputs[1] if len(n.inputs) > 1 else "")
            for n in model.nodes if n.op_type == "Conv"]


def _same_conv(a: ConvLayer, b: ConvLayer) -> bool:
    """Two calls of one module: the same weights, bias, stride, padding, groups and dilation."""
    def same(x: np.ndarray | None, y: np.ndarray | None) -> bool:
        return x is y or (x is not None and y is not None and np.array_equal(x, y))

    return (same(a.weight, b.weight) and same(a.bias, b.bias) and (a.stride, a.padding, a.groups, a.dilation)
            == (b.stride, b.padding, b.groups, b.dilation))


def conv_layers(model: OnnxModel) -> list[ConvLayer]:
    """The convolutions of ``model`` in graph order, one per module (repeated calls of a module, which use
    the same weights, are listed once; a repeated call with other weights is an InputError)."""
    arrays = initializers(model)
    seen: dict[str, ConvLayer] = {}
    for n in model.nodes:
        if n.op_type != "Conv":
            continue
        layer = _conv_layer(n, arrays, module_path(n.name))
        old = seen.get(layer.module)
        if old is None:
            seen[layer.module] = layer
        elif not _same_conv(old, layer):
            raise InputError(f"ONNX model: two convolutions named {layer.module} with different weights or "
                             "attributes")
    return list(seen.values())


def load_convs_strict(net: nn.Module, convs: list[ConvLayer], what: str = "ONNX model",
                      others: tuple[str, ...] = ()) -> None:
    """Copy ``convs`` into the ``nn.Conv2d`` modules of ``net`` named by their module paths.

    Strict: the two sets of names are equal, and each weight/bias shape, stride, padding, groups and dilation
    agree; otherwise one one-line InputError. ``net`` must hold no parameters outside its convolutions but the
    ``others`` (names of parameters the caller loads itself).
    """
    ours = {name: m for name, m in net.named_modules() if isinstance(m, nn.Conv2d)}
    theirs = {c.module: c for c in convs}
    missing = sorted(set(ours) - set(theirs))
    extra = sorted(set(theirs) - set(ours))
    if missing or extra:
        raise InputError(f"{what}: convolutions differ from the architecture (missing {missing[:3]}, "
                         f"unexpected {extra[:3]})")
    covered = {f"{n}.{p}" for n, m in ours.items() for p, _ in m.named_parameters(recurse=False)}
    stray = [n for n, _ in net.named_parameters() if n not in covered and n not in others]
    if stray:
        raise InputError(f"{what}: parameters outside the convolutions are not loaded: {stray[:3]}")
    with torch.no_grad():
        for name, conv in ours.items():
            c = theirs[name]
            pads = tuple(conv.padding) * 2 if isinstance(conv.padding, tuple) else None
            got = (tuple(c.weight.shape), c.stride, c.padding, c.groups, c.dilation, c.bias is not None)
            want = (tuple(conv.weight.shape), tuple(conv.stride), pads, conv.groups, tuple(conv.dilation),
                    conv.bias is not None)
            if got != want:
                raise InputError(f"{what}: {name} is (shape, stride, pads, groups, dilation, bias) {got} in the "
                                 f"file, {want} in the architecture")
            if c.bias is not None and tuple(c.bias.shape) != (conv.out_channels,):
                raise InputError(f"{what}: {name}.bias has shape {tuple(c.bias.shape)}, expected "
                                 f"({conv.out_channels},)")
            conv.weight.copy_(torch.from_numpy(np.array(c.weight, np.float32)))
            if c.bias is not None:
                assert conv.bias is not None
                conv.bias.copy_(torch.from_numpy(np.array(c.bias, np.float32)))


def call_order(net: nn.Module, example: torch.Tensor) -> list[str]:
    """The names of ``net``'s ``nn.Conv2d`` modules in the order ``net(example)`` first calls them (each
    once); a convolution the forward pass never calls is appended at the end, so that the counts still differ
    from a file that lacks it."""
    convs = {m: name for name, m in net.named_modules() if isinstance(m, nn.Conv2d)}
    order: list[str] = []

    def hook(module: nn.Module, _: Any) -> None:
        name = convs[module]
        if name not in order:
            order.append(name)

    handles = [m.register_forward_pre_hook(hook) for m in convs]
    try:
        with torch.no_grad():
            net(example)
    finally:
        for h in handles:
            h.remove()
    return order + [n for n in convs.values() if n not in order]


def load_convs_in_order(net: nn.Module, convs: list[ConvLayer], example: torch.Tensor,
                        what: str = "ONNX model", others: tuple[str, ...] = ()) -> list[str]:
    """Load ``convs`` (graph order, as :func:`conv_sequence` lists them) into the convolutions of ``net`` in
    the order ``net(example)`` calls them, strictly (:func:`load_convs_strict`: equal counts, shapes and
    attributes; ``others`` as there). Returns our module names in that order (``names[i]`` received
    ``convs[i]``)."""
    names = call_order(net, example)
    if len(names) != len(convs):
        raise InputError(f"{what}: {len(convs)} convolutions in the file, {len(names)} in the architecture")
    renamed = [ConvLayer(n, c.weight, c.bias, c.stride, c.padding, c.groups, c.dilation) for n, c in zip(names, convs)]
    load_convs_strict(net, renamed, what, others)
    return names
