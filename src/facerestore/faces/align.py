"""Face alignment: similarity warps to the FFHQ 5-point template and the original FFHQ 68-point crop recipe.

Coordinate convention (everywhere in ``facerestore.faces``): points are (x, y) in *pixel-index*
coordinates, i.e. the centre of pixel ``[row, col]`` is ``(col, row)``. This is the convention of
``cv2.warpAffine``, which is what warps the pixels here, so the returned matrices describe the crops
exactly (to interpolation accuracy): ``crop[v, u] ≈ image at inverse @ [u, v, 1]``.

Pixels are resampled by :func:`warp_affine`: ``cv2.warpAffine`` bicubic by default (bilinear and
Lanczos-4 on request), or exact-coordinate cubic B-splines (``interpolation="spline"``, scipy). When
the face is *larger* in the photo than in the crop, the photo is first low-passed with a Lanczos
kernel stretched to the crop's Nyquist frequency (``antialias=True``; the filter of a PIL Lanczos
downscale), so downscaling does not alias; for the usual case (small faces, upsampling into the
crop) nothing is filtered.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from facerestore.errors import InputError

# FFHQ 5-point template at 512 x 512 (facexlib / GFPGAN / CodeFormer), order: left eye, right eye,
# nose tip, left mouth corner, right mouth corner ("left" = smaller x in the image).
FFHQ_TEMPLATE_512 = np.array(
    [
        [192.98138, 239.94708],
        [318.90277, 240.1936],
        [256.63416, 314.01935],
        [201.26117, 371.41043],
        [313.08905, 371.15118],
    ],
    dtype=np.float64,
)

# Gray used by facexlib to fill outside the photo: its borderValue (135, 133, 132) is BGR (cv2 on a BGR image), so
# (132, 133, 135) in RGB
FACEXLIB_FILL = (132 / 255.0, 133 / 255.0, 135 / 255.0)

BORDER_MODES = ("constant", "reflect", "ffhq")
INTERPOLATIONS = ("linear", "cubic", "lanczos", "spline")


@dataclass
class AlignedFace:
    """An aligned face crop and the transforms that made it.

    Attributes:
        crop: (S, S, 3) float32 RGB in [0, 1].
        affine: (2, 3) float64, image pixel coords -> crop pixel coords.
        inverse: (2, 3) float64, crop pixel coords -> image pixel coords.
        landmarks5: (5, 2) float64, the 5 points in crop coords.
        size: S.
    """

    crop: np.ndarray
    affine: np.ndarray
    inverse: np.ndarray
    landmarks5: np.ndarray
    size: int


# --------------------------------------------------------------------------------------------------
# small helpers


def _as_float_image(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1]; uint8 / uint16 are scaled; other integer or bool arrays are refused (their
    range is unknown: an int64 128 read as a float is far outside [0, 1])."""
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise InputError(f"expected an (H, W, 3) RGB image, got shape {arr.shape}")
    if arr.dtype not in (np.uint8, np.uint16) and not np.issubdtype(arr.dtype, np.floating):
        raise InputError(f"expected a float image in [0, 1] or uint8 / uint16, got dtype {arr.dtype}")
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / 65535.0
    return np.ascontiguousarray(arr, dtype=np.float32)


def _as_points(points: np.ndarray, name: str = "landmarks") -> np.ndarray:
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 2:
        raise InputError(f"{name} must be an (N, 2) array of (x, y), got shape {p.shape}")
    if not np.all(np.isfinite(p)):
        raise InputError(f"{name} contain NaN or inf")
    return p


def to_homogeneous(affine: np.ndarray) -> np.ndarray:
    """(2, 3) affine -> (3, 3) matrix with last row [0, 0, 1]."""
    m = np.eye(3)
    m[:2] = np.asarray(affine, dtype=np.float64)
    return m


def invert_affine(affine: np.ndarray) -> np.ndarray:
    """Inverse of a (2, 3) affine matrix, as (2, 3)."""
    return np.linalg.inv(to_homogeneous(affine))[:2]


