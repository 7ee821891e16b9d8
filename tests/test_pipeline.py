"""facerestore.pipeline.restore_photo with tiny test restorers (identity, colour shift, recorders).

Independent references: the input photo itself (identity round trips), PIL's Lanczos resize (the
background, alpha), PIL's EXIF transpose, the geometry of the alignment affine (where the faces are
pasted), Python's round (output sizes) and the dlib detector run directly.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from facerestore import zoo
from facerestore.errors import InputError, OutputError
from facerestore.faces.detect import detect_faces
from facerestore.methods import MethodSpec, Restorer
from facerestore.pipeline import PhotoResult, restore_photo


class IdentityRestorer(Restorer):
    """Returns its input; records what it was given."""

    spec = MethodSpec("test-identity", "test", "identity", size=512)

    def __init__(self, input_size: int = 512, fidelity: bool = False, half: bool = False) -> None:
        super().__init__()
        self.with_spec(size=input_size, supports_fidelity=fidelity,
                       precisions=("fp32", "fp16", "bf16") if half else ("fp32",))
        self.calls: list[dict] = []

    def _restore(self, x, *, fidelity, refs):
        self.calls.append({"shape": tuple(x.shape), "dtype": x.dtype, "fidelity": fidelity})
        return x.clone()


class ShiftRestorer(Restorer):
    """Adds a constant to the red channel: a global colour shift colour matching must undo."""

    spec = MethodSpec("test-shift", "test", "red shift", size=512)

    def _restore(self, x, *, fidelity, refs):
        out = x.clone()
        out[:, 0] = (out[:, 0] + 0.15).clamp(0, 1)
        return out


class FixedDetector:
    """Returns precomputed detections (keeps the tests from re-running dlib on the same pixels)."""

    name = "fixed"

    def __init__(self, dets):
        self.dets = dets

    def detect(self, image):
        return list(self.dets)


class NoDetector:
    name = "none"

    def detect(self, image):
        raise AssertionError("aligned mode must not detect faces")


@pytest.fixture(scope="module")
def astro_dets(astronaut):
    return detect_faces(astronaut, "hog")


@pytest.fixture()
def fixed(astro_dets):
    return FixedDetector(astro_dets)


def face_footprint(res: PhotoResult, grow: int = 3) -> np.ndarray:
    """(H', W') bool: output pixels a pasted crop may touch (crop square mapped through the inverse
    alignment, grown by ``grow`` px for the interpolation kernel)."""
    h, w = res.image.shape[:2]
    sx, sy = w / res.input_size[0], h / res.input_size[1]
    mask = np.zeros((h, w), np.uint8)
    for f in res.faces:
        s = f.input_crop.shape[0]
        inv = np.linalg.inv(np.vstack([f.affine, [0, 0, 1]]))[:2]
        corners = np.array([[-0.5, -0.5], [s - 0.5, -0.5], [s - 0.5, s - 0.5], [-0.5, s - 0.5]])
        p = corners @ inv[:, :2].T + inv[:, 2]
        p = np.stack([(p[:, 0] + 0.5) * sx - 0.5, (p[:, 1] + 0.5) * sy - 0.5], 1)
        cv2.fillPoly(mask, [np.round(p * 16).astype(np.int32)], 1, shift=4)
    if grow:
        mask = cv2.dilate(mask, np.ones((2 * grow + 1, 2 * grow + 1), np.uint8))
    return mask.astype(bool)


def pil_lanczos(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Independent background reference: PIL's Lanczos per float channel, clipped to [0, 1]."""
    chans = img[:, :, None] if img.ndim == 2 else img
    out = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(chans[:, :, c])).resize(size, Image.LANCZOS))
                    for c in range(chans.shape[2])], 2)
    out = np.clip(out, 0, 1)
    return out[:, :, 0] if img.ndim == 2 else out


def test_hog_finds_the_astronaut(astro_dets):
    # Eileen Collins' face occupies roughly x 170-270, y 70-170 of the 512 px photo
    assert astro_dets, "dlib HOG must find the astronaut's face"
    best = astro_dets[0]
    cx, cy = (best.box[0] + best.box[2]) / 2, (best.box[1] + best.box[3]) / 2
    assert 170 < cx < 270 and 70 < cy < 170
    eyes = best.landmarks5[:2]
    assert np.all((eyes[:, 0] > best.box[0]) & (eyes[:, 0] < best.box[2]))


def test_identity_round_trip(astronaut, fixed):
    res = restore_photo(astronaut, IdentityRestorer(), upscale=1, detector=fixed, min_score=None)
    assert res.image.shape == astronaut.shape and res.image.dtype == np.float32
    assert len(res.faces) == len(fixed.dets) >= 1
    inside = face_footprint(res)
    assert inside.any() and not inside.all()
    # outside the pasted crops the photo is untouched, bit for bit
    assert np.array_equal(res.image[~inside], astronaut[~inside])
    # inside: align (bicubic) + paste (Lanczos-4) round trip. Within 2/255 except a few pixels next to
    # near-black hair strands, where clipping the interpolants' negative lobes costs up to ~3.7/255.
    err = np.abs(res.image - astronaut).max(2)[inside]
    assert np.mean(err > 2 / 255) < 5e-4
    assert err.max() < 4.5 / 255
    assert err.mean() < 0.25 / 255
    for f in res.faces:
        # same pixels in and out: identical embeddings
        assert f.identity_similarity == pytest.approx(1.0, abs=1e-9)
        assert f.identity_distance == pytest.approx(0.0, abs=1e-9)
        assert f.input_crop.shape == f.restored_crop.shape == (512, 512, 3)
    summary = json.loads(json.dumps(res.to_json()))
    assert summary["num_faces"] == len(res.faces) and summary["method"] == "test-identity"
    assert summary["output_size"] == [512, 512] and summary["faces"][0]["box"] == [float(v) for v in res.faces[0].box]
    assert set(res.timings) >= {"read", "detect", "align", "restore", "identity", "paste", "total"}


@pytest.mark.parametrize("upscale", [1.0, 1.5, 2.0])
def test_output_size_and_background(astronaut, astro_dets, upscale):
    img = astronaut[:401, :377]  # odd sizes; the faces stay at the same pixel coordinates
    res = restore_photo(img, IdentityRestorer(), upscale=upscale, detector=FixedDetector(astro_dets), identity=False,
                        color_match=False)
    size = (round(upscale * 377), round(upscale * 401))
    assert res.image.shape == (size[1], size[0], 3) and res.upscale == upscale
    outside = ~face_footprint(res)
    ref = pil_lanczos(img, size)
    assert np.allclose(res.image[outside], ref[outside], atol=1e-6)
    if upscale != 1.0:
        # inside the faces the restored crop (here: the input) is pasted at the new scale
        core = face_footprint(res, grow=0)
        assert np.abs(res.image[core] - ref[core]).mean() < 2 / 255


