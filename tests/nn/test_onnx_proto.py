"""facerestore.nn.onnx_proto, the pure-Python reader of ONNX weights, against the ``onnx`` package (the
reference, from the dev extra): the same nodes, attributes and initializers, bit for bit, on the RetinaFace and
SCRFD files of the zoo and on models built here with every tensor encoding; malformed bytes are one error type."""

from __future__ import annotations

import numpy as np
import pytest

from facerestore import zoo
from facerestore.nn.onnx_proto import OnnxFormatError, parse_model

try:  # the reference reader (dev extra); the hand-encoded tests below run without it
    import onnx
    from onnx import TensorProto, helper, numpy_helper
except ModuleNotFoundError:
    onnx = None
needs_onnx = pytest.mark.skipif(onnx is None, reason="the reference reader is the onnx package (dev extra)")


def _varint(v: int) -> bytes:
    out = bytearray()
    while True:
        out.append((v & 0x7F) | (0x80 if v > 0x7F else 0))
        v >>= 7
        if not v:
            return bytes(out)


def _field(number: int, value: int | bytes) -> bytes:
    """One protobuf field: a varint for ints, length-delimited for bytes."""
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    return _varint(number << 3 | 2) + _varint(len(value)) + value


def _model_of(*nodes: bytes, inits: tuple[bytes, ...] = ()) -> bytes:
    graph = b"".join(_field(1, n) for n in nodes) + b"".join(_field(5, t) for t in inits)
    return _field(1, 8) + _field(7, graph)  # ir_version 8, graph


def test_hand_encoded_model_without_the_onnx_package():
    """A model written here field by field: names, an attribute whose zero value a proto3 encoder left out, a
    string constant (kept undecoded, not fatal) and a bfloat16 initializer (widened to float32)."""
    group = _field(1, b"group") + _field(20, 2)  # type INT, no value: 0
    string_tensor = _field(1, 1) + _field(2, 8) + _field(6, b"hi") + _field(8, b"s")  # dims [1], STRING
    const = _field(1, b"value") + _field(5, string_tensor) + _field(20, 4)
    node = (_field(1, b"x") + _field(2, b"y") + _field(3, b"/a/Conv") + _field(4, b"Conv") + _field(5, group)
            + _field(5, const))
    values = np.array([1.5, -2.0, 0.15625], np.float32)
    bf16 = (values.view(np.uint32) >> 16).astype("<u2").tobytes()
    tensor = _field(1, 3) + _field(2, 16) + _field(8, b"w") + _field(9, bf16)
    model = parse_model(_model_of(node, inits=(tensor,)))
    (n,) = model.nodes
    assert (n.name, n.op_type, n.inputs, n.outputs) == ("/a/Conv", "Conv", ("x",), ("y",))
    assert n.attributes == {"group": 0, "value": None}
    assert model.initializers["w"].dtype == np.float32 and np.array_equal(model.initializers["w"], values)


@pytest.mark.parametrize("bad", [
    _model_of(_field(3, 1 << 32)),  # a name sent as a huge varint: was bytes(2**32), 4 GB of zeros
    _model_of(_field(1, b"x") + _field(5, _field(1, b"a") + _field(2, 7))),  # a float attribute as a varint
    _model_of(inits=(_field(1, 2) + _field(2, b"\x01") + _field(8, b"w"),)),  # data type as bytes
    _field(7, 5),  # the graph as a varint
])
def test_fields_of_the_wrong_wire_type_are_format_errors(bad):
    with pytest.raises(OnnxFormatError, match="wire type"):
        parse_model(bad)


def _same_as_onnx(data: bytes) -> None:
    ours, ref = parse_model(data), onnx.load_from_string(data)
    assert len(ours.nodes) == len(ref.graph.node)
    for a, b in zip(ours.nodes, ref.graph.node):
        assert (a.name, a.op_type, a.inputs, a.outputs) == (b.name, b.op_type, tuple(b.input), tuple(b.output))
        expected = {x.name: helper.get_attribute_value(x) for x in b.attribute}
        assert set(a.attributes) == set(expected)
        for key, value in expected.items():
            got = a.attributes[key]
            if isinstance(value, TensorProto):
                value = numpy_helper.to_array(value)
                assert got.dtype == value.dtype and np.array_equal(got, value)
            elif isinstance(value, float):
                assert got == np.float32(value)
            else:
                assert (list(got) if isinstance(got, list) else got) == (list(value) if isinstance(value, list)
                                                                         else value), key
    expected = {t.name: numpy_helper.to_array(t) for t in ref.graph.initializer}
    assert list(ours.initializers) == list(expected)  # file order
    for key, value in expected.items():
        got = ours.initializers[key]
        assert got.dtype == value.dtype and got.shape == value.shape and np.array_equal(got, value, equal_nan=True)


