"""Face identity and geometry metrics: FED, identity angle ("Deg."), id_mfn, LLE / L2-LD and A-LD.

* FED (paper 000): L2 distance between dlib's 128-d embeddings of prediction and reference.
* id_mfn: cosine distance between MobileFaceNet embeddings (a network no training loss of ours uses;
  evaluation use only, its licence is not stated).
* Deg. (paper 003): angle in degrees between identity embeddings (dlib by default; paper 003 used
  ArcFace, available as ``backend="arcface"`` with zoo weights).
* LLE / L2-LD (papers 000, 003): mean Euclidean distance in pixels over dlib's 68 landmarks.
* A-LD (paper 003, eq. 14-15): the weighted sum of squared distances left after the best 2-D affine map
  of the prediction's landmarks onto the reference's, over all 68 points, the eyes and eyebrows (22) or
  the outer mouth border (12).

The face is found once per reference image (largest face, dlib HOG, cached by image content) and the
prediction's landmarks and embedding are computed in the same box, so that a restorer is judged on the
same face region and only an undetectable reference gives NaN. ``pred_box="self"`` detects the face in
the prediction too (the official ISPL script's behaviour); NaN when it is not found.
``aligned=True`` skips detection for FFHQ-template crops (the box then comes from the template).
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from facerestore.errors import InputError
from facerestore.metrics.base import Metric

# iBUG 68-point index sets for A-LD (paper 003: "landmarks from the eye region (eyes and eyebrows) and the
# mouth border")
ALD_REGIONS: dict[str, tuple[int, ...]] = {
    "all": tuple(range(68)),
    "eyes": tuple(range(17, 27)) + tuple(range(36, 48)),
    "mouth": tuple(range(48, 60)),
}


# --- pure functions ---------------------------------------------------------------------------------------


def affine_landmark_distance(
    p: np.ndarray, q: np.ndarray, weights: np.ndarray | None = None, reduction: str = "sum"
) -> np.ndarray | float:
    """Affine landmark distance (paper 003, eq. 14-15) from landmarks ``p`` (restored) to ``q`` (reference).

    d(P, Q; W) = min over affine A (2x3) of sum_k w_k |A [p_k; 1] - q_k|^2, solved in closed form
    A = (Q W P'^T)(P' W P'^T)^-1 (eq. 15; computed on centred points for accuracy, pseudo-inverse for
    collinear points). Not symmetric in general: A maps the restored points onto the reference.

    Args:
        p, q: (..., N, 2) landmarks (x, y), N >= 3; leading dimensions are batch dimensions.
        weights: (N,) or (..., N) positive weights w_k; default all 1.
        reduction: "sum" (eq. 14: weighted sum of squared residuals, pixels^2), "mean" (divided by the
            sum of weights: mean squared residual) or "mean_distance" (weighted mean residual distance, px).

    Returns:
        a float for (N, 2) inputs, else an array of the batch shape.
    """
    p = np.asarray(p, np.float64)
    q = np.asarray(q, np.float64)
    if p.shape != q.shape or p.ndim < 2 or p.shape[-1] != 2:
        raise ValueError(f"expected two (..., N, 2) landmark arrays of one shape, got {p.shape} and {q.shape}")
    n = p.shape[-2]
    if n < 3:
        raise ValueError(f"an affine fit needs at least 3 landmarks, got {n}")
    w = np.ones(p.shape[:-1]) if weights is None else np.broadcast_to(np.asarray(weights, np.float64), p.shape[:-1])
    if np.any(w <= 0):
        raise ValueError("landmark weights must be positive")
    wsum = w.sum(-1, keepdims=True)
    pc = p - (w[..., None] * p).sum(-2, keepdims=True) / wsum[..., None]
    qc = q - (w[..., None] * q).sum(-2, keepdims=True) / wsum[..., None]
    # linear part of A: (Qc W Pc^T)(Pc W Pc^T)^-1; the translation then matches the weighted centroids
    pwp = np.einsum("...k,...ki,...kj->...ij", w, pc, pc)
    qwp = np.einsum("...k,...ki,...kj->...ij", w, qc, pc)
    lin = qwp @ np.linalg.pinv(pwp, rcond=1e-13, hermitian=True)
    resid = qc - pc @ np.swapaxes(lin, -1, -2)
    sq = (resid**2).sum(-1)
    if reduction == "sum":
        out = (w * sq).sum(-1)
    elif reduction == "mean":
        out = (w * sq).sum(-1) / wsum[..., 0]
    elif reduction == "mean_distance":
        out = (w * np.sqrt(sq)).sum(-1) / wsum[..., 0]
    else:
        raise ValueError(f"reduction must be 'sum', 'mean' or 'mean_distance', got {reduction!r}")
    return float(out) if np.ndim(out) == 0 else out


def best_affine(p: np.ndarray, q: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """(2, 3) weighted least-squares affine map A with q ≈ A [p; 1] (eq. 15 of paper 003), for (N, 2) inputs."""
    p = np.asarray(p, np.float64)
    q = np.asarray(q, np.float64)
    w = np.ones(len(p)) if weights is None else np.asarray(weights, np.float64)
    ph = np.c_[p, np.ones(len(p))].T  # (3, N) homogeneous L'
    return (q.T * w) @ ph.T @ np.linalg.pinv((ph * w) @ ph.T)


def landmark_l2_distance(p: np.ndarray, q: np.ndarray) -> np.ndarray | float:
    """Mean Euclidean distance (pixels) between corresponding (..., N, 2) landmarks (LLE / L2-LD)."""
    p = np.asarray(p, np.float64)
    q = np.asarray(q, np.float64)
    if p.shape != q.shape or p.shape[-1] != 2:
        raise ValueError(f"expected two (..., N, 2) landmark arrays of one shape, got {p.shape} and {q.shape}")
    out = np.linalg.norm(p - q, axis=-1).mean(-1)
    return float(out) if np.ndim(out) == 0 else out


def fed_distance(e1: np.ndarray, e2: np.ndarray) -> float:
    """FED between two embeddings: their Euclidean distance."""
    from facerestore.faces.identity import embedding_distance

    return embedding_distance(e1, e2)


# --- target analysis cache (the reference's face is found once, whichever face metrics use it) ------------

_CACHE_SIZE = 256
_cache: OrderedDict[tuple, Any] = OrderedDict()
_cache_lock = threading.Lock()


def _cached(key: tuple, compute: Any) -> Any:
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    value = compute()
    with _cache_lock:
        _cache[key] = value
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return value


def clear_cache() -> None:
    """Forget the cached reference detections and embeddings."""
    with _cache_lock:
        _cache.clear()


def _digest(img: np.ndarray) -> str:
    return hashlib.blake2b(img.tobytes(), digest_size=16).hexdigest() + str(img.shape)


def _to_uint8_batch(x: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) [0, 1] -> (B, H, W, 3) uint8, rounded as images saved to 8-bit files."""
    x = x.detach().to(torch.float32).clamp(0, 1)
    return (x * 255.0 + 0.5).floor().to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu().numpy()


