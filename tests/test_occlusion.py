"""facerestore.occlusion (the occlusion guard) and its hook in the photo pipeline.

Independent references: the input crop itself (a restoration that only adds noise, sharpens or deblurs must leave
the mask at 0), a painted disc of known position and colour (the mask must cover it and nothing far from it), the
photo's own pixels (what the guard keeps) and a test restorer that repaints one known colour as skin (what the
issue's users see: a microphone or sunglasses turned into face).
"""

from __future__ import annotations

import itertools
import json

import cv2
import numpy as np
import pytest
import torch

from facerestore.errors import InputError
from facerestore.methods import MethodSpec, Restorer
from facerestore.occlusion import (
    GROW,
    colour_distance,
    face_ellipse,
    keep_background,
    occluded_share,
    occlusion_mask,
)

S = 256
SKIN = (0.85, 0.64, 0.52)
BLUE = (0.08, 0.22, 0.85)  # the occluder colour the test restorer repaints (nowhere on the astronaut's face)


@pytest.fixture(scope="module")
def face(astronaut) -> np.ndarray:
    """(256, 256, 3) float32: the astronaut's face aligned on the FFHQ template (hog landmarks)."""
    from facerestore.faces.align import align_face
    from facerestore.faces.detect import detect_faces

    det = detect_faces(astronaut, "hog")[0]
    return align_face(astronaut, det.landmarks5, size=S).crop


def disc(size: int, cx: float, cy: float, r: float) -> np.ndarray:
    """(size, size) bool disc, centre and radius in fractions of the side."""
    yy, xx = (np.mgrid[0:size, 0:size] + 0.5) / size
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def paint(img: np.ndarray, inside: np.ndarray, colour) -> np.ndarray:
    out = img.copy()
    out[inside] = np.asarray(colour, np.float32)
    return out


# --------------------------------------------------------------------------------------------------
# the mask


