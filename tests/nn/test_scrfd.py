"""SCRFD-2.5G port (facerestore.nn.scrfd, faces.scrfd decoding, faces.detect.SCRFDDetector).

The reference is onnxruntime running the ONNX model of the scrfd==0.3.0 sdist on the same input tensors: the
raw heads of our network must equal its outputs, and our detector's final detections must equal a reference
decoding written here from InsightFace's definition (anchor points, distance-to-box and keypoint offsets,
threshold, NMS) applied to onnxruntime's outputs on the same network input. Tests that need the weights skip
when the zoo entry ``scrfd-2.5g`` (optional, research-only) is not cached (``facerestore models download
scrfd-2.5g``); those that need the reference runtime skip without onnxruntime.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from torch import nn

from facerestore import zoo
from facerestore.errors import InputError
from facerestore.nn import onnx_weights
from facerestore.nn.scrfd import SCRFD, load_scrfd

ENTRY = "scrfd-2.5g"
HAS_ORT = importlib.util.find_spec("onnxruntime") is not None
# hand annotation of examples/astronaut.png (tests/faces/test_detect.py): eyes, nose tip, mouth corners
ASTRONAUT_5 = np.array([[203.0, 101.0], [246.0, 104.0], [225.5, 127.5], [203.5, 140.5], [243.5, 141.0]])


def _weights_file():
    if not zoo.is_available(ENTRY):
        pytest.skip(f"SCRFD weights not cached (optional, research-only): run `facerestore models download {ENTRY}`")
    return zoo.weights_path(ENTRY) / "scrfd.onnx"


@pytest.fixture(scope="module")
def onnx_bytes():
    return _weights_file().read_bytes()


@pytest.fixture(scope="module")
def net(onnx_bytes):
    return load_scrfd(onnx_bytes)


def _session(data: bytes):
    if not HAS_ORT:
        pytest.skip("needs onnxruntime (the reference runtime)")
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def session(onnx_bytes):
    """The export as published: a fixed 1 x 3 x 640 x 640 input."""
    return _session(onnx_bytes)


@pytest.fixture(scope="module")
def any_size_session(onnx_bytes):
    """The same graph with its two fixed-size upsamplings made x2 scales and the input sides left free, so that
    onnxruntime runs other input sizes (every weight unchanged)."""
    onnx = pytest.importorskip("onnx", reason="editing the graph needs the onnx package (dev extra)")
    from onnx import numpy_helper

    model = onnx.load_from_string(onnx_bytes)
    g = model.graph
    g.initializer.append(numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "x2"))
    sizes = set()
    for n in g.node:
        if n.op_type == "Resize":
            sizes.add(n.input[3])
            x, roi = n.input[0], n.input[1]
            del n.input[:]
            n.input.extend([x, roi, "x2"])
    kept = [t for t in g.initializer if t.name not in sizes]
    del g.initializer[:]
    g.initializer.extend(kept)
    dims = g.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "H", "W"
    for o in g.output:
        o.type.tensor_type.ClearField("shape")
    return _session(model.SerializeToString())


def _ours(net, x: np.ndarray) -> list[np.ndarray]:
    with torch.no_grad():
        scores, boxes, kps = net(torch.from_numpy(x))
    return [t.numpy() for t in (*scores, *boxes, *kps)]


def _blob(canvas: np.ndarray) -> np.ndarray:
    """InsightFace's network input, written here: RGB, (pixel - 127.5) / 128, NCHW."""
    return ((canvas.astype(np.float32) - 127.5) / 128.0).transpose(2, 0, 1)[None].copy()


