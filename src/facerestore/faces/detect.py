"""Face detection and landmarks: dlib HOG / MMOD-CNN detectors, 68- and 5-point predictors, a static
detector registry (zoo-backed detectors such as YuNet plug in through it).

Conventions (see docs/architecture.md): images are (H, W, 3) RGB numpy arrays, float in [0, 1] or
uint8; landmarks are (N, 2) float64 arrays of (x, y) pixel coordinates with pixel centres at integers
(OpenCV's and dlib's convention); boxes are (x0, y0, x1, y1) with x1, y1 exclusive and may extend past
the image border (the detector's estimate of the whole face).

The 5 points are [eye, eye, nose tip, mouth corner, mouth corner], the first of each pair being the
subject's right (the smaller x in an upright, unmirrored face), the order of the FFHQ template.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from facerestore.errors import InputError

# --- landmark index sets of the iBUG 300-W 68-point scheme (dlib) ------------------------------------------
JAW = tuple(range(0, 17))
BROWS = tuple(range(17, 27))
NOSE = tuple(range(27, 36))
RIGHT_EYE = tuple(range(36, 42))  # subject's right eye: the smaller x in an upright face
LEFT_EYE = tuple(range(42, 48))
EYES = RIGHT_EYE + LEFT_EYE
MOUTH_OUTER = tuple(range(48, 60))
MOUTH_INNER = tuple(range(60, 68))
MOUTH = MOUTH_OUTER + MOUTH_INNER

# FFHQ 5-point template at 512 px (facexlib's, used by GFPGAN/CodeFormer); copied from the contract so that
# this module does not depend on faces.align.
_FFHQ_512 = np.array(
    [[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
     [201.26117, 371.41043], [313.08905, 371.15118]]
)

# Where dlib's HOG detector puts its box, in the frame of the 512-px FFHQ template: mean over 200 FFHQ
# faces (HOG, upsample 1) after mapping each face's 5 points onto the template by a least-squares
# similarity. Used to give the landmark predictors a box like the one they were trained with when a face
# is known by its 5 points (aligned crops, other detectors). Spread (std) is about 15 px.
_HOG_BOX_512 = np.array([[99.43, 153.65], [402.67, 453.79]])

# Mean positions of dlib's 5 points (outer/inner corner of the subject's left eye, outer/inner corner of the
# right eye, base of the nose) and of our 5 points in the same template frame, over 397 FFHQ and UTKFace
# faces. They estimate the nose tip and mouth corners when only dlib's 5-point predictor runs: mean error
# 0.13-0.17 of the inter-ocular distance for those three points, 0.04-0.05 for the eyes.
_DLIB5_MEAN = np.array([[342.36, 244.0], [292.96, 246.75], [169.84, 244.52], [219.46, 247.01], [256.76, 336.82]])
_OURS5_MEAN = np.array([[194.56, 244.17], [317.9, 243.53], [256.56, 310.12], [200.24, 369.66], [313.61, 369.24]])


@dataclass
class FaceDetection:
    """One detected face.

    Attributes:
        box: (4,) float64 (x0, y0, x1, y1) in pixels, x1/y1 exclusive; may extend past the image.
        score: detector confidence (HOG: SVM margin, about -0.5..3; CNN: MMOD confidence, about 0..1.5;
            YuNet: probability): comparable only within one detector.
        landmarks5: (5, 2) float64 (x, y): eyes, nose tip, mouth corners (see module docstring).
        landmarks68: (68, 2) float64 iBUG 68 points, or None when the detector did not compute them.
        detector: name of the detector that found it.
    """

    box: np.ndarray
    score: float
    landmarks5: np.ndarray
    landmarks68: np.ndarray | None = None
    detector: str = ""

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    @property
    def center(self) -> np.ndarray:
        """(2,) box centre (x, y) in pixels, with the pixel-centre convention of the landmarks."""
        return np.array([(self.box[0] + self.box[2] - 1) / 2, (self.box[1] + self.box[3] - 1) / 2])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (lists of floats)."""
        return {
            "box": [float(v) for v in self.box],
            "score": float(self.score),
            "landmarks5": np.asarray(self.landmarks5, dtype=float).tolist(),
            "landmarks68": None if self.landmarks68 is None else np.asarray(self.landmarks68, float).tolist(),
            "detector": self.detector,
        }


@runtime_checkable
class Detector(Protocol):
    """A face detector: ``detect(image) -> list[FaceDetection]`` in deterministic order."""

    name: str

    def detect(self, image: np.ndarray) -> list[FaceDetection]: ...


# --- image and landmark helpers -------------------------------------------------------------------------------


