"""MobileFaceNet identity (facerestore.faces.identity.MobileFaceNetEmbedder, metric id_mfn).

The network's equality with its TF.js graph is tested in tests/nn/test_tfjs.py; here: the crop geometry
(against closed-form affine maths), the embedder's contract and the metric. Tests needing the weights skip when
the zoo entry ``mobilefacenet`` is not cached. MobileFaceNet's licence is not stated: evaluation use only.
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


@needs_mfn
def test_embedder_contract(astronaut):
    from facerestore.faces.detect import detect_faces
    from facerestore.faces.identity import FaceEmbedder, MobileFaceNetEmbedder

    emb = MobileFaceNetEmbedder()
    lm5 = detect_faces(astronaut, "hog", select="largest")[0].landmarks5
    e = emb(astronaut, lm5)
    assert e.shape == (192,) and e.dtype == np.float64 and abs(np.linalg.norm(e) - 1) < 1e-5
    # uint8 and float inputs agree; the FaceEmbedder backend routes through the same crop
    e_u8 = emb.embed_crops((mobilefacenet_crop(astronaut, lm5)[None] * 255 + 0.5).astype(np.uint8))[0]
    assert mfn_distance(e, e_u8) < 1e-5
    fe = FaceEmbedder("mobilefacenet")
    assert fe.dim == 192
    assert mfn_distance(fe.embed(astronaut, landmarks=lm5), e) < 1e-5
    with pytest.raises(InputError, match="needs landmarks"):
        fe.embed(astronaut, box=np.array([0, 0, 10, 10]))


@needs_mfn
def test_id_mfn_metric(astronaut_tensor):
    from facerestore.metrics.registry import create

    m = create("id_mfn")
    x = astronaut_tensor
    same = m(x, x)
    assert same.shape == (1,) and abs(float(same[0])) < 1e-6
    noisy = (x + 0.2 * torch.randn_like(x, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    flat = torch.full_like(x, 0.5)
    d_noisy, d_flat = float(m(noisy, x)[0]), float(m(flat, x)[0])
    assert 0 < d_noisy < d_flat  # destroying the face moves the embedding further than noise