@needs_onnx
@pytest.mark.parametrize(("entry", "name"), [("retinaface-mnet025", "weights.py"), ("scrfd-2.5g", "scrfd.onnx")])
def test_the_zoo_detectors_read_as_onnx_reads_them(entry, name):
    if not zoo.is_available(entry):
        pytest.skip(f"{entry} is not cached: run `facerestore models download {entry}`")
    path = zoo.weights_path(entry) / name
    if name.endswith(".py"):
        from facerestore.nn.retinaface import read_weights_py

        data = read_weights_py(path)
    else:
        data = path.read_bytes()
    _same_as_onnx(data)


def _model(inits: list[TensorProto], nodes: list | None = None) -> bytes:
    nodes = nodes or [helper.make_node("Identity", [inits[0].name], ["y"], name="n")]
    graph = helper.make_graph(nodes, "g", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph).SerializeToString()


@needs_onnx
def test_every_tensor_encoding_and_attribute_kind():
    """raw_data and the typed fields (float_data, int32_data, int64_data, double_data, uint64_data; float16 as
    bit patterns in int32_data), scalars and empty tensors, and attributes of every kind used by exporters."""
    rng = np.random.default_rng(0)
    arrays = {
        "f32": rng.normal(size=(2, 3)).astype(np.float32), "f64": rng.normal(size=4),
        "f16": rng.normal(size=5).astype(np.float16), "i64": np.array([-3, 0, 2**40], np.int64),
        "i32": np.array([[-7, 9]], np.int32), "u8": np.array([0, 255], np.uint8), "i8": np.array([-128, 5], np.int8),
        "b": np.array([True, False]), "u64": np.array([2**63 + 5], np.uint64), "scalar": np.array(1.5, np.float32),
        "empty": np.zeros((0, 3), np.float32),
    }
    inits = [numpy_helper.from_array(v, k) for k, v in arrays.items()]  # raw_data
    for k in ("f32", "f64", "f16", "i64", "i32", "u8", "b", "u64"):  # the same values in the typed fields
        v = arrays[k]
        dtype = helper.np_dtype_to_tensor_dtype(v.dtype)
        # (make_tensor stores float16 as its bit patterns in int32_data itself)
        inits.append(helper.make_tensor(f"{k}_typed", dtype, v.shape, v.ravel().tolist(), raw=False))
    node = helper.make_node("Conv", ["f32", "f32"], ["y"], name="/a/Conv", strides=[2, 2], pads=[1, 1, 1, 1],
                            group=3, alpha=0.25, mode="nearest", value=numpy_helper.from_array(arrays["i64"]),
                            scales=[1.0, 2.5], names=["a", "b"])
    data = _model(inits, [node])
    _same_as_onnx(data)
    model = parse_model(data)
    for k, v in arrays.items():
        assert np.array_equal(model.initializers[k], v)
        typed = model.initializers.get(f"{k}_typed")
        if typed is not None:
            assert np.array_equal(typed, v) and typed.dtype == v.dtype
    assert model.nodes[0].attributes["mode"] == b"nearest" and model.nodes[0].attributes["group"] == 3


@needs_onnx
def test_tensors_in_external_files_are_refused():
    """A downloaded file must not make us read another path: external data is an error."""
    t = numpy_helper.from_array(np.zeros(4, np.float32), "w")
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    entry = t.external_data.add()
    entry.key, entry.value = "location", "/etc/passwd"
    with pytest.raises(OnnxFormatError, match="external"):
        parse_model(_model([t]))


@needs_onnx
def test_damaged_files_raise_one_error_type():
    """Every prefix and many byte flips of a valid model either parse or raise OnnxFormatError, nothing else."""
    rng = np.random.default_rng(1)
    data = _model([numpy_helper.from_array(rng.normal(size=(3, 3)).astype(np.float32), "w"),
                   helper.make_tensor("t", TensorProto.FLOAT16, [2], [1, 2], raw=False)])
    damaged = [data[:k] for k in range(len(data))]
    for _ in range(300):
        b = bytearray(data)
        for i in rng.integers(0, len(b), 3):
            b[i] = int(rng.integers(0, 256))
        damaged.append(bytes(b))
    for d in damaged:
        try:
            parse_model(d)
        except OnnxFormatError:
            pass
    with pytest.raises(OnnxFormatError, match="no graph"):
        parse_model(b"\x08\x06")  # ir_version only


def test_an_oversized_file_is_refused_by_its_size_before_it_is_read(tmp_path, monkeypatch):
    """The detectors' loaders stat the file first: a huge or hostile .onnx is one line, not gigabytes read and
    parsed into memory."""
    from facerestore.errors import InputError
    from facerestore.nn import onnx_weights
    from facerestore.nn.scrfd import load_scrfd

    big = tmp_path / "big.onnx"
    big.write_bytes(b"\0" * 4096)
    monkeypatch.setattr(onnx_weights, "MAX_MODEL_BYTES", 1024)
    monkeypatch.setattr("builtins.open", lambda *a, **k: pytest.fail("the file was opened"))
    with pytest.raises(InputError, match="4096 bytes, over the 1024-byte limit"):
        load_scrfd(big)