class _FaceMetric(Metric):
    """Shared machinery: per-image loop over uint8 copies, reference face found once (cached)."""

    needs_landmarks = True
    needs_embedding = False

    def __init__(
        self,
        detector: str = "hog",
        upsample: int = 1,
        select: str = "largest",
        pred_box: str = "target",
        aligned: bool = False,
    ) -> None:
        super().__init__()
        if pred_box not in ("target", "self"):
            raise InputError(f"pred_box must be 'target' or 'self', got {pred_box!r}")
        if select not in ("largest", "center"):
            raise InputError(f"select must be 'largest' or 'center' for face metrics, got {select!r}")
        self.detector = detector
        self.upsample = int(upsample)
        self.select = select
        self.pred_box = pred_box
        self.aligned = bool(aligned)

    # -- face location -----------------------------------------------------------------------------------
    def _box(self, img: np.ndarray, digest: str | None = None) -> np.ndarray | None:
        from facerestore.faces.detect import aligned_face_box, detect_faces

        if self.aligned:
            return aligned_face_box((img.shape[0], img.shape[1]))
        digest = digest or _digest(img)
        key = ("box", digest, self.detector, self.upsample, self.select)

        def find() -> np.ndarray | None:
            dets = detect_faces(img, self.detector, select=self.select, upsample=self.upsample)
            return dets[0].box.copy() if dets else None

        return _cached(key, find)

    def _landmarks68(self, img: np.ndarray, box: np.ndarray, digest: str | None = None) -> np.ndarray:
        from facerestore.faces.detect import predict_landmarks

        if digest is None:
            return predict_landmarks(img, box, 68)
        return _cached(("lm68", digest, tuple(box)), lambda: predict_landmarks(img, box, 68))

    def _embedding(self, img: np.ndarray, box: np.ndarray, digest: str | None = None) -> np.ndarray:
        from facerestore.faces.identity import dlib_embedding

        if digest is None:
            return dlib_embedding(img, box)
        return _cached(("emb", digest, tuple(box)), lambda: dlib_embedding(img, box))

    def _pair_score(self, pred: np.ndarray, target: np.ndarray, pbox: np.ndarray, tbox: np.ndarray,
                    tdigest: str) -> float:
        raise NotImplementedError

    def forward(self, pred: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        self.check_inputs(pred, target)
        assert target is not None
        preds = _to_uint8_batch(pred)
        targets = _to_uint8_batch(target)
        scores = []
        for p, t in zip(preds, targets):
            tdigest = _digest(t)
            tbox = self._box(t, tdigest)
            if tbox is None:
                scores.append(math.nan)
                continue
            pbox = tbox if self.pred_box == "target" else self._box(p)
            if pbox is None:
                scores.append(math.nan)
                continue
            scores.append(self._pair_score(p, t, pbox, tbox, tdigest))
        return torch.tensor(scores, dtype=torch.float32, device=pred.device)


class FED(_FaceMetric):
    """Feature embedding distance: L2 between dlib 128-d embeddings of prediction and reference (paper 000).

    (B,) scores, 0 for identical faces, < 0.6 for the same person (dlib's threshold); NaN without a face.
    """

    def _pair_score(self, pred, target, pbox, tbox, tdigest):
        from facerestore.faces.identity import embedding_distance

        return embedding_distance(self._embedding(pred, pbox), self._embedding(target, tbox, tdigest))


class IdentityAngle(_FaceMetric):
    """Identity angle "Deg." (paper 003): degrees between identity embeddings of prediction and reference.

    backend "dlib" (default, offline) or "arcface" (paper 003's network; zoo weights + onnxruntime).
    """

    def __init__(self, backend: str = "dlib", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        from facerestore.faces.identity import FaceEmbedder

        self.backend = backend
        self._embedder = FaceEmbedder(backend) if backend != "dlib" else None

    def _pair_score(self, pred, target, pbox, tbox, tdigest):
        from facerestore.faces.identity import embedding_angle_deg

        if self._embedder is None:
            ep = self._embedding(pred, pbox)
            et = self._embedding(target, tbox, tdigest)
        else:
            # ArcFace aligns on 5 points: take them from the reference's 68 landmarks (same box for both)
            from facerestore.faces.detect import landmarks_68_to_5

            lt = landmarks_68_to_5(self._landmarks68(target, tbox, tdigest))
            lp = lt if self.pred_box == "target" else landmarks_68_to_5(self._landmarks68(pred, pbox))
            ep = self._embedder.embed(pred, landmarks=lp)
            et = self._embedder.embed(target, landmarks=lt)
        return embedding_angle_deg(ep, et)


class IdentityDistanceMobileFace(_FaceMetric):
    """id_mobileface: cosine distance (1 - cos, in [0, 2]) between MobileFace 256-d embeddings of prediction and
    reference; an identity network independent of dlib's (FED's network, also a training loss of ours), and the
    one to trust for identity claims (ROC AUC 0.995 on ../shared/data/photos against id_mfn's 0.70).

    Both faces are warped onto ArcFace's 112 px template with the reference's 5 points (from its 68 dlib
    landmarks; ``pred_box="self"`` takes the prediction's own), or the FFHQ template with ``aligned=True``.
    Same person below ``facerestore.faces.identity.MOBILEFACE_SAME_PERSON_THRESHOLD`` (equal-error-rate threshold
    chosen on ../shared/data/photos). Zoo weights ``mobileface``; the network's licence is not stated: evaluation
    use only.
    """

    embedder_class = "MobileFaceEmbedder"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        from facerestore.faces import identity

        self._embedder = getattr(identity, self.embedder_class)()

    def _pair_score(self, pred, target, pbox, tbox, tdigest):
        from facerestore.faces.identity import mfn_distance

        key = self.embedder_class
        if self.aligned:
            ep = self._embedder.embed_aligned(pred)
            et = _cached((key, "aligned", tdigest), lambda: self._embedder.embed_aligned(target))
        else:
            from facerestore.faces.detect import landmarks_68_to_5

            lt = landmarks_68_to_5(self._landmarks68(target, tbox, tdigest))
            lp = lt if self.pred_box == "target" else landmarks_68_to_5(self._landmarks68(pred, pbox))
            ep = self._embedder(pred, lp)
            et = _cached((key, tdigest, tuple(tbox)), lambda: self._embedder(target, lt))
        return mfn_distance(ep, et)


class IdentityDistanceMFN(IdentityDistanceMobileFace):
    """id_mfn: cosine distance (1 - cos, in [0, 2]) between MobileFaceNet 192-d embeddings of prediction and
    reference, computed as ``id_mobileface`` with another network. **A weak judge**: ROC AUC 0.70 on
    ../shared/data/photos (the network maps every face to nearly the same direction, hence distances of ~1e-4);
    kept so the committed results that report it can be recomputed. Same person below
    ``facerestore.faces.identity.MFN_SAME_PERSON_THRESHOLD``. Zoo weights ``mobilefacenet``; the model's licence
    is not stated: evaluation use only.
    """

    embedder_class = "MobileFaceNetEmbedder"


class _LandmarkMetric(_FaceMetric):
    def __init__(self, normalize_size: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.normalize_size = normalize_size

    def _pair_landmarks(self, pred, target, pbox, tbox, tdigest) -> tuple[np.ndarray, np.ndarray]:
        lp = self._landmarks68(pred, pbox)
        lt = self._landmarks68(target, tbox, tdigest)
        if self.normalize_size:
            # express distances as if the image were normalize_size pixels wide (paper 003 works at 512)
            s = self.normalize_size / target.shape[1]
            lp, lt = lp * s, lt * s
        return lp, lt


class LLE(_LandmarkMetric):
    """Landmark localisation error / L2-LD: mean L2 distance (pixels) over dlib's 68 landmarks.

    ``normalize_size``: report pixels of an image rescaled to this width (default: the input's pixels).
    """

    def _pair_score(self, pred, target, pbox, tbox, tdigest):
        lp, lt = self._pair_landmarks(pred, target, pbox, tbox, tdigest)
        return landmark_l2_distance(lp, lt)


class ALD(_LandmarkMetric):
    """Affine landmark distance A-LD (paper 003, eq. 14-15) on a landmark region.

    Args:
        region: "all" (68 points), "eyes" (eyes + eyebrows, 22) or "mouth" (outer mouth border, 12).
        weights: optional (N,) positive per-landmark weights of the region (default 1, as the paper gives none).
        reduction: "sum" (eq. 14, default), "mean" or "mean_distance" (see affine_landmark_distance).
        normalize_size: as LLE.
    """

    def __init__(self, region: str = "all", weights: Any = None, reduction: str = "sum", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if region not in ALD_REGIONS:
            raise InputError(f"A-LD region must be one of {', '.join(ALD_REGIONS)}, got {region!r}")
        self.region = region
        self.idx = list(ALD_REGIONS[region])
        self.weights = None if weights is None else np.asarray(weights, np.float64)
        if self.weights is not None and self.weights.shape != (len(self.idx),):
            raise InputError(f"A-LD weights for region {region!r} must have {len(self.idx)} values")
        if reduction not in ("sum", "mean", "mean_distance"):
            raise InputError(f"A-LD reduction must be 'sum', 'mean' or 'mean_distance', got {reduction!r}")
        self.reduction = reduction

    def _pair_score(self, pred, target, pbox, tbox, tdigest):
        lp, lt = self._pair_landmarks(pred, target, pbox, tbox, tdigest)
        return float(affine_landmark_distance(lp[self.idx], lt[self.idx], self.weights, self.reduction))


__all__ = [
    "ALD",
    "ALD_REGIONS",
    "FED",
    "LLE",
    "IdentityAngle",
    "IdentityDistanceMFN",
    "affine_landmark_distance",
    "best_affine",
    "clear_cache",
    "fed_distance",
    "landmark_l2_distance",
]
