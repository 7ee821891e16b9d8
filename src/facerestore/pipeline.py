"""Photo pipeline: photo -> faces -> restorer -> paste-back (used by the CLI and the API).

    >>> from facerestore import restore_photo
    >>> res = restore_photo("photo.jpg", "ispl", upscale=2)
    >>> res.image.shape, len(res.faces), res.faces[0].identity_similarity

Plain functions, each one step:

- :func:`resolve_restorer`: a method name (loaded once per process, :func:`get_restorer`) or a ready
  :class:`~facerestore.methods.Restorer`; options checked before any work;
- :func:`restore_crops`: (S, S, 3) crops through the restorer in batches (the restorer resizes them to its
  own size and back: :meth:`Restorer.restore`); :func:`restore_crops_with_refs` also decides, face by face, whether
  the reference photos are the face's person (:class:`RefsUse`);
- :func:`restore_aligned`: an FFHQ-aligned square crop, restored and resized to the output size;
- :func:`restore_faces_in_photo`: detect -> align on the FFHQ template at ``face_size`` -> restore ->
  identity check -> paste into the background upscaled by ``upscale``;
- :func:`restore_photo`: reads the image (:func:`facerestore.io.as_image`: EXIF orientation, 16-bit, gray,
  alpha), runs one of the two paths and re-attaches alpha / gray; :func:`write_photo_json` writes its record.

The output of a photo has exactly ``round(upscale * H) x round(upscale * W)`` pixels. A photo without
faces is not an error: the background is upscaled and the result lists 0 faces.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facerestore import io
from facerestore.errors import FaceRestoreError, InputError, RefsMismatchError
from facerestore.faces.align import inside_photo
from facerestore.faces.detect import Detector, FaceDetection, landmarks68_for
from facerestore.faces.identity import FaceEmbedder
from facerestore.methods import Restorer, load_restorer, resize_crop
from facerestore.methods.restorer import REFS_MAX_DISTANCE, check_unit_interval, refs_mismatch_message
from facerestore.quality_gate import GateDecision, gate_face

__all__ = [
    "FaceResult",
    "IdentityReport",
    "PasteShares",
    "PhotoResult",
    "RefsTracks",
    "RefsUse",
    "align_detections",
    "choose_reference_faces",
    "clear_restorer_cache",
    "crop_side",
    "decide_paste",
    "default_upscale",
    "detector_licence",
    "get_restorer",
    "guard_occlusion",
    "prepare_refs",
    "refs_threshold",
    "resolve_restorer",
    "restore_aligned",
    "restore_crops",
    "restore_crops_with_refs",
    "restore_faces_in_photo",
    "restore_photo",
    "write_photo_json",
]

ImageInput = str | os.PathLike | np.ndarray | io.LoadedImage
Background = str | Callable[[np.ndarray, float], np.ndarray]


# dlib's same-person threshold on the Euclidean distance of its 128-d embeddings (dlib's documentation; ROC AUC
# 0.9999 on ../shared/data/photos pairs, tests/metrics)
DLIB_SAME_PERSON = 0.6


@dataclass
class IdentityReport:
    """Did restoration keep who the face shows? The input crop and the restored crop compared by two networks.

    similarity / distance: dlib's 128-d embeddings, cosine similarity in [-1, 1] and Euclidean distance
        (< 0.6 = same person, AUC 0.9999 on the photo pairs); dlib's network is also ISPL's training identity
        loss, so it is not independent of that method.
    distance_mobileface / threshold_mobileface: MobileFace's cosine distance (a network no loss of ours uses;
        evaluation use only) and its equal-error-rate threshold on ../shared/data/photos (ROC AUC 0.995 there):
        the independent second opinion, reported beside the flag.
    changed: the dlib distance is over 0.6 (None when not measured).
    """

    similarity: float | None = None
    distance: float | None = None
    distance_mobileface: float | None = None
    threshold_mobileface: float | None = None

    @property
    def changed(self) -> bool | None:
        return None if self.distance is None else bool(self.distance > DLIB_SAME_PERSON)

    def to_json(self) -> dict[str, Any]:
        return {"identity_similarity": self.similarity, "identity_distance": self.distance,
                "identity_threshold": DLIB_SAME_PERSON, "identity_changed": self.changed,
                "identity_distance_mobileface": self.distance_mobileface,
                "identity_threshold_mobileface": self.threshold_mobileface}


# The reference check's threshold follows the detail the face still has (chosen on synthetic validation persons;
# tested on the photo persons: benchmarks/results/refs_check.md). dlib separates persons well on sharp faces and
# poorly on heavily degraded ones, whose embedding drifts even for the right person: a face as sharp as every clean
# validation face (face_sharpness >= 3e-3) is held to 0.65 (every right reference set of the clean validation faces
# passes at 64 and 128 px, 11 of 12 at 512), one as soft as the x8-degraded ones (<= 3e-4) to REFS_MAX_DISTANCE
# (0.75, where the methods' own check stops), log-linear in between. On clean photo faces another person's photos
# passed 0.75 in 30-60% of the cases and pass 0.65 in 0-10%, with no right set refused.
REFS_SHARP_DISTANCE = 0.65
REFS_SHARP_DETAIL, REFS_SOFT_DETAIL = 3e-3, 3e-4


def refs_threshold(crop: np.ndarray) -> float:
    """The reference check's threshold for one aligned face crop (S, S, 3) float32 in [0, 1]: REFS_SHARP_DISTANCE
    (0.65) for a sharp face, ``REFS_MAX_DISTANCE`` (0.75) for a blurred or tiny one, log-linear in its detail
    (:func:`facerestore.quality_gate.face_sharpness`) between ``REFS_SOFT_DETAIL`` and ``REFS_SHARP_DETAIL``."""
    from facerestore.quality_gate import face_sharpness

    detail = face_sharpness(np.asarray(crop, np.float32))
    if not np.isfinite(detail) or detail <= REFS_SOFT_DETAIL:
        return REFS_MAX_DISTANCE
    soft = (np.log(REFS_SHARP_DETAIL) - np.log(detail)) / (np.log(REFS_SHARP_DETAIL) - np.log(REFS_SOFT_DETAIL))
    return float(REFS_SHARP_DISTANCE + (REFS_MAX_DISTANCE - REFS_SHARP_DISTANCE) * np.clip(soft, 0.0, 1.0))


@dataclass(frozen=True)
class RefsUse:
    """How one face used the reference photos (``--refs``).

    Attributes:
        distance: the reference check's distance: the median dlib distance between the face (as the method sees it)
            and the references; None when the method does not check its references or ignores them
            (``ref_weight`` 0).
        used: the references guided this face's restoration (the check passed, or ``force_refs``); False for a
            face of another person in the photo, restored without them.
        forced: ``force_refs`` was given (the check's verdict did not decide).
        threshold: the check's threshold for this face (:func:`refs_threshold`: 0.65 for sharp faces up to 0.75
            for blurred ones); None when the method does not check.
        narrow: the references passed the check with a distance over dlib's same-person threshold (0.6): on heavily
            degraded faces the check cannot tell people apart there (``benchmarks/results/refs_check.md``: on blind-
            and x8-degraded photo faces at 128 px, 45% of the right persons' and 35% of other persons' references
            fall between 0.6 and 0.75), so the user should make sure they show this person.
    """

    distance: float | None
    used: bool
    forced: bool = False
    threshold: float | None = None

    @property
    def narrow(self) -> bool:
        return bool(self.used and not self.forced and self.distance is not None and self.distance > DLIB_SAME_PERSON)

    def to_json(self, given: bool = True) -> dict[str, Any]:
        """The per-face record's fields; ``given=False``: no references were given (all None)."""
        if not given:
            return {"refs_used": None, "refs_forced": None, "refs_narrow": None, "refs_distance": None,
                    "refs_threshold": None}
        return {"refs_used": bool(self.used), "refs_forced": bool(self.forced), "refs_narrow": self.narrow,
                "refs_distance": None if self.distance is None else round(float(self.distance), 4),
                "refs_threshold": None if self.threshold is None else round(float(self.threshold), 4)}