def as_uint8_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB, C-contiguous, from uint8 or float [0, 1] (H, W), (H, W, 1|3|4) arrays.

    Floats are clipped and rounded half up (as facerestore.io.quantize); alpha is dropped; gray is
    replicated.
    """
    if not isinstance(image, np.ndarray):
        raise InputError(f"expected a numpy image array, got {type(image).__name__}")
    a = image
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4) or a.shape[0] < 1 or a.shape[1] < 1:
        raise InputError(f"expected an (H, W, 3) image, got shape {image.shape}")
    if a.shape[2] == 4:
        a = a[:, :, :3]
    if a.dtype != np.uint8:
        if not np.issubdtype(a.dtype, np.floating):
            raise InputError(f"expected a uint8 or float image, got dtype {a.dtype}")
        a = np.clip(np.floor(a.astype(np.float32) * 255.0 + 0.5), 0, 255).astype(np.uint8)
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return np.ascontiguousarray(a)


def landmarks_68_to_5(lm68: np.ndarray) -> np.ndarray:
    """(68, 2) iBUG landmarks -> (5, 2): eye centres (means of the 6 eye points), nose tip (30), mouth
    corners (48, 54), in the FFHQ template order."""
    p = np.asarray(lm68, dtype=np.float64)
    if p.shape != (68, 2):
        raise ValueError(f"expected (68, 2) landmarks, got {p.shape}")
    return np.stack([p[list(RIGHT_EYE)].mean(0), p[list(LEFT_EYE)].mean(0), p[30], p[48], p[54]])


def _similarity_lstsq(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """(2, 3) least-squares similarity (rotation, uniform scale, translation) mapping src onto dst."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    n = len(src)
    a = np.zeros((2 * n, 4))
    a[0::2] = np.c_[src[:, 0], -src[:, 1], np.ones(n), np.zeros(n)]
    a[1::2] = np.c_[src[:, 1], src[:, 0], np.zeros(n), np.ones(n)]
    s, r, tx, ty = np.linalg.lstsq(a, dst.reshape(-1), rcond=None)[0]
    return np.array([[s, -r, tx], [r, s, ty]])


def _apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


def face_box_from_landmarks5(landmarks5: np.ndarray) -> np.ndarray:
    """(4,) box (x0, y0, x1, y1) where dlib's HOG detector would put a face with these 5 points.

    Lets the landmark predictors and the dlib recogniser run on faces found by other means (aligned
    crops, other detectors) with boxes like those they were trained on.
    """
    m = _similarity_lstsq(_FFHQ_512, np.asarray(landmarks5, np.float64))
    corners = _apply(m, np.array([[_HOG_BOX_512[0, 0], _HOG_BOX_512[0, 1]], [_HOG_BOX_512[1, 0], _HOG_BOX_512[0, 1]],
                                  [_HOG_BOX_512[0, 0], _HOG_BOX_512[1, 1]], [_HOG_BOX_512[1, 0], _HOG_BOX_512[1, 1]]]))
    # the box of a rotated face: dlib boxes are axis-aligned squares, so take the rotated box's centre and size
    c = corners.mean(0)
    side = np.hypot(*(corners[1] - corners[0]))
    return np.array([c[0] - side / 2, c[1] - side / 2, c[0] + side / 2, c[1] + side / 2])


def aligned_face_box(size: int | tuple[int, int]) -> np.ndarray:
    """(4,) face box of a crop aligned with the FFHQ 5-point template (as faces.align.align_face makes)."""
    h, w = (size, size) if isinstance(size, int) else size
    return face_box_from_landmarks5(_FFHQ_512 * np.array([w / 512.0, h / 512.0]))


def _dlib_rect(box: np.ndarray) -> Any:
    from facerestore.faces.dlib_models import import_dlib

    dlib = import_dlib()
    x0, y0, x1, y1 = (round(float(v)) for v in box)
    return dlib.rectangle(x0, y0, max(x1 - 1, x0), max(y1 - 1, y0))


def _box_of_rect(r: Any) -> np.ndarray:
    return np.array([r.left(), r.top(), r.right() + 1, r.bottom() + 1], dtype=np.float64)


def predict_landmarks(image: np.ndarray, box: np.ndarray, points: int = 68) -> np.ndarray:
    """Run dlib's ``points``-point (68 or 5) predictor inside ``box``; returns (points, 2) float64.

    dlib's own 5-point layout is [outer, inner corner of the subject's left eye, outer, inner corner of
    the right eye, nose base] (not our 5-point order: see landmarks_from_dlib5).
    """
    from facerestore.faces.dlib_models import shape_predictor

    img = as_uint8_rgb(image)
    shape = shape_predictor(points)(img, _dlib_rect(box))
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)


# the 68 points of a 5-point detection are dropped when their 5 lie farther than this share of the box side from the
# detector's (mean distance)
LANDMARKS68_MAX_DISAGREEMENT = 0.1