def test_color_shift_and_color_match(astronaut, fixed):
    plain = restore_photo(astronaut, ShiftRestorer(), upscale=1, detector=fixed, color_match=False, identity=False)
    matched = restore_photo(astronaut, ShiftRestorer(), upscale=1, detector=fixed, color_match=True, identity=False)
    best = plain.faces[0]
    x0, y0, x1, y1 = (int(v) for v in best.box)
    centre = (slice(y0 + 20, y1 - 20), slice(x0 + 20, x1 - 20))
    red_gain = plain.image[centre][..., 0].mean() - astronaut[centre][..., 0].mean()
    assert red_gain > 0.1  # the restorer's shift reached the photo
    # colour matching (mean/std over the whole crop, in Lab) removes most of it; the shift saturates
    # bright pixels at 1, so it is not perfectly undone
    assert abs(matched.image[centre][..., 0].mean() - astronaut[centre][..., 0].mean()) < 0.25 * red_gain
    outside = ~face_footprint(plain)
    assert np.array_equal(plain.image[outside], astronaut[outside])
    assert np.array_equal(matched.image[outside], astronaut[outside])


def test_only_center_face_and_batching(astronaut, astro_dets):
    if len(astro_dets) < 2:
        pytest.skip("needs two detections to test the selection")
    c = np.array([255.5, 255.5])
    nearest = min(astro_dets, key=lambda d: np.hypot(*(((d.box[:2] + d.box[2:] - 1) / 2) - c)))
    r = IdentityRestorer()
    res = restore_photo(astronaut, r, upscale=1, detector=FixedDetector(astro_dets), only_center_face=True,
                        identity=False, color_match=False, min_score=None)
    assert len(res.faces) == 1 and np.array_equal(res.faces[0].box, nearest.box)
    r1, r4 = IdentityRestorer(), IdentityRestorer()
    a = restore_photo(astronaut, r1, upscale=1, detector=FixedDetector(astro_dets), batch_size=1, identity=False,
                      color_match=False, min_score=None)
    b = restore_photo(astronaut, r4, upscale=1, detector=FixedDetector(astro_dets), batch_size=4, identity=False,
                      color_match=False, min_score=None)
    strict = restore_photo(astronaut, IdentityRestorer(), upscale=1, detector=FixedDetector(astro_dets),
                           min_score=0.5, identity=False, color_match=False)
    assert [f.score for f in strict.faces] == [d.score for d in astro_dets if d.score >= 0.5]
    assert [c["shape"][0] for c in r1.calls] == [1] * len(astro_dets)
    assert [c["shape"][0] for c in r4.calls] == [len(astro_dets)]
    assert np.array_equal(a.image, b.image)
    default = restore_photo(astronaut, IdentityRestorer(), upscale=1, detector=FixedDetector(astro_dets),
                            identity=False, color_match=False)
    # no fixed threshold on top of the detector's own (the old 0.3 dropped real faces)
    assert [f.score for f in default.faces] == [d.score for d in astro_dets]


def test_restorer_input_size_resize(astronaut, fixed):
    r = IdentityRestorer(input_size=128)
    res = restore_photo(astronaut, r, upscale=1, detector=fixed, face_size=256, identity=False)
    assert r.calls[0]["shape"][1:] == (3, 128, 128)
    f = res.faces[0]
    assert f.input_crop.shape == f.restored_crop.shape == (256, 256, 3)
    # 256 -> 128 -> 256 keeps the coarse content, loses fine detail
    d = np.abs(f.restored_crop - f.input_crop)
    assert d.mean() < 0.03 and d.max() > 1 / 255


def test_transparent_colours_do_not_bleed_into_visible_edges(tmp_path):
    """A white logo on transparent black (how many tools store transparency), upscaled: the visible edge stays
    white (before: Lanczos blended the invisible black in, a dark fringe of about 0.8); visible pixels keep their
    colour and invisible ones take the nearest visible colour."""
    from facerestore.faces.paste import fill_transparent

    rgba = np.zeros((64, 64, 4), np.float32)
    rgba[16:48, 16:48] = 1.0  # white, opaque
    rgba[16:48, 40:48, :3] = (1.0, 0.0, 0.0)  # a red band on its right
    filled = fill_transparent(rgba[:, :, :3], rgba[:, :, 3])
    np.testing.assert_array_equal(filled[16:48, 16:48], rgba[16:48, 16:48, :3])
    np.testing.assert_allclose(filled[30, 5], [1, 1, 1], atol=1e-3)  # left of the square: white
    np.testing.assert_allclose(filled[30, 60], [1, 0, 0], atol=1e-3)  # right of the red band: red
    plain = rgba[:, :, :3]
    assert fill_transparent(plain, None) is plain and fill_transparent(plain, np.ones((64, 64))) is plain
    path = tmp_path / "logo.png"
    Image.fromarray(np.floor(rgba * 255 + 0.5).astype(np.uint8), "RGBA").save(path)
    res = restore_photo(path, IdentityRestorer(), upscale=2.0, detections=[], identity=False)
    edge = (res.alpha > 0.05) & (res.alpha < 0.95)
    edge[:, 70:] = False  # the white part's edges only
    assert edge.sum() > 50
    assert res.image[edge].min() > 0.97  # before: about 0.79 at alpha 0.79


class _ContrastRestorer(Restorer):
    """Doubles the contrast of the face (about mid-gray): a restoration that looks sharper only by its contrast."""

    spec = MethodSpec("test-contrast", "test", "contrast x2", size=512)

    def _restore(self, x, *, fidelity, refs):
        return ((x - 0.5) * 2.0 + 0.5).clamp(0, 1)


def test_the_gate_judges_what_is_pasted_and_occlusion_masks_go_per_face(astronaut, fixed, monkeypatch):
    """Colour matching brings the restoration back to the photo's contrast before pasting, so the gate measures
    that crop (a contrast-inflated raw crop looked 3x sharper than the input); each face's occlusion mask reaches
    paste_faces as that face's own keep mask."""
    from facerestore.faces import paste
    from facerestore.quality_gate import face_sharpness

    calls = []
    real = paste.paste_faces
    monkeypatch.setattr(paste, "paste_faces", lambda *a, **kw: calls.append(kw) or real(*a, **kw))
    res = restore_photo(astronaut, _ContrastRestorer(), upscale=1.0, detector=fixed, identity=False, mask="square")
    f = res.faces[0]
    raw = face_sharpness(f.restored_crop) / face_sharpness(f.input_crop)
    assert raw > 2.0 and f.gate.sharpness_ratio < 0.6 * raw
    assert len(calls) == 1 and calls[0]["color_match"] is False and len(calls[0]["keep"]) == len(res.faces)
    assert calls[0]["keep"][0] is f.occlusion


def test_alpha_png(tmp_path, astronaut, fixed):
    yy, xx = np.mgrid[0:512, 0:512]
    alpha = ((xx + yy) / 1022.0).astype(np.float32)
    rgba = np.concatenate([astronaut, alpha[:, :, None]], 2)
    path = tmp_path / "with alpha.png"
    Image.fromarray(np.floor(rgba * 255 + 0.5).astype(np.uint8), "RGBA").save(path)
    res = restore_photo(path, IdentityRestorer(), upscale=1.5, detector=fixed, identity=False, color_match=False)
    assert res.alpha is not None and res.alpha.shape == res.image.shape[:2] == (768, 768)
    a8 = np.asarray(Image.open(path))[:, :, 3].astype(np.float32) / 255
    assert np.allclose(res.alpha, pil_lanczos(a8, (768, 768)), atol=1e-6)
    assert not res.is_gray and res.bit_depth == 8 and res.to_json()["has_alpha"]
    # PhotoResult.save writes what `facerestore restore` writes: RGBA with the upscaled alpha, atomically, and never
    # over the input photo
    out = res.save(tmp_path / "out.png")
    written = np.asarray(Image.open(out))
    assert written.shape == (768, 768, 4)
    assert np.array_equal(written[:, :, 3], np.floor(res.alpha * 255 + 0.5).astype(np.uint8))
    assert np.array_equal(written[:, :, :3], np.floor(res.image * 255 + 0.5).astype(np.uint8))
    before = path.read_bytes()
    with pytest.raises(OutputError):
        res.save(path)
    assert path.read_bytes() == before