def _faces_image(astronaut) -> np.ndarray:
    """A 640 x 960 gray canvas holding the astronaut's face at four sizes, one of them mirrored."""
    import cv2

    from facerestore.faces.detect import as_uint8_rgb

    face = as_uint8_rgb(astronaut)[30:210, 150:300]  # 150 x 180 around the face
    canvas = np.full((640, 960, 3), 120, np.uint8)
    for (x, y), s, flip in (((40, 60), 1.0, False), ((330, 80), 0.6, True), ((560, 300), 1.6, False),
                            ((120, 420), 0.45, False)):
        f = cv2.resize(face, None, fx=s, fy=s, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
        canvas[y: y + f.shape[0], x: x + f.shape[1]] = f[:, ::-1] if flip else f
    return canvas


# --- equivalence with the reference runtime ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["noise", "astronaut", "faces"])
def test_raw_heads_equal_onnxruntime(net, session, kind, astronaut):
    from facerestore.faces.scrfd import letterbox

    if kind == "noise":
        x = np.random.default_rng(0).normal(0, 1, (1, 3, 640, 640)).astype(np.float32)
    else:
        from facerestore.faces.detect import as_uint8_rgb

        img = as_uint8_rgb(astronaut) if kind == "astronaut" else _faces_image(astronaut)
        x = _blob(letterbox(img, 640)[0])
    ref = session.run(None, {"input.1": x})
    ours = _ours(net, x)
    names = [o.name for o in session.get_outputs()]
    assert names == [f"{k}_{s}" for k in ("score", "bbox", "kps") for s in (8, 16, 32)]
    for name, a, b in zip(names, ours, ref):
        assert a.shape == b.shape, name
        err = float(np.abs(a - b).max())
        assert err < 1e-4, (name, err)


@pytest.mark.parametrize("shape", [(320, 480), (96, 64), (1, 480, 352)])
def test_raw_heads_equal_onnxruntime_at_other_sizes(net, any_size_session, shape):
    h, w = shape[-2:]
    x = np.random.default_rng(h + w).uniform(-1, 1, (1, 3, h, w)).astype(np.float32)
    ref = any_size_session.run(None, {"input.1": x})
    for a, b in zip(_ours(net, x), ref):
        assert a.shape == b.shape and float(np.abs(a - b).max()) < 1e-4
    with torch.no_grad():  # a batch is each image on its own
        two = net(torch.from_numpy(np.concatenate([x, x[:, :, ::-1].copy()])))
    assert float((two[0][0][0] - torch.from_numpy(ref[0][0])).abs().max()) < 1e-4


def test_input_sides_must_be_multiples_of_32(net):
    with pytest.raises(InputError, match="multiples of 32"):
        net(torch.zeros(1, 3, 100, 64))
    with pytest.raises(InputError):
        net(torch.zeros(3, 64, 64))


# --- the weights load strictly --------------------------------------------------------------------------------


def test_every_tensor_of_the_file_is_used(onnx_bytes, net):
    model = onnx_weights.load_model(onnx_bytes)
    convs = onnx_weights.conv_sequence(model)
    ours = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == len(ours) == 57  # 31 backbone, 10 neck, 3 x (2 + 3) head
    arrays = onnx_weights.initializers(model)
    for i in range(3):
        assert float(net.bbox_head.scales[i].scale.detach()) == float(arrays[f"bbox_head.scales.{i}.scale"])
    named = dict(net.named_modules())
    for c in convs:
        if not c.module.isdigit():  # the file's own name is the module it loaded into
            assert np.array_equal(named[c.module.removesuffix(".weight")].weight.detach().numpy(), c.weight)
    # parameters: the file's tensors, less its 17 shape constants, plus the one bias the exporter shared
    n_file = sum(t.size for t in arrays.values() if t.dtype == np.float32 and t.ndim and t.size)
    n_shared = net.neck.downsample_convs[1].conv.bias.numel()
    n_scales = 3
    assert sum(p.numel() for p in net.parameters()) == n_file + n_shared + n_scales


def _edited(onnx_bytes, edit) -> bytes:
    onnx = pytest.importorskip("onnx", reason="editing the file needs the onnx package (dev extra)")

    model = onnx.load_from_string(onnx_bytes)
    edit(model.graph)
    return model.SerializeToString()


def test_mismatches_are_one_line_input_errors(onnx_bytes):
    numpy_helper = pytest.importorskip("onnx.numpy_helper", reason="editing the file needs the onnx package")

    def swap_two_head_convs(g):  # same shapes, other places: only the file's names tell
        a = next(n for n in g.node if n.input[1:2] == ["bbox_head.stride_cls.(8, 8).weight"])
        b = next(n for n in g.node if n.input[1:2] == ["bbox_head.stride_cls.(16, 16).weight"])
        a.input[1], b.input[1] = b.input[1], a.input[1]

    def narrow(g):
        t = next(t for t in g.initializer if t.name == "neck.fpn_convs.0.conv.weight")
        t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t)[:, :12].copy(), t.name))

    def extra(g):
        g.initializer.append(numpy_helper.from_array(np.zeros(3, np.float32), "stray"))

    def no_scale(g):
        kept = [t for t in g.initializer if t.name != "bbox_head.scales.1.scale"]
        del g.initializer[:]
        g.initializer.extend(kept)

    def drop_conv(g):
        i = max(i for i, n in enumerate(g.node) if n.op_type == "Conv")
        del g.node[i]

    for edit, match in ((swap_two_head_convs, "out of order"), (narrow, "neck.fpn_convs.0"), (extra, "not used"),
                        (no_scale, "scales.1"), (drop_conv, "57 in the architecture")):
        with pytest.raises(InputError, match=match) as err:
            load_scrfd(_edited(onnx_bytes, edit))
        assert "\n" not in str(err.value)
    with pytest.raises(InputError):
        load_scrfd(b"not an onnx file")


