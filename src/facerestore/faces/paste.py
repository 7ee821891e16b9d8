"""Paste restored face crops back into the (upscaled) photo.

Geometry: the output has ``round(upscale * H) x round(upscale * W)`` pixels (Python ``round``) and
output pixel centres map to input pixel centres like every image resize (``x_out + 0.5 = s (x_in + 0.5)``
with the per-axis ratio ``s = W' / W`` resp. ``H' / H``), so faces land exactly on the background
made by :func:`upscale_image`. Each restored crop is warped with the inverse of its alignment affine
(Lanczos-4 ``cv2.warpAffine`` by default: with the bicubic alignment, an identity round trip
reproduces the astronaut photo within 1.4/255, against 2.6/255 for bicubic both ways) and blended
with a soft mask built in crop space:

- ``mask="square"``: 1 inside the crop, 0 in a border ``erode * S`` wide, smoothstep ramp
  ``feather * S`` wide in between.
- ``mask="landmarks"``: the convex hull of the 17 jaw and 10 brow points, grown by ``dilate * S``,
  with the same smoothstep ramp inside its edge, times the square mask. Faces without 68 points
  fall back to the square mask.
- ``mask="mesh"``: the face oval of Face Mesh's 468 points (:mod:`facerestore.faces.mesh`: the face
  from hairline to chin, without hair, ears or neck), grown by ``dilate * S`` (default 0.02), smoothstep
  ramp ``feather * S`` (default 0.05) inside that edge, times the square mask. Only the face is replaced,
  so hair, hands, clothes and background keep the photo's own pixels (no halos along hair, no soft
  rectangles). Faces without mesh points fall back to the landmark mask, then to the square mask.

Outside the masks the result equals the background bit for bit. Later faces are blended over
earlier ones.

Colour matching (``color_match``) moves the restored face's colour statistics to those of the input
face, per channel in CIE Lab (or RGB), robustly: location = mean within the 10-90 percentile range,
spread = half the 16-84 percentile range, measured on the skin only (mesh: face oval minus eyes, brows
and mouth; 68 points: the jaw/brow hull shrunk by 3% of the crop; otherwise the face ellipse of the
FFHQ template), so neither hair nor clothes nor the background pull the face's colour. The lightness
gain is kept in [1/2, 2], the chroma gains in [0, 1.25], so a near-monochrome photo (sepia, toned
prints) keeps its flat chroma. A photo whose channels are equal (a black-and-white photo stored as RGB:
99% of pixels within 4/255) gets gray faces: the restored crop's luma in all three channels.

Grain (``grain``, on by default with the mesh mask): where the warped restored face has less
high-frequency energy than the photo behind it (film grain, scan lines, halftone, sensor noise that the
restorer smoothed away), its high-frequency band (the image minus its Gaussian blur of ``upscale`` output
pixels) is replaced by the photo's, in proportion to the missing energy
(``g = clip((E_photo - E_restored) / E_photo, 0, 1)``, energies blurred 3x as wide); where the restorer
made detail of its own (g = 0) nothing is added, and a restorer that changes nothing is left as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from facerestore.errors import InputError
from facerestore.faces.align import (
    AlignedFace,
    _as_float_image,
    _resize_float,
    affine_scale,
    inside_photo,
    lowpass,
    to_homogeneous,
    transform_points,
    warp_affine,
)

UPSCALE_METHODS = ("lanczos", "bicubic", "bilinear", "nearest", "area")
MASK_KINDS = ("square", "landmarks", "mesh")
COLOR_SPACES = ("lab", "rgb")

Upsampler = Callable[[np.ndarray, float], np.ndarray]


# --------------------------------------------------------------------------------------------------
# background upscaling


def upscaled_shape(height: int, width: int, upscale: float) -> tuple[int, int]:
    """(round(upscale * height), round(upscale * width)); InputError for a non-positive factor."""
    if not (isinstance(upscale, (int, float, np.floating, np.integer)) and np.isfinite(upscale) and upscale > 0):
        raise InputError(f"upscale must be a positive number, got {upscale!r}")
    h, w = round(upscale * height), round(upscale * width)
    if h < 1 or w < 1:
        raise InputError(f"upscale {upscale} makes a {height}x{width} image empty")
    return int(h), int(w)


def fill_transparent(rgb: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """The colours of an RGBA photo with each fully transparent pixel (alpha 0) given the colour of the nearest
    visible one ("alpha bleeding"), so that resampling (Lanczos upscaling, the faces' warps) does not blend the
    invisible colour files often store there (black, white) into the visible edge: a white logo on transparent
    black got a dark fringe. Visible pixels are returned unchanged; without alpha (or with nothing transparent,
    or nothing visible) ``rgb`` itself is returned. One Euclidean distance transform: fast on a large cut-out.

    Args:
        rgb: (H, W, 3) float32 in [0, 1], straight (not premultiplied) colour.
        alpha: (H, W) float in [0, 1] or None.

    Returns:
        (H, W, 3) float32.
    """
    from scipy import ndimage

    if alpha is None:
        return rgb
    seen = np.asarray(alpha) > 0
    if seen.all() or not seen.any():
        return rgb
    iy, ix = ndimage.distance_transform_edt(~seen, return_distances=False, return_indices=True)
    return np.ascontiguousarray(np.asarray(rgb, np.float32)[iy, ix])


def upscale_image(image: np.ndarray, upscale: float, method: str = "lanczos") -> np.ndarray:
    """Resize by ``upscale`` to exactly (round(upscale * H), round(upscale * W)).

    Args:
        image: (H, W) (e.g. an alpha channel) or (H, W, C); float in [0, 1], uint8 or uint16.
        method: "lanczos" (default; PIL's antialiased Lanczos-3), "bicubic", "bilinear", "nearest"
            or "area" (box average). All map pixel centres as ``x_out + 0.5 = s (x_in + 0.5)``.

    Returns:
        Same dtype as the input (float16 comes back as float32); floats are clipped to [0, 1] (Lanczos/bicubic
        overshoot).
    """
    if method not in UPSCALE_METHODS:
        raise InputError(f"upscale method must be one of {', '.join(UPSCALE_METHODS)}, got {method!r}")
    arr = np.asarray(image)
    if arr.ndim not in (2, 3) or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise InputError(f"expected an (H, W) or (H, W, C) image, got shape {arr.shape}")
    h, w = arr.shape[:2]
    oh, ow = upscaled_shape(h, w, upscale)
    dtype = arr.dtype
    if dtype == np.uint8:
        f, peak = arr.astype(np.float32) / 255.0, 255.0
    elif dtype == np.uint16:
        f, peak = arr.astype(np.float32) / 65535.0, 65535.0
    elif np.issubdtype(dtype, np.floating):
        f, peak = arr.astype(np.float32, copy=False), None  # only read below
    else:
        raise InputError(f"unsupported pixel type {dtype} (use float in [0, 1], uint8 or uint16)")
    if (oh, ow) == (h, w):
        out = f.copy()
    else:
        out = _resize_float(f, ow, oh, "box" if method == "area" else method)
    np.clip(out, 0.0, 1.0, out=out)  # in place: out is a new array either way
    if peak is not None:
        return np.floor(out * peak + 0.5).astype(dtype)
    return out.astype(dtype if dtype in (np.float32, np.float64) else np.float32, copy=False)


# --------------------------------------------------------------------------------------------------
# masks (crop space)


def covered_rect(side: int, affine: np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1), end-exclusive pixel bounds of an image of ``width`` x ``height`` that a ``side`` x ``side``
    crop mapped by the 2x3 ``affine`` (crop -> image, pixel centres at integers) covers, with a 1-2 px margin for
    interpolation, clipped to the image (x1 <= x0 or y1 <= y0: it covers nothing)."""
    corners = np.array([[-0.5, -0.5], [side - 0.5, -0.5], [side - 0.5, side - 0.5], [-0.5, side - 0.5]])
    pts = transform_points(corners, affine)
    x0 = int(np.clip(np.floor(pts[:, 0].min()) - 1, 0, width))
    y0 = int(np.clip(np.floor(pts[:, 1].min()) - 1, 0, height))
    x1 = int(np.clip(np.ceil(pts[:, 0].max()) + 2, 0, width))
    y1 = int(np.clip(np.ceil(pts[:, 1].max()) + 2, 0, height))
    return x0, y0, x1, y1


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def square_mask(size: int, erode: float = 0.02, feather: float = 0.08) -> np.ndarray:
    """(S, S) float32 blend mask: 0 within ``erode * S`` of the crop edge, smoothstep up to 1 over the
    next ``feather * S`` pixels (distances measured from the pixel edge of the crop)."""
    idx = np.arange(size, dtype=np.float64)
    d1 = np.minimum(idx + 0.5, size - 0.5 - idx)
    d = np.minimum(d1[:, None], d1[None, :])
    return _ramp(d, erode * size, feather * size)


def _ramp(dist: np.ndarray, start: float, width: float) -> np.ndarray:
    if width <= 0:
        return (dist > start).astype(np.float32)
    return _smoothstep((dist - start) / width).astype(np.float32)


def _signed_distance(inside: np.ndarray) -> np.ndarray:
    """Signed Euclidean distance (px) to the region boundary: > 0 inside, < 0 outside."""
    import cv2

    inside_u8 = inside.astype(np.uint8)
    d_in = cv2.distanceTransform(inside_u8, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    d_out = cv2.distanceTransform(1 - inside_u8, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    # pixel centres: the boundary lies half-way between an inside and an outside pixel
    return np.where(inside, d_in - 0.5, 0.5 - d_out).astype(np.float64)


def landmark_mask(
    landmarks68_crop: np.ndarray,
    size: int,
    dilate: float = 0.04,
    feather: float = 0.08,
    erode: float = 0.02,
) -> np.ndarray:
    """(S, S) float32 face-region mask from 68 points in crop coords: convex hull of jaw (0-16) and
    brows (17-26) grown by ``dilate * S``, smoothstep ramp ``feather * S`` wide inside that edge,
    multiplied by :func:`square_mask` (so nothing is sampled from the crop border)."""
    import cv2

    lm = np.asarray(landmarks68_crop, dtype=np.float64)
    if lm.shape != (68, 2):
        raise InputError(f"landmark mask needs (68, 2) points, got {lm.shape}")
    hull = cv2.convexHull(np.round(lm[:27] * 16).astype(np.int32))
    inside = np.zeros((size, size), np.uint8)
    cv2.fillPoly(inside, [hull], 1, lineType=cv2.LINE_8, shift=4)
    sd = _signed_distance(inside.astype(bool))
    shape = _ramp(sd, -dilate * size, feather * size)
    return shape * square_mask(size, erode=erode, feather=feather)


MESH_DILATE, MESH_FEATHER = 0.02, 0.05


def mesh_mask(
    mesh_crop: np.ndarray,
    size: int,
    dilate: float = MESH_DILATE,
    feather: float = MESH_FEATHER,
    erode: float = 0.02,
) -> np.ndarray:
    """(S, S) float32 face mask from Face Mesh's 468 points in crop coords: the face oval
    (:data:`facerestore.faces.mesh.FACE_OVAL`, hairline to chin) grown by ``dilate * S``, smoothstep ramp
    ``feather * S`` wide inside that edge, times :func:`square_mask` (``erode``, with the square mask's own
    feather 0.08: the oval's feather softens the face edge, not the crop's border)."""
    from facerestore.faces.mesh import FACE_OVAL, polygon_mask

    pts = np.asarray(mesh_crop, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[0] != 468 or pts.shape[1] < 2:
        raise InputError(f"mesh mask needs (468, 2) points, got {pts.shape}")
    sd = _signed_distance(polygon_mask(pts, size, FACE_OVAL))
    return _ramp(sd, -dilate * size, feather * size) * square_mask(size, erode=erode, feather=0.08)


def skin_weights(size: int, mesh_crop: np.ndarray | None = None, landmarks68_crop: np.ndarray | None = None,
                 ) -> np.ndarray:
    """(S, S) float64 0/1 weights of the skin of a face crop, where colour statistics are measured: the mesh
    face oval minus eyes, brows and mouth (each grown by 1% of S) and shrunk by 2% of S; else the 68-point
    jaw/brow hull shrunk by 3% of S; else the FFHQ template's face ellipse (centre (0.5, 0.56) S, semi-axes
    (0.22, 0.27) S)."""
    import cv2

    if mesh_crop is not None:
        from facerestore.faces.mesh import mesh_region_masks

        reg = mesh_region_masks(mesh_crop, size)
        k = max(1, round(0.01 * size))
        parts = cv2.dilate((reg["eyes"] | reg["brows"] | reg["mouth"]).astype(np.uint8), np.ones((2 * k + 1,) * 2))
        w = (_signed_distance(reg["face"]) > 0.02 * size) & ~parts.astype(bool)
    elif landmarks68_crop is not None:
        w = landmark_mask(landmarks68_crop, size, dilate=-0.03, feather=0.0, erode=0.0) > 0.5
    else:
        yy, xx = (np.mgrid[0:size, 0:size] + 0.5) / size
        w = ((xx - 0.5) / 0.22) ** 2 + ((yy - 0.56) / 0.27) ** 2 <= 1.0
    if w.sum() < 16:  # a degenerate outline: the whole crop
        w = np.ones((size, size), bool)
    return w.astype(np.float64)


def is_gray(image: np.ndarray, tol: float = 4 / 255, share: float = 0.99) -> bool:
    """The image's three channels are equal (within ``tol``) on ``share`` of its pixels: a black-and-white
    photo stored as RGB (JPEG chroma noise stays well within 4/255)."""
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] < 3:
        return True
    step = max(1, int(np.sqrt(arr.shape[0] * arr.shape[1] / 250_000)))  # ~250k samples suffice
    a = arr[::step, ::step, :3].astype(np.float32)
    if arr.dtype == np.uint8:
        a /= 255.0
    elif arr.dtype == np.uint16:
        a /= 65535.0
    spread = a.max(2) - a.min(2)
    return float(np.quantile(spread, share)) <= tol


def photo_is_gray(image: np.ndarray, face_crops: Sequence[np.ndarray]) -> bool:
    """A black-and-white photo: the whole image gray (:func:`is_gray`) *and* each face crop gray. The photo alone
    can look gray while its faces are in colour (small faces under 1% of a gray wall, snow, a night shot): then the
    restored faces must keep their colour."""
    return is_gray(image) and all(is_gray(c) for c in face_crops)


# --------------------------------------------------------------------------------------------------
# colour matching


def _weighted_stats(x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ws = float(w.sum())
    if ws <= 0:
        raise InputError("colour matching needs a non-empty mask")
    wn = (w / ws)[:, :, None]
    mu = (x * wn).sum((0, 1))
    var = (((x - mu) ** 2) * wn).sum((0, 1))
    return mu, np.sqrt(np.maximum(var, 0.0))


def _weighted_quantiles(x: np.ndarray, w: np.ndarray, qs: Sequence[float]) -> np.ndarray:
    """(len(qs), C) weighted quantiles of (H, W, C) ``x`` under (H, W) weights ``w`` (interpolated)."""
    keep = w > 0
    vals, wts = x[keep], w[keep].astype(np.float64)
    if not len(wts):
        raise InputError("colour matching needs a non-empty mask")
    out = np.empty((len(qs), x.shape[2]))
    for c in range(x.shape[2]):
        order = np.argsort(vals[:, c], kind="stable")
        v, cw = vals[order, c], np.cumsum(wts[order])
        pos = (cw - 0.5 * wts[order]) / cw[-1]
        out[:, c] = np.interp(qs, pos, v)
    return out


# chroma spread is never amplified much: a gain fitted on skin, applied to the whole crop, would push hair or
# background pixels of the restored crop far from any colour the photo has (cyan or green halos)
CHROMA_MAX_GAIN = 1.25


def _robust_stats(x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (mean of the values between the 10th and 90th weighted percentiles, half the 16-84
    percentile range): mean and std for a normal distribution, unmoved by the few percent of outliers (a strand
    of hair, a specular highlight), and near the mean of skewed ones (skin lit by two colours)."""
    q = _weighted_quantiles(x, w, (0.10, 0.16, 0.84, 0.90))
    keep = w > 0
    vals, wts = x[keep], w[keep].astype(np.float64)
    inside = (vals >= q[0]) & (vals <= q[3])
    wc = wts[:, None] * inside
    loc = (vals * wc).sum(0) / np.maximum(wc.sum(0), 1e-12)
    return loc, 0.5 * (q[2] - q[1])


# sRGB (D65) <-> CIE L*a*b*: the matrix and white point of the sRGB standard (as scikit-image uses)
_XYZ_FROM_RGB = np.array(
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]]
)
_RGB_FROM_XYZ = np.linalg.inv(_XYZ_FROM_RGB)
_WHITE_D65 = np.array([0.95047, 1.0, 1.08883])
_DELTA = 6.0 / 29.0


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB in [0, 1] (..., 3) -> CIE L*a*b* (D65), float64; L in [0, 100]."""
    c = np.asarray(rgb, dtype=np.float64)
    lin = np.where(c <= 0.04045, c / 12.92, ((np.maximum(c, 0.0) + 0.055) / 1.055) ** 2.4)
    t = (lin @ _XYZ_FROM_RGB.T) / _WHITE_D65
    f = np.where(t > _DELTA**3, np.cbrt(t), t / (3 * _DELTA**2) + 4.0 / 29.0)
    return np.stack([116.0 * f[..., 1] - 16.0, 500.0 * (f[..., 0] - f[..., 1]), 200.0 * (f[..., 1] - f[..., 2])], -1)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """CIE L*a*b* (D65) (..., 3) -> sRGB float64 (not clipped; out-of-gamut colours leave [0, 1])."""
    lab = np.asarray(lab, dtype=np.float64)
    fy = (lab[..., 0] + 16.0) / 116.0
    f = np.stack([fy + lab[..., 1] / 500.0, fy, fy - lab[..., 2] / 200.0], -1)
    t = np.where(f > _DELTA, f**3, 3 * _DELTA**2 * (f - 4.0 / 29.0))
    lin = (t * _WHITE_D65) @ _RGB_FROM_XYZ.T
    return np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * np.maximum(lin, 0.0) ** (1 / 2.4) - 0.055)


def _to_space(rgb: np.ndarray, space: str) -> np.ndarray:
    return rgb_to_lab(rgb) if space == "lab" else rgb.astype(np.float64)


def _from_space(x: np.ndarray, space: str) -> np.ndarray:
    return lab_to_rgb(x) if space == "lab" else x


def color_transfer(
    source: np.ndarray,
    reference: np.ndarray,
    source_weights: np.ndarray | None = None,
    reference_weights: np.ndarray | None = None,
    space: str = "lab",
    max_gain: float = 3.0,
    robust: bool = False,
) -> np.ndarray:
    """Give ``source`` (H, W, 3) the per-channel weighted mean and std of ``reference`` (H2, W2, 3).

    ``space``: "lab" (CIE L*a*b*, D65, :func:`rgb_to_lab`) or "rgb". The std gain is clipped to
    [1 / max_gain, max_gain] so a flat channel cannot explode. Returns float32 RGB in [0, 1].
    ``robust``: 10-90 percentile trimmed mean and half the 16-84 percentile range instead of mean and
    std; in Lab the chroma gains (a, b) then lie in [0, 1.25]: a flat-chroma reference (sepia) keeps
    its flat chroma, and the chroma spread of skin is never amplified onto the rest of the crop.
    """
    if space not in COLOR_SPACES:
        raise InputError(f"colour space must be one of {', '.join(COLOR_SPACES)}, got {space!r}")
    src = _to_space(source, space)
    ref = _to_space(reference, space)
    ws = np.ones(src.shape[:2]) if source_weights is None else np.asarray(source_weights, np.float64)
    wr = np.ones(ref.shape[:2]) if reference_weights is None else np.asarray(reference_weights, np.float64)
    stats = _robust_stats if robust else _weighted_stats
    mu_s, sd_s = stats(src, ws)
    mu_r, sd_r = stats(ref, wr)
    gain = np.where(sd_s > 1e-6, sd_r / np.maximum(sd_s, 1e-12), 1.0)
    lo, hi = np.full(3, 1.0 / max_gain), np.full(3, float(max_gain))
    if robust and space == "lab":
        lo[1:], hi[1:] = 0.0, min(CHROMA_MAX_GAIN, max_gain)
    gain = np.clip(gain, lo, hi)
    out = (src - mu_s) * gain + mu_r
    return np.clip(_from_space(out, space), 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------------------------------
# paste-back


def _as_crop(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor (3, S, S) or (1, 3, S, S)
        from facerestore.io import from_tensor

        x = from_tensor(x)
    arr = _as_float_image(x)
    if arr.shape[0] != arr.shape[1]:
        raise InputError(f"restored face crops must be square, got {arr.shape[1]}x{arr.shape[0]}")
    if not np.isfinite(arr).all():  # 0 * NaN is NaN: a single bad pixel would spread through mask and colour match
        raise InputError("a restored face crop holds NaN or infinite values")
    return arr


def _background(
    img: np.ndarray, upscale: float, background: np.ndarray | Upsampler | None, oh: int, ow: int
) -> np.ndarray:
    if background is None:
        return upscale_image(img, upscale)
    bg = background(img, upscale) if callable(background) else background
    bg = _as_float_image(bg)
    if bg.shape[:2] != (oh, ow):
        # an upsampler with its own fixed factor (e.g. x4 for --upscale 2): resample to the target,
        # but refuse a different aspect ratio, which means the wrong image
        ar_in, ar_out = img.shape[1] / img.shape[0], bg.shape[1] / bg.shape[0]
        if abs(ar_in - ar_out) > 2.0 / min(bg.shape[:2]) * max(ar_in, 1.0):
            raise InputError(
                f"background is {bg.shape[1]}x{bg.shape[0]} but the output must be {ow}x{oh} (aspect differs)"
            )
        bg = np.clip(_resize_float(bg, ow, oh, "lanczos"), 0.0, 1.0)
    return np.array(bg, dtype=np.float32, copy=True)


def _crop_scale_affine(src_size: int, dst_size: int) -> np.ndarray:
    """Pixel-centre map from a crop of ``src_size`` to one of ``dst_size`` (3x3)."""
    r = dst_size / src_size
    return np.array([[r, 0, 0.5 * r - 0.5], [0, r, 0.5 * r - 0.5], [0, 0, 1.0]])


def _grain_band(x: np.ndarray, sigma: float) -> np.ndarray:
    import cv2

    return x - cv2.GaussianBlur(x, (0, 0), sigma)


def _reinject_grain(face: np.ndarray, region: np.ndarray, sigma: float, amount: float) -> np.ndarray:
    """``face`` with its high-frequency band moved towards the photo's (``region``) where it has less
    high-frequency energy than the photo (see the module doc)."""
    import cv2

    hf_face, hf_bg = _grain_band(face, sigma), _grain_band(region, sigma)
    e_face = cv2.GaussianBlur((hf_face * hf_face).mean(2), (0, 0), 3 * sigma)
    e_bg = cv2.GaussianBlur((hf_bg * hf_bg).mean(2), (0, 0), 3 * sigma)
    g = np.clip((e_bg - e_face) / (e_bg + (1.0 / 255) ** 2), 0.0, 1.0) * amount
    return face + g[:, :, None] * (hf_bg - hf_face)


def _crop_points(points: np.ndarray | None, aligned: AlignedFace, s_r: int) -> tuple[np.ndarray | None, ...]:
    """Photo-pixel points -> (input-crop coords, restored-crop coords); (None, None) for None."""
    if points is None:
        return None, None
    p = np.asarray(points, np.float64)[:, :2]
    p_in = transform_points(p, aligned.affine)
    return p_in, transform_points(p_in, _crop_scale_affine(aligned.size, s_r)[:2])


def _resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """An (S, S) mask of an input crop on a restored crop of side ``size`` (pixel centres aligned, as
    :func:`_crop_scale_affine`), float32."""
    import cv2

    m = np.asarray(mask, np.float32)
    if m.shape[0] == size:
        return m
    return cv2.resize(m, (size, size), interpolation=cv2.INTER_AREA if size < m.shape[0] else cv2.INTER_LINEAR)


def match_face_colour(restored: Any, aligned: AlignedFace, photo_shape: tuple[int, ...], *,
                      landmarks68: np.ndarray | None = None, mesh_points: np.ndarray | None = None,
                      space: str = "lab", gray: bool = False) -> np.ndarray:
    """The restored crop with the colour of the photo's face (what :func:`paste_faces` pastes with
    ``color_match``): robust statistics of the skin (:func:`skin_weights`, from the Face Mesh points, else the 68
    points, else the template ellipse) of both crops, counting only pixels that lie inside the photo (a face cut
    by the border has padding in its crop, which is no skin of it); ``gray``: a gray result (gray photos).

    Args:
        restored: (S', S', 3) float32 in [0, 1] or a (1, 3, S', S') tensor, restored from ``aligned.crop``.
        aligned: the :class:`AlignedFace` (S, S) the restoration came from.
        photo_shape: (H, W, ...) of the photo ``aligned`` was cut from.
        landmarks68, mesh_points: the face's (68, 2) / (468, 2+) points in photo pixels, or None.
        space: "lab" or "rgb" (:func:`color_transfer`).

    Returns:
        (S', S', 3) float32 in [0, 1].
    """
    crop = _as_crop(restored)
    s_in, s_r = aligned.size, crop.shape[0]
    lm_in, lm_r = _crop_points(landmarks68, aligned, s_r)
    mp_in, mp_r = _crop_points(mesh_points, aligned, s_r)
    w_in, w_r = skin_weights(s_in, mp_in, lm_in), skin_weights(s_r, mp_r, lm_r)
    inside = inside_photo(aligned, photo_shape)
    if not inside.all():
        masked_in = w_in * inside
        masked_r = w_r * (_resize_mask(inside.astype(np.float32), s_r) > 0.5)
        if masked_in.sum() >= 16 and masked_r.sum() >= 16:  # else too little skin in the photo: the whole outline
            w_in, w_r = masked_in, masked_r
    out = color_transfer(crop, aligned.crop, w_r, w_in, space=space, max_gain=2.0, robust=True)
    if gray:
        from facerestore.io import to_gray

        out = to_gray(out)
    return out


def paste_faces(
    image: np.ndarray,
    faces: Sequence[tuple[Any, AlignedFace]],
    upscale: float = 1.0,
    *,
    background: np.ndarray | Upsampler | None = None,
    mask: str = "square",
    landmarks68: Sequence[np.ndarray | None] | None = None,
    mesh_points: Sequence[np.ndarray | None] | None = None,
    color_match: bool | str = False,
    grain: float | None = None,
    erode: float = 0.02,
    feather: float | None = None,
    dilate: float | None = None,
    interpolation: str = "lanczos",
    antialias: bool = False,
    weights: Sequence[float] | None = None,
    keep: Sequence[np.ndarray | None] | None = None,
    gray: bool | None = None,
) -> np.ndarray:
    """Blend restored face crops into the photo upscaled by ``upscale``.

    Args:
        image: (H, W, 3) float32 RGB in [0, 1] (uint8 accepted), the input photo.
        faces: (restored_crop, aligned) pairs; restored_crop is (S', S', 3) (any S': a super-resolved
            crop is mapped through the pixel-centre scaling S -> S') or a (1, 3, S', S') tensor, and
            ``aligned`` the :class:`AlignedFace` its input came from.
        upscale: output scale (float); the output is (round(upscale*H), round(upscale*W), 3).
        background: None (Lanczos :func:`upscale_image`), an array of the output size, or a callable
            ``(image, upscale) -> array`` (e.g. a Real-ESRGAN wrapper); a result with the right
            aspect but another size is Lanczos-resized to the output size.
        mask: "square", "landmarks" (uses ``landmarks68``) or "mesh" (uses ``mesh_points``; faces without
            them fall back to their 68 points, then to the square).
        landmarks68: per face (68, 2) photo coords or None; also used for colour statistics.
        mesh_points: per face (468, 2 or 3) Face Mesh points in photo coords or None
            (:class:`facerestore.faces.mesh.FaceMesher`); also used for colour statistics.
        color_match: False, True / "lab" or "rgb": match the restored face's colour to the input face
            (robust statistics on the skin, :func:`skin_weights`; gray photos get gray faces).
        grain: 0..1, how much of the photo's missing high-frequency band to put back (see module doc);
            None: 1 with the mesh mask, 0 otherwise.
        erode, feather, dilate: mask geometry as fractions of the crop side (see module doc); feather and
            dilate default to 0.08 / 0.04 for the square and landmark masks, 0.05 / 0.02 for the mesh mask.
        interpolation: "lanczos" (default), "cubic", "linear" or "spline" for warping the crops back
            (see :func:`facerestore.faces.align.warp_affine`).
        antialias: low-pass crops that shrink on the way back (:func:`facerestore.faces.align.lowpass`).
            Off by default: real detail near the output's Nyquist frequency would be attenuated
            (an identity round trip then deviates by up to ~30/255 at sharp edges), and on real whole photos
            (realworld/codeformer 00.jpg, gfpgan 10045.png; ISPL and prior-sft crops shrinking 2-5x) the pasted
            faces looked the same with and without it (the pipeline crops large faces at their footprint, so
            only small faces shrink).
        weights: per face, the share of the restored face in [0, 1] (the mask is scaled by it: 0 leaves the
            background untouched, 1 pastes the face fully); None = 1 for every face.
        keep: per face, None or an (S, S) float mask in [0, 1] on its *input* crop of where the photo keeps its own
            pixels (the occlusion guard's mask, :func:`facerestore.occlusion.occlusion_mask`): that face's paste
            mask is multiplied by ``1 - keep``. Per face, so that a mask reaching over a neighbouring face in a
            group photo does not take that neighbour's restoration away.
        gray: keep the pasted faces gray (after grain too): None = when ``color_match`` is on and the photo is
            gray (:func:`is_gray`); callers that matched the colours themselves pass it.

    Returns:
        (H', W', 3) float32 in [0, 1].
    """
    img = _as_float_image(image)
    h, w = img.shape[:2]
    oh, ow = upscaled_shape(h, w, upscale)
    if mask not in MASK_KINDS:
        raise InputError(f"mask must be one of {', '.join(MASK_KINDS)}, got {mask!r}")
    if color_match is True:
        color_match = "lab"
    if color_match and color_match not in COLOR_SPACES:
        raise InputError(f"color_match must be False, True, 'lab' or 'rgb', got {color_match!r}")
    for name, pts in (("landmark", landmarks68), ("mesh point", mesh_points)):
        if pts is not None and len(pts) != len(faces):
            raise InputError(f"got {len(pts)} {name} sets for {len(faces)} faces")
    if interpolation not in ("linear", "cubic", "lanczos", "spline"):
        raise InputError(f"interpolation must be linear, cubic, lanczos or spline, got {interpolation!r}")
    if weights is not None:
        weights = [float(v) for v in weights]
        if len(weights) != len(faces) or not all(0.0 <= v <= 1.0 for v in weights):
            raise InputError(f"weights must be {len(faces)} numbers in [0, 1], got {weights}")
    if keep is not None and len(keep) != len(faces):
        raise InputError(f"got {len(keep)} keep masks for {len(faces)} faces")
    if grain is None:
        grain = 1.0 if mask == "mesh" else 0.0
    if not (0.0 <= float(grain) <= 1.0):
        raise InputError(f"grain must be in [0, 1], got {grain!r}")
    if not 0.0 <= float(erode) < 0.5:  # NaN fails too; 0.5 erodes the whole crop away (nothing would be pasted)
        raise InputError(f"erode must be in [0, 0.5), got {erode!r}")
    for name, v in (("feather", feather), ("dilate", dilate)):
        if v is not None and not 0.0 <= float(v) < 0.5:
            raise InputError(f"{name} must be in [0, 0.5) (a share of the crop side), got {v!r}")
    out = _background(img, upscale, background, oh, ow)
    if gray is None:
        gray = bool(color_match) and len(faces) > 0 and photo_is_gray(img, [a.crop for _, a in faces])

    # input pixel -> output pixel, per axis (pixel centres aligned)
    sx, sy = ow / w, oh / h
    to_out = np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1.0]])

    for i, (restored, aligned) in enumerate(faces):
        weight = 1.0 if weights is None else weights[i]
        if weight == 0.0:
            continue  # the face keeps the background's pixels, bit for bit
        crop = _as_crop(restored)
        s_in, s_r = aligned.size, crop.shape[0]
        # restored-crop pixel -> output pixel
        a = (to_out @ to_homogeneous(aligned.inverse) @ _crop_scale_affine(s_r, s_in))[:2]

        lm_in, lm_r = _crop_points(None if landmarks68 is None else landmarks68[i], aligned, s_r)
        mp_in, mp_r = _crop_points(None if mesh_points is None else mesh_points[i], aligned, s_r)
        if lm_in is not None and lm_in.shape != (68, 2):
            raise InputError(f"landmark mask needs (68, 2) points, got {lm_in.shape}")
        if mp_in is not None and mp_in.shape != (468, 2):
            raise InputError(f"mesh mask needs (468, 2) points, got {mp_in.shape}")
        kind = mask
        if kind == "mesh" and mp_r is None:
            kind = "landmarks"
        if kind == "landmarks" and lm_r is None:
            kind = "square"
        fe = (MESH_FEATHER if kind == "mesh" else 0.08) if feather is None else feather
        di = (MESH_DILATE if kind == "mesh" else 0.04) if dilate is None else dilate
        if kind == "mesh":
            m_r = mesh_mask(mp_r, s_r, dilate=di, feather=fe, erode=erode)
        elif kind == "landmarks":
            m_r = landmark_mask(lm_r, s_r, dilate=di, feather=fe, erode=erode)
        else:
            m_r = square_mask(s_r, erode=erode, feather=fe)
        k_in = None if keep is None else keep[i]
        if k_in is not None:
            if np.shape(k_in) != (s_in, s_in):
                raise InputError(f"keep mask {i} must be ({s_in}, {s_in}) like its input crop, got {np.shape(k_in)}")
            m_r = m_r * (1.0 - np.clip(_resize_mask(k_in, s_r), 0.0, 1.0))

        if color_match:
            crop = match_face_colour(crop, aligned, (h, w), space=color_match, gray=gray,
                                     landmarks68=None if landmarks68 is None else landmarks68[i],
                                     mesh_points=None if mesh_points is None else mesh_points[i])

        if antialias:
            crop = lowpass(crop, 1.0 / affine_scale(a))

        # only touch the output rectangle the crop covers
        x0, y0, x1, y1 = covered_rect(s_r, a, ow, oh)
        if x1 <= x0 or y1 <= y0:
            continue
        a_roi = a.copy()
        a_roi[:, 2] -= (x0, y0)
        dsize = (x1 - x0, y1 - y0)
        face = warp_affine(crop, a_roi, dsize, interpolation, "replicate")
        m = warp_affine(m_r, a_roi, dsize, "linear", "constant", 0.0)
        m = np.clip(m, 0.0, 1.0)[:, :, None] * weight
        region = out[y0:y1, x0:x1]
        if grain > 0:
            face = _reinject_grain(face, region, max(1.0, float(upscale)), float(grain))
            if gray:
                face = np.repeat(face.mean(2, keepdims=True), 3, axis=2)
        face = np.clip(face, 0.0, 1.0)
        out[y0:y1, x0:x1] = m * face + (1.0 - m) * region
    return out