def landmarks68_for(rgb: np.ndarray, det: FaceDetection) -> np.ndarray | None:
    """dlib's 68 points of a detection that has only 5, predicted in the HOG-like box of those 5 on an 8-bit copy of
    the region around it (not of the whole photo); None when they cannot be placed (a box outside the photo) or
    disagree with the detector's 5 points (by more than ``LANDMARKS68_MAX_DISAGREEMENT`` of the box side: dlib
    lost on a profile or an occluded face, where a square mask is safer than a wrong hull)."""
    five = np.asarray(det.landmarks5, np.float64)
    box = face_box_from_landmarks5(five)
    if not np.isfinite(box).all():
        return None
    side = float(max(box[2] - box[0], box[3] - box[1], 1.0))
    h, w = rgb.shape[:2]
    x0, y0 = int(max(0, np.floor(box[0] - side))), int(max(0, np.floor(box[1] - side)))
    x1, y1 = int(min(w, np.ceil(box[2] + side))), int(min(h, np.ceil(box[3] + side)))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    offset = np.array([x0, y0], np.float64)
    try:
        pts = predict_landmarks(as_uint8_rgb(rgb[y0:y1, x0:x1]), box - np.tile(offset, 2), 68) + offset
    except (InputError, ValueError):
        return None
    if float(np.linalg.norm(landmarks_68_to_5(pts) - five, axis=1).mean()) > LANDMARKS68_MAX_DISAGREEMENT * side:
        return None
    return pts


def landmarks_from_dlib5(dlib5: np.ndarray) -> np.ndarray:
    """Our (5, 2) points estimated from dlib's 5 points: eye centres from the corners, nose tip and mouth
    corners from a mean face fitted by a similarity (error about 0.15 inter-ocular distances)."""
    d = np.asarray(dlib5, np.float64)
    m = _similarity_lstsq(_DLIB5_MEAN, d)
    est = _apply(m, _OURS5_MEAN)
    est[0] = d[2:4].mean(0)  # subject's right eye: dlib points 2, 3
    est[1] = d[0:2].mean(0)
    return est


# --- dlib detectors -------------------------------------------------------------------------------------------


def _sort_key(d: FaceDetection) -> tuple[float, float, float]:
    return (-round(float(d.score), 9), float(d.box[0]), float(d.box[1]))


def sort_detections(dets: Sequence[FaceDetection]) -> list[FaceDetection]:
    """Deterministic order: score descending, then box x0, then y0."""
    return sorted(dets, key=_sort_key)


class DlibDetector:
    """dlib face detector with landmarks.

    Args:
        kind: "hog" (frontal HOG + linear SVM, fast) or "cnn" (MMOD CNN, finds more poses, ~50x slower on CPU).
        upsample: times dlib doubles the image before detecting (finds faces down to ~80 px / 2**upsample:
            measured on the downscaled astronaut, 73 px at 0 and 37 px at 1).
        threshold: minimum score (HOG: SVM margin, may be negative to find more; CNN: confidence); None: the
            calibrated :data:`DEFAULT_SCORE_THRESHOLDS` value of ``kind``.
        min_size: drop faces whose box is smaller than this many pixels (width or height).
        landmarks: 68 (iBUG points; 5 points derived from them) or 5 (dlib's faster 5-point model; nose tip
            and mouth corners then estimated from a mean face, landmarks68 is None).
        max_side: if set, detect on a copy whose longer side is at most this many pixels (faster on big
            photos); boxes are mapped back and landmarks are predicted on the full image.
    """

    def __init__(
        self,
        kind: str = "hog",
        upsample: int = 1,
        threshold: float | None = None,
        min_size: float = 0,
        landmarks: int = 68,
        max_side: int | None = None,
    ) -> None:
        if kind not in ("hog", "cnn"):
            raise InputError(f"unknown dlib detector {kind!r}; use 'hog' or 'cnn'")
        if landmarks not in (5, 68):
            raise InputError(f"landmarks must be 5 or 68, got {landmarks}")
        if int(upsample) != upsample or upsample < 0:
            raise InputError(f"upsample must be a non-negative integer, got {upsample}")
        if max_side is not None and max_side < 32:
            raise InputError(f"max_side must be at least 32 pixels, got {max_side}")
        self.kind = kind
        self.name = f"dlib-{kind}"  # the registry name (records say what `--detector` accepts first)
        self.upsample = int(upsample)
        self.threshold = DEFAULT_SCORE_THRESHOLDS[kind] if threshold is None else float(threshold)
        self.min_size = float(min_size)
        self.landmarks = landmarks
        self.max_side = max_side

    def __repr__(self) -> str:
        return (f"DlibDetector(kind={self.kind!r}, upsample={self.upsample}, threshold={self.threshold}, "
                f"min_size={self.min_size}, landmarks={self.landmarks}, max_side={self.max_side})")

    def boxes(self, image: np.ndarray) -> list[tuple[np.ndarray, float]]:
        """Raw (box, score) pairs, in dlib's order, before landmarks and size filtering."""
        from facerestore.faces import dlib_models

        img = as_uint8_rgb(image)
        back = None  # per-axis factors from the resized copy back to the image (sizes round per axis)
        if self.max_side is not None and max(img.shape[:2]) > self.max_side:
            import cv2

            scale = self.max_side / max(img.shape[:2])
            size = (max(1, round(img.shape[1] * scale)), max(1, round(img.shape[0] * scale)))
            back = np.array([img.shape[1] / size[0], img.shape[0] / size[1]] * 2)
            img = np.ascontiguousarray(cv2.resize(img, size, interpolation=cv2.INTER_AREA))
        out: list[tuple[np.ndarray, float]] = []
        if self.kind == "hog":
            rects, scores, _ = dlib_models.hog_detector().run(img, self.upsample, self.threshold)
            out = [(_box_of_rect(r), float(s)) for r, s in zip(rects, scores)]
        else:
            for m in dlib_models.cnn_detector()(img, self.upsample):
                if m.confidence >= self.threshold:
                    out.append((_box_of_rect(m.rect), float(m.confidence)))
        if back is not None:
            # box edges scale about the pixel-corner origin; exclusive ends stay exclusive
            out = [(b * back, s) for b, s in out]
        return out

    def detect(self, image: np.ndarray) -> list[FaceDetection]:
        img = as_uint8_rgb(image)
        dets = []
        for box, score in self.boxes(img):
            if min(box[2] - box[0], box[3] - box[1]) < self.min_size:
                continue
            dets.append(self._with_landmarks(img, box, score))
        return sort_detections(dets)

    def _with_landmarks(self, img: np.ndarray, box: np.ndarray, score: float) -> FaceDetection:
        if self.landmarks == 68:
            lm68 = predict_landmarks(img, box, 68)
            if self.kind != "hog":
                # the predictors were trained on HOG boxes: re-run in the HOG-like box of the first estimate
                lm68 = predict_landmarks(img, face_box_from_landmarks5(landmarks_68_to_5(lm68)), 68)
            return FaceDetection(box, score, landmarks_68_to_5(lm68), lm68, self.name)
        d5 = predict_landmarks(img, box, 5)
        return FaceDetection(box, score, landmarks_from_dlib5(d5), None, self.name)