def test_call_order_lists_each_convolution_once():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.b = nn.Conv2d(3, 3, 1)
            self.a = nn.Conv2d(3, 3, 1)
            self.unused = nn.Conv2d(3, 3, 1)

        def forward(self, x):
            return self.b(self.a(self.b(x)))

    assert onnx_weights.call_order(Net(), torch.zeros(1, 3, 4, 4)) == ["b", "a", "unused"]
    assert [c for c, _ in SCRFD().named_children()] == ["backbone", "neck", "bbox_head"]


# --- decoding -------------------------------------------------------------------------------------------------


def test_decode_matches_closed_form():
    from facerestore.faces.scrfd import anchor_centres, decode

    h, w = 64, 96
    n = sum(2 * (h // s) * (w // s) for s in (8, 16, 32))
    rng = np.random.default_rng(0)
    dist, kps = rng.uniform(0, 3, (n, 4)), rng.normal(size=(n, 10))
    boxes, pts = decode(dist, kps, h, w)
    assert anchor_centres(h, w).shape == (n, 3)
    k = 0
    for s in (8, 16, 32):  # the network's order: stride, row, column, anchor
        for i in range(h // s):
            for j in range(w // s):
                for _ in range(2):
                    cx, cy = j * s, i * s
                    assert np.allclose(boxes[k], [cx - dist[k, 0] * s, cy - dist[k, 1] * s, cx + dist[k, 2] * s,
                                                  cy + dist[k, 3] * s])
                    assert np.allclose(pts[k], [[cx + kps[k, 2 * q] * s, cy + kps[k, 2 * q + 1] * s]
                                                for q in range(5)])
                    k += 1
    assert k == n
    with pytest.raises(InputError):
        decode(dist[:-1], kps[:-1], h, w)
    with pytest.raises(InputError):
        anchor_centres(60, 96)


def test_letterbox_and_padding():
    from facerestore.faces.scrfd import letterbox, padded

    img = np.full((300, 500, 3), 200, np.uint8)
    canvas, (fx, fy) = letterbox(img, 640)
    assert canvas.shape == (640, 640, 3) and canvas[383, 639].tolist() == [200] * 3 and canvas[384, 0].max() == 0
    assert (fx, fy) == (500 / 640, 300 / 384)  # InsightFace: the shorter side int(640 * 300 / 500) = 384
    canvas, (fx, fy) = padded(img, 0.5)
    assert canvas.shape == (160, 256, 3) and canvas[149, 249].max() == 200 and canvas[150:].max() == 0
    assert (fx, fy) == (2.0, 2.0)
    with pytest.raises(InputError):
        letterbox(img, 600)


# --- the detector ---------------------------------------------------------------------------------------------


def _reference_detections(session, canvas, factors, threshold, iou=0.4):
    """InsightFace's decoding of onnxruntime's outputs, written here from its definition, mapped to the photo
    (boxes: edges times the factors; points: facerestore's pixel centres)."""
    outs = session.run(None, {"input.1": _blob(canvas)})
    h, w = canvas.shape[:2]
    scores, boxes, points = [], [], []
    for level, s in enumerate((8, 16, 32)):
        ys, xs = np.mgrid[: h // s, : w // s]
        centres = np.repeat(np.stack([xs, ys], -1).reshape(-1, 2) * s, 2, axis=0).astype(np.float64)
        sc, d, k = (outs[level + 3 * t][0].astype(np.float64) for t in range(3))
        d, k = d * s, k * s
        keep = sc[:, 0] >= threshold
        scores.append(sc[keep, 0])
        boxes.append(np.concatenate([centres - d[:, :2], centres + d[:, 2:]], 1)[keep])
        points.append((np.tile(centres, 5) + k).reshape(-1, 5, 2)[keep])
    scores, boxes, points = np.concatenate(scores), np.concatenate(boxes), np.concatenate(points)
    order = np.argsort(-scores, kind="stable")
    kept: list[int] = []
    for i in order:  # greedy NMS
        ok = True
        for j in kept:
            ix = max(0.0, min(boxes[i, 2], boxes[j, 2]) - max(boxes[i, 0], boxes[j, 0]))
            iy = max(0.0, min(boxes[i, 3], boxes[j, 3]) - max(boxes[i, 1], boxes[j, 1]))
            union = np.prod(boxes[i, 2:] - boxes[i, :2]) + np.prod(boxes[j, 2:] - boxes[j, :2]) - ix * iy
            if ix * iy / union > iou:
                ok = False
                break
        if ok:
            kept.append(int(i))
    fx, fy = factors
    return (scores[kept], boxes[kept] * [fx, fy, fx, fy], points[kept] * [fx, fy] - 0.5)


@pytest.fixture(scope="module")
def detector(onnx_bytes):
    from facerestore.faces.detect import create_detector

    return create_detector("scrfd")


@pytest.mark.parametrize("kind", ["astronaut", "faces", "faces@native"])
def test_detections_equal_the_reference_decoding(detector, session, any_size_session, astronaut, kind):
    from facerestore.faces.detect import SCRFDDetector, as_uint8_rgb

    img = as_uint8_rgb(astronaut) if kind == "astronaut" else _faces_image(astronaut)
    det = SCRFDDetector(size=None) if kind.endswith("@native") else detector
    canvas, factors = det.network_input(img)
    assert canvas.shape == ((640, 640, 3) if det.size else (640, 960, 3))
    ref_scores, ref_boxes, ref_points = _reference_detections(session if det.size else any_size_session,
                                                              canvas, factors, det.threshold)
    dets = det.detect(img)
    assert len(dets) == len(ref_scores) >= (1 if kind == "astronaut" else 4)
    for d, s, b, p in zip(dets, ref_scores, ref_boxes, ref_points):
        assert d.detector == "scrfd" and abs(d.score - s) < 1e-4
        assert np.abs(d.box - b).max() < 1e-2 and np.abs(d.landmarks5 - p).max() < 1e-2  # pixels


def test_astronaut_one_face_near_hand_annotation(detector, astronaut):
    dets = detector.detect(astronaut)
    assert len(dets) == 1 and dets[0].score > 0.7
    err = np.linalg.norm(dets[0].landmarks5 - ASTRONAUT_5, axis=1)
    assert err[:2].max() < 3.0 and err.max() < 5.0, err
    b = dets[0].box
    assert b[0] < ASTRONAUT_5[:, 0].min() < ASTRONAUT_5[:, 0].max() < b[2]
    assert b[1] < ASTRONAUT_5[:, 1].min() < ASTRONAUT_5[:, 1].max() < b[3]


def test_mirror_size_and_options(detector, astronaut):
    from facerestore.faces.detect import SCRFDDetector, as_uint8_rgb

    img = as_uint8_rgb(astronaut)
    ref = detector.detect(img)[0]
    w = img.shape[1]
    m = detector.detect(np.ascontiguousarray(img[:, ::-1]))[0]
    assert np.abs(m.landmarks5 - (ref.landmarks5[[1, 0, 2, 4, 3]] * [-1, 1] + [w - 1, 0])).max() < 2.0
    for other in (SCRFDDetector(size=320), SCRFDDetector(size=None), SCRFDDetector(size=None, scale=0.5)):
        d = other.detect(img)
        assert len(d) == 1 and np.linalg.norm(d[0].landmarks5 - ref.landmarks5, axis=1).max() < 5
    assert SCRFDDetector(threshold=0.999).detect(img) == []
    assert len(SCRFDDetector(threshold=0.02, nms=1.0).detect(img)) > 1  # NMS off: many boxes
    assert SCRFDDetector(min_size=500).detect(img) == []
    assert detector.detect(np.full((200, 300, 3), 128, np.uint8)) == []
    for bad in ({"size": 600}, {"scale": 0}, {"nms": 0}, {"landmarks": 5}, {"max_side": 8}):
        with pytest.raises(InputError):
            SCRFDDetector(**bad)