@dataclass
class FaceResult:
    """One restored face of a photo.

    Attributes:
        box: (4,) float64 (x0, y0, x1, y1) detector box in input pixels (the whole crop in aligned mode).
        score: detector score (NaN in aligned mode).
        landmarks5: (5, 2) float64 (x, y) in input pixels.
        landmarks68: (68, 2) float64 or None.
        affine: (2, 3) float64 input pixel -> crop pixel.
        input_crop: (S, S, 3) float32 in [0, 1], the aligned input face (S = face_size).
        restored_crop: (S, S, 3) float32 in [0, 1], the restorer's output at the same size.
        identity: :class:`IdentityReport` of the input crop vs the restored crop (None when identity is off).
        gate: the quality gate's decision (:mod:`facerestore.quality_gate`; None when the gate is off).
        paste_weight: share of ``restored_crop`` in the result, in [0, 1]: ``blend`` times the gate's weight
            (0 = the face kept as it was in the photo).
        occlusion: (S, S) float32 in [0, 1], the occlusion guard's mask (:mod:`facerestore.occlusion`: 1 = the
            photo's own pixels kept, the paste mask is multiplied by ``1 - occlusion``); None when the guard is off
            or the face is not pasted. occluded_share: its mean over the template's face ellipse.
        refs: how this face used the reference photos (:class:`RefsUse`; None when no references were given).
        mask: the paste mask this face got: "mesh", "landmarks" or "square" (a finer mask the face could not get
            falls back: no Face Mesh weights or no mesh found for it, no 68 points), None in aligned mode.
    """

    box: np.ndarray
    score: float
    landmarks5: np.ndarray
    landmarks68: np.ndarray | None
    affine: np.ndarray
    input_crop: np.ndarray
    restored_crop: np.ndarray
    identity: IdentityReport | None = None
    gate: GateDecision | None = None
    paste_weight: float = 1.0
    occlusion: np.ndarray | None = None
    occluded_share: float | None = None
    refs: RefsUse | None = None
    mask: str | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready summary (no pixel arrays)."""
        return {
            "box": [float(v) for v in self.box],
            "score": None if not np.isfinite(self.score) else float(self.score),
            "landmarks5": np.asarray(self.landmarks5, float).tolist(),
            "landmarks68": None if self.landmarks68 is None else np.asarray(self.landmarks68, float).tolist(),
            "affine": np.asarray(self.affine, float).tolist(),
            "crop_size": int(self.input_crop.shape[0]),
            "mask": self.mask,
            **(self.identity or IdentityReport()).to_json(),
            "paste_weight": round(float(self.paste_weight), 4),
            "occluded_share": None if self.occluded_share is None else round(float(self.occluded_share), 4),
            "gate": None if self.gate is None else self.gate.to_json(),
            **(self.refs or RefsUse(None, False)).to_json(given=self.refs is not None),
        }

    @property
    def identity_similarity(self) -> float | None:
        return None if self.identity is None else self.identity.similarity

    @property
    def identity_distance(self) -> float | None:
        return None if self.identity is None else self.identity.distance


@dataclass
class PhotoResult:
    """The restored photo and what was done to it.

    Attributes:
        image: (H', W', 3) float32 RGB in [0, 1], H' = round(upscale * H), W' = round(upscale * W)
            (gray inputs: the three channels are equal).
        alpha: (H', W') float32 in [0, 1] or None.
        is_gray: the input had one colour channel (write it back as gray).
        bit_depth: 8 or 16, the input's depth (write 16-bit formats back as 16-bit).
        faces: one :class:`FaceResult` per restored face, in detection order (score, then x).
        timings: seconds per stage ("load", "read", "detect", "align", "restore", "identity", "paste", "total").
        method: the restorer's spec as recorded (name, paper, weights licence, trained-on tasks, precision);
        fidelity: the fidelity the method ran at (the method's default when none was asked; None for methods
        without the knob); fidelity_requested: what the caller asked (None = default); blend: the user's share of
        the restored faces (times each face's gate weight); occlusion_guard: the occlusion guard was on
        (:mod:`facerestore.occlusion`); upscale: the scale factor;
        input_size: (W, H) of the input; aligned: aligned-crop mode; detector: its name (None when aligned);
        refs_count: the number of reference faces given (0: none; how each face used them: ``FaceResult.refs``).
        faces_not_aligned: detected faces that could not be cropped (almost entirely outside the photo, degenerate
            landmarks): left as the photo has them (a warning names each).
    """

    image: np.ndarray
    alpha: np.ndarray | None
    is_gray: bool
    bit_depth: int
    faces: list[FaceResult]
    timings: dict[str, float]
    method: str
    fidelity: float | None
    upscale: float
    input_size: tuple[int, int] = (0, 0)
    aligned: bool = False
    detector: str | None = None
    path: Path | None = None
    metadata: io.ImageMetadata = field(default_factory=io.ImageMetadata)  # the input's EXIF, ICC profile, XMP, IPTC
    restorer: dict[str, Any] = field(default_factory=dict)
    fidelity_requested: float | None = None
    blend: float = 1.0
    gate: bool = True
    occlusion_guard: bool = True
    refs_count: int = 0
    faces_not_aligned: int = 0

    @property
    def num_faces(self) -> int:
        return len(self.faces)

    def save(self, path: str | os.PathLike, *, protect: Sequence[str | os.PathLike] = (),
             jpeg_quality: int | None = None) -> Path:
        """Write the restored photo to ``path`` as ``facerestore restore`` does: the format from the extension
        (:data:`facerestore.io.IMAGE_EXTENSIONS`; :func:`facerestore.io.output_extension` picks the CLI's), the
        input's alpha channel, bit depth, gray and metadata (EXIF and XMP with their orientation reset: the pixels
        are upright; the ICC colour profile; IPTC in JPEG: :func:`facerestore.io.with_metadata`), written
        atomically; a JPEG at ``jpeg_quality``, or by default at 95 or the input JPEG's quality when higher, with its
        chroma subsampling (:func:`facerestore.io.write_image`). The input photo (``path`` of this result) and
        every file in ``protect`` are never overwritten (:class:`~facerestore.errors.OutputError`). Returns the
        written path."""
        inputs = [*protect, *([self.path] if self.path is not None else [])]
        return io.write_image(path, self.image, alpha=self.alpha, bit_depth=self.bit_depth, gray=self.is_gray,
                              jpeg_quality=jpeg_quality, protect=inputs, metadata=self.metadata)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready record: sizes, method and its weights' licence, per-face boxes/scores/landmarks/identity,
        timings (no arrays)."""
        from facerestore._version import __version__

        return {
            "input": None if self.path is None else str(self.path),
            "input_size": [int(v) for v in self.input_size],
            "output_size": [int(self.image.shape[1]), int(self.image.shape[0])],
            "method": self.method,
            "restorer": dict(self.restorer),
            "fidelity": self.fidelity,
            "fidelity_requested": self.fidelity_requested,
            "blend": float(self.blend),
            "quality_gate": self.gate,
            "occlusion_guard": self.occlusion_guard,
            "faces_kept": sum(1 for f in self.faces if f.paste_weight == 0.0),
            "faces_not_aligned": int(self.faces_not_aligned),
            "refs_count": int(self.refs_count),
            "faces_with_refs": sum(1 for f in self.faces if f.refs is not None and f.refs.used),
            "upscale": float(self.upscale),
            "aligned": self.aligned,
            "detector": self.detector,
            "detector_licence": detector_licence(self.detector),
            "is_gray": self.is_gray,
            "bit_depth": self.bit_depth,
            "color_profile": io.icc_description(self.metadata.icc_profile),
            "has_alpha": self.alpha is not None,
            "num_faces": self.num_faces,
            "faces": [f.to_json() for f in self.faces],
            "timings": {k: round(float(v), 6) for k, v in self.timings.items()},
            "version": __version__,
        }


def detector_licence(name: str | None) -> str | None:
    """The licence of detector ``name``'s weights (faces.detect.DETECTORS; "auto" and aliases resolved), None when
    unknown (aligned mode, a custom detector object)."""
    if not name:
        return None
    from facerestore.faces.detect import DETECTORS, canonical_detector_name

    try:
        n = canonical_detector_name(name)
    except InputError:
        return None
    return next((s.licence for s in DETECTORS if s.name == n), None)


def write_photo_json(path: str | os.PathLike, result: PhotoResult, *, protect: Sequence[str | os.PathLike] = (),
                     **extra: Any) -> Path:
    """Write ``result.to_json()`` plus ``extra`` fields atomically to ``path`` (the one per-photo record).

    ``extra["faces"]``, when given, is a list of dicts merged into the per-face records (e.g. their file names).
    """
    record = result.to_json()
    face_extra = extra.pop("faces", None)
    record.update(extra)
    if face_extra is not None:
        for rec, more in zip(record["faces"], face_extra):
            rec.update(more)
    target = Path(path)
    if any(Path(p).resolve() == target.resolve() for p in protect):
        raise InputError(f"refusing to overwrite input file {target}")
    return io.atomic_write_json(target, record)


# --------------------------------------------------------------------------------------------------
# restorers

_RESTORERS: dict[tuple[Any, ...], Restorer] = {}
_RESTORERS_LOCK = threading.Lock()
_LOADING: dict[tuple[Any, ...], threading.Lock] = {}  # one lock per key being loaded
MAX_CACHED_RESTORERS = 4


def get_restorer(name: str, *, weights: str | os.PathLike | None = None, device: str = "cpu",
                 half: bool = False, steps: int | None = None) -> Restorer:
    """Load restorer ``name`` once per (name, weights, device, half, steps) and return the cached one (``half``:
    :meth:`Restorer.set_half`, fp16 on CUDA/MPS, bf16 on CPU; refused where the spec lacks it; ``steps``: the
    optimisation budget per face of the slow methods, :meth:`Restorer.budget_options`). The cache keeps the
    ``MAX_CACHED_RESTORERS`` most recently used (a server whose users try many step budgets would otherwise hold
    one generator per value); thread-safe."""
    key = (name, None if weights is None else os.fspath(weights), str(device), bool(half), steps)
    with _RESTORERS_LOCK:
        if key in _RESTORERS:
            _RESTORERS[key] = _RESTORERS.pop(key)  # most recently used last
            return _RESTORERS[key]
        key_lock = _LOADING.setdefault(key, threading.Lock())
    # loaded outside the cache's lock (another thread's hit never waits for this load), once per key
    with key_lock:
        with _RESTORERS_LOCK:
            if key in _RESTORERS:
                return _RESTORERS[key]
        from facerestore.methods import registry

        options = {} if steps is None else registry.REGISTRY.restorer_class(name).budget_options(steps)
        restorer = load_restorer(name, weights=key[1], device=device, half=half, **options)
        with _RESTORERS_LOCK:
            _RESTORERS[key] = restorer
            _LOADING.pop(key, None)
            while len(_RESTORERS) > MAX_CACHED_RESTORERS:
                _RESTORERS.pop(next(iter(_RESTORERS)))  # the least recently used
        return restorer


def clear_restorer_cache() -> None:
    """Forget every cached restorer (frees their memory)."""
    _RESTORERS.clear()


def resolve_restorer(restorer: str | Restorer, *, weights: str | os.PathLike | None = None, device: str = "cpu",
                     half: bool = False) -> Restorer:
    """The restorer to use: a method name (cached, :func:`get_restorer`) or a :class:`Restorer` object (used as
    is; ``half=True`` switches that object to reduced precision with :meth:`Restorer.set_half`)."""
    if isinstance(restorer, str):
        return get_restorer(restorer, weights=weights, device=device, half=half)
    if not isinstance(restorer, Restorer):
        raise InputError(f"restorer must be a method name or a Restorer, got {type(restorer).__name__}")
    if weights is not None:
        raise InputError("weights= applies only to a restorer given by name")
    if half and restorer.precision == "fp32":
        restorer.set_half(True)
    return restorer


def _to_batch(crops: Sequence[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack([c.transpose(2, 0, 1) for c in crops])).float()


def _from_batch(x: torch.Tensor) -> list[np.ndarray]:
    return list(np.ascontiguousarray(x.permute(0, 2, 3, 1).cpu().numpy(), dtype=np.float32))


def restore_crops(restorer: Restorer, crops: Sequence[np.ndarray], *, fidelity: float | None = None,
                  refs: torch.Tensor | None = None, batch_size: int = 4, force_refs: bool = False) -> list[np.ndarray]:
    """Restore (S, S, 3) float32 crops in [0, 1], ``batch_size`` of one size at a time -> crops of the same sizes
    (S may differ between crops), in the input order. With ``refs``: :func:`restore_crops_with_refs`."""
    return restore_crops_with_refs(restorer, crops, fidelity=fidelity, refs=refs, batch_size=batch_size,
                                   force_refs=force_refs)[0]


def restore_crops_with_refs(restorer: Restorer, crops: Sequence[np.ndarray], *, fidelity: float | None = None,
                            refs: torch.Tensor | None = None, batch_size: int = 4,
                            force_refs: bool = False, refs_required: bool = True,
                            decide: Callable[[int, RefsUse], bool] | None = None,
                            ) -> tuple[list[np.ndarray], list[RefsUse | None]]:
    """:func:`restore_crops` that also says, per crop, how the reference photos were used.

    A method that checks its references (``checks_refs``: honestface, prior-sft, robust-inversion, rls, rls-plus)
    is asked first for each face's check distance (:meth:`Restorer.refs_distances`, cheap: no restoration). A face
    whose distance exceeds its threshold (:func:`refs_threshold`: 0.65 for a sharp face, up to the methods' own 0.75
    for a blurred one; another person in a group photo) is restored without the references; when no face passes,
    nothing is restored and one :class:`RefsMismatchError` line says so.
    ``refs_required=False`` (video frames, where the person may turn away for a while): no error, every face that does
    not pass is restored without them. ``decide(k, check)``: the final say for crop k given its check (the video
    loop's :class:`RefsTracks`). ``force_refs``: every face uses the references whatever its distance.
    Methods that take references without
    checking them use them for every face (distance None). Returns (crops, one :class:`RefsUse` per crop, or
    None per crop without ``refs``)."""
    n = len(crops)
    uses: list[RefsUse | None] = [None] * n
    if refs is not None:
        force = bool(force_refs)
        if getattr(restorer, "checks_refs", False):
            found = [restorer.refs_distances(_to_batch([c]), refs) for c in crops]
            if any(f is None for f in found):  # the method ignores references (its ref_weight is 0)
                uses = [RefsUse(None, False, force)] * n
            else:
                dists = [float(f[0]) for f in found]
                limits = [refs_threshold(c) for c in crops]
                uses = [RefsUse(d, force or d <= t, force, t) for d, t in zip(dists, limits)]
                if decide is not None and not force:
                    uses = [dataclasses.replace(u, used=bool(decide(k, u))) for k, u in enumerate(uses)]
                if dists and refs_required and not force and not any(u.used for u in uses):
                    i = int(np.argmin(np.array(dists) - np.array(limits)))  # the face closest to passing
                    raise RefsMismatchError(refs_mismatch_message(dists[i], limits[i], faces=n), dists[i])
        else:
            uses = [RefsUse(None, True, force)] * n
    # the check was made above: faces it passed are restored with force_refs so that the method does not refuse a
    # face whose distance rounds differently inside its batch
    opts = {"force_refs": True} if refs is not None and getattr(restorer, "checks_refs", False) else {}
    out: list[np.ndarray | None] = [None] * n
    # crops of one size (and reference use) share batches; a restorer that follows the crops by position (the video
    # loop's temporal blender) gets them in their order: only neighbouring crops are batched together
    ordered = bool(getattr(restorer, "needs_crop_order", False))
    size = int(restorer.spec.size)
    inner = restorer
    while getattr(inner, "inner", None) is not None:  # the video loop's wrappers delegate to the method
        inner = inner.inner
    keyed = type(inner).batch_key is not Restorer.batch_key  # a method whose work follows the batch
    groups: dict[tuple[Any, ...], list[int]] = {}
    run, last = 0, None
    for i, c in enumerate(crops):
        method_key = restorer.batch_key(resize_crop(_to_batch([c]), (size, size))) if keyed else None
        key = (int(c.shape[0]), uses[i] is not None and uses[i].used, method_key)
        run += int(ordered and last is not None and key != last)
        last = key
        groups.setdefault((run if ordered else 0, *key), []).append(i)
    for (_, s, with_refs, _), idx in groups.items():
        for k in range(0, len(idx), batch_size):
            chunk = idx[k : k + batch_size]
            batch = _to_batch([crops[i] for i in chunk])
            if with_refs:
                y = restorer.restore(batch, fidelity=fidelity, refs=refs, size=(s, s), **opts)
            else:
                y = restorer.restore(batch, fidelity=fidelity, size=(s, s))
            for i, r in zip(chunk, _from_batch(y)):
                out[i] = r
    return [r for r in out if r is not None], uses


def default_upscale(aligned: bool, side: int, restorer: Restorer) -> float:
    """The output scale when none is asked: 2 for photos; for aligned crops the restorer's own size (a 512 model
    returns 512 px faces), never smaller than the crop (``max(side, spec.size) / side``)."""
    if not aligned:
        return 2.0
    return max(int(side), int(restorer.spec.size)) / float(side)


NATIVE_CROP_MAX = 1024  # px: crops follow a large face's footprint up to this side even beyond the model's size


def crop_side(face_scale: float, upscale: float, face_size: int, model_size: int) -> int:
    """Side of one face's aligned crop: ``face_size``, or more when the face covers more pixels in the output photo,
    up to ``max(face_size, model_size, NATIVE_CROP_MAX)``.

    A large face is not shrunk before the restorer sees it (then enlarged again by the paste). Beyond the model's
    own size the restorer gains nothing (it resizes the crop to its size), but the paste does: the face is blended
    with the photo's own pixels at their resolution, so a blend the quality gate chose keeps the photo's share of
    the detail. With 512 px crops of a 770 px face, a 50% blend kept 43-65% of the face's Laplacian energy
    (``benchmarks/whole_photo_gate.py``).

    ``face_scale``: crop pixels per photo pixel of the face aligned at 512 (``affine_scale`` of its affine)."""
    footprint = int(np.ceil(512.0 / max(float(face_scale), 1e-9) * float(upscale)))
    return int(min(max(face_size, footprint), max(face_size, model_size, NATIVE_CROP_MAX)))


def choose_reference_faces(embeddings: Sequence[Sequence[np.ndarray | None]]) -> list[int]:
    """Which face of each reference photo shows the person: ``embeddings[p][k]`` is the (128,) dlib embedding of
    face k of photo p (largest face first; None when it could not be computed). Photos with one face fix the person
    (their mean embedding); without any, the largest faces do. Each photo then takes its face nearest that mean,
    and the mean is recomputed from the choices once more. Returns one face index per photo (0: the largest)."""
    def mean(chosen: list[int]) -> np.ndarray | None:
        vs = [e[k] for e, k in zip(embeddings, chosen) if len(e) > k and e[k] is not None]
        return np.mean(vs, axis=0) if vs else None

    def nearest(faces: Sequence[np.ndarray | None], center: np.ndarray) -> int:
        if len(faces) < 2 or all(v is None for v in faces):
            return 0
        return int(np.argmin([np.inf if v is None else np.linalg.norm(v - center) for v in faces]))

    n = len(embeddings)
    singles = [e[0] for e in embeddings if len(e) == 1 and e[0] is not None]
    center = np.mean(singles, axis=0) if singles else mean([0] * n)
    if center is None:
        return [0] * n
    chosen = [nearest(e, center) for e in embeddings]
    center = mean(chosen)  # once more around the mean of every photo's choice
    return chosen if center is None else [nearest(e, center) for e in embeddings]


def prepare_refs(refs: Any, size: int, *, aligned: bool = False, detector: str | Detector = "hog",
                 device: str | torch.device = "cpu") -> torch.Tensor | None:
    """Reference faces for reference-based methods -> (R, 3, size, size) float tensor on ``device``.

    ``refs``: None, a tensor (returned as is), or a sequence of images / paths: with ``aligned=True`` they
    are aligned face crops and only resized; otherwise the person's face of each photo is aligned on the FFHQ
    template (InputError when a photo has no face). A photo with several faces (grandma with grandpa) gives the
    face that matches the other photos' person by dlib identity (:func:`choose_reference_faces`), not simply the
    largest one.
    """
    if refs is None or isinstance(refs, torch.Tensor):
        return refs
    from facerestore.faces.align import align_face
    from facerestore.faces.detect import select_faces
    from facerestore.faces.identity import detection_embedding

    images, found = [], []
    for k, r in enumerate(refs):
        loaded = io.as_image(r)
        img = loaded.rgb
        if not aligned:
            dets = detect_and_select(img, detector)  # a 48 MP camera photo is detected on a 4 MP copy, as photos are
            if not dets:  # named by its file (a decoded image remembers it: the web page's uploads), else by number
                where = r if isinstance(r, (str, Path)) else loaded.path
                raise InputError("no face found in reference image "
                                 + (io.display_path(Path(where)) if where is not None else f"number {k + 1}"))
            largest = select_faces(dets, "largest", img.shape)[0]
            dets = [largest, *[d for d in dets if d is not largest]]
            found.append(dets)
        images.append(img)
    if not aligned:
        choice = [0] * len(images)
        if any(len(d) > 1 for d in found):
            choice = choose_reference_faces([[detection_embedding(img, d) for d in dets]
                                             for img, dets in zip(images, found)])
        images = [align_face(img, dets[k].landmarks5, size=size).crop for img, dets, k in zip(images, found, choice)]
    crops = [resize_crop(_to_batch([img]), (size, size))[0] for img in images]
    return torch.stack(crops).to(device) if crops else None


def _check_dlib_embedder(embedder: FaceEmbedder) -> None:
    """InputError unless ``embedder`` is dlib's: the quality gate's and the identity report's thresholds (0.6) are
    on its 128-d scale (MobileFace's unit vectors sit near 1.2 for one person, ArcFace's far above)."""
    if getattr(embedder, "backend", "dlib") != "dlib":
        raise InputError(f"the quality gate and the identity report measure with dlib's 128-d network (their "
                         f"thresholds are on its scale), not {embedder.backend!r}: pass FaceEmbedder('dlib')")


def compare_identity(embedder: FaceEmbedder | None, a: np.ndarray, b: np.ndarray) -> IdentityReport | None:
    """:class:`IdentityReport` of two aligned crops (None without an embedder). Each network that cannot run
    (weights not cached: nothing is ever downloaded) leaves its fields None; identity is informative, never
    required."""
    from facerestore.faces.identity import (
        MOBILEFACE_SAME_PERSON_THRESHOLD,
        MobileFaceEmbedder,
        cosine_similarity,
        embedding_distance,
        mfn_distance,
    )

    if embedder is None:
        return None
    _check_dlib_embedder(embedder)
    report = IdentityReport()
    try:
        ea, eb = embedder.embed(a, aligned=True), embedder.embed(b, aligned=True)
        if ea is not None and eb is not None:
            sim = cosine_similarity(ea, eb)
            report.similarity = None if not np.isfinite(sim) else float(sim)
            report.distance = float(embedding_distance(ea, eb))
    except (FaceRestoreError, RuntimeError, ImportError, OSError):
        pass
    try:
        net = MobileFaceEmbedder()
        d = mfn_distance(net.embed_aligned(a), net.embed_aligned(b))
        if d is not None and np.isfinite(d):
            report.distance_mobileface, report.threshold_mobileface = float(d), MOBILEFACE_SAME_PERSON_THRESHOLD
    except (FaceRestoreError, RuntimeError, ImportError, OSError):
        pass
    return report


def _dlib_distance(embedder: FaceEmbedder | None) -> Callable[[np.ndarray, np.ndarray], float | None] | None:
    """dlib's 128-d distance of two aligned crops for the quality gate (None without an embedder); the first
    crop's embedding is computed once (the gate compares one input with several candidates)."""
    if embedder is None:
        return None
    _check_dlib_embedder(embedder)
    from facerestore.faces.identity import embedding_distance

    first: list[Any] = []

    def distance(a: np.ndarray, b: np.ndarray) -> float | None:
        try:
            if not first:
                first.append(embedder.embed(a, aligned=True))
            ea, eb = first[0], embedder.embed(b, aligned=True)
        except (FaceRestoreError, RuntimeError, ImportError, OSError):
            return None
        return None if ea is None or eb is None else float(embedding_distance(ea, eb))

    return distance


NON_FINITE = "kept: the restorer returned NaN or infinite values"


def _non_finite(crops: Sequence[np.ndarray]) -> list[bool]:
    """Per restored crop: does it hold NaN or inf (a diverged optimisation, fp16 overflow)? Such a face keeps the
    photo's pixels (its record says why) instead of spreading NaN through colour matching and the paste."""
    bad = [not bool(np.isfinite(c).all()) for c in crops]
    if any(bad):
        import warnings

        warnings.warn(f"{sum(bad)} restored face(s) held NaN or infinite values and were not pasted "
                      "(with --half, try full precision)", stacklevel=3)
    return bad


def decide_paste(input_crop: np.ndarray, restored_crop: np.ndarray, *, blend: float = 1.0, gate: bool = True,
                 embedder: FaceEmbedder | None = None,
                 valid: np.ndarray | None = None) -> tuple[float, GateDecision | None]:
    """(paste weight in [0, 1], the gate's decision or None): ``blend`` times the share of the restoration that
    the quality gate (:func:`facerestore.quality_gate.gate_face`) lets through; 1 * blend without the gate.
    ``valid``: the input crop's pixels inside the photo (:func:`inside_photo`)."""
    if not gate or blend == 0.0:
        return float(blend), None
    decision = gate_face(input_crop, restored_crop, identity_distance=_dlib_distance(embedder), valid=valid)
    return float(blend) * decision.weight, decision


def guard_occlusion(input_crop: np.ndarray, restored_crop: np.ndarray, weight: float, *, on: bool = True,
                    valid: np.ndarray | None = None) -> tuple[np.ndarray | None, float | None]:
    """(the occlusion guard's (S, S) mask, its occluded share) for a face pasted at ``weight``
    (:func:`facerestore.occlusion.occlusion_mask`, :func:`~facerestore.occlusion.occluded_share`); (None, None) when
    the guard is off or nothing is pasted. ``valid``: the input crop's pixels inside the photo."""
    if not on or weight == 0.0:
        return None, None
    from facerestore.occlusion import occluded_share, occlusion_mask

    mask = occlusion_mask(input_crop, restored_crop, valid=valid)
    return mask, occluded_share(mask, valid)


class PasteShares:
    """How a caller (the video loop) keeps the quality gate's decisions consistent over time: per detection index of
    the current frame, ``needs_gate(i)`` says whether to run the gate for that face now, and ``share(i, decision)``
    turns the gate's decision (None when it was not run) into the share of the restoration to paste, in [0, 1]
    (``blend`` is applied on top). :class:`facerestore.video.TrackGate` is the implementation."""

    def needs_gate(self, index: int) -> bool:
        raise NotImplementedError

    def share(self, index: int, decision: GateDecision | None) -> float:
        raise NotImplementedError


class RefsTracks:
    """How a caller (the video loop) keeps each face's use of the reference photos consistent over time: per
    detection index of the current frame, ``decide(i, check)`` turns that face's reference check (:class:`RefsUse`,
    its ``used`` the check's verdict) into whether the references guide it. :class:`facerestore.video.TrackRefs` is
    the implementation (once a track's face matched, the references keep guiding that track)."""

    def decide(self, index: int, check: RefsUse) -> bool:
        raise NotImplementedError


def _background(background: Background) -> Callable[[np.ndarray, float], np.ndarray] | None:
    from facerestore.faces.paste import UPSCALE_METHODS, upscale_image

    if callable(background):
        return background
    if background == "esrgan":
        # ESRGAN-thick on CPU, in tiles (facerestore.faces.background); WeightsMissingError when not cached
        from facerestore.faces.background import esrgan_background

        return esrgan_background()
    if background not in UPSCALE_METHODS:
        raise InputError(f"background must be a callable, 'esrgan' or one of {', '.join(UPSCALE_METHODS)}, "
                         f"got {background!r}")
    if background == "lanczos":
        return None  # paste_faces' default
    return lambda img, s: upscale_image(img, s, background)


# --------------------------------------------------------------------------------------------------
# the two paths


def restore_aligned(rgb: np.ndarray, restorer: Restorer, out_side: int, *, fidelity: float | None = None,
                    refs: torch.Tensor | None = None, embedder: FaceEmbedder | None = None,
                    timings: dict[str, float] | None = None, blend: float = 1.0,
                    gate: bool = True, force_refs: bool = False, refs_required: bool = True,
                    occlusion_guard: bool = True, color_match: bool = True,
                    identity_report: bool = True) -> tuple[np.ndarray, list[FaceResult]]:
    """An FFHQ-aligned square crop (S, S, 3) -> (restored image at ``out_side`` x ``out_side``, [its face]).

    The image is ``w * restored + (1 - w) * input`` with w = ``blend`` times the quality gate's weight, times
    ``1 - occlusion mask`` per pixel with the occlusion guard. With ``color_match`` a gray crop (a black-and-white
    photo stored as RGB, :func:`~facerestore.faces.paste.is_gray`) gets a gray face, the restoration's luma, as
    whole photos do; other crops keep the method's colours."""
    from facerestore.faces.align import template
    from facerestore.faces.paste import is_gray

    timings = {} if timings is None else timings
    h, w = rgb.shape[:2]
    if h != w:
        raise InputError(f"an aligned face crop must be square, got {w}x{h}; run without --aligned")
    timings["detect"] = timings["align"] = 0.0
    t = time.perf_counter()
    (restored,), (refs_use,) = restore_crops_with_refs(restorer, [rgb], fidelity=fidelity, refs=refs, batch_size=1,
                                                       force_refs=force_refs, refs_required=refs_required)
    (broken,) = _non_finite([restored])
    if broken:
        restored = rgb
    if color_match and is_gray(rgb):
        restored = io.to_gray(restored)
    timings["restore"] = time.perf_counter() - t
    t = time.perf_counter()
    report = None if broken else compare_identity(embedder if identity_report else None, rgb, restored)
    timings["identity"] = time.perf_counter() - t
    t = time.perf_counter()
    weight, decision = decide_paste(rgb, restored, blend=blend, gate=gate, embedder=embedder)
    if broken:
        weight, decision = 0.0, GateDecision(0.0, NON_FINITE)
    occ, share = guard_occlusion(rgb, restored, weight, on=occlusion_guard)
    timings["gate"] = time.perf_counter() - t
    face = FaceResult(
        box=np.array([0.0, 0.0, float(w), float(h)]), score=float("nan"), landmarks5=template(w),
        landmarks68=None, affine=np.array([[1.0, 0, 0], [0, 1.0, 0]]), input_crop=rgb,
        restored_crop=restored, identity=report, gate=decision, paste_weight=weight,
        occlusion=occ, occluded_share=share, refs=refs_use,
    )
    t = time.perf_counter()
    import torch.nn.functional as F

    result = restored if weight == 1.0 else weight * restored + (1.0 - weight) * rgb
    if occ is not None and occ.any():
        w_px = (weight * (1.0 - occ))[:, :, None]
        result = w_px * restored + (1.0 - w_px) * rgb
    # the output photo is the result upscaled: antialiased bicubic, like the photo background
    out_t = F.interpolate(_to_batch([result]), size=(out_side, out_side), mode="bicubic", align_corners=False,
                          antialias=True).clamp(0, 1)
    timings["paste"] = time.perf_counter() - t
    return _from_batch(out_t)[0], [face]


# detection runs on a copy of the photo downscaled to at most this many pixels: a 48 MP photo is detected at
# ~4 MP (faces from ~140 px in the original), which bounds the detector's memory and time; faces are then
# aligned and restored from the full-resolution photo
DETECT_MAX_PIXELS = 4_000_000


def _rescale_detection(d: FaceDetection, fx: float, fy: float) -> FaceDetection:
    """A detection on an image resized by ``1 / fx`` across and ``1 / fy`` down mapped back (the two differ by the
    rounding of the resized size): box edges scale, landmark pixel centres map as (p + 0.5) * f - 0.5."""
    f = np.array([fx, fy], np.float64)

    def pts(p: np.ndarray | None) -> np.ndarray | None:
        return None if p is None else (np.asarray(p, np.float64) + 0.5) * f - 0.5

    return dataclasses.replace(d, box=np.asarray(d.box, np.float64) * np.tile(f, 2), landmarks5=pts(d.landmarks5),
                               landmarks68=pts(d.landmarks68))


def detect_and_select(rgb: np.ndarray, detector: str | Detector, *, min_face_size: float = 0,
                      min_score: float | None = None, only_center_face: bool = False,
                      max_pixels: int | None = DETECT_MAX_PIXELS) -> list[FaceDetection]:
    """Faces of a photo to restore: detections above ``min_score`` (and ``min_face_size`` px), optionally only
    the one nearest the centre; photos over ``max_pixels`` are detected on a downscaled copy (coordinates are
    returned in the photo's pixels)."""
    import cv2

    from facerestore.faces.detect import detect_faces, select_faces

    h, w = rgb.shape[:2]
    fx = fy = 1.0
    image = rgb
    if max_pixels and h * w > max_pixels:
        s = float(np.sqrt(max_pixels / (h * w)))
        size = (max(1, round(w * s)), max(1, round(h * s)))
        image = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        fx, fy = w / size[0], h / size[1]
    # a detector made here takes min_score as its threshold (as the CLI and the web page build theirs): a value
    # under the calibrated one finds more faces, not only fewer
    threshold = {"threshold": float(min_score)} if isinstance(detector, str) and min_score is not None else {}
    dets = detect_faces(image, detector, min_size=min_face_size / max(fx, fy), **threshold)
    if image is not rgb:
        dets = [_rescale_detection(d, fx, fy) for d in dets]
    if min_score is not None:
        dets = [d for d in dets if d.score >= min_score]
    if only_center_face:
        dets = select_faces(dets, "center", rgb.shape)
    return dets


def align_detections(rgb: np.ndarray, dets: Sequence[FaceDetection], upscale: float, *, face_size: int = 512,
                     model_size: int = 512) -> list[tuple[FaceDetection, Any]]:
    """(detection, AlignedFace) for each detection that can be cropped (a face lying almost entirely outside the
    photo cannot: a warning names it), aligned on the FFHQ template at :func:`crop_side` (``face_size`` or larger,
    up to the face's footprint, at most ``max(model_size, NATIVE_CROP_MAX)``). The one alignment of the photo path
    (the video loop also uses it to restore several frames' faces in one batch)."""
    from facerestore.faces.align import affine_scale, align_face

    out = []
    for d in dets:
        try:
            a = align_face(rgb, d.landmarks5, size=face_size)
            side = crop_side(affine_scale(a.affine) * 512.0 / face_size, upscale, face_size, model_size)
            if side != face_size:
                a = align_face(rgb, d.landmarks5, size=side)
            out.append((d, a))
        except InputError as exc:  # the face is left as the photo has it, and the user is told
            import warnings

            box = ", ".join(f"{float(v):.0f}" for v in d.box)
            warnings.warn(f"the face at ({box}) cannot be aligned and is left as it is: {exc}", stacklevel=2)
    return out


def restore_faces_in_photo(
    rgb: np.ndarray,
    restorer: Restorer,
    upscale: float,
    dets: Sequence[FaceDetection],
    *,
    fidelity: float | None = None,
    refs: torch.Tensor | None = None,
    embedder: FaceEmbedder | None = None,
    identity_report: bool = True,
    face_size: int = 512,
    batch_size: int = 4,
    mask: str = "mesh",
    background: Background = "lanczos",
    color_match: bool = True,
    timings: dict[str, float] | None = None,
    blend: float = 1.0,
    gate: bool = True,
    force_refs: bool = False,
    shares: PasteShares | None = None,
    occlusion_guard: bool = True,
    refs_required: bool = True,
    refs_tracks: RefsTracks | None = None,
) -> tuple[np.ndarray, list[FaceResult]]:
    """Align each detected face at ``face_size`` (or larger: :func:`crop_side`), restore, check identity, weigh each
    face (``blend`` times the quality gate's share, :func:`decide_paste`, judged on the restoration in the photo's
    colours, which is what is pasted), paste into the upscaled photo (with the occlusion guard, each face's paste
    mask times ``1 - its occlusion mask``: :func:`guard_occlusion`). ``embedder`` serves the gate's identity test
    and, with ``identity_report``, each face's identity record."""
    from facerestore.faces.paste import paste_faces

    timings = {} if timings is None else timings
    t = time.perf_counter()
    index = {id(d): i for i, d in enumerate(dets)}  # detection -> its index in ``dets``
    alns = align_detections(rgb, dets, upscale, face_size=face_size, model_size=int(restorer.spec.size))
    if len(alns) < len(dets) and hasattr(restorer, "keep_faces"):  # the video loop's blender follows crops in order
        restorer.keep_faces([index[id(d)] for d, _ in alns])
    timings["align"] = time.perf_counter() - t

    t = time.perf_counter()
    decide = None if refs_tracks is None else (lambda k, use: refs_tracks.decide(index[id(alns[k][0])], use))
    restored, refs_uses = restore_crops_with_refs(restorer, [a.crop for _, a in alns], fidelity=fidelity, refs=refs,
                                                  batch_size=batch_size, force_refs=force_refs,
                                                  refs_required=refs_required, decide=decide)
    broken = _non_finite(restored)
    restored = [a.crop if bad else rc for (_, a), rc, bad in zip(alns, restored, broken)]
    timings["restore"] = time.perf_counter() - t

    t = time.perf_counter()
    mesh = None
    if mask == "mesh" and alns:
        from facerestore.faces.mesh import mesh_points_for_faces

        mesh = mesh_points_for_faces(rgb, [d.landmarks5 for d, _ in alns])  # None: weights not downloaded
    # dlib's 68 points for the faces whose detector gave none (RetinaFace, SCRFD, YuNet: 5 points), where the
    # paste mask needs them (the landmark mask, the mesh's fallback) and for colour matching's skin statistics
    # (only where Face Mesh found no face: its points serve both the mask and the skin statistics)
    lm68 = [d.landmarks68 if d.landmarks68 is not None or not needs else landmarks68_for(rgb, d)
            for (d, _), needs in zip(alns, [mask == "landmarks" or ((mask == "mesh" or color_match) and
                                                                   (mesh is None or mesh[k] is None))
                                            for k in range(len(alns))])]
    kinds = [("mesh" if mask == "mesh" and mesh is not None and mesh[k] is not None else
              "landmarks" if mask in ("mesh", "landmarks") and lm68[k] is not None else "square")
             for k in range(len(alns))]
    # what will be pasted (the restoration in the photo's colours) is what the gate judges
    pasted = list(restored)
    gray = False
    if color_match and alns:
        from facerestore.faces.paste import match_face_colour, photo_is_gray

        gray = photo_is_gray(rgb, [a.crop for _, a in alns])
        space = color_match if isinstance(color_match, str) else "lab"
        pasted = [match_face_colour(rc, a, rgb.shape, landmarks68=lm68[k], gray=gray, space=space,
                                    mesh_points=None if mesh is None else mesh[k])
                  for k, ((d, a), rc) in enumerate(zip(alns, restored))]
    timings["colour"] = time.perf_counter() - t
    t = time.perf_counter()
    # the identity report describes the restored crop the records and face files show (restored_faces/); the gate
    # judges it in the photo's colours (what is pasted) and records its own identity distance
    reports = [compare_identity(embedder if identity_report else None, a.crop, rc) if not bad else None
               for (_, a), rc, bad in zip(alns, restored, broken)]
    timings["identity"] = time.perf_counter() - t

    t = time.perf_counter()
    faces = []
    for (d, a), rc, pc, report, refs_use, lm, kind, bad in zip(alns, restored, pasted, reports, refs_uses, lm68, kinds,
                                                               broken):
        if shares is None:
            weight, decision = decide_paste(a.crop, pc, blend=blend, gate=gate, embedder=embedder,
                                            valid=inside_photo(a, rgb.shape) if gate else None)
        else:
            run = gate and blend > 0 and shares.needs_gate(index[id(d)])
            _, decision = decide_paste(a.crop, pc, gate=run, embedder=embedder,
                                       valid=inside_photo(a, rgb.shape) if run else None)
            weight = float(blend) * float(np.clip(shares.share(index[id(d)], decision), 0.0, 1.0))
        if bad:  # nothing of a failed restoration is pasted, gate or not
            weight, decision = 0.0, GateDecision(0.0, NON_FINITE)
        # the guard compares the raw restoration: colour matching's statistics include the occluder, so when a
        # restorer repaints one the matched crop shifts the whole face's colour (a blue disc over the astronaut's
        # mouth: 50% of the face kept instead of 36%), and its thresholds were chosen on raw restorations
        occ, share = guard_occlusion(a.crop, rc, weight, on=occlusion_guard,
                                     valid=inside_photo(a, rgb.shape) if occlusion_guard and weight > 0 else None)
        faces.append(FaceResult(
            box=np.asarray(d.box, np.float64), score=float(d.score), landmarks5=np.asarray(d.landmarks5),
            landmarks68=None if lm is None else np.asarray(lm), affine=a.affine,
            input_crop=a.crop, restored_crop=rc, identity=report, gate=decision, paste_weight=weight,
            occlusion=occ, occluded_share=share, refs=refs_use, mask=kind,
        ))
    timings["gate"] = time.perf_counter() - t

    t = time.perf_counter()
    out = paste_faces(
        rgb, [(pc, a) for (_, a), pc in zip(alns, pasted)], upscale, background=_background(background),
        mask=mask, landmarks68=lm68, mesh_points=mesh, color_match=False, gray=gray,
        weights=[f.paste_weight for f in faces], keep=[f.occlusion for f in faces],
    )
    timings["paste"] = time.perf_counter() - t
    return out, faces


def _check_options(face_size: int, batch_size: int, upscale: float, mask: str, min_score: float | None) -> None:
    from facerestore.faces.paste import upscaled_shape

    if int(face_size) != face_size or face_size < 16:
        raise InputError(f"face_size must be an integer >= 16, got {face_size}")
    if int(batch_size) != batch_size or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size}")
    upscaled_shape(1000, 1000, upscale)  # validates the factor
    from facerestore.faces.paste import MASK_KINDS

    if mask not in MASK_KINDS:
        raise InputError(f"mask must be one of {', '.join(MASK_KINDS)}, got {mask!r}")
    if min_score is not None and not np.isfinite(min_score):
        raise InputError(f"min_score must be a finite number, got {min_score}")


def restore_photo(
    image: ImageInput,
    restorer: str | Restorer = "ispl",
    *,
    upscale: float | None = None,
    fidelity: float | None = None,
    aligned: bool = False,
    only_center_face: bool = False,
    detector: str | Detector = "auto",
    device: str = "cpu",
    half: bool = False,
    refs: Any = None,
    color_match: bool = True,
    mask: str = "mesh",
    background: Background = "lanczos",
    face_size: int = 512,
    weights: str | None = None,
    identity: bool = True,
    batch_size: int = 4,
    min_face_size: float = 0,
    min_score: float | None = None,
    blend: float = 1.0,
    gate: bool = True,
    force_refs: bool = False,
    shares: PasteShares | None = None,
    detections: Sequence[FaceDetection] | None = None,
    occlusion_guard: bool = True,
    refs_required: bool = True,
    refs_tracks: RefsTracks | None = None,
) -> PhotoResult:
    """Restore the faces of a photo and paste them back into the upscaled photo.

    Args:
        image: a file path, a numpy image ((H, W, 3) / (H, W) / (H, W, 4); float in [0, 1], uint8 or
            uint16) or a :class:`facerestore.io.LoadedImage`.
        restorer: a registered method name (loaded once per process, see :func:`get_restorer`) or a
            :class:`facerestore.methods.Restorer` object (used as is).
        upscale: output scale; the output is exactly (round(upscale * H), round(upscale * W)). None (the default,
            as the CLI's): 2 for photos, the method's own size for aligned crops (never smaller than the crop;
            :func:`default_upscale`).
        fidelity: the method's fidelity knob in [0, 1] (1 = closest to the input); None = its default.
            InputError for methods without the knob.
        aligned: the input is already an FFHQ-aligned square face crop: restore it directly (no detection,
            no paste-back); the output is round(upscale * size) square.
        only_center_face: restore only the face nearest the image centre (else every face).
        detector: "auto" (RetinaFace when its weights are cached, else dlib HOG, announced), "retinaface",
            "dlib-hog", "dlib-cnn" (aliases "hog", "cnn") or a Detector object.
        device: torch device for a restorer given by name ("cpu", "cuda", "mps").
        half: reduced precision (float16 on GPU, bfloat16 on CPU) if the method supports it.
        refs: reference faces of the person for methods that use them (tensor (R, 3, S, S) or images/paths).
        force_refs: use references that the method (honestface, prior-sft, robust-inversion, rls, rls-plus) takes
            for another person than the face, for every face (by default each face is checked: faces of other people
            are restored without them, and a photo where no face matches is refused with one InputError line).
        refs_required: False: a photo where no face matches the references is restored without them instead of
            refused (video frames); each face's ``refs`` says what happened.
        refs_tracks: a :class:`RefsTracks` that has the final say on each face's use of the references (the video
            loop: consistent per track).
        color_match: match each restored face's colour statistics to its input crop when pasting (aligned mode: a
            gray crop gets a gray face).
        mask: paste-back mask: "mesh" (Face Mesh face oval: the face only, no hair or neck; the best in
            benchmarks/paste_back.py; without the facemesh-468 weights it warns and uses the 68 points),
            "landmarks" (dlib 68-point hull) or "square" (the crop).
        background: how the photo is upscaled: an upscale_image method name ("lanczos", "bicubic", ...)
            or a callable ``(image, upscale) -> array`` (e.g. a super-resolution network).
        face_size: smallest side of the aligned crops; a face that covers more output pixels is cropped larger, up to
            its footprint, at most max(the restorer's size, 1024) (:func:`crop_side`); the restorer resizes crops
            to its size and back.
        weights: weight file for a restorer given by name.
        identity: report identity similarity per face (dlib, ~0.1 s per face). The gate's identity test runs
            whenever the gate is on, with or without this report.
        batch_size: crops per restorer call.
        min_face_size: ignore detections smaller than this (pixels).
        blend: share of each restored face pasted over the original, in [0, 1] (0 = the photo only upscaled);
            multiplies the quality gate's share.
        gate: the quality gate (:mod:`facerestore.quality_gate`): a restored face that is less sharp, of worse
            NIQE or another person than the face in the photo is blended toward it or not pasted; each face's
            decision is in its record. False pastes every restoration at ``blend``.
        occlusion_guard: keep the photo's own pixels where a restored face differs from the input at low spatial
            frequencies (a hand, microphone or sunglasses repainted: :mod:`facerestore.occlusion`); each face's
            record gives the share kept (``occluded_share``). False pastes the whole face mask.
        detections: faces already found, in the photo's pixels (e.g. tracked over a video's frames): detection is
            skipped and these are restored in this order (``detector`` is then only named in the record).
        shares: a :class:`PasteShares` that decides when the gate runs and how its decisions become shares
            (videos: per track, held and smoothed over frames); None = each face on its own.
        min_score: ignore detections scoring below this, on top of the detector's own threshold (a detector given
            by name applies its calibrated default, ``faces.detect.DEFAULT_SCORE_THRESHOLDS``; a fixed 0.3 on
            dlib's SVM margin threw real faces away); None keeps what the detector returns.

    Returns:
        :class:`PhotoResult`.
    """
    from facerestore.faces.paste import fill_transparent, upscale_image, upscaled_shape

    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    _check_options(face_size, batch_size, 1.0 if upscale is None else upscale, mask, min_score)
    check_unit_interval("blend", blend)
    _background(background)  # a bad name fails before any work

    t = time.perf_counter()
    r = resolve_restorer(restorer, weights=weights, device=device, half=half)
    r.check_options(fidelity=fidelity, refs=refs)
    if background == "esrgan" and not aligned:  # on the restorer's device, as the command line does
        from facerestore.faces.background import esrgan_background

        background = esrgan_background(str(r.device))
    timings["load"] = time.perf_counter() - t

    t = time.perf_counter()
    loaded = io.as_image(image)
    rgb = fill_transparent(loaded.rgb, loaded.alpha)  # invisible colours must not bleed into visible edges
    h, w = rgb.shape[:2]
    if upscale is None:
        upscale = default_upscale(aligned, w, r)
    oh, ow = upscaled_shape(h, w, upscale)
    timings["read"] = time.perf_counter() - t

    refs_t = prepare_refs(refs, int(r.spec.size), aligned=aligned, detector=detector, device=r.device)
    # the gate's identity test needs the embedder even when no identity report is asked for
    embedder = FaceEmbedder("dlib") if identity or gate else None
    if aligned:
        out, faces = restore_aligned(rgb, r, oh, fidelity=fidelity, refs=refs_t, embedder=embedder, timings=timings,
                                     blend=float(blend), gate=gate, force_refs=force_refs, refs_required=refs_required,
                                     occlusion_guard=bool(occlusion_guard), color_match=bool(color_match),
                                     identity_report=bool(identity))
        det_name, n_detected = None, 1
    else:
        t = time.perf_counter()
        if detections is not None:
            dets = list(detections)
        else:
            dets = detect_and_select(rgb, detector, min_face_size=min_face_size, min_score=min_score,
                                     only_center_face=only_center_face)
        timings["detect"] = time.perf_counter() - t
        n_detected = len(dets)
        out, faces = restore_faces_in_photo(
            rgb, r, upscale, dets, fidelity=fidelity, refs=refs_t, embedder=embedder, face_size=int(face_size),
            batch_size=int(batch_size), mask=mask, background=background, color_match=color_match, timings=timings,
            blend=float(blend), gate=gate, force_refs=force_refs, shares=shares,
            occlusion_guard=bool(occlusion_guard), refs_required=refs_required, refs_tracks=refs_tracks,
            identity_report=bool(identity),
        )
        if isinstance(detector, str):  # "auto" and aliases as the registry names them (their licences are recorded)
            from facerestore.faces.detect import canonical_detector_name

            try:
                det_name = canonical_detector_name(detector)
            except InputError:  # a caller's own label for the detections it gave
                det_name = detector
        else:
            det_name = getattr(detector, "name", type(detector).__name__)

    if out.shape[:2] != (oh, ow):  # a contract of paste_faces; guard the promise made to callers
        raise RuntimeError(f"pipeline produced {out.shape[1]}x{out.shape[0]}, expected {ow}x{oh}")
    alpha = None if loaded.alpha is None else upscale_image(np.asarray(loaded.alpha, np.float32), upscale)
    if loaded.is_gray:
        out = io.to_gray(out)
    timings["total"] = time.perf_counter() - t_start
    spec = r.spec
    return PhotoResult(
        image=out, alpha=alpha, is_gray=bool(loaded.is_gray), bit_depth=int(loaded.bit_depth), faces=faces,
        timings=timings, method=spec.name, fidelity=r.fidelity_used(fidelity),
        fidelity_requested=None if fidelity is None else float(fidelity), blend=float(blend), gate=bool(gate),
        occlusion_guard=bool(occlusion_guard), refs_count=0 if refs_t is None else int(refs_t.shape[0]),
        upscale=float(upscale), input_size=(w, h), aligned=bool(aligned), detector=det_name, path=loaded.path,
        metadata=loaded.metadata, faces_not_aligned=n_detected - len(faces),
        restorer=r.describe(),
    )
