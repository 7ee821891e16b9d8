"""Reference photos for the prior methods (robust-inversion, rls, rls-plus, prior-sft): an identity term.

Beyond papers 002 and 004, which know nothing of references: given ``refs`` (R, 3, S, S), aligned faces of the
person in [0, 1] (``Restorer.restore(lq, refs=...)``, ``facerestore restore --refs DIR``), the optimisation adds,
per face, ``weight * || E(G(w)) - mean_r E(ref_r) ||_2`` to its loss: E is dlib's 128-d face recogniser run in
PyTorch on the chip dlib's own route cuts (``train.losses.IdentityLoss.embed``, differentiable in the image), so
the term pulls the generated face toward the references' identity, and ``mean_r`` averages out the pose, light
and expression of single photos (``nn.identity.reference_distance``). MobileFaceNet (``id_mfn``) is never used:
it is the independent network that evaluates identity (benchmarks/honestface_refs.py).

Before optimising, each face is compared with the references exactly as honestface does
(``methods.restorer.check_refs_identity``: the median dlib distance between the face, resized to the
generator's resolution, and the references; above ``REFS_MAX_DISTANCE`` = 0.75 the call is refused with one
RefsMismatchError line unless ``force_refs``): pulling a face toward another person is not restoration. The
photo pipeline asks first, face by face (``Restorer.refs_distances``), and restores the faces of other people in a
photo without the references (``pipeline.restore_crops_with_refs``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from facerestore.errors import InputError
from facerestore.methods.restorer import MIN_REF_SIDE, check_refs, check_refs_identity, refs_check_distance, resize_crop
from facerestore.nn.identity import embedding_distance, reference_distance

__all__ = ["MIN_REF_SIDE", "ReferenceCache", "ReferenceIdentity", "check_ref_weight", "check_refs"]  # re-exported


def check_ref_weight(value: Any) -> float:
    """``value`` as a finite float >= 0 (the ``ref_weight`` option), else a one-line InputError."""
    try:
        w = float(value)
    except (TypeError, ValueError):
        w = float("nan")
    if not (math.isfinite(w) and w >= 0):
        raise InputError(f"ref_weight must be a finite number >= 0 (0 ignores the references), got {value}")
    return w


class ReferenceIdentity:
    """dlib embeddings of one set of reference faces and the identity distance to them.

    ``embedder``: a module with ``embed(faces (B, 3, S, S) in [0, 1]) -> (B, 128)``, differentiable in the
    faces (``train.losses.IdentityLoss``), on the device of the faces it is given.
    """

    def __init__(self, refs: torch.Tensor, embedder: Any) -> None:
        self.embedder = embedder
        with torch.no_grad():
            self.embeddings = embedder.embed(refs.float()).detach()  # (R, 128)

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    def distance(self, images: torch.Tensor) -> torch.Tensor:
        """(B,) dlib distance of each image's embedding to the references' mean embedding (differentiable)."""
        return reference_distance(self.embedder.embed(images.float()), self.embeddings.to(images.device))

    def term(self, weight: float) -> Callable[[torch.Tensor], torch.Tensor]:
        """The loss term ``images (B, 3, R, R) -> weight * distance (B,)`` added per sample by the optimisers;
        generated images are clamped to [0, 1] first (what is returned and what dlib would see)."""
        w = float(weight)

        def term(images: torch.Tensor) -> torch.Tensor:
            return w * self.distance(images.clamp(0, 1))

        return term

    def _face_distances(self, faces: torch.Tensor, size: int) -> list[torch.Tensor]:
        """(R,) dlib distances to the references of each face of ``faces`` (B, 3, h, w), resized to ``size``."""
        x = resize_crop(faces.detach().float(), (int(size), int(size)))
        with torch.no_grad():
            emb = self.embedder.embed(x).to(self.embeddings.device)
        return [embedding_distance(self.embeddings, e) for e in emb]

    def check_distances(self, faces: torch.Tensor, size: int) -> list[float]:
        """The reference check's distance of each face of ``faces`` (B, 3, h, w) resized to ``size`` x ``size``
        (the median distance to the references), without refusing any."""
        return [refs_check_distance(d) for d in self._face_distances(faces, size)]

    def check(self, faces: torch.Tensor, size: int, force: bool = False) -> float:
        """The reference check of every method (:func:`~facerestore.methods.restorer.check_refs_identity`) for
        each face of ``faces`` (B, 3, h, w), resized to ``size`` x ``size``: RefsMismatchError above the threshold
        unless ``force``. Returns the largest distance over the batch (what ``last_refs_distance`` records)."""
        return max(check_refs_identity(d, force=force) for d in self._face_distances(faces, size))


class ReferenceCache:
    """What a restorer keeps between calls: dlib's recogniser (loaded on the first call with references, then
    moved to the generator's device) and the :class:`ReferenceIdentity` of the last references (a photo's faces,
    or a video's frames, share one set)."""

    def __init__(self) -> None:
        self._embedder: Any = None
        self._last: tuple[torch.Tensor, ReferenceIdentity] | None = None

    def embedder(self, device: torch.device) -> Any:
        if self._embedder is None:
            from facerestore.train.losses import IdentityLoss

            self._embedder = IdentityLoss().eval()
        return self._embedder.to(device)

    def term_for(self, refs: torch.Tensor, faces: torch.Tensor, size: int, weight: float, force: bool,
                 device: torch.device) -> tuple[ReferenceIdentity, Callable[[torch.Tensor], torch.Tensor], float]:
        """(references, the identity loss term at ``weight``, the check's distance) for restoring ``faces``
        (compared at the generator's ``size`` px); the check refuses another person's references unless ``force``."""
        ref_id = self.get(refs, device)
        distance = ref_id.check(faces.to(device), size, force=force)
        return ref_id, ref_id.term(weight), distance

    def get(self, refs: torch.Tensor, device: torch.device) -> ReferenceIdentity:
        refs = refs.to(device)
        cached = self._last  # read once: another thread (the web server's sessions share restorers) may replace it
        if cached is not None:
            last = cached[0]
            if (last.device == refs.device and last.dtype == refs.dtype and last.shape == refs.shape
                    and torch.equal(last, refs)):
                return cached[1]
        ri = ReferenceIdentity(refs, self.embedder(device))
        self._last = (refs, ri)
        return ri