def transform_points(points: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Apply a (2, 3) affine to (N, 2) points: returns ``points @ A[:, :2].T + A[:, 2]``."""
    p = np.asarray(points, dtype=np.float64)
    a = np.asarray(affine, dtype=np.float64)
    return p @ a[:, :2].T + a[:, 2]


def landmarks68_to_5(landmarks68: np.ndarray) -> np.ndarray:
    """dlib/iBUG 68 points -> the 5 template points (eye centres = mean of the 6 eye points,
    nose tip = point 30, mouth corners = points 48 and 54)."""
    lm = _as_points(landmarks68, "landmarks68")
    if lm.shape[0] != 68:
        raise InputError(f"expected 68 landmarks, got {lm.shape[0]}")
    return np.stack([lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48], lm[54]])


def affine_scale(affine: np.ndarray) -> float:
    """Geometric-mean scale factor of a (2, 3) affine (sqrt |det| of its linear part)."""
    a = np.asarray(affine, dtype=np.float64)
    return float(np.sqrt(abs(np.linalg.det(a[:, :2]))))


def lowpass(image: np.ndarray, shrink: float, lobes: int = 3) -> np.ndarray:
    """Low-pass (H, W[, C]) float32 for a later ``shrink``-fold size reduction (no-op for shrink <= 1).

    Separable Lanczos kernel stretched by ``shrink`` (cutoff at the destination's Nyquist
    frequency): the filter PIL applies when it downscales with LANCZOS, so an antialiased warp to a
    smaller crop matches a Lanczos resize of a larger one.
    """
    import cv2

    if shrink <= 1.0 + 1e-6:
        return image
    r = int(np.ceil(lobes * shrink))
    x = np.arange(-r, r + 1, dtype=np.float64) / shrink
    k = np.sinc(x) * np.sinc(x / lobes)
    k = (k / k.sum()).astype(np.float32)
    return cv2.sepFilter2D(np.ascontiguousarray(image, dtype=np.float32), -1, k, k, borderType=cv2.BORDER_REFLECT_101)


def _lowpass_margin(shrink: float) -> int:
    return int(np.ceil(3 * shrink)) + 4 if shrink > 1.0 + 1e-6 else 4


def warp_affine(
    image: np.ndarray,
    affine: np.ndarray,
    dsize: tuple[int, int],
    interpolation: str = "cubic",
    border: str = "constant",
    fill: Sequence[float] | float = 0.0,
) -> np.ndarray:
    """Warp (H, W[, C]) float32 with ``affine`` (source pixel -> destination pixel) to ``dsize`` = (w, h).

    ``interpolation``: "linear", "cubic" (Keys a = -0.75) and "lanczos" (8x8 Lanczos-4) use
    ``cv2.warpAffine`` (positions quantised to 1/32 px); "spline" uses exact coordinates and cubic
    B-spline interpolation (``scipy.ndimage.map_coordinates``, order 3): ~3x more accurate on
    re-sampled images but ~30x slower. ``border``: "constant" (``fill``), "reflect" (mirror without
    repeating the edge pixel) or "replicate". Values are not clipped.
    """
    import cv2

    img = np.ascontiguousarray(image, dtype=np.float32)
    w, h = int(dsize[0]), int(dsize[1])
    nch = 1 if img.ndim == 2 else img.shape[2]
    fills = np.broadcast_to(np.asarray(fill, dtype=np.float64).reshape(-1), (nch,)) if border == "constant" else None
    if interpolation == "spline":
        from scipy.ndimage import map_coordinates

        inv = invert_affine(affine)
        u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
        coords = np.stack([inv[1, 0] * u + inv[1, 1] * v + inv[1, 2], inv[0, 0] * u + inv[0, 1] * v + inv[0, 2]])
        mode = {"constant": "grid-constant", "reflect": "mirror", "replicate": "nearest"}[border]
        chans = img[:, :, None] if img.ndim == 2 else img
        out = np.empty((h, w, nch), np.float32)
        for c in range(nch):
            cval = float(fills[c]) if fills is not None else 0.0
            out[:, :, c] = map_coordinates(chans[:, :, c], coords, order=3, mode=mode, cval=cval, output=np.float32)
        return out[:, :, 0] if img.ndim == 2 else out
    flags = {"linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC, "lanczos": cv2.INTER_LANCZOS4}.get(interpolation)
    if flags is None:
        raise InputError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}")
    if border == "constant":
        bmode, bval = cv2.BORDER_CONSTANT, tuple(float(f) for f in fills[:4])
    elif border == "reflect":
        bmode, bval = cv2.BORDER_REFLECT_101, 0.0
    elif border == "replicate":
        bmode, bval = cv2.BORDER_REPLICATE, 0.0
    else:
        raise InputError(f"unknown border mode {border!r}")
    return cv2.warpAffine(img, np.asarray(affine, np.float64), (w, h), flags=flags, borderMode=bmode, borderValue=bval)


# --------------------------------------------------------------------------------------------------
# template and similarity estimation


def inside_photo(aligned: AlignedFace, photo_shape: tuple[int, ...]) -> np.ndarray:
    """(S, S) bool: the pixels of an aligned crop whose centres map inside the photo (the rest is padding)."""
    s = int(aligned.size)
    ys, xs = np.mgrid[0:s, 0:s].astype(np.float64)
    inv = np.asarray(aligned.inverse, np.float64)
    px = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
    py = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
    h, w = photo_shape[:2]
    return (px >= -0.5) & (px <= w - 0.5) & (py >= -0.5) & (py <= h - 0.5)


def template(size: int = 512) -> np.ndarray:
    """The FFHQ 5-point template for an ``size`` x ``size`` crop, (5, 2) float64 pixel-index coords.

    Scaled about pixel *edges* ((p + 0.5) * size / 512 - 0.5), so a crop aligned at 128 equals the
    512 crop downscaled by an area/Lanczos resize (which maps pixel centres the same way).
    """
    if int(size) != size or size < 8:
        raise InputError(f"crop size must be an integer >= 8, got {size}")
    return (FFHQ_TEMPLATE_512 + 0.5) * (float(size) / 512.0) - 0.5


def _umeyama(src: np.ndarray, dst: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted least-squares similarity (rotation, uniform scale, translation; no reflection)."""
    w = w / w.sum()
    mu_s = w @ src
    mu_d = w @ dst
    s0 = src - mu_s
    d0 = dst - mu_d
    cov = (d0 * w[:, None]).T @ s0  # (2, 2) = sum w d s^T
    var_s = float(w @ (s0 * s0).sum(1))
    if var_s <= 1e-24:
        raise InputError("landmarks are degenerate (all points coincide)")
    u, d, vt = np.linalg.svd(cov)
    sgn = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sgn[-1] = -1.0
    rot = u @ np.diag(sgn) @ vt
    scale = float((d * sgn).sum() / var_s)
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def _residuals(m: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    return np.linalg.norm(transform_points(src, m) - dst, axis=1)


def estimate_similarity(
    src: np.ndarray,
    dst: np.ndarray,
    robust: bool = True,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Similarity transform (2, 3) with ``dst ≈ M @ [x, y, 1]``, fitted to (N, 2) point pairs.

    Least squares is the closed-form Umeyama solution (reflections excluded). With ``robust=True``
    and N >= 4 the fit is made resistant to one bad point without random sampling: start from the
    best of the full fit and the N leave-one-out fits (least trimmed squares over N-1 points), then
    iteratively reweight with Tukey's biweight (scale = 1.4826 * median residual, floored at 1% of
    the spread of ``dst`` so exact/near-exact data keep all points). Exact correspondences are
    recovered exactly either way.
    """
    src = _as_points(src, "src points")
    dst = _as_points(dst, "dst points")
    if src.shape != dst.shape:
        raise InputError(f"src and dst must have the same shape, got {src.shape} and {dst.shape}")
    n = src.shape[0]
    if n < 2:
        raise InputError("need at least 2 point pairs to estimate a similarity")
    w0 = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64).reshape(n)
    if np.any(w0 < 0) or w0.sum() <= 0:
        raise InputError("weights must be non-negative and not all zero")
    m = _umeyama(src, dst, w0)
    if not robust or n < 4:
        return m

    spread = float(np.sqrt(((dst - dst.mean(0)) ** 2).sum(1).mean()))
    floor = max(1e-2 * spread, 1e-9)
    k = n - 1  # trimmed count: tolerate one bad point

    def trimmed_cost(mm: np.ndarray) -> float:
        r = np.sort(_residuals(mm, src, dst) ** 2 * w0)
        return float(r[:k].sum())

    candidates = [m]
    for i in range(n):
        keep = np.ones(n, bool)
        keep[i] = False
        if np.count_nonzero(w0[keep]) >= 2:
            try:
                candidates.append(_umeyama(src[keep], dst[keep], w0[keep]))
            except InputError:
                pass
    m = min(candidates, key=trimmed_cost)

    for _ in range(30):
        r = _residuals(m, src, dst)
        sigma = max(1.4826 * float(np.median(r)), floor)
        c = 4.685 * sigma
        w = np.where(r < c, (1.0 - (r / c) ** 2) ** 2, 0.0) * w0
        if np.count_nonzero(w) < 3:
            break
        m_new = _umeyama(src, dst, w)
        done = np.abs(m_new - m).max() < 1e-12 * max(1.0, np.abs(m).max())
        m = m_new
        if done:
            break
    return m


# --------------------------------------------------------------------------------------------------
# FFHQ-style blurred padding (shared by align_face(border="ffhq") and ffhq_align_68)


def ffhq_pad(image: np.ndarray, pad: Sequence[int], qsize: float) -> np.ndarray:
    """Pad (H, W, C) by (left, top, right, bottom) pixels the way the FFHQ dataset tool does.

    Reflect-pad, blur with sigma = 0.02 * qsize (qsize = side of the crop square in these pixels)
    fading in towards the outside (and up to pad/3 into the image), then blend towards the median
    colour proportionally to the distance into the padding.
    """
    from scipy.ndimage import gaussian_filter

    left, top, right, bottom = (int(v) for v in pad)
    img = np.pad(image.astype(np.float32), ((top, bottom), (left, right), (0, 0)), mode="reflect")
    h, w = img.shape[:2]
    y = np.arange(h, dtype=np.float32)[:, None]
    x = np.arange(w, dtype=np.float32)[None, :]

    def ratio(num: np.ndarray, den: int) -> np.ndarray:
        # a side without padding never contributes (num / 0 = +inf in the recipe)
        return num / den if den > 0 else np.full_like(num, np.inf)

    mx = 1.0 - np.minimum(ratio(x, left), ratio(w - 1 - x, right))
    my = 1.0 - np.minimum(ratio(y, top), ratio(h - 1 - y, bottom))
    mask = np.maximum(mx, my)[:, :, None]
    blur = float(qsize) * 0.02
    if blur > 0:
        blurred = gaussian_filter(img, [blur, blur, 0])
        img += (blurred - img) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
    img += (np.median(img, axis=(0, 1)) - img) * np.clip(mask, 0.0, 1.0)
    return img


# --------------------------------------------------------------------------------------------------
# 5-point alignment


def _footprint(inverse: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    corners = np.array([[-0.5, -0.5], [size - 0.5, -0.5], [size - 0.5, size - 0.5], [-0.5, size - 0.5]])
    pts = transform_points(corners, inverse)
    return pts.min(0), pts.max(0)


def _roi(image: np.ndarray, inverse: np.ndarray, size: int, margin: int) -> tuple[int, int, int, int]:
    """Bounding box (x0, y0, x1, y1) of the pixels a crop reads, grown by ``margin``, clipped to the image."""
    lo, hi = _footprint(inverse, size)
    h, w = image.shape[:2]
    x0 = int(np.clip(np.floor(lo[0]) - margin, 0, w))
    y0 = int(np.clip(np.floor(lo[1]) - margin, 0, h))
    x1 = int(np.clip(np.ceil(hi[0]) + margin + 1, 0, w))
    y1 = int(np.clip(np.ceil(hi[1]) + margin + 1, 0, h))
    if x1 - x0 < 2 or y1 - y0 < 2:
        raise InputError("the face lies outside the image")
    return x0, y0, x1, y1


def _shifted(affine: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """Affine acting on an image whose pixel (0, 0) is pixel (dx, dy) of the original."""
    return (to_homogeneous(affine) @ to_homogeneous([[1, 0, dx], [0, 1, dy]]))[:2]


def align_face(
    image: np.ndarray,
    landmarks5: np.ndarray,
    size: int = 512,
    border: str = "constant",
    scale: float = 1.0,
    *,
    interpolation: str = "cubic",
    antialias: bool = True,
    fill: Sequence[float] = FACEXLIB_FILL,
    robust: bool = True,
) -> AlignedFace:
    """Warp the face onto the FFHQ 5-point template scaled to ``size``.

    Args:
        image: (H, W, 3) float32 RGB in [0, 1] (uint8 accepted).
        landmarks5: (5, 2) [left eye, right eye, nose, left mouth, right mouth] in image pixels;
            (68, 2) dlib points are converted with :func:`landmarks68_to_5`.
        size: crop side in pixels (128, 256, 512, 1024, ...).
        border: outside the photo: "constant" (``fill`` colour, facexlib's gray by default),
            "reflect" (mirror without repeating the edge pixel) or "ffhq" (reflect + growing blur +
            blend to the median colour, as in the FFHQ dataset tool).
        scale: face size relative to the template, about the crop centre (< 1 shows more context).
        interpolation: "cubic" (default), "linear", "lanczos" or "spline" (see :func:`warp_affine`).
        antialias: low-pass the photo (:func:`lowpass`) when the face is downscaled into the crop.
        robust: robust similarity estimate (see :func:`estimate_similarity`).

    Returns:
        :class:`AlignedFace` with ``crop[v, u] ≈ image at inverse @ [u, v, 1]``.
    """
    img = _as_float_image(image)
    lm = _as_points(landmarks5)
    if lm.shape[0] == 68:
        lm = landmarks68_to_5(lm)
    if lm.shape[0] != 5:
        raise InputError(f"align_face needs 5 (or 68) landmarks, got {lm.shape[0]}")
    if border not in BORDER_MODES:
        raise InputError(f"border must be one of {', '.join(BORDER_MODES)}, got {border!r}")
    if not (scale > 0 and np.isfinite(scale)):
        raise InputError(f"scale must be a positive number, got {scale}")
    if int(size) != size:
        raise InputError(f"crop size must be an integer, got {size}")
    size = int(size)
    tmpl = template(size)
    centre = (size - 1) / 2.0
    tmpl = centre + float(scale) * (tmpl - centre)
    affine = estimate_similarity(lm, tmpl, robust=robust)
    inverse = invert_affine(affine)

    shrink = 1.0 / affine_scale(affine)
    aa = shrink if antialias else 1.0
    # only the part of the photo the crop reads is filtered / padded (photos can be huge)
    margin = _lowpass_margin(aa)
    if border == "ffhq":
        lo, hi = _footprint(inverse, size)
        h, w = img.shape[:2]
        qsize = size * shrink
        margin = max(margin, int(np.rint(qsize * 0.1)))
        x0, y0 = int(np.floor(lo[0])) - margin, int(np.floor(lo[1])) - margin
        x1, y1 = int(np.ceil(hi[0])) + margin + 1, int(np.ceil(hi[1])) + margin + 1
        cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if cx1 - cx0 < 2 or cy1 - cy0 < 2:
            raise InputError("the face lies outside the image")
        pad = (cx0 - x0, cy0 - y0, x1 - cx1, y1 - cy1)
        src = lowpass(img[cy0:cy1, cx0:cx1], aa)
        if max(pad) > 0:
            # pad at least 30% of the crop so the fade to the median colour is gradual (as the recipe)
            pad = tuple(max(p, int(np.rint(qsize * 0.3))) if p > 0 else 0 for p in pad)
            src = ffhq_pad(src, pad, qsize)
        warp_m = _shifted(affine, cx0 - pad[0], cy0 - pad[1])
    else:
        x0, y0, x1, y1 = _roi(img, inverse, size, margin)
        lo, hi = _footprint(inverse, size)
        if border == "reflect" and (lo.min() < 0 or hi[0] > img.shape[1] - 1 or hi[1] > img.shape[0] - 1):
            # mirrored content may come from anywhere in the photo
            x0, y0, x1, y1 = 0, 0, img.shape[1], img.shape[0]
        src = lowpass(img[y0:y1, x0:x1], aa)
        warp_m = _shifted(affine, x0, y0)

    crop = warp_affine(src, warp_m, (size, size), interpolation, "replicate" if border == "ffhq" else border, fill)
    # cubic / Lanczos overshoot at edges; keep the [0, 1] contract
    crop = np.clip(crop, 0.0, 1.0)
    return AlignedFace(
        crop=crop.astype(np.float32),
        affine=affine,
        inverse=inverse,
        landmarks5=transform_points(lm, affine),
        size=size,
    )


# --------------------------------------------------------------------------------------------------
# original FFHQ crop recipe (NVlabs/ffhq-dataset, recreate_aligned_images)


def ffhq_quad(landmarks: np.ndarray, rotate_level: bool = True) -> tuple[np.ndarray, float]:
    """The FFHQ oriented crop square from 68 (or 5) landmarks.

    Returns ``(quad, qsize)``: quad (4, 2) corners [top-left, bottom-left, bottom-right, top-right]
    in image pixel coords, qsize its side length. Eye centres are the means of the 6 eye points (or
    the 5-point eyes), mouth corners points 48/54 (or the 5-point mouth corners). The square has
    side 2 * max(2 |eye_to_eye|, 1.8 |eye_to_mouth|) and is centred 0.1 * eye_to_mouth below the
    eye midpoint; with ``rotate_level`` its x axis is eye_to_eye - rot90(eye_to_mouth), else level.
    """
    lm = _as_points(landmarks)
    if lm.shape[0] == 68:
        eye_left, eye_right = lm[36:42].mean(0), lm[42:48].mean(0)
        mouth_left, mouth_right = lm[48], lm[54]
    elif lm.shape[0] == 5:
        eye_left, eye_right, mouth_left, mouth_right = lm[0], lm[1], lm[3], lm[4]
    else:
        raise InputError(f"ffhq_align_68 needs 68 (or 5) landmarks, got {lm.shape[0]}")
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    mouth_avg = (mouth_left + mouth_right) * 0.5
    eye_to_mouth = mouth_avg - eye_avg
    if rotate_level:
        x = eye_to_eye - np.array([-eye_to_mouth[1], eye_to_mouth[0]])
        norm = np.hypot(*x)
        if norm < 1e-12:
            raise InputError("landmarks are degenerate (eyes and mouth coincide)")
        x = x / norm
    else:
        x = np.array([1.0, 0.0])
    x = x * max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    if np.hypot(*x) < 1e-9:
        raise InputError("landmarks are degenerate (eyes and mouth coincide)")
    y = np.array([-x[1], x[0]])
    c = eye_avg + eye_to_mouth * 0.1
    quad = np.stack([c - x - y, c - x + y, c + x + y, c + x - y])
    return quad, float(np.hypot(*x) * 2.0)


def _resize_float(image: np.ndarray, width: int, height: int, method: str = "lanczos") -> np.ndarray:
    """Resize (H, W) or (H, W, C) float32 per channel with PIL (pixel-centre aligned, antialiased)."""
    from PIL import Image

    filters = {
        "lanczos": Image.Resampling.LANCZOS,
        "bicubic": Image.Resampling.BICUBIC,
        "bilinear": Image.Resampling.BILINEAR,
        "nearest": Image.Resampling.NEAREST,
        "box": Image.Resampling.BOX,
    }
    flt = filters[method]
    arr = np.asarray(image, dtype=np.float32)
    planes = arr[:, :, None] if arr.ndim == 2 else arr
    # each channel straight into its plane of a new, writable output: no stacked or converted full-size copies
    # (a 2x background of a 12 MP photo is 560 MB per float copy)
    out = np.empty((height, width, planes.shape[2]), np.float32)
    for c in range(planes.shape[2]):
        out[:, :, c] = Image.fromarray(np.ascontiguousarray(planes[:, :, c]), mode="F").resize((width, height), flt)
    return out[:, :, 0] if arr.ndim == 2 else out


def ffhq_align_68(
    image: np.ndarray,
    landmarks68: np.ndarray,
    size: int = 1024,
    *,
    transform_size: int | None = None,
    enable_padding: bool = True,
    rotate_level: bool = True,
) -> AlignedFace:
    """Crop a face the way the FFHQ dataset was made (``recreate_aligned_images`` of NVlabs/ffhq-dataset).

    Steps: oriented square from eyes and mouth (:func:`ffhq_quad`); if the square is more than 4x
    the output, pre-shrink the photo by the integer factor floor(qsize / size / 2) (Lanczos); crop
    with a 10% border; if the square leaves the photo, pad by >= 30% of it with :func:`ffhq_pad`;
    warp the square to ``transform_size`` (bilinear, the recipe's PIL QUAD/BILINEAR) and resize to
    ``size`` with Lanczos (the recipe's ANTIALIAS).

    Differences from the recipe, all sub-pixel: the photo stays float (no uint8 rounding after
    padding), and the pre-shrink maps coordinates exactly (pixel centres) instead of ``quad /= shrink``,
    so the returned affine describes the crop exactly. ``transform_size`` defaults to 4 * size
    (the recipe: 4096 for 1024).

    Returns:
        :class:`AlignedFace`; ``affine`` maps original-photo pixel coords to crop coords.
    """
    img = _as_float_image(image)
    lm = _as_points(landmarks68)
    if int(size) != size:
        raise InputError(f"crop size must be an integer >= 8, got {size}")
    size = int(size)
    if size < 8:
        raise InputError(f"crop size must be an integer >= 8, got {size}")
    t_size = 4 * size if transform_size is None else int(transform_size)
    t_size = max(t_size, size)
    quad, qsize = ffhq_quad(lm, rotate_level=rotate_level)
    lm5 = landmarks68_to_5(lm) if lm.shape[0] == 68 else lm.copy()

    # to_work: original pixel coords -> working-image pixel coords (3x3)
    to_work = np.eye(3)
    work = img
    shrink = int(np.floor(qsize / size * 0.5))
    if shrink > 1:
        h, w = img.shape[:2]
        rw, rh = max(int(np.rint(w / shrink)), 1), max(int(np.rint(h / shrink)), 1)
        work = _resize_float(img, rw, rh, "lanczos")
        sx, sy = rw / w, rh / h
        to_work = np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1.0]])
        qsize = qsize / shrink
    quad_w = transform_points(quad, to_work[:2])

    border = max(int(np.rint(qsize * 0.1)), 3)
    h, w = work.shape[:2]
    crop = (
        int(np.floor(quad_w[:, 0].min())),
        int(np.floor(quad_w[:, 1].min())),
        int(np.ceil(quad_w[:, 0].max())),
        int(np.ceil(quad_w[:, 1].max())),
    )
    crop = (max(crop[0] - border, 0), max(crop[1] - border, 0), min(crop[2] + border, w), min(crop[3] + border, h))
    if crop[2] - crop[0] < 2 or crop[3] - crop[1] < 2:
        raise InputError("the face lies outside the image")
    if crop[2] - crop[0] < w or crop[3] - crop[1] < h:
        work = work[crop[1] : crop[3], crop[0] : crop[2]]
        quad_w = quad_w - np.array(crop[:2], dtype=np.float64)
        to_work = np.array([[1, 0, -crop[0]], [0, 1, -crop[1]], [0, 0, 1.0]]) @ to_work

    h, w = work.shape[:2]
    pad = (
        int(np.floor(quad_w[:, 0].min())),
        int(np.floor(quad_w[:, 1].min())),
        int(np.ceil(quad_w[:, 0].max())),
        int(np.ceil(quad_w[:, 1].max())),
    )
    pad = (max(-pad[0] + border, 0), max(-pad[1] + border, 0), max(pad[2] - w + border, 0), max(pad[3] - h + border, 0))
    if enable_padding and max(pad) > border - 4:
        p = int(np.rint(qsize * 0.3))
        pad = tuple(max(v, p) for v in pad)
        work = ffhq_pad(work, pad, qsize)
        quad_w = quad_w + np.array(pad[:2], dtype=np.float64)
        to_work = np.array([[1, 0, pad[0]], [0, 1, pad[1]], [0, 0, 1.0]]) @ to_work

    # transform-size pixel (t) -> working pixel: q0 + (q3 - q0) (t_u + 0.5) / T + (q1 - q0) (t_v + 0.5) / T
    q0, q1, q3 = quad_w[0], quad_w[1], quad_w[3]
    ex, ey = (q3 - q0) / t_size, (q1 - q0) / t_size
    t_to_work = np.array([[ex[0], ey[0], q0[0] + 0.5 * (ex[0] + ey[0])], [ex[1], ey[1], q0[1] + 0.5 * (ex[1] + ey[1])]])
    out = np.clip(warp_affine(work, invert_affine(t_to_work), (t_size, t_size), "linear", "constant", 0.0), 0.0, 1.0)
    # crop pixel u -> transform pixel t = (u + 0.5) * T / S - 0.5 (PIL resize maps pixel centres so)
    r = t_size / size
    crop_to_t = np.array([[r, 0, 0.5 * r - 0.5], [0, r, 0.5 * r - 0.5], [0, 0, 1.0]])
    if t_size != size:
        out = np.clip(_resize_float(out, size, size, "lanczos"), 0.0, 1.0)

    inverse = (np.linalg.inv(to_work) @ to_homogeneous(t_to_work) @ crop_to_t)[:2]
    affine = invert_affine(inverse)
    return AlignedFace(
        crop=out.astype(np.float32),
        affine=affine,
        inverse=inverse,
        landmarks5=transform_points(lm5, affine),
        size=size,
    )
