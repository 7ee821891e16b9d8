"""The quality gate: never paste a restored face that is worse than the face already in the photo.

A restorer trained on degraded faces can make a good face worse: softer (the first built-in ISPL weights work at
128 px, so a 300 px face came back with 2% of its high-frequency energy), with a generic texture (NIQE ~11 whatever
the input) or another person's features. The gate measures the restored crop against the input crop, both
aligned on the FFHQ template, inside the face box of the template (x 96-416, y 144-464 of a 512 crop: brows to
chin, cheek to cheek, no hair or background), and chooses how much of the restoration to paste:

- **sharpness**: high-frequency energy, the mean square of the 3x3 Laplacian of gray at 512, of the candidate over
  that of the input. A ratio under ``min_sharpness`` (0.8) is a loss of detail.
- **quality**: NIQE (MATLAB-release compatible, :func:`facerestore.metrics.niqe.niqe`; lower is better) of
  the face box. A candidate more than ``niqe_margin`` (0.25) worse than the input fails (half the 0.5 that the
  whole-photo benchmark allows, since paste-back, colour matching and grain move the pasted face's NIQE by a few
  tenths; chosen on benchmarks/whole_photo_gate.py's photos, which are therefore not held out); one at least
  ``niqe_gain`` (1.0) better may be less sharp: removing noise, JPEG blocks or scan lines lowers the
  high-frequency energy of a face that gets better, and NIQE sees that.
- **identity**: dlib's 128-d distance between input and candidate (when an embedder is given); over 0.6
  (dlib's same-person threshold) fails.

Candidates are the blends ``w * restored + (1 - w) * input`` for w = 1, 0.75, 0.5, 0.25; the first that passes
wins, else w = 0 (the face keeps the photo's own pixels, upscaled like the rest of the photo). The decision
and every measurement go to the per-photo JSON. In whole photos the candidate is the restoration in the photo's
colours (colour matching runs first: :func:`facerestore.faces.paste.match_face_colour`), i.e. what is pasted: a
restoration with inflated contrast passed the sharpness test and was then pasted with the photo's contrast. The
user's ``blend`` then scales w (paste weight = ``blend * w``).

Crops of other sizes are resized to 512 before measuring (NIQE needs 96 px blocks: the face box then holds
3 x 3 of them).

Faces cut by the photo's border: the part of the crop outside the photo is padding, which a restorer fills
with whatever it likes and whose flat area NIQE scores badly. With ``valid`` (the crop pixels inside the photo)
sharpness is measured on the valid part of the face box only, and the NIQE-gain exception needs at least
``MIN_VALID_SHARE`` (95%) of the box inside the photo.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = ["GATE_SIZE", "GateDecision", "face_box_slices", "face_niqe", "face_sharpness", "gate_face"]

GATE_SIZE = 512
# the face box of an FFHQ-aligned 512 crop (template eyes at y 240, mouth at y 371): brows to chin
_BOX_512 = (144, 464, 96, 416)  # y0, y1, x0, x1
CANDIDATE_WEIGHTS = (1.0, 0.75, 0.5, 0.25)
MIN_VALID_SHARE = 0.95


@dataclass
class GateDecision:
    """How much of a restored face is pasted and why.

    weight: share of the restored face in [0, 1] the gate allows (1 = the restoration as is, 0 = the input kept).
    reason: "passed" (w = 1), "blended: X" (0 < w < 1) or "kept: X" (w = 0), X the test that failed first
        ("sharpness", "quality", "identity"). Without the gate there is no decision (None in the records).
    sharpness_ratio / niqe_input / niqe_output / identity_distance: the measurements of the chosen candidate
        (NaN / None when not measured); ``tried``: every candidate's weight and measurements.
    """

    weight: float
    reason: str
    sharpness_ratio: float = float("nan")
    niqe_input: float = float("nan")
    niqe_output: float = float("nan")
    identity_distance: float | None = None
    tried: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        def clean(v: Any) -> Any:
            if isinstance(v, float):
                return None if not np.isfinite(v) else round(v, 4)
            if isinstance(v, list):
                return [clean(x) for x in v]
            if isinstance(v, dict):
                return {k: clean(x) for k, x in v.items()}
            return v

        return clean(asdict(self))


def face_box_slices(size: int) -> tuple[slice, slice]:
    """(rows, cols) slices of the face box in an FFHQ-aligned ``size`` crop (see the module doc)."""
    y0, y1, x0, x1 = (round(v * size / GATE_SIZE) for v in _BOX_512)
    return slice(y0, y1), slice(x0, x1)


def _at_gate_size(crop: np.ndarray, nearest: bool = False) -> np.ndarray:
    import cv2

    crop = np.asarray(crop, np.float32)
    if nearest:
        return cv2.resize(crop, (GATE_SIZE, GATE_SIZE), interpolation=cv2.INTER_NEAREST)
    if crop.shape[0] == GATE_SIZE and crop.shape[1] == GATE_SIZE:
        return crop
    interp = cv2.INTER_AREA if crop.shape[0] > GATE_SIZE else cv2.INTER_CUBIC
    return np.clip(cv2.resize(crop, (GATE_SIZE, GATE_SIZE), interpolation=interp), 0.0, 1.0)


def _gray(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array([0.299, 0.587, 0.114], np.float32)


def face_sharpness(crop: np.ndarray, valid: np.ndarray | None = None) -> float:
    """High-frequency energy of an aligned crop's face box: mean square of the 3x3 Laplacian of gray at 512, gray in
    [0, 1]; over the box pixels where ``valid`` ((S, S), the crop's size) is true, when given (NaN if none).

    The 3x3 Laplacian weighs the top octave (detail between 256 and 512 px across the crop) most: what a restorer
    working below 512 px cannot return, and the measure of "sharpness kept" in the whole-photo benchmark (which
    computes it on its own, on the box alone). The first version, gray minus a Gaussian blur of 1 px, gave the same
    decisions on that benchmark's 120 faces; the large faces that lost detail there were fixed by cropping them at
    their footprint (:func:`facerestore.pipeline.crop_side`), not by the filter."""
    import cv2

    g = _gray(_at_gate_size(crop)).astype(np.float64)
    hf = cv2.Laplacian(g, cv2.CV_64F, ksize=3)[face_box_slices(GATE_SIZE)] ** 2
    if valid is None:
        return float(np.mean(hf))
    keep = _valid_box(valid)
    return float(np.mean(hf[keep])) if keep.any() else float("nan")


def _valid_box(valid: np.ndarray) -> np.ndarray:
    """(box_h, box_w) bool: the face box's pixels inside the photo, at 512."""
    return _at_gate_size(np.asarray(valid, np.float32), nearest=True)[face_box_slices(GATE_SIZE)] > 0.5


def face_niqe(crop: np.ndarray) -> float:
    """NIQE of an aligned crop's face box at 512 (lower is better; NaN for a flat face)."""
    import torch

    from facerestore.metrics.niqe import niqe

    rows, cols = face_box_slices(GATE_SIZE)
    box = np.ascontiguousarray(_at_gate_size(crop)[rows, cols])
    return float(niqe(torch.from_numpy(box.transpose(2, 0, 1))[None])[0])


def gate_face(
    input_crop: np.ndarray,
    restored_crop: np.ndarray,
    *,
    identity_distance: Callable[[np.ndarray, np.ndarray], float | None] | None = None,
    weights: Sequence[float] = CANDIDATE_WEIGHTS,
    min_sharpness: float = 0.8,
    niqe_margin: float = 0.25,
    niqe_gain: float = 1.0,
    max_identity_distance: float = 0.6,
    valid: np.ndarray | None = None,
) -> GateDecision:
    """Choose the share of ``restored_crop`` to paste over ``input_crop`` (both (S, S, 3) float in [0, 1], the
    same FFHQ alignment; S may differ between them). See the module doc for the rule.

    ``identity_distance(a, b)``: a distance between two aligned crops (dlib's 128-d, threshold 0.6) or None when
    it cannot be measured; without it identity is not checked. ``valid``: (S, S) bool at the input crop's size, the
    crop pixels that lie inside the photo (None: all).
    """
    import cv2

    inp = _at_gate_size(input_crop)
    res = _at_gate_size(restored_crop)
    valid = None if valid is None else _at_gate_size(np.asarray(valid, np.float32), nearest=True)
    if valid is not None:
        # padding outside the photo is never pasted: judge every candidate on the photo's own pixels there, so that
        # what a restorer paints into the padding moves neither NIQE nor sharpness nor identity
        res = np.where(valid[..., None] > 0.5, res, inp).astype(np.float32)
    inside = 1.0 if valid is None else float(_valid_box(valid).mean())
    s_in = face_sharpness(inp, valid)
    q_in = face_niqe(inp)
    tried: list[dict[str, Any]] = []
    first_failure = ""
    for w in weights:
        cand = res if w == 1.0 else cv2.addWeighted(res, float(w), inp, 1.0 - float(w), 0.0)
        ratio = face_sharpness(cand, valid) / max(s_in, 1e-10)
        ratio = ratio if np.isfinite(ratio) else 0.0  # no face pixel inside the photo: nothing to gain
        q = face_niqe(cand)
        both = np.isfinite(q) and np.isfinite(q_in)
        worse = both and q > q_in + niqe_margin
        much_better = both and q <= q_in - niqe_gain and inside >= MIN_VALID_SHARE
        failure = ""
        if worse:
            failure = "quality"
        elif ratio < min_sharpness and not much_better:
            failure = "sharpness"
        dist = None
        if not failure and identity_distance is not None:
            dist = identity_distance(inp, cand)
            if dist is not None and dist > max_identity_distance:
                failure = "identity"
        tried.append({"weight": float(w), "sharpness_ratio": float(ratio), "niqe": float(q),
                      "identity_distance": dist, "failed": failure or None})
        if not failure:
            return GateDecision(float(w), "passed" if not first_failure else f"blended: {first_failure}",
                                float(ratio), float(q_in), float(q), dist, tried)
        first_failure = first_failure or failure
    # the input itself is kept: its sharpness ratio is 1 and NIQE the input's; identity was not measured on it
    return GateDecision(0.0, f"kept: {first_failure}", 1.0, float(q_in), float(q_in), None, tried)