def test_gray_input_stays_gray(tmp_path, astronaut, fixed):
    gray = np.asarray(Image.fromarray(np.floor(astronaut * 255 + 0.5).astype(np.uint8)).convert("L"))
    path = tmp_path / "gray.png"
    Image.fromarray(gray, "L").save(path)
    res = restore_photo(path, ShiftRestorer(), upscale=1, detector=fixed, color_match=False, identity=False)
    assert res.is_gray
    assert np.array_equal(res.image[..., 0], res.image[..., 1]) and np.array_equal(res.image[..., 1], res.image[..., 2])
    outside = ~face_footprint(res)
    assert np.allclose(res.image[..., 0][outside], gray[outside] / 255.0, atol=1e-6)


def test_16bit_png_keeps_precision(tmp_path, astronaut, fixed):
    img16 = np.floor(astronaut * 65535 + 0.5).astype(np.uint16)
    img16[::2, ::3] += 77  # values that are not multiples of 257 (an 8-bit source would have only those)
    path = tmp_path / "deep.png"
    assert cv2.imwrite(str(path), img16[:, :, ::-1])
    res = restore_photo(path, IdentityRestorer(), upscale=1, detector=fixed, identity=False, color_match=False)
    assert res.bit_depth == 16
    outside = ~face_footprint(res)
    ref = np.asarray(Image.open(path).convert("RGB"))  # PIL reduces to 8 bits: only a coarse check
    assert np.abs(res.image[outside] * 255 - ref[outside]).max() <= 1.0
    assert np.array_equal(np.floor(res.image[outside] * 65535 + 0.5).astype(np.uint16), img16[outside])


def test_exif_rotated_jpeg(tmp_path, astronaut, astro_dets):
    upright = Image.fromarray(np.floor(astronaut * 255 + 0.5).astype(np.uint8))
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # displayed upright after orientation 6
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    stored.save(path, quality=95, exif=exif)
    ref = np.asarray(ImageOps.exif_transpose(Image.open(path))).astype(np.float32) / 255
    assert ref.shape == astronaut.shape
    res = restore_photo(path, IdentityRestorer(), upscale=1, identity=False, color_match=False, detector="hog")
    assert res.image.shape == astronaut.shape
    assert res.faces, "the upright face must be found"
    # the same face as in the upright PNG, up to JPEG noise
    assert np.abs(res.faces[0].box - astro_dets[0].box).max() < 12
    outside = ~face_footprint(res)
    assert np.allclose(res.image[outside], ref[outside], atol=1e-6)
    saved = Image.open(res.save(tmp_path / "restored.jpg"))  # upright pixels: the orientation tag becomes 1
    assert saved.size == (512, 512) and saved.getexif().get(0x0112) == 1


def test_no_faces_gives_upscaled_background():
    yy, xx = np.mgrid[0:60, 0:90]
    img = np.stack([xx / 89.0, yy / 59.0, 0.5 * np.ones_like(xx)], 2).astype(np.float32)
    r = IdentityRestorer()
    res = restore_photo(img, r, upscale=2)
    assert res.faces == [] and res.to_json()["num_faces"] == 0 and r.calls == []
    assert res.image.shape == (120, 180, 3)
    assert np.allclose(res.image, pil_lanczos(img, (180, 120)), atol=1e-6)


def test_aligned_mode(astronaut, astro_dets):
    from facerestore.faces.align import align_face

    crop = align_face(astronaut, astro_dets[0].landmarks5, size=256).crop
    r = IdentityRestorer(input_size=512)
    res = restore_photo(crop, r, upscale=2, aligned=True, detector=NoDetector(), identity=False)
    assert r.calls[0]["shape"] == (1, 3, 512, 512)
    assert res.image.shape == (512, 512, 3) and len(res.faces) == 1 and res.aligned
    ref = np.asarray(Image.fromarray(np.floor(crop * 255 + 0.5).astype(np.uint8)).resize((512, 512), Image.BICUBIC))
    assert np.abs(res.image - ref / 255.0).mean() < 2 / 255
    f = res.faces[0]
    assert f.restored_crop.shape == (256, 256, 3) and np.abs(f.restored_crop - crop).mean() < 1 / 255
    res3 = restore_photo(crop, IdentityRestorer(), upscale=1.5, aligned=True)
    assert res3.image.shape == (384, 384, 3)
    with pytest.raises(InputError, match="square"):
        restore_photo(crop[:200], IdentityRestorer(), aligned=True)


def test_aligned_gray_crop_gets_a_gray_face(astronaut, astro_dets):
    """A black-and-white photo stored as RGB: a method that adds colour (red shift) returns a gray face in aligned
    mode, its restoration's luma, as whole photos do; --no-color-match keeps the method's colours."""
    from facerestore.faces.align import align_face
    from facerestore.io import to_gray

    crop = to_gray(align_face(astronaut, astro_dets[0].landmarks5, size=256).crop)
    res = restore_photo(crop, ShiftRestorer(), upscale=1, aligned=True, identity=False, gate=False)
    face = res.faces[0].restored_crop
    assert np.abs(face[..., 0] - face[..., 2]).max() == 0.0  # gray
    shifted = crop.copy()
    shifted[..., 0] = np.clip(shifted[..., 0] + 0.15, 0, 1)
    # the restoration's luma (up to the 256 -> 512 -> 256 resizes), not the input's: BT.601 gives red 0.299
    assert np.abs(face - to_gray(shifted)).mean() < 2e-3
    assert 0.8 * 0.299 * 0.15 < (face - crop).mean() < 1.01 * 0.299 * 0.15
    kept = restore_photo(crop, ShiftRestorer(), upscale=1, aligned=True, identity=False, gate=False,
                         color_match=False).faces[0].restored_crop
    assert (kept[..., 0] - kept[..., 2]).mean() > 0.1  # the method's red shift


def test_fidelity_and_half_options(astronaut, fixed):
    with pytest.raises(InputError, match="no fidelity control"):
        restore_photo(astronaut, IdentityRestorer(), fidelity=0.5, detector=fixed)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        restore_photo(astronaut, IdentityRestorer(fidelity=True), fidelity=1.5, detector=fixed)
    with pytest.raises(InputError, match="half"):
        restore_photo(astronaut, IdentityRestorer(), half=True, detector=fixed)
    with pytest.raises(InputError, match="upscale"):
        restore_photo(astronaut, IdentityRestorer(), upscale=0, detector=fixed)
    r = IdentityRestorer(fidelity=True, half=True)
    res = restore_photo(astronaut, r, upscale=1, fidelity=0.25, half=True, detector=fixed, identity=False)
    # one meaning of half: bfloat16 on the CPU (float16 on CUDA/MPS)
    assert r.calls[0]["fidelity"] == 0.25 and r.calls[0]["dtype"] == torch.bfloat16
    assert res.fidelity == 0.25 and res.image.dtype == np.float32


