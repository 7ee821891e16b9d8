"""SCRFD's anchor-free decoding and network input (the detector itself is
:class:`facerestore.faces.detect.SCRFDDetector`; the network is :mod:`facerestore.nn.scrfd`).

SCRFD (Guo et al. 2021) predicts, at every location of its stride-8/16/32 feature maps and for each of its 2
anchors there, a face probability, the distances from the anchor point to the four sides of the face box and
the offsets of 5 keypoints from it, distances and offsets in units of the stride. The anchor point of location
(row i, column j) at stride s is (j s, i s) in the network input's pixels (InsightFace's ``anchor_centers``; no
half-stride offset). Boxes: (cx - l s, cy - t s, cx + r s, cy + b s); keypoints: (cx + dx s, cy + dy s).

Coordinates: the decoded boxes and points are in the network input's frame as SCRFD defines it (the frame of
InsightFace's WIDER FACE annotations); :class:`~facerestore.faces.detect.SCRFDDetector` maps them to the photo
in facerestore's conventions (see ``POINT_OFFSET``).

Input (InsightFace's ``detect``): the photo resized so that its longer side is ``size`` (640) and put at the top
left of a ``size`` x ``size`` black canvas (:func:`letterbox`); or, as facerestore runs RetinaFace, at its own
resolution (times a scale) with black padding at the bottom and right up to multiples of 32 (:func:`padded`).
"""

from __future__ import annotations

import numpy as np

from facerestore.errors import InputError

__all__ = ["ANCHORS", "POINT_OFFSET", "STRIDES", "anchor_centres", "decode", "letterbox", "padded"]

STRIDES = (8, 16, 32)
ANCHORS = 2
# SCRFD's keypoints sit this far from facerestore's pixel-centre convention: a point the network puts at x lies
# at x + POINT_OFFSET in facerestore's coordinates (measured: see tests/nn/test_scrfd.py)
POINT_OFFSET = -0.5


def anchor_centres(height: int, width: int) -> np.ndarray:
    """(A, 3) anchor points (x, y) and their stride, for a ``height`` x ``width`` network input (multiples of
    32), in the order of the network's outputs: stride 8, 16, 32; rows, columns; 2 anchors per location."""
    if height % 32 or width % 32 or height < 32 or width < 32:
        raise InputError(f"SCRFD input sides must be multiples of 32, got {width}x{height}")
    out = []
    for s in STRIDES:
        ys, xs = np.meshgrid(np.arange(height // s), np.arange(width // s), indexing="ij")
        pts = np.stack([xs.ravel() * s, ys.ravel() * s, np.full(xs.size, s)], 1).astype(np.float64)
        out.append(np.repeat(pts, ANCHORS, axis=0))
    return np.concatenate(out, 0)


def decode(distances: np.ndarray, offsets: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw box distances (A, 4) and keypoint offsets (A, 10) of one image, all strides concatenated -> boxes
    (A, 4) (x0, y0, x1, y1) and keypoints (A, 5, 2), in the network input's pixels (SCRFD's frame)."""
    a = anchor_centres(height, width)
    if len(a) != len(distances) or len(a) != len(offsets):
        raise InputError(f"SCRFD output has {len(distances)} anchors, expected {len(a)} for a {width}x{height} input")
    c, s = a[:, None, :2], a[:, 2, None, None]
    d = distances.astype(np.float64).reshape(-1, 2, 2) * s  # (left, top), (right, bottom)
    boxes = np.concatenate([c[:, 0] - d[:, 0], c[:, 0] + d[:, 1]], 1)
    pts = c + offsets.astype(np.float64).reshape(-1, 5, 2) * s
    return boxes, pts


def _resize(rgb: np.ndarray, w: int, h: int) -> np.ndarray:
    import cv2

    if (h, w) == rgb.shape[:2]:
        return rgb
    interp = cv2.INTER_AREA if w * h < rgb.shape[0] * rgb.shape[1] else cv2.INTER_LINEAR
    return np.ascontiguousarray(cv2.resize(rgb, (w, h), interpolation=interp))


def letterbox(rgb: np.ndarray, size: int = 640) -> tuple[np.ndarray, tuple[float, float]]:
    """InsightFace's input: ``rgb`` (H, W, 3) uint8 resized so that its longer side is ``size`` (the shorter
    rounded down, at least 1), at the top left of a ``size`` x ``size`` black canvas. Returns the canvas and
    the factors (x, y) from the network's pixels back to the photo's."""
    if size % 32 or size < 32:
        raise InputError(f"SCRFD input size must be a multiple of 32, got {size}")
    h, w = rgb.shape[:2]
    nw, nh = (size, max(1, int(size * h / w))) if w >= h else (max(1, int(size * w / h)), size)
    canvas = np.zeros((size, size, 3), np.uint8)
    canvas[:nh, :nw] = _resize(rgb, nw, nh)
    return canvas, (w / nw, h / nh)


def padded(rgb: np.ndarray, scale: float = 1.0) -> tuple[np.ndarray, tuple[float, float]]:
    """``rgb`` resized by ``scale`` (sides rounded, at least 1) with black padding at the bottom and right up to
    multiples of 32; the canvas and the factors (x, y) back to the photo's pixels."""
    h, w = rgb.shape[:2]
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    canvas = np.zeros((-(-nh // 32) * 32, -(-nw // 32) * 32, 3), np.uint8)
    canvas[:nh, :nw] = _resize(rgb, nw, nh)
    return canvas, (w / nw, h / nh)
