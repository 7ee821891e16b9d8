"""MFPSNet restorer (user weights), priors (mesh parsing map, component dictionary, k-means)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from facerestore.errors import InputError, WeightsMissingError
from facerestore.methods import load_restorer
from facerestore.methods.mfpsnet.genotype import PRESETS
from facerestore.methods.mfpsnet.network import FRSNet, MFPSNet
from facerestore.methods.mfpsnet.priors import ComponentDictionary, kmeans, mesh_parsing_labels
from facerestore.methods.mfpsnet.restorer import save_mfpsnet

TINY = {"nf": 8, "growth": 4, "blocks": 1, "sr_filters": 2}


def test_builtin_weights_load_with_their_dictionary_and_restore_a_face(astronaut_tensor):
    pytest.importorskip("dlib", reason="the priors need dlib's 68-point landmarks")
    from facerestore import zoo

    if not zoo.is_available("facemesh-468"):
        pytest.skip("the built-in weights were trained on Face Mesh parsing maps: "
                    "`facerestore models download facemesh-468`")
    from facerestore.methods.mfpsnet.restorer import BUILTIN_NAME
    from facerestore.methods.mfpsnet.train import MFPSNetAdapter

    r = load_restorer("mfpsnet")
    d = r.description
    assert Path(r.default_weights()).name == f"{BUILTIN_NAME}.safetensors"
    assert d["network"] == "mfpsnet" and d["size"] == 128 and d["model"]["input_skip"] is True
    assert Path(d["dictionary"]).is_file() and r.spec.trainer is MFPSNetAdapter
    priors = r.prior_fn(torch.rand(1, 3, 128, 128))
    assert set(priors) == {"parse", "heat", "dict"}
    x = torch.nn.functional.interpolate(astronaut_tensor[:, :, :320, 96:416], size=(128, 128), mode="area")
    y = r.restore(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    # the compact model is a correction on its input (input_skip): close to it, but not equal
    assert 0 < float((y - x).abs().mean()) < 0.05


def test_missing_user_weights_are_a_clear_error(tmp_path):
    with pytest.raises(WeightsMissingError, match="not found"):
        load_restorer("mfpsnet", weights=tmp_path / "none.safetensors")


def test_user_frsnet_weights_restore_crops(tmp_path):
    torch.manual_seed(0)
    net = FRSNet(PRESETS["released"], **TINY).eval()
    path = save_mfpsnet(net, tmp_path / "frs.safetensors", size=64, model=TINY)
    r = load_restorer("mfpsnet", weights=path)
    assert r.spec.size == 64
    x = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    y = r.restore(x)
    assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
    with torch.no_grad():  # the wrapper's resize around the network, nothing else
        from facerestore.methods import resize_crop

        want = resize_crop(net(resize_crop(x, (64, 64))).clamp(0, 1), (48, 48))
    torch.testing.assert_close(y, want)
    # a description that does not match the file: one-line error before anything is built
    (tmp_path / "frs.json").write_text((tmp_path / "frs.json").read_text().replace('"nf": 8', '"nf": 16'))
    with pytest.raises(InputError):
        load_restorer("mfpsnet", weights=path)


def test_input_skip_survives_save_and_load(tmp_path):
    """input_skip has no parameters: the description is written from the network, whatever ``model=`` says, so
    the reloaded network computes the same image (it came back without the skip: outputs off by up to 1)."""
    torch.manual_seed(0)
    net = FRSNet(PRESETS["released"], **TINY, input_skip=True).eval()
    path = save_mfpsnet(net, tmp_path / "skip.safetensors", size=64, model=TINY)
    r = load_restorer("mfpsnet", weights=path)
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(r.restore(x), net(x).clamp(0, 1))


def test_user_mfpsnet_weights_run_both_iterations(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = dict(TINY, prior_filters=2, fusion_filters=2)
    net = MFPSNet(PRESETS["released"], **model).eval()
    path = save_mfpsnet(net, tmp_path / "mfps.safetensors", size=64, model=model)
    r = load_restorer("mfpsnet", weights=path)
    seen = []

    def fake_priors(images):  # the real extractor needs dlib on a face; here: record the call, give empties
        seen.append(tuple(images.shape))
        return {}

    monkeypatch.setattr(r, "prior_fn", fake_priors)
    y = r.restore(torch.rand(1, 3, 64, 64))
    assert y.shape == (1, 3, 64, 64) and seen == [(1, 3, 64, 64)]


def test_mesh_parsing_map_classes_on_a_synthetic_mesh():
    """A mesh made of the canonical rings placed as circles: each class lands where its ring is."""
    from facerestore.faces import mesh
    from facerestore.faces.priors import CELEBAMASK_INDEX as idx

    pts = np.full((468, 2), 64.0)

    def ring(indices, cx, cy, rx, ry):
        t = np.linspace(0, 2 * np.pi, len(indices), endpoint=False)
        pts[list(indices)] = np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1)

    ring(mesh.FACE_OVAL, 64, 64, 50, 60)
    ring(mesh.RIGHT_EYE, 44, 50, 8, 4)
    ring(mesh.LEFT_EYE, 84, 50, 8, 4)
    ring(mesh.RIGHT_EYEBROW, 44, 38, 10, 3)
    ring(mesh.LEFT_EYEBROW, 84, 38, 10, 3)
    # lips: outer 61 -> bottom -> 291 -> top -> 61, inner likewise, as the mesh orders them
    t = np.linspace(np.pi, -np.pi, 20, endpoint=False)
    pts[list(mesh.LIPS_OUTER)] = np.stack([64 + 18 * np.cos(t), 95 + 8 * np.sin(t)], 1)
    pts[list(mesh.LIPS_INNER)] = np.stack([64 + 12 * np.cos(t), 95 + 2 * np.sin(t)], 1)
    from facerestore.methods.mfpsnet.priors import NOSE_POINTS

    ring(NOSE_POINTS, 64, 68, 6, 12)
    lab = mesh_parsing_labels(pts, 128)
    assert lab[50, 44] == idx["l_eye"] and lab[50, 84] == idx["r_eye"]
    assert lab[38, 44] == idx["l_brow"] and lab[38, 84] == idx["r_brow"]
    assert lab[68, 64] == idx["nose"] and lab[95, 64] == idx["mouth"]
    assert lab[89, 64] == idx["u_lip"] and lab[101, 64] == idx["l_lip"]
    assert lab[64, 30] == idx["skin"] and lab[2, 2] == idx["background"]
    assert not {idx[c] for c in ("hair", "neck", "cloth", "eye_g")} & set(np.unique(lab).tolist())


def test_kmeans_finds_separated_clusters_and_dictionary_places_atoms():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = torch.cat([c + 0.1 * torch.randn(20, 2, generator=g) for c in centres])
    c = kmeans(x, 3, seed=1)
    d = torch.cdist(centres, c)
    assert float(d.min(1).values.max()) < 0.2  # every true centre has a centroid next to it
    with pytest.raises(InputError):
        kmeans(x, 0)

    class Const(torch.nn.Module):  # a stand-in feature net: the crop's mean colour, broadcast
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, crops):
            return crops.mean((2, 3), keepdim=True)[:, :1].expand(-1, 256, 14, 14) + 0 * self.w

    lm = np.tile(np.array([[40.0, 50.0]] * 68), (1, 1, 1))
    lm[0, 42:48] = [88, 50]
    lm[0, 27:36] = [64, 70]
    lm[0, 48:68] = [64, 96]
    faces = torch.full((1, 3, 128, 128), 0.5)
    dic = ComponentDictionary.build(faces, lm, Const(), k=1)
    m = dic.prior_map(faces, lm, Const())
    assert m.shape == (1, 256, 128, 128)
    assert float(m[0, 0, 96, 64]) == pytest.approx(float(dic.atoms["mouth"][0, 0, 0, 0]), abs=1e-5)
    assert float(m[0, 0, 5, 5]) == 0.0  # outside every component


def test_parsing_maps_come_from_the_source_the_weights_were_trained_on(monkeypatch, tmp_path):
    """The built-in weights record Face Mesh parsing: without its weights the restorer says so in one line
    instead of feeding the 68-landmark polygons (another distribution: no forehead in the skin class)."""
    from facerestore import zoo
    from facerestore.errors import WeightsMissingError

    if not zoo.is_available("facemesh-468"):
        pytest.skip("the built-in weights need Face Mesh: `facerestore models download facemesh-468`")
    r = load_restorer("mfpsnet")
    assert r.description["parsing"] == "mesh"
    monkeypatch.setenv("FACERESTORE_HOME", str(tmp_path))  # an empty cache: refused at load, in one line
    with pytest.raises(WeightsMissingError, match="facemesh-468"):
        load_restorer("mfpsnet")
    r.description = {**r.description, "parsing": "landmarks"}  # an export trained on the 68-point polygons
    r._priors = None
    from facerestore.methods.mfpsnet.priors import PriorExtractor

    seen = []
    monkeypatch.setattr(PriorExtractor, "__call__", lambda self, images: seen.append(self.use_mesh) or {})
    r.prior_fn(torch.rand(1, 3, 128, 128))
    assert seen == [False]
