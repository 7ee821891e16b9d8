"""The part of the ONNX file format that loading weights needs, read in pure Python (no ``onnx`` package).

An ONNX file is a protobuf ``ModelProto`` (onnx/onnx.proto): its ``graph`` holds the ``node`` list (name,
operator, input and output names, attributes) and the ``initializer`` tensors (the weights). This module
decodes exactly those messages from the protobuf wire format (varints, fixed 32/64-bit values, length-delimited
fields, packed repeated numbers) and ignores every other field, so RetinaFace and SCRFD load with the packages
``pip install facerestore`` brings. The ``onnx`` package, where installed, is the reference it is tested
against (tests/nn/test_onnx_proto.py).

Field numbers (onnx.proto, IR version 3 and later): ModelProto.graph = 7; GraphProto.node = 1, .initializer = 5;
NodeProto.input = 1, .output = 2, .name = 3, .op_type = 4, .attribute = 5; AttributeProto.name = 1, .f = 2,
.i = 3, .s = 4, .t = 5, .floats = 7, .ints = 8, .strings = 9, .type = 20; TensorProto.dims = 1, .data_type = 2,
.float_data = 4, .int32_data = 5, .int64_data = 7, .name = 8, .raw_data = 9, .double_data = 10,
.uint64_data = 11, .data_location = 14.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["OnnxFormatError", "OnnxModel", "OnnxNode", "parse_model"]


class OnnxFormatError(ValueError):
    """The bytes are not a well-formed ONNX protobuf (or use a feature this reader refuses)."""


@dataclass(frozen=True)
class OnnxNode:
    """One node of the graph. ``attributes`` maps names to Python values: float, int, bytes (ONNX strings),
    numpy arrays (tensors; None for a tensor of a type this reader does not decode, e.g. strings), or lists of
    those."""

    name: str
    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OnnxModel:
    """The graph's nodes in file (topological) order and its initializers by name, in file order."""

    nodes: tuple[OnnxNode, ...]
    initializers: dict[str, np.ndarray]


# TensorProto.DataType -> little-endian numpy dtype
_DTYPES = {1: "<f4", 2: "u1", 3: "i1", 4: "<u2", 5: "<i2", 6: "<i4", 7: "<i8", 9: "?", 10: "<f2", 11: "<f8",
           12: "<u4", 13: "<u8"}
_BFLOAT16 = 16
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise OnnxFormatError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise OnnxFormatError("varint longer than 10 bytes")


def _fields(buf: memoryview) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) of every field of one message: an int for varints, a memoryview for the
    others."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise OnnxFormatError("field number 0")
        if wire == _VARINT:
            value, pos = _varint(buf, pos)
        elif wire in (_I64, _I32):
            size = 8 if wire == _I64 else 4
            value, pos = buf[pos: pos + size], pos + size
        elif wire == _LEN:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos: pos + size], pos + size
        else:
            raise OnnxFormatError(f"wire type {wire} (protobuf groups are not used by ONNX)")
        if pos > end:
            raise OnnxFormatError("a field runs past the end of its message")
        yield number, wire, value


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _ints(wire: int, value: Any) -> list[int]:
    """A repeated int64/int32 field: one varint, or a packed run of them."""
    if wire == _VARINT:
        return [_signed(value)]
    if wire != _LEN:
        raise OnnxFormatError(f"wire type {wire} where integers were expected")
    out, pos = [], 0
    while pos < len(value):
        v, pos = _varint(value, pos)
        out.append(_signed(v))
    return out


def _floats(wire: int, value: Any, fmt: str = "<f4") -> np.ndarray:
    """A repeated float (fixed32) or double (fixed64) field, packed or not: a numpy array (a Python list of
    floats would take ~10x the file's bytes)."""
    size = np.dtype(fmt).itemsize
    if wire not in (_LEN, _I32 if size == 4 else _I64) or len(value) % size:
        raise OnnxFormatError(f"wire type {wire} or size {len(value)} for {fmt} values")
    return np.frombuffer(value, fmt).copy()


def _bytes(wire: int, value: Any) -> bytes:
    """A length-delimited field's bytes (strings, raw data, sub-messages); any other wire type is malformed
    (``bytes(int)`` would allocate that many zeros)."""
    if wire != _LEN:
        raise OnnxFormatError(f"wire type {wire} where bytes were expected")
    return bytes(value)


def _varint_field(wire: int, value: Any) -> int:
    if wire != _VARINT:
        raise OnnxFormatError(f"wire type {wire} where an integer was expected")
    return value


def _text(wire: int, value: Any) -> str:
    try:
        return _bytes(wire, value).decode("utf-8")
    except UnicodeDecodeError:
        raise OnnxFormatError("a name is not UTF-8") from None


def _message(wire: int, value: Any) -> memoryview:
    if wire != _LEN:
        raise OnnxFormatError(f"wire type {wire} where a message was expected")
    return value