class RefsRestorer(IdentityRestorer):
    spec = MethodSpec("test-refs", "test", "needs refs", size=64, needs_refs=True)

    def __init__(self) -> None:
        super().__init__(input_size=64)

    def _restore(self, x, *, fidelity, refs):
        self.calls.append({"refs": refs})
        return x


def test_reference_faces(astronaut):
    crop = np.ascontiguousarray(astronaut[50:306, 100:356])
    with pytest.raises(InputError, match="reference"):
        restore_photo(crop, RefsRestorer(), aligned=True)
    r = RefsRestorer()
    restore_photo(crop, r, aligned=True, refs=[crop, np.flip(crop, 1).copy()], identity=False)
    refs = r.calls[0]["refs"]
    assert tuple(refs.shape) == (2, 3, 64, 64)
    # the second reference is the mirror image of the first (resizing commutes with mirroring)
    assert torch.allclose(refs[1], torch.flip(refs[0], dims=[2]), atol=1e-5)


class CheckingRefsRestorer(IdentityRestorer):
    """Checks its references like honestface and the prior methods, with a stand-in distance: how far the face's
    mean brightness is from the references', times 10 (so faces of other brightness are 'other people').
    With references it returns the references' mean colour, without them the input: what was used is visible."""

    spec = MethodSpec("test-checking-refs", "test", "checks refs", size=32, uses_refs=True)
    checks_refs = True

    def __init__(self, ignore: bool = False) -> None:
        super().__init__(input_size=32)
        self.ignore = ignore  # like ref_weight 0: the method ignores references

    def _refs_distances(self, x, refs):
        if self.ignore:
            return None
        return [float(10 * (f.mean() - refs.mean()).abs()) for f in x.float()]

    def _restore(self, x, *, fidelity, refs, force_refs=None):
        self.calls.append({"n": x.shape[0], "refs": refs is not None, "force_refs": force_refs})
        if refs is None or self.ignore:
            return x.clone()
        if not force_refs:
            from facerestore.methods.restorer import check_refs_identity

            for d in self._refs_distances(x, refs):
                check_refs_identity(torch.tensor([d]))
        return refs.float().mean(dim=(0, 2, 3), keepdim=True).expand_as(x).to(x.dtype).clone()


def _gray(v: float, side: int = 32) -> np.ndarray:
    return np.full((side, side, 3), v, np.float32)


def test_refs_are_used_face_by_face_and_recorded():
    """A group photo: references of one person guide that person's face only; the others are restored without
    them; each face's check distance and verdict are recorded; no matching face at all is one clear error."""
    from facerestore.errors import RefsMismatchError
    from facerestore.methods.restorer import REFS_MAX_DISTANCE
    from facerestore.pipeline import FaceResult, RefsUse, restore_crops_with_refs

    refs = torch.full((2, 3, 32, 32), 0.5)
    crops = [_gray(0.52), _gray(0.9), _gray(0.45, 64)]  # distances 0.2 (same), 4.0 (other), 0.5 (same)
    r = CheckingRefsRestorer()
    out, uses = restore_crops_with_refs(r, crops, refs=refs)
    assert [u.used for u in uses] == [True, False, True]
    assert [u.distance for u in uses] == pytest.approx([0.2, 4.0, 0.5], abs=1e-5)
    assert [u.threshold for u in uses] == [REFS_MAX_DISTANCE] * 3  # flat faces have no detail: the soft end
    assert [o.shape for o in out] == [c.shape for c in crops]
    np.testing.assert_allclose(out[0], 0.5, atol=1e-5)  # guided: the references' colour
    np.testing.assert_allclose(out[1], crops[1], atol=1e-5)  # another person: restored as without references
    np.testing.assert_allclose(out[2], 0.5, atol=1e-5)
    # the faces that passed went to the method with the references (and force_refs: already checked); the other
    # without any
    assert sorted((c["refs"], c["n"]) for c in r.calls) == [(False, 1), (True, 1), (True, 1)]
    assert all(c["force_refs"] for c in r.calls if c["refs"])
    # no face of the photo matches: nothing restored, one line naming the closest distance
    r = CheckingRefsRestorer()
    with pytest.raises(RefsMismatchError) as exc:
        restore_crops_with_refs(r, [_gray(0.9), _gray(0.1)], refs=refs)
    msg = str(exc.value)
    assert "\n" not in msg and "any of the 2 faces" in msg and "4.00 > 0.75" in msg and "--force-refs" in msg
    assert msg.count("(") == msg.count(")") == 1, msg
    assert exc.value.distance == pytest.approx(4.0, abs=1e-5) and r.calls == []
    with pytest.raises(RefsMismatchError, match=r"than the face \(dlib distance 4.00"):
        restore_crops_with_refs(CheckingRefsRestorer(), [_gray(0.1)], refs=refs)
    # force_refs: every face uses them, the distances are still recorded
    out, uses = restore_crops_with_refs(CheckingRefsRestorer(), [_gray(0.9), _gray(0.1)], refs=refs, force_refs=True)
    assert all(u.used and u.forced for u in uses) and uses[0].distance == pytest.approx(4.0, abs=1e-5)
    np.testing.assert_allclose(out[1], 0.5, atol=1e-5)
    # a caller's decide() (the video loop's per-track decision) has the final say, the distances still recorded
    _, uses = restore_crops_with_refs(CheckingRefsRestorer(), [_gray(0.52), _gray(0.9)], refs=refs,
                                      decide=lambda k, use: k == 1)
    assert [u.used for u in uses] == [False, True] and uses[1].distance == pytest.approx(4.0, abs=1e-5)
    # a method that ignores its references (ref_weight 0): not used, no distance, never refused
    _, uses = restore_crops_with_refs(CheckingRefsRestorer(ignore=True), [_gray(0.9)], refs=refs)
    assert uses == [RefsUse(None, False, False)]
    # without references: nothing to record
    _, uses = restore_crops_with_refs(CheckingRefsRestorer(), [_gray(0.9)])
    assert uses == [None]
    # the per-face JSON fields
    face = FaceResult(box=np.zeros(4), score=1.0, landmarks5=np.zeros((5, 2)), landmarks68=None,
                      affine=np.eye(2, 3), input_crop=crops[0], restored_crop=crops[0],
                      refs=RefsUse(0.21234, True, threshold=0.7))
    rec = face.to_json()
    assert (rec["refs_used"], rec["refs_forced"], rec["refs_distance"], rec["refs_threshold"]) == (
        True, False, 0.2123, 0.7)
    # a pass above dlib's same-person 0.6 is narrow (the check is unsure on degraded faces); forced or refused is not
    assert not rec["refs_narrow"] and RefsUse(0.7, True).narrow and RefsUse(0.6, True).narrow is False
    assert not RefsUse(0.9, True, forced=True).narrow and not RefsUse(0.9, False).narrow
    face.refs = None
    assert face.to_json()["refs_used"] is None and face.to_json()["refs_distance"] is None


