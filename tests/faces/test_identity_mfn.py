"""The 112 px identity networks: MobileFace (MobileFaceEmbedder, metric id_mobileface) and MobileFaceNet
(MobileFaceNetEmbedder, metric id_mfn).

The networks' equality with their TF.js graphs is tested in tests/nn/test_tfjs.py; here: the crop geometry
(against closed-form affine maths), the embedders' contract and the metrics, and, on ../shared/data/photos when
present, that MobileFace tells people apart. Tests needing the weights skip when the zoo entries are not cached.
Neither network's licence is stated: evaluation use only.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facerestore import zoo
from facerestore.errors import InputError
from facerestore.faces.identity import (
    ARCFACE_TEMPLATE_112,
    MFN_SAME_PERSON_THRESHOLD,
    mfn_distance,
    mobilefacenet_crop,
)

needs_mfn = pytest.mark.skipif(not zoo.is_available("mobilefacenet"),
                               reason="MobileFaceNet weights not cached: `facerestore models download mobilefacenet`")
needs_mface = pytest.mark.skipif(not zoo.is_available("mobileface"),
                                 reason="MobileFace weights not cached: `facerestore models download mobileface`")
# (backend name, embedder class name, embedding size, skip mark)
NETWORKS = [pytest.param("mobilefacenet", "MobileFaceNetEmbedder", 192, marks=needs_mfn, id="mobilefacenet"),
            pytest.param("mobileface", "MobileFaceEmbedder", 256, marks=needs_mface, id="mobileface")]


def test_crop_maps_landmarks_onto_the_arcface_template():
    # a smooth photo whose "face" is the template scaled by 3 and shifted: crop pixel (u, v) shows photo point
    # ((u + 0.5) * 3 - 0.5 + tx, (v + 0.5) * 3 - 0.5 + ty)
    def f(x, y):
        return np.stack([0.5 + 0.4 * np.sin(x / 40.0), 0.5 + 0.4 * np.cos(y / 30.0), 0.5 + 0.3 * np.sin((x + y) / 50)],
                        -1)

    yy, xx = np.mgrid[0:600, 0:500].astype(np.float64)
    img = f(xx, yy).astype(np.float32)
    s, t = 3.0, np.array([40.0, 70.0])
    lm = (ARCFACE_TEMPLATE_112 + 0.5) * s - 0.5 + t
    crop = mobilefacenet_crop(img, lm)
    assert crop.shape == (112, 112, 3) and crop.dtype == np.float32
    v, u = np.mgrid[0:112, 0:112].astype(np.float64)
    want = f((u + 0.5) * s - 0.5 + t[0], (v + 0.5) * s - 0.5 + t[1])
    assert np.abs(crop - want).max() < 0.01
    with pytest.raises(InputError):
        mobilefacenet_crop(img, lm[:4])


def test_mfn_distance_is_cosine_distance():
    a, b = np.array([1.0, 0.0, 0.0]), np.array([0.0, 2.0, 0.0])
    assert mfn_distance(a, a) == 0.0 and mfn_distance(a, b) == pytest.approx(1.0)
    assert mfn_distance(a, -a) == pytest.approx(2.0)
    assert 0 < MFN_SAME_PERSON_THRESHOLD < 2


def test_registry_lists_id_mfn():
    from facerestore.metrics.registry import get_spec

    spec = get_spec("id_mfn")
    assert spec.kind == "face" and spec.lower_better and "mobilefacenet" in spec.weights
    assert "evaluation only" in spec.description


@pytest.mark.parametrize("backend, cls, dim", NETWORKS)
def test_embedder_contract(astronaut, backend, cls, dim):
    from facerestore.faces import identity
    from facerestore.faces.detect import detect_faces
    from facerestore.faces.identity import FaceEmbedder

    emb = getattr(identity, cls)()
    lm5 = detect_faces(astronaut, "hog", select="largest")[0].landmarks5
    e = emb(astronaut, lm5)
    assert e.shape == (dim,) and e.dtype == np.float64 and abs(np.linalg.norm(e) - 1) < 1e-5
    # uint8 and float inputs agree; the FaceEmbedder backend routes through the same crop
    # (rounding the crop to 8 bits moves MobileFace's embedding by ~3e-5; same-person distances are ~0.5)
    e_u8 = emb.embed_crops((mobilefacenet_crop(astronaut, lm5)[None] * 255 + 0.5).astype(np.uint8))[0]
    assert mfn_distance(e, e_u8) < 1e-4
    fe = FaceEmbedder(backend)
    assert fe.dim == dim
    assert mfn_distance(fe.embed(astronaut, landmarks=lm5), e) < 1e-5
    with pytest.raises(InputError, match="needs landmarks"):
        fe.embed(astronaut, box=np.array([0, 0, 10, 10]))


@pytest.mark.parametrize("metric", [pytest.param("id_mfn", marks=needs_mfn),
                                    pytest.param("id_mobileface", marks=needs_mface)])
def test_identity_metric(astronaut_tensor, metric):
    from facerestore.metrics.registry import create

    m = create(metric)
    x = astronaut_tensor
    same = m(x, x)
    assert same.shape == (1,) and abs(float(same[0])) < 1e-6
    noisy = (x + 0.2 * torch.randn_like(x, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    flat = torch.full_like(x, 0.5)
    d_noisy, d_flat = float(m(noisy, x)[0]), float(m(flat, x)[0])
    assert 0 < d_noisy < d_flat  # destroying the face moves the embedding further than noise


@needs_mface
def test_mobileface_tells_people_apart(shared_data):
    """On the human-labelled pairs of ../shared/data/photos (master.csv), same-person pairs are nearer than
    different-person pairs (ROC AUC), and the calibrated threshold sits between the two groups' means."""
    import csv

    from facerestore.faces.detect import DlibDetector, landmarks_68_to_5, select_faces
    from facerestore.faces.identity import MOBILEFACE_SAME_PERSON_THRESHOLD, MobileFaceEmbedder
    from facerestore.io import read_rgb
    from facerestore.metrics.stats import roc_auc

    folder = shared_data / "photos"
    if not (folder / "master.csv").is_file():
        pytest.skip("../shared/data/photos/master.csv is absent")
    with open(folder / "master.csv", newline="") as f:
        rows = [(r["file_x"].split("/")[-1], r["file_y"].split("/")[-1], r["Decision"] == "Yes")
                for r in csv.DictReader(f)][:120]
    det, emb, cache = DlibDetector("hog", upsample=0, max_side=640, landmarks=68), MobileFaceEmbedder(), {}

    def embed(name):
        if name not in cache:
            img = read_rgb(folder / name)
            face = select_faces(det.detect(img), "largest", img.shape)[0]
            cache[name] = emb(img, landmarks_68_to_5(face.landmarks68))
        return cache[name]

    d = np.array([mfn_distance(embed(a), embed(b)) for a, b, _ in rows])
    same = np.array([s for *_, s in rows])
    assert same.any() and (~same).any()
    assert roc_auc(-d[same], -d[~same]) > 0.95
    assert d[same].mean() < MOBILEFACE_SAME_PERSON_THRESHOLD < d[~same].mean()
