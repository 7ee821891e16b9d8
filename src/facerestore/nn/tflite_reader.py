"""Read a TensorFlow Lite flatbuffer (``.tflite``) into plain Python and numpy.

The pure-Python ``tflite`` package (flatbuffer bindings generated from TFLite's schema) walks the file; no
TensorFlow or LiteRT runtime is needed. The result is a :class:`TFLiteGraph` of the first (main) subgraph:
every tensor (name, shape, dtype, and for constants its data as a read-only numpy array), every operator
(builtin name such as ``CONV_2D``, input and output tensor indices, builtin options as a dict of plain
values), and the graph's input and output tensors. ``tensor(name)`` finds a constant by its name
(``conv2d_20/Kernel``), which is how our PyTorch ports load weights strictly by name.

Malformed files fail with one :class:`facerestore.errors.InputError` line: not a TFLite flatbuffer (the
``TFL3`` file identifier), truncated tables, a buffer whose size does not match its tensor's shape and type,
a buffer range outside the file, or a tensor/operator index out of range. Custom operators are listed with
their custom code (``op.builtin == "CUSTOM"``); a port decides whether it can run them.
"""

from __future__ import annotations

import inspect
import os
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from facerestore.errors import InputError

__all__ = ["TENSOR_TYPES", "TFLiteGraph", "TFLiteOp", "TFLiteTensor", "read_tflite"]

# TFLite TensorType enum value -> numpy dtype (little-endian, as stored in the flatbuffer)
TENSOR_TYPES: dict[int, np.dtype] = {
    0: np.dtype("<f4"),  # FLOAT32
    1: np.dtype("<f2"),  # FLOAT16
    2: np.dtype("<i4"),  # INT32
    3: np.dtype("u1"),  # UINT8
    4: np.dtype("<i8"),  # INT64
    6: np.dtype("?"),  # BOOL
    7: np.dtype("<i2"),  # INT16
    9: np.dtype("i1"),  # INT8
    10: np.dtype("<f8"),  # FLOAT64
    12: np.dtype("<u8"),  # UINT64
    15: np.dtype("<u4"),  # UINT32
    16: np.dtype("<u2"),  # UINT16
}

MAX_FILE_BYTES = 1 << 31  # 2 GiB: the flatbuffer format's own limit for in-file buffers


@dataclass(frozen=True)
class TFLiteTensor:
    """One tensor of the graph: ``data`` is None for activations, a read-only array for constants."""

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    data: np.ndarray | None = None


@dataclass(frozen=True)
class TFLiteOp:
    """One operator: ``builtin`` is the BuiltinOperator name ("CONV_2D", ...; "CUSTOM" with ``custom_code``),
    ``options`` its builtin options as plain Python values (enum fields as ints, e.g. ``Padding``: 0 SAME,
    1 VALID; ``FusedActivationFunction``: 0 none, 1 RELU, 3 RELU6)."""

    index: int
    builtin: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options: dict[str, Any] = field(default_factory=dict)
    custom_code: str = ""


@dataclass
class TFLiteGraph:
    """The main subgraph of a TFLite model."""

    version: int
    description: str
    tensors: list[TFLiteTensor]
    ops: list[TFLiteOp]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]

    def tensor(self, name: str) -> TFLiteTensor:
        """The tensor called ``name`` (InputError when there is none)."""
        for t in self.tensors:
            if t.name == name:
                return t
        raise InputError(f"TFLite model has no tensor named {name!r}")

    def constants(self) -> dict[str, np.ndarray]:
        """Every constant tensor's array by name."""
        return {t.name: t.data for t in self.tensors if t.data is not None}

    def producer(self, tensor: int) -> TFLiteOp | None:
        """The operator that writes tensor index ``tensor`` (None for inputs and constants)."""
        for op in self.ops:
            if tensor in op.outputs:
                return op
        return None


def _enum_names(enum_cls: type) -> dict[int, str]:
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}


_SKIP_METHODS = ("Init", "GetRootAs")


def _decode_options(tfl: Any, op: Any, option_names: dict[int, str]) -> dict[str, Any]:
    """The builtin options table of ``op`` as a dict: every scalar getter, vectors as lists."""
    kind = op.BuiltinOptionsType()
    if kind == 0:
        return {}
    name = option_names.get(kind)
    cls = getattr(tfl, name, None) if name else None
    table = op.BuiltinOptions()
    if cls is None or table is None:
        return {"_type": name or kind}
    obj = cls()
    obj.Init(table.Bytes, table.Pos)
    out: dict[str, Any] = {"_type": name}
    for attr in dir(cls):
        if attr.startswith("_") or attr.startswith(_SKIP_METHODS) or attr.endswith(
            ("BufferHasIdentifier", "IsNone", "Length", "AsNumpy")
        ):
            continue
        fn = getattr(obj, attr)
        if not callable(fn):
            continue
        try:
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError):
            continue
        if params:
            if hasattr(obj, attr + "AsNumpy"):  # a vector field: read it whole
                out[attr] = np.asarray(getattr(obj, attr + "AsNumpy")()).tolist()
            continue
        value = fn()
        if isinstance(value, (int, float, bool, bytes, str)):
            out[attr] = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return out