# --- zoo-backed detectors ----------------------------------------------------------------------------------


class YuNetDetector:
    """OpenCV's YuNet detector (cv2.FaceDetectorYN) with zoo weights ``yunet-2023mar``: boxes and 5 points.

    Gives no 68 points (landmarks68 is None) unless ``landmarks=68``, which runs dlib's predictor in the
    HOG-like box of YuNet's 5 points.
    """

    def __init__(self, threshold: float = 0.6, nms: float = 0.3, min_size: float = 0, landmarks: int = 0,
                 top_k: int = 5000, weights: str | None = None) -> None:
        import cv2

        from facerestore import zoo

        if landmarks not in (0, 68):
            raise InputError(f"YuNet landmarks must be 0 (its own 5 points) or 68, got {landmarks}")
        if not hasattr(cv2, "FaceDetectorYN"):
            raise InputError("this OpenCV build has no FaceDetectorYN (needs OpenCV >= 4.5.4)")
        path = weights or str(zoo.weights_path("yunet-2023mar"))
        self.name = "yunet"
        self.threshold = float(threshold)
        self.min_size = float(min_size)
        self.landmarks = landmarks
        self._net = cv2.FaceDetectorYN.create(path, "", (320, 320), self.threshold, float(nms), int(top_k))

    def detect(self, image: np.ndarray) -> list[FaceDetection]:
        img = as_uint8_rgb(image)
        bgr = np.ascontiguousarray(img[:, :, ::-1])
        self._net.setInputSize((img.shape[1], img.shape[0]))
        _, faces = self._net.detect(bgr)
        dets = []
        for f in [] if faces is None else faces:
            x, y, w, h = (float(v) for v in f[:4])
            if min(w, h) < self.min_size:
                continue
            # YuNet order: subject's right eye, left eye, nose tip, right mouth corner, left mouth corner
            lm5 = np.asarray(f[4:14], np.float64).reshape(5, 2)
            lm68 = None
            if self.landmarks == 68:
                lm68 = predict_landmarks(img, face_box_from_landmarks5(lm5), 68)
            dets.append(FaceDetection(np.array([x, y, x + w, y + h]), float(f[14]), lm5, lm68, self.name))
        return sort_detections(dets)