def test_refs_threshold_follows_the_faces_detail(astronaut):
    """0.65 for a sharp face, the methods' 0.75 for a flat or blurred one, never decreasing as the face is blurred
    more, and exactly the log-linear rule of its detail in between (independent recomputation)."""
    from facerestore.methods.restorer import REFS_MAX_DISTANCE
    from facerestore.pipeline import REFS_SHARP_DETAIL, REFS_SHARP_DISTANCE, REFS_SOFT_DETAIL, refs_threshold
    from facerestore.quality_gate import face_sharpness

    face = np.ascontiguousarray(astronaut[30:330, 90:390])
    assert face_sharpness(face) >= REFS_SHARP_DETAIL and refs_threshold(face) == REFS_SHARP_DISTANCE
    assert refs_threshold(_gray(0.5, 256)) == REFS_MAX_DISTANCE
    last = REFS_SHARP_DISTANCE
    for sigma in (0.5, 1, 2, 4, 8):
        blurred = cv2.GaussianBlur(face, (0, 0), sigma)
        t = refs_threshold(blurred)
        assert REFS_SHARP_DISTANCE <= t <= REFS_MAX_DISTANCE and t >= last - 1e-9
        d = face_sharpness(blurred)
        if REFS_SOFT_DETAIL < d < REFS_SHARP_DETAIL:
            share = np.log(REFS_SHARP_DETAIL / d) / np.log(REFS_SHARP_DETAIL / REFS_SOFT_DETAIL)
            assert t == pytest.approx(0.65 + 0.1 * share, abs=1e-9)
        last = t
    assert last == REFS_MAX_DISTANCE  # sigma 8 px: as soft as an x8 face


def test_the_video_blender_passes_the_reference_check_through():
    """--force-refs in a video reaches the method inside the temporal blender (which wraps it)."""
    from facerestore.pipeline import restore_crops_with_refs
    from facerestore.video import TemporalBlender

    blender = TemporalBlender(CheckingRefsRestorer())
    blender.begin_frame([0])
    assert blender.checks_refs
    out, uses = restore_crops_with_refs(blender, [_gray(0.9)], refs=torch.full((1, 3, 32, 32), 0.5), force_refs=True)
    assert uses[0].used and uses[0].forced and uses[0].distance == pytest.approx(4.0, abs=1e-5)
    np.testing.assert_allclose(out[0], 0.5, atol=1e-5)


def test_refs_record_in_the_photo_json(astronaut, astro_dets, tmp_path):
    """restore_photo with references: per-face refs_used / refs_distance and the photo's counts in the JSON."""
    from facerestore.pipeline import write_photo_json

    fixed = FixedDetector(astro_dets)
    refs = torch.full((3, 3, 64, 64), float(astronaut.mean()))  # aligned reference faces
    res = restore_photo(astronaut, CheckingRefsRestorer(), detector=fixed, refs=refs, identity=False, gate=False)
    write_photo_json(tmp_path / "a.json", res)
    rec = json.loads((tmp_path / "a.json").read_text())
    assert rec["refs_count"] == 3 and rec["num_faces"] == len(astro_dets)
    assert rec["faces_with_refs"] == sum(f["refs_used"] for f in rec["faces"])
    for f, fr in zip(rec["faces"], res.faces):
        assert f["refs_distance"] == pytest.approx(fr.refs.distance, abs=1e-4)
        assert f["refs_used"] == (fr.refs.distance <= 0.75)
    plain = restore_photo(astronaut, CheckingRefsRestorer(), detector=fixed, identity=False, gate=False).to_json()
    assert plain["refs_count"] == 0 and plain["faces_with_refs"] == 0
    assert all(f["refs_used"] is None for f in plain["faces"])


def test_uint8_and_bad_inputs(astronaut, fixed):
    u8 = np.floor(astronaut * 255 + 0.5).astype(np.uint8)
    res = restore_photo(u8, IdentityRestorer(), upscale=1, detector=fixed, identity=False, color_match=False)
    outside = ~face_footprint(res)
    assert np.array_equal(res.image[outside], u8[outside] / np.float32(255))
    with pytest.raises(InputError):
        restore_photo(np.zeros((4, 4, 5), np.float32), IdentityRestorer())
    with pytest.raises(InputError):
        restore_photo(astronaut, object())


def test_lazy_export():
    import facerestore
    from facerestore import pipeline

    assert facerestore.restore_photo is pipeline.restore_photo


class CachedRestorer(IdentityRestorer):
    spec = MethodSpec("test-cached", "test", "identity", size=64)

    def __init__(self, weights=None) -> None:
        super().__init__(input_size=64)
        self.weights = weights


def test_restorer_cache(monkeypatch):
    from facerestore import pipeline
    from facerestore.methods import registry

    monkeypatch.setattr(registry, "REGISTRY", registry.REGISTRY.with_restorer(CachedRestorer))
    monkeypatch.setattr(pipeline, "_RESTORERS", {})
    a = pipeline.get_restorer("test-cached")
    b = pipeline.get_restorer("test-cached")
    c = pipeline.get_restorer("test-cached", device="cpu", weights="other.safetensors")
    assert a is b and a is not c and len(pipeline._RESTORERS) == 2
    assert a.weights is None and c.weights == "other.safetensors"
    # bounded: the least recently used goes first (a server's users trying many step budgets)
    monkeypatch.setattr(pipeline, "MAX_CACHED_RESTORERS", 3)
    assert pipeline.get_restorer("test-cached") is a  # a is now the most recently used
    d = pipeline.get_restorer("test-cached", weights="d.safetensors")
    e = pipeline.get_restorer("test-cached", weights="e.safetensors")
    assert list(pipeline._RESTORERS.values()) == [a, d, e]  # c, the least recently used, was dropped
    assert pipeline.get_restorer("test-cached", weights="other.safetensors") is not c


@pytest.mark.slow
def test_default_method_on_astronaut(astronaut):
    from facerestore.methods import list_restorers
    from facerestore.pipeline import get_restorer

    assert "ispl" in [i.name for i in list_restorers()]
    r = get_restorer("ispl")  # its weights ship in the tree: missing ones are a packaging failure
    hi = restore_photo(astronaut, "ispl", upscale=1, only_center_face=True, fidelity=1.0 if
                       r.spec.supports_fidelity else None)
    assert hi.image.shape == astronaut.shape and hi.method == "ispl" and len(hi.faces) == 1
    assert np.isfinite(hi.image).all()
    face = hi.faces[0]
    assert face.identity_distance is not None and np.isfinite(face.identity_distance)
    assert -1.0 <= face.identity_similarity <= 1.0
    outside = ~face_footprint(hi)
    assert np.array_equal(hi.image[outside], astronaut[outside])
    d_hi = np.abs(face.restored_crop - face.input_crop).mean()
    assert 0.0 < d_hi < 0.25  # it restores (changes) the face without replacing it
    if r.spec.supports_fidelity:
        # the knob's contract: fidelity 1 stays closer to the input than fidelity 0
        lo = restore_photo(astronaut, "ispl", upscale=1, only_center_face=True, fidelity=0.0, identity=False)
        d_lo = np.abs(lo.faces[0].restored_crop - lo.faces[0].input_crop).mean()
        assert d_hi < d_lo