def _tensor(buf: memoryview) -> tuple[str, np.ndarray]:
    dims: list[int] = []
    name, dtype, raw, location = "", 0, None, 0
    typed: dict[int, list[Any]] = {}
    for number, wire, value in _fields(buf):
        if number == 1:
            dims += _ints(wire, value)
        elif number == 2:
            dtype = _varint_field(wire, value)
        elif number == 8:
            name = _text(wire, value)
        elif number == 9:
            raw = _bytes(wire, value)
        elif number == 14:
            location = _varint_field(wire, value)
        elif number in (5, 7, 11):  # int32_data, int64_data, uint64_data
            typed.setdefault(number, []).extend(_ints(wire, value) if number != 11 else
                                                [v & ((1 << 64) - 1) for v in _ints(wire, value)])
        elif number in (4, 10):  # float_data, double_data
            typed.setdefault(number, []).append(_floats(wire, value, "<f4" if number == 4 else "<f8"))
        elif number == 13:
            location = 1  # external_data entries: the tensor's bytes live in another file
    if location == 1:
        raise OnnxFormatError(f"initializer {name!r} is stored in an external file (not supported)")
    if dtype not in _DTYPES and dtype != _BFLOAT16:
        raise OnnxFormatError(f"initializer {name!r} has data type {dtype}, which this reader does not decode")
    if any(d < 0 for d in dims):
        raise OnnxFormatError(f"initializer {name!r} has a negative dimension")
    if dtype == _BFLOAT16:  # the upper half of a float32: widened to float32 (numpy has no bfloat16)
        bits = np.frombuffer(raw, "<u2") if raw is not None else np.array(typed.get(5, []), np.uint16)
        count = int(np.prod(dims)) if dims else 1
        if bits.size != count:
            raise OnnxFormatError(f"initializer {name!r} holds {bits.size} values for shape {tuple(dims)}")
        return name, (bits.astype(np.uint32) << 16).view(np.float32).reshape(dims)
    np_dtype = np.dtype(_DTYPES[dtype])
    if raw is not None:
        if len(raw) % np_dtype.itemsize:
            raise OnnxFormatError(f"initializer {name!r}: {len(raw)} raw bytes for {np_dtype}")
        flat = np.frombuffer(raw, np_dtype).copy()  # writable, and not a view that keeps the file's bytes alive
    else:
        values = next((typed[k] for k in (4, 5, 7, 10, 11) if k in typed), [])
        if values and isinstance(values[0], np.ndarray):
            values = np.concatenate(values)
        if dtype == 10:  # float16 travels as its 16-bit patterns in int32_data
            flat = np.array(values, np.uint16).view(np.float16)
        else:
            flat = np.array(values, np_dtype)
    count = int(np.prod(dims)) if dims else 1
    if flat.size != count:
        raise OnnxFormatError(f"initializer {name!r} holds {flat.size} values for shape {tuple(dims)}")
    return name, flat.reshape(dims).astype(np_dtype.newbyteorder("="), copy=False)


def _attribute(buf: memoryview) -> tuple[str, Any]:
    name, kind = "", 0
    seen: dict[int, Any] = {}
    for number, wire, value in _fields(buf):
        if number == 1:
            name = _text(wire, value)
        elif number == 20:
            kind = _varint_field(wire, value)
        elif number == 2:
            if wire != _I32:
                raise OnnxFormatError(f"wire type {wire} for a float attribute")
            seen[2] = _floats(wire, value)[0]
        elif number == 3:
            seen[3] = _signed(_varint_field(wire, value))
        elif number == 4:
            seen[4] = _bytes(wire, value)
        elif number == 5:
            try:
                seen[5] = _tensor(_message(wire, value))[1]
            except OnnxFormatError as exc:  # a constant no weight loading reads (strings...): kept undecoded
                if "data type" not in str(exc):
                    raise
                seen[5] = None
        elif number == 7:
            seen.setdefault(7, []).extend(_floats(wire, value))
        elif number == 8:
            seen.setdefault(8, []).extend(_ints(wire, value))
        elif number == 9:
            seen.setdefault(9, []).append(_bytes(wire, value))
    # AttributeType -> (field, the value when the field is absent: proto3 encoders leave zeros out); without a
    # type (files before IR 3) the one field present decides
    by_type: dict[int, tuple[int, Any]] = {1: (2, 0.0), 2: (3, 0), 3: (4, b""), 4: (5, None), 6: (7, []),
                                           7: (8, []), 8: (9, [])}
    if kind in by_type:
        number, default = by_type[kind]
        return name, seen.get(number, default)
    return name, next(iter(seen.values()), None)


def _node(buf: memoryview) -> OnnxNode:
    inputs: list[str] = []
    outputs: list[str] = []
    name = op_type = ""
    attributes: dict[str, Any] = {}
    for number, wire, value in _fields(buf):
        if number == 1:
            inputs.append(_text(wire, value))
        elif number == 2:
            outputs.append(_text(wire, value))
        elif number == 3:
            name = _text(wire, value)
        elif number == 4:
            op_type = _text(wire, value)
        elif number == 5:
            key, val = _attribute(_message(wire, value))
            attributes[key] = val
    return OnnxNode(name, op_type, tuple(inputs), tuple(outputs), attributes)


def parse_model(data: bytes) -> OnnxModel:
    """The nodes and initializers of the serialised ``ModelProto`` in ``data``; OnnxFormatError when the bytes
    are not one (no graph, a malformed field, an external or undecodable tensor)."""
    try:
        return _parse_model(data)
    except OnnxFormatError:
        raise
    except (ValueError, OverflowError, IndexError, TypeError) as exc:  # e.g. numbers out of their type's range
        raise OnnxFormatError(f"malformed values ({type(exc).__name__})") from None


def _parse_model(data: bytes) -> OnnxModel:
    graph = None
    for number, wire, value in _fields(memoryview(data)):
        if number == 7:
            graph = _message(wire, value)
    if graph is None:
        raise OnnxFormatError("no graph")
    nodes: list[OnnxNode] = []
    initializers: dict[str, np.ndarray] = {}
    for number, wire, value in _fields(graph):
        if number == 1:
            nodes.append(_node(_message(wire, value)))
        elif number == 5:
            key, array = _tensor(_message(wire, value))
            initializers[key] = array
        elif number == 15:
            raise OnnxFormatError("sparse initializers are not supported")
    return OnnxModel(tuple(nodes), initializers)
