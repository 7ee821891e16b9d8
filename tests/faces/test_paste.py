"""Paste-back: identity round trips, output sizes, masks, overlapping faces, colour matching, upscaling."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from conftest import ASTRONAUT_LM68
from facerestore.errors import InputError
from facerestore.faces.align import FFHQ_TEMPLATE_512, align_face, estimate_similarity, transform_points
from facerestore.faces.paste import (
    color_transfer,
    landmark_mask,
    paste_faces,
    square_mask,
    upscale_image,
    upscaled_shape,
)

# Eye centres, nose tip and mouth corners of the astronaut fixture's face (test input data).
ASTRONAUT_LM5 = np.array([[203.2, 101.5], [246.5, 104.0], [225.0, 127.0], [201.0, 139.0], [246.0, 141.0]])

UPSCALES = (1, 1.5, 2, 2.7, 4)


def output_mask(mask_crop: np.ndarray, face, upscale: float, out_shape: tuple[int, int], in_shape) -> np.ndarray:
    """The crop-space mask warped to the output, computed independently with OpenCV."""
    import cv2

    (oh, ow), (h, w) = out_shape, in_shape
    sx, sy = ow / w, oh / h
    to_out = np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1]])
    a = (to_out @ np.vstack([face.inverse, [0, 0, 1]]))[:2]
    return cv2.warpAffine(mask_crop, a, (ow, oh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


# ---------------------------------------------------------------------------------------------------
# sizes and background upscaling


@pytest.mark.parametrize("upscale", UPSCALES)
@pytest.mark.parametrize("shape", [(37, 53), (101, 64), (1, 7)])
def test_upscale_image_sizes(upscale, shape):
    rng = np.random.default_rng(0)
    h, w = shape
    expected = (round(upscale * h), round(upscale * w))
    assert upscaled_shape(h, w, upscale) == expected
    arrays = (
        rng.uniform(0, 1, (h, w, 3)).astype(np.float32),
        rng.uniform(0, 1, (h, w)).astype(np.float32),  # e.g. an alpha channel
        (rng.uniform(0, 1, (h, w, 4)) * 255).astype(np.uint8),
        (rng.uniform(0, 1, (h, w)) * 65535).astype(np.uint16),
    )
    for arr in arrays:
        out = upscale_image(arr, upscale)
        assert out.shape[:2] == expected and out.shape[2:] == arr.shape[2:] and out.dtype == arr.dtype
        if out.dtype == np.float32:
            assert out.min() >= 0 and out.max() <= 1


def lanczos3_resize_1d(x: np.ndarray, n_out: int) -> np.ndarray:
    """Reference Lanczos-3 upsampling along axis 0 (pixel centres aligned, weights renormalised at the
    borders), written from the definition."""
    n_in = x.shape[0]
    out = np.empty((n_out, *x.shape[1:]))
    for i in range(n_out):
        c = (i + 0.5) * n_in / n_out - 0.5
        taps = np.arange(int(np.floor(c)) - 2, int(np.floor(c)) + 4)
        taps = taps[(taps >= 0) & (taps < n_in)]
        d = taps - c
        wts = np.sinc(d) * np.sinc(d / 3) * (np.abs(d) < 3)
        out[i] = np.tensordot(wts / wts.sum(), x[taps], axes=1)
    return out


def test_upscale_image_values():
    rng = np.random.default_rng(1)
    img = rng.uniform(0, 1, (31, 45, 3)).astype(np.float32)
    np.testing.assert_array_equal(upscale_image(img, 1.0), img)
    np.testing.assert_array_equal(upscale_image(img, 2, "nearest"), img.repeat(2, 0).repeat(2, 1))
    const = np.full((20, 30), 0.3, np.float32)
    np.testing.assert_allclose(upscale_image(const, 2.7), 0.3, atol=1e-6)
    # Lanczos-3 from its definition (separable), clipped to [0, 1]
    ref = lanczos3_resize_1d(lanczos3_resize_1d(img, 78).swapaxes(0, 1), 112).swapaxes(0, 1)
    np.testing.assert_allclose(upscale_image(img, 2.5), np.clip(ref, 0, 1), atol=2e-5)
    u8 = (img * 255).round().astype(np.uint8)
    ref8 = lanczos3_resize_1d(lanczos3_resize_1d(u8 / 255.0, 78).swapaxes(0, 1), 112).swapaxes(0, 1)
    assert np.abs(upscale_image(u8, 2.5).astype(int) - np.clip(ref8 * 255, 0, 255).round()).max() <= 1
    # area (box) downscale by 2 is the 2x2 mean
    np.testing.assert_allclose(upscale_image(img[:30, :44], 0.5, "area"),
                               img[:30, :44].reshape(15, 2, 22, 2, 3).mean((1, 3)), atol=1e-6)


def test_upscale_errors():
    img = np.zeros((10, 10, 3), np.float32)
    for bad in (0, -1, float("nan"), float("inf"), 0.01):
        with pytest.raises(InputError):
            upscale_image(img, bad)
    with pytest.raises(InputError):
        upscale_image(img, 2, method="magic")


@pytest.mark.parametrize("upscale", UPSCALES)
def test_paste_output_size_odd_photo(astronaut, upscale):
    photo = astronaut[:337, 40:451]  # 337 x 411: odd sizes
    lm = ASTRONAUT_LM5 - np.array([40, 0])
    face = align_face(photo, lm, 256)
    out = paste_faces(photo, [(face.crop, face)], upscale)
    assert out.shape == (round(upscale * 337), round(upscale * 411), 3)
    assert out.dtype == np.float32 and out.min() >= 0 and out.max() <= 1


# ---------------------------------------------------------------------------------------------------
# identity round trip


def test_identity_round_trip_astronaut(astronaut):
    """align -> identity restorer -> paste reproduces the photo: bit-exact outside the blend mask,
    within 2/255 inside it (away from pure-black/white pixels, where the crop's bicubic overshoot
    is clipped to [0, 1]: there within 5/255)."""
    face = align_face(astronaut, ASTRONAUT_LM5, 512)
    out = paste_faces(astronaut, [(face.crop, face)], 1.0)
    m = output_mask(square_mask(512), face, 1.0, (512, 512), (512, 512))
    outside, inside = m <= 0, m > 0
    assert outside.mean() > 0.5 and inside.mean() > 0.05
    np.testing.assert_array_equal(out[outside], astronaut[outside])
    err = np.abs(out - astronaut).max(2)
    clipped = ndimage.binary_dilation(((astronaut <= 0) | (astronaut >= 1)).any(2), iterations=3)
    assert err[inside & ~clipped].max() <= 2 / 255
    assert (inside & ~clipped).sum() > 0.8 * inside.sum()
    assert err[inside].max() <= 5 / 255
    assert np.percentile(err[inside], 99.9) <= 2 / 255


@pytest.mark.parametrize("upscale", [2, 2.7])
def test_identity_round_trip_upscaled(astronaut, upscale):
    face = align_face(astronaut, ASTRONAUT_LM5, 512)
    out = paste_faces(astronaut, [(face.crop, face)], upscale)
    bg = upscale_image(astronaut, upscale)
    assert out.shape == bg.shape
    m = output_mask(square_mask(512), face, upscale, bg.shape[:2], astronaut.shape[:2])
    np.testing.assert_array_equal(out[m <= 0], bg[m <= 0])
    # inside: bicubic-from-the-photo vs Lanczos-from-the-photo, two good interpolations of the same data
    err = np.abs(out - bg).max(2)[m > 0]
    assert err.mean() < 1.5 / 255 and np.percentile(err, 99) < 8 / 255


def test_super_resolved_crop_maps_like_the_crop(astronaut):
    """A restorer returning a 2x larger crop (S' != S) lands at the same place."""
    face = align_face(astronaut, ASTRONAUT_LM5, 256)
    a = paste_faces(astronaut, [(face.crop, face)], 2.0)
    b = paste_faces(astronaut, [(upscale_image(face.crop, 2.0), face)], 2.0)
    m = output_mask(square_mask(256), face, 2.0, a.shape[:2], astronaut.shape[:2]) >= 1
    assert np.abs(a - b).max(2)[m].mean() < 1.5 / 255
    # shifting the pasted content by one output pixel would be far worse
    assert np.abs(a[:, 1:] - b[:, :-1]).max(2)[m[:, 1:]].mean() > 3 * np.abs(a - b).max(2)[m].mean()


# ---------------------------------------------------------------------------------------------------
# masks and several faces


def test_square_mask_profile():
    s = 200
    m = square_mask(s, erode=0.05, feather=0.1)
    assert m.shape == (s, s) and m.dtype == np.float32
    # distance from the crop edge: 0 up to 10 px, 1 from 30 px on, smoothstep in between
    d = np.minimum(np.arange(s) + 0.5, s - 0.5 - np.arange(s))
    t = np.clip((d - 10) / 20, 0, 1)
    np.testing.assert_allclose(m[s // 2], t * t * (3 - 2 * t), atol=1e-6)
    assert m[:10].max() == 0 and m[30:-30, 30:-30].min() == 1


def test_landmark_mask_covers_face_only(astronaut):
    from scipy.spatial import ConvexHull
    from skimage.draw import polygon

    face = align_face(astronaut, ASTRONAUT_LM5, 512)
    lm = transform_points(ASTRONAUT_LM68, face.affine)
    m = landmark_mask(lm, 512, dilate=0.0, feather=0.0, erode=0.0)
    hull = lm[:27][ConvexHull(lm[:27]).vertices]
    rr, cc = polygon(hull[:, 1], hull[:, 0], (512, 512))
    ref = np.zeros((512, 512), bool)
    ref[rr, cc] = True
    iou = ((m > 0.5) & ref).sum() / ((m > 0.5) | ref).sum()
    assert iou > 0.97
    grown = landmark_mask(lm, 512, dilate=0.05, feather=0.0, erode=0.0) > 0.5
    dist_out = ndimage.distance_transform_edt(~ref)
    assert grown[dist_out < 0.05 * 512 - 2].all() and not grown[dist_out > 0.05 * 512 + 2].any()


def test_paste_landmark_mask(astronaut):
    face = align_face(astronaut, ASTRONAUT_LM5, 512)
    restored = np.full_like(face.crop, 0.5)
    out = paste_faces(astronaut, [(restored, face)], 1.0, mask="landmarks", landmarks68=[ASTRONAUT_LM68])
    lm_crop = transform_points(ASTRONAUT_LM68, face.affine)
    m = output_mask(landmark_mask(lm_crop, 512), face, 1.0, (512, 512), (512, 512))
    np.testing.assert_array_equal(out[m <= 0], astronaut[m <= 0])
    np.testing.assert_allclose(out[m >= 1], 0.5, atol=1e-6)
    np.testing.assert_allclose(out, m[..., None] * 0.5 + (1 - m[..., None]) * astronaut, atol=1e-5)
    # the face region is smaller than the square crop region
    sq = output_mask(square_mask(512), face, 1.0, (512, 512), (512, 512))
    assert (m > 0).sum() < 0.6 * (sq > 0).sum()
    # a face without 68 points falls back to the square mask
    fallback = paste_faces(astronaut, [(restored, face)], 1.0, mask="landmarks", landmarks68=[None])
    np.testing.assert_allclose(fallback, sq[..., None] * 0.5 + (1 - sq[..., None]) * astronaut, atol=1e-5)


def _two_overlapping_faces(s: int = 128):
    """A flat 150 x 190 photo with two overlapping aligned faces (crops of side ``s``), a red and a blue restored
    crop for them: (photo, faces, colours, crops)."""
    photo = np.full((150, 190, 3), 0.2, np.float32)
    faces = []
    for m in ([[0.9, 0.1, -40.0], [-0.1, 0.9, -20.0]], [[1.1, -0.2, -80.0], [0.2, 1.1, -60.0]]):
        lm = transform_points(FFHQ_TEMPLATE_512 * s / 512, np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2])
        faces.append(align_face(photo, lm, s))
    colours = [np.array([0.9, 0.1, 0.1], np.float32), np.array([0.1, 0.1, 0.9], np.float32)]
    return photo, faces, colours, [np.broadcast_to(c, (s, s, 3)).copy() for c in colours]


@pytest.mark.parametrize("upscale", [1.0, 1.5])
def test_overlapping_faces_blend_in_order(upscale):
    photo, faces, colours, crops = _two_overlapping_faces()
    (h, w), s = photo.shape[:2], 128
    out = paste_faces(photo, list(zip(crops, faces)), upscale)
    oh, ow = round(upscale * h), round(upscale * w)
    m1, m2 = (output_mask(square_mask(s), f, upscale, (oh, ow), (h, w))[..., None] for f in faces)
    assert ((m1 > 0) & (m2 > 0)).mean() > 0.05  # they do overlap
    bg = 0.2
    expected = m2 * colours[1] + (1 - m2) * (m1 * colours[0] + (1 - m1) * bg)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    # reversing the order lets the other face win where both are opaque
    rev = paste_faces(photo, list(zip(crops, faces))[::-1], upscale)
    both = ((m1 >= 1) & (m2 >= 1))[..., 0]
    assert both.any()
    np.testing.assert_allclose(out[both], np.broadcast_to(colours[1], out[both].shape), atol=1e-6)
    np.testing.assert_allclose(rev[both], np.broadcast_to(colours[0], rev[both].shape), atol=1e-6)


def test_keep_masks_act_per_face_and_spare_the_neighbours():
    """A face's keep mask (the occlusion guard's) lowers only its own paste mask: where it reaches over the next
    face of a group photo, that face keeps its restoration; keep = 1 everywhere leaves the photo bit for bit."""
    photo, faces, colours, crops = _two_overlapping_faces()
    (h, w), s = photo.shape[:2], 128
    k0 = np.zeros((s, s), np.float32)
    k0[:, s // 2:] = 1.0  # face 0 keeps the photo over the right half of its crop (where face 1 lies)
    out = paste_faces(photo, list(zip(crops, faces)), 2.0, keep=[k0, None])
    plain = paste_faces(photo, list(zip(crops, faces)), 2.0)
    m1 = output_mask(square_mask(s), faces[1], 2.0, (300, 380), (h, w))
    core = m1 >= 1
    assert core.any()
    np.testing.assert_allclose(out[core], plain[core], atol=1e-6)  # face 1 fully restored where it is opaque
    np.testing.assert_allclose(out[core], np.broadcast_to(colours[1], out[core].shape), atol=1e-6)
    assert not np.allclose(out, plain)  # face 0 did keep some photo
    untouched = paste_faces(photo, [(crops[0], faces[0])], 2.0, keep=[np.ones((s, s), np.float32)])
    np.testing.assert_array_equal(untouched, paste_faces(photo, [], 2.0))
    same = paste_faces(photo, [(crops[0], faces[0])], 2.0, keep=[np.zeros((s, s), np.float32)])
    np.testing.assert_array_equal(same, paste_faces(photo, [(crops[0], faces[0])], 2.0))
    with pytest.raises(InputError, match="keep mask 0"):
        paste_faces(photo, [(crops[0], faces[0])], 2.0, keep=[np.zeros((8, 8), np.float32)])
    with pytest.raises(InputError, match="keep masks"):
        paste_faces(photo, [(crops[0], faces[0])], 2.0, keep=[])


# ---------------------------------------------------------------------------------------------------
# colour matching


def test_colour_statistics_skip_the_padding_of_a_face_cut_by_the_border(astronaut):
    """A face cut by the photo's left edge has grey padding in its crop; a restorer that completes the face must
    not be pulled toward that grey: the skin statistics count only the pixels inside the photo."""
    from facerestore.faces.align import inside_photo
    from facerestore.faces.paste import match_face_colour, rgb_to_lab, skin_weights

    full = align_face(astronaut, ASTRONAUT_LM5, 256)
    cut = astronaut[:, 215:].copy()  # the face's left half is outside this photo
    face = align_face(cut, ASTRONAUT_LM5 - [215, 0], 256)
    inside = inside_photo(face, cut.shape)
    skin = skin_weights(256) > 0
    assert 0.25 < 1 - inside[skin].mean() < 0.75  # a good part of the statistics ellipse is padding
    restored = full.crop  # the whole face, as a restorer completes it
    ok = inside & skin
    matched = match_face_colour(restored, face, cut.shape)
    target = rgb_to_lab(face.crop)[ok].mean(0)
    assert np.abs(rgb_to_lab(matched)[ok].mean(0) - target).max() < 2.0
    naive = color_transfer(restored, face.crop, skin_weights(256), skin_weights(256), space="lab", max_gain=2.0,
                           robust=True)  # statistics over the padding too: the shift this guards against
    assert np.abs(rgb_to_lab(naive)[ok].mean(0) - target).max() > 4.0
    inner = align_face(astronaut, ASTRONAUT_LM5, 256)  # a face wholly inside: the same as the plain transfer
    np.testing.assert_allclose(match_face_colour(restored, inner, astronaut.shape),
                               color_transfer(restored, inner.crop, skin_weights(256), skin_weights(256),
                                              space="lab", max_gain=2.0, robust=True), atol=1e-6)


@pytest.mark.parametrize("space", ["lab", "rgb"])
def test_color_match_removes_colour_shift(astronaut, space):
    face = align_face(astronaut, ASTRONAUT_LM5, 256)
    # a restorer that shifts colours: warmer, less contrast, brighter
    shifted = np.clip((face.crop - 0.5) * 0.8 + 0.5 + np.array([0.08, 0.02, -0.06], np.float32), 0, 1)
    plain = paste_faces(astronaut, [(shifted, face)], 1.0)
    matched = paste_faces(astronaut, [(shifted, face)], 1.0, color_match=space)
    m = output_mask(square_mask(256), face, 1.0, (512, 512), (512, 512)) >= 1
    err_plain = np.abs(plain - astronaut)[m].mean()
    err_matched = np.abs(matched - astronaut)[m].mean()
    assert err_matched < 0.3 * err_plain
    # channel means over the face come back to the photo's
    assert np.abs(matched[m].mean(0) - astronaut[m].mean(0)).max() < 0.01


def test_color_transfer_statistics():
    rng = np.random.default_rng(4)
    src = rng.uniform(0.3, 0.6, (40, 50, 3)).astype(np.float32)
    ref = rng.uniform(0.2, 0.8, (30, 30, 3)).astype(np.float32) * np.array([1.0, 0.8, 0.6], np.float32)
    out = color_transfer(src, ref, space="rgb")
    np.testing.assert_allclose(out.mean((0, 1)), ref.mean((0, 1)), atol=1e-5)
    np.testing.assert_allclose(out.std((0, 1)), ref.std((0, 1)), rtol=1e-4)
    # weights select the region the statistics come from
    w = np.zeros((30, 30))
    w[:10] = 1
    out_w = color_transfer(src, ref, reference_weights=w, space="rgb")
    np.testing.assert_allclose(out_w.mean((0, 1)), ref[:10].mean((0, 1)), atol=1e-4)
    lab = color_transfer(src, src, space="lab")
    np.testing.assert_allclose(lab, src, atol=1e-5)  # identity when the statistics already agree


def test_lab_conversion_matches_skimage():
    from skimage import color

    from facerestore.faces.paste import lab_to_rgb, rgb_to_lab

    rng = np.random.default_rng(7)
    rgb = rng.uniform(0, 1, (64, 64, 3))
    rgb[0, :4] = [[0, 0, 0], [1, 1, 1], [1, 0, 0], [0.02, 0.5, 0.001]]
    # skimage rounds the CIE constants (0.008856, 7.787): agreement to ~2e-4 Lab units
    np.testing.assert_allclose(rgb_to_lab(rgb), color.rgb2lab(rgb), atol=5e-4)
    np.testing.assert_allclose(lab_to_rgb(rgb_to_lab(rgb)), rgb, atol=1e-9)


# ---------------------------------------------------------------------------------------------------
# background hook and inputs


def test_background_hook_and_array(astronaut):
    face = align_face(astronaut, ASTRONAUT_LM5, 256)
    m = output_mask(square_mask(256), face, 2.0, (1024, 1024), (512, 512))
    seen = []

    def upsampler(img, up):
        seen.append((img.shape, up))
        return np.zeros((round(img.shape[0] * up), round(img.shape[1] * up), 3), np.float32)

    out = paste_faces(astronaut, [(face.crop, face)], 2.0, background=upsampler)
    assert seen == [((512, 512, 3), 2.0)]
    assert (out[m <= 0] == 0).all()

    def x4(img, up):  # an upsampler with a fixed factor: resized to the requested output
        return np.full((img.shape[0] * 4, img.shape[1] * 4, 3), 0.25, np.float32)

    out4 = paste_faces(astronaut, [(face.crop, face)], 2.0, background=x4)
    assert out4.shape == (1024, 1024, 3)
    np.testing.assert_allclose(out4[m <= 0], 0.25, atol=1e-6)

    arr = np.full((1024, 1024, 3), 0.75, np.float32)
    out_a = paste_faces(astronaut, [(face.crop, face)], 2.0, background=arr)
    np.testing.assert_array_equal(out_a[m <= 0], arr[m <= 0])
    with pytest.raises(InputError):
        paste_faces(astronaut, [(face.crop, face)], 2.0, background=np.zeros((1024, 700, 3), np.float32))


def test_paste_input_types_and_errors(astronaut):
    import torch

    face = align_face(astronaut, ASTRONAUT_LM5, 128)
    ref = paste_faces(astronaut, [(face.crop, face)], 1.0)
    as_u8 = paste_faces((astronaut * 255).round().astype(np.uint8), [(face.crop, face)], 1.0)
    assert np.abs(as_u8 - ref).max() <= 0.5 / 255 + 1e-6
    tensor = torch.from_numpy(face.crop.transpose(2, 0, 1))[None]
    np.testing.assert_allclose(paste_faces(astronaut, [(tensor, face)], 1.0), ref, atol=1e-6)
    np.testing.assert_array_equal(paste_faces(astronaut, [], 1.0), astronaut)
    with pytest.raises(InputError):
        paste_faces(astronaut, [(face.crop, face)], 1.0, mask="circle")
    with pytest.raises(InputError):
        paste_faces(astronaut, [(face.crop, face)], 1.0, color_match="hsv")
    with pytest.raises(InputError):
        paste_faces(astronaut, [(face.crop[:, :100], face)], 1.0)
    with pytest.raises(InputError):
        paste_faces(astronaut, [(face.crop, face)], 0)
    with pytest.raises(InputError):
        paste_faces(astronaut, [(face.crop, face)], 1.0, landmarks68=[None, None])


def test_paste_antialias_option(astronaut):
    """antialias=True low-passes crops that shrink: the fine checkerboard of a sharp crop is removed."""
    face = align_face(astronaut, ASTRONAUT_LM5, 512)  # crop is ~3x larger than the face in the photo
    checker = ((np.indices((512, 512)).sum(0) % 2) * 0.8 + 0.1).astype(np.float32)
    crop = np.repeat(checker[..., None], 3, 2)
    m = output_mask(square_mask(512), face, 1.0, (512, 512), (512, 512)) >= 1
    aa = paste_faces(astronaut, [(crop, face)], 1.0, antialias=True)
    raw = paste_faces(astronaut, [(crop, face)], 1.0, antialias=False)
    assert aa[m].std() < 0.02 < raw[m].std()
    assert abs(aa[m].mean() - 0.5) < 0.01
    # sanity: the helper agrees with a direct estimate of the alignment
    np.testing.assert_allclose(face.affine, estimate_similarity(ASTRONAUT_LM5, face.landmarks5), atol=1e-9)


# ---------------------------------------------------------------------------------------------------
# Face Mesh mask, robust colour matching, gray photos, grain (issue 14)


def synthetic_mesh(centre, axes) -> np.ndarray:
    """468 points whose face-oval ring lies on an ellipse (the other points at its centre): all the mesh
    mask reads is the oval."""
    from facerestore.faces.mesh import FACE_OVAL

    pts = np.tile(np.asarray(centre, np.float64), (468, 1))
    t = np.linspace(-np.pi / 2, 1.5 * np.pi, len(FACE_OVAL), endpoint=False)
    pts[list(FACE_OVAL)] = np.stack([centre[0] + axes[0] * np.cos(t), centre[1] + axes[1] * np.sin(t)], 1)
    return pts


def test_mesh_mask_follows_the_face_oval():
    from facerestore.faces.paste import mesh_mask

    s = 400
    pts = synthetic_mesh((200, 210), (110, 140))
    m = mesh_mask(pts, s, dilate=0.01, feather=0.05)
    yy, xx = np.mgrid[0:s, 0:s]
    # normalised radius of the ellipse: the mask is 0 from 1% of the side outside the oval, 1 from 4% inside
    r = np.hypot((xx - 200) / 110, (yy - 210) / 140)
    assert m[r > 1 + 0.015 * s / 110].max() == 0
    assert m[r < 1 - 0.045 * s / 110].min() == 1
    # polygon of 36 vertices vs ellipse: the half-way contour lies within 2 px of the oval shrunk by 1.5% S
    edge = (m > 0.45) & (m < 0.55)
    assert edge.any() and np.abs((r[edge] - 1) * 120 + 0.015 * s).max() < 4
    with pytest.raises(InputError):
        mesh_mask(pts[:100], s)


def test_paste_mesh_mask_and_fallbacks(astronaut):
    face = align_face(astronaut, ASTRONAUT_LM5, 512)
    restored = np.full_like(face.crop, 0.5)
    # an oval around the face in photo coords
    mesh = synthetic_mesh((225, 125), (45, 60))
    out = paste_faces(astronaut, [(restored, face)], 1.0, mask="mesh", mesh_points=[mesh], grain=0.0)
    from facerestore.faces.paste import mesh_mask

    m = output_mask(mesh_mask(transform_points(mesh, face.affine), 512), face, 1.0, (512, 512), (512, 512))
    np.testing.assert_array_equal(out[m <= 0], astronaut[m <= 0])
    np.testing.assert_allclose(out, m[..., None] * 0.5 + (1 - m[..., None]) * astronaut, atol=1e-5)
    sq = output_mask(square_mask(512), face, 1.0, (512, 512), (512, 512))
    assert (m > 0).sum() < 0.5 * (sq > 0).sum()
    # no mesh for the face: its 68 points, then the square
    via_lm = paste_faces(astronaut, [(restored, face)], 1.0, mask="mesh", mesh_points=[None],
                         landmarks68=[ASTRONAUT_LM68], grain=0.0)
    np.testing.assert_array_equal(via_lm, paste_faces(astronaut, [(restored, face)], 1.0, mask="landmarks",
                                                      landmarks68=[ASTRONAUT_LM68]))
    via_sq = paste_faces(astronaut, [(restored, face)], 1.0, mask="mesh", grain=0.0)
    np.testing.assert_array_equal(via_sq, paste_faces(astronaut, [(restored, face)], 1.0))
    with pytest.raises(InputError):
        paste_faces(astronaut, [(restored, face)], 1.0, mask="mesh", mesh_points=[mesh, mesh])
    with pytest.raises(InputError):
        paste_faces(astronaut, [(restored, face)], 1.0, grain=2.0)


def test_gray_photo_keeps_gray_faces(astronaut):
    """A black-and-white photo stored as RGB and a restorer that tints (pink cheeks, green shadows): with
    colour matching the pasted face is exactly gray."""
    from facerestore.faces.paste import is_gray
    from facerestore.io import to_gray

    gray = to_gray(astronaut)
    assert is_gray(gray) and not is_gray(astronaut)
    noisy = np.clip(gray + np.random.default_rng(0).normal(0, 0.4 / 255, gray.shape), 0, 1).astype(np.float32)
    assert is_gray(noisy) and is_gray((noisy * 255).round().astype(np.uint8))
    face = align_face(gray, ASTRONAUT_LM5, 256)
    yy = np.linspace(0, 1, 256, dtype=np.float32)[:, None]
    tint = np.stack([0.06 * yy, -0.05 * yy, 0.02 * (1 - yy)], 2) + np.zeros((1, 256, 3), np.float32)
    tinted = np.clip(face.crop + tint, 0, 1)
    plain = paste_faces(gray, [(tinted, face)], 1.0)
    matched = paste_faces(gray, [(tinted, face)], 1.0, color_match=True)
    assert (plain.max(2) - plain.min(2)).max() > 0.05
    assert (matched.max(2) - matched.min(2)).max() < 1e-6


def test_color_statistics_come_from_the_skin_only(astronaut):
    """A restorer that keeps the face's colour but paints the clothes and background red: matching on the
    skin leaves the face alone, matching on the whole crop (the old behaviour) shifted it."""
    from facerestore.faces.paste import color_transfer, skin_weights

    face = align_face(astronaut, ASTRONAUT_LM5, 256)
    lm_crop = transform_points(ASTRONAUT_LM68, face.affine)
    skin = skin_weights(256, landmarks68_crop=lm_crop)
    assert 0.05 < skin.mean() < 0.4
    restored = face.crop.copy()
    restored[skin == 0] = np.clip(restored[skin == 0] * 0.3 + np.array([0.7, 0.0, 0.0], np.float32), 0, 1)
    whole = color_transfer(restored, face.crop, square_mask(256), square_mask(256))
    robust = color_transfer(restored, face.crop, skin, skin, max_gain=2.0, robust=True)
    on = skin > 0
    assert np.abs(robust[on] - face.crop[on]).mean() < 1 / 255
    assert np.abs(whole[on] - face.crop[on]).mean() > 10 / 255


def test_robust_colour_match_undoes_a_shift_on_the_skin(astronaut):
    face = align_face(astronaut, ASTRONAUT_LM5, 256)
    shifted = np.clip((face.crop - 0.5) * 0.85 + 0.5 + np.array([0.06, 0.01, -0.04], np.float32), 0, 1)
    lm = [ASTRONAUT_LM68]
    out = paste_faces(astronaut, [(shifted, face)], 1.0, mask="landmarks", landmarks68=lm, color_match=True)
    plain = paste_faces(astronaut, [(shifted, face)], 1.0, mask="landmarks", landmarks68=lm)
    from facerestore.faces.paste import rgb_to_lab

    core = output_mask(landmark_mask(transform_points(ASTRONAUT_LM68, face.affine), 256, dilate=-0.05, feather=0),
                       face, 1.0, (512, 512), (512, 512)) > 0.5
    de = lambda x: np.linalg.norm(rgb_to_lab(x[core]) - rgb_to_lab(astronaut[core]), axis=1).mean()  # noqa: E731
    assert de(plain) > 5 and de(out) < 0.3 * de(plain)


def test_grain_comes_back_where_the_restorer_smoothed(astronaut):
    import cv2

    rng = np.random.default_rng(5)
    grainy = np.clip(astronaut + rng.normal(0, 0.04, astronaut.shape), 0, 1).astype(np.float32)
    face = align_face(grainy, ASTRONAUT_LM5, 512)
    smooth = cv2.GaussianBlur(face.crop, (0, 0), 4.0)
    mesh = synthetic_mesh((225, 125), (45, 60))
    kw = dict(mask="mesh", mesh_points=[mesh])
    flat = paste_faces(grainy, [(smooth, face)], 1.0, grain=0.0, **kw)
    back = paste_faces(grainy, [(smooth, face)], 1.0, **kw)  # grain defaults to 1 with the mesh mask
    core = (slice(110, 140), slice(205, 245))

    def hf(x):
        return (x - cv2.GaussianBlur(x, (0, 0), 1.0))[core].std()

    assert hf(flat) < 0.3 * hf(grainy)
    assert 0.8 * hf(grainy) < hf(back) < 1.2 * hf(grainy)
    # outside the mask nothing changes; a restorer that changes nothing is left (almost) as it is
    np.testing.assert_array_equal(back[:60], grainy[:60])
    same = paste_faces(grainy, [(face.crop, face)], 1.0, **kw)
    same0 = paste_faces(grainy, [(face.crop, face)], 1.0, grain=0.0, **kw)
    assert np.abs(same - same0).max() < 6 / 255 and np.abs(same - same0).mean() < 0.3 / 255


def test_paste_refuses_non_finite_crops_and_bad_mask_geometry(astronaut):
    """0 * NaN is NaN: a NaN pixel of a restored crop once spread over the mask's support (and through colour
    matching over the whole crop); erode 0.6 pasted nothing and feather -1 gave a hard edge, both silently."""
    face = align_face(astronaut, ASTRONAUT_LM5, size=64)
    crop = face.crop.copy()
    crop[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        paste_faces(astronaut, [(crop, face)], 1.0, mask="square")
    for kw in ({"erode": np.nan}, {"erode": 0.6}, {"erode": -0.1}, {"feather": -1.0}, {"dilate": np.nan}):
        with pytest.raises(InputError, match=next(iter(kw))):
            paste_faces(astronaut, [(face.crop, face)], 1.0, mask="square", **kw)


def test_align_refuses_integer_images_and_fractional_sizes(astronaut):
    with pytest.raises(InputError, match="dtype int64"):
        align_face(np.full((64, 64, 3), 128, np.int64), ASTRONAUT_LM5 / 8, size=64)
    with pytest.raises(InputError, match="integer"):
        align_face(astronaut, ASTRONAUT_LM5, size=8.5)
    crop8 = align_face((astronaut * 255).round().astype(np.uint8), ASTRONAUT_LM5, size=64).crop
    np.testing.assert_allclose(crop8, align_face(astronaut, ASTRONAUT_LM5, size=64).crop, atol=3 / 255)


def test_a_colour_face_in_a_mostly_gray_photo_keeps_its_colour():
    """is_gray looked at 99% of the photo: a colour face under 1% of a gray wall (or a night shot) made the photo
    "black-and-white" and every restored face was pasted gray. The faces must be gray too."""
    from facerestore.faces.paste import is_gray, photo_is_gray

    photo = np.full((1200, 1600, 3), 0.5, np.float32)
    skin = np.array([0.85, 0.62, 0.5], np.float32)
    photo[500:590, 700:800] = skin
    face = np.broadcast_to(skin, (64, 64, 3)).copy()
    assert is_gray(photo) and not photo_is_gray(photo, [face])
    gray_face = np.full((64, 64, 3), 0.4, np.float32)
    assert photo_is_gray(np.full((120, 160, 3), 0.3, np.float32), [gray_face])
