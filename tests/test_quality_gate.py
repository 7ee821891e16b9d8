"""The quality gate (facerestore.quality_gate) and the blend knob of the photo pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy import ndimage

from facerestore.errors import InputError
from facerestore.faces.align import align_face
from facerestore.faces.paste import paste_faces, upscale_image
from facerestore.io import read_image
from facerestore.quality_gate import CANDIDATE_WEIGHTS, face_box_slices, face_niqe, face_sharpness, gate_face

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "astronaut.png"


@pytest.fixture(scope="module")
def crop() -> np.ndarray:
    """A 512 crop of real photo texture (the astronaut's face and suit), float32 in [0, 1]."""
    img = read_image(EXAMPLE).rgb
    return np.clip(cv2.resize(img[0:300, 100:400], (512, 512), interpolation=cv2.INTER_CUBIC), 0, 1)


def test_face_box_scales_with_the_crop():
    assert face_box_slices(512) == (slice(144, 464), slice(96, 416))
    assert face_box_slices(256) == (slice(72, 232), slice(48, 208))


def _laplacian_squared(crop: np.ndarray) -> np.ndarray:
    """Squared 3x3 Laplacian of gray with scipy: OpenCV's ksize=3 aperture (the sum of its 3x3 Sobel second
    derivatives), an independent reference of ``face_sharpness`` (the face box is far from the border)."""
    gray = crop.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    return ndimage.convolve(gray, np.array([[2.0, 0.0, 2.0], [0.0, -8.0, 0.0], [2.0, 0.0, 2.0]]), mode="mirror") ** 2


def test_sharpness_equals_an_independent_computation(crop):
    rows, cols = face_box_slices(512)
    expected = np.mean(_laplacian_squared(crop)[rows, cols])
    assert face_sharpness(crop) == pytest.approx(expected, rel=2e-3)
    assert face_sharpness(cv2.GaussianBlur(crop, (0, 0), 2.0)) < 0.1 * expected


def test_niqe_of_a_blurred_face_is_worse(crop):
    assert face_niqe(cv2.GaussianBlur(crop, (0, 0), 3.0)) > face_niqe(crop) + 2


def test_identical_restoration_passes(crop):
    d = gate_face(crop, crop.copy())
    assert (d.weight, d.reason) == (1.0, "passed")
    assert d.sharpness_ratio == pytest.approx(1.0)
    assert d.niqe_output == pytest.approx(d.niqe_input)


def test_a_softer_restoration_of_a_good_face_is_not_pasted(crop):
    d = gate_face(crop, cv2.GaussianBlur(crop, (0, 0), 3.0))
    assert d.weight == 0.0 and d.reason.startswith("kept: ")
    assert [t["weight"] for t in d.tried] == [1.0, 0.75, 0.5, 0.25]
    assert d.identity_distance is None  # kept: no identity was measured, none is reported
    # every candidate failed, and the sharper blends got closer to passing
    ratios = [t["sharpness_ratio"] for t in d.tried]
    assert all(t["failed"] for t in d.tried) and ratios == sorted(ratios)


def test_denoising_passes_although_it_removes_high_frequencies(crop):
    noisy = np.clip(crop + np.random.default_rng(0).normal(0, 25 / 255, crop.shape), 0, 1).astype(np.float32)
    d = gate_face(noisy, crop)
    assert d.sharpness_ratio < 0.8  # less high-frequency energy than the noisy input ...
    assert d.niqe_output < d.niqe_input - 1.0  # ... but clearly better quality
    assert (d.weight, d.reason) == (1.0, "passed")


def test_identity_failure_blends_toward_the_input(crop):
    restored = np.clip(crop[:, ::-1] * 0.9 + 0.05, 0, 1).astype(np.float32)  # sharp, but another "face"
    full = float(np.linalg.norm(restored - crop))

    def distance(a: np.ndarray, b: np.ndarray) -> float:  # grows with the share of the restoration
        return 0.9 * float(np.linalg.norm(b - a)) / full

    d = gate_face(crop, restored, identity_distance=distance, min_sharpness=0.0, niqe_margin=np.inf)
    assert d.weight == 0.5 and d.reason == "blended: identity"
    assert d.identity_distance == pytest.approx(0.45, abs=0.01)
    assert [t["failed"] for t in d.tried] == ["identity", "identity", None]


def test_gate_accepts_crops_of_other_sizes(crop):
    small = cv2.resize(crop, (256, 256), interpolation=cv2.INTER_AREA)
    d = gate_face(small, crop)
    assert d.weight == 1.0 and d.sharpness_ratio > 1.0  # the 512 restoration is sharper than the 256 input


def test_paste_weights_blend_linearly_and_zero_leaves_the_background():
    img = read_image(EXAMPLE).rgb
    from facerestore.faces.detect import detect_faces

    det = detect_faces(img, "hog", select="largest")[0]
    aligned = align_face(img, det.landmarks5, size=256)
    fake = np.clip(aligned.crop[:, ::-1] + 0.1, 0, 1)  # something visibly different
    kw = dict(upscale=1.5, mask="square", color_match=False, grain=0.0)
    full = paste_faces(img, [(fake, aligned)], weights=[1.0], **kw)
    none = paste_faces(img, [(fake, aligned)], weights=[0.0], **kw)
    half = paste_faces(img, [(fake, aligned)], weights=[0.5], **kw)
    np.testing.assert_array_equal(none, upscale_image(img, 1.5))
    np.testing.assert_allclose(half, (full + none) / 2, atol=1e-5)
    assert np.abs(full - none).max() > 0.1
    with pytest.raises(InputError, match="weights"):
        paste_faces(img, [(fake, aligned)], weights=[1.5], **kw)


def test_restore_photo_blend_zero_is_the_upscaled_photo_and_records_say_so():
    from facerestore.pipeline import restore_photo

    res = restore_photo(EXAMPLE, "ispl", upscale=2, blend=0.0, identity=False)
    np.testing.assert_array_equal(res.image, upscale_image(read_image(EXAMPLE).rgb, 2))
    rec = res.to_json()
    assert rec["blend"] == 0.0 and rec["fidelity"] == 1.0 and rec["fidelity_requested"] is None
    assert all(f["paste_weight"] == 0.0 and f["gate"] is None for f in rec["faces"])
    with pytest.raises(InputError, match="blend"):
        restore_photo(EXAMPLE, "ispl", blend=1.2)


def test_blend_moves_the_output_monotonically_toward_the_restoration():
    from facerestore.pipeline import restore_photo

    lq = Path(__file__).resolve().parents[1] / "examples" / "astronaut_lq.png"
    outs = [restore_photo(lq, "ispl", upscale=1, blend=b, gate=False, identity=False).image for b in (0, 0.5, 1)]
    d = [float(np.abs(o - outs[2]).mean()) for o in outs]
    assert d[0] > d[1] > d[2] == 0.0
    np.testing.assert_allclose(outs[1], (outs[0] + outs[2]) / 2, atol=1e-5)


def test_cli_records_the_gate_and_refuses_a_bad_blend(tmp_path, capsys):
    from facerestore.cli import main

    assert main(["restore", "-i", str(EXAMPLE), "-o", str(tmp_path / "a"), "--blend", "1.5", "-q"]) == 2
    assert "--blend must be in [0, 1]" in capsys.readouterr().err
    # one face whatever detector the cache offers (without RetinaFace, dlib's HOG also takes the badge for one)
    assert main(["restore", "-i", str(EXAMPLE), "-o", str(tmp_path / "b"), "--upscale", "1", "-q",
                 "--only-center-face"]) == 0
    rec = json.loads((tmp_path / "b" / "restored_imgs" / "astronaut.json").read_text())
    assert rec["quality_gate"] is True and rec["blend"] == 1.0
    from facerestore.faces.detect import DETECTORS, canonical_detector_name

    licence = {d.name: d.licence for d in DETECTORS}[canonical_detector_name(rec["detector"])]
    assert rec["detector_licence"] == licence and licence
    # the sharp example face: the full restoration would make it worse (refused), so the photo keeps the face or
    # takes at most the lightest blend, and only one that meets the gate's own bounds (gate_face's defaults)
    (face,) = rec["faces"]
    gate = face["gate"]
    assert gate["tried"][0]["weight"] == 1.0 and gate["tried"][0]["failed"] is not None
    assert face["paste_weight"] == gate["weight"] <= min(CANDIDATE_WEIGHTS)
    out = read_image(tmp_path / "b" / "restored_imgs" / "astronaut.png").rgb
    if gate["weight"] == 0.0:
        assert rec["faces_kept"] == 1 and gate["reason"].startswith("kept: ")
        np.testing.assert_array_equal(out, read_image(EXAMPLE).rgb)
    else:
        assert rec["faces_kept"] == 0 and gate["reason"].startswith("blended: ")
        assert gate["sharpness_ratio"] >= 0.8 and gate["niqe_output"] <= gate["niqe_input"] + 0.25 + 1e-3
        assert float(np.abs(out - read_image(EXAMPLE).rgb).max()) < 0.1  # a light blend changes little


def test_faces_cut_by_the_border_need_sharpness_not_just_a_better_niqe(crop):
    noisy = np.clip(crop + np.random.default_rng(0).normal(0, 25 / 255, crop.shape), 0, 1).astype(np.float32)
    valid = np.zeros((512, 512), bool)
    valid[:, :256] = True  # half of the crop lies outside the photo
    d = gate_face(noisy, crop, valid=valid)
    assert d.weight < 1.0 and d.tried[0]["failed"] == "sharpness"
    # sharpness is measured on the valid half of the face box only
    assert face_sharpness(crop, valid) == pytest.approx(_laplacian_squared(crop)[144:464, 96:256].mean(), rel=2e-3)


def test_what_a_restorer_paints_into_the_padding_does_not_move_the_gate(crop):
    valid = np.ones((512, 512), bool)
    valid[:, :200] = False  # columns 0-199 of the crop lie outside the photo (padding)
    padded = crop.copy()
    padded[:, :200] = 0.5
    restored = padded.copy()
    restored[:, :200] = np.random.default_rng(1).uniform(0, 1, (512, 200, 3))  # same face, other padding
    d = gate_face(padded, restored, valid=valid)
    assert (d.weight, d.reason) == (1.0, "passed")
    assert d.niqe_output == pytest.approx(d.niqe_input) and d.sharpness_ratio == pytest.approx(1.0)


def test_inside_photo_marks_the_crop_pixels_that_map_into_the_photo():
    from facerestore.faces.align import AlignedFace, inside_photo

    # a 100 px crop of a 60 x 80 (h x w) photo at scale 1, shifted 30 px left: columns 0-29 are padding
    inv = np.array([[1.0, 0, -30.0], [0, 1.0, 0.0]])
    aligned = AlignedFace(np.zeros((100, 100, 3), np.float32), np.array([[1.0, 0, 30.0], [0, 1.0, 0]]), inv,
                          np.zeros((5, 2)), 100)
    m = inside_photo(aligned, (60, 80, 3))
    expected = np.zeros((100, 100), bool)
    expected[:60, 30:100] = True  # x - 30 in [0, 79] -> x in [30, 99] (109 is past the crop); y in [0, 59]
    np.testing.assert_array_equal(m, expected)
