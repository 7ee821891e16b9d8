"""The occlusion guard: where the restored face changed *what is where* (a hand, a microphone, sunglasses, a scarf,
a hair strand turned into skin or into a brown blob), paste the photo's own pixels instead.

A restorer should change detail (sharper edges, less noise, fewer JPEG blocks), not the colour of large areas:
blur, downsampling, noise and compression all leave the low spatial frequencies of a face almost as they were. So
the guard compares the restored crop with the input crop *after a low-pass filter* and keeps the input where they
disagree:

1. both crops (S, S, 3) are area-resized to ``WORK_SIZE`` (128 px) and blurred with a Gaussian of ``sigma`` times
   the crop side (default 1/32: 16 px at 512, 4 px at 128, about the width of an eye), which removes everything a
   deblurring, denoising or JPEG-cleaning restorer legitimately changes;
2. chroma: per pixel, the difference of the natural logs of the low-passed sRGB channels (``ln(x + 0.06)``:
   relative colour, so a dark grey microphone turned dark brown counts as much as a light object recoloured; the
   0.06 damps near-black pixels), minus its channel mean (what is left is a change of hue / saturation);
   lightness: the difference of ``ln(mean(x) + 0.15)`` (a larger offset: clipped noise lifts near-black pixels of
   a noisy photo, which a denoiser rightly puts back). From both, their median over an ellipse of the FFHQ
   template (face, some hair and neck) is subtracted: a global change of white balance, exposure or tint is the
   business of colour matching, not an occlusion;
3. the **distance** is ``sqrt(|chroma|^2 + 3 (LUMA_WEIGHT * lightness)^2)`` with ``LUMA_WEIGHT`` = 1/2 (hue and
   saturation changes count twice as much as lightness changes). Units: log-ratio; 0.1 is roughly a 10% change of
   one colour channel relative to the others. Gray input crops (a black-and-white photo stored as RGB) compare
   lightness only;
4. the mask is a smoothstep from 0 at ``threshold`` (0.20) to 1 at ``threshold + ramp`` (0.30), dilated by
   ``grow`` (2% of the crop side) and feathered by a Gaussian of ``feather`` (1.5%), then resized to the crop.

The pipeline (:mod:`facerestore.pipeline`) multiplies each face's paste-back mask by ``1 - mask``: the occluded
pixels keep the photo's own (upscaled) pixels. A restorer that agrees with the input at low frequencies gets a mask
of exactly 0 and its output is pasted unchanged.

Defaults chosen on validation faces: ffhq256 ids ending in 0, the first 50 of them (00000-00540), each without and
with five synthetic occluders (those of benchmarks/occlusion_guard.py), degraded by ``realworld-gfpgan`` and
restored by the built-in ISPL; the benchmark reports the other 50 (00550-01090), held out from that choice. CIE Lab
ΔE (sigma 1/128 to 1/16 of the side), log-RGB and chromaticity distances were compared at the distance that 1% of
the face pixels of the occluder-free faces exceed: the chroma-weighted log-RGB at sigma 1/32 exceeded it on 12% of
microphone, 25% of sunglasses and 12% of patch pixels, Lab ΔE on 2-10% (hands and thin frames: ~0 for every
distance). ``threshold`` is the lowest (of 0.16, 0.18, 0.20) at which the guard fired (occluded share > 1%) on at
most 1 of the 50 occluder-free faces. Where it fires on such faces (hair, a scarf, sunglasses the restorer
recoloured), the input was closer to the clean face at low frequency than the restoration (low-pass ΔE 2-4
against 14-25 on those pixels).

Measured on the 50 held-out faces (benchmarks/results/occlusion_guard.md; default pipeline, so the quality gate
keeps some faces as they were), with the earlier CPU-trained ISPL weights: the guard fired on 11 of 100 occluded
faces (6 of 20 sunglasses, 3 of 20 microphones) and on 1 of 50 faces without occluders (1.9% of its face); inside
sunglasses +0.26 dB PSNR to the clean image (95% interval +0.08..+0.47), over all occluders +0.07 dB (+0.03..+0.13).
With the current default weights (``ispl-compact-256-gpu``) the restorer keeps every synthetic occluder's
low-frequency colour (it blurs or re-textures them, which this guard does not see) and the guard fires on none of
the 150 faces: it is a safety net for restorers that repaint occluders.

What it cannot see: an occluder the restorer repaints in the same colour (a skin-coloured hand turned into a
cheek, thin spectacle frames erased: their low-pass colour barely changes), and fine structure lost inside an
occluder the restorer kept.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "FACE_ELLIPSE",
    "FEATHER",
    "GROW",
    "LUMA_WEIGHT",
    "RAMP",
    "SIGMA",
    "THRESHOLD",
    "WORK_SIZE",
    "colour_distance",
    "face_ellipse",
    "keep_background",
    "lowpass",
    "occluded_share",
    "occlusion_mask",
]

WORK_SIZE = 128  # px: both crops are compared at this size (the built-in ISPL's own)
SIGMA = 1.0 / 32  # Gaussian low-pass, fraction of the crop side
EPS = 0.06  # offset of the log of each channel (sRGB units, [0, 1] scale): chroma
EPS_LIGHT = 0.15  # offset of the log of the channel mean: lightness
LUMA_WEIGHT = 0.5  # weight of the gray (lightness) component of the log-RGB difference
THRESHOLD = 0.20  # distance (log-ratio units) where the mask starts to rise
RAMP = 0.10  # the mask reaches 1 at THRESHOLD + RAMP
GROW = 0.02  # dilation radius, fraction of the crop side
FEATHER = 0.015  # Gaussian feather, fraction of the crop side
# the face ellipse of the FFHQ template (centre (0.5, 0.56) S, semi-axes (0.22, 0.27) S: brows to chin, cheek to
# cheek; the skin region of faces.paste.skin_weights): where occluded_share is measured
FACE_ELLIPSE = (0.5, 0.56, 0.22, 0.27)
# the region whose median difference is the global colour change (a larger ellipse: face, some hair and neck)
_NORM_ELLIPSE = (0.5, 0.56, 0.30, 0.36)


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    import cv2

    img = np.ascontiguousarray(img, dtype=np.float32)
    if img.shape[0] == size and img.shape[1] == size:
        return img.copy()
    interp = cv2.INTER_AREA if size < img.shape[0] else cv2.INTER_LINEAR
    return cv2.resize(img, (size, size), interpolation=interp)


def _blur(x: np.ndarray, sigma_px: float) -> np.ndarray:
    import cv2

    if sigma_px <= 0:
        return x
    return cv2.GaussianBlur(x, (0, 0), sigma_px, borderType=cv2.BORDER_REFLECT)


def _check_crop(x: np.ndarray, name: str) -> np.ndarray:
    from facerestore.errors import InputError

    a = np.asarray(x)
    if a.ndim != 3 or a.shape[2] != 3 or a.shape[0] != a.shape[1] or a.shape[0] < 2:
        raise InputError(f"{name} must be a square (S, S, 3) crop, got shape {a.shape}")
    return a.astype(np.float32, copy=False)


def face_ellipse(size: int, ellipse: tuple[float, float, float, float] = FACE_ELLIPSE) -> np.ndarray:
    """(size, size) bool: the pixels (centres) inside ``ellipse`` = (cx, cy, ax, ay) in fractions of the side."""
    cx, cy, ax, ay = ellipse
    yy, xx = (np.mgrid[0:size, 0:size] + 0.5) / size
    return ((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2 <= 1.0


def lowpass(crop: np.ndarray, sigma: float = SIGMA, work: int = WORK_SIZE) -> np.ndarray:
    """(work, work, 3) float32: ``crop`` ((S, S, 3) float in [0, 1]) area-resized to ``work`` px and blurred by a
    Gaussian of ``sigma`` times the side (``sigma`` a fraction of the crop side, >= 0)."""
    small = _resize(np.clip(_check_crop(crop, "crop"), 0.0, 1.0), work)
    return _blur(small, sigma * work)


def colour_distance(input_crop: np.ndarray, restored_crop: np.ndarray, *, sigma: float = SIGMA,
                    work: int = WORK_SIZE, luma_weight: float = LUMA_WEIGHT, gray: bool | None = None,
                    valid: np.ndarray | None = None) -> np.ndarray:
    """(work, work) float32 >= 0: the low-frequency colour distance between two aligned crops (module doc, steps
    1-3; log-ratio units).

    Args:
        input_crop, restored_crop: (S, S, 3) float in [0, 1]; the restored crop may have another side (resized).
        sigma: low-pass Gaussian, fraction of the crop side.
        work: the side (px) the comparison runs at.
        luma_weight: weight of the lightness (gray) component; chroma has weight 1.
        gray: compare lightness only; None = when the input's channels are equal (faces.paste.is_gray).
        valid: (S, S) bool, the input crop's pixels inside the photo (the rest is padding, left out of the
            global normalisation); None = all.
    """
    from facerestore.faces.paste import is_gray

    inp = _check_crop(input_crop, "input_crop")
    res = _check_crop(restored_crop, "restored_crop")
    if gray is None:
        gray = is_gray(inp)
    lo_in, lo_res = lowpass(inp, sigma, work), lowpass(res, sigma, work)
    region = face_ellipse(work, _NORM_ELLIPSE)
    if valid is not None:
        region &= _resize(np.asarray(valid, np.float32), work) > 0.5
    d = np.log(lo_res + EPS) - np.log(lo_in + EPS)
    dl = np.log(lo_res.mean(axis=2) + EPS_LIGHT) - np.log(lo_in.mean(axis=2) + EPS_LIGHT)
    if region.sum() >= 16:
        d = d - np.median(d[region], axis=0)
        dl = dl - np.median(dl[region])
    lum = dl
    chroma2 = 0.0 if gray else ((d - d.mean(axis=2, keepdims=True)) ** 2).sum(axis=2)
    return np.sqrt(chroma2 + 3.0 * (luma_weight * lum) ** 2).astype(np.float32)


def occlusion_mask(input_crop: np.ndarray, restored_crop: np.ndarray, *, threshold: float = THRESHOLD,
                   ramp: float = RAMP, sigma: float = SIGMA, grow: float = GROW, feather: float = FEATHER,
                   work: int = WORK_SIZE, gray: bool | None = None,
                   valid: np.ndarray | None = None) -> np.ndarray:
    """(S, S) float32 in [0, 1], S the input crop's side: 1 where the photo's own pixels should be kept (the
    restored crop disagrees with the input at low frequencies), 0 where the restoration may be pasted.

    ``threshold`` / ``ramp``: :func:`colour_distance` where the mask leaves 0 / how much more it takes to reach 1
    (log-ratio units, ramp > 0); ``grow``: dilation radius and ``feather``: Gaussian sigma, both fractions of the
    crop side (>= 0); ``valid``: (S, S) bool, pixels inside the photo (the mask is 0 on padding). Other arguments:
    :func:`colour_distance`. Monotone: a larger distance anywhere never lowers the mask."""
    import cv2

    from facerestore.errors import InputError

    if not (ramp > 0 and threshold >= 0 and grow >= 0 and feather >= 0 and sigma >= 0):
        raise InputError(f"occlusion guard: need ramp > 0 and threshold, grow, feather, sigma >= 0, got "
                         f"{threshold=}, {ramp=}, {grow=}, {feather=}, {sigma=}")
    inp = _check_crop(input_crop, "input_crop")
    dist = colour_distance(inp, restored_crop, sigma=sigma, work=work, gray=gray, valid=valid)
    t = np.clip((dist - threshold) / ramp, 0.0, 1.0)
    m = (t * t * (3.0 - 2.0 * t)).astype(np.float32)
    if not m.any():
        return np.zeros(inp.shape[:2], np.float32)
    r = int(np.ceil(grow * work - 1e-9))
    if r > 0:
        m = cv2.dilate(m, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    m = _blur(m, feather * work)
    out = np.clip(_resize(m, inp.shape[0]), 0.0, 1.0)
    if valid is not None:
        out = out * np.asarray(valid, bool)
    return out.astype(np.float32)


def occluded_share(mask: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Mean of an (S, S) occlusion mask over the template's face ellipse (:data:`FACE_ELLIPSE`), within ``valid``
    (pixels inside the photo) when given: the share of the face kept as it was, in [0, 1]."""
    m = np.asarray(mask, np.float64)
    region = face_ellipse(m.shape[0])
    if valid is not None:
        region &= np.asarray(valid, bool)
    if not region.any():
        return 0.0
    return float(np.clip(m[region].mean(), 0.0, 1.0))


