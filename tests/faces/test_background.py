"""ESRGAN background upscaling (facerestore.faces.background), the pipeline's "esrgan" background, the
calibrated identity fields of the per-photo JSON and ``restore --bg-upsampler``.

The network itself equals its TF.js layers in tests/nn/test_tfjs.py; tests running it skip when the zoo entry
``esrgan-thick`` is not cached (``facerestore models download esrgan-thick``).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from facerestore import zoo
from facerestore.errors import WeightsMissingError
from facerestore.faces.background import esrgan_scale_for, esrgan_upscale

needs_esrgan = pytest.mark.skipif(not zoo.is_available("esrgan-thick"),
                                  reason="ESRGAN weights not cached: `facerestore models download esrgan-thick`")


@pytest.fixture(scope="module")
def small(astronaut):
    return astronaut[40:70, 200:240].astype(np.float32) / 255.0  # 30 x 40, part of the face


def test_scale_choice():
    assert [esrgan_scale_for(u) for u in (1.5, 2, 2.01, 3, 3.5, 4, 5, 8, 12)] == [2, 2, 3, 3, 4, 4, 8, 8, 8]


def test_at_most_1x_is_lanczos_without_weights(monkeypatch, tmp_path, small):
    from facerestore.faces.paste import upscale_image

    monkeypatch.setenv("FACERESTORE_HOME", str(tmp_path))
    np.testing.assert_array_equal(esrgan_upscale(small, 0.5), upscale_image(small, 0.5))


def test_missing_weights_fail_before_work(monkeypatch, tmp_path, small):
    from facerestore.faces.background import esrgan_background
    from facerestore.pipeline import _background

    monkeypatch.setenv("FACERESTORE_HOME", str(tmp_path))
    with pytest.raises(WeightsMissingError, match="esrgan-thick"):
        esrgan_background()
    with pytest.raises(WeightsMissingError, match="esrgan-thick"):
        _background("esrgan")


@needs_esrgan
def test_tiles_meet_without_seams(small):
    whole = esrgan_upscale(small, 2, tile=64)
    tiled = esrgan_upscale(small, 2, tile=16, pad=16)
    assert whole.shape == (60, 80, 3) and whole.dtype == np.float32
    assert float(np.abs(whole - tiled).max()) < 1e-5
    assert 0.0 <= whole.min() and whole.max() <= 1.0


@needs_esrgan
def test_a_float16_network_is_its_own_copy():
    """Module.half() converts in place: a float16 caller must not leave the shared float32 network in float16
    (the next float32 caller would then fail on a dtype mismatch)."""
    import torch

    from facerestore.faces.background import _net

    full = _net(2, "cpu")
    half = _net(2, "cpu", half=True)
    assert half is not full and half is _net(2, "cpu", half=True)
    assert {p.dtype for p in full.parameters()} == {torch.float32}
    assert {p.dtype for p in half.parameters()} == {torch.float16}


@needs_esrgan
def test_any_factor_gives_the_exact_size_and_is_close_to_the_input(small):
    from facerestore.faces.paste import upscale_image

    out = esrgan_upscale(small, 2.5, progress=True)  # x3 network, then Lanczos to 75 x 100
    assert out.shape == (75, 100, 3)
    # downscaled back, the upscaled photo is the input again (super-resolution keeps the content)
    back = upscale_image(out, 1 / 2.5)
    assert back.shape == small.shape and float(np.abs(back - small).mean()) < 0.03


@needs_esrgan
def test_pipeline_esrgan_background(small):
    from facerestore.pipeline import _background

    f = _background("esrgan")
    assert f(small, 2).shape == (60, 80, 3)


def test_face_result_reports_identity_from_both_networks():
    """The per-face record: dlib's distance decides ``identity_changed`` (threshold 0.6); MobileFaceNet's
    calibrated distance is reported beside it; unmeasured fields are null, and the record is JSON."""
    from facerestore.pipeline import FaceResult, IdentityReport

    z = np.zeros((4, 4, 3), np.float32)
    kw = dict(box=np.zeros(4), score=1.0, landmarks5=np.zeros((5, 2)), landmarks68=None, affine=np.eye(2, 3),
              input_crop=z, restored_crop=z)
    r = FaceResult(**kw, identity=IdentityReport(similarity=0.95, distance=0.71, distance_mobileface=0.3,
                                                 threshold_mobileface=0.709))
    js = json.loads(json.dumps(r.to_json()))
    assert js["identity_distance"] == pytest.approx(0.71) and js["identity_threshold"] == 0.6
    assert js["identity_changed"] is True and js["identity_similarity"] == 0.95
    assert js["identity_distance_mobileface"] == 0.3 and js["identity_threshold_mobileface"] == 0.709
    same = FaceResult(**kw, identity=IdentityReport(distance=0.3))
    assert same.to_json()["identity_changed"] is False and same.to_json()["identity_distance_mobileface"] is None
    off = FaceResult(**kw).to_json()
    assert off["identity_changed"] is None and off["identity_distance"] is None


def test_cli_bg_upsampler_esrgan_needs_cached_weights(monkeypatch, tmp_path, astronaut_path):
    from facerestore.cli import main

    monkeypatch.setenv("FACERESTORE_HOME", str(tmp_path / "home"))
    code = main(["restore", "-i", str(astronaut_path), "-o", str(tmp_path / "out"), "--bg-upsampler", "esrgan",
                 "-q"])
    assert code != 0
    assert not (tmp_path / "out" / "restored_imgs").exists() or not any((tmp_path / "out" / "restored_imgs").iterdir())


def test_the_esrgan_networks_own_output_is_within_the_pixel_limit(monkeypatch):
    """upscale 4.1 runs the x8 network and holds its whole output before resizing (about 4x the asked pixels):
    that size is what the limit must check, before any weights are loaded."""
    from facerestore.errors import InputError
    from facerestore.faces.background import esrgan_upscale

    img = np.zeros((100, 100, 3), np.float32)
    monkeypatch.setenv("FACERESTORE_MAX_PIXELS", str(500 * 500))  # the asked 410 x 410 output fits, x8 does not
    with pytest.raises(InputError, match="ESRGAN x8 background"):
        esrgan_upscale(img, 4.1)