def _buffer_bytes(model: Any, raw: bytes, index: int) -> bytes | None:
    if index <= 0 or index >= model.BuffersLength():
        return None  # buffer 0 is the empty sentinel: an activation
    buf = model.Buffers(index)
    # offset/size (buffers stored after the flatbuffer) came with the 2.1x schema; older ``tflite`` releases have
    # no accessor for them, and a model such a release can read keeps its buffers inline
    offset = int(buf.Offset()) if hasattr(buf, "Offset") else 0
    size = int(buf.Size()) if hasattr(buf, "Size") else 0
    if offset > 1:  # large models keep buffers after the flatbuffer, addressed by offset and size
        if offset + size > len(raw):
            raise InputError(f"TFLite buffer {index} lies outside the file ({offset}+{size} > {len(raw)})")
        return raw[offset : offset + size]
    if buf.DataIsNone() or buf.DataLength() == 0:
        return None
    return buf.DataAsNumpy().tobytes()


def read_tflite(path: str | os.PathLike | bytes) -> TFLiteGraph:
    """Parse a ``.tflite`` file (or its bytes) into a :class:`TFLiteGraph` of its main subgraph."""
    try:
        import tflite as tfl
    except ImportError:
        raise InputError("reading TFLite models needs the 'tflite' package (pip install tflite)") from None
    if isinstance(path, (bytes, bytearray)):
        raw, where = bytes(path), "TFLite model"
    else:
        where = os.fspath(path)
        try:
            size = os.path.getsize(where)
            if size > MAX_FILE_BYTES:
                raise InputError(f"{where}: {size} bytes is too large for a TFLite model")
            with open(where, "rb") as f:
                raw = f.read()
        except OSError as exc:
            raise InputError(f"cannot read TFLite model {where}: {exc.strerror or exc}") from None
    if len(raw) < 8 or raw[4:8] != b"TFL3":
        raise InputError(f"{where}: not a TFLite flatbuffer (no TFL3 identifier)")
    op_names = _enum_names(tfl.BuiltinOperator)
    option_names = _enum_names(tfl.BuiltinOptions)
    try:
        model = tfl.Model.GetRootAs(raw, 0)
        if model.SubgraphsLength() < 1:
            raise InputError(f"{where}: the model has no subgraph")
        sg = model.Subgraphs(0)
        tensors = []
        for i in range(sg.TensorsLength()):
            t = sg.Tensors(i)
            shape = tuple(int(d) for d in (t.ShapeAsNumpy() if t.ShapeLength() else ()))
            ttype = int(t.Type())
            if ttype not in TENSOR_TYPES:
                raise InputError(f"{where}: tensor {i} has unsupported element type {ttype}")
            dtype = TENSOR_TYPES[ttype]
            name = (t.Name() or b"").decode("utf-8", "replace")
            data = _buffer_bytes(model, raw, int(t.Buffer()))
            arr = None
            if data is not None:
                if any(d < 0 for d in shape):
                    raise InputError(f"{where}: constant tensor {name!r} has a dynamic shape {shape}")
                count = int(np.prod(shape, dtype=np.int64)) if shape else 1
                if count * dtype.itemsize != len(data):
                    raise InputError(f"{where}: tensor {name!r} of shape {shape} ({dtype}) needs "
                                     f"{count * dtype.itemsize} bytes, its buffer has {len(data)}")
                arr = np.frombuffer(data, dtype=dtype).reshape(shape)
                arr.flags.writeable = False
            tensors.append(TFLiteTensor(i, name, shape, dtype, arr))
        n = len(tensors)

        def indices(values: Any, what: str) -> tuple[int, ...]:
            out = tuple(int(v) for v in values)
            bad = [v for v in out if v >= n or v < -1]
            if bad:
                raise InputError(f"{where}: {what} refers to tensor {bad[0]}, but there are only {n}")
            return out

        ops = []
        for i in range(sg.OperatorsLength()):
            op = sg.Operators(i)
            oc_index = int(op.OpcodeIndex())
            if oc_index >= model.OperatorCodesLength():
                raise InputError(f"{where}: operator {i} has opcode index {oc_index} out of range")
            oc = model.OperatorCodes(oc_index)
            code = max(int(oc.BuiltinCode()), int(oc.DeprecatedBuiltinCode()))
            builtin = op_names.get(code, f"UNKNOWN_{code}")
            custom = (oc.CustomCode() or b"").decode("utf-8", "replace") if builtin == "CUSTOM" else ""
            ins = indices(op.InputsAsNumpy() if op.InputsLength() else (), f"operator {i} ({builtin}) inputs")
            outs = indices(op.OutputsAsNumpy() if op.OutputsLength() else (), f"operator {i} ({builtin}) outputs")
            ops.append(TFLiteOp(i, builtin, ins, outs, _decode_options(tfl, op, option_names), custom))
        g_in = indices(sg.InputsAsNumpy() if sg.InputsLength() else (), "the graph inputs")
        g_out = indices(sg.OutputsAsNumpy() if sg.OutputsLength() else (), "the graph outputs")
        description = (model.Description() or b"").decode("utf-8", "replace")
        version = int(model.Version())
    except InputError:
        raise
    except (IndexError, struct.error, ValueError, TypeError, AttributeError, UnicodeError) as exc:
        raise InputError(f"{where}: malformed TFLite flatbuffer ({type(exc).__name__}: {exc})") from None
    return TFLiteGraph(version, description, tensors, ops, g_in, g_out)