def keep_background(image: np.ndarray, background: np.ndarray, mask: np.ndarray, inverse: np.ndarray,
                    input_shape: tuple[int, ...]) -> np.ndarray:
    """Put the background back where a face's occlusion mask is on, in place: ``image = m * background +
    (1 - m) * image`` with ``m`` the crop-space ``mask`` warped into the output (for one face, or to show a mask in
    the photo; the pipeline passes the masks to :func:`facerestore.faces.paste.paste_faces` as ``keep=`` instead, so
    that one face's mask never takes a neighbouring face's restoration away).

    Pasting a face with mask ``p`` and then calling this equals pasting it with ``p * (1 - m)`` (the paste-back
    blends ``p * face + (1 - p) * background``).

    Args:
        image: (H', W', 3) float32, the photo with the faces pasted (modified in place and returned).
        background: (H', W', 3) float32, the same photo before any face was pasted.
        mask: (S, S) float in [0, 1], the face's :func:`occlusion_mask` in its aligned crop.
        inverse: (2, 3) crop pixel -> input photo pixel (``AlignedFace.inverse``).
        input_shape: (H, W, ...) of the input photo (output pixel centres map to input pixel centres as in
            ``faces.paste``: ``x_out + 0.5 = (W' / W) (x_in + 0.5)``).
    """
    from facerestore.faces.align import to_homogeneous, warp_affine
    from facerestore.faces.paste import covered_rect

    m = np.asarray(mask, np.float32)
    if not m.any():
        return image
    h, w = input_shape[:2]
    oh, ow = image.shape[:2]
    sx, sy = ow / w, oh / h
    to_out = np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1.0]])
    a = (to_out @ to_homogeneous(np.asarray(inverse, np.float64)))[:2]
    x0, y0, x1, y1 = covered_rect(m.shape[0], a, ow, oh)
    if x1 <= x0 or y1 <= y0:
        return image
    a_roi = a.copy()
    a_roi[:, 2] -= (x0, y0)
    mo = np.clip(warp_affine(m, a_roi, (x1 - x0, y1 - y0), "linear", "constant", 0.0), 0.0, 1.0)[:, :, None]
    region = image[y0:y1, x0:x1]
    image[y0:y1, x0:x1] = region + mo * (background[y0:y1, x0:x1] - region)
    return image