class _AnchorDetector:
    """What the ported anchor detectors (RetinaFace, SCRFD) share: option checks and :meth:`detect` = :meth:`raw`
    (every anchor's box, probability and 5 points in photo pixels) -> threshold -> top-k -> NMS -> boxes covered
    by a better one (``overlap`` < 1, RetinaFace) -> size filter -> dlib's 68 points on request."""

    name: str
    overlap: float = 1.0

    def _set_options(self, name: str, label: str, threshold: float | None, nms: float, scale: float,
                     max_side: int | None, min_size: float, landmarks: int, top_k: int, device: str) -> None:
        if landmarks not in (0, 68):
            raise InputError(f"{label} landmarks must be 0 (its own 5 points) or 68, got {landmarks}")
        if not (np.isfinite(scale) and 0.05 <= scale <= 8):
            raise InputError(f"{label} input scale must be in 0.05..8, got {scale}")
        if not (np.isfinite(nms) and 0 < nms <= 1):
            raise InputError(f"NMS IoU must be in (0, 1], got {nms}")
        if max_side is not None and max_side < 32:
            raise InputError(f"max_side must be at least 32 pixels, got {max_side}")
        self.name = name
        self.threshold = DEFAULT_SCORE_THRESHOLDS[name] if threshold is None else float(threshold)
        self.nms, self.scale, self.max_side, self.min_size = float(nms), float(scale), max_side, float(min_size)
        self.landmarks, self.top_k, self.device = landmarks, int(top_k), device

    def raw(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        raise NotImplementedError

    def detect(self, image: np.ndarray) -> list[FaceDetection]:
        from facerestore.nn.retinaface import nms

        img = as_uint8_rgb(image)
        boxes, scores, pts = self.raw(img)
        keep = np.flatnonzero(scores >= self.threshold)
        keep = keep[np.argsort(-scores[keep], kind="stable")][: self.top_k]
        keep = keep[nms(boxes[keep], scores[keep], self.nms)]
        if self.overlap < 1:
            keep = keep[_drop_covered(boxes[keep], self.overlap)]
        dets = []
        for i in keep:
            b = boxes[i]
            if min(b[2] - b[0], b[3] - b[1]) < self.min_size:
                continue
            lm68 = predict_landmarks(img, face_box_from_landmarks5(pts[i]), 68) if self.landmarks == 68 else None
            dets.append(FaceDetection(b.copy(), float(scores[i]), pts[i].copy(), lm68, self.name))
        return sort_detections(dets)


class RetinaFaceDetector(_AnchorDetector):
    """RetinaFace MobileNet-0.25 (zoo weights ``retinaface-mnet025``, MIT), our PyTorch port: boxes, scores
    (face probability) and 5 points.

    Args:
        threshold: minimum face probability (default: the calibrated :data:`DEFAULT_SCORE_THRESHOLDS` value).
        nms: IoU above which a lower-scoring overlapping box is dropped.
        overlap: after NMS, a lower-scoring box is also dropped when this fraction of the smaller of the two
            boxes is covered by the other (the network puts several loose boxes on faces larger than its 512 px
            anchors, whose IoU stays under ``nms``; two people's faces hardly cover half of one another); 1
            turns it off.
        scale: the image is resized by this factor before the network (> 1 finds smaller faces, < 1 is
            faster); coordinates are mapped back. The network sees faces from about 10 px (its smallest
            anchor is 16 px).
        max_side: if set, the longer side seen by the network is at most this many pixels.
        min_size: drop faces whose box is smaller than this (pixels, width or height).
        landmarks: 0 (the network's 5 points) or 68 (dlib's predictor run in the HOG-like box of those).
        top_k: at most this many candidates enter NMS.
        weights: a ``weights.py`` / ``.onnx`` file instead of the zoo entry.
        device: torch device.
    """

    def __init__(self, threshold: float | None = None, nms: float = 0.4, overlap: float = 0.5,
                 scale: float = 1.0, max_side: int | None = None, min_size: float = 0, landmarks: int = 0,
                 top_k: int = 5000,
                 weights: str | None = None, device: str = "cpu") -> None:
        self._set_options("retinaface", "RetinaFace", threshold, nms, scale, max_side, min_size, landmarks, top_k,
                          device)
        if not (np.isfinite(overlap) and 0 < overlap <= 1):
            raise InputError(f"overlap must be in (0, 1], got {overlap}")
        self.overlap = float(overlap)
        self._net = _retinaface_net(weights, device)

    def __repr__(self) -> str:
        return (f"RetinaFaceDetector(threshold={self.threshold}, nms={self.nms}, overlap={self.overlap}, "
                f"scale={self.scale}, max_side={self.max_side}, min_size={self.min_size}, landmarks={self.landmarks})")

    def raw(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every anchor's box (A, 4), face probability (A,) and 5 points (A, 5, 2), in input pixels, before
        the threshold and NMS."""
        import cv2
        import torch

        from facerestore.nn.retinaface import decode, preprocess

        img = as_uint8_rgb(image)
        h, w = img.shape[:2]
        s = self.scale
        if self.max_side is not None:
            s = min(s, self.max_side / max(h, w))
        if s != 1.0:
            size = (max(1, round(w * s)), max(1, round(h * s)))
            interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
            img = np.ascontiguousarray(cv2.resize(img, size, interpolation=interp))
        nh, nw = img.shape[:2]
        with torch.inference_mode():
            loc, conf, lms = self._net(preprocess(img).to(self.device))
        boxes, pts = decode(loc[0].float().cpu().numpy(), lms[0].float().cpu().numpy(), nh, nw)
        fx, fy = w / nw, h / nh
        boxes = boxes * np.array([fx, fy, fx, fy])
        pts = (pts + 0.5) * np.array([fx, fy]) - 0.5
        return boxes, conf[0, :, 1].float().cpu().numpy().astype(np.float64), pts

class SCRFDDetector(_AnchorDetector):
    """SCRFD-2.5G with 5 keypoints (zoo weights ``scrfd-2.5g``: InsightFace's, non-commercial research use
    only; optional, never the default), our PyTorch port: boxes, scores (face probability) and 5 points.

    Args:
        threshold: minimum face probability (default: :data:`DEFAULT_SCORE_THRESHOLDS`).
        nms: IoU above which a lower-scoring overlapping box is dropped.
        size: the network sees the photo resized so that its longer side is ``size`` pixels, on a ``size`` x
            ``size`` black canvas (InsightFace's detector: 640, the default; a multiple of 32). None: the photo
            at its own resolution times ``scale`` (at most ``max_side`` on its longer side), padded to multiples
            of 32, as facerestore runs RetinaFace.
        scale, max_side: with ``size=None`` (see above).
        min_size: drop faces whose box is smaller than this (pixels, width or height).
        landmarks: 0 (the network's 5 points) or 68 (dlib's predictor run in the HOG-like box of those).
        top_k: at most this many candidates enter NMS.
        weights: an ``.onnx`` file instead of the zoo entry.
        device: torch device.
    """

    def __init__(self, threshold: float | None = None, nms: float = 0.4, size: int | None = 640,
                 scale: float = 1.0, max_side: int | None = None, min_size: float = 0, landmarks: int = 0,
                 top_k: int = 5000, weights: str | None = None, device: str = "cpu") -> None:
        if size is not None and (int(size) != size or size < 32 or size % 32 or size > 8192):
            raise InputError(f"SCRFD input size must be a multiple of 32 in 32..8192, got {size}")
        self._set_options("scrfd", "SCRFD", threshold, nms, scale, max_side, min_size, landmarks, top_k, device)
        self.size = None if size is None else int(size)
        self._net = _scrfd_net(weights, device)

    def __repr__(self) -> str:
        return (f"SCRFDDetector(threshold={self.threshold}, nms={self.nms}, size={self.size}, scale={self.scale}, "
                f"max_side={self.max_side}, min_size={self.min_size}, landmarks={self.landmarks})")

    def network_input(self, image: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
        """The (H, W, 3) uint8 canvas the network sees and the factors (x, y) back to the photo's pixels."""
        from facerestore.faces.scrfd import letterbox, padded

        img = as_uint8_rgb(image)
        if self.size is not None:
            return letterbox(img, self.size)
        s = self.scale
        if self.max_side is not None:
            s = min(s, self.max_side / max(img.shape[:2]))
        return padded(img, s)

    def raw(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every anchor's box (A, 4), face probability (A,) and 5 points (A, 5, 2), in the photo's pixels,
        before the threshold and NMS."""
        import torch

        from facerestore.faces.scrfd import POINT_OFFSET, decode
        from facerestore.nn.scrfd import preprocess

        canvas, (fx, fy) = self.network_input(image)
        with torch.inference_mode():
            scores, dist, kps = self._net(preprocess(canvas).to(self.device))
        boxes, pts = decode(torch.cat(dist, 1)[0].float().cpu().numpy(), torch.cat(kps, 1)[0].float().cpu().numpy(),
                            *canvas.shape[:2])
        boxes = boxes * np.array([fx, fy, fx, fy])
        pts = (pts + 0.5 + POINT_OFFSET) * np.array([fx, fy]) - 0.5
        return boxes, torch.cat(scores, 1)[0, :, 0].float().cpu().numpy().astype(np.float64), pts

def _drop_covered(boxes: np.ndarray, frac: float) -> np.ndarray:
    """Indices of ``boxes`` (sorted by score, descending) kept when each box is dropped that covers, or is
    covered by, a kept higher-scoring box over more than ``frac`` of the smaller one's area."""
    area = np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0)
    kept: list[int] = []
    for j in range(len(boxes)):
        ok = True
        for i in kept:
            ix = max(0.0, min(boxes[i, 2], boxes[j, 2]) - max(boxes[i, 0], boxes[j, 0]))
            iy = max(0.0, min(boxes[i, 3], boxes[j, 3]) - max(boxes[i, 1], boxes[j, 1]))
            if ix * iy > frac * max(min(area[i], area[j]), 1e-9):
                ok = False
                break
        if ok:
            kept.append(j)
    return np.array(kept, dtype=np.int64)


_NETS: dict[tuple[str | None, str], Any] = {}
_SCRFD_NETS: dict[tuple[str | None, str], Any] = {}


def _retinaface_net(weights: str | None, device: str) -> Any:
    """The RetinaFace network for ``weights`` (None: the zoo entry) on ``device``, loaded once per process."""
    key = (weights, str(device))
    if key not in _NETS:
        from facerestore.nn.retinaface import load_retinaface

        _NETS[key] = load_retinaface(weights).to(device)
    return _NETS[key]


def _scrfd_net(weights: str | None, device: str) -> Any:
    """The SCRFD network for ``weights`` (None: the zoo entry) on ``device``, loaded once per process."""
    key = (weights, str(device))
    if key not in _SCRFD_NETS:
        from facerestore.nn.scrfd import load_scrfd

        _SCRFD_NETS[key] = load_scrfd(weights).to(device)
    return _SCRFD_NETS[key]


# --- registry -----------------------------------------------------------------------------------------------

# Default score thresholds, per detector (each detector's scores are on its own scale); ``--min-score`` /
# ``threshold=`` override them. Chosen on validation data the detection benchmark does not use: 80 wild/
# crops on gray canvases (`benchmarks/detection_recall.py --calibrate`, results/detection_calibration.json).
# RetinaFace: found 79 of 80 faces with 1 false box at every threshold from 0.05 to 0.97. The default was 0.5,
# the middle of that plateau, until a Facebook logo scored 0.64 in a whole photo (whole_photo_gate) and was
# "restored"; 0.8, still inside the plateau, keeps every face of the recall benchmark's photos (96 of 96) with 3
# false boxes instead of 10 (the recall benchmark shares photos with whole_photo_gate: not a held-out check).
# dlib HOG: the best (found - false) was at -0.86 (71 found, 4 false) against 32 found at 0,
# but those canvases hold little background; on whole photos HOG puts many boxes on texture between -1 and
# -0.5, so dlib's own 0 stays the default (the old pipeline filter at 0.3 found 18 of 80). dlib CNN: dlib's
# own 0, not calibrated (its ~10 s per megapixel did not fit the time). SCRFD (640 letterbox): 149 of 150 crops
# found with 1 false box from 0.3 to 0.35 (results/detection_calibration_scrfd.json), 147 at InsightFace's 0.5;
# 0.35 is the top of that plateau.
DEFAULT_SCORE_THRESHOLDS: dict[str, float] = {
    "retinaface": 0.8,
    "hog": 0.0,
    "cnn": 0.0,
    "yunet": 0.6,
    "scrfd": 0.35,
}


@dataclass(frozen=True)
class DetectorSpec:
    name: str
    factory: str  # "module:attribute"
    description: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    weights: tuple[str, ...] = ()  # zoo entries ("dlib" = shipped with face_recognition_models)
    licence: str = ""


_D = "facerestore.faces.detect"
DETECTORS: tuple[DetectorSpec, ...] = (
    DetectorSpec("retinaface", f"{_D}:RetinaFaceDetector",
                 "RetinaFace MobileNet-0.25 (PyTorch port), boxes + 5 points; the default once its weights are cached",
                 {}, ("retinaface-mnet025",), "MIT"),
    DetectorSpec("dlib-hog", f"{_D}:DlibDetector", "dlib HOG + linear SVM frontal detector (fast, CPU)",
                 {"kind": "hog"}, ("dlib",), "CC0 (dlib model files)"),
    DetectorSpec("dlib-cnn", f"{_D}:DlibDetector", "dlib MMOD CNN detector (more poses, slow on CPU)",
                 {"kind": "cnn"}, ("dlib",), "CC0 (dlib model files)"),
    DetectorSpec("yunet", f"{_D}:YuNetDetector", "OpenCV YuNet (2023mar) via cv2.FaceDetectorYN, 5 points",
                 {}, ("yunet-2023mar",), "MIT"),
    DetectorSpec("scrfd", f"{_D}:SCRFDDetector",
                 "SCRFD-2.5G (InsightFace, PyTorch port), boxes + 5 points; optional, research-only weights",
                 {}, ("scrfd-2.5g",), "non-commercial research only (InsightFace weights)"),
)
# older names still accepted
ALIASES: dict[str, str] = {"hog": "dlib-hog", "cnn": "dlib-cnn"}
_DETECTOR_BY_NAME = {s.name: s for s in DETECTORS}
_NOTED: list[str] = []


def canonical_detector_name(name: str) -> str:
    """The registry name of ``name`` ("hog" -> "dlib-hog"); "auto" resolves to :func:`default_detector`."""
    n = name.lower()
    if n == "auto":
        return default_detector()[0]
    n = ALIASES.get(n, n)
    if n not in _DETECTOR_BY_NAME:
        known = ", ".join([*_DETECTOR_BY_NAME, *ALIASES, "auto"])
        raise InputError(f"unknown face detector {name!r}; available: {known}")
    return n


def default_detector() -> tuple[str, str | None]:
    """The detector "auto" stands for: ``retinaface`` when its weights are cached, else ``dlib-hog``, with a
    one-line note saying how to get RetinaFace."""
    from facerestore import zoo

    if not zoo.is_available("retinaface-mnet025"):
        return "dlib-hog", ("note: using dlib HOG face detection; for RetinaFace (finds more faces) run "
                            "`facerestore models download retinaface-mnet025`")
    return "retinaface", None


def default_min_score(name: str) -> float:
    """The calibrated default score threshold of detector ``name`` (aliases and "auto" accepted)."""
    n = canonical_detector_name(name)
    return DEFAULT_SCORE_THRESHOLDS[ALIASES.get(n, n).removeprefix("dlib-")]


def list_detectors() -> list[str]:
    """Registry names and the accepted aliases ("hog", "cnn")."""
    return [s.name for s in DETECTORS] + list(ALIASES)


def create_detector(name: str = "hog", **kwargs: Any) -> Detector:
    """Instantiate detector ``name`` (see DETECTORS; "hog"/"cnn" are aliases of "dlib-hog"/"dlib-cnn", "auto"
    is :func:`default_detector`, whose note is printed once to stderr); ``kwargs`` go to its constructor.

    Zoo-backed detectors raise WeightsMissingError when their weights are not in the cache.
    """
    if name.lower() == "auto":
        resolved, note = default_detector()
        if note and note not in _NOTED:
            import sys

            _NOTED.append(note)
            print(note, file=sys.stderr)
        name = resolved
    spec = _DETECTOR_BY_NAME[canonical_detector_name(name)]
    modname, attr = spec.factory.split(":")
    factory: Callable[..., Detector] = getattr(importlib.import_module(modname), attr)
    return factory(**{**spec.kwargs, **kwargs})


def select_faces(dets: Sequence[FaceDetection], select: str, image_shape: tuple[int, ...]) -> list[FaceDetection]:
    """Keep "all", the "largest" (box area) or the most "center"-ed face (box centre nearest the image
    centre); ties keep the detection order."""
    if select not in ("all", "largest", "center"):  # checked before the early return: a typo never passes
        raise InputError(f"select must be 'all', 'largest' or 'center', got {select!r}")
    dets = list(dets)
    if select == "all" or not dets:
        return dets
    if select == "largest":
        return [max(dets, key=lambda d: d.area)]  # max keeps the first of equal areas
    h, w = image_shape[:2]  # "center"
    c = np.array([(w - 1) / 2, (h - 1) / 2])
    return [min(dets, key=lambda d: float(np.hypot(*(d.center - c))))]


def detect_faces(
    image: np.ndarray,
    detector: str | Detector = "hog",
    select: str = "all",
    min_size: float = 0,
    upsample: int = 1,
    **kwargs: Any,
) -> list[FaceDetection]:
    """Detect faces with landmarks in an (H, W, 3) uint8 or float [0, 1] RGB image.

    ``detector`` is a registry name (``upsample`` and ``kwargs`` then configure it; dlib models are
    cached) or a Detector instance (used as is). Returns detections sorted by score (descending), then
    x, filtered by ``min_size`` (pixels) and reduced by ``select`` ("all" | "largest" | "center").
    """
    img = as_uint8_rgb(image)
    if isinstance(detector, str):
        if canonical_detector_name(detector) in ("dlib-hog", "dlib-cnn"):  # "auto" too, when it resolves to dlib
            kwargs = {"upsample": upsample, **kwargs}
        det = create_detector(detector, **kwargs)
    else:
        if kwargs:  # never silently: options configure a detector made here, not one already built
            raise InputError(f"detector options ({', '.join(kwargs)}) go with a detector name, not a built detector")
        det = detector
    dets = [d for d in det.detect(img) if min(d.width, d.height) >= min_size]
    return select_faces(sort_detections(dets), select, img.shape)


__all__ = [
    "ALIASES",
    "BROWS",
    "DEFAULT_SCORE_THRESHOLDS",
    "DETECTORS",
    "EYES",
    "JAW",
    "LEFT_EYE",
    "MOUTH",
    "MOUTH_INNER",
    "MOUTH_OUTER",
    "NOSE",
    "RIGHT_EYE",
    "Detector",
    "DetectorSpec",
    "DlibDetector",
    "FaceDetection",
    "RetinaFaceDetector",
    "SCRFDDetector",
    "YuNetDetector",
    "aligned_face_box",
    "as_uint8_rgb",
    "canonical_detector_name",
    "create_detector",
    "default_detector",
    "default_min_score",
    "detect_faces",
    "face_box_from_landmarks5",
    "landmarks68_for",
    "landmarks_68_to_5",
    "landmarks_from_dlib5",
    "list_detectors",
    "predict_landmarks",
    "select_faces",
    "sort_detections",
]