def test_large_photos_are_detected_on_a_downscaled_copy(astronaut):
    """A photo over the detection pixel budget is detected at reduced size; the detections come back in the
    photo's pixels (here: the astronaut upscaled 3x, detected at about its original size, must land on 3x the
    original detections, within one detection-scale pixel: the bicubic-up, area-down round trip is not exact)."""
    import cv2

    from facerestore.pipeline import detect_and_select

    big = cv2.resize(astronaut, (1536, 1536), interpolation=cv2.INTER_CUBIC)
    ref = detect_and_select(astronaut, "hog", min_score=0.5, max_pixels=None)
    got = detect_and_select(big, "hog", min_score=0.5, max_pixels=512 * 512)
    assert len(got) == len(ref) >= 1
    for d, r in zip(got, ref):
        np.testing.assert_allclose(d.box, r.box * 3, atol=3.0)
        np.testing.assert_allclose(d.landmarks5, (r.landmarks5 + 0.5) * 3 - 0.5, atol=3.0)


def test_downscaled_detections_map_back_per_axis():
    """The copy's size is rounded per axis, so x and y scale by different factors (8001 x 4501 -> 1886 x 1061:
    4.2423 across, 4.2422 down); each point and box edge maps back with its own axis's factor."""
    from facerestore.faces.detect import FaceDetection
    from facerestore.pipeline import _rescale_detection

    pts = np.array([[10.0, 20.0], [1885.5, 1060.5]])
    d = FaceDetection(box=np.array([1.0, 2.0, 3.0, 4.0]), score=0.9, landmarks5=np.vstack([pts, pts, pts[:1]]))
    fx, fy = 8001 / 1886, 4501 / 1061
    r = _rescale_detection(d, fx, fy)
    np.testing.assert_allclose(r.box, [fx, 2 * fy, 3 * fx, 4 * fy])
    np.testing.assert_allclose(r.landmarks5[1], [8001 - 0.5, 4501 - 0.5])  # the last pixel centre stays the last
    np.testing.assert_allclose(r.landmarks5[0], [(10.5 * fx) - 0.5, (20.5 * fy) - 0.5])
    assert r.landmarks68 is None


def test_mesh_mask_is_the_default_and_touches_only_the_face(astronaut, fixed):
    """With the Face Mesh weights the default paste-back replaces the face oval only (hair, helmet and suit keep
    their pixels); without them it warns and uses the 68-point mask."""
    from facerestore import zoo

    if not zoo.is_available("facemesh-468"):
        pytest.skip("Face Mesh weights not cached: run `facerestore models download facemesh-468`")
    kw = dict(upscale=1, detector=fixed, identity=False, color_match=False)
    default = restore_photo(astronaut, ShiftRestorer(), **kw)
    mesh = restore_photo(astronaut, ShiftRestorer(), mask="mesh", **kw)
    square = restore_photo(astronaut, ShiftRestorer(), mask="square", **kw)
    assert np.array_equal(default.image, mesh.image)
    changed = lambda r: (np.abs(r.image - astronaut).max(2) > 1 / 255)  # noqa: E731
    assert changed(mesh).sum() < 0.5 * changed(square).sum()
    assert changed(mesh)[face_footprint(mesh)].mean() > 0.1  # the face itself was pasted
    with pytest.raises(InputError, match="mesh"):
        restore_photo(astronaut, ShiftRestorer(), mask="circle", **kw)


def test_crop_side_follows_the_face_up_to_the_model_size():
    from facerestore.pipeline import crop_side

    assert crop_side(1.0, 1.0, 512, 128) == 512  # a 512 px face footprint: the face size
    assert crop_side(1.0, 1.5, 512, 256) == 768  # beyond a 256 px model too: the paste keeps the photo's detail
    assert crop_side(0.25, 2.0, 512, 256) == 1024  # 4096 output px: capped at NATIVE_CROP_MAX
    assert crop_side(1.0, 1.5, 512, 1024) == 768  # the face covers 768 output px: crop it at 768
    assert crop_side(0.25, 2.0, 512, 1024) == 1024  # 4096 output px: capped at what the model uses
    assert crop_side(4.0, 2.0, 512, 1024) == 512  # a small face: never below face_size


def test_restore_crops_of_mixed_sizes_keeps_order_and_sizes():
    from facerestore.pipeline import get_restorer, restore_crops

    r = get_restorer("ispl")
    rng = np.random.default_rng(0)
    crops = [rng.random((s, s, 3), dtype=np.float32) for s in (256, 512, 256)]
    mixed = restore_crops(r, crops, batch_size=4)
    assert [m.shape for m in mixed] == [c.shape for c in crops]
    for c, m in zip(crops, mixed):
        np.testing.assert_allclose(m, restore_crops(r, [c], batch_size=1)[0], atol=1e-5)


@pytest.mark.skipif(not zoo.is_available("mobileface"),
                    reason="MobileFace weights not cached: `facerestore models download mobileface`")
def test_identity_report_second_opinion_is_mobileface(astronaut, astro_dets):
    """The report's independent distance is MobileFace's cosine distance of the two aligned crops (computed here
    directly with the embedder), with MobileFace's threshold; an unchanged crop scores 0."""
    from facerestore.faces.align import align_face
    from facerestore.faces.identity import (
        MOBILEFACE_SAME_PERSON_THRESHOLD,
        FaceEmbedder,
        MobileFaceEmbedder,
        mfn_distance,
    )
    from facerestore.pipeline import compare_identity

    crop = align_face(astronaut, astro_dets[0].landmarks5, size=256).crop
    blurred = cv2.GaussianBlur(crop, (0, 0), 3.0)
    same = compare_identity(FaceEmbedder(), crop, crop)
    assert same.distance_mobileface == pytest.approx(0.0, abs=1e-9)
    assert same.threshold_mobileface == MOBILEFACE_SAME_PERSON_THRESHOLD
    r = compare_identity(FaceEmbedder(), crop, blurred)
    net = MobileFaceEmbedder()
    assert r.distance_mobileface == pytest.approx(mfn_distance(net.embed_aligned(crop), net.embed_aligned(blurred)))
    assert r.distance_mobileface > 0 and r.to_json()["identity_distance_mobileface"] == r.distance_mobileface


def test_choose_reference_faces_takes_the_persons_face_of_each_photo():
    """Stand-in embeddings: the person p, others x, y, z far apart. Single-face photos fix the person; without
    any, the largest faces start and the second round settles on the face the photos share."""
    from facerestore.pipeline import choose_reference_faces

    rng = np.random.default_rng(0)
    p, x, y, z = (rng.normal(size=128) for _ in range(4))
    near = lambda v: v + 0.05 * rng.normal(size=128)  # noqa: E731  (another photo of the same face)
    assert choose_reference_faces([[near(p)], [near(x), near(p)], [near(p), near(y)]]) == [0, 1, 0]
    assert choose_reference_faces([[near(x), near(p)], [near(p), near(y)], [near(p), near(z)]]) == [1, 0, 0]
    assert choose_reference_faces([[near(p)], [None, near(p)], [None]]) == [0, 1, 0]  # embeddings that failed
    assert choose_reference_faces([[None, None], [None]]) == [0, 0]  # nothing known: the largest faces


