"""TFLite reader (facerestore.nn.tflite_reader) and the Face Mesh port (facerestore.nn.facemesh).

The reader is checked on a tiny model written here with the flatbuffer builder of the ``tflite`` package
(known names, shapes, values and options) and on malformed bytes. The port is checked without weights on a
TFLite graph made from a random port (strict loading by name and shape, layout conversions), and with the
real weights (zoo entry ``facemesh-468``) against the TFLite interpreter of ``ai-edge-litert`` on the same
inputs. Tests that need the weights skip when they are not cached (``facerestore models download
facemesh-468``); those that need the reference runtime skip without ai-edge-litert.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from facerestore import zoo
from facerestore.errors import InputError
from facerestore.nn.facemesh import INPUT_SIZE, FaceMesh, load_facemesh, weights_from_tflite
from facerestore.nn.tflite_reader import TFLiteGraph, TFLiteOp, TFLiteTensor, read_tflite

ENTRY = "facemesh-468"
HAS_LITERT = importlib.util.find_spec("ai_edge_litert") is not None


# --------------------------------------------------------------------------------------------------
# a tiny model written with the flatbuffer builder


def _tiny_model(kernel: np.ndarray, bias: np.ndarray, stride: int = 1, padding: int = 1,
                bias_shape: tuple[int, ...] | None = None) -> bytes:
    """input (1, 5, 5, 2) -> CONV_2D(kernel OHWI, bias) -> output; tensors named 'in', 'c/Kernel', 'c/Bias',
    'out' (``bias_shape`` overrides the bias tensor's declared shape, to make a broken file)."""
    import flatbuffers
    import tflite as t

    b = flatbuffers.Builder(1024)

    def ivec(start, values):
        start(b, len(values))
        for v in reversed(values):
            b.PrependInt32(int(v))
        return b.EndVector()

    def buffer(data: bytes | None):
        vec = b.CreateByteVector(data) if data else None
        t.BufferStart(b)
        if vec is not None:
            t.BufferAddData(b, vec)
        return t.BufferEnd(b)

    out_hw = (5 - (kernel.shape[1] if padding == 1 else 1)) // stride + 1
    specs = [("in", (1, 5, 5, 2), 0), ("c/Kernel", kernel.shape, 1), ("c/Bias", bias_shape or bias.shape, 2),
             ("out", (1, out_hw, out_hw, kernel.shape[0]), 0)]
    buffers = [buffer(None), buffer(kernel.astype("<f4").tobytes()), buffer(bias.astype("<f4").tobytes())]
    tensors = []
    for name, shape, buf in specs:
        n = b.CreateString(name)
        s = ivec(lambda bb, n_: t.TensorStartShapeVector(bb, n_), shape)
        t.TensorStart(b)
        t.TensorAddShape(b, s)
        t.TensorAddType(b, t.TensorType.FLOAT32)
        t.TensorAddBuffer(b, buf)
        t.TensorAddName(b, n)
        tensors.append(t.TensorEnd(b))
    t.Conv2DOptionsStart(b)
    t.Conv2DOptionsAddPadding(b, padding)
    t.Conv2DOptionsAddStrideH(b, stride)
    t.Conv2DOptionsAddStrideW(b, stride)
    opts = t.Conv2DOptionsEnd(b)
    ins = ivec(lambda bb, n_: t.OperatorStartInputsVector(bb, n_), [0, 1, 2])
    outs = ivec(lambda bb, n_: t.OperatorStartOutputsVector(bb, n_), [3])
    t.OperatorStart(b)
    t.OperatorAddOpcodeIndex(b, 0)
    t.OperatorAddInputs(b, ins)
    t.OperatorAddOutputs(b, outs)
    t.OperatorAddBuiltinOptionsType(b, t.BuiltinOptions.Conv2DOptions)
    t.OperatorAddBuiltinOptions(b, opts)
    op = t.OperatorEnd(b)
    t.SubGraphStartTensorsVector(b, len(tensors))
    for x in reversed(tensors):
        b.PrependUOffsetTRelative(x)
    tvec = b.EndVector()
    t.SubGraphStartOperatorsVector(b, 1)
    b.PrependUOffsetTRelative(op)
    ovec = b.EndVector()
    g_in = ivec(lambda bb, n_: t.SubGraphStartInputsVector(bb, n_), [0])
    g_out = ivec(lambda bb, n_: t.SubGraphStartOutputsVector(bb, n_), [3])
    t.SubGraphStart(b)
    t.SubGraphAddTensors(b, tvec)
    t.SubGraphAddOperators(b, ovec)
    t.SubGraphAddInputs(b, g_in)
    t.SubGraphAddOutputs(b, g_out)
    sg = t.SubGraphEnd(b)
    t.OperatorCodeStart(b)
    t.OperatorCodeAddBuiltinCode(b, t.BuiltinOperator.CONV_2D)
    t.OperatorCodeAddDeprecatedBuiltinCode(b, t.BuiltinOperator.CONV_2D)
    t.OperatorCodeAddVersion(b, 1)
    oc = t.OperatorCodeEnd(b)
    desc = b.CreateString("tiny test model")
    t.ModelStartOperatorCodesVector(b, 1)
    b.PrependUOffsetTRelative(oc)
    ocv = b.EndVector()
    t.ModelStartSubgraphsVector(b, 1)
    b.PrependUOffsetTRelative(sg)
    sgv = b.EndVector()
    t.ModelStartBuffersVector(b, len(buffers))
    for x in reversed(buffers):
        b.PrependUOffsetTRelative(x)
    bv = b.EndVector()
    t.ModelStart(b)
    t.ModelAddVersion(b, 3)
    t.ModelAddOperatorCodes(b, ocv)
    t.ModelAddSubgraphs(b, sgv)
    t.ModelAddDescription(b, desc)
    t.ModelAddBuffers(b, bv)
    b.Finish(t.ModelEnd(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def test_reader_on_a_model_written_here(tmp_path):
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(3, 3, 3, 2)).astype(np.float32)
    bias = np.array([0.5, -1.0, 2.0], np.float32)
    path = tmp_path / "tiny.tflite"
    path.write_bytes(_tiny_model(kernel, bias, stride=2, padding=0))
    g = read_tflite(path)
    assert g.version == 3 and g.description == "tiny test model"
    assert [t.name for t in g.tensors] == ["in", "c/Kernel", "c/Bias", "out"]
    assert g.inputs == (0,) and g.outputs == (3,)
    np.testing.assert_array_equal(g.tensor("c/Kernel").data, kernel)
    np.testing.assert_array_equal(g.constants()["c/Bias"], bias)
    assert g.tensor("in").data is None and g.tensor("out").shape == (1, 3, 3, 3)
    (op,) = g.ops
    assert op.builtin == "CONV_2D" and op.inputs == (0, 1, 2) and op.outputs == (3,)
    assert op.options["StrideH"] == op.options["StrideW"] == 2 and op.options["Padding"] == 0
    assert g.producer(3) is op and g.producer(1) is None
    assert not g.tensor("c/Kernel").data.flags.writeable
    with pytest.raises(InputError, match="no tensor named"):
        g.tensor("nope")


@pytest.mark.skipif(not HAS_LITERT, reason="needs ai-edge-litert (the reference TFLite runtime)")
def test_model_written_here_runs_in_the_reference_runtime(tmp_path):
    """The builder makes a real TFLite model: the interpreter computes the convolution the reader read."""
    from ai_edge_litert.interpreter import Interpreter

    rng = np.random.default_rng(1)
    kernel = rng.normal(size=(4, 3, 3, 2)).astype(np.float32)
    bias = rng.normal(size=4).astype(np.float32)
    raw = _tiny_model(kernel, bias)
    it = Interpreter(model_content=raw)
    it.allocate_tensors()
    x = rng.normal(size=(1, 5, 5, 2)).astype(np.float32)
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    y = it.get_tensor(it.get_output_details()[0]["index"])
    g = read_tflite(raw)
    k = torch.from_numpy(g.tensor("c/Kernel").data.transpose(0, 3, 1, 2).copy())
    ref = torch.nn.functional.conv2d(torch.from_numpy(x).permute(0, 3, 1, 2), k, torch.from_numpy(bias))
    np.testing.assert_allclose(y, ref.permute(0, 2, 3, 1).numpy(), atol=1e-5)


def test_reader_rejects_malformed_files(tmp_path):
    good = _tiny_model(np.ones((1, 1, 1, 2), np.float32), np.zeros(1, np.float32))
    for bad in (b"", b"not a model at all", good[:4] + b"XXXX" + good[8:]):
        with pytest.raises(InputError, match="not a TFLite flatbuffer"):
            read_tflite(bad)
    for cut in (16, 40, len(good) // 2):
        with pytest.raises(InputError):
            read_tflite(good[:cut])
    with pytest.raises(InputError, match="cannot read"):
        read_tflite(tmp_path / "missing.tflite")
    # a buffer that does not fit its tensor's shape
    wrong = _tiny_model(np.ones((1, 1, 1, 2), np.float32), np.zeros(1, np.float32), bias_shape=(3,))
    with pytest.raises(InputError, match="needs 12 bytes, its buffer has 4"):
        read_tflite(wrong)


# --------------------------------------------------------------------------------------------------
# strict loading, without the real weights


def _graph_from_port(model: FaceMesh) -> TFLiteGraph:
    """A TFLite graph holding ``model``'s parameters in TFLite layouts and names, with the port's operators."""
    from facerestore.nn import facemesh as fm

    tensors = [TFLiteTensor(0, "input_1", (1, INPUT_SIZE, INPUT_SIZE, 3), np.dtype("<f4"))]
    modules = dict(model.named_modules())
    for key, value in model.state_dict().items():
        module = modules[key.rsplit(".", 1)[0]]
        arr = value.numpy()
        if isinstance(module, torch.nn.PReLU):
            arr = arr.reshape(1, 1, -1)
        elif arr.ndim == 4:
            arr = arr.transpose(1, 2, 3, 0) if module.groups > 1 else arr.transpose(0, 2, 3, 1)
        tensors.append(TFLiteTensor(len(tensors), fm._tflite_name(key, module), arr.shape, np.dtype("<f4"),
                                    np.ascontiguousarray(arr)))
    ops = []
    for name, (builtin, stride, padding) in fm._expected_ops(model).items():
        tensors.append(TFLiteTensor(len(tensors), name, (), np.dtype("<f4")))
        opts = {"StrideH": stride, "StrideW": stride, "Padding": padding, "FusedActivationFunction": 0}
        ops.append(TFLiteOp(len(ops), builtin, (0,), (len(tensors) - 1,), opts))
    return TFLiteGraph(3, "made from the port", tensors, ops, (0,), (len(tensors) - 1,))


def test_strict_loading_by_name_and_shape():
    torch.manual_seed(0)
    src = FaceMesh()
    graph = _graph_from_port(src)
    dst = FaceMesh()
    dst.load_state_dict(weights_from_tflite(graph, dst), strict=True)
    for (k, a), b in zip(src.state_dict().items(), dst.state_dict().values()):
        assert torch.equal(a, b), k
    x = torch.rand(1, 3, INPUT_SIZE, INPUT_SIZE)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(src(x), dst(x)))

    def broken(change):
        g = _graph_from_port(src)
        change(g)
        with pytest.raises(InputError) as err:
            weights_from_tflite(g, FaceMesh())
        assert "\n" not in str(err.value)
        return str(err.value)

    def drop(g):
        g.tensors = [t for t in g.tensors if t.name != "conv2d_7/Bias"]

    def reshape(g):
        i = next(i for i, t in enumerate(g.tensors) if t.name == "conv2d_20/Kernel")
        t = g.tensors[i]
        g.tensors[i] = TFLiteTensor(t.index, t.name, (1404, 3, 3, 16), t.dtype, np.zeros((1404, 3, 3, 16), "<f4"))

    def extra(g):
        g.tensors.append(TFLiteTensor(len(g.tensors), "conv2d_99/Kernel", (1,), np.dtype("<f4"), np.zeros(1, "<f4")))

    def stride(g):
        i = next(i for i, op in enumerate(g.ops) if g.tensors[op.outputs[0]].name == "depthwise_conv2d_2")
        op = g.ops[i]
        g.ops[i] = TFLiteOp(op.index, op.builtin, op.inputs, op.outputs, {**op.options, "StrideH": 1})

    assert "missing ['conv2d_7/Bias']" in broken(drop)
    assert "conv2d_20/Kernel has shape" in broken(reshape)
    assert "unexpected ['conv2d_99/Kernel']" in broken(extra)
    assert "depthwise_conv2d_2" in broken(stride)


def test_same_padding_and_output_shapes():
    from facerestore.nn.facemesh import _same_pad

    x = torch.zeros(1, 1, 6, 5)
    assert _same_pad(x, 3, 2).shape[-2:] == (7, 7)  # 6 -> total 1 (0 top, 1 bottom); 5 -> total 2 (1, 1)
    assert _same_pad(x, 3, 1).shape[-2:] == (8, 7)
    pts, flag = FaceMesh().eval()(torch.rand(2, 3, INPUT_SIZE, INPUT_SIZE))
    assert pts.shape == (2, 468, 3) and flag.shape == (2,)
    with pytest.raises(InputError):
        FaceMesh()(torch.rand(1, 3, 128, 128))


# --------------------------------------------------------------------------------------------------
# the real weights against the reference runtime


@pytest.fixture(scope="module")
def tflite_file():
    if not zoo.is_available(ENTRY):
        pytest.skip(f"Face Mesh weights not cached: run `facerestore models download {ENTRY}`")
    return zoo.weights_path(ENTRY) / "face_landmark.tflite"


@pytest.fixture(scope="module")
def port(tflite_file):
    return load_facemesh(tflite_file)


def _inputs(astronaut) -> np.ndarray:
    """Three (192, 192, 3) inputs: noise, a flat gray, and the astronaut's face as the model expects it."""
    from facerestore.faces.mesh import _roi_from_5, crop_for_mesh

    rng = np.random.default_rng(3)
    lm5 = np.array([[203.2, 101.5], [246.5, 104.0], [225.0, 127.0], [201.0, 139.0], [246.0, 141.0]])
    face = crop_for_mesh(astronaut, _roi_from_5(lm5))
    return np.stack([rng.uniform(0, 1, (INPUT_SIZE, INPUT_SIZE, 3)), np.full((INPUT_SIZE, INPUT_SIZE, 3), 0.5),
                     face]).astype(np.float32)


@pytest.mark.skipif(not HAS_LITERT, reason="needs ai-edge-litert (the reference TFLite runtime)")
def test_port_equals_the_tflite_interpreter(tflite_file, port, astronaut):
    """Max abs difference < 1e-4 on both outputs (points in crop pixels, up to 192; the face logit) against
    LiteRT's builtin CPU kernels, one image at a time (measured: 4.6e-5 on the points, 4e-6 on the logit).

    That is the float32 rounding floor of these outputs: LiteRT's own reference kernels differ from the port run
    in float64 by up to 1.8e-4, its XNNPACK delegate by up to 1.3e-4, and the float32 port run on a batch of
    three (another summation order) by 1.1e-4. So the bound is also checked relative to the outputs' scale.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_path=str(tflite_file),
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    outs = {d["name"]: d["index"] for d in it.get_output_details()}
    x = _inputs(astronaut)
    flags = []
    for i in range(len(x)):
        with torch.no_grad():
            pts, flag = port(torch.from_numpy(x[i : i + 1]).permute(0, 3, 1, 2))
        it.set_tensor(it.get_input_details()[0]["index"], x[i : i + 1])
        it.invoke()
        ref_pts = it.get_tensor(outs["conv2d_20"]).reshape(468, 3)
        ref_flag = it.get_tensor(outs["conv2d_30"]).reshape(())
        assert np.abs(pts[0].numpy() - ref_pts).max() < 1e-4
        assert abs(float(flag[0]) - float(ref_flag)) < 1e-4
        flags.append(float(flag[0]))
        # batched, in another summation order: still at the float32 floor (< 1e-6 of the output range)
        with torch.no_grad():
            pts_b = port(torch.from_numpy(x).permute(0, 3, 1, 2))[0][i].numpy()
        assert np.abs(pts_b - ref_pts).max() < 1e-6 * 192 * 2
    # the astronaut's crop holds a face, the flat gray does not
    assert flags[2] > 0 > flags[1]


def test_facemesher_on_the_astronaut(tflite_file, astronaut):
    """The dense points land on the face: eye corners near the hand-annotated eyes, the chin below the mouth."""
    from facerestore.faces.mesh import FaceMesher, mesh_region_masks

    lm5 = np.array([[203.2, 101.5], [246.5, 104.0], [225.0, 127.0], [201.0, 139.0], [246.0, 141.0]])
    (res,) = FaceMesher(tflite_file)(astronaut, [lm5])
    assert res is not None and res.score > 0.9 and res.points.shape == (468, 3)
    right_eye = res.xy[[33, 133]].mean(0)
    left_eye = res.xy[[263, 362]].mean(0)
    assert np.linalg.norm(right_eye - lm5[0]) < 5 and np.linalg.norm(left_eye - lm5[1]) < 5
    assert res.xy[152, 1] > lm5[3:, 1].max() + 10  # chin
    masks = mesh_region_masks(res.xy, astronaut.shape[:2])
    assert masks["face"][int(lm5[2, 1]), int(lm5[2, 0])]  # the nose is inside the face oval
    ey, ex = int(right_eye[1]), int(right_eye[0])
    assert masks["eyes"][ey, ex] and not masks["skin"][ey, ex]
    assert not masks["face"][5, 5]