def test_high_frequency_changes_leave_the_mask_at_zero(face):
    """Noise, sharpening, deblurring and JPEG-like smoothing change detail only: the guard must not fire."""
    rng = np.random.default_rng(0)
    noisy = np.clip(face + rng.normal(0, 0.06, face.shape), 0, 1).astype(np.float32)
    blurred = cv2.GaussianBlur(face, (0, 0), 2.0)
    sharpened = np.clip(face + 1.5 * (face - blurred), 0, 1)
    small = cv2.resize(face, (S // 4, S // 4), interpolation=cv2.INTER_AREA)
    upsampled = np.clip(cv2.resize(small, (S, S), interpolation=cv2.INTER_CUBIC), 0, 1)
    cases = {
        "denoised": (noisy, face),  # input noisy, restoration clean
        "noise added": (face, noisy),
        "sharpened": (face, sharpened),
        "deblurred": (blurred, face),
        "4x super-resolved": (upsampled, face),
    }
    for name, (inp, restored) in cases.items():
        m = occlusion_mask(inp, restored)
        assert m.shape == (S, S) and m.dtype == np.float32
        assert m.max() < 0.02, (name, float(m.max()))
        assert occluded_share(m) < 1e-3, name
    # identical crops: exactly zero
    assert not occlusion_mask(face, face).any()


def test_global_colour_changes_are_not_occlusions(face):
    """A restoration with another white balance / exposure (a per-channel gain: colour matching's business) or a
    colourised black-and-white face keeps a zero mask."""
    warm = np.clip(face * np.array([1.12, 0.97, 0.85], np.float32), 0, 1)
    assert occlusion_mask(face, warm).max() < 0.02
    gray = np.repeat(face.mean(2, keepdims=True), 3, axis=2)
    assert occlusion_mask(gray, face).max() < 0.02  # the input is gray: lightness only
    assert occlusion_mask(gray, face, gray=False).max() > 0.5  # colour compared, the skin's colour is new


def test_a_large_low_frequency_change_is_covered_and_nothing_far_from_it(face):
    """A dark disc over the mouth (a microphone) painted into skin by the restorer: the mask is ~1 over the disc
    and ~0 a margin away from it (dilation + feather + low-pass reach)."""
    r = 0.1
    mic = disc(S, 0.5, 0.74, r)
    photo = paint(face, mic, (0.12, 0.12, 0.13))
    restored = paint(face, mic, SKIN)  # the "brown hole" complaint the other way round: the object is gone
    m = occlusion_mask(photo, restored)
    core = disc(S, 0.5, 0.74, r - 0.03)
    far = ~disc(S, 0.5, 0.74, r + GROW + 0.1)
    assert m[core].min() > 0.95
    assert m[far].max() < 0.02
    share = occluded_share(m)
    ellipse = face_ellipse(S)
    assert 0.5 * (mic & ellipse).sum() / ellipse.sum() < share < 3 * (mic & ellipse).sum() / ellipse.sum()
    # the other direction (an object painted over the face by the restorer) is the same distance
    m2 = occlusion_mask(restored, photo)
    assert m2[core].min() > 0.95 and m2[far].max() < 0.02


def test_mask_is_monotone_in_the_difference(face):
    """Mixing more of the recoloured disc into the restoration never lowers the mask (pointwise), and the mask
    rises from ~0 (no change) to ~1 (the full change)."""
    inside = disc(S, 0.35, 0.5, 0.1)
    target = paint(face, inside, (0.45, 0.25, 0.12))  # brown
    means, prev = [], None
    for k in np.linspace(0, 1, 6):
        restored = (1 - k) * face + k * target
        m = occlusion_mask(face, restored.astype(np.float32))
        if prev is not None:
            assert (m >= prev - 1e-4).all()
        prev = m
        means.append(float(m[inside].mean()))
    assert means[0] == 0.0 and means[-1] > 0.9
    assert all(b >= a for a, b in itertools.pairwise(means))
    # and monotone in the threshold: a lower threshold never gives less
    d = colour_distance(face, target)
    assert d.shape == (128, 128) and d.dtype == np.float32 and (d >= 0).all()
    lo, hi = occlusion_mask(face, target, threshold=0.1), occlusion_mask(face, target, threshold=0.4)
    assert (lo >= hi - 1e-6).all() and lo.sum() > hi.sum()


def test_shapes_sizes_valid_and_errors(face):
    inside = disc(S, 0.5, 0.6, 0.12)
    target = paint(face, inside, BLUE)
    small = cv2.resize(face, (100, 100), interpolation=cv2.INTER_AREA)
    small_t = cv2.resize(target, (100, 100), interpolation=cv2.INTER_AREA)
    m = occlusion_mask(small, small_t)  # a crop side that is not the working size
    assert m.shape == (100, 100) and m.dtype == np.float32 and 0.0 <= m.min() and m.max() <= 1.0
    assert m.max() > 0.9
    # a restoration of another side (the restorer's own) is resized to the input's
    m2 = occlusion_mask(face, cv2.resize(target, (128, 128), interpolation=cv2.INTER_AREA))
    assert m2.shape == (S, S) and m2[disc(S, 0.5, 0.6, 0.08)].min() > 0.9
    # padding (pixels outside the photo) gets no mask and does not count in the share
    valid = np.ones((S, S), bool)
    valid[:, S // 2:] = False
    mv = occlusion_mask(face, target, valid=valid)
    assert not mv[:, S // 2:].any() and mv[:, : S // 2].max() > 0.9
    assert 0.0 < occluded_share(mv, valid) <= 1.0
    assert occluded_share(np.zeros((S, S), np.float32)) == 0.0
    assert occluded_share(np.ones((S, S), np.float32)) == 1.0
    with pytest.raises(InputError):
        occlusion_mask(face[:, :200], target)
    with pytest.raises(InputError):
        occlusion_mask(face, target[..., :2])
    with pytest.raises(InputError):
        occlusion_mask(face, target, ramp=0.0)


def test_keep_background_equals_a_smaller_paste_mask():
    """Pasting with mask p, then keeping the background under m, equals pasting with p * (1 - m)."""
    rng = np.random.default_rng(1)
    bg = rng.random((40, 60, 3)).astype(np.float32)
    face = rng.random((40, 60, 3)).astype(np.float32)
    p = rng.random((40, 60, 1)).astype(np.float32)
    pasted = p * face + (1 - p) * bg
    m = np.zeros((32, 32), np.float32)
    m[8:20, 4:30] = 0.7
    inverse = np.array([[1.0, 0, 10], [0, 1.0, 5]])  # crop (x, y) -> photo (x + 10, y + 5)
    out = keep_background(pasted.copy(), bg, m, inverse, bg.shape)
    m_photo = np.zeros((40, 60, 1), np.float32)
    m_photo[13:25, 14:40] = 0.7
    expected = p * (1 - m_photo) * face + (1 - p * (1 - m_photo)) * bg
    np.testing.assert_allclose(out, expected, atol=1e-5)
    # an all-zero mask leaves the image as it is
    same = pasted.copy()
    assert keep_background(same, bg, np.zeros((32, 32), np.float32), inverse, bg.shape) is same
    np.testing.assert_array_equal(same, pasted)


# --------------------------------------------------------------------------------------------------
# the pipeline


class _Repaint(Restorer):
    """Repaints the blue occluder colour as skin (what a restorer does to a microphone or sunglasses it takes for
    face), returns every other pixel as it was."""

    spec = MethodSpec("test-repaint", "test", "blue to skin", size=256)

    def __init__(self, weights=None) -> None:
        super().__init__()

    def _restore(self, x, *, fidelity, refs):
        blue = (x[:, 2] > 0.6) & (x[:, 2] - x[:, 0] > 0.4)
        skin = torch.tensor(SKIN, dtype=x.dtype).view(1, 3, 1, 1)
        return torch.where(blue[:, None], skin, x)


class _Fixed:
    name = "fixed"

    def __init__(self, dets):
        self.dets = dets

    def detect(self, image):
        return list(self.dets)


@pytest.fixture(scope="module")
def occluded(astronaut):
    """(photo with a blue disc over the astronaut's mouth and chin, its (H, W) bool mask, the clean photo's
    detections)."""
    from facerestore.faces.detect import detect_faces

    dets = detect_faces(astronaut, "hog")
    h, w = astronaut.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    mouth = dets[0].landmarks5[3:].mean(0)
    inside = (xx - mouth[0]) ** 2 + (yy - mouth[1] - 6) ** 2 <= 22 ** 2
    return paint(astronaut, inside, BLUE), inside, dets


def test_pipeline_keeps_the_occluder_with_the_guard_and_not_without(occluded, astronaut):
    from facerestore.pipeline import restore_photo

    photo, inside, dets = occluded
    kw = dict(upscale=1, detector=_Fixed(dets), identity=False, gate=False, mask="landmarks")
    on = restore_photo(photo, _Repaint(), **kw)
    off = restore_photo(photo, _Repaint(), occlusion_guard=False, **kw)
    core = cv2.erode(inside.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    err_on = np.abs(on.image - photo)[core].mean()
    err_off = np.abs(off.image - photo)[core].mean()
    assert err_on < 3 / 255, err_on  # the blue disc stays blue
    assert err_off > 0.2, err_off  # without the guard it became skin
    r, _, b = off.image[core].mean(0)
    assert b < r  # skin (colour-matched to the photo's face), not blue
    # far from the disc (beyond the mask's reach) both results are the same pixels
    far = ~cv2.dilate(inside.astype(np.uint8), np.ones((81, 81), np.uint8)).astype(bool)
    assert np.array_equal(on.image[far], off.image[far])
    f_on, f_off = on.faces[0], off.faces[0]
    assert f_on.occlusion is not None and f_on.occlusion.shape == f_on.input_crop.shape[:2]
    assert 0.02 < f_on.occluded_share < 0.5
    assert f_off.occlusion is None and f_off.occluded_share is None
    rec_on, rec_off = json.loads(json.dumps(on.to_json())), json.loads(json.dumps(off.to_json()))
    assert rec_on["occlusion_guard"] is True and rec_off["occlusion_guard"] is False
    assert rec_on["faces"][0]["occluded_share"] == pytest.approx(f_on.occluded_share, abs=1e-4)
    assert rec_off["faces"][0]["occluded_share"] is None


def test_pipeline_guard_is_a_no_op_without_occluders(astronaut):
    """On the clean photo the repainting restorer changes nothing: the guard's mask is 0 and the result equals
    the unguarded one bit for bit; a kept face (blend 0) is not measured."""
    from facerestore.faces.detect import detect_faces
    from facerestore.pipeline import restore_photo

    kw = dict(upscale=1, detector=_Fixed(detect_faces(astronaut, "hog")), identity=False, gate=False,
              mask="landmarks")
    on = restore_photo(astronaut, _Repaint(), **kw)
    off = restore_photo(astronaut, _Repaint(), occlusion_guard=False, **kw)
    assert np.array_equal(on.image, off.image)
    assert on.faces[0].occluded_share == 0.0
    kept = restore_photo(astronaut, _Repaint(), blend=0.0, **kw)
    assert kept.faces[0].occlusion is None and kept.faces[0].occluded_share is None


def test_aligned_mode_blends_per_pixel(occluded, astronaut):
    from facerestore.faces.align import align_face
    from facerestore.pipeline import restore_photo

    photo, _, dets = occluded
    crop = align_face(photo, dets[0].landmarks5, size=S).crop
    blue = (crop[..., 2] > 0.6) & (crop[..., 2] - crop[..., 0] > 0.4)
    assert blue.sum() > 500
    on = restore_photo(crop, _Repaint(), aligned=True, upscale=1, identity=False, gate=False)
    off = restore_photo(crop, _Repaint(), aligned=True, upscale=1, identity=False, gate=False,
                        occlusion_guard=False)
    core = cv2.erode(blue.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    assert np.abs(on.image - crop)[core].mean() < 3 / 255
    assert np.abs(off.image - crop)[core].mean() > 0.2
    assert on.faces[0].occluded_share > 0.02


def test_cli_switch(tmp_path, occluded, monkeypatch):
    """``--no-occlusion-guard`` reaches the shared restore options (photos, sequences, videos) and the record."""
    import argparse

    from facerestore import pipeline
    from facerestore.cli import main
    from facerestore.cli.restore import _restore_options, add_arguments
    from facerestore.io import write_image
    from facerestore.methods import registry

    p = argparse.ArgumentParser()
    add_arguments(p)
    # on by default (restore_photo's default, left to it as the web page does); the flag passes False
    assert "occlusion_guard" not in _restore_options(p.parse_args([]), None, "lanczos")
    assert _restore_options(p.parse_args(["--no-occlusion-guard"]), None, "lanczos")["occlusion_guard"] is False

    monkeypatch.setattr(registry, "REGISTRY", registry.REGISTRY.with_restorer(_Repaint))
    monkeypatch.setattr(pipeline, "_RESTORERS", {})
    photo, _, _ = occluded
    src = tmp_path / "in" / "astronaut_mic.png"
    src.parent.mkdir()
    write_image(src, photo)
    shares = {}
    for name, extra in (("on", []), ("off", ["--no-occlusion-guard"])):
        code = main(["restore", "-i", str(src), "-o", str(tmp_path / name), "--method", "test-repaint",
                     "--detector", "hog", "--upscale", "1", "--no-gate", "--mask", "landmarks", "-q", *extra])
        assert code == 0
        rec = json.loads((tmp_path / name / "restored_imgs" / "astronaut_mic.json").read_text())
        assert rec["occlusion_guard"] is (name == "on")
        shares[name] = rec["faces"][0]["occluded_share"]
    assert shares["on"] > 0.02 and shares["off"] is None


def test_frame_sequences_take_the_switch(occluded):
    """Videos and --sequence go through SequenceRestorer's photo options: the guard is on unless turned off."""
    from facerestore.video import SequenceRestorer

    photo, _, dets = occluded
    results = {}
    for on in (True, False):
        seq = SequenceRestorer(_Repaint(), 25.0, upscale=1, detector=_Fixed(dets), stabilize=False, gate=False,
                               mask="landmarks", **({} if on else {"occlusion_guard": False}))
        results[on] = seq(photo)
    assert results[True].occlusion_guard and results[True].faces[0].occluded_share > 0.02
    assert not results[False].occlusion_guard and results[False].faces[0].occluded_share is None