@pytest.mark.data
def test_a_reference_photo_with_two_people_gives_the_persons_face(shared_data, tmp_path):
    """A reference 'group photo' where another person's face is the larger one: prepare_refs picks the face of
    the person the other reference shows (the largest-face rule would have taken the other person)."""
    from facerestore.pipeline import prepare_refs

    photos = shared_data / "photos"
    if not (photos / "img4.jpg").is_file():
        pytest.skip("../shared/data/photos is absent")
    a = Image.open(photos / "img4.jpg").convert("RGB")  # person A (img2's person, master.csv)
    b = Image.open(photos / "img13.jpg").convert("RGB")  # person B
    a = a.resize((a.width * 200 // a.height, 200))
    b = b.resize((b.width * 400 // b.height, 400))
    group = Image.new("RGB", (a.width + b.width, 400), (128, 128, 128))
    group.paste(a, (0, 100))
    group.paste(b, (a.width, 0))
    group.save(tmp_path / "group.png")
    group.crop((0, 0, a.width, 400)).save(tmp_path / "a_alone.png")  # the same pixels around A's face, B cut off
    refs = prepare_refs([photos / "img2.jpg", tmp_path / "group.png"], 256)
    largest = prepare_refs([tmp_path / "group.png"], 256)[0]  # alone, the largest face: person B
    a_face = prepare_refs([tmp_path / "a_alone.png"], 256)[0]
    # independent of any identity network: the chosen crop is A's face as aligned from the same pixels (the face's
    # centre: the crop's margins reach past where B was cut off)
    centre = (slice(None), slice(64, 192), slice(64, 192))
    d_chosen = float((refs[1] - a_face)[centre].abs().mean())
    d_largest = float((largest - a_face)[centre].abs().mean())
    assert d_chosen < 0.05 < 0.1 < d_largest, (d_chosen, d_largest)  # 0.03: the detector sees other context


def test_five_point_detections_get_the_landmark_mask_they_ask_for(astronaut, astro_dets, monkeypatch):
    """A detector with 5 points only (RetinaFace, SCRFD, YuNet) still gets the 68-point mask (dlib's predictor in
    the box of its 5 points), also as the mesh's fallback without Face Mesh weights; each face records its mask."""
    from dataclasses import replace

    from facerestore import zoo

    five = [replace(d, landmarks68=None) for d in astro_dets]
    res = restore_photo(astronaut, IdentityRestorer(), upscale=1.0, detections=five, identity=False, gate=False,
                        mask="landmarks")
    assert res.faces and all(f.mask == "landmarks" and f.landmarks68.shape == (68, 2) for f in res.faces)
    # the predicted points are the HOG detection's own 68 within a few % of the face's width
    for f, d in zip(res.faces, astro_dets):
        assert np.abs(f.landmarks68 - d.landmarks68).mean() < 0.06 * (d.box[2] - d.box[0])
    assert res.to_json()["faces"][0]["mask"] == "landmarks"
    square = restore_photo(astronaut, IdentityRestorer(), upscale=1.0, detections=five, identity=False, gate=False,
                           mask="square", color_match=False)
    assert all(f.mask == "square" for f in square.faces)
    labelled = restore_photo(astronaut, IdentityRestorer(), upscale=1.0, detections=five, detector="my-tracker",
                             identity=False, gate=False, mask="square")
    assert labelled.to_json()["detector"] == "my-tracker"  # a caller's own label, recorded as given
    monkeypatch.setattr(zoo, "is_available", lambda name: False if name == "facemesh-468" else True)
    mesh = restore_photo(astronaut, IdentityRestorer(), upscale=1.0, detections=five, identity=False, gate=False,
                         mask="mesh")
    assert all(f.mask == "landmarks" for f in mesh.faces)


class _NaNRestorer(Restorer):
    """Returns NaN in one pixel of every face: a diverged optimisation or an fp16 overflow."""

    spec = MethodSpec("test-nan", "test", "NaN pixel", size=512)

    def _restore(self, x, *, fidelity, refs):
        y = x.clone()
        y[:, :, 256, 256] = float("nan")
        return y


def test_a_restoration_with_nan_is_not_pasted(astronaut, fixed):
    """A NaN in a restored crop once blacked out a block of the photo (colour matching spread it over the crop):
    such a face keeps the photo's pixels, gate or not, and its record says why."""
    for gate in (True, False):
        with pytest.warns(UserWarning, match="NaN or infinite"):
            res = restore_photo(astronaut, _NaNRestorer(), upscale=1.0, detector=fixed, identity=False, gate=gate)
        assert np.isfinite(res.image).all()
        np.testing.assert_allclose(res.image, astronaut, atol=1e-6)
        assert res.faces and all(f.paste_weight == 0.0 and f.gate.reason.startswith("kept: the restorer returned NaN")
                                 for f in res.faces)
    with pytest.warns(UserWarning, match="NaN or infinite"):
        aligned = restore_photo(astronaut, _NaNRestorer(), aligned=True, upscale=1.0, identity=False)
    assert np.isfinite(aligned.image).all() and aligned.faces[0].paste_weight == 0.0


def test_a_face_that_cannot_be_aligned_is_named_not_dropped_silently(astronaut, astro_dets):
    from dataclasses import replace

    bad = replace(astro_dets[0], landmarks5=np.full((5, 2), 50.0))  # all five points coincide
    with pytest.warns(UserWarning, match=r"cannot be aligned and is left as it is: landmarks are degenerate"):
        res = restore_photo(astronaut, IdentityRestorer(), upscale=1.0, detections=[bad, *astro_dets],
                            identity=False, gate=False)
    assert res.num_faces == len(astro_dets) and res.faces_not_aligned == 1
    assert res.to_json()["faces_not_aligned"] == 1


def test_records_name_the_weights_used_with_their_sha256(astronaut, fixed):
    """A record says which weights restored the faces, not only the method: the reference (as given, or the
    method's default) and the file's sha256, so that a result can be traced to its weights."""
    import hashlib
    from pathlib import Path

    from facerestore import zoo
    from facerestore.pipeline import get_restorer

    res = restore_photo(astronaut, "ispl", weights="builtin:ispl-compact-128.safetensors", upscale=1.0,
                        detector=fixed, identity=False, gate=False)
    rec = res.to_json()["restorer"]
    path = Path(zoo.BUILTIN_DIR) / "ispl-compact-128.safetensors"
    assert rec["weights"] == "builtin:ispl-compact-128.safetensors"
    assert rec["weights_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    default = get_restorer("ispl").describe()
    assert default["weights"].startswith("builtin:") and len(default["weights_sha256"]) == 64
    assert "non-commercial" in default["weights_licence"]


class _KeyedRestorer(Restorer):
    """Works at the batch's largest 'side' (as robust-inversion's and RLS's blind modes do): a face's result depends
    on its batch unless the pipeline batches faces of one key only."""

    spec = MethodSpec("test-keyed", "test", "batch-dependent", size=64)

    def batch_key(self, crop):
        return int(crop.mean() > 0.5)

    def _restore(self, x, *, fidelity, refs):
        side = max(int(c.mean() > 0.5) for c in x)
        return (x * (0.9 if side else 0.8)).clamp(0, 1)


def test_faces_are_batched_only_with_faces_of_their_own_method_key():
    from facerestore.pipeline import restore_crops

    dark, light = np.full((64, 64, 3), 0.3, np.float32), np.full((64, 64, 3), 0.7, np.float32)
    alone = restore_crops(_KeyedRestorer(), [dark])[0]
    together = restore_crops(_KeyedRestorer(), [dark, light, dark], batch_size=4)
    np.testing.assert_array_equal(together[0], alone)
    np.testing.assert_array_equal(together[2], alone)
    np.testing.assert_allclose(together[1], light * 0.9, atol=1e-6)


def test_the_stylegan_methods_key_a_face_by_its_own_blind_side():
    """A sharp face and a blurred one get different keys (different working sides), so they are not batched."""
    from facerestore.io import read_rgb
    from facerestore.methods import resize_crop
    from facerestore.pipeline import get_restorer

    face = read_rgb(Path(__file__).resolve().parents[1] / "examples" / "astronaut.png")[40:240, 120:320]
    sharp = resize_crop(torch.from_numpy(face.transpose(2, 0, 1).copy())[None], (64, 64))
    soft = resize_crop(resize_crop(sharp, (8, 8)), (64, 64))  # the detail of an 8 px face
    for name in ("robust-inversion", "rls"):
        r = get_restorer(name, weights="builtin:stylegan2-face-64.safetensors")
        assert r.batch_key(sharp) == r.blind_side(sharp) == 64, name
        assert r.batch_key(soft) == r.blind_side(soft) < 64, name  # per face, not the batch's largest

def test_68_points_that_disagree_with_the_detectors_5_are_not_used(astronaut, astro_dets, monkeypatch):
    """dlib lost on a profile or an occluded face: its hull would be a wrong mask, the square is safer."""
    from dataclasses import replace

    from facerestore.faces import detect
    from facerestore.faces.detect import landmarks68_for as _landmarks68

    five = replace(astro_dets[0], landmarks68=None)
    good = _landmarks68(astronaut, five)
    assert good is not None and np.abs(good - astro_dets[0].landmarks68).mean() < 3.0
    real = detect.predict_landmarks
    side = float(astro_dets[0].box[2] - astro_dets[0].box[0])
    monkeypatch.setattr(detect, "predict_landmarks", lambda img, box, n: real(img, box, n) + 0.3 * side)
    assert _landmarks68(astronaut, five) is None


def test_describe_keeps_the_notes_an_instance_added_to_a_zoo_entrys_licence():
    from facerestore import zoo

    r = IdentityRestorer()
    base = type(r).spec.weights_licence or ""
    r.with_spec(weights_licence=base + "; encoder: ours (Apache-2.0)")
    r.weights_used = "mobilestylegan-ffhq-1024"
    licence = r.describe()["weights_licence"]
    assert licence.startswith(zoo.get_entry("mobilestylegan-ffhq-1024").licence)
    assert licence.endswith("; encoder: ours (Apache-2.0)")


def test_the_temporal_blender_meets_each_crop_with_its_own_track_when_a_face_cannot_be_aligned(astronaut, astro_dets):
    """The video loop's blender takes crops in order: a face dropped by alignment shifted every later crop onto the
    previous track's state (blending one person's face into another's, limited only by the motion test)."""
    from dataclasses import replace

    from facerestore.video import TemporalBlender

    bad = replace(astro_dets[0], landmarks5=np.full((5, 2), 50.0))  # all five points coincide
    blender = TemporalBlender(IdentityRestorer())
    blender.begin_frame([7, 9])  # track 7: the face that cannot be aligned; track 9: the astronaut
    with pytest.warns(UserWarning, match="cannot be aligned"):
        restore_photo(astronaut, blender, upscale=1.0, detections=[bad, astro_dets[0]], identity=False, gate=False)
    assert set(blender._state) == {9}


def test_min_score_is_the_threshold_of_a_detector_the_api_builds(monkeypatch, astronaut):
    """restore_photo(detector="retinaface", min_score=0.5) used the calibrated 0.8 and filtered on top of it: the
    CLI and the web page build the detector with min_score as its threshold, so a lower value finds more faces."""
    import facerestore.faces.detect as detect_mod
    from facerestore.pipeline import detect_and_select

    made = []

    class Fake:
        def detect(self, img):
            return []

    def create(name, **kwargs):
        made.append((name, kwargs))
        return Fake()

    monkeypatch.setattr(detect_mod, "create_detector", create)
    detect_and_select(astronaut, "retinaface", min_score=0.5)
    detect_and_select(astronaut, "retinaface")
    assert made == [("retinaface", {"threshold": 0.5}), ("retinaface", {})]


def test_a_reference_without_a_face_is_named_even_when_decoded(tmp_path):
    """The web page passes decoded images: the error said "no face found in reference image " and nothing more."""
    from PIL import Image

    from facerestore import io
    from facerestore.pipeline import prepare_refs

    path = tmp_path / "grandma blank.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(path)
    with pytest.raises(InputError, match=r"reference image .*grandma blank\.png$"):
        prepare_refs([io.as_image(path)], 128, detector="hog")
    with pytest.raises(InputError, match=r"reference image number 1$"):  # an array has no name: its place
        prepare_refs([np.zeros((64, 64, 3), np.float32)], 128, detector="hog")


def test_the_api_defaults_to_the_clis_upscale_for_aligned_crops():
    """restore_photo(aligned=True) without upscale returned twice the crop where the CLI's --aligned returns the
    method's size; both now resolve None the same way (default_upscale)."""
    crop = np.random.default_rng(0).random((128, 128, 3)).astype(np.float32)
    res = restore_photo(crop, IdentityRestorer(), aligned=True, identity=False)
    assert res.image.shape[:2] == (max(128, IdentityRestorer.spec.size),) * 2


def test_the_gate_and_report_refuse_an_embedder_of_another_scale(astronaut):
    """Their 0.6 threshold is dlib's 128-d distance: MobileFace's unit vectors (one person near 1.2) or ArcFace's
    would have flagged every face as changed and kept every original."""
    from facerestore.pipeline import compare_identity

    class Other:
        backend = "mobileface"

        def embed(self, *a, **k):
            return np.ones(4)

    crop = np.zeros((64, 64, 3), np.float32)
    with pytest.raises(InputError, match="dlib's 128-d network"):
        compare_identity(Other(), crop, crop)


def test_without_face_mesh_the_default_mask_warns_and_is_the_68_point_one(astronaut, fixed, tmp_path, monkeypatch):
    """The suite must run without registry weights: the default's fallback is checked where it happens (the mesh
    test above skips there). The warning is once per process: reset for this test."""
    from facerestore.faces import mesh

    monkeypatch.setenv("FACERESTORE_HOME", str(tmp_path / "empty"))
    monkeypatch.setattr(mesh, "_WARNED", set())
    kw = dict(upscale=1, detector=fixed, identity=False, color_match=False)
    with pytest.warns(UserWarning, match="68-point mask"):
        default = restore_photo(astronaut, ShiftRestorer(), **kw)
    square = restore_photo(astronaut, ShiftRestorer(), mask="square", **kw)
    assert [f.mask for f in default.faces] == ["landmarks"] * len(default.faces)  # the record says which
    changed = lambda r: (np.abs(r.image - astronaut).max(2) > 1 / 255)  # noqa: E731
    assert changed(default).sum() < 0.8 * changed(square).sum()  # a face-shaped mask, not the square
    assert changed(default)[face_footprint(default)].mean() > 0.1  # the face itself was pasted
